from django.urls import path

from . import views

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("predict/<slug:use_case>/", views.predict, name="predict"),
    path("predictions/<uuid:prediction_id>/", views.prediction_detail, name="prediction-detail"),
    path("predictions/<uuid:prediction_id>/break-glass/", views.prediction_break_glass_view,
         name="prediction-break-glass"),
    path("predictions/<uuid:prediction_id>/outcome/", views.prediction_outcome, name="prediction-outcome"),
    path("models/<slug:use_case>/<int:version>/", views.model_card, name="model-card"),
    path("models/<slug:use_case>/<int:version>/plots/<str:name>", views.model_plot, name="model-plot"),
]

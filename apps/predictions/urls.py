from django.urls import path

from . import views

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("predict/<slug:use_case>/", views.predict, name="predict"),
    path("predictions/<uuid:prediction_id>/", views.prediction_detail, name="prediction-detail"),
]

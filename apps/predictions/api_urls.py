from django.urls import path

from . import apis

urlpatterns = [
    path("predictions", apis.PredictionListCreateApi.as_view(), name="api-predictions"),
    path("predictions/<uuid:prediction_id>", apis.PredictionDetailApi.as_view(), name="api-prediction-detail"),
]

from django.urls import path

from . import apis

urlpatterns = [
    path("models", apis.ModelListApi.as_view(), name="api-models"),
    path("models/<slug:use_case>", apis.ModelDetailApi.as_view(), name="api-model-detail"),
]

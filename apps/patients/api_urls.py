from django.urls import path

from . import apis

urlpatterns = [
    path("patients", apis.PatientListApi.as_view(), name="api-patients"),
    path("patients/<str:identifier>", apis.PatientDetailApi.as_view(), name="api-patient"),
    path("patients/<str:identifier>/observations", apis.PatientObservationsApi.as_view(),
         name="api-patient-observations"),
    path("outcomes", apis.OutcomeListCreateApi.as_view(), name="api-outcomes"),
]

"""Clinician patient pages (server-rendered), and the FHIR sync client's public JWKS; the patient API is in
api_urls.py."""

from django.urls import path

from . import views

urlpatterns = [
    path("patients/", views.patient_list_view, name="patient-list"),
    path("patients/<int:patient_id>/", views.patient_detail, name="patient-detail"),
    path("patients/<int:patient_id>/predict/<slug:use_case>/", views.patient_predict, name="patient-predict"),
    path(".well-known/jwks.json", views.fhir_client_jwks, name="fhir-client-jwks"),
]

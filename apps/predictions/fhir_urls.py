from django.urls import path

from . import apis

urlpatterns = [
    path("RiskAssessment/<uuid:prediction_id>", apis.RiskAssessmentApi.as_view(), name="fhir-risk-assessment"),
]

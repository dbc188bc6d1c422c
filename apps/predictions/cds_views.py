"""CDS Hooks endpoints: discovery (open: it describes services, no patient data) and the patient-view services
(each call authenticated by the EHR's signed JWT)."""

from typing import Any

from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from .cds import (
    SERVICE_PREFIX,
    cds_client_verify,
    cds_jti_consume,
    cds_patient_view,
    cds_patient_view_request,
    cds_services,
)


class CdsDiscoveryApi(APIView):
    authentication_classes: list[Any] = []
    permission_classes = [AllowAny]
    throttle_classes: list[Any] = []

    @extend_schema(tags=["cds-hooks"], responses={200: OpenApiTypes.OBJECT},
                   description="CDS Hooks discovery: the patient-view services on offer.")
    def get(self, request: Request) -> Response:
        return Response({"services": cds_services()})


class CdsServiceApi(APIView):
    # The JWT is checked inside `post` against the client's registered keys (CDS Hooks security model), not by
    # OAuth2: a call without a valid signed JWT gets 401 before any patient data is read.
    authentication_classes: list[Any] = []
    permission_classes = [AllowAny]

    @extend_schema(tags=["cds-hooks"], request=OpenApiTypes.OBJECT, responses={200: OpenApiTypes.OBJECT},
                   description="patient-view: one card with the risk, its band and a link to the explanation.")
    def post(self, request: Request, service: str) -> Response:
        caller = cds_client_verify(authorization=request.headers.get("Authorization", ""),
                                   audience=request.build_absolute_uri(request.path))
        # The body (parsed here, and its fhirServer checked against the client's registered bases) before the JWT's
        # jti is spent: a call refused for its body can be corrected and retried with the same JWT.
        hook_request = cds_patient_view_request(payload=request.data, client=caller.client)
        cds_jti_consume(caller=caller)
        use_case = service.removeprefix(SERVICE_PREFIX)
        body = cds_patient_view(
            use_case=use_case, request=hook_request, client=caller.client,
            explanation_url=lambda prediction_id: request.build_absolute_uri(
                reverse("prediction-detail", args=[prediction_id])),
        )
        return Response(body)

"""Patient data for external systems (OAuth2): patients, their observations, and observed outcomes."""

from typing import Any

from drf_spectacular.utils import extend_schema
from oauth2_provider.contrib.rest_framework import TokenMatchesOASRequirements
from rest_framework import status
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.audit.actors import actor_from_request
from apps.core.api import paginated
from apps.core.authentication import BearerTokenAuthentication

from .models import RECORD_OUTCOME_PERMISSION, Patient
from .selectors import outcome_list, patient_by_identifier, patient_list, patient_observations
from .serializers import (
    ObservationFilterSerializer,
    ObservationSerializer,
    OutcomeFilterSerializer,
    OutcomeInputSerializer,
    OutcomeSerializer,
    PatientFilterSerializer,
    PatientSerializer,
)
from .services import outcome_record


def _paginated(request: Request, view: APIView, queryset: Any, serializer: type) -> Response:
    paginator = LimitOffsetPagination()
    page = paginator.paginate_queryset(queryset, request, view=view)
    return paginator.get_paginated_response(serializer(page, many=True).data)


def _patient_or_404(identifier: str) -> Patient:
    patient = patient_by_identifier(identifier=identifier)
    if patient is None:
        raise NotFound("No patient with this identifier.")
    return patient


class PatientListApi(APIView):
    authentication_classes = [BearerTokenAuthentication]
    permission_classes = [TokenMatchesOASRequirements]
    required_alternate_scopes = {"GET": [["patients:read"]]}

    @extend_schema(operation_id="api_v1_patients_list", parameters=[PatientFilterSerializer],
                   responses={200: paginated(PatientSerializer)})
    def get(self, request: Request) -> Response:
        filters = PatientFilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        return _paginated(request, self, patient_list(**filters.validated_data), PatientSerializer)


class PatientDetailApi(APIView):
    authentication_classes = [BearerTokenAuthentication]
    permission_classes = [TokenMatchesOASRequirements]
    required_alternate_scopes = {"GET": [["patients:read"]]}

    @extend_schema(responses={200: PatientSerializer})
    def get(self, request: Request, identifier: str) -> Response:
        return Response(PatientSerializer(_patient_or_404(identifier)).data)


class PatientObservationsApi(APIView):
    authentication_classes = [BearerTokenAuthentication]
    permission_classes = [TokenMatchesOASRequirements]
    required_alternate_scopes = {"GET": [["patients:read"]]}

    @extend_schema(parameters=[ObservationFilterSerializer], responses={200: paginated(ObservationSerializer)})
    def get(self, request: Request, identifier: str) -> Response:
        patient = _patient_or_404(identifier)
        filters = ObservationFilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        queryset = patient_observations(patient=patient, **filters.validated_data)
        return _paginated(request, self, queryset, ObservationSerializer)


class TokenUserMayRecordOutcomes(BasePermission):
    """A token issued to a person (authorization code) carries that person's rights too: only someone allowed to
    record outcomes (`patients.add_outcome`, the Clinicians role) may post one, whatever scopes the token has.
    Client-credential tokens have no user; for them the scope (`patients:write`) decides."""

    message = "The user behind this token may not record outcomes."

    def has_permission(self, request: Request, view: Any) -> bool:
        user = getattr(request, "user", None)
        if request.method != "POST" or user is None or not getattr(user, "is_authenticated", False):
            return True
        return bool(user.has_perm(RECORD_OUTCOME_PERMISSION))


class OutcomeListCreateApi(APIView):
    authentication_classes = [BearerTokenAuthentication]
    permission_classes = [TokenMatchesOASRequirements, TokenUserMayRecordOutcomes]
    required_alternate_scopes = {"GET": [["patients:read"]], "POST": [["patients:write"]]}

    @extend_schema(parameters=[OutcomeFilterSerializer], responses={200: paginated(OutcomeSerializer)})
    def get(self, request: Request) -> Response:
        filters = OutcomeFilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        params = filters.validated_data
        queryset = outcome_list(patient_identifier=params.get("patient_id"), use_case=params.get("use_case"))
        return _paginated(request, self, queryset, OutcomeSerializer)

    @extend_schema(request=OutcomeInputSerializer, responses={201: OutcomeSerializer, 200: OutcomeSerializer})
    def post(self, request: Request) -> Response:
        serializer = OutcomeInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        patient = patient_by_identifier(identifier=data["patient_id"])
        if patient is None:
            raise ValidationError({"patient_id": ["No stored patient has this identifier."]})
        actor = actor_from_request(request)
        outcome, created = outcome_record(
            patient_id=patient.pk, use_case=data["use_case"], present=data["present"], onset_at=data["onset_at"],
            actor=actor, source=f"api:{actor.id}", source_id=data["source_id"],
            prediction_id=str(data["prediction_id"] or ""),
        )
        return Response(OutcomeSerializer(outcome).data,
                        status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)

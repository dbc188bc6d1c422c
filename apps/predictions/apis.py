"""Prediction API for external systems (OAuth2). Thin: parse, call the service or selector, serialise."""

from typing import Any
from uuid import UUID

from django.conf import settings
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from oauth2_provider.contrib.rest_framework import TokenMatchesOASRequirements
from rest_framework import status
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.audit.actors import actor_from_request, source_ip_from_request
from apps.core.api import paginated
from apps.core.authentication import BearerTokenAuthentication
from apps.core.exceptions import ApplicationError
from apps.core.renderers import JSONRenderer

from .fhir import FHIRJSONRenderer, risk_assessment
from .idempotency import prediction_create_idempotent, request_fingerprint, validate_key
from .models import Prediction
from .selectors import READ_ALL_SCOPE, PredictionReader, prediction_get, prediction_list
from .serializers import (
    PredictionFilterSerializer,
    PredictionInputSerializer,
    PredictionSerializer,
    prediction_input_plain,
    predictions_represent,
)
from .services import PredictionRequest, patient_prediction_request, prediction_create_many

# `predictions:read` reads the predictions the application created; `predictions:read:all` (granted only to some
# applications, apps/core/oauth_scopes.py) widens it to every prediction and grants nothing on its own.
READ_SCOPES = [["predictions:read"]]


def reader_from_request(request: Request) -> PredictionReader:
    """Who is asking: the token's application, widened to every prediction by `predictions:read:all`."""
    token = request.auth
    application = getattr(token, "application", None)
    if application is None:
        return PredictionReader()  # a token without an application owns nothing
    return PredictionReader.for_application(client_id=application.client_id,
                                            read_all=token.allow_scopes([READ_ALL_SCOPE]))


class PredictionListCreateApi(APIView):
    authentication_classes = [BearerTokenAuthentication]
    permission_classes = [TokenMatchesOASRequirements]
    required_alternate_scopes = {
        "GET": READ_SCOPES,
        "POST": [["predictions:write"]],
    }

    @extend_schema(
        request=PredictionInputSerializer,
        responses={201: PredictionSerializer},
        parameters=[OpenApiParameter(
            "Idempotency-Key", str, OpenApiParameter.HEADER, required=False,
            description="Retry-safe key: the same key and body return the first response; another body gives 422.",
        )],
    )
    def post(self, request: Request) -> Response:
        data: Any = request.data
        many = isinstance(data, list)
        items = data if many else [data]
        if many and not 1 <= len(items) <= settings.PREDICTION_BATCH_LIMIT:
            raise ValidationError({"non_field_errors": [
                f"A batch must hold between 1 and {settings.PREDICTION_BATCH_LIMIT} predictions; got {len(items)}."
            ]})
        validated = [prediction_input_plain(item) for item in items]
        if any(item is None for item in validated):  # anything but the everyday body: the serializer decides
            serializer = PredictionInputSerializer(data=data, many=many)
            if not serializer.is_valid():
                errors = serializer.errors
                raise ValidationError({str(i): e for i, e in enumerate(errors) if e} if many else errors)
            validated = serializer.validated_data if many else [serializer.validated_data]
        requests, errors = [], {}
        for index, item in enumerate(validated):
            patient_ref = item.get("patient_id", "").strip()
            if "features" in item:
                requests.append(PredictionRequest(item["use_case"], item["features"], patient_ref))
                continue
            try:
                requests.append(patient_prediction_request(use_case=item["use_case"], patient_ref=patient_ref))
            except ApplicationError as exc:
                if not exc.fields:
                    raise
                errors[str(index)] = exc.fields
        if errors:
            raise ApplicationError("Some predictions could not be prepared; nothing was stored.",
                                   code="invalid_features", fields=errors if many else errors["0"])
        actor, source_ip = actor_from_request(request), source_ip_from_request(request)
        key = request.headers.get("Idempotency-Key")
        replayed = False
        if key is None:
            predictions = prediction_create_many(requests=requests, actor=actor, channel=Prediction.Channel.API,
                                                 source_ip=source_ip)
        else:
            result = prediction_create_idempotent(
                key=validate_key(key), fingerprint=request_fingerprint(data), requests=requests, many=many,
                actor=actor, channel=Prediction.Channel.API, source_ip=source_ip,
            )
            predictions, replayed = result.predictions, result.replayed
        body = predictions_represent(predictions)
        headers = {"Idempotent-Replayed": "true"} if replayed else {}
        return Response(body if many else body[0], status=status.HTTP_201_CREATED, headers=headers)

    @extend_schema(operation_id="api_v1_predictions_list", parameters=[PredictionFilterSerializer],
                   responses={200: paginated(PredictionSerializer)},
                   description="The predictions this application created, newest first; every prediction when the "
                               "token also holds `predictions:read:all`.")
    def get(self, request: Request) -> Response:
        filters = PredictionFilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        params = filters.validated_data
        queryset = prediction_list(
            reader=reader_from_request(request),
            use_case=params.get("use_case"),
            patient_ref=params.get("patient_id"),
            model_version=params.get("model_version"),
            created_after=params.get("created_after"),
            created_before=params.get("created_before"),
        )
        paginator = LimitOffsetPagination()
        page = paginator.paginate_queryset(queryset, request, view=self)
        return paginator.get_paginated_response(predictions_represent(page))


def _get_or_404(request: Request, prediction_id: UUID) -> Prediction:
    """Another application's prediction is "not found" too: its existence is not revealed."""
    try:
        return prediction_get(prediction_id=prediction_id, reader=reader_from_request(request))
    except Prediction.DoesNotExist as exc:
        raise NotFound("No prediction with this id.") from exc


class PredictionDetailApi(APIView):
    """One prediction; `Accept: application/fhir+json` gives it as a FHIR R4 RiskAssessment."""

    authentication_classes = [BearerTokenAuthentication]
    permission_classes = [TokenMatchesOASRequirements]
    required_alternate_scopes = {"GET": READ_SCOPES}
    renderer_classes = [JSONRenderer, FHIRJSONRenderer]

    @extend_schema(responses={200: PredictionSerializer},
                   description="One prediction this application created (any, with `predictions:read:all`); another "
                               "application's is 404, as if it did not exist.")
    def get(self, request: Request, prediction_id: UUID) -> Response:
        prediction = _get_or_404(request, prediction_id)
        if isinstance(request.accepted_renderer, FHIRJSONRenderer):
            return Response(risk_assessment(prediction))
        return Response(predictions_represent([prediction])[0])


class RiskAssessmentApi(APIView):
    """`/fhir/RiskAssessment/{id}`: the same prediction as a FHIR R4 resource."""

    authentication_classes = [BearerTokenAuthentication]
    permission_classes = [TokenMatchesOASRequirements]
    required_alternate_scopes = {"GET": READ_SCOPES}
    renderer_classes = [FHIRJSONRenderer, JSONRenderer]

    @extend_schema(responses={200: OpenApiTypes.OBJECT}, description="A FHIR R4 RiskAssessment resource.")
    def get(self, request: Request, prediction_id: UUID) -> Response:
        return Response(risk_assessment(_get_or_404(request, prediction_id)))

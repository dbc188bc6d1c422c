"""Prediction API for external systems (OAuth2). Thin: parse, call the service or selector, serialise."""

from typing import Any
from uuid import UUID

from django.conf import settings
from drf_spectacular.utils import extend_schema
from oauth2_provider.contrib.rest_framework import OAuth2Authentication, TokenMatchesOASRequirements
from rest_framework import status
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.audit.actors import actor_from_request, source_ip_from_request

from .models import Prediction
from .selectors import prediction_get, prediction_list
from .serializers import PredictionFilterSerializer, PredictionInputSerializer, PredictionSerializer
from .services import PredictionRequest, prediction_create_many


class PredictionListCreateApi(APIView):
    authentication_classes = [OAuth2Authentication]
    permission_classes = [TokenMatchesOASRequirements]
    required_alternate_scopes = {
        "GET": [["predictions:read"]],
        "POST": [["predictions:write"]],
    }

    @extend_schema(request=PredictionInputSerializer, responses={201: PredictionSerializer})
    def post(self, request: Request) -> Response:
        data: Any = request.data
        many = isinstance(data, list)
        items = data if many else [data]
        if many and not 1 <= len(items) <= settings.PREDICTION_BATCH_LIMIT:
            raise ValidationError({"non_field_errors": [
                f"A batch must hold between 1 and {settings.PREDICTION_BATCH_LIMIT} predictions; got {len(items)}."
            ]})
        serializer = PredictionInputSerializer(data=items, many=True)
        if not serializer.is_valid():
            errors = serializer.errors
            raise ValidationError({str(i): e for i, e in enumerate(errors) if e} if many else errors[0])
        requests = [
            PredictionRequest(item["use_case"], item["features"], item.get("patient_id", "").strip())
            for item in serializer.validated_data
        ]
        predictions = prediction_create_many(
            requests=requests,
            actor=actor_from_request(request),
            channel=Prediction.Channel.API,
            source_ip=source_ip_from_request(request),
        )
        body = PredictionSerializer(predictions, many=True).data
        return Response(body if many else body[0], status=status.HTTP_201_CREATED)

    @extend_schema(parameters=[PredictionFilterSerializer], responses={200: PredictionSerializer(many=True)})
    def get(self, request: Request) -> Response:
        filters = PredictionFilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        params = filters.validated_data
        queryset = prediction_list(
            use_case=params.get("use_case"),
            patient_ref=params.get("patient_id"),
            model_version=params.get("model_version"),
            created_after=params.get("created_after"),
            created_before=params.get("created_before"),
        )
        paginator = LimitOffsetPagination()
        page = paginator.paginate_queryset(queryset, request, view=self)
        return paginator.get_paginated_response(PredictionSerializer(page, many=True).data)


class PredictionDetailApi(APIView):
    authentication_classes = [OAuth2Authentication]
    permission_classes = [TokenMatchesOASRequirements]
    required_alternate_scopes = {"GET": [["predictions:read"]]}

    @extend_schema(responses={200: PredictionSerializer})
    def get(self, request: Request, prediction_id: UUID) -> Response:
        try:
            prediction = prediction_get(prediction_id=prediction_id)
        except Prediction.DoesNotExist as exc:
            raise NotFound("No prediction with this id.") from exc
        return Response(PredictionSerializer(prediction).data)

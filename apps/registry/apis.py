"""Model catalogue API for external systems (OAuth2 scope `predictions:read`): the registered use cases with their
live version, and one version with its feature contract. Thin: validate, call a selector, serialise."""

from drf_spectacular.utils import extend_schema
from oauth2_provider.contrib.rest_framework import TokenMatchesOASRequirements
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.reverse import reverse
from rest_framework.views import APIView

from apps.core.authentication import BearerTokenAuthentication

from .models import ModelVersion
from .selectors import live_model_version, live_models, model_version_last_promotion
from .serializers import (
    ModelVersionDetailSerializer,
    UseCaseListSerializer,
    model_version_represent,
    promotion_represent,
)

# The same scope that reads predictions: a system that reads answers may read what the model behind them is.
READ_SCOPES = [["predictions:read"]]


class VersionQuerySerializer(serializers.Serializer):
    version = serializers.IntegerField(required=False, min_value=1,
                                       help_text="A registered version number; default: the live (champion) version")


def _detail_url(request: Request, version: ModelVersion) -> str:
    url = reverse("api-model-detail", args=[version.use_case], request=request)
    return f"{url}?version={version.version}"


class ModelListApi(APIView):
    authentication_classes = [BearerTokenAuthentication]
    permission_classes = [TokenMatchesOASRequirements]
    required_alternate_scopes = {"GET": READ_SCOPES}

    @extend_schema(operation_id="api_v1_models_list", responses={200: UseCaseListSerializer},
                   description="Every registered use case, with the version that answers its predictions now "
                               "(`live_version`, null when none does).")
    def get(self, request: Request) -> Response:
        results = []
        for live in live_models():
            version = live.version
            results.append({
                "use_case": live.use_case,
                "title": version.manifest["spec"].get("title", live.use_case) if version else live.use_case,
                "live_version": None if version is None else {
                    "version": version.version, "model_version": version.label, "sha256": version.onnx_sha256,
                    "promoted": promotion_represent(live.promotion), "url": _detail_url(request, version)},
                "url": reverse("api-model-detail", args=[live.use_case], request=request),
            })
        return Response(UseCaseListSerializer({"count": len(results), "results": results}).data)


class ModelDetailApi(APIView):
    authentication_classes = [BearerTokenAuthentication]
    permission_classes = [TokenMatchesOASRequirements]
    required_alternate_scopes = {"GET": READ_SCOPES}

    @extend_schema(operation_id="api_v1_models_retrieve", parameters=[VersionQuerySerializer],
                   responses={200: ModelVersionDetailSerializer},
                   description="The live version of a use case (or `?version=N`, any registered version): how to "
                               "read its answers and the feature contract a prediction request must follow. "
                               "Unknown use case or version: 404 naming `use_case` or `version`.")
    def get(self, request: Request, use_case: str) -> Response:
        query = VersionQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        version = live_model_version(use_case=use_case, version=query.validated_data.get("version"))
        card_url = reverse("model-card", args=[version.use_case, version.version], request=request)
        body = model_version_represent(version, promotion=model_version_last_promotion(version=version),
                                       card_url=card_url)
        return Response(ModelVersionDetailSerializer(body).data)


"""Small shared pieces of the API layer."""

from typing import Any

from drf_spectacular.utils import inline_serializer
from rest_framework import serializers


def paginated(serializer_class: type[serializers.Serializer], name: str | None = None) -> Any:
    """The OpenAPI shape of a LimitOffsetPagination page of `serializer_class`, for `extend_schema(responses=...)`."""
    base = serializer_class.__name__.removesuffix("Serializer")
    return inline_serializer(
        name=name or f"Paginated{base}List",
        fields={
            "count": serializers.IntegerField(),
            "next": serializers.URLField(allow_null=True),
            "previous": serializers.URLField(allow_null=True),
            "results": serializer_class(many=True),
        },
    )

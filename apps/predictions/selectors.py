from datetime import datetime
from uuid import UUID

from django.db.models import QuerySet

from .models import Prediction


def prediction_list(
    *,
    use_case: str | None = None,
    patient_ref: str | None = None,
    model_version: str | None = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
) -> QuerySet[Prediction]:
    queryset = Prediction.objects.all()
    if use_case:
        queryset = queryset.filter(use_case=use_case)
    if patient_ref:
        queryset = queryset.filter(patient_ref=patient_ref)
    if model_version:
        queryset = queryset.filter(model_label=model_version)
    if created_after:
        queryset = queryset.filter(created_at__gte=created_after)
    if created_before:
        queryset = queryset.filter(created_at__lt=created_before)
    return queryset.order_by("-created_at")


def prediction_get(*, prediction_id: UUID) -> Prediction:
    return Prediction.objects.select_related("model_version").get(pk=prediction_id)


def predictions_recent_by_user(*, user_id: int, limit: int = 10) -> list[Prediction]:
    return list(Prediction.objects.filter(requested_by_id=user_id).order_by("-created_at")[:limit])

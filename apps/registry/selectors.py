from django.db.models import QuerySet

from .models import ModelVersion


def model_version_champion(*, use_case: str) -> ModelVersion | None:
    return ModelVersion.objects.filter(use_case=use_case, status=ModelVersion.Status.CHAMPION).first()


def model_versions_champions() -> QuerySet[ModelVersion]:
    return ModelVersion.objects.filter(status=ModelVersion.Status.CHAMPION).order_by("use_case")


def use_case_is_known(*, use_case: str) -> bool:
    return ModelVersion.objects.filter(use_case=use_case).exists()

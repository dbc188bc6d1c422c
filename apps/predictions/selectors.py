"""Reads of stored predictions, always on behalf of someone (`PredictionReader`), who sees only what is theirs:

- an OAuth2 application: the predictions it created (`actor` "client:<client id>" or "client:<client id>/<user>"),
  or every prediction when its token holds `predictions:read:all`;
- a clinician: the predictions they requested and those of the patients whose care team holds them; any other one
  only through break-the-glass (apps/predictions/views.py), which is recorded in the audit log;
- auditors and model admins (permission `patients.view_all_predictions`), superusers and the system's own jobs
  (monitoring, scoring): every prediction.

A prediction outside the reader's view is reported as absent, never as forbidden, so its existence is not revealed.
"""

from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any
from uuid import UUID

from django.db.models import Q, QuerySet

from apps.patients.selectors import care_team_holds, care_team_patient_identifiers

from .models import Prediction

READ_ALL_SCOPE = "predictions:read:all"
VIEW_ALL_PERMISSION = "patients.view_all_predictions"


@dataclass(frozen=True)
class PredictionReader:
    everything: bool = False
    client_id: str | None = None
    user_id: int | None = None

    @classmethod
    def for_application(cls, *, client_id: str, read_all: bool) -> "PredictionReader":
        return cls(everything=True) if read_all else cls(client_id=client_id)

    @classmethod
    def for_user(cls, user: Any) -> "PredictionReader":
        if user.is_superuser or user.has_perm(VIEW_ALL_PERMISSION):
            return cls(everything=True)
        return cls(user_id=user.pk)


# Monitoring, scoring and other jobs of the system itself: they read every prediction, and show no single one.
EVERYONE = PredictionReader(everything=True)


def _visible(reader: PredictionReader) -> Q:
    if reader.everything:
        return Q()
    if reader.client_id is not None:
        label = f"client:{reader.client_id}"
        # "client:<id>/<user>" is written only for a token bound to a user (requested_by set): a CDS client's
        # "client:cds:<issuer URL>", which holds slashes, can never pass for an application's own.
        return Q(actor=label) | Q(actor__startswith=f"{label}/", requested_by__isnull=False)
    if reader.user_id is not None:
        return Q(requested_by_id=reader.user_id) | Q(
            patient_ref__in=care_team_patient_identifiers(user_id=reader.user_id))
    return Q(pk__in=[])


def prediction_list(
    *,
    reader: PredictionReader,
    use_case: str | None = None,
    patient_ref: str | None = None,
    model_version: str | None = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
) -> QuerySet[Prediction]:
    queryset = Prediction.objects.filter(_visible(reader))
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


def prediction_get(*, prediction_id: UUID, reader: PredictionReader) -> Prediction:
    """One prediction the reader may see; `Prediction.DoesNotExist` when there is none or it is not theirs."""
    return Prediction.objects.select_related("model_version").filter(_visible(reader)).get(pk=prediction_id)


class Access(Enum):
    GRANTED = "granted"
    BREAK_GLASS = "break_glass"  # exists, but the clinician must state a reason (audited) to open it


def prediction_for_person(*, prediction_id: UUID, user: Any) -> tuple[Prediction, Access]:
    """A prediction for the clinician pages: granted when it is the person's to see, else BREAK_GLASS (the page asks
    for a reason before showing anything). `Prediction.DoesNotExist` when there is no such prediction."""
    prediction = Prediction.objects.select_related("model_version").get(pk=prediction_id)
    reader = PredictionReader.for_user(user)
    if (reader.everything or prediction.requested_by_id == user.pk
            or care_team_holds(user_id=user.pk, patient_ref=prediction.patient_ref)):
        return prediction, Access.GRANTED
    return prediction, Access.BREAK_GLASS


def predictions_recent_by_user(*, user_id: int, limit: int = 10) -> list[Prediction]:
    return list(Prediction.objects.filter(requested_by_id=user_id).order_by("-created_at")[:limit])

"""Reads over the registry: live versions, champion history ("which version was champion at time T"), the
comparison shown before a promotion and the challenger's agreement with the champion."""

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db.models import Avg, Count, F, Prefetch, Q, QuerySet
from django.db.models.functions import Abs

from apps.core.exceptions import ApplicationError

from .models import ModelVersion, ModelVersionStatusChange, ShadowPrediction


def model_version_champion(*, use_case: str) -> ModelVersion | None:
    return ModelVersion.objects.filter(use_case=use_case, status=ModelVersion.Status.CHAMPION).first()


def model_version_challenger(*, use_case: str) -> ModelVersion | None:
    return ModelVersion.objects.filter(use_case=use_case, status=ModelVersion.Status.CHALLENGER).first()


def model_versions_champions() -> QuerySet[ModelVersion]:
    return ModelVersion.objects.filter(status=ModelVersion.Status.CHAMPION).order_by("use_case")


def model_version_get(*, use_case: str, version: int) -> ModelVersion:
    try:
        return ModelVersion.objects.get(use_case=use_case, version=version)
    except ModelVersion.DoesNotExist as exc:
        raise ApplicationError(f"No model version {use_case}@{version}.", code="not_found", status_code=404,
                               fields={"version": [f"{use_case} has no version {version}."]}) from exc


def model_version_champion_at(*, use_case: str, at: datetime) -> ModelVersion | None:
    """The version that was champion of `use_case` at instant `at` (inclusive), from the status history; None when
    no version was champion then. `at` must be timezone-aware."""
    if at.tzinfo is None or at.utcoffset() is None:
        raise ApplicationError("The time must carry a timezone (e.g. 2026-01-31T12:00:00+00:00).", code="invalid",
                               fields={"at": ["A timezone-aware date and time is required."]})
    champion = ModelVersion.Status.CHAMPION
    last = (
        ModelVersionStatusChange.objects.filter(use_case=use_case, changed_at__lte=at)
        .filter(Q(to_status=champion) | Q(from_status=champion))
        .select_related("version")
        .order_by("-changed_at", "-id")
        .first()
    )
    if last is None or last.to_status != champion:
        return None
    return last.version


@dataclass(frozen=True)
class ChampionPeriod:
    version: ModelVersion
    start: datetime
    end: datetime | None  # None: still champion
    kind: str  # promote or rollback (or backfill)
    reason: str
    actor: str
    audit_seq: int | None


def model_version_champion_history(*, use_case: str) -> list[ChampionPeriod]:
    """Every period during which a version was champion of `use_case`, oldest first."""
    champion = ModelVersion.Status.CHAMPION
    changes = (
        ModelVersionStatusChange.objects.filter(use_case=use_case)
        .filter(Q(to_status=champion) | Q(from_status=champion))
        .select_related("version")
        .order_by("changed_at", "id")
    )
    periods: list[ChampionPeriod] = []
    open_period: ChampionPeriod | None = None
    for change in changes:
        if change.to_status == champion:
            if open_period is not None:  # defensive: a start without an explicit end closes the previous one
                periods.append(_closed(open_period, change.changed_at))
            open_period = ChampionPeriod(change.version, change.changed_at, None, change.kind, change.reason,
                                         change.actor, change.audit_seq)
        elif open_period is not None and open_period.version.pk == change.version_id:
            periods.append(_closed(open_period, change.changed_at))
            open_period = None
    if open_period is not None:
        periods.append(open_period)
    return periods


def _closed(period: ChampionPeriod, end: datetime) -> ChampionPeriod:
    return ChampionPeriod(period.version, period.start, end, period.kind, period.reason, period.actor,
                          period.audit_seq)


def model_version_previous_champion(*, use_case: str) -> ModelVersion | None:
    """The champion before the current one (the target of a rollback), or None."""
    history = model_version_champion_history(use_case=use_case)
    current = model_version_champion(use_case=use_case)
    for period in reversed(history):
        if period.end is not None and (current is None or period.version.pk != current.pk):
            return period.version
    return None


def model_version_was_champion(*, version: ModelVersion) -> bool:
    return version.status_changes.filter(to_status=ModelVersion.Status.CHAMPION).exists()


def model_version_status_history(*, version: ModelVersion) -> QuerySet[ModelVersionStatusChange]:
    return version.status_changes.select_related("actor_user").order_by("changed_at", "id")


def use_cases() -> list[str]:
    return list(ModelVersion.objects.order_by("use_case").values_list("use_case", flat=True).distinct())


# --- the model catalogue for integrators (GET /api/v1/models) -------------------------------------------------


@dataclass(frozen=True)
class LiveModel:
    """A registered use case and the version that answers its predictions now (None: no champion, predictions get
    503), with the status change that made it champion."""

    use_case: str
    version: ModelVersion | None
    promotion: ModelVersionStatusChange | None


def _promotions() -> Prefetch:
    """Each version's status changes that made it champion, newest first (to_attr `promotions`)."""
    return Prefetch("status_changes", to_attr="promotions", queryset=ModelVersionStatusChange.objects.filter(
        to_status=ModelVersion.Status.CHAMPION).order_by("-changed_at", "-id"))


def model_version_last_promotion(*, version: ModelVersion) -> ModelVersionStatusChange | None:
    """The status change that last made `version` champion (its promotion or rollback), or None if it never was."""
    promotions = getattr(version, "promotions", None)
    if promotions is not None:
        return promotions[0] if promotions else None
    return (version.status_changes.filter(to_status=ModelVersion.Status.CHAMPION)
            .order_by("-changed_at", "-id").first())


def live_models() -> list[LiveModel]:
    """Every registered use case with its live version, by name: two queries, whatever the number of use cases."""
    champions = {v.use_case: v for v in model_versions_champions().prefetch_related(_promotions())}
    return [LiveModel(name, champions.get(name),
                      model_version_last_promotion(version=champions[name]) if name in champions else None)
            for name in use_cases()]


def live_model_version(*, use_case: str, version: int | None = None) -> ModelVersion:
    """The version an integrator asks about: `version` of `use_case`, or its champion when `version` is None.
    Unknown use case, unknown version or no champion: ApplicationError 404 naming the field and what exists."""
    registered = dict(ModelVersion.objects.filter(use_case=use_case).values_list("version", "status"))
    if not registered:
        known = ", ".join(use_cases()) or "none"
        raise ApplicationError(f"No model is registered for the use case '{use_case}'.", code="not_found",
                               status_code=404,
                               fields={"use_case": [f"Unknown use case; registered use cases: {known}."]})
    numbers = ", ".join(str(n) for n in sorted(registered))
    if version is None:
        version = next((n for n, status in registered.items() if status == ModelVersion.Status.CHAMPION), None)
        if version is None:
            raise ApplicationError(f"{use_case} has no live (champion) version; ask for one with ?version=N.",
                                   code="not_found", status_code=404,
                                   fields={"version": [f"No live version; registered versions: {numbers}."]})
    elif version not in registered:
        raise ApplicationError(f"No model version {use_case}@{version}.", code="not_found", status_code=404,
                               fields={"version": [f"{use_case} has no version {version}; registered versions: "
                                                   f"{numbers}."]})
    return ModelVersion.objects.prefetch_related(_promotions()).get(use_case=use_case, version=version)


# --- comparison with the champion ---------------------------------------------------------------------------

_COMPARED: tuple[tuple[str, str], ...] = (
    ("test AUROC", "auroc"),
    ("test AUPRC", "auprc"),
    ("test Brier score", "brier"),
    ("calibration slope", "calibration_slope"),
    ("calibration intercept", "calibration_intercept"),
)


@dataclass(frozen=True)
class ComparisonRow:
    label: str
    version: Any
    champion: Any


def _metric(version: ModelVersion, key: str) -> Any:
    test = version.test_metrics
    value = test.get(key)
    ci = test.get(f"{key}_ci")
    if isinstance(value, int | float) and ci and len(ci) == 2 and ci[0] is not None:
        return f"{value:.3f} ({ci[0]:.3f}–{ci[1]:.3f})"
    return f"{value:.3f}" if isinstance(value, int | float) else "—"


def _at_threshold(version: ModelVersion, key: str) -> str:
    value = (version.test_metrics.get("at_threshold") or {}).get(key)
    return f"{value:.3f}" if isinstance(value, int | float) else "—"


def model_version_comparison(*, version: ModelVersion, champion: ModelVersion | None) -> list[ComparisonRow]:
    """The evidence of `version` beside the current champion's, row by row (strings ready to show)."""

    def both(fn: Any) -> tuple[Any, Any]:
        return fn(version), (fn(champion) if champion is not None else "—")

    rows = [ComparisonRow("version", *both(lambda v: v.label)),
            ComparisonRow("model type", *both(lambda v: v.model_type)),
            ComparisonRow("registered", *both(lambda v: f"{v.registered_at:%Y-%m-%d %H:%M} UTC"))]
    rows += [ComparisonRow(label, *both(lambda v, k=key: _metric(v, k))) for label, key in _COMPARED]
    rows += [
        ComparisonRow("threshold", *both(lambda v: f"{v.threshold:.3f}")),
        ComparisonRow("sensitivity at threshold", *both(lambda v: _at_threshold(v, "sensitivity"))),
        ComparisonRow("specificity at threshold", *both(lambda v: _at_threshold(v, "specificity"))),
        ComparisonRow("ONNX parity max |diff|", *both(lambda v: f"{v.onnx_parity_max_abs_diff:.1e}")),
        ComparisonRow("test rows / events", *both(
            lambda v: f"{v.test_metrics.get('n', '—')} / {v.test_metrics.get('events', '—')}")),
        ComparisonRow("dataset sha256", *both(lambda v: (v.dataset_sha256 or "—")[:16])),
        ComparisonRow("features", *both(lambda v: ", ".join(f["name"] for f in v.spec_dict.get("features", [])))),
    ]
    return rows


# --- challenger agreement -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ShadowAgreement:
    champion_label: str
    n: int
    agreement_rate: float | None  # share where champion and challenger agree on positive/negative
    mean_abs_difference: float | None  # mean |p_champion - p_challenger|


def shadow_agreement(*, version: ModelVersion) -> list[ShadowAgreement]:
    """How `version`'s shadow scores compare with the champion that answered, per champion version."""
    rows = (
        ShadowPrediction.objects.filter(model_version=version)
        .values("prediction__model_label")
        .annotate(
            n=Count("id"),
            agree=Count("id", filter=Q(positive=F("prediction__positive"))),
            mean_abs=Avg(Abs(F("probability") - F("prediction__probability"))),
        )
        .order_by("prediction__model_label")
    )
    return [
        ShadowAgreement(row["prediction__model_label"], row["n"], row["agree"] / row["n"] if row["n"] else None,
                        row["mean_abs"])
        for row in rows
    ]

"""The model catalogue an integrator reads (GET /api/v1/models[/{use_case}]): which version answers, how to read its
answers (threshold, risk bands), what it is for, and the feature contract a request must follow. Everything comes
from the version's registered manifest (its use-case spec, as validated at registration), never from the current
spec files, so a past version is described as it was trained."""

from typing import Any

from rest_framework import serializers

from apps.core.units import unit_display
from ml.schema import FeatureSpec, UseCaseSpec

from .models import ModelVersion, ModelVersionStatusChange


class FeatureContractSerializer(serializers.Serializer):
    name = serializers.CharField(help_text="The key in a prediction's `features`")
    label = serializers.CharField(help_text="What the value is, for a person")
    description = serializers.CharField(allow_null=True)
    type = serializers.ChoiceField(choices=["numeric", "binary", "categorical"])
    unit = serializers.CharField(allow_null=True, help_text="Canonical unit (UCUM code): what a bare number means; "
                                                            "null for a unitless value")
    unit_display = serializers.CharField(help_text="The canonical unit as a person reads it")
    accepted_units = serializers.ListField(
        child=serializers.CharField(),
        help_text='Units accepted as {"value": number, "unit": code}, canonical first')
    conversion_factors = serializers.DictField(
        child=serializers.FloatField(),
        help_text="Per accepted unit: the factor that converts a value in it to the canonical unit")
    min = serializers.FloatField(allow_null=True, help_text="Plausible minimum, in the canonical unit (inclusive)")
    max = serializers.FloatField(allow_null=True, help_text="Plausible maximum, in the canonical unit (inclusive)")
    categories = serializers.ListField(
        child=serializers.CharField(),
        help_text="Categorical: the accepted values, by name or by their index in this list; otherwise empty "
                  "(a binary feature takes 0 or 1, or true/false: `label` says which is which)")
    loinc = serializers.CharField(allow_null=True, help_text="LOINC code of the observation, if any")
    may_be_missing = serializers.BooleanField(
        help_text="true: null is accepted (the model imputes it and the answer lists it under `imputed`); "
                  "false: a value is required")


class RiskBandsSerializer(serializers.Serializer):
    low = serializers.CharField()
    moderate = serializers.CharField()
    high = serializers.CharField()
    moderate_from = serializers.FloatField(help_text="Probabilities from here are `moderate`")
    high_from = serializers.FloatField(help_text="Probabilities from here are `high` (the threshold)")


class PromotionSerializer(serializers.Serializer):
    at = serializers.DateTimeField()
    by = serializers.CharField(help_text="user:<name>, client:<id> or system:<name>")
    kind = serializers.CharField(help_text="promote, rollback or backfill")
    reason = serializers.CharField()


class PerformanceSerializer(serializers.Serializer):
    test_auroc = serializers.FloatField(allow_null=True)
    test_auroc_ci = serializers.ListField(child=serializers.FloatField(), allow_null=True)
    calibration_slope = serializers.FloatField(allow_null=True)


class ModelVersionDetailSerializer(serializers.Serializer):
    use_case = serializers.CharField()
    title = serializers.CharField()
    version = serializers.IntegerField()
    model_version = serializers.CharField(help_text="use_case@version, as in prediction answers")
    status = serializers.ChoiceField(choices=ModelVersion.Status.values,
                                     help_text="champion: the version that answers predictions now")
    live = serializers.BooleanField()
    model_type = serializers.CharField()
    sha256 = serializers.CharField(help_text="sha256 of the served ONNX file; prediction answers carry it as "
                                             "`model_sha256`")
    registered_at = serializers.DateTimeField()
    promoted = PromotionSerializer(allow_null=True, help_text="The last time this version became champion; null if "
                                                             "it never was")
    threshold = serializers.FloatField(help_text="`positive` is true from this probability")
    risk_bands = RiskBandsSerializer()
    intended_use = serializers.CharField()
    outcome = serializers.CharField(help_text="What the probability is the probability of")
    card_url = serializers.URLField(help_text="The model card (web page for signed-in staff)")
    performance = PerformanceSerializer()
    features = FeatureContractSerializer(many=True)


class LiveVersionSerializer(serializers.Serializer):
    version = serializers.IntegerField()
    model_version = serializers.CharField()
    sha256 = serializers.CharField()
    promoted = PromotionSerializer(allow_null=True)
    url = serializers.URLField(help_text="This version's details and feature contract")


class UseCaseSerializer(serializers.Serializer):
    use_case = serializers.CharField()
    title = serializers.CharField()
    live_version = LiveVersionSerializer(allow_null=True, help_text="null: no live version; predictions for this "
                                                                    "use case answer 503 until one is promoted")
    url = serializers.URLField()


class UseCaseListSerializer(serializers.Serializer):
    count = serializers.IntegerField()
    results = UseCaseSerializer(many=True)


def promotion_represent(change: ModelVersionStatusChange | None) -> dict[str, Any] | None:
    if change is None:
        return None
    return {"at": change.changed_at, "by": change.actor, "kind": change.kind, "reason": change.reason}


def feature_contract(feature: FeatureSpec) -> dict[str, Any]:
    factors = {feature.unit: 1.0} if feature.unit is not None else {}
    factors.update({unit: factor for unit, factor in feature.alternative_units.items() if unit != feature.unit})
    return {
        "name": feature.name,
        "label": feature.label,
        "description": feature.description,
        "type": feature.type,
        "unit": feature.unit,
        "unit_display": unit_display(feature.unit),
        "accepted_units": list(feature.accepted_units),
        "conversion_factors": factors,
        "min": feature.min,
        "max": feature.max,
        "categories": list(feature.categories),
        "loinc": feature.loinc,
        "may_be_missing": feature.allow_missing,
    }


def risk_bands(version: ModelVersion) -> dict[str, Any]:
    """The bands the loader applies (apps/registry/loader.py LoadedModel.risk_band): the manifest's, else high from
    the threshold and moderate from half of it."""
    bands = version.manifest.get("risk_bands") or {}
    high = float(version.threshold)
    moderate = float(bands.get("moderate_from", high / 2))
    return {
        "low": bands.get("low") or f"p < {moderate:.4f}",
        "moderate": bands.get("moderate") or f"{moderate:.4f} <= p < {high:.4f}",
        "high": bands.get("high") or f"p >= {high:.4f}",
        "moderate_from": moderate,
        "high_from": high,
    }


def model_version_represent(version: ModelVersion, *, promotion: ModelVersionStatusChange | None,
                            card_url: str) -> dict[str, Any]:
    spec = UseCaseSpec.from_dict(version.manifest["spec"])
    ci = [version.test_auroc_ci_low, version.test_auroc_ci_high]
    return {
        "use_case": version.use_case,
        "title": spec.title,
        "version": version.version,
        "model_version": version.label,
        "status": version.status,
        "live": version.status == ModelVersion.Status.CHAMPION,
        "model_type": version.model_type,
        "sha256": version.onnx_sha256,
        "registered_at": version.registered_at,
        "promoted": promotion_represent(promotion),
        "threshold": version.threshold,
        "risk_bands": risk_bands(version),
        "intended_use": spec.intended_use,
        "outcome": spec.outcome.label,
        "card_url": card_url,
        "performance": {"test_auroc": version.test_auroc, "test_auroc_ci": ci if None not in ci else None,
                        "calibration_slope": version.calibration_slope},
        "features": [feature_contract(feature) for feature in spec.features],
    }

"""The clinician's prediction form, built from the live model's use-case spec (fields in canonical units, with a
unit selector where the use case accepts more than one unit)."""

import math
from dataclasses import dataclass
from typing import Any

from django import forms
from django.core import signing

from apps.core.units import unit_display
from ml.schema import FeatureSpec, UnitError, UseCaseSpec


def _help_text(feature: FeatureSpec) -> str:
    shown = unit_display(feature.unit)
    unit = f" {shown}" if shown else ""
    parts = []
    if feature.min is not None and feature.max is not None:
        parts.append(f"Plausible range {feature.min:g}–{feature.max:g}{unit}.")
    parts.append("Leave empty if unknown." if feature.allow_missing else "Required.")
    return " ".join(parts)


def _range_shown(feature: FeatureSpec) -> str:
    shown = unit_display(feature.unit)
    if feature.min is not None and feature.max is not None:
        return f"plausible range {feature.min:g}–{feature.max:g}{' ' + shown if shown else ''}"
    return "any number"


def unit_field_name(feature_name: str) -> str:
    return f"{feature_name}__unit"


class PredictionForm(forms.Form):
    patient_id = forms.CharField(
        label="Patient identifier (optional)", required=False, max_length=128,
        help_text="The pseudonymous identifier used in your records; leave empty for an anonymous calculation.",
    )

    def __init__(self, *args: Any, spec: UseCaseSpec, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.spec = spec
        for feature in spec.features:
            accepted_shown = ", ".join(unit_display(unit) for unit in feature.accepted_units)
            self.fields[feature.name] = forms.FloatField(
                label=feature.label,
                required=False,
                help_text=_help_text(feature),
                error_messages={"invalid": f"enter a number ({_range_shown(feature)})"},
                widget=forms.NumberInput(attrs={"step": "any", "inputmode": "decimal"}),
            )
            self.fields[feature.name].unit = feature.unit  # type: ignore[attr-defined]
            if len(feature.accepted_units) > 1:
                self.fields[unit_field_name(feature.name)] = forms.ChoiceField(
                    label=f"Unit of {feature.label.lower()}",
                    choices=[(unit, unit_display(unit)) for unit in feature.accepted_units],
                    initial=feature.unit,
                    help_text=f"Accepted units: {accepted_shown}",
                )

    def feature_rows(self) -> list[tuple[forms.BoundField, forms.BoundField | None]]:
        """(value field, unit field or None) per feature, for the template."""
        rows = []
        for feature in self.spec.features:
            unit_name = unit_field_name(feature.name)
            rows.append((self[feature.name], self[unit_name] if unit_name in self.fields else None))
        return rows

    def features_payload(self) -> dict[str, Any]:
        """The cleaned form as the prediction service's `features` mapping (null = unknown)."""
        payload: dict[str, Any] = {}
        for feature in self.spec.features:
            value = self.cleaned_data.get(feature.name)
            unit = self.cleaned_data.get(unit_field_name(feature.name)) or feature.unit
            payload[feature.name] = None if value is None else {"value": value, "unit": unit}
        return payload

    def add_service_errors(self, errors: dict[str, list[str]]) -> None:
        for field, messages in errors.items():
            for message in messages:
                self.add_error(field if field in self.fields else None, message)


# --- "Predict for this patient": the assembled values for review ---------------------------------------------------

REVIEW_SALT = "clinpredict.predictions.patient-review"
REVIEW_MAX_AGE_SECONDS = 60 * 60


@dataclass(frozen=True)
class ReviewedValue:
    """What the clinician was shown for one feature: the assembled value (canonical unit, None = missing) and the
    FHIR reference it came from ("" when not from FHIR)."""

    value: float | None
    reference: str = ""


def review_token(*, patient_id: int, use_case: str, values: dict[str, ReviewedValue]) -> str:
    """A signed record of the values shown for review, so the submit can tell which values the clinician kept
    (their FHIR references become the prediction's basis) without trusting anything else the browser sends."""
    payload = {"patient": patient_id, "use_case": use_case,
               "values": {name: [v.value, v.reference] for name, v in values.items()}}
    return signing.dumps(payload, salt=REVIEW_SALT, compress=True)


def _initial_number(value: float) -> float | int:
    return int(value) if float(value).is_integer() else value


class PatientReviewForm(PredictionForm):
    """The prediction form pre-filled with a patient's assembled values. The clinician may correct or complete any
    value (with its unit); values kept as shown keep their FHIR reference in the prediction's basis."""

    review = forms.CharField(widget=forms.HiddenInput)

    def __init__(self, *args: Any, spec: UseCaseSpec, patient_id: int, **kwargs: Any) -> None:
        super().__init__(*args, spec=spec, **kwargs)
        del self.fields["patient_id"]  # the patient is known: the prediction carries their identifier
        self.patient_id = patient_id

    @classmethod
    def initial_for(cls, *, spec: UseCaseSpec, patient_id: int, values: dict[str, ReviewedValue],
                    original: dict[str, tuple[float | None, str]]) -> dict[str, Any]:
        """Initial form data: each value as the source gave it when its unit is accepted (so an unchanged value
        converts to exactly the stored canonical value), else in the canonical unit."""
        initial: dict[str, Any] = {"review": review_token(patient_id=patient_id, use_case=spec.use_case,
                                                          values=values)}
        for feature in spec.features:
            if len(feature.accepted_units) > 1:
                initial[unit_field_name(feature.name)] = feature.unit
            shown = values.get(feature.name)
            if shown is None or shown.value is None:
                continue
            given, unit = original.get(feature.name, (None, ""))
            if given is not None and unit in feature.accepted_units:
                initial[feature.name] = _initial_number(given)
                if len(feature.accepted_units) > 1:
                    initial[unit_field_name(feature.name)] = unit
            else:
                initial[feature.name] = _initial_number(shown.value)
        return initial

    def clean_review(self) -> dict[str, ReviewedValue]:
        try:
            payload = signing.loads(self.cleaned_data["review"], salt=REVIEW_SALT, max_age=REVIEW_MAX_AGE_SECONDS)
        except signing.SignatureExpired as exc:
            raise forms.ValidationError("This review is more than an hour old: reload the page to see the patient's "
                                        "current data, then submit again.") from exc
        except signing.BadSignature as exc:
            raise forms.ValidationError("The review data of this form is not valid: reload the page.") from exc
        if payload.get("patient") != self.patient_id or payload.get("use_case") != self.spec.use_case:
            raise forms.ValidationError("This review belongs to another patient or use case: reload the page.")
        return {name: ReviewedValue(value, reference) for name, (value, reference) in payload["values"].items()}

    def basis(self) -> tuple[str, ...]:
        """FHIR references of the values submitted as they were shown (after unit conversion), sorted, unique."""
        reviewed: dict[str, ReviewedValue] = self.cleaned_data["review"]
        references = set()
        for feature in self.spec.features:
            shown = reviewed.get(feature.name)
            submitted = self.cleaned_data.get(feature.name)
            if shown is None or not shown.reference or shown.value is None or submitted is None:
                continue
            unit = self.cleaned_data.get(unit_field_name(feature.name)) or feature.unit
            try:
                canonical = feature.to_canonical(submitted, unit)
            except UnitError:
                continue
            if math.isclose(canonical, shown.value, rel_tol=1e-9, abs_tol=1e-9):
                references.add(shown.reference)
        return tuple(sorted(references))


class BreakGlassForm(forms.Form):
    """Why a clinician opens a prediction that is neither theirs nor of a patient in their care team (recorded in
    the audit log with their name, as EHRs record an emergency access)."""

    class Reason:
        EMERGENCY = "emergency"
        COVERING = "covering"
        CONSULTATION = "consultation"
        REFERRAL = "referral"
        OTHER = "other"

    REASONS = [
        (Reason.EMERGENCY, "Emergency care of this patient"),
        (Reason.COVERING, "Covering for a colleague who cares for this patient"),
        (Reason.CONSULTATION, "Consultation requested by the patient's care team"),
        (Reason.REFERRAL, "Patient referred to me, not yet on my care team"),
        (Reason.OTHER, "Other reason (explain below)"),
    ]
    DETAIL_MAX = 500

    reason = forms.ChoiceField(
        label="Reason for access", choices=REASONS, widget=forms.RadioSelect,
        error_messages={"required": "Reason for access: choose one.",
                        "invalid_choice": "Reason for access: choose one of the reasons listed."},
    )
    detail = forms.CharField(
        label="Details", required=False, max_length=DETAIL_MAX, widget=forms.Textarea(attrs={"rows": 3}),
        help_text=f"Required for “Other reason”; up to {DETAIL_MAX} characters. Do not enter clinical values.",
        error_messages={"max_length": f"Details: at most {DETAIL_MAX} characters."},
    )

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        cleaned["detail"] = " ".join(str(cleaned.get("detail") or "").split())
        if cleaned.get("reason") == self.Reason.OTHER and not cleaned["detail"]:
            self.add_error("detail", "Details: required when the reason is “Other reason”; say why you need access.")
        return cleaned

"""A stored prediction as a FHIR R4 RiskAssessment (with the model as a contained Device)."""

from typing import Any

from apps.core.renderers import JSONRenderer

from .models import Prediction

PREDICTION_SYSTEM = "urn:clinpredict:prediction"
PATIENT_SYSTEM = "urn:clinpredict:patient"
MODEL_SYSTEM = "urn:clinpredict:model-version"
RISK_PROBABILITY_SYSTEM = "http://terminology.hl7.org/CodeSystem/risk-probability"


class FHIRJSONRenderer(JSONRenderer):
    media_type = "application/fhir+json"
    format = "fhir"


def _instant(prediction: Prediction) -> str:
    return prediction.created_at.isoformat(timespec="seconds")


def risk_assessment(prediction: Prediction) -> dict[str, Any]:
    """`basis` lists the FHIR references (e.g. "Observation/123") of the inputs when they came from FHIR."""
    basis = prediction.basis
    spec = prediction.model_version.manifest.get("spec", {})
    outcome = spec.get("outcome", {}).get("label") or prediction.use_case
    subject: dict[str, Any] = (
        {"identifier": {"system": PATIENT_SYSTEM, "value": prediction.patient_ref}}
        if prediction.patient_ref else {"display": "Unidentified person (manual calculation)"}
    )
    device = {
        "resourceType": "Device",
        "id": "model",
        "identifier": [{"system": "urn:clinpredict:onnx-sha256", "value": prediction.model_sha256}],
        "deviceName": [{"name": f"ClinPredict {prediction.model_label}", "type": "model-name"}],
        "version": [{"value": prediction.model_label}],
        "type": {"text": f"{prediction.model_version.model_type} clinical prediction model"},
    }
    resource: dict[str, Any] = {
        "resourceType": "RiskAssessment",
        "id": str(prediction.id),
        "meta": {"lastUpdated": _instant(prediction)},
        "contained": [device],
        "identifier": [{"system": PREDICTION_SYSTEM, "value": str(prediction.id)}],
        "status": "final",
        "method": {
            "coding": [{"system": MODEL_SYSTEM, "code": prediction.model_label}],
            "text": f"ClinPredict {prediction.model_label} ({prediction.model_version.model_type})",
        },
        "subject": subject,
        "occurrenceDateTime": _instant(prediction),
        "performer": {"reference": "#model", "display": f"ClinPredict model {prediction.model_label}"},
        "prediction": [{
            "outcome": {"text": outcome},
            "probabilityDecimal": round(prediction.probability, 6),
            "qualitativeRisk": {
                "coding": [{"system": RISK_PROBABILITY_SYSTEM, "code": prediction.risk_band,
                            "display": prediction.get_risk_band_display()}],
            },
        }],
        "note": [{"text": (
            f"Decision threshold {prediction.threshold:.4f}: "
            f"{'at or above' if prediction.positive else 'below'} it. Audit record #{prediction.audit_seq}."
        )}],
    }
    if basis:
        resource["basis"] = [{"reference": reference} for reference in basis]
    return resource

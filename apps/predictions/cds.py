"""CDS Hooks (patient-view): discovery, the caller's signed JWT, FHIR inputs (prefetch or fetched), and a card.

A call is a prediction like any other: validated against the champion's spec, stored with its audit event in one
transaction, and the card links to the explanation page. Inputs come from the prefetch the EHR sends or, without
it, from the EHR's FHIR server using the access token it passes in `fhirAuthorization`.
"""

import logging
from collections.abc import Callable, Mapping
from typing import Any
from uuid import UUID

import httpx
import jwt
from django.conf import settings
from django.core.cache import cache
from django.utils import timezone

from apps.audit.actors import Actor
from apps.core.exceptions import ApplicationError, ServiceUnavailable
from apps.patients.selectors import fhir_resources_features_assemble, resolve_spec
from apps.registry.loader import champion_model
from apps.registry.selectors import model_versions_champions
from ml.schema import UseCaseSpec

from .models import CdsClient, Prediction
from .services import PredictionRequest, prediction_create

logger = logging.getLogger(__name__)

SERVICE_PREFIX = "clinpredict-"
JWT_ALGORITHMS = ["ES384", "RS384", "ES256", "RS256", "ES512", "RS512"]
MAX_JWT_LIFETIME_SECONDS = 300
LOINC = "http://loinc.org"
INDICATOR = {"low": "info", "moderate": "warning", "high": "critical"}


class CdsAuthError(ApplicationError):
    status_code = 401


# --- Discovery ---------------------------------------------------------------------------------------------------

def _loinc_codes(spec: UseCaseSpec) -> list[str]:
    """What to ask a FHIR server for: the spec's observed LOINC codes and panels (as the FHIR sync does)."""
    return [f"{LOINC}|{code}" for code in resolve_spec(spec).observed_loinc_codes()]


def service_id(use_case: str) -> str:
    return f"{SERVICE_PREFIX}{use_case}"


def cds_services() -> list[dict[str, Any]]:
    """One patient-view service per use case with a live model."""
    services = []
    for version in model_versions_champions():
        spec = UseCaseSpec.from_dict(version.manifest["spec"])
        codes = ",".join(_loinc_codes(spec))
        services.append({
            "hook": "patient-view",
            "id": service_id(spec.use_case),
            "title": f"ClinPredict: {spec.title}",
            "description": f"Risk of {spec.outcome.label or spec.use_case} from the patient's latest results, "
                           f"with the factors behind it (live model {version.label}).",
            "prefetch": {
                "patient": "Patient/{{context.patientId}}",
                "observations": f"Observation?patient={{{{context.patientId}}}}&code={codes}&_sort=-date&_count=100",
            },
        })
    return services


# --- Authentication: the calling EHR's signed JWT ------------------------------------------------------------------

def cds_client_verify(*, authorization: str, audience: str) -> CdsClient:
    """Verify the bearer JWT a CDS client sends (CDS Hooks "Trusting CDS Clients"): signed by a key registered for its
    `iss`, `aud` is this service's URL, short-lived, and its `jti` not seen before."""
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise CdsAuthError("A signed JWT is required: Authorization: Bearer <jwt>.", code="not_authenticated")
    try:
        header = jwt.get_unverified_header(token)
        issuer = jwt.decode(token, options={"verify_signature": False}).get("iss", "")
    except jwt.PyJWTError as exc:
        raise CdsAuthError("The bearer token is not a JWT.", code="invalid_token") from exc
    client = CdsClient.objects.filter(issuer=issuer, active=True).first()
    if client is None:
        raise CdsAuthError("Unknown or inactive CDS client (iss).", code="invalid_token")
    try:
        keys = [k for k in jwt.PyJWKSet.from_dict(client.jwks).keys if k.key_id in (None, header.get("kid"))]
    except jwt.PyJWTError as exc:
        raise CdsAuthError("The client's registered key set is unusable.", code="invalid_token") from exc
    claims: dict[str, Any] | None = None
    for key in keys:
        try:
            claims = jwt.decode(token, key=key.key, algorithms=JWT_ALGORITHMS, audience=audience, issuer=issuer,
                                options={"require": ["iss", "aud", "exp", "iat", "jti"]}, leeway=30)
            break
        except jwt.InvalidSignatureError:
            continue
        except jwt.PyJWTError as exc:
            raise CdsAuthError(f"The JWT was refused: {exc}.", code="invalid_token") from exc
    if claims is None:
        raise CdsAuthError("The JWT signature does not match the client's registered keys.", code="invalid_token")
    if int(claims["exp"]) - int(claims["iat"]) > MAX_JWT_LIFETIME_SECONDS:
        raise CdsAuthError("The JWT lives longer than 5 minutes.", code="invalid_token")
    try:
        first_use = cache.add(f"cds-jti:{client.pk}:{claims['jti']}", 1, timeout=MAX_JWT_LIFETIME_SECONDS * 2)
    except Exception as exc:  # replay protection cannot be checked: refuse rather than accept a possible replay
        raise ServiceUnavailable("CDS Hooks is unavailable (replay check); retry later.",
                                 code="service_unavailable") from exc
    if not first_use:
        raise CdsAuthError("This JWT was already used (jti replay).", code="invalid_token")
    return client


# --- Inputs from FHIR ------------------------------------------------------------------------------------------------

def fhir_fetch(*, fhir_server: str, authorization: Mapping[str, Any] | None, patient_id: str,
               spec: UseCaseSpec) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """Patient and Observations from the EHR's FHIR server, with the access token the EHR handed us."""
    headers = {"Accept": "application/fhir+json"}
    if authorization and authorization.get("access_token"):
        headers["Authorization"] = f"Bearer {authorization['access_token']}"
    timeout = httpx.Timeout(settings.CDS_HOOKS_FHIR_TIMEOUT_SECONDS)
    try:
        with httpx.Client(base_url=fhir_server.rstrip("/") + "/", headers=headers, timeout=timeout) as client:
            patient_response = client.get(f"Patient/{patient_id}")
            patient = patient_response.json() if patient_response.status_code == 200 else None
            bundle = client.get("Observation", params={"patient": patient_id, "code": ",".join(_loinc_codes(spec)),
                                                       "_sort": "-date", "_count": 100})
            bundle.raise_for_status()
    except (httpx.HTTPError, ValueError) as exc:
        logger.warning("CDS Hooks: FHIR server fetch failed", extra={"error_type": type(exc).__name__})
        raise ApplicationError("Could not read the patient's data from the FHIR server.", code="fhir_unavailable",
                               status_code=412) from exc
    entries = bundle.json().get("entry", [])
    return patient, [entry["resource"] for entry in entries if "resource" in entry]


def _prefetched(prefetch: Mapping[str, Any] | None) -> tuple[dict[str, Any] | None, list[dict[str, Any]]] | None:
    if not prefetch or "observations" not in prefetch:
        return None
    bundle = prefetch.get("observations") or {}
    observations = [e["resource"] for e in bundle.get("entry", []) if isinstance(e, dict) and "resource" in e]
    return prefetch.get("patient"), observations


# --- The service ---------------------------------------------------------------------------------------------------

def _card(summary: str, indicator: str, detail: str, *, source_label: str,
          links: list[dict[str, str]] | None = None) -> dict[str, Any]:
    card: dict[str, Any] = {"summary": summary[:140], "indicator": indicator, "detail": detail,
                            "source": {"label": source_label}}
    if links:
        card["links"] = links
    return card


def cds_patient_view(*, use_case: str, payload: Mapping[str, Any], client: CdsClient,
                     explanation_url: Callable[[UUID], str]) -> dict[str, Any]:
    """Answer one patient-view call with one card linking to the prediction's explanation page."""
    model = champion_model(use_case)
    if model is None:
        raise ApplicationError(f"No CDS service '{service_id(use_case)}'.", code="not_found", status_code=404)
    context = payload.get("context") or {}
    patient_id = str(context.get("patientId") or "")
    if payload.get("hook") != "patient-view" or not patient_id:
        raise ApplicationError("Expected a patient-view hook with context.patientId.", code="invalid",
                               fields={"context.patientId": ["required"], "hook": ["must be patient-view"]})
    fetched = _prefetched(payload.get("prefetch"))
    if fetched is None:
        if not payload.get("fhirServer"):
            raise ApplicationError("No prefetch and no fhirServer: nothing to read the patient's data from.",
                                   code="prefetch_missing", status_code=412)
        fetched = fhir_fetch(fhir_server=str(payload["fhirServer"]), authorization=payload.get("fhirAuthorization"),
                             patient_id=patient_id, spec=model.spec)
    patient, observations = fetched
    assembly = fhir_resources_features_assemble(spec=model.spec, patient=patient, observations=observations,
                                                at=timezone.now())
    features = assembly.features.features()
    source = f"ClinPredict {model.label}"
    missing = [f for f in model.spec.features if features.get(f.name) is None and not f.allow_missing]
    if missing:
        why = [f"{f.label}: {assembly.features.values[f.name].reason or 'not available'}" for f in missing]
        unusable = [r.message for r in assembly.rejections if r.reason not in {"unknown_code"}]
        detail = "The model needs these before it can estimate a risk: " + "; ".join(why) + "."
        if unusable:
            detail += " Results that could not be used: " + "; ".join(unusable[:5]) + "."
        return {"cards": [_card(f"{model.spec.title}: risk not calculated (not enough usable data)", "info",
                                detail, source_label=source)]}
    try:
        prediction = prediction_create(
            request=PredictionRequest(use_case, features, patient_id, tuple(assembly.basis)),
            actor=Actor(type="client", id=f"cds:{client.issuer}"),
            channel=Prediction.Channel.CDS,
        )
    except ApplicationError as exc:
        if exc.code != "invalid_features":
            raise
        why = "; ".join(f"{name}: {' '.join(messages)}" for name, messages in exc.fields.items())
        return {"cards": [_card(f"{model.spec.title}: risk not calculated (implausible values)", "warning",
                                f"Check these results before relying on any risk estimate: {why}.",
                                source_label=source)]}
    top = [item for item in prediction.explanation if item["contribution"] > 0][:3]
    factors = ", ".join(f"{item['label'].lower()}" for item in top) or "no single factor stands out"
    percent = round(prediction.probability * 100)
    return {"cards": [_card(
        f"{model.spec.title}: {percent}% ({prediction.get_risk_band_display().lower()} risk)",
        INDICATOR[prediction.risk_band],
        f"Estimated probability {prediction.probability:.2f} against the model's threshold "
        f"{prediction.threshold:.2f}. Main factors raising it: {factors}."
        + (f" Not available, handled as missing: {', '.join(prediction.imputed)}." if prediction.imputed else ""),
        source_label=source,
        links=[{"label": "Why this risk (explanation)", "url": explanation_url(prediction.id),
                "type": "absolute"}],
    )]}

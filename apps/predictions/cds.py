"""CDS Hooks (patient-view): discovery, the caller's signed JWT, FHIR inputs (prefetch or fetched), and a card.

A call is a prediction like any other: validated against the champion's spec, stored with its audit event in one
transaction, and the card links to the explanation page. Inputs come from the prefetch the EHR sends or, without
it, from the EHR's FHIR server using the access token it passes in `fhirAuthorization`, and only when that server
lies under a FHIR base URL registered for the client in admin (`fhir_base_urls.py`): anything else is refused before
a connection is made, so a client cannot point this server at other hosts or ports.

Order of a call: the JWT's signature and claims, then the request body (shape, patient id, fhirServer against the
registered bases), and only then the JWT's `jti` is spent. A call refused for its body can be retried with the same
JWT; a call that got as far as reading data or predicting cannot be replayed.
"""

import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import httpx
import jwt
import pydantic
from django.conf import settings
from django.core.cache import cache
from django.utils import timezone
from fhir.resources.R4B.observation import Observation as FhirObservation
from fhir.resources.R4B.patient import Patient as FhirPatient

from apps.audit.actors import Actor
from apps.core.exceptions import ApplicationError, ServiceUnavailable
from apps.patients.selectors import fhir_resources_features_assemble, resolve_spec
from apps.registry.loader import champion_model
from apps.registry.selectors import model_versions_champions
from ml.schema import UseCaseSpec

from .fhir_base_urls import FhirBaseUrl, FhirBaseUrlError, fhir_base_url_match, fhir_base_url_parse
from .models import CdsClient, Prediction
from .services import PredictionRequest, prediction_create

logger = logging.getLogger(__name__)

SERVICE_PREFIX = "clinpredict-"
JWT_ALGORITHMS = ["ES384", "RS384", "ES256", "RS256", "ES512", "RS512"]
MAX_JWT_LIFETIME_SECONDS = 300
LOINC = "http://loinc.org"
INDICATOR = {"low": "info", "moderate": "warning", "high": "critical"}
# FHIR R4 `id` (http://hl7.org/fhir/R4/datatypes.html#id); an id of dots only would be a path segment "." or "..".
FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
MAX_RESOURCE_ERRORS = 5


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

@dataclass(frozen=True)
class CdsCaller:
    """A CDS client whose JWT verified; `jti` is not yet spent (`cds_jti_consume`)."""

    client: CdsClient
    jti: str


def cds_client_verify(*, authorization: str, audience: str) -> CdsCaller:
    """Verify the bearer JWT a CDS client sends (CDS Hooks "Trusting CDS Clients"): signed by a key registered for its
    `iss`, `aud` is this service's URL and short-lived. Its `jti` is checked and spent by `cds_jti_consume`, once
    the request body has been found acceptable."""
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
    return CdsCaller(client=client, jti=str(claims["jti"]))


def cds_jti_consume(*, caller: CdsCaller) -> None:
    """Spend the JWT's `jti`: a second call with the same JWT gets 401 (replay), on any worker (shared cache)."""
    try:
        first_use = cache.add(f"cds-jti:{caller.client.pk}:{caller.jti}", 1, timeout=MAX_JWT_LIFETIME_SECONDS * 2)
    except Exception as exc:  # replay protection cannot be checked: refuse rather than accept a possible replay
        raise ServiceUnavailable("CDS Hooks is unavailable (replay check); retry later.",
                                 code="service_unavailable") from exc
    if not first_use:
        raise CdsAuthError("This JWT was already used (jti replay).", code="invalid_token")


# --- The request body ----------------------------------------------------------------------------------------------

def _invalid(field: str, problem: str) -> ApplicationError:
    return ApplicationError(f"Invalid CDS Hooks request: {field} {problem}.", code="invalid", fields={field: [problem]})


def _resource_errors(exc: pydantic.ValidationError, where: str) -> dict[str, list[str]]:
    """pydantic's errors as {field path: [problem]}, without the offending values (they may be patient data)."""
    fields: dict[str, list[str]] = {}
    for error in exc.errors()[:MAX_RESOURCE_ERRORS]:
        path = where + "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in error["loc"])
        problem = ("has the wrong type (an object or a list is expected)" if error["type"] == "json_invalid"
                   else str(error["msg"]))
        fields.setdefault(path, []).append(f"not valid FHIR R4: {problem}")
    return fields


def _valid_resource(resource: Any, model: type[pydantic.BaseModel], where: str) -> dict[str, Any]:
    """The resource (as given) when it is valid FHIR R4; otherwise 400 naming each field that is not."""
    try:
        model.model_validate(resource)
    except pydantic.ValidationError as exc:
        fields = _resource_errors(exc, where)
        raise ApplicationError(f"Invalid CDS Hooks request: {where} is not a valid FHIR R4 {model.__name__} "
                               f"({', '.join(fields)}).", code="invalid", fields=fields) from exc
    return resource


def _bundle_observations(bundle: Any, where: str) -> list[dict[str, Any]]:
    """The Observations of a searchset Bundle, each checked as FHIR R4; other resource types (an OperationOutcome
    the server adds, included resources) are left out."""
    if not isinstance(bundle, Mapping):
        raise _invalid(where, "must be a FHIR Bundle (a JSON object)")
    entries = bundle.get("entry", [])
    if entries is None:
        entries = []
    if not isinstance(entries, list):
        raise _invalid(f"{where}.entry", "must be a list of Bundle entries")
    observations = []
    for index, entry in enumerate(entries):
        field = f"{where}.entry[{index}]"
        if not isinstance(entry, Mapping):
            raise _invalid(field, "must be a Bundle entry (a JSON object)")
        resource = entry.get("resource")
        if resource is None:
            continue
        if not isinstance(resource, Mapping):
            raise _invalid(f"{field}.resource", "must be a FHIR resource (a JSON object)")
        if resource.get("resourceType") != "Observation":
            continue
        observations.append(_valid_resource(resource, FhirObservation, f"{field}.resource"))
    return observations


def _patient(resource: Any, where: str) -> dict[str, Any] | None:
    if resource is None:
        return None
    if not isinstance(resource, Mapping) or resource.get("resourceType") != "Patient":
        raise _invalid(where, 'must be a FHIR Patient resource (a JSON object with "resourceType": "Patient") '
                              "or null")
    return _valid_resource(resource, FhirPatient, where)


@dataclass(frozen=True)
class PatientViewRequest:
    """A patient-view call whose body has the expected shape: the patient, and either the prefetched resources or a
    FHIR server (under a base registered for the client) with the access token to read it with."""

    patient_id: str
    prefetched: tuple[dict[str, Any] | None, list[dict[str, Any]]] | None
    fhir_server: FhirBaseUrl | None = None
    access_token: str | None = None


def cds_patient_view_request(*, payload: Any, client: CdsClient) -> PatientViewRequest:
    """Check a patient-view body before anything is spent or fetched: 400 naming the field for a wrong shape; 412
    when there is nothing to read the patient's data from or the fhirServer is not one registered for the client."""
    if not isinstance(payload, Mapping):
        kind = {list: "an array", str: "a string", int: "a number", float: "a number", bool: "true/false",
                type(None): "null"}.get(type(payload), type(payload).__name__)
        raise ApplicationError(f"The CDS Hooks request must be a JSON object; got {kind}.", code="invalid",
                               fields={"non_field_errors": ["must be a JSON object (a CDS Hooks request)"]})
    if payload.get("hook") != "patient-view":
        raise _invalid("hook", 'must be "patient-view"')
    context = payload.get("context")
    if not isinstance(context, Mapping):
        raise _invalid("context", "must be a JSON object with patientId")
    patient_id = context.get("patientId")
    if not isinstance(patient_id, str) or not patient_id:
        raise _invalid("context.patientId", "is required and must be a string (the patient's FHIR id)")
    if not FHIR_ID.fullmatch(patient_id) or not patient_id.strip("."):
        raise _invalid("context.patientId", "must be a FHIR id: 1 to 64 letters, digits, '-' or '.', not only dots")

    prefetch = payload.get("prefetch")
    if prefetch is not None and not isinstance(prefetch, Mapping):
        raise _invalid("prefetch", "must be a JSON object (prefetch key -> FHIR resource) or absent")
    prefetch = prefetch or {}
    # A prefetch key the EHR could not fill is null (CDS Hooks): then the service reads the FHIR server itself.
    if prefetch.get("observations") is not None:
        return PatientViewRequest(
            patient_id=patient_id,
            prefetched=(_patient(prefetch.get("patient"), "prefetch.patient"),
                        _bundle_observations(prefetch["observations"], "prefetch.observations")),
        )

    fhir_server = payload.get("fhirServer")
    if fhir_server is None or fhir_server == "":
        raise ApplicationError("No prefetch and no fhirServer: nothing to read the patient's data from.",
                               code="prefetch_missing", status_code=412,
                               fields={"prefetch.observations": ["required when there is no fhirServer"]})
    if not isinstance(fhir_server, str):
        raise _invalid("fhirServer", "must be a string (the FHIR server's base URL)")
    try:
        server = fhir_base_url_match(fhir_server, client.fhir_base_urls)
    except FhirBaseUrlError as exc:
        logger.warning("CDS Hooks: fhirServer refused", extra={"cds_client": client.pk})
        raise ApplicationError(
            f"fhirServer refused: {exc}. Nothing was fetched. Send a prefetch, or ask the service's administrators "
            "to register this FHIR base URL for your CDS client.", code="fhir_server_not_allowed", status_code=412,
            fields={"fhirServer": [str(exc)]}) from exc
    authorization = payload.get("fhirAuthorization")
    if authorization is not None and not isinstance(authorization, Mapping):
        raise _invalid("fhirAuthorization", "must be a JSON object with access_token, or absent")
    token = (authorization or {}).get("access_token")
    if token is not None and not isinstance(token, str):
        raise _invalid("fhirAuthorization.access_token", "must be a string")
    return PatientViewRequest(patient_id=patient_id, prefetched=None, fhir_server=server, access_token=token or None)


# --- Inputs from FHIR ------------------------------------------------------------------------------------------------

def _fhir_unavailable(message: str, code: str = "fhir_unavailable") -> ApplicationError:
    return ApplicationError(message, code=code, status_code=412)


def fhir_fetch(*, fhir_server: FhirBaseUrl, access_token: str | None, patient_id: str,
               spec: UseCaseSpec) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """Patient and Observations from the EHR's FHIR server (already matched to a registered base), with the access
    token the EHR handed us. Every request, checked before it is sent, stays under that base; a redirect is not
    followed (412): the token goes nowhere else."""
    headers = {"Accept": "application/fhir+json"}
    if access_token:
        headers["Authorization"] = f"Bearer {access_token}"

    def stays_on_base(request: httpx.Request) -> None:
        try:
            target = fhir_base_url_parse(str(request.url.copy_with(query=None)))
        except FhirBaseUrlError:
            target = None
        if target is None or not fhir_server.contains(target):
            raise _fhir_unavailable("Refused a request that would leave the registered FHIR base URL.",
                                    code="fhir_server_not_allowed")

    timeout = httpx.Timeout(settings.CDS_HOOKS_FHIR_TIMEOUT_SECONDS)
    try:
        with httpx.Client(base_url=f"{fhir_server}/", headers=headers, timeout=timeout, follow_redirects=False,
                          event_hooks={"request": [stays_on_base]}) as client:
            patient_response = client.get(f"Patient/{patient_id}")
            _no_redirect(patient_response)
            patient = patient_response.json() if patient_response.status_code == 200 else None
            bundle = client.get("Observation", params={"patient": patient_id, "code": ",".join(_loinc_codes(spec)),
                                                       "_sort": "-date", "_count": 100})
            _no_redirect(bundle)
            bundle.raise_for_status()
            bundle_body = bundle.json()
    except (httpx.HTTPError, ValueError) as exc:
        logger.warning("CDS Hooks: FHIR server fetch failed", extra={"error_type": type(exc).__name__})
        raise _fhir_unavailable("Could not read the patient's data from the FHIR server.") from exc
    try:
        return (_patient(patient, "Patient") if isinstance(patient, Mapping) else None,
                _bundle_observations(bundle_body, "Observation search"))
    except ApplicationError as exc:
        raise _fhir_unavailable(f"The FHIR server's answer is not usable: {exc.message}") from exc


def _no_redirect(response: httpx.Response) -> None:
    if response.is_redirect:
        logger.warning("CDS Hooks: FHIR server redirected; not followed", extra={"status": response.status_code})
        raise _fhir_unavailable(
            f"The FHIR server answered with a redirect (HTTP {response.status_code}); redirects are not followed, "
            "so the access token is only sent to the registered base URL. Send the FHIR server's final base URL as "
            "fhirServer (registered for your CDS client).", code="fhir_redirect_refused")


# --- The service ---------------------------------------------------------------------------------------------------

def _card(summary: str, indicator: str, detail: str, *, source_label: str,
          links: list[dict[str, str]] | None = None) -> dict[str, Any]:
    card: dict[str, Any] = {"summary": summary[:140], "indicator": indicator, "detail": detail,
                            "source": {"label": source_label}}
    if links:
        card["links"] = links
    return card


def cds_patient_view(*, use_case: str, request: PatientViewRequest, client: CdsClient,
                     explanation_url: Callable[[UUID], str]) -> dict[str, Any]:
    """Answer one (checked) patient-view call with one card linking to the prediction's explanation page."""
    model = champion_model(use_case)
    if model is None:
        raise ApplicationError(f"No CDS service '{service_id(use_case)}'.", code="not_found", status_code=404)
    patient_id = request.patient_id
    fetched = request.prefetched
    if fetched is None and request.fhir_server is not None:
        fetched = fhir_fetch(fhir_server=request.fhir_server, access_token=request.access_token,
                             patient_id=patient_id, spec=model.spec)
    if fetched is None:  # not reached: cds_patient_view_request requires a prefetch or a registered fhirServer
        raise ApplicationError("Nothing to read the patient's data from.", code="prefetch_missing", status_code=412)
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

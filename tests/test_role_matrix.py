"""Every URL with every role: nobody gets a server error, anonymous visitors reach only the public pages, and each
role reaches only its own pages (clinicians: patients and predictions; model admins: admin and registry;
auditors: the audit log). The walk covers every URL pattern the project serves."""

import json
from typing import Any

import pytest
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver

from apps.audit.models import AuditEvent
from apps.patients.models import Patient

PUBLIC = {"healthz", "readyz", "metrics", "accounts/login/", "api/schema/", "api/docs/", "cds-services",
          "o/authorize/", "admin/login/",
          ".well-known/jwks.json"}  # public keys only, by design (SMART Backend Services)
NOT_FOR = {  # path prefix -> roles that must not reach it (200)
    "audit/": {"anonymous", "clinician", "modeladmin"},
    "admin/": {"anonymous", "clinician", "auditor"},
    "registry/": {"anonymous", "clinician"},
    "predict/": {"anonymous", "modeladmin", "auditor"},
    "patients/": {"anonymous"},
    "predictions/": {"anonymous"},
    "models/": {"anonymous"},
}


def _routes() -> list[str]:
    def walk(patterns: list[Any], prefix: str = "") -> Any:
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                yield from walk(pattern.url_patterns, prefix + str(pattern.pattern))
            elif isinstance(pattern, URLPattern):
                yield prefix + str(pattern.pattern)
    return sorted(set(walk(get_resolver().url_patterns)))


@pytest.fixture
def world(champion: Any, clinician_client: Client, clinician: Any, auditor: Any, user_in_group: Any,
          api_client: Any, valid_features: dict) -> dict[str, Any]:
    patient = Patient.objects.create(identifier="pt-roles-1", sex="female", source="csv:roles")
    response = clinician_client.post("/predict/diabetes/", {
        "patient_id": "pt-roles-1", "pregnancies": "1", "glucose": "120", "glucose__unit": "mg/dL",
        "blood_pressure": "70", "blood_pressure__unit": "mm[Hg]", "skin_thickness": "", "skin_thickness__unit": "mm",
        "insulin": "", "insulin__unit": "u[IU]/mL", "bmi": "30", "pedigree": "0.4", "age": "40"})
    assert response.status_code == 302
    modeladmin = user_in_group("Model admins", "modeladmin", staff=True)
    clients = {"anonymous": Client()}
    for name, user in (("clinician", clinician), ("modeladmin", modeladmin), ("auditor", auditor)):
        clients[name] = Client()
        clients[name].force_login(user)
    prediction_id = response["Location"].rstrip("/").split("/")[-1]
    values = {"prediction_id": prediction_id, "patient_id": str(patient.pk), "use_case": "diabetes",
              "version": str(champion.version), "seq": str(AuditEvent.objects.order_by("seq").first().seq),
              "export_format": "csv", "name": "roc.png", "identifier": "pt-roles-1", "service": "clinpredict-diabetes",
              "object_id": str(champion.pk), "client_id": "x", "user_code": "y"}
    return {"clients": clients, "values": values}


def _concrete(route: str, values: dict[str, str]) -> str | None:
    path = route
    while "<" in path:
        start, end = path.index("<"), path.index(">")
        name = path[start + 1:end].split(":")[-1]
        if name not in values:
            return None
        path = path[:start] + values[name] + path[end + 1:]
    if any(ch in path for ch in "^$()[]?\\"):
        return None  # regex patterns (admin internals): covered through their admin index pages
    return "/" + path


def test_every_url_with_every_role(world: dict[str, Any]) -> None:
    walked, skipped = 0, []
    failures = []
    for route in _routes():
        path = _concrete(route, world["values"])
        if path is None:
            skipped.append(route)
            continue
        for role, client in world["clients"].items():
            response = client.get(path)
            walked += 1
            status = response.status_code
            if status >= 500 and not (path == "/readyz" and status == 503):
                failures.append(f"{role} {path}: {status}")
            if role == "anonymous" and status == 200 and route not in PUBLIC:
                failures.append(f"anonymous reached {path}")
            for prefix, refused in NOT_FOR.items():
                if path.startswith("/" + prefix) and role in refused and status == 200 and route not in PUBLIC:
                    failures.append(f"{role} reached {path}")
    print(f"walked {walked} (url, role) pairs over {len(_routes()) - len(skipped)} URLs and 4 roles; "
          f"{len(skipped)} regex/admin-internal routes covered by their index pages")
    assert not failures, failures
    assert walked >= 4 * 30


def test_clinician_cannot_use_the_audit_export_even_with_a_token(world: dict[str, Any], api_client: Any) -> None:
    clinician = world["clients"]["clinician"]

    assert clinician.get("/audit/export.csv").status_code == 403
    assert clinician.get("/api/v1/audit/events").status_code == 401  # session auth is not accepted by the API
    assert json.loads(api_client("predictions:read").get("/api/v1/audit/events").content)["error"]["code"] == \
        "permission_denied"


def test_another_clinicians_prediction_needs_a_reason_except_for_auditors_and_model_admins(
        world: dict[str, Any], user_in_group: Any, valid_features: dict) -> None:
    """Clinicians see their own and their care-team patients' predictions; another's opens through break-the-glass
    (a stated reason, audited). Auditors and model admins see every prediction as before."""
    from apps.audit.actors import Actor
    from apps.predictions.models import Prediction
    from apps.predictions.services import PredictionRequest, prediction_create

    colleague = user_in_group("Clinicians", "colleague")
    theirs = prediction_create(request=PredictionRequest("diabetes", valid_features, "pt-roles-1"),
                               actor=Actor(type="user", id="colleague", user_id=colleague.pk),
                               channel=Prediction.Channel.WEB)
    clients = world["clients"]
    path = f"/predictions/{theirs.id}/"
    own = f"/predictions/{world['values']['prediction_id']}/"

    assert clients["clinician"].get(own).status_code == 200
    assert clients["clinician"].get(path).status_code == 403  # the break-the-glass page
    assert clients["auditor"].get(path).status_code == 200
    assert clients["modeladmin"].get(path).status_code == 200
    assert clients["anonymous"].get(path).status_code == 302
    assert clients["anonymous"].post(f"{path}break-glass/", {"reason": "emergency"}).status_code == 302
    assert not AuditEvent.objects.filter(action="prediction.break_glass").exists()
    assert clients["clinician"].post(f"{path}break-glass/", {"reason": "emergency"}).status_code == 302
    assert clients["clinician"].get(path).status_code == 200
    assert AuditEvent.objects.get(action="prediction.break_glass").actor_id == "clinician"


def test_recording_an_outcome_is_its_own_permission(world: dict[str, Any], user_in_group: Any, oauth_app: Any,
                                                    clinician: Any, valid_features: dict) -> None:
    """`patients.add_outcome` (Clinicians, migration patients/0005), not `predictions.add_prediction`, decides who
    records an observed outcome: on the web form and, with a person's token, on the API."""
    from datetime import timedelta

    from django.contrib.auth.models import Permission
    from django.utils import timezone
    from oauth2_provider.models import AccessToken, set_token_value

    from apps.audit.actors import Actor
    from apps.patients.models import Outcome
    from apps.predictions.models import Prediction
    from apps.predictions.services import PredictionRequest, prediction_create

    clients = world["clients"]
    # Someone who may request predictions, and opens their own, but may not record outcomes.
    predictor = user_in_group("Clinicians", "predictor")
    predictor.groups.clear()
    predictor.user_permissions.add(*Permission.objects.filter(
        content_type__app_label="predictions", codename__in=["add_prediction", "view_prediction"]))
    predictor_client = Client()
    predictor_client.force_login(predictor)
    theirs = prediction_create(request=PredictionRequest("diabetes", valid_features, "pt-roles-1"),
                               actor=Actor(type="user", id="predictor", user_id=predictor.pk),
                               channel=Prediction.Channel.WEB)
    their_page = f"/predictions/{theirs.id}/"
    clinicians_outcome = f"/predictions/{world['values']['prediction_id']}/outcome/"

    assert Permission.objects.filter(group__name="Clinicians", codename="add_outcome",
                                     content_type__app_label="patients").exists()
    assert not Permission.objects.filter(group__name__in=["Auditors", "Model admins"], codename="add_outcome").exists()
    assert predictor_client.get(their_page).status_code == 200
    assert "Record outcome" not in predictor_client.get(their_page).content.decode()
    assert predictor_client.post(f"{their_page}outcome/", {"present": "yes"}).status_code == 403
    for role in ("modeladmin", "auditor"):
        assert clients[role].post(clinicians_outcome, {"present": "yes"}).status_code == 403, role
    assert Outcome.objects.count() == 0
    assert "Record outcome" in clients["clinician"].get(clinicians_outcome.removesuffix("outcome/")).content.decode()
    assert clients["clinician"].post(clinicians_outcome, {"present": "yes"}).status_code == 302
    assert Outcome.objects.count() == 1

    def person_token(user: Any, raw: str) -> Client:
        token = AccessToken(user=user, application=oauth_app, scope="patients:write",
                            expires=timezone.now() + timedelta(hours=1))
        set_token_value(token, raw)
        token.save()
        return Client(HTTP_AUTHORIZATION=f"Bearer {raw}")

    body = {"patient_id": "pt-roles-1", "use_case": "diabetes", "present": True, "source_id": "ehr-1"}
    refused = person_token(predictor, "predictor-token").post("/api/v1/outcomes", body,
                                                              content_type="application/json")
    accepted = person_token(clinician, "clinician-token").post("/api/v1/outcomes", body,
                                                               content_type="application/json")

    assert refused.status_code == 403 and refused.json()["error"]["code"] == "permission_denied"
    assert accepted.status_code == 201, accepted.content
    assert Outcome.objects.count() == 2

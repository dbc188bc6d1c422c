"""Reads scoped to their owner (issue 17, point 4), probed as an attacker with a valid client or account would:

- an OAuth2 application reads only the predictions it created: another application's is 404 on the API, absent from
  the list and 404 as a FHIR RiskAssessment, unless the token holds `predictions:read:all`, which the token endpoint
  grants only to an application whose owner may see every prediction;
- a clinician sees their own and their care-team patients' predictions; any other opens only after a stated reason,
  recorded as one `prediction.break_glass` audit event (the chain still verifies), for a bounded time in that
  session; no reason: nothing shown, nothing recorded;
- auditors and model admins see everything without break-the-glass.
"""

import base64
import json
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from apps.audit.actors import Actor
from apps.audit.models import AuditEvent
from apps.audit.selectors import audit_chain_verify
from apps.patients.models import CareTeamMember, Outcome, Patient
from apps.patients.services import care_team_member_add, care_team_member_remove
from apps.predictions.models import Prediction
from apps.predictions.services import PredictionRequest, prediction_create

SECRET = "a-long-client-secret-for-tests"
SYSTEM = Actor(type="system", id="tests")


# --- Fixtures (kept in this module) ----------------------------------------------------------------------------


def _application(client_id: str, owner: Any = None) -> Any:
    from oauth2_provider.models import Application

    return Application.objects.create(
        name=client_id, client_id=client_id, client_secret=SECRET, user=owner,
        client_type=Application.CLIENT_CONFIDENTIAL, authorization_grant_type=Application.GRANT_CLIENT_CREDENTIALS,
    )


def _bearer(application: Any, scopes: str, user: Any = None) -> Client:
    from oauth2_provider.models import AccessToken, set_token_value

    raw = f"tok-{application.client_id}-{scopes.replace(' ', '-')}-{user.pk if user else 0}"
    token = AccessToken(application=application, user=user, scope=scopes,
                        expires=timezone.now() + timedelta(hours=1))
    set_token_value(token, raw)
    token.save()
    return Client(HTTP_AUTHORIZATION=f"Bearer {raw}")


@pytest.fixture
def apps_ab(db: None) -> tuple[Any, Any]:
    return _application("hospital-a"), _application("hospital-b")


@pytest.fixture
def made_by_a(champion: Any, apps_ab: tuple[Any, Any], valid_features: dict[str, Any]) -> dict[str, Any]:
    """A prediction application A created through the API."""
    response = _bearer(apps_ab[0], "predictions:write").post(
        "/api/v1/predictions", {"use_case": "diabetes", "patient_id": "pt-a-1", "features": valid_features},
        content_type="application/json")
    assert response.status_code == 201, response.content
    return response.json()


def _in_list(client: Client, prediction_id: str, **filters: str) -> bool:
    response = client.get("/api/v1/predictions", filters)
    assert response.status_code == 200
    return prediction_id in {row["id"] for row in response.json()["results"]}


def _not_found(response: Any) -> None:
    assert response.status_code == 404
    body = json.loads(response.content)
    assert body["error"]["code"] == "not_found" and "No prediction with this id" in body["error"]["message"]


# --- OAuth2 applications --------------------------------------------------------------------------------------


def test_application_b_cannot_read_application_a_prediction(apps_ab: tuple[Any, Any],
                                                           made_by_a: dict[str, Any]) -> None:
    app_a, app_b = apps_ab
    reader_a, reader_b = _bearer(app_a, "predictions:read"), _bearer(app_b, "predictions:read")
    prediction_id = made_by_a["id"]

    assert reader_a.get(f"/api/v1/predictions/{prediction_id}").json()["id"] == prediction_id
    assert _in_list(reader_a, prediction_id)
    assert reader_a.get(f"/fhir/RiskAssessment/{prediction_id}").status_code == 200

    _not_found(reader_b.get(f"/api/v1/predictions/{prediction_id}"))
    _not_found(reader_b.get(f"/api/v1/predictions/{prediction_id}", HTTP_ACCEPT="application/fhir+json"))
    _not_found(reader_b.get(f"/fhir/RiskAssessment/{prediction_id}"))
    assert not _in_list(reader_b, prediction_id)
    assert not _in_list(reader_b, prediction_id, patient_id="pt-a-1", use_case="diabetes")
    # Not found reads exactly like an id that never existed: nothing tells B the prediction is there.
    unknown = json.loads(reader_b.get("/api/v1/predictions/00000000-0000-4000-8000-000000000001").content)["error"]
    foreign = json.loads(reader_b.get(f"/api/v1/predictions/{prediction_id}").content)["error"]
    assert {k: foreign[k] for k in ("code", "message", "fields")} == {k: unknown[k] for k in ("code", "message",
                                                                                                "fields")}


def test_with_predictions_read_all_application_b_reads_every_prediction(apps_ab: tuple[Any, Any],
                                                                        made_by_a: dict[str, Any]) -> None:
    reader_b = _bearer(apps_ab[1], "predictions:read predictions:read:all")
    prediction_id = made_by_a["id"]

    assert reader_b.get(f"/api/v1/predictions/{prediction_id}").json()["id"] == prediction_id
    assert reader_b.get(f"/fhir/RiskAssessment/{prediction_id}").json()["id"] == prediction_id
    assert _in_list(reader_b, prediction_id)


def test_predictions_read_all_alone_grants_nothing(apps_ab: tuple[Any, Any], made_by_a: dict[str, Any]) -> None:
    response = _bearer(apps_ab[1], "predictions:read:all").get(f"/api/v1/predictions/{made_by_a['id']}")

    assert response.status_code == 403
    assert json.loads(response.content)["error"]["code"] == "permission_denied"


def test_application_reads_what_it_created_on_behalf_of_a_user(champion: Any, apps_ab: tuple[Any, Any],
                                                               clinician: Any, valid_features: dict[str, Any]) -> None:
    app_a, app_b = apps_ab
    created = _bearer(app_a, "predictions:write", user=clinician).post(
        "/api/v1/predictions", {"use_case": "diabetes", "features": valid_features}, content_type="application/json")
    assert created.status_code == 201
    assert Prediction.objects.get(pk=created.json()["id"]).actor == "client:hospital-a/clinician"

    assert _in_list(_bearer(app_a, "predictions:read"), created.json()["id"])
    assert not _in_list(_bearer(app_b, "predictions:read"), created.json()["id"])


def test_another_application_whose_id_extends_a_client_id_reads_nothing_of_it(
        champion: Any, apps_ab: tuple[Any, Any], made_by_a: dict[str, Any]) -> None:
    """"client:hospital-a" must not pass for "client:hospital-a-x" (a prefix) nor the reverse."""
    lookalike = _application("hospital-a-x")

    _not_found(_bearer(lookalike, "predictions:read").get(f"/api/v1/predictions/{made_by_a['id']}"))


def _token(client_id: str, scope: str) -> Any:
    credentials = base64.b64encode(f"{client_id}:{SECRET}".encode()).decode()
    return Client().post("/o/token/", {"grant_type": "client_credentials", "scope": scope},
                         HTTP_AUTHORIZATION=f"Basic {credentials}")


def test_token_endpoint_grants_read_all_only_to_an_application_owned_by_someone_who_sees_everything(
        db: None, apps_ab: tuple[Any, Any], user_in_group: Any) -> None:
    refused = _token("hospital-b", "predictions:read predictions:read:all")
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_scope"
    assert _token("hospital-b", "predictions:read").json()["scope"] == "predictions:read"

    clinician_owned = _application("ward-app", owner=user_in_group("Clinicians", "ward-clinician"))
    assert _token(clinician_owned.client_id, "predictions:read:all").json()["error"] == "invalid_scope"

    audit_app = _application("audit-app", owner=user_in_group("Auditors", "audit-owner"))
    granted = _token(audit_app.client_id, "predictions:read predictions:read:all")
    assert granted.status_code == 200 and set(granted.json()["scope"].split()) == {"predictions:read",
                                                                                   "predictions:read:all"}

    audit_app.user.is_active = False
    audit_app.user.save(update_fields=["is_active"])
    assert _token(audit_app.client_id, "predictions:read:all").json()["error"] == "invalid_scope"


# --- Clinicians, care teams and break-the-glass ---------------------------------------------------------------


@pytest.fixture
def ward(champion: Any, user_in_group: Any, valid_features: dict[str, Any]) -> dict[str, Any]:
    """Dr One cares for pt-mine; Dr Two made a prediction for pt-mine and one for pt-other (nobody's care team)."""
    one, two = user_in_group("Clinicians", "dr-one"), user_in_group("Clinicians", "dr-two")
    mine = Patient.objects.create(identifier="pt-mine", source="csv:ward")
    other = Patient.objects.create(identifier="pt-other", source="csv:ward")
    care_team_member_add(patient_id=mine.pk, user_id=one.pk, actor=SYSTEM)
    by_two = Actor(type="user", id="dr-two", user_id=two.pk)
    by_one = Actor(type="user", id="dr-one", user_id=one.pk)

    def predict(actor: Actor, patient_ref: str) -> Prediction:
        return prediction_create(request=PredictionRequest("diabetes", valid_features, patient_ref), actor=actor,
                                 channel=Prediction.Channel.WEB)

    clients = {}
    for name, user in (("one", one), ("two", two)):
        clients[name] = Client()
        clients[name].force_login(user)
    return {
        "one": one, "two": two, "mine": mine, "other": other, "clients": clients,
        "own": predict(by_one, "pt-other"),          # Dr One's own, for a patient outside their care team
        "care_team": predict(by_two, "pt-mine"),     # Dr Two's, for Dr One's patient
        "foreign": predict(by_two, "pt-other"),      # Dr Two's, for a patient outside Dr One's care team
    }


def _break_glass_events() -> int:
    return AuditEvent.objects.filter(action="prediction.break_glass").count()


def test_clinician_sees_own_and_care_team_predictions_without_a_reason(ward: dict[str, Any]) -> None:
    client = ward["clients"]["one"]

    for key in ("own", "care_team"):
        response = client.get(f"/predictions/{ward[key].id}/")
        assert response.status_code == 200, key
        assert 'data-testid="probability"' in response.content.decode()
        assert 'data-testid="break-glass-notice"' not in response.content.decode()
    assert _break_glass_events() == 0


def test_opening_another_clinicians_prediction_asks_for_a_reason_and_shows_nothing(ward: dict[str, Any]) -> None:
    client, foreign = ward["clients"]["one"], ward["foreign"]

    response = client.get(f"/predictions/{foreign.id}/")

    page = response.content.decode()
    assert response.status_code == 403
    assert 'data-testid="break-glass-form"' in page and "Emergency care of this patient" in page
    assert 'data-testid="probability"' not in page
    assert f"{foreign.probability:.3f}" not in page and "pt-other" not in page and foreign.model_sha256[:12] not in page
    assert _break_glass_events() == 0


@pytest.mark.parametrize("form", [{}, {"reason": "because"}, {"reason": "other"}, {"reason": "other", "detail": "  "},
                                  {"reason": "emergency", "detail": "x" * 501}])
def test_no_valid_reason_records_nothing_and_shows_nothing(ward: dict[str, Any], form: dict[str, str]) -> None:
    client, foreign = ward["clients"]["one"], ward["foreign"]
    events_before = AuditEvent.objects.count()

    response = client.post(f"/predictions/{foreign.id}/break-glass/", form)

    assert response.status_code == 400
    page = response.content.decode()
    assert 'class="error-summary"' in page and "nothing was stored" in page
    assert 'data-testid="probability"' not in page
    assert AuditEvent.objects.count() == events_before
    assert client.get(f"/predictions/{foreign.id}/").status_code == 403


def test_break_the_glass_with_a_reason_is_audited_then_shows_the_prediction(ward: dict[str, Any]) -> None:
    client, foreign = ward["clients"]["one"], ward["foreign"]

    response = client.post(f"/predictions/{foreign.id}/break-glass/",
                           {"reason": "covering", "detail": "Covering  Dr Two's ward tonight"})

    assert response.status_code == 302 and response["Location"] == f"/predictions/{foreign.id}/"
    event = AuditEvent.objects.get(action="prediction.break_glass")
    assert (event.actor_type, event.actor_id) == ("user", "dr-one")
    assert (event.object_type, event.object_id, event.patient_ref) == ("prediction", str(foreign.id), "pt-other")
    assert event.inputs == {"reason": "covering", "detail": "Covering Dr Two's ward tonight"}
    assert event.output == {"access_seconds": 900}
    assert audit_chain_verify().ok

    shown = client.get(f"/predictions/{foreign.id}/")
    assert shown.status_code == 200
    page = shown.content.decode()
    assert 'data-testid="probability"' in page and 'data-testid="break-glass-notice"' in page
    # Reopening within the access, and posting again, record nothing more.
    assert client.post(f"/predictions/{foreign.id}/break-glass/", {"reason": "emergency"}).status_code == 302
    assert client.get(f"/predictions/{foreign.id}/").status_code == 200
    assert _break_glass_events() == 1


def test_break_the_glass_opens_one_prediction_in_one_session_only(ward: dict[str, Any],
                                                                  valid_features: dict[str, Any]) -> None:
    client, foreign = ward["clients"]["one"], ward["foreign"]
    second = prediction_create(request=PredictionRequest("diabetes", valid_features, "pt-other"),
                               actor=Actor(type="user", id="dr-two", user_id=ward["two"].pk),
                               channel=Prediction.Channel.WEB)
    client.post(f"/predictions/{foreign.id}/break-glass/", {"reason": "emergency"})

    assert client.get(f"/predictions/{second.id}/").status_code == 403
    other_session = Client()
    other_session.force_login(ward["one"])
    assert other_session.get(f"/predictions/{foreign.id}/").status_code == 403


def test_break_the_glass_access_ends_after_its_time(ward: dict[str, Any], settings: Any) -> None:
    settings.CLINPREDICT_BREAK_GLASS_SECONDS = 0  # ends at once: the next request needs a new reason
    client, foreign = ward["clients"]["one"], ward["foreign"]

    client.post(f"/predictions/{foreign.id}/break-glass/", {"reason": "emergency"})

    assert _break_glass_events() == 1
    assert client.get(f"/predictions/{foreign.id}/").status_code == 403


def test_outcome_of_another_clinicians_prediction_needs_break_the_glass(ward: dict[str, Any]) -> None:
    response = ward["clients"]["one"].post(f"/predictions/{ward['foreign'].id}/outcome/", {"present": "yes"})

    assert response.status_code == 403 and 'data-testid="break-glass-form"' in response.content.decode()
    assert not Outcome.objects.exists()


def test_patient_page_and_dashboard_list_only_visible_predictions(ward: dict[str, Any]) -> None:
    client = ward["clients"]["one"]

    mine = client.get(f"/patients/{ward['mine'].pk}/").content.decode()
    other = client.get(f"/patients/{ward['other'].pk}/").content.decode()

    assert f"/predictions/{ward['care_team'].id}/" in mine and 'data-testid="history-limited"' not in mine
    assert f"/predictions/{ward['own'].id}/" in other and f"/predictions/{ward['foreign'].id}/" not in other
    assert 'data-testid="history-limited"' in other
    dashboard = client.get("/").content.decode()
    assert f"/predictions/{ward['own'].id}/" in dashboard and f"/predictions/{ward['foreign'].id}/" not in dashboard


def test_leaving_the_care_team_ends_access_and_both_changes_are_audited(ward: dict[str, Any]) -> None:
    client, member = ward["clients"]["one"], CareTeamMember.objects.get(user=ward["one"])

    assert care_team_member_remove(member_id=member.pk, actor=SYSTEM)

    assert client.get(f"/predictions/{ward['care_team'].id}/").status_code == 403
    actions = list(AuditEvent.objects.filter(action__startswith="care_team.").values_list("action", "patient_ref"))
    assert actions == [("care_team.member_add", "pt-mine"), ("care_team.member_remove", "pt-mine")]


def test_care_team_add_is_idempotent(ward: dict[str, Any]) -> None:
    member, changed = care_team_member_add(patient_id=ward["mine"].pk, user_id=ward["one"].pk, actor=SYSTEM)

    assert not changed and member.role == CareTeamMember.Role.ATTENDING
    assert AuditEvent.objects.filter(action__startswith="care_team.").count() == 1


@pytest.mark.parametrize("role", [("Auditors", "the-auditor", False), ("Model admins", "the-modeladmin", True)])
def test_auditors_and_model_admins_see_everything_without_break_the_glass(ward: dict[str, Any], user_in_group: Any,
                                                                          role: tuple[str, str, bool]) -> None:
    group, username, staff = role
    client = Client()
    client.force_login(user_in_group(group, username, staff=staff))

    for key in ("own", "care_team", "foreign"):
        assert client.get(f"/predictions/{ward[key].id}/").status_code == 200, key
    page = client.get(f"/patients/{ward['other'].pk}/").content.decode()
    assert f"/predictions/{ward['foreign'].id}/" in page and f"/predictions/{ward['own'].id}/" in page
    assert _break_glass_events() == 0


def test_unknown_prediction_is_404_for_a_clinician(ward: dict[str, Any]) -> None:
    client = ward["clients"]["one"]

    assert client.get("/predictions/00000000-0000-4000-8000-000000000001/").status_code == 404
    assert client.post("/predictions/00000000-0000-4000-8000-000000000001/break-glass/",
                       {"reason": "emergency"}).status_code == 404
    assert _break_glass_events() == 0

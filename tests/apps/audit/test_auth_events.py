import base64
import json
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.test import Client

from apps.audit.models import AuditEvent
from apps.audit.selectors import audit_chain_verify

PASSWORD = "a-long-test-password"


def _events(prefix: str) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action__startswith=prefix).order_by("seq"))


def _everything_recorded() -> str:
    return json.dumps(list(AuditEvent.objects.values("actor_id", "inputs", "output", "object_id")), default=str)


def test_sign_in_sign_out_and_a_failed_sign_in_are_audited(clinician: Any) -> None:
    client = Client()

    failed = client.post("/accounts/login/", {"username": "clinician", "password": "not-the-password"})
    signed_in = client.post("/accounts/login/", {"username": "clinician", "password": PASSWORD})
    signed_out = client.post("/accounts/logout/")

    assert failed.status_code == 200 and signed_in.status_code == 302 and signed_out.status_code == 302
    failure, login, logout = _events("auth.")
    assert (failure.action, failure.actor_type, failure.inputs) == ("auth.login_failed", "anonymous",
                                                                   {"username": "clinician"})
    assert (login.action, login.actor_type, login.actor_id, login.object_id) == (
        "auth.login", "user", "clinician", str(clinician.pk))
    assert (logout.action, logout.actor_id) == ("auth.logout", "clinician")
    assert login.source_ip == "127.0.0.1" and login.request_id
    assert "not-the-password" not in _everything_recorded() and PASSWORD not in _everything_recorded()


def test_token_issuance_is_audited_without_the_token(oauth_app: Any) -> None:
    credentials = base64.b64encode(b"test-system:test-system-secret").decode()

    response = Client().post("/o/token/", {"grant_type": "client_credentials", "scope": "predictions:read"},
                             HTTP_AUTHORIZATION=f"Basic {credentials}")

    assert response.status_code == 200, response.content
    token = response.json()["access_token"]
    (event,) = _events("oauth2.")
    assert (event.action, event.actor_type, event.actor_id) == ("oauth2.token.issue", "client", "test-system")
    assert event.output["scope"] == "predictions:read" and event.output["grant_type"] == "client_credentials"
    assert token not in _everything_recorded() and "test-system-secret" not in _everything_recorded()


@pytest.fixture
def admin_client(db: None) -> Client:
    superuser = get_user_model().objects.create_superuser("root", password=PASSWORD)
    client = Client()
    client.force_login(superuser)
    return client


def test_admin_user_creation_group_change_password_change_and_deletion_are_audited(admin_client: Client) -> None:
    clinicians = Group.objects.get(name="Clinicians")
    created = admin_client.post("/admin/auth/user/add/", {
        "username": "newdoc", "password1": "Another-long-pass-123", "password2": "Another-long-pass-123",
        "usable_password": "true"})
    assert created.status_code == 302, created.content
    user = get_user_model().objects.get(username="newdoc")
    changed = admin_client.post(f"/admin/auth/user/{user.pk}/change/", {
        "username": "newdoc", "is_active": "on", "groups": [clinicians.pk], "date_joined_0": "2026-01-01",
        "date_joined_1": "00:00:00", "initial-date_joined_0": "2026-01-01", "initial-date_joined_1": "00:00:00"})
    assert changed.status_code == 302, changed.content
    password = admin_client.post(f"/admin/auth/user/{user.pk}/password/", {
        "password1": "Third-long-password-456", "password2": "Third-long-password-456", "usable_password": "true"})
    assert password.status_code == 302, password.content
    deleted = admin_client.post(f"/admin/auth/user/{user.pk}/delete/", {"post": "yes"})
    assert deleted.status_code == 302

    create, group_change, password_change, delete = _events("user.")
    assert create.actor_id == "root" and create.object_id == str(user.pk) and create.output["username"] == "newdoc"
    assert group_change.output["groups"] == ["Clinicians"]
    assert password_change.inputs["change_message"][0]["changed"]["fields"] == ["password"]
    assert delete.output["username"] == "newdoc" and delete.action == "user.delete"
    recorded = _everything_recorded()
    assert "Another-long-pass-123" not in recorded and "Third-long-password-456" not in recorded
    assert "pbkdf2" not in recorded and "md5$" not in recorded  # no password hash either
    assert audit_chain_verify().ok


def test_admin_group_and_oauth_application_changes_are_audited(admin_client: Client) -> None:
    from oauth2_provider.models import Application

    assert admin_client.post("/admin/auth/group/add/", {"name": "Reviewers"}).status_code == 302
    created = admin_client.post("/admin/oauth2_provider/application/add/", {
        "name": "EHR", "client_id": "ehr-client", "client_secret": "ehr-secret-value-000000000",
        "hash_client_secret": "on", "client_type": "confidential", "authorization_grant_type": "client-credentials",
        "redirect_uris": "", "post_logout_redirect_uris": "", "allowed_origins": "", "algorithm": ""})
    assert created.status_code == 302, created.content
    app = Application.objects.get(client_id="ehr-client")
    bulk = admin_client.post("/admin/oauth2_provider/application/", {
        "action": "delete_selected", "_selected_action": [app.pk], "post": "yes"})
    assert bulk.status_code == 302

    (group_event,) = _events("group.")
    assert group_event.output == {"name": "Reviewers", "permissions": []}
    app_create, app_delete = _events("oauth2_application.")
    assert app_create.output["client_id"] == "ehr-client" and app_create.output["client_type"] == "confidential"
    assert app_delete.action == "oauth2_application.delete" and app_delete.object_id == str(app.pk)
    assert "ehr-secret-value" not in _everything_recorded()


def test_failed_token_requests_are_audited_with_client_address_and_reason_never_the_secret(
        oauth_app: Any, settings: Any) -> None:
    settings.TOKEN_FAILURE_LIMIT = 3
    secret = "guessed-secret-0123"  # noqa: S105 - the wrong secret an attacker tries
    basic = base64.b64encode(f"test-system:{secret}".encode()).decode()

    bad_secret = Client(REMOTE_ADDR="10.1.2.3").post("/o/token/", {
        "grant_type": "client_credentials", "client_id": "test-system", "client_secret": secret,
        "scope": "predictions:read"})
    bad_basic = Client(REMOTE_ADDR="10.1.2.3").post("/o/token/", {"grant_type": "client_credentials"},
                                                    HTTP_AUTHORIZATION=f"Basic {basic}")
    bad_grant = Client(REMOTE_ADDR="10.9.9.9").post("/o/token/", {
        "grant_type": "password", "client_id": "test-system", "client_secret": "test-system-secret",
        "username": "someone", "password": "their-password-0123"})
    ok = Client().post("/o/token/", {"grant_type": "client_credentials", "client_id": "test-system",
                                     "client_secret": "test-system-secret", "scope": "predictions:read"})

    assert (bad_secret.status_code, bad_basic.status_code, ok.status_code) == (401, 401, 200)
    assert bad_grant.status_code in {400, 401}
    failed = _events("oauth2.token.failed")
    assert len(failed) == 3
    assert [e.source_ip for e in failed] == ["10.1.2.3", "10.1.2.3", "10.9.9.9"]
    assert all(e.inputs["client_id"] == "test-system" and e.object_id == "test-system" for e in failed)
    assert failed[0].inputs == {"client_id": "test-system", "grant_type": "client_credentials",
                                "scope": "predictions:read"}
    assert failed[0].output["status"] == 401 and failed[0].output["error"] == "invalid_client"
    assert failed[2].inputs["grant_type"] == "password" and failed[2].output["error"]
    recorded = _everything_recorded()
    for never in (secret, basic, "test-system-secret", "their-password-0123"):
        assert never not in recorded
    assert audit_chain_verify().ok


def test_the_token_lockout_still_counts_and_is_recorded_once(oauth_app: Any, settings: Any) -> None:
    settings.TOKEN_FAILURE_LIMIT = 3
    bad = {"grant_type": "client_credentials", "client_id": "test-system", "client_secret": "guess"}

    statuses = [Client().post("/o/token/", bad).status_code for _ in range(5)]

    assert statuses == [401, 401, 401, 429, 429]
    # Each refused attempt is one event; requests refused during the lockout are summed up by the lockout event.
    assert len(_events("oauth2.token.failed")) == 3
    assert len(_events("oauth2.token_lockout")) == 1

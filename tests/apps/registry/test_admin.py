"""The promotion flow in Django admin, end to end through real requests: list, detail with evidence, confirmation
page with the gate's verdict, reason, refusal, audit event, rollback, challenger, and who may do what."""

from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import Group
from django.test import Client

from apps.audit.models import AuditEvent
from apps.registry.artifacts import model_dir
from apps.registry.models import ModelVersion, ModelVersionStatusChange

CHANGELIST = "/admin/registry/modelversion/"


def _url(version: Any, suffix: str) -> str:
    return f"{CHANGELIST}{version.pk}/{suffix}"


@pytest.fixture
def candidate(champion: Any, register: Any, distinct_model_dir: Any) -> Any:
    return register(distinct_model_dir())


def test_changelist_shows_key_metrics(candidate: Any, model_admin_client: Client) -> None:
    page = model_admin_client.get(CHANGELIST)

    assert page.status_code == 200
    text = page.content.decode()
    auroc = f"{candidate.test_auroc:.3f} ({candidate.test_auroc_ci_low:.3f}–{candidate.test_auroc_ci_high:.3f})"
    assert auroc in text
    assert f"{candidate.calibration_slope:.3f}" in text
    assert f"ok ({candidate.onnx_parity_max_abs_diff:.1e})" in text
    assert f"{candidate.threshold:.3f}" in text
    assert "diabetes@1" in text and "diabetes@2" in text and "Champion history" in text


def test_detail_page_shows_card_plots_and_comparison_with_champion(candidate: Any, champion: Any,
                                                                  model_admin_client: Client) -> None:
    page = model_admin_client.get(_url(candidate, "change/"))

    assert page.status_code == 200
    text = page.content.decode()
    assert 'sandbox="allow-same-origin"' in text
    assert f'src="{_url(candidate, "artifact/model_card.html")}"' in text
    for plot in ("roc", "pr", "calibration", "importance"):
        assert f'src="{_url(candidate, f"artifact/plots/{plot}.png")}"' in text
    assert "Compared with the current champion" in text and f"champion {champion.label}" in text
    assert "Promotion gate: " in text and "compatible with live diabetes@1" in text
    assert f'href="{_url(candidate, "promote/")}">Promote to champion' in text
    assert candidate.artifacts["model.onnx"]["sha256"] in text


def test_model_card_is_served_verified_and_sandboxed(candidate: Any, model_admin_client: Client) -> None:
    card = model_admin_client.get(_url(candidate, "artifact/model_card.html"))
    plot = model_admin_client.get(_url(candidate, "artifact/plots/roc.png"))

    assert card.status_code == 200 and card["Content-Type"].startswith("text/html")
    assert "Model card" in card.content.decode()
    assert card["Content-Security-Policy"].startswith("sandbox allow-same-origin; default-src 'none'")
    assert card["X-Frame-Options"] == "SAMEORIGIN"
    assert plot.status_code == 200 and plot["Content-Type"] == "image/png"
    assert plot.content == (model_dir(candidate) / "plots" / "roc.png").read_bytes()


def test_altered_plot_or_unlisted_file_is_not_served(candidate: Any, model_admin_client: Client) -> None:
    (model_dir(candidate) / "plots" / "roc.png").write_bytes(b"\x89PNG swapped")

    altered = model_admin_client.get(_url(candidate, "artifact/plots/roc.png"))
    model_file = model_admin_client.get(_url(candidate, "artifact/model.onnx"))
    escape = model_admin_client.get(_url(candidate, "artifact/../../../../etc/passwd.json"))

    assert altered.status_code == 503 and b"does not match its registered sha256" in altered.content
    assert model_file.status_code == 404 and escape.status_code == 404


def test_confirmation_page_shows_gate_verdict_and_a_required_reason(candidate: Any,
                                                                    model_admin_client: Client) -> None:
    page = model_admin_client.get(_url(candidate, "promote/"))

    assert page.status_code == 200
    text = page.content.decode()
    assert "Promote to champion: diabetes@2" in text
    assert "Promotion gate: " in text and "passes" in text
    for check in ("artifacts", "parity", "test_auroc", "calibration_slope", "feature_spec"):
        assert f"<td>{check}</td>" in text
    assert 'name="reason"' in text and 'value="Promote diabetes@2 to champion"' in text


def test_promotion_without_a_reason_is_refused_and_changes_nothing(candidate: Any,
                                                                   model_admin_client: Client) -> None:
    response = model_admin_client.post(_url(candidate, "promote/"), {"reason": "   "})

    assert response.status_code == 400
    assert "A reason is required" in response.content.decode()
    candidate.refresh_from_db()
    assert candidate.status == "candidate"
    assert not AuditEvent.objects.filter(action="model.promote", object_id=str(candidate.pk)).exists()


def test_promotion_with_a_reason_makes_champion_and_records_who_when_from_to_why(
        candidate: Any, champion: Any, model_admin: Any, model_admin_client: Client) -> None:
    response = model_admin_client.post(_url(candidate, "promote/"), {"reason": "Better calibrated on 2026 data"})

    assert response.status_code == 302 and response["Location"] == _url(candidate, "change/")
    candidate.refresh_from_db()
    champion.refresh_from_db()
    assert (candidate.status, champion.status) == ("champion", "archived")
    event = AuditEvent.objects.get(action="model.promote", object_id=str(candidate.pk))
    assert (event.actor_type, event.actor_id) == ("user", "modeladmin")
    assert event.inputs == {"reason": "Better calibrated on 2026 data", "from": "diabetes@1", "to": "diabetes@2"}
    assert event.output["gate"]["ok"] is True and event.model_sha256 == candidate.onnx_sha256
    change = ModelVersionStatusChange.objects.get(version=candidate, to_status="champion")
    assert change.actor_user == model_admin and change.audit_seq == event.seq and change.changed_at == event.created_at
    assert "is now champion of diabetes" in model_admin_client.get(response["Location"]).content.decode()


def test_gate_refusal_is_shown_and_a_forced_post_is_refused(candidate: Any, settings: Any,
                                                            model_admin_client: Client) -> None:
    settings.CLINPREDICT_PROMOTION_GATE = {**settings.CLINPREDICT_PROMOTION_GATE, "calibration_slope_max": 0.5}

    page = model_admin_client.get(_url(candidate, "promote/")).content.decode()
    forced = model_admin_client.post(_url(candidate, "promote/"), {"reason": "please"})

    assert "blocked" in page and "<strong>FAIL</strong>" in page and "cannot be promoted" in page
    assert 'name="reason"' not in page
    assert forced.status_code == 400
    assert "blocked by the promotion gate: calibration_slope" in forced.content.decode()
    candidate.refresh_from_db()
    assert candidate.status == "candidate"
    assert not AuditEvent.objects.filter(action="model.promote", object_id=str(candidate.pk)).exists()


def test_rollback_is_offered_for_the_previous_champion_and_audited(candidate: Any, champion: Any,
                                                                   model_admin_client: Client) -> None:
    model_admin_client.post(_url(candidate, "promote/"), {"reason": "newer"})

    current = model_admin_client.get(_url(candidate, "change/")).content.decode()
    previous = model_admin_client.get(_url(champion, "change/")).content.decode()
    confirm = model_admin_client.get(_url(champion, "promote/")).content.decode()
    done = model_admin_client.post(_url(champion, "promote/"), {"reason": "newer one misbehaves"})

    assert f'href="{_url(champion, "promote/")}">Roll back to diabetes@1' in current
    assert "Roll back to this version" in previous
    assert "Roll back to: diabetes@1" in confirm and "<strong>Rollback.</strong>" in confirm
    assert done.status_code == 302
    event = AuditEvent.objects.get(action="model.rollback")
    assert event.inputs == {"reason": "newer one misbehaves", "from": "diabetes@2", "to": "diabetes@1"}
    assert ModelVersion.objects.get(status="champion").pk == champion.pk


def test_list_action_opens_the_confirmation_page(candidate: Any, model_admin_client: Client) -> None:
    response = model_admin_client.post(CHANGELIST, {"action": "promote_action", "_selected_action": [candidate.pk]})

    assert response.status_code == 302 and response["Location"] == _url(candidate, "promote/")


def test_challenger_is_set_and_ended_from_admin(candidate: Any, model_admin_client: Client) -> None:
    set_response = model_admin_client.post(_url(candidate, "challenger/"), {"reason": "shadow for a month"})
    candidate.refresh_from_db()
    assert set_response.status_code == 302 and candidate.status == "challenger"

    end = model_admin_client.post(_url(candidate, "status/"), {"to_status": "archived", "reason": "enough data"})

    candidate.refresh_from_db()
    assert end.status_code == 302 and candidate.status == "archived"
    assert [e.action for e in AuditEvent.objects.filter(object_id=str(candidate.pk)).order_by("seq")] == [
        "model.register", "model.challenger", "model.status_change"]


def test_champion_cannot_be_demoted_from_the_status_page(candidate: Any, champion: Any,
                                                         model_admin_client: Client) -> None:
    response = model_admin_client.post(_url(champion, "status/"), {"to_status": "archived", "reason": "x"})

    assert response.status_code == 400 and "promote another version or roll back" in response.content.decode()
    champion.refresh_from_db()
    assert champion.status == "champion"


def test_admin_champion_history_page(candidate: Any, model_admin_client: Client) -> None:
    model_admin_client.post(_url(candidate, "promote/"), {"reason": "newer"})

    page = model_admin_client.get(f"{CHANGELIST}history/", {"use_case": "diabetes"})

    assert page.status_code == 200
    text = page.content.decode()
    assert text.index("diabetes@2") < text.index("diabetes@1")  # newest first
    assert "newer" in text and "test champion" in text


def test_clinician_opening_admin_is_refused(candidate: Any, clinician_client: Client) -> None:
    for url in ("/admin/", CHANGELIST, _url(candidate, "change/"), _url(candidate, "promote/"),
                _url(candidate, "artifact/model_card.html")):
        response = clinician_client.get(url)
        assert response.status_code == 302 and response["Location"].startswith("/admin/login/"), url
    forced = clinician_client.post(_url(candidate, "promote/"), {"reason": "I want it"})

    assert forced.status_code == 302
    candidate.refresh_from_db()
    assert candidate.status == "candidate"


def test_staff_without_the_promote_permission_may_look_but_not_promote(candidate: Any, trained_dir: Path) -> None:
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.create_user(username="staff-auditor", password="x" * 16, is_staff=True)
    user.groups.add(Group.objects.get(name="Auditors"))
    client = Client()
    client.force_login(user)

    detail = client.get(_url(candidate, "change/"))
    promote = client.post(_url(candidate, "promote/"), {"reason": "not mine to decide"})

    assert detail.status_code == 200 and "Promote to champion</a>" not in detail.content.decode()
    assert promote.status_code == 403
    candidate.refresh_from_db()
    assert candidate.status == "candidate"

from datetime import datetime, timedelta
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.test import Client
from django.utils import timezone

from apps.audit.models import AuditEvent
from apps.core.exceptions import ApplicationError
from apps.registry.models import ModelVersion, ModelVersionStatusChange
from apps.registry.selectors import model_version_champion_at, model_version_champion_history
from apps.registry.services import model_version_rollback

from .conftest import ACTOR


@pytest.fixture
def three_versions(register: Any, trained_dir: Path, distinct_model_dir: Any) -> list[Any]:
    return [register(trained_dir), register(distinct_model_dir()), register(distinct_model_dir())]


def _step(action: Any) -> tuple[datetime, datetime]:
    before = timezone.now()
    action()
    return before, timezone.now()


def test_champion_at_answers_across_three_promotions_and_a_rollback(three_versions: list[Any],
                                                                   promote: Any) -> None:
    v1, v2, v3 = three_versions
    t0 = timezone.now()
    _, after1 = _step(lambda: promote(v1, "first model"))
    _, after2 = _step(lambda: promote(v2, "better AUROC"))
    _, after3 = _step(lambda: promote(v3, "retrained on 2026 data"))
    _, after4 = _step(lambda: model_version_rollback(use_case="diabetes", actor=ACTOR, reason="v3 drifted"))

    def at(when: datetime) -> str | None:
        found = model_version_champion_at(use_case="diabetes", at=when)
        return found.label if found else None

    assert at(t0) is None
    assert at(after1) == "diabetes@1"
    assert at(after2) == "diabetes@2"
    assert at(after3) == "diabetes@3"
    assert at(after4) == "diabetes@2"
    assert at(after4 + timedelta(days=365)) == "diabetes@2"
    # The instant of each change is inclusive: the change recorded at T is in force at T.
    changes = {c.version.label: c.changed_at for c in ModelVersionStatusChange.objects.filter(
        to_status="champion", kind="promote").select_related("version")}
    assert at(changes["diabetes@2"]) == "diabetes@2"
    assert at(changes["diabetes@2"] - timedelta(microseconds=1)) == "diabetes@1"
    assert [ModelVersion.objects.get(pk=v.pk).status for v in (v1, v2, v3)] == ["archived", "champion", "archived"]


def test_champion_history_lists_every_period_with_who_and_why(three_versions: list[Any], promote: Any) -> None:
    v1, v2, v3 = three_versions
    promote(v1, "first model")
    promote(v2, "better AUROC")
    promote(v3, "retrained")
    model_version_rollback(use_case="diabetes", actor=ACTOR, reason="v3 drifted")

    periods = model_version_champion_history(use_case="diabetes")

    assert [(p.version.label, p.kind, p.reason, p.end is None) for p in periods] == [
        ("diabetes@1", "promote", "first model", False),
        ("diabetes@2", "promote", "better AUROC", False),
        ("diabetes@3", "promote", "retrained", False),
        ("diabetes@2", "rollback", "v3 drifted", True),
    ]
    assert all(p.actor == "system:tests" for p in periods)
    assert [p.end for p in periods[:-1]] == [p.start for p in periods[1:]]
    events = list(AuditEvent.objects.filter(action__in=["model.promote", "model.rollback"]).order_by("seq"))
    assert [(e.action, e.inputs["from"], e.inputs["to"], e.inputs["reason"]) for e in events] == [
        ("model.promote", None, "diabetes@1", "first model"),
        ("model.promote", "diabetes@1", "diabetes@2", "better AUROC"),
        ("model.promote", "diabetes@2", "diabetes@3", "retrained"),
        ("model.rollback", "diabetes@3", "diabetes@2", "v3 drifted"),
    ]
    assert [p.audit_seq for p in periods] == [e.seq for e in events]


def test_rollback_without_an_earlier_champion_is_refused(champion: Any) -> None:
    with pytest.raises(ApplicationError, match="no earlier champion"):
        model_version_rollback(use_case="diabetes", actor=ACTOR, reason="oops")


def test_champion_at_refuses_a_naive_time(champion: Any) -> None:
    with pytest.raises(ApplicationError, match="timezone"):
        model_version_champion_at(use_case="diabetes", at=datetime(2026, 1, 1))  # noqa: DTZ001


def test_status_history_is_append_only(champion: Any) -> None:
    change = ModelVersionStatusChange.objects.filter(version=champion).first()
    assert change is not None

    with pytest.raises(PermissionError):
        change.save()
    with pytest.raises(PermissionError):
        ModelVersionStatusChange.objects.all().delete()
    with pytest.raises(PermissionError):
        ModelVersionStatusChange.objects.update(reason="rewritten")


def test_promote_model_command_promotes_rolls_back_and_dry_runs(three_versions: list[Any]) -> None:
    out = StringIO()
    call_command("promote_model", "--use-case", "diabetes", "--version", "1", "--reason", "cli first", stdout=out)
    call_command("promote_model", "--use-case", "diabetes", "--version", "2", "--reason", "cli second", stdout=out)
    call_command("promote_model", "--use-case", "diabetes", "--version", "3", "--dry-run", stdout=out)
    assert ModelVersion.objects.get(version=3).status == "candidate"
    call_command("promote_model", "--use-case", "diabetes", "--rollback", "--reason", "back to v1", stdout=out)

    text = out.getvalue()
    assert "gate test_auroc" in text and "gate verdict: passes (dry run: nothing changed)" in text
    assert "Rolling back to diabetes@1" in text and "diabetes@1 is champion of diabetes" in text
    assert AuditEvent.objects.get(action="model.rollback").actor_id == "promote_model"


def test_promote_model_command_refuses_without_reason_and_when_blocked(three_versions: list[Any],
                                                                        settings: Any) -> None:
    with pytest.raises(CommandError, match="reason is required"):
        call_command("promote_model", "--use-case", "diabetes", "--version", "1", stdout=StringIO())
    settings.CLINPREDICT_PROMOTION_GATE = {**settings.CLINPREDICT_PROMOTION_GATE, "min_test_auroc": 0.99}
    out = StringIO()
    with pytest.raises(CommandError, match="blocked by the promotion gate"):
        call_command("promote_model", "--use-case", "diabetes", "--version", "1", "--reason", "x", stdout=out)

    assert "gate test_auroc         FAIL" in out.getvalue()
    assert not ModelVersion.objects.filter(status="champion").exists()


def test_auditor_sees_which_version_was_champion_at_a_time(three_versions: list[Any], promote: Any,
                                                           auditor_client: Client) -> None:
    v1, v2, _ = three_versions
    promote(v1, "first")
    between = timezone.now()
    promote(v2, "second")

    page = auditor_client.get("/registry/history/", {"use_case": "diabetes", "at": between.isoformat()})

    assert page.status_code == 200
    text = page.content.decode()
    assert "the champion of <code>diabetes</code> was <strong>diabetes@1</strong>" in text
    assert "second" in text and "first" in text


def test_clinician_cannot_open_champion_history(champion: Any, clinician_client: Client) -> None:
    assert clinician_client.get("/registry/history/").status_code == 403

from io import StringIO
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from oauth2_provider.models import Application

from apps.audit.models import AuditEvent
from apps.patients.models import CareTeamMember, Patient
from apps.registry.models import ModelVersion


@pytest.fixture
def fast_bootstrap(monkeypatch: pytest.MonkeyPatch, settings: Any, tmp_path: Any, trained_dir: Any,
                   pima_csv: Any) -> None:
    """Run bootstrap_demo against the session's already-trained folder instead of training again."""
    import shutil

    settings.VAR_DIR = tmp_path / "var"
    run_dir = settings.VAR_DIR / "runs" / "diabetes-seed42"
    shutil.copytree(trained_dir, run_dir)
    (settings.VAR_DIR / "data").mkdir(parents=True)
    shutil.copy(pima_csv, settings.VAR_DIR / "data" / "diabetes.csv")


def test_bootstrap_demo_twice_creates_everything_once(db: None, fast_bootstrap: None,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLINPREDICT_DEMO_PASSWORD", "demo-password-for-tests")
    monkeypatch.setenv("CLINPREDICT_DEMO_CLIENT_ID", "demo-client")
    monkeypatch.setenv("CLINPREDICT_DEMO_CLIENT_SECRET", "demo-secret")
    first, second = StringIO(), StringIO()

    call_command("bootstrap_demo", stdout=first)
    call_command("bootstrap_demo", stdout=second)

    assert ModelVersion.objects.get().status == "champion"
    users = get_user_model().objects.order_by("username")
    assert [(u.username, [g.name for g in u.groups.all()], u.is_staff) for u in users] == [
        ("auditor", ["Auditors"], False), ("clinician", ["Clinicians"], False), ("modeladmin", ["Model admins"], True)]
    assert all(u.check_password("demo-password-for-tests") for u in users)
    assert Application.objects.get().client_id == "demo-client"
    assert "a champion is live; nothing to do" in second.getvalue()
    assert Patient.objects.filter(source="csv:demo").count() == 100
    assert "demo patients are loaded; nothing to do" in second.getvalue()
    # The demo clinician cares for the demo patients (so they see all their predictions), added once and audited.
    assert CareTeamMember.objects.filter(user__username="clinician", patient__source="csv:demo").count() == 100
    assert AuditEvent.objects.filter(action="care_team.member_add").count() == 100
    assert "the demo care team is in place; nothing to do" in second.getvalue()


def test_bootstrap_without_password_generates_one_and_prints_it_once(db: None, fast_bootstrap: None,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("CLINPREDICT_DEMO_PASSWORD", "CLINPREDICT_DEMO_CLIENT_ID", "CLINPREDICT_DEMO_CLIENT_SECRET"):
        monkeypatch.delenv(name, raising=False)
    first, second = StringIO(), StringIO()

    call_command("bootstrap_demo", stdout=first)
    call_command("bootstrap_demo", stdout=second)

    line = next(line for line in first.getvalue().splitlines() if "password for" in line)
    password = line.split(": ", 1)[1].split(" (shown once)")[0]
    assert get_user_model().objects.get(username="clinician").check_password(password)
    assert "shown once" not in second.getvalue()
    assert "passwords unchanged" in second.getvalue()

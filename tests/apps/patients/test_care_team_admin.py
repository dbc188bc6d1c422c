"""Care teams are managed in Django admin; every add, change and removal goes through the audited services."""

from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from apps.audit.models import AuditEvent
from apps.audit.selectors import audit_chain_verify
from apps.patients.models import CareTeamMember, Patient


@pytest.fixture
def admin_client_(db: None, clinician: Any) -> Client:
    admin = get_user_model().objects.create_superuser("root-admin", password="a-long-test-password")
    client = Client()
    client.force_login(admin)
    return client


def test_care_team_member_added_changed_and_removed_in_admin_is_audited(admin_client_: Client,
                                                                         clinician: Any) -> None:
    patient = Patient.objects.create(identifier="pt-team-1", source="csv:team")

    added = admin_client_.post("/admin/patients/careteammember/add/",
                               {"patient": patient.pk, "user": clinician.pk, "role": "attending",
                                "since": "2026-01-05"})
    assert added.status_code == 302, added.content.decode()[:2000]
    member = CareTeamMember.objects.get()
    assert (member.patient, member.user, member.role, str(member.since)) == (patient, clinician, "attending",
                                                                             "2026-01-05")
    assert member.added_by == "user:root-admin"

    changed = admin_client_.post(f"/admin/patients/careteammember/{member.pk}/change/",
                                 {"role": "consultant", "since": "2026-02-01"})
    assert changed.status_code == 302
    member.refresh_from_db()
    assert (member.role, str(member.since)) == ("consultant", "2026-02-01")

    removed = admin_client_.post(f"/admin/patients/careteammember/{member.pk}/delete/", {"post": "yes"})
    assert removed.status_code == 302 and not CareTeamMember.objects.exists()

    events = list(AuditEvent.objects.filter(object_type="care_team_member").order_by("seq")
                  .values_list("action", "actor_id", "patient_ref"))
    assert events == [("care_team.member_add", "root-admin", "pt-team-1"),
                      ("care_team.member_update", "root-admin", "pt-team-1"),
                      ("care_team.member_remove", "root-admin", "pt-team-1")]
    assert AuditEvent.objects.filter(object_type="care_team_member").last().output["role"] == "consultant"
    assert audit_chain_verify().ok


def test_unknown_role_is_refused_and_nothing_is_recorded(admin_client_: Client, clinician: Any) -> None:
    patient = Patient.objects.create(identifier="pt-team-2", source="csv:team")

    response = admin_client_.post("/admin/patients/careteammember/add/",
                                  {"patient": patient.pk, "user": clinician.pk, "role": "boss", "since": "2026-01-05"})

    assert response.status_code == 200 and "Select a valid choice" in response.content.decode()
    assert not CareTeamMember.objects.exists()
    assert not AuditEvent.objects.filter(object_type="care_team_member").exists()

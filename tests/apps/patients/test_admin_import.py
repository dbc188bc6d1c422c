"""The CSV upload page in admin: model admins import; others cannot."""

from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from apps.patients.models import IngestionRun, Patient

pytestmark = pytest.mark.django_db

URL = "/admin/patients/ingestionrun/import-csv/"
HEADER = "patient_id,age,sex,glucose,hba1c,bmi,systolic_bp,diastolic_bp,creatinine,total_cholesterol,t2d\n"


def _client(username: str, *, group: str | None, staff: bool) -> Client:
    user = get_user_model().objects.create_user(username=username, password="a-long-test-password", is_staff=staff)
    if group:
        user.groups.add(Group.objects.get(name=group))
    client = Client()
    client.force_login(user)
    return client


def _csv(rows: list[str]) -> SimpleUploadedFile:
    return SimpleUploadedFile("extract.csv", (HEADER + "\n".join(rows) + "\n").encode(), content_type="text/csv")


GOOD = [f"p-{i},{40 + i},{i % 2},{95 + i},5.5,26,120,80,0.9,180,{int(i % 3 == 0)}" for i in range(1, 13)]


def test_model_admin_uploads_a_csv_and_sees_the_report() -> None:
    client = _client("modeladmin", group="Model admins", staff=True)
    assert client.get("/admin/patients/ingestionrun/").content.count(b"Import CSV") == 1

    response = client.post(URL, {"spec": "t2d_fhir", "source": "ward7", "csv_file": _csv(GOOD)})

    assert response.status_code == 200
    assert b"IMPORTED run #" in response.content
    assert Patient.objects.filter(source="csv:ward7").count() == 12
    run = IngestionRun.objects.get()
    assert (run.status, run.file_name, run.actor) == ("succeeded", "extract.csv", "user:modeladmin")


def test_a_bad_upload_is_refused_with_row_numbers_and_stores_nothing() -> None:
    client = _client("modeladmin", group="Model admins", staff=True)
    rows = [*GOOD[:3], "p-x,50,1,abc,5.5,26,120,80,0.9,180,0", *GOOD[3:]]

    response = client.post(URL, {"spec": "t2d_fhir", "source": "csv", "csv_file": _csv(rows)})

    assert response.status_code == 400
    assert b"Not imported: nothing was stored" in response.content and b"rows 4" in response.content
    assert Patient.objects.count() == 0


def test_staff_without_the_import_permission_gets_403_and_clinicians_never_reach_admin(settings: Any) -> None:
    staff = _client("helpdesk", group=None, staff=True)
    assert staff.get(URL).status_code == 403
    assert b"Import CSV" not in staff.get("/admin/patients/ingestionrun/").content

    clinician = _client("clinician", group="Clinicians", staff=False)
    response = clinician.post(URL, {"spec": "t2d_fhir", "csv_file": _csv(GOOD)})
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
    assert Patient.objects.count() == 0


def test_the_upload_form_names_a_wrong_file_type(tmp_path: Path) -> None:
    client = _client("modeladmin", group="Model admins", staff=True)
    upload = SimpleUploadedFile("extract.xlsx", b"PK\x03\x04", content_type="application/octet-stream")

    response = client.post(URL, {"spec": "t2d_fhir", "source": "csv", "csv_file": upload})

    assert b"Upload a .csv file" in response.content
    assert IngestionRun.objects.count() == 0

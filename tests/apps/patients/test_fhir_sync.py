"""FHIR R4 sync against a real sekmet-fhir server loaded with carebundle's synthetic patients."""

from datetime import UTC, datetime
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from apps.audit.models import AuditEvent
from apps.patients.models import IngestionRun, Observation, Outcome, Patient
from apps.patients.selectors import patient_features_assemble, source_totals
from apps.patients.services import fhir_sync_run
from apps.patients.specs import load_ingestion_spec, spec_path_for
from apps.patients.tasks import sync_fhir_task

pytestmark = [pytest.mark.django_db, pytest.mark.slow]

SPEC = load_ingestion_spec(spec_path_for("t2d_fhir"))
OBSERVATION_CODES = ",".join(f"http://loinc.org|{code}" for code in SPEC.observed_loinc_codes())


def _t2d_conditions(cohort: list[dict[str, Any]]) -> int:
    return sum(1 for entry in (e for b in cohort for e in b["entry"])
               if entry["resource"]["resourceType"] == "Condition"
               and SPEC.outcome_code_for(entry["resource"]["code"]["coding"]) is not None)


def test_sync_of_200_carebundle_patients_matches_the_server_counts(fhir_server: Any, fhir_settings: Any,
                                                                   cohort: list[dict[str, Any]]) -> None:
    fhir_settings(fhir_server)
    run = fhir_sync_run(spec="t2d_fhir")

    assert run.status == IngestionRun.Status.SUCCEEDED, run.error
    server_patients = fhir_server.count("Patient")
    server_observations = fhir_server.count("Observation", {"code": OBSERVATION_CODES})
    server_conditions = fhir_server.count("Condition")
    assert server_patients == 200
    assert run.counts["Patient"]["server_total"] == run.counts["Patient"]["fetched"] == server_patients
    assert run.counts["Observation"]["server_total"] == run.counts["Observation"]["fetched"] == server_observations
    assert run.counts["Condition"]["server_total"] == run.counts["Condition"]["fetched"] == server_conditions
    stored = source_totals(source=fhir_server.base_url)
    assert stored["Patient"] == Patient.objects.count() == 200
    assert stored["Observation"] == server_observations  # every Observation resource asked for was stored
    # Blood pressure panels give two values (systolic, diastolic) each.
    panels = fhir_server.count("Observation", {"code": "http://loinc.org|85354-9"})
    assert stored["observation_values"] == server_observations + panels
    assert stored["Outcome"] == _t2d_conditions(cohort) > 0
    assert run.counts["Condition"]["not_outcome_code"] == server_conditions - stored["Outcome"]
    assert run.unmapped == {}
    assert run.watermark is not None
    assert set(Observation.objects.values_list("code", flat=True)) == {
        "2345-7", "4548-4", "39156-5", "8480-6", "8462-4", "2160-0", "2093-3"}


def test_second_sync_adds_nothing_and_a_full_resync_changes_nothing(fhir_server: Any, fhir_settings: Any) -> None:
    fhir_settings(fhir_server)
    first = fhir_sync_run(spec="t2d_fhir")
    before = (Patient.objects.count(), Observation.objects.count(), Outcome.objects.count())

    second = fhir_sync_run(spec="t2d_fhir")
    assert second.status == IngestionRun.Status.SUCCEEDED
    assert second.since == first.watermark  # incremental: only what changed since the first sync
    assert all(c["fetched"] == 0 for c in second.counts.values()), second.counts
    full = fhir_sync_run(spec="t2d_fhir", full=True)
    assert full.status == IngestionRun.Status.SUCCEEDED
    assert full.counts["Patient"]["created"] == 0 and full.counts["Patient"]["unchanged"] == 200
    assert full.counts["Observation"]["values_created"] == 0
    assert full.counts["Observation"]["values_unchanged"] == before[1]
    assert full.counts["Condition"]["created"] == 0
    assert (Patient.objects.count(), Observation.objects.count(), Outcome.objects.count()) == before


def test_glucose_in_mmol_per_l_is_stored_in_mg_per_dl_and_feature_assembly_shows_it(
    fhir_server_factory: Any, fhir_settings: Any, cohort: list[dict[str, Any]]
) -> None:
    server = fhir_server_factory(patients=3, cohort=cohort)
    patient_id = server.search("Patient", {"_count": "1"})["entry"][0]["resource"]["id"]
    created = server.create({
        "resourceType": "Observation", "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "2345-7"}]},
        "subject": {"reference": f"Patient/{patient_id}"},
        "effectiveDateTime": "2026-03-01T08:30:00Z",  # later than carebundle's 2026-01-01 glucose
        "valueQuantity": {"value": 7.9, "unit": "mmol/L", "system": "http://unitsofmeasure.org", "code": "mmol/L"},
    })
    fhir_settings(server)

    run = fhir_sync_run(spec="t2d_fhir")

    assert run.complete, run.error
    obs = Observation.objects.get(source_id=f"Observation/{created['id']}")
    assert (obs.value, obs.unit, obs.unit_canonical) == (7.9, "mmol/L", "mg/dL")
    assert obs.value_canonical == pytest.approx(7.9 * 18.016)
    patient = Patient.objects.get(external_id=patient_id)
    assembled = patient_features_assemble(patient_id=patient.pk, spec="t2d_fhir",
                                          at=datetime(2026, 6, 1, tzinfo=UTC))
    glucose = assembled.values["glucose"]
    assert glucose.value == pytest.approx(142.3264)
    assert (glucose.unit, glucose.original_value, glucose.original_unit) == ("mg/dL", 7.9, "mmol/L")
    assert (glucose.observation_id, glucose.source_id) == (obs.pk, f"Observation/{created['id']}")
    assert assembled.features()["glucose"] == pytest.approx(142.3264)


def test_unconvertible_units_implausible_values_and_unknown_codes_are_counted_not_stored(
    fhir_server_factory: Any, fhir_settings: Any, cohort: list[dict[str, Any]]
) -> None:
    server = fhir_server_factory(patients=2, cohort=cohort)
    patient_id = server.search("Patient", {"_count": "1"})["entry"][0]["resource"]["id"]

    def observation(code: str, value: float, unit: str, **extra: Any) -> dict[str, Any]:
        return server.create({
            "resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
            "subject": {"reference": f"Patient/{patient_id}"}, "effectiveDateTime": "2026-02-01T08:00:00Z",
            "valueQuantity": {"value": value, "unit": unit, "system": "http://unitsofmeasure.org", "code": unit},
            **extra,
        })

    grams = observation("2345-7", 1.2, "g/L")  # a real unit, but not one the spec converts
    implausible = observation("2345-7", 5000, "mg/dL")
    preliminary = observation("4548-4", 6.1, "%", status="preliminary")
    bp = server.create({
        "resourceType": "Observation", "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9"}]},
        "subject": {"reference": f"Patient/{patient_id}"}, "effectiveDateTime": "2026-02-01T08:00:00Z",
        "component": [
            {"code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
             "valueQuantity": {"value": 16.0, "unit": "kPa", "system": "http://unitsofmeasure.org", "code": "kPa"}},
            {"code": {"coding": [{"system": "http://loinc.org", "code": "8478-0"}]},  # mean BP: not in the spec
             "valueQuantity": {"value": 90, "unit": "mm[Hg]", "system": "http://unitsofmeasure.org",
                               "code": "mm[Hg]"}},
        ],
    })
    fhir_settings(server)

    run = fhir_sync_run(spec="t2d_fhir")

    assert run.complete, run.error
    assert run.unmapped["unit_not_convertible"]["count"] == 1
    assert f"Observation/{grams['id']}" in run.unmapped["unit_not_convertible"]["examples"][0]
    assert "accepted: mg/dL, mmol/L" in run.unmapped["unit_not_convertible"]["examples"][0]
    assert run.unmapped["out_of_range"]["count"] == 1
    assert run.unmapped["status_not_final"]["count"] == 1
    assert run.unmapped["unknown_code"]["count"] == 1
    assert run.counts["Observation"]["unmapped"] == 4
    for rejected in (grams, implausible, preliminary):
        assert not Observation.objects.filter(source_resource=f"Observation/{rejected['id']}").exists()
    systolic = Observation.objects.get(source_id=f"Observation/{bp['id']}#8480-6")
    assert (systolic.value, systolic.unit) == (16.0, "kPa")
    assert systolic.value_canonical == pytest.approx(16.0 * 7.50062)


def test_fhir_server_stopped_mid_sync_records_a_failed_run_and_a_rerun_completes(
    fhir_server_factory: Any, fhir_settings: Any, cohort: list[dict[str, Any]]
) -> None:
    server = fhir_server_factory(patients=30, cohort=cohort)
    fhir_settings(server, page_size=10)
    pages: list[tuple[str, int]] = []

    def stop_after_first_page(page: Any, run: IngestionRun) -> None:
        pages.append((page.resource_type, page.number))
        if len(pages) == 1:
            server.stop()

    failed = fhir_sync_run(spec="t2d_fhir", progress=stop_after_first_page)

    assert failed.status == IngestionRun.Status.FAILED
    assert "cannot connect" in failed.error
    assert failed.watermark is None and failed.finished_at is not None
    assert failed.counts["Patient"]["fetched"] == 10 < failed.counts["Patient"]["server_total"] == 30
    assert not IngestionRun.objects.filter(status=IngestionRun.Status.SUCCEEDED).exists()
    assert AuditEvent.objects.filter(action="patients.fhir_sync.fail", object_id=str(failed.pk)).exists()

    server.start()
    rerun = fhir_sync_run(spec="t2d_fhir")

    assert rerun.status == IngestionRun.Status.SUCCEEDED, rerun.error
    assert rerun.since is None  # no successful run before: asks for everything again
    assert rerun.counts["Patient"]["created"] == 20 and rerun.counts["Patient"]["unchanged"] == 10
    stored = source_totals(source=server.base_url)
    assert stored["Patient"] == server.count("Patient") == 30
    assert stored["Observation"] == server.count("Observation", {"code": OBSERVATION_CODES})


def test_fhir_server_that_is_down_gives_a_failed_run(fhir_server_factory: Any, fhir_settings: Any) -> None:
    server = fhir_server_factory()
    server.stop()
    fhir_settings(server)

    run = fhir_sync_run(spec="t2d_fhir")

    assert run.status == IngestionRun.Status.FAILED
    assert "cannot connect" in run.error
    assert run.watermark is None and Patient.objects.count() == 0


def test_wrong_client_secret_gives_a_failed_run_naming_the_credentials(fhir_server: Any, fhir_settings: Any) -> None:
    fhir_settings(fhir_server, secret="not-the-secret")

    run = fhir_sync_run(spec="t2d_fhir")

    assert run.status == IngestionRun.Status.FAILED
    assert "refused the client credentials (401)" in run.error
    assert Patient.objects.count() == 0


def test_sync_fhir_command_reports_counts_and_fails_loudly(fhir_server: Any, fhir_settings: Any,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    fhir_settings(fhir_server)
    call_command("sync_fhir")
    out = capsys.readouterr().out
    assert "SUCCEEDED" in out and "server_total 200" in out and "created 200" in out

    fhir_settings(fhir_server, secret="wrong")
    with pytest.raises(CommandError, match="FAILED"):
        call_command("sync_fhir")


def test_sync_fhir_task_is_idempotent(fhir_server: Any, fhir_settings: Any) -> None:
    fhir_settings(fhir_server)

    first = sync_fhir_task.apply().get()
    second = sync_fhir_task.apply(kwargs={"full": True}).get()

    assert first["status"] == second["status"] == "succeeded"
    assert first["counts"]["Patient"]["created"] == 200
    assert second["counts"]["Patient"]["created"] == 0
    assert second["counts"]["Observation"]["values_created"] == 0
    assert Patient.objects.count() == 200


def test_sync_without_a_configured_server_is_refused(settings: Any) -> None:
    settings.FHIR_BASE_URL = ""
    result = sync_fhir_task.apply().get()
    assert result["status"] == "not_started" and result["code"] == "fhir_not_configured"

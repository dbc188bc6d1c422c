"""Training from synced data: the t2d_fhir dataset assembled from the database trains with `ml` and registers."""

import csv
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command

from apps.audit.actors import Actor
from apps.patients.models import Observation, Outcome, Patient
from apps.patients.services import fhir_sync_run, training_dataset_export
from apps.registry.services import model_version_register
from ml.pipeline import train_run
from ml.schema import UseCaseSpec
from ml.training import TrainConfig
from ml.validation import validate_dataset

pytestmark = [pytest.mark.django_db, pytest.mark.slow]

SPEC_PATH = Path(__file__).resolve().parents[3] / "ml" / "specs" / "t2d_fhir.yaml"


def test_synced_t2d_fhir_dataset_trains_a_model_that_register_model_accepts(
    fhir_server: Any, fhir_settings: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fhir_settings(fhir_server)
    assert fhir_sync_run(spec="t2d_fhir").complete
    out = tmp_path / "t2d_fhir.csv"

    call_command("export_training_data", "--use-case", "t2d_fhir", "--out", str(out), "--at", "2026-06-01T00:00:00Z")

    assert "wrote 200 rows" in capsys.readouterr().out
    with out.open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 200 and {r["t2d"] for r in rows} == {"0", "1"}
    spec = UseCaseSpec.load(SPEC_PATH)
    report, data = validate_dataset(spec, out)
    assert data is not None, report.text()

    run_dir = tmp_path / "run"
    train_run(spec=spec, data_path=out, out_dir=run_dir, seed=7, model_type="xgboost",
              config=TrainConfig.fast(), tracking=False)
    registration = model_version_register(source_dir=run_dir, actor=Actor(type="system", id="tests"))

    assert registration.created
    assert registration.version.use_case == "t2d_fhir"
    assert registration.version.manifest["dataset_sha256"] == report.dataset_sha256


def test_export_counts_an_outcome_only_from_its_onset(tmp_path: Path) -> None:
    patient = Patient.objects.create(identifier="fhir-1", sex="male", birth_date=date(1960, 1, 1),
                                     source="s", external_id="1")
    Observation.objects.create(patient=patient, code="2345-7", value=150, unit="mg/dL", value_canonical=150,
                               unit_canonical="mg/dL", effective_at=datetime(2026, 5, 1, tzinfo=UTC), source="s",
                               source_id="Observation/1", source_resource="Observation/1")
    Outcome.objects.create(patient=patient, use_case="t2d_fhir", present=True,
                           onset_at=datetime(2026, 7, 1, tzinfo=UTC), source="s", source_id="Condition/1")

    before = training_dataset_export(spec="t2d_fhir", out_path=tmp_path / "a.csv", at=datetime(2026, 6, 1, tzinfo=UTC))
    after = training_dataset_export(spec="t2d_fhir", out_path=tmp_path / "b.csv", at=datetime(2026, 8, 1, tzinfo=UTC))

    assert (before.rows, before.events) == (1, 0)
    assert (after.rows, after.events) == (1, 1)
    row = next(csv.DictReader((tmp_path / "b.csv").open()))
    assert (row["patient_id"], row["age"], row["sex"], row["glucose"], row["hba1c"]) == ("fhir-1", "66", "1", "150", "")


def test_the_training_export_is_safe_to_open_in_a_spreadsheet(tmp_path: Path) -> None:
    """An identifier starting like a formula gets a leading quote (OWASP CSV injection); the numbers stay numbers."""
    patient = Patient.objects.create(identifier='=HYPERLINK("http://evil.example","x")', sex="female",
                                     birth_date=date(1980, 1, 1), source="s", external_id="2")
    Observation.objects.create(patient=patient, code="2345-7", value=150, unit="mg/dL", value_canonical=150,
                               unit_canonical="mg/dL", effective_at=datetime(2026, 5, 1, tzinfo=UTC), source="s",
                               source_id="Observation/2", source_resource="Observation/2")

    training_dataset_export(spec="t2d_fhir", out_path=tmp_path / "t.csv", at=datetime(2026, 6, 1, tzinfo=UTC))

    row = next(csv.DictReader((tmp_path / "t.csv").open(newline="")))
    assert (row["patient_id"], row["glucose"], row["sex"]) == ("'" + patient.identifier, "150", "0")

"""CSV import: validated with ml.validation, all-or-nothing per file, idempotent, canonical units."""

import csv
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from apps.patients.models import IngestionRun, Observation, Outcome, Patient
from apps.patients.services import patients_import_csv
from ml.schema import UseCaseSpec
from ml.validation import validate_dataset

pytestmark = pytest.mark.django_db

REPO = Path(__file__).resolve().parents[3]
DIABETES = REPO / "ml" / "specs" / "diabetes.yaml"
T2D = REPO / "ml" / "specs" / "t2d_fhir.yaml"
T2D_COLUMNS = ["patient_id", "age", "sex", "glucose", "hba1c", "bmi", "systolic_bp", "diastolic_bp", "creatinine",
               "total_cholesterol", "t2d"]


def t2d_csv(path: Path, rows: int = 20, **overrides: dict[int, str]) -> Path:
    """A small t2d_fhir extract; overrides map a column to {row number: raw text}."""
    extra = [c for c in overrides if c not in T2D_COLUMNS]
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(T2D_COLUMNS + extra)
        for i in range(1, rows + 1):
            row = {"patient_id": f"p-{i:03d}", "age": str(40 + i), "sex": str(i % 2), "glucose": str(90 + i),
                   "hba1c": "5.6", "bmi": "27.5", "systolic_bp": "128", "diastolic_bp": "81", "creatinine": "0.9",
                   "total_cholesterol": "190", "t2d": str(int(i % 4 == 0))}
            for column, values in overrides.items():
                row[column] = values.get(i, row.get(column, ""))
            writer.writerow([row.get(c, "") for c in T2D_COLUMNS + extra])
    return path


def test_pima_import_stores_exactly_the_values_validate_dataset_accepts(pima_csv: Path) -> None:
    spec = UseCaseSpec.load(DIABETES)
    _, data = validate_dataset(spec, pima_csv)
    assert data is not None

    result = patients_import_csv(spec=DIABETES, csv_path=pima_csv)

    assert result.ok, result.text()
    assert result.counts["patients_created"] == Patient.objects.count() == data.report.n_patients
    assert Observation.objects.count() == int(np.isfinite(data.X).sum())
    # Same canonical glucose per row (Pima glucose is LOINC 20438-8; some raw values are mmol/L by the unit rule).
    glucose_col = list(spec.feature_names).index("glucose")
    expected = {i + 1: v for i, v in enumerate(data.X[:, glucose_col]) if np.isfinite(v)}
    by_row = {int(k.split("/row")[1].split("/")[0]): v for k, v in
              Observation.objects.filter(code="20438-8").values_list("source_id", "value_canonical")}
    assert by_row == pytest.approx(expected)
    assert Outcome.objects.filter(present=True).count() == data.report.n_events


def test_reimporting_the_same_file_adds_nothing(pima_csv: Path) -> None:
    first = patients_import_csv(spec=DIABETES, csv_path=pima_csv)
    counts = (Patient.objects.count(), Observation.objects.count(), Outcome.objects.count())

    second = patients_import_csv(spec=DIABETES, csv_path=pima_csv)

    assert first.ok and second.ok
    assert second.counts["patients_created"] == 0 and second.counts["values_created"] == 0
    assert second.counts["outcomes_created"] == 0
    assert second.counts["values_unchanged"] == first.counts["values_created"]
    assert (Patient.objects.count(), Observation.objects.count(), Outcome.objects.count()) == counts


def test_a_bad_row_stores_nothing_and_the_report_names_the_row(tmp_path: Path) -> None:
    path = t2d_csv(tmp_path / "bad.csv", glucose={3: "high"})

    result = patients_import_csv(spec=T2D, csv_path=path)

    assert not result.ok
    assert result.run.status == IngestionRun.Status.FAILED
    assert "rows 3" in result.text() and "[glucose]" in result.text()
    assert "nothing stored" in result.text()
    assert Patient.objects.count() == Observation.objects.count() == Outcome.objects.count() == 0


def test_a_unit_column_converts_to_the_canonical_unit_and_keeps_the_given_value(tmp_path: Path) -> None:
    path = t2d_csv(tmp_path / "units.csv", glucose={2: "7.9"}, glucose_unit={2: "mmol/L"})

    result = patients_import_csv(spec=T2D, csv_path=path)

    assert result.ok, result.text()
    obs = Observation.objects.get(patient__identifier="p-002", code="2345-7")
    assert (obs.value, obs.unit, obs.unit_canonical) == (7.9, "mmol/L", "mg/dL")
    assert obs.value_canonical == pytest.approx(7.9 * 18.016)
    assert Patient.objects.get(identifier="p-002").sex == "female"  # sex 0 -> female through the spec's fhir map
    assert Patient.objects.get(identifier="p-001").sex == "male"


def test_an_isolated_implausible_value_is_reported_by_row_and_not_stored(tmp_path: Path) -> None:
    path = t2d_csv(tmp_path / "oor.csv", hba1c={5: "55"})

    result = patients_import_csv(spec=T2D, csv_path=path)

    assert result.ok, result.text()
    assert result.not_stored == {"out_of_range": [5]}
    assert "values not stored (out_of_range): 1 (rows 5)" in result.text()
    assert not Observation.objects.filter(patient__identifier="p-005", code="4548-4").exists()
    assert Observation.objects.filter(code="4548-4").count() == 19


def test_a_file_without_usable_labels_still_imports_patients_and_values(tmp_path: Path) -> None:
    path = t2d_csv(tmp_path / "unlabelled.csv", rows=4, t2d={1: "", 2: "", 3: "", 4: ""})

    result = patients_import_csv(spec=T2D, csv_path=path)

    assert result.ok, result.text()
    assert Patient.objects.count() == 4 and Outcome.objects.count() == 0


def test_import_patients_command_prints_the_report_and_fails_on_bad_files(tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    good = t2d_csv(tmp_path / "good.csv")
    call_command("import_patients", "--spec", str(T2D), "--csv", str(good))
    assert "IMPORTED" in capsys.readouterr().out

    bad = t2d_csv(tmp_path / "bad.csv", bmi={7: "x", 9: "y"})
    with pytest.raises(CommandError, match="nothing was stored"):
        call_command("import_patients", "--spec", "t2d_fhir", "--csv", str(bad))
    assert "rows 7, 9" in capsys.readouterr().err


def test_import_into_an_unknown_spec_is_refused(tmp_path: Path, capsys: Any) -> None:
    with pytest.raises(CommandError, match="no spec for use case 'nope'"):
        call_command("import_patients", "--spec", "nope", "--csv", str(t2d_csv(tmp_path / "x.csv")))

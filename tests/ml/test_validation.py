from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ml.cli import main as cli_main
from ml.datasets import pima_frame
from ml.schema import UseCaseSpec
from ml.validation import DataValidationError, load_dataset, validate_dataset, validate_record

GOOD: dict[str, Any] = {
    "pregnancies": 2,
    "glucose": 148,
    "blood_pressure": 72,
    "skin_thickness": 35,
    "insulin": None,
    "bmi": 33.6,
    "pedigree": 0.627,
    "age": 50,
}


# ---- one record ------------------------------------------------------------------------------------------------


def test_valid_record_in_canonical_units(diabetes_spec: UseCaseSpec) -> None:
    r = validate_record(diabetes_spec, GOOD)
    assert r.ok
    assert list(r.values) == list(diabetes_spec.feature_names)
    assert r.values["glucose"] == 148.0
    assert r.values["insulin"] is None
    assert r.missing == ["insulin"]
    vec = r.vector(diabetes_spec)
    assert vec.dtype == np.float32 and vec.shape == (1, 8) and math.isnan(vec[0, 4])


def test_record_converts_mmol_glucose(diabetes_spec: UseCaseSpec) -> None:
    r = validate_record(diabetes_spec, {**GOOD, "glucose": {"value": 7.9, "unit": "mmol/L"}})
    assert r.ok
    assert r.values["glucose"] == pytest.approx(7.9 * 18.016)


def test_record_dict_without_unit_means_canonical(diabetes_spec: UseCaseSpec) -> None:
    r = validate_record(diabetes_spec, {**GOOD, "glucose": {"value": 120}})
    assert r.ok and r.values["glucose"] == 120.0


def test_record_unknown_unit_lists_accepted(diabetes_spec: UseCaseSpec) -> None:
    r = validate_record(diabetes_spec, {**GOOD, "glucose": {"value": 7.9, "unit": "mg"}})
    assert not r.ok
    assert r.errors["glucose"] == ["unknown unit 'mg'; accepted: mg/dL, mmol/L"]


def test_record_missing_key_is_an_error(diabetes_spec: UseCaseSpec) -> None:
    values = dict(GOOD)
    del values["insulin"]
    r = validate_record(diabetes_spec, values)
    assert not r.ok
    assert "send null" in r.errors["insulin"][0]


def test_record_null_for_required_feature_is_an_error(diabetes_spec: UseCaseSpec) -> None:
    r = validate_record(diabetes_spec, {**GOOD, "glucose": None})
    assert "cannot be null" in r.errors["glucose"][0]
    r2 = validate_record(diabetes_spec, {**GOOD, "glucose": {"value": None, "unit": "mmol/L"}})
    assert "glucose" in r2.errors


def test_record_unknown_key_names_accepted_features(diabetes_spec: UseCaseSpec) -> None:
    r = validate_record(diabetes_spec, {**GOOD, "cholesterol": 5})
    assert "cholesterol" in r.errors
    assert "accepted: pregnancies, glucose" in r.errors["cholesterol"][0]


def test_record_out_of_range_after_conversion(diabetes_spec: UseCaseSpec) -> None:
    r = validate_record(diabetes_spec, {**GOOD, "glucose": 500})
    assert r.errors["glucose"] == ["must be between 40 and 400 mg/dL; got 500"]
    r2 = validate_record(diabetes_spec, {**GOOD, "glucose": {"value": 30, "unit": "mmol/L"}})
    assert "between 40 and 400 mg/dL" in r2.errors["glucose"][0]
    assert "540.48" in r2.errors["glucose"][0]


def test_record_disguised_missing_code_is_rejected_not_imputed(diabetes_spec: UseCaseSpec) -> None:
    r = validate_record(diabetes_spec, {**GOOD, "insulin": 0})
    assert not r.ok
    assert "between 2 and 900" in r.errors["insulin"][0]


@pytest.mark.parametrize("bad", [10**400, -(10**400), {"value": 10**309, "unit": "mmol/L"}])
def test_record_an_integer_beyond_a_double_is_not_finite(diabetes_spec: UseCaseSpec, bad: object) -> None:
    r = validate_record(diabetes_spec, {**GOOD, "glucose": bad})  # float() would raise OverflowError
    assert r.errors["glucose"][0].startswith("must be a finite number")


@pytest.mark.parametrize("bad", [True, "148", [148], float("nan"), float("inf")])
def test_record_rejects_non_numbers(diabetes_spec: UseCaseSpec, bad: object) -> None:
    r = validate_record(diabetes_spec, {**GOOD, "glucose": bad})
    assert not r.ok
    assert "number" in r.errors["glucose"][0]


def test_record_rejects_extra_keys_in_value_object(diabetes_spec: UseCaseSpec) -> None:
    r = validate_record(diabetes_spec, {**GOOD, "glucose": {"value": 7, "unit": "mmol/L", "when": "now"}})
    assert "unexpected key(s) when" in r.errors["glucose"][0]


def test_record_binary_feature_accepts_0_1_and_booleans(fhir_spec: UseCaseSpec) -> None:
    base = {f.name: None for f in fhir_spec.features}
    base.update(age=50, sex=1)
    assert validate_record(fhir_spec, base).ok
    assert validate_record(fhir_spec, {**base, "sex": True}).values["sex"] == 1.0
    assert "0 or 1" in validate_record(fhir_spec, {**base, "sex": 2}).errors["sex"][0]


def test_record_non_mapping_is_an_error(diabetes_spec: UseCaseSpec) -> None:
    r = validate_record(diabetes_spec, [1, 2, 3])  # type: ignore[arg-type]
    assert not r.ok and "features" in r.errors


@settings(max_examples=60, deadline=None)
@given(value=st.floats(min_value=2.3, max_value=22.0), use_unit=st.booleans())
def test_record_property_in_range_mmol_always_valid(diabetes_spec: UseCaseSpec, value: float,
                                                   use_unit: bool) -> None:
    raw: Any = {"value": value, "unit": "mmol/L"} if use_unit else value * 18.016
    r = validate_record(diabetes_spec, {**GOOD, "glucose": raw})
    assert r.ok
    assert r.values["glucose"] == pytest.approx(value * 18.016)


# ---- a dataset ---------------------------------------------------------------------------------------------------


def _write(tmp_path: Path, df: pd.DataFrame, name: str = "d.csv") -> Path:
    p = tmp_path / name
    df.to_csv(p, index=False)
    return p


def test_pima_is_valid_with_disguised_zeros_counted(diabetes_spec: UseCaseSpec, pima_csv: Path) -> None:
    report, data = validate_dataset(diabetes_spec, pima_csv)
    assert report.ok and data is not None
    assert report.n_rows == 768 and report.n_events == 268
    assert report.features["insulin"]["disguised_missing"] == 374
    assert report.features["skin_thickness"]["disguised_missing"] == 227
    assert report.features["glucose"]["disguised_missing"] == 5
    assert np.isnan(data.X[:, 4]).sum() == 374
    # Blood pressure 24 mm Hg (row 598) is implausible: reported and set to missing.
    oor = [w for w in report.warnings if w.code == "out_of_range" and w.column == "BloodPressure"]
    assert oor and oor[0].rows == [598]
    assert np.isnan(data.X[597, 2])


def test_mixed_glucose_units_by_unit_column_and_rule(diabetes_spec: UseCaseSpec, tmp_path: Path) -> None:
    df = pima_frame().head(200).copy()
    mg = df["Glucose"].astype(float)
    df["Glucose"] = df["Glucose"].astype(float)
    df["Glucose_unit"] = ""
    df.loc[1, "Glucose"] = round(mg[1] / 18.016, 2)  # marked by the unit column
    df.loc[1, "Glucose_unit"] = "mmol/L"
    df.loc[2, "Glucose"] = round(mg[2] / 18.016, 2)  # no unit: the spec rule (below 25 -> mmol/L)
    report, data = validate_dataset(diabetes_spec, _write(tmp_path, df))
    assert report.ok and data is not None
    assert data.X[1, 1] == pytest.approx(mg[1], abs=0.2)
    assert data.X[2, 1] == pytest.approx(mg[2], abs=0.2)
    assert report.features["glucose"]["converted"] == 2
    conv = [w for w in report.warnings if w.code == "unit_converted"]
    assert conv[0].rows == [2, 3]


def test_unknown_unit_in_unit_column_is_an_error(diabetes_spec: UseCaseSpec, tmp_path: Path) -> None:
    df = pima_frame().head(100)
    df["Glucose_unit"] = ""
    df.loc[4, "Glucose_unit"] = "g/L"
    report, data = validate_dataset(diabetes_spec, _write(tmp_path, df))
    assert data is None
    err = next(e for e in report.errors if e.code == "unknown_unit")
    assert err.rows == [5] and "mg/dL, mmol/L" in err.message


def test_out_of_range_majority_is_an_error(diabetes_spec: UseCaseSpec, tmp_path: Path) -> None:
    df = pima_frame().head(100)
    df["BMI"] = df["BMI"] * 100  # wrong unit for most rows
    report, _ = validate_dataset(diabetes_spec, _write(tmp_path, df))
    err = next(e for e in report.errors if e.code == "out_of_range")
    assert err.column == "BMI" and "wrong unit" in err.message


def test_missing_spec_column_is_named(diabetes_spec: UseCaseSpec, tmp_path: Path) -> None:
    df = pima_frame().drop(columns=["Insulin"])
    report, data = validate_dataset(diabetes_spec, _write(tmp_path, df))
    assert data is None
    assert report.errors[0].code == "missing_column" and report.errors[0].column == "Insulin"


def test_missing_outcome_column(diabetes_spec: UseCaseSpec, tmp_path: Path) -> None:
    report, _ = validate_dataset(diabetes_spec, _write(tmp_path, pima_frame().drop(columns=["Outcome"])))
    assert [e.column for e in report.errors] == ["Outcome"]


def test_single_class_outcome_is_an_error(diabetes_spec: UseCaseSpec, tmp_path: Path) -> None:
    df = pima_frame()
    df["Outcome"] = 0
    report, _ = validate_dataset(diabetes_spec, _write(tmp_path, df))
    assert {e.code for e in report.errors} == {"label_no_positive"}
    df["Outcome"] = 1
    report, _ = validate_dataset(diabetes_spec, _write(tmp_path, df))
    assert {e.code for e in report.errors} == {"label_single_class"}


def test_bad_outcome_values_and_empty_outcome(diabetes_spec: UseCaseSpec, tmp_path: Path) -> None:
    df = pima_frame().astype({"Outcome": object})
    df.loc[3, "Outcome"] = "maybe"
    df.loc[9, "Outcome"] = ""
    report, _ = validate_dataset(diabetes_spec, _write(tmp_path, df))
    codes = {e.code: e for e in report.errors}
    assert "label_bad_values" in codes and "maybe" in codes["label_bad_values"].message
    assert codes["missing_outcome"].rows == [10]


def test_type_error_names_rows_and_column(diabetes_spec: UseCaseSpec, tmp_path: Path) -> None:
    df = pima_frame().astype({"Age": object})
    df.loc[6, "Age"] = "forty"
    report, _ = validate_dataset(diabetes_spec, _write(tmp_path, df))
    err = next(e for e in report.errors if e.code == "type_error")
    assert err.column == "Age" and err.rows == [7] and "'forty'" in err.message


def test_duplicate_patients_and_constant_columns_are_warnings(diabetes_spec: UseCaseSpec, tmp_path: Path) -> None:
    df = pima_frame()
    df.loc[1, "patient_id"] = df.loc[0, "patient_id"]
    df["Pregnancies"] = 3
    report, data = validate_dataset(diabetes_spec, _write(tmp_path, df))
    assert report.ok and data is not None
    codes = {w.code: w for w in report.warnings}
    assert codes["duplicate_patient"].rows == [1, 2]
    assert codes["constant_column"].column == "Pregnancies"
    assert report.n_patients == 767


def test_too_few_events_is_an_error(diabetes_spec: UseCaseSpec, tmp_path: Path) -> None:
    df = pima_frame()
    pos = df.index[df["Outcome"] == 1]
    df = df.drop(index=pos[5:])
    report, _ = validate_dataset(diabetes_spec, _write(tmp_path, df))
    assert [e.code for e in report.errors] == ["too_few_events"]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", "empty"),
        (b"patient_id,Glucose\n1,2,3,4\n", "cannot parse CSV"),
        (b"\xff\xfe\x00\x01binary", "not UTF-8"),
        (b"patient_id,Outcome\n", "no data rows"),
    ],
)
def test_malformed_csv_gives_one_clear_error(diabetes_spec: UseCaseSpec, tmp_path: Path, content: bytes,
                                             expected: str) -> None:
    p = tmp_path / "bad.csv"
    p.write_bytes(content)
    report, data = validate_dataset(diabetes_spec, p)
    assert data is None and len(report.errors) == 1
    assert report.errors[0].code == "malformed_csv" and expected in report.errors[0].message


def test_load_dataset_raises_with_report(diabetes_spec: UseCaseSpec, tmp_path: Path) -> None:
    with pytest.raises(DataValidationError) as exc:
        load_dataset(diabetes_spec, _write(tmp_path, pima_frame().drop(columns=["BMI"])))
    assert "'BMI'" in str(exc.value)
    assert exc.value.report.errors[0].code == "missing_column"


def test_cli_validate_exit_codes_and_report(diabetes_spec: UseCaseSpec, pima_csv: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    spec_path = str(Path(__file__).resolve().parents[2] / "ml" / "specs" / "diabetes.yaml")
    out = tmp_path / "report.json"
    assert cli_main(["validate", "--spec", spec_path, "--data", str(pima_csv), "--report", str(out)]) == 0
    assert json.loads(out.read_text())["valid"] is True
    assert "VALID" in capsys.readouterr().out
    bad = _write(tmp_path, pima_frame().drop(columns=["Outcome"]), "bad.csv")
    assert cli_main(["validate", "--spec", spec_path, "--data", str(bad), "--report", str(out)]) == 2
    rep = json.loads(out.read_text())
    assert rep["valid"] is False and rep["errors"][0]["column"] == "Outcome"
    assert "missing_column" in capsys.readouterr().out

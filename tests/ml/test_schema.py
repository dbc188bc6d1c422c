from __future__ import annotations

import json
from pathlib import Path

import pytest

from ml.schema import FeatureSpec, SpecError, UnitError, UseCaseSpec


def test_diabetes_spec_loads_with_features_in_file_order(diabetes_spec: UseCaseSpec) -> None:
    assert diabetes_spec.use_case == "diabetes"
    assert diabetes_spec.outcome.column == "Outcome"
    assert diabetes_spec.outcome.positive == 1
    assert diabetes_spec.patient_id == "patient_id"
    assert diabetes_spec.feature_names == (
        "pregnancies", "glucose", "blood_pressure", "skin_thickness", "insulin", "bmi", "pedigree", "age",
    )
    insulin = diabetes_spec.feature("insulin")
    assert insulin.missing_values == (0.0,)
    assert insulin.allow_missing is True
    assert diabetes_spec.feature("glucose").allow_missing is False


@pytest.mark.parametrize("name", ["diabetes.yaml", "t2d_fhir.yaml"])
def test_spec_round_trips_through_json(name: str) -> None:
    spec = UseCaseSpec.load(Path(__file__).resolve().parents[2] / "ml" / "specs" / name)
    d = json.loads(json.dumps(spec.to_dict()))
    assert UseCaseSpec.from_dict(d) == spec
    assert UseCaseSpec.from_dict(d).to_dict() == d


def test_fhir_spec_has_loinc_coded_labs(fhir_spec: UseCaseSpec) -> None:
    codes = {f.name: f.loinc for f in fhir_spec.features}
    assert codes["glucose"] == "2345-7"
    assert codes["hba1c"] == "4548-4"
    assert codes["bmi"] == "39156-5"
    assert codes["systolic_bp"] == "8480-6"
    assert codes["diastolic_bp"] == "8462-4"
    assert codes["creatinine"] == "2160-0"
    assert codes["total_cholesterol"] == "2093-3"
    assert fhir_spec.feature("sex").type == "binary"
    assert fhir_spec.outcome.column == "t2d"
    assert fhir_spec.outcome.positive == 1
    assert fhir_spec.feature("creatinine").accepted_units == ("mg/dL", "umol/L")


def test_to_canonical_converts_glucose_mmol_to_mg_dl(diabetes_spec: UseCaseSpec) -> None:
    glucose = diabetes_spec.feature("glucose")
    assert glucose.accepted_units == ("mg/dL", "mmol/L")
    assert glucose.to_canonical(7.0, "mmol/L") == pytest.approx(126.112)
    assert glucose.to_canonical(126.0, "mg/dL") == 126.0
    assert glucose.to_canonical(126.0, None) == 126.0


def test_to_canonical_unknown_unit_names_unit_and_accepted(diabetes_spec: UseCaseSpec) -> None:
    with pytest.raises(UnitError) as exc:
        diabetes_spec.feature("glucose").to_canonical(7.0, "mg")
    assert "'mg'" in str(exc.value)
    assert "mg/dL, mmol/L" in str(exc.value)


def test_fhir_creatinine_umol_converts(fhir_spec: UseCaseSpec) -> None:
    assert fhir_spec.feature("creatinine").to_canonical(88.4, "umol/L") == pytest.approx(1.0, rel=1e-3)


def _minimal(**feature: object) -> dict[str, object]:
    f = {"name": "x", "type": "numeric", "unit": "mg/dL", **feature}
    return {"use_case": "t", "outcome": {"column": "y", "positive": 1}, "features": [f]}


def test_spec_rejects_unknown_feature_type() -> None:
    with pytest.raises(SpecError, match="type must be one of"):
        UseCaseSpec.from_dict(_minimal(type="text"))


def test_spec_rejects_min_above_max() -> None:
    with pytest.raises(SpecError, match="greater than max"):
        UseCaseSpec.from_dict(_minimal(min=10, max=1))


def test_spec_rejects_duplicate_feature_names() -> None:
    d = _minimal()
    d["features"] = [{"name": "x", "type": "numeric"}, {"name": "x", "type": "numeric", "column": "x2"}]
    with pytest.raises(SpecError, match="duplicate feature names: x"):
        UseCaseSpec.from_dict(d)


def test_spec_rejects_missing_outcome() -> None:
    with pytest.raises(SpecError, match="outcome"):
        UseCaseSpec.from_dict({"use_case": "t", "features": [{"name": "x", "type": "numeric"}]})


def test_spec_load_reports_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="cannot read spec"):
        UseCaseSpec.load(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("use_case: [unclosed\n")
    with pytest.raises(SpecError, match="not valid YAML"):
        UseCaseSpec.load(bad)


def test_binary_feature_defaults_to_0_1_range() -> None:
    f = FeatureSpec.from_dict({"name": "sex", "type": "binary"})
    assert (f.min, f.max) == (0.0, 1.0)
    assert f.accepted_units == ()

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ml.datasets import low_prevalence_frame, pima_frame, synthetic_frame, write_pima_csv
from ml.schema import UseCaseSpec
from ml.validation import validate_dataset


def test_write_pima_csv_has_patient_id_first(tmp_path: Path) -> None:
    path = write_pima_csv(tmp_path / "sub" / "pima.csv")
    df = pd.read_csv(path)
    assert df.shape == (768, 10)
    assert df.columns[0] == "patient_id"
    assert df["patient_id"].iloc[0] == "pima-0001" and df["patient_id"].iloc[-1] == "pima-0768"
    assert df["patient_id"].is_unique
    assert int(df["Outcome"].sum()) == 268


def test_synthetic_frame_matches_spec_and_prevalence(fhir_spec: UseCaseSpec, tmp_path: Path) -> None:
    df = synthetic_frame(fhir_spec, 5000, prevalence=0.05, seed=1)
    assert 0.035 < df["t2d"].mean() < 0.065
    path = tmp_path / "syn.csv"
    df.to_csv(path, index=False)
    report, data = validate_dataset(fhir_spec, path)
    assert report.ok, report.text()
    assert data is not None and data.X.shape == (5000, len(fhir_spec.features))
    assert not [w for w in report.warnings if w.code == "out_of_range"]


def test_low_prevalence_frame_subsamples_positives() -> None:
    df = low_prevalence_frame(pima_frame(), "Outcome", 1, prevalence=0.03, seed=0)
    assert abs(df["Outcome"].mean() - 0.03) < 0.005
    assert len(df) == 500 + round(0.03 * 500 / 0.97)


def test_benchmark_spec_has_30_coded_features_and_its_synthetic_data_validates(tmp_path: Path) -> None:
    spec = UseCaseSpec.load(Path(__file__).resolve().parents[2] / "benchmarks" / "specs" / "synthetic30.yaml")
    assert len(spec.features) == 30 and len(set(spec.feature_names)) == 30
    for f in spec.features:
        assert f.loinc, f.name
        assert f.min is not None and f.max is not None and f.min < f.max, f.name
        assert f.type == "binary" or f.unit, f.name
    path = tmp_path / "syn30.csv"
    synthetic_frame(spec, 3000, prevalence=0.1, seed=1).to_csv(path, index=False)
    report, data = validate_dataset(spec, path)
    assert report.ok, report.text()
    assert data is not None and data.X.shape == (3000, 30)
    assert not [w for w in report.warnings if w.code == "out_of_range"]
    assert 0.08 < data.y.mean() < 0.12

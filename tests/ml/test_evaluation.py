from __future__ import annotations

import numpy as np
import pytest

from ml.evaluation import (
    auprc,
    auroc,
    bootstrap_ci,
    calibration_slope_intercept,
    choose_threshold,
    fast_auprc,
    fast_auroc,
    full_metrics,
    reference_profile,
    subgroup_labels,
    threshold_metrics,
)
from ml.schema import SubgroupSpec, UseCaseSpec


def test_fast_metrics_equal_sklearn_with_ties() -> None:
    rng = np.random.default_rng(0)
    for _ in range(50):
        n = int(rng.integers(10, 200))
        y = rng.integers(0, 2, n)
        p = np.round(rng.random(n), 1)
        if 0 < y.sum() < n:
            assert fast_auroc(y, p) == pytest.approx(auroc(y, p), abs=1e-12)
            assert fast_auprc(y, p) == pytest.approx(auprc(y, p), abs=1e-12)


def test_calibration_slope_and_intercept_for_calibrated_and_overconfident_predictions() -> None:
    rng = np.random.default_rng(1)
    z = rng.normal(0, 1.5, 20000)
    p = 1 / (1 + np.exp(-z))
    y = (rng.random(z.size) < p).astype(int)
    slope, intercept = calibration_slope_intercept(y, p)
    assert slope == pytest.approx(1.0, abs=0.05) and intercept == pytest.approx(0.0, abs=0.05)
    over = 1 / (1 + np.exp(-2 * z))  # twice too extreme -> slope about 0.5
    slope2, _ = calibration_slope_intercept(y, over)
    assert slope2 == pytest.approx(0.5, abs=0.05)


def test_bootstrap_ci_brackets_the_estimate_and_is_reproducible() -> None:
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 300)
    p = np.clip(y * 0.3 + rng.random(300) * 0.7, 0, 1)
    lo, hi = bootstrap_ci(y, p, fast_auroc, 300, seed=5)
    assert lo < auroc(y, p) < hi
    assert (lo, hi) == bootstrap_ci(y, p, fast_auroc, 300, seed=5)


def test_threshold_metrics_counts() -> None:
    y = np.array([1, 1, 0, 0, 0])
    p = np.array([0.9, 0.2, 0.6, 0.1, 0.05])
    m = threshold_metrics(y, p, 0.5)
    assert (m["tp"], m["fn"], m["fp"], m["tn"]) == (1, 1, 1, 2)
    assert m["sensitivity"] == 0.5 and m["specificity"] == pytest.approx(2 / 3)
    assert m["ppv"] == 0.5 and m["npv"] == pytest.approx(2 / 3)


def test_youden_threshold_separates_perfectly_separable_scores() -> None:
    y = np.array([0, 0, 0, 1, 1])
    p = np.array([0.1, 0.2, 0.3, 0.7, 0.8])
    t = choose_threshold(y, p, "youden")
    assert 0.3 < t <= 0.7
    assert choose_threshold(y, p, "sensitivity>=1.0") == pytest.approx(0.7)
    with pytest.raises(ValueError, match="unknown threshold rule"):
        choose_threshold(y, p, "magic")


def test_full_metrics_handles_single_class_subgroup() -> None:
    m = full_metrics(np.zeros(5, dtype=int), np.linspace(0.1, 0.5, 5), 0.3, n_boot=10, seed=0)
    assert m["auroc"] is None and m["auroc_ci"] == [None, None]
    assert m["at_threshold"]["specificity"] == pytest.approx(0.4)


def test_subgroup_labels_bins_and_values() -> None:
    sg = SubgroupSpec.from_dict({"name": "age_band", "column": "Age", "bins": [21, 30, 40, 120],
                                 "labels": ["21-29", "30-39", "40+"]})
    labels = subgroup_labels(sg, np.array([21, 29.9, 30, 55, np.nan, 130]))
    assert list(labels) == ["21-29", "21-29", "30-39", "40+", "missing", "out of bins"]
    plain = SubgroupSpec.from_dict({"name": "sex", "column": "sex"})
    assert list(subgroup_labels(plain, np.array([0.0, 1.0, np.nan]))) == ["0", "1", "missing"]


def test_reference_profile_bins_sum_to_one(diabetes_spec: UseCaseSpec) -> None:
    rng = np.random.default_rng(3)
    X = rng.normal(100, 10, (500, 8))
    X[:50, 4] = np.nan
    prof = reference_profile(diabetes_spec, X, rng.random(500))
    ins = prof["features"]["insulin"]
    assert ins["missing_fraction"] == pytest.approx(0.1)
    assert sum(ins["fractions"]) == pytest.approx(1.0)
    assert len(ins["fractions"]) == len(ins["edges"]) + 1
    assert "prediction" in prof

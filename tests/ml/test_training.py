from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ml.schema import UseCaseSpec
from ml.training import (
    TrainConfig,
    choose_calibration,
    class_weights,
    cv_folds,
    fit_calibrator,
    train_test_split_grouped,
)
from ml.validation import load_dataset


def test_split_is_grouped_stratified_and_hashed() -> None:
    rng = np.random.default_rng(0)
    groups = np.repeat([f"p{i}" for i in range(300)], 2)  # two rows per patient
    y = np.repeat(rng.integers(0, 2, 300), 2)
    s = train_test_split_grouped(y, groups, seed=1)
    assert not set(groups[s.train]) & set(groups[s.test])
    assert 0.15 < len(s.test) / len(y) < 0.25
    assert abs(y[s.test].mean() - y.mean()) < 0.05
    again = train_test_split_grouped(y, groups, seed=1)
    assert again.sha256 == s.sha256 and np.array_equal(again.test, s.test)
    assert train_test_split_grouped(y, groups, seed=2).sha256 != s.sha256


def test_cv_folds_never_split_a_patient() -> None:
    groups = np.repeat(np.arange(100), 3).astype(str)
    y = np.repeat(np.arange(100) % 3 == 0, 3).astype(int)
    for tr, va in cv_folds(y, groups, k=5, seed=0):
        assert not set(groups[tr]) & set(groups[va])


def test_pima_split_hash_is_stable(diabetes_spec: UseCaseSpec, pima_csv: Path) -> None:
    data = load_dataset(diabetes_spec, pima_csv)
    s = train_test_split_grouped(data.y, data.groups, seed=42)
    assert len(s.train) + len(s.test) == 768
    assert s.sha256 == train_test_split_grouped(data.y, data.groups, seed=42).sha256


def test_class_weights_balance_the_classes() -> None:
    y = np.array([1] * 10 + [0] * 90)
    w, w_pos = class_weights(y, "balanced")
    assert w_pos == 9.0 and w[y == 1].sum() == w[y == 0].sum()
    _, none = class_weights(y, "none")
    assert none == 1.0


def test_sigmoid_calibration_fixes_a_shifted_model() -> None:
    rng = np.random.default_rng(4)
    z = rng.normal(-1, 1.5, 4000)
    y = (rng.random(z.size) < 1 / (1 + np.exp(-z))).astype(int)
    p_shifted = 1 / (1 + np.exp(-(z + 2.0)))  # what class weighting does: too high
    cal = fit_calibrator("sigmoid", p_shifted, y)
    assert cal is not None and cal.a == pytest.approx(1.0, abs=0.15) and cal.b == pytest.approx(-2.0, abs=0.2)
    folds = cv_folds(y, np.arange(y.size).astype(str), k=3, seed=0)
    method, scores = choose_calibration(p_shifted, y, folds, TrainConfig(calibration_methods=("none", "sigmoid")))
    assert method == "sigmoid" and scores["sigmoid"]["brier"] < scores["none"]["brier"]


def test_train_config_round_trips_and_rejects_unknown_keys(tmp_path: Path) -> None:
    cfg = TrainConfig.fast(selection_metric="auprc")
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown training config key"):
        TrainConfig.from_dict({"folds": 3})
    with pytest.raises(ValueError, match="selection_metric"):
        TrainConfig(selection_metric="accuracy")
    p = tmp_path / "params.yaml"
    p.write_text("train:\n  seed: 1\n  cv_folds: 4\n  bootstrap: 100\n")
    assert TrainConfig.load(p).cv_folds == 4

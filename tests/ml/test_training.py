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
    make_estimator,
    train_model,
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


def test_mlp_solver_follows_the_size_of_the_training_part() -> None:
    cfg = TrainConfig(mlp_adam_from_rows=5_000, large_data_rows=50_000)
    small = cfg.candidates("mlp", 614)
    assert len(small) == len(cfg.mlp_grid)
    assert all(c["solver"] == "lbfgs" and c["max_iter"] == cfg.mlp_max_iter for c in small)
    medium = cfg.candidates("mlp", 8_000)
    assert len(medium) == len(cfg.mlp_grid)
    assert all(c["solver"] == "adam" and c["batch_size"] == cfg.mlp_batch_size and c["max_iter"] == cfg.mlp_max_epochs
               for c in medium)
    large = cfg.candidates("mlp", 80_000)
    assert [{k: c[k] for k in ("hidden_layer_sizes", "alpha")} for c in large] == list(cfg.mlp_grid_large)
    assert all(c["solver"] == "adam" for c in large)


def test_large_training_parts_search_the_smaller_grids() -> None:
    cfg = TrainConfig()
    assert cfg.candidates("xgboost", 49_999) == cfg.xgb_grid
    assert cfg.candidates("xgboost", 50_000) == cfg.xgb_grid_large
    assert 0 < len(cfg.xgb_grid_large) < len(cfg.xgb_grid) and 0 < len(cfg.mlp_grid_large) < len(cfg.mlp_grid)
    # The large grids are subsets of the default ones: the same candidates, fewer of them.
    assert all(g in cfg.xgb_grid for g in cfg.xgb_grid_large)
    assert all(g in cfg.mlp_grid for g in cfg.mlp_grid_large)


def test_train_config_rejects_unusable_solver_settings() -> None:
    with pytest.raises(ValueError, match="mlp_batch_size"):
        TrainConfig(mlp_batch_size=0)
    with pytest.raises(ValueError, match="large_data_rows"):
        TrainConfig(large_data_rows=-1)
    with pytest.raises(ValueError, match="mlp_grid_large"):
        TrainConfig(mlp_grid_large=())
    cfg = TrainConfig.from_dict({"mlp_adam_from_rows": 0, "xgb_grid_large": [{"max_depth": 2}]})
    assert cfg.xgb_grid_large == ({"max_depth": 2},)
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg


def test_make_estimator_takes_the_solver_from_the_candidate() -> None:
    adam = make_estimator("mlp", {"solver": "adam", "batch_size": 64, "max_iter": 7, "hidden_layer_sizes": [4]},
                          seed=0)
    mlp = adam.steps[-1][1]
    assert (mlp.solver, mlp.batch_size, mlp.max_iter, mlp.hidden_layer_sizes) == ("adam", 64, 7, (4,))
    default = make_estimator("mlp", {"hidden_layer_sizes": [4]}, seed=0, mlp_max_iter=123).steps[-1][1]
    assert (default.solver, default.max_iter) == ("lbfgs", 123)


def test_adam_training_is_reproducible_and_records_its_solver() -> None:
    rng = np.random.default_rng(3)
    X = rng.normal(size=(1_200, 6))
    X[rng.random(X.shape) < 0.05] = np.nan
    y = (rng.random(1_200) < 1 / (1 + np.exp(-(np.nan_to_num(X[:, 0]) * 1.5 - 1.5)))).astype(int)
    groups = np.array([f"p{i}" for i in range(1_200)])
    names = tuple(f"f{i}" for i in range(6))
    cfg = TrainConfig.fast(mlp_adam_from_rows=1_000, large_data_rows=1_000, mlp_batch_size=64, mlp_max_epochs=200)
    first = train_model("mlp", X, y, groups, names, seed=5, config=cfg)
    again = train_model("mlp", X, y, groups, names, seed=5, config=cfg)
    assert [c.params for c in first.candidates] == [{**cfg.mlp_solver_params(1_200), **g} for g in cfg.mlp_grid_large]
    assert first.selected.params["solver"] == "adam"
    mlp = first.model.pipeline.steps[-1][1]
    assert mlp.solver == "adam" and mlp.n_iter_ <= 200
    assert np.array_equal(first.model.predict_proba(X), again.model.predict_proba(X))
    assert first.selected.summary["auroc"] > 0.7

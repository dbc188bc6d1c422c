from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ml import export
from ml.explain import explain, explain_with_base, explanation_method, global_importance, margin
from ml.model import logit

ROWS = np.array([
    [6, 148, 72, 35, np.nan, 33.6, 0.627, 50],
    [1, 85, 66, 29, np.nan, 26.6, 0.351, 31],
    [8, 183, 64, np.nan, np.nan, 23.3, 0.672, 32],
])


def test_xgboost_contributions_sum_to_the_margin(xgb_run: tuple[Path, dict[str, Any]]) -> None:
    out, _ = xgb_run
    model = export.load_joblib(out / "model.joblib")
    phi, base = explain_with_base(model, ROWS)
    assert phi.shape == (3, 8)
    np.testing.assert_allclose(phi.sum(axis=1) + base, margin(model, ROWS), atol=1e-4)
    # Without isotonic calibration, the margin is the log-odds of the served probability.
    np.testing.assert_allclose(margin(model, ROWS), logit(export.predict_proba(model, ROWS)), atol=1e-5)


def test_xgboost_explanation_ranks_glucose_high(xgb_run: tuple[Path, dict[str, Any]]) -> None:
    out, _ = xgb_run
    model = export.load_joblib(out / "model.joblib")
    phi = explain(model, ROWS)
    names = list(model.feature_names)
    assert phi[2, names.index("glucose")] > 0  # 183 mg/dL pushes risk up
    assert phi[1, names.index("glucose")] < 0  # 85 mg/dL pushes it down
    assert "TreeSHAP" in explanation_method(model)


def test_single_row_explanation(xgb_run: tuple[Path, dict[str, Any]]) -> None:
    out, _ = xgb_run
    model = export.load_joblib(out / "model.joblib")
    assert explain(model, ROWS[0]).shape == (1, 8)


def test_mlp_occlusion_is_zero_for_median_or_missing_inputs(mlp_run: tuple[Path, dict[str, Any]]) -> None:
    out, _ = mlp_run
    model = export.load_joblib(out / "model.joblib")
    row = model.medians.copy().reshape(1, -1)
    row[0, 1] = 190.0
    row[0, 4] = np.nan
    phi, base = explain_with_base(model, row)
    assert phi.shape == (1, 8)
    assert abs(phi[0, 4]) < 1e-9  # missing -> imputed median -> no contribution
    assert phi[0, 1] > 0
    assert np.allclose(np.delete(phi[0], [1, 4]), 0.0, atol=1e-9)
    assert "occlusion" in explanation_method(model)
    np.testing.assert_allclose(phi.sum(axis=1) + base, margin(model, row), atol=1e-9)


def test_global_importance_has_every_feature(xgb_run: tuple[Path, dict[str, Any]]) -> None:
    out, m = xgb_run
    model = export.load_joblib(out / "model.joblib")
    imp = global_importance(model, ROWS)
    assert set(imp) == set(m["feature_order"])
    assert set(m["explanation"]["global_importance"]) == set(m["feature_order"])

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

from ml import export
from ml.model import Calibrator, ClinicalModel
from ml.schema import UseCaseSpec
from ml.training import train_test_split_grouped
from ml.validation import load_dataset


def _test_rows(spec: UseCaseSpec, csv: Path, seed: int) -> np.ndarray:
    data = load_dataset(spec, csv)
    split = train_test_split_grouped(data.y, data.groups, seed=seed)
    return data.X[split.test]


@pytest.mark.parametrize("which", ["xgb_run", "mlp_run"])
def test_onnx_matches_joblib_on_rows_with_missing_values(which: str, request: pytest.FixtureRequest,
                                                         diabetes_spec: UseCaseSpec, pima_csv: Path) -> None:
    out, manifest = request.getfixturevalue(which)
    X = _test_rows(diabetes_spec, pima_csv, manifest["seed"])
    X = export.parity_rows(X, seed=0)
    assert np.isnan(X).any(axis=1).sum() > 100
    model = export.load_joblib(out / "model.joblib")
    p_joblib = export.predict_proba(model, X)
    p_onnx = export.onnx_predict(export.onnx_session(out / "model.onnx"), X)
    assert np.max(np.abs(p_joblib - p_onnx)) <= 1e-5
    assert manifest["onnx_parity_max_abs_diff"] <= 1e-5
    assert manifest["onnx_parity"]["n_rows_with_missing"] > 0


def test_onnx_io_contract(xgb_run: tuple[Path, dict[str, Any]]) -> None:
    out, manifest = xgb_run
    onx = onnx.load(str(out / "model.onnx"))
    assert [i.name for i in onx.graph.input] == [manifest["input_name"]] == ["features"]
    assert [o.name for o in onx.graph.output] == [manifest["output_name"]] == ["probabilities"]
    sess = export.onnx_session(out / "model.onnx")
    res = sess.run(None, {"features": np.full((3, 8), np.nan, dtype=np.float32)})
    assert len(res) == 1 and res[0].shape == (3, 2) and res[0].dtype == np.float32
    assert np.allclose(res[0].sum(axis=1), 1.0, atol=1e-6)


def test_predict_proba_returns_positive_class(xgb_run: tuple[Path, dict[str, Any]]) -> None:
    out, _ = xgb_run
    model = export.load_joblib(out / "model.joblib")
    X = np.array([[6, 148, 72, 35, np.nan, 33.6, 0.627, 50], [1, 85, 66, 29, np.nan, 26.6, 0.351, 31]])
    p = export.predict_proba(model, X)
    assert p.shape == (2,) and p[0] > p[1]
    assert np.allclose(p, model.predict_proba(X)[:, 1])


def test_parity_check_raises_when_model_and_onnx_differ(xgb_run: tuple[Path, dict[str, Any]]) -> None:
    out, _ = xgb_run
    model = export.load_joblib(out / "model.joblib")
    onnx_bytes = (out / "model.onnx").read_bytes()
    shifted = ClinicalModel(model.pipeline, model.model_type, model.feature_names,
                            Calibrator("sigmoid", a=1.0, b=0.5), model.medians)
    X = np.array([[6, 148, 72, 35, np.nan, 33.6, 0.627, 50]])
    with pytest.raises(export.ExportError, match="parity check failed"):
        export.parity_check(shifted, onnx_bytes, X)


@pytest.mark.parametrize("calibrator", [
    Calibrator("sigmoid", a=0.7, b=-0.4),
    Calibrator("isotonic", x=(0.05, 0.3, 0.6, 0.9), y=(0.01, 0.2, 0.5, 0.97)),
])
def test_calibration_steps_export_with_parity(xgb_run: tuple[Path, dict[str, Any]], calibrator: Calibrator,
                                              diabetes_spec: UseCaseSpec, pima_csv: Path) -> None:
    out, manifest = xgb_run
    base = export.load_joblib(out / "model.joblib")
    model = ClinicalModel(base.pipeline, "xgboost", base.feature_names, calibrator, base.medians)
    onx = export.to_onnx(model)
    X = export.parity_rows(_test_rows(diabetes_spec, pima_csv, manifest["seed"]), seed=1)
    result = export.parity_check(model, onx.SerializeToString(), X)
    assert result["max_abs_diff"] <= 1e-5


def test_export_is_deterministic(xgb_run: tuple[Path, dict[str, Any]]) -> None:
    out, _ = xgb_run
    model = export.load_joblib(out / "model.joblib")
    a = export.to_onnx(model, doc="ClinPredict diabetes xgboost").SerializeToString(deterministic=True)
    assert a == (out / "model.onnx").read_bytes()

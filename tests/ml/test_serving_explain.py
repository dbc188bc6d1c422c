"""The serving explainer (ml/serving_explain.py, non-pickle files) gives today's explanations: the contributions of
``ml.explain`` on the fitted model from model.joblib, within 1e-6, for XGBoost and the MLP under every calibration
(none, Platt, isotonic), on every Pima row plus a copy with ~30% of values missing."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ml import explain, export
from ml.model import ClinicalModel
from ml.schema import UseCaseSpec
from ml.serving_explain import (
    EXPLAINER_TOLERANCE,
    ExplainerError,
    MLPWeights,
    calibrator_from_dict,
    load_explainer,
)
from ml.training import fit_calibrator
from ml.validation import load_dataset

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def all_rows(diabetes_spec: UseCaseSpec, pima_csv: Path) -> tuple[np.ndarray, np.ndarray]:
    """Every row of the data (the test split among them) plus a copy with ~30% NaN; and the outcome."""
    data = load_dataset(diabetes_spec, pima_csv)
    return export.parity_rows(data.X, seed=3), np.concatenate([data.y, data.y])


def _variant(model: ClinicalModel, method: str, rows: np.ndarray, y: np.ndarray) -> ClinicalModel:
    """The fitted model with its calibration replaced: none, a Platt fit or an isotonic fit on its raw output."""
    if method == "none":
        return dataclasses.replace(model, calibrator=None)
    return dataclasses.replace(model, calibrator=fit_calibrator(method, model.raw_proba(rows), y))


def _max_diff(model: ClinicalModel, rows: np.ndarray) -> tuple[float, str]:
    name, raw, meta = export.explainer_artifact(model)
    served = load_explainer(json.loads(json.dumps(meta)), raw, model.feature_names)  # through JSON, as stored
    phi_ref, base_ref = explain.explain_with_base(model, rows)
    phi, base = served.explain_with_base(rows)
    assert phi.shape == phi_ref.shape == (rows.shape[0], len(model.feature_names))
    return float(max(np.abs(phi - phi_ref).max(), np.abs(base - base_ref).max())), name


@pytest.mark.parametrize("method", ["none", "sigmoid", "isotonic"])
def test_xgboost_booster_file_gives_todays_treeshap(method: str, xgb_run: tuple[Path, dict[str, Any]],
                                                    all_rows: tuple[np.ndarray, np.ndarray]) -> None:
    rows, y = all_rows
    model = _variant(export.load_joblib(xgb_run[0] / "model.joblib"), method, rows, y)
    diff, name = _max_diff(model, rows)
    print(f"xgboost/{method}: max |contribution difference| over {rows.shape[0]} rows = {diff:.3g}")
    assert name == "model.xgb.ubj"
    assert diff <= EXPLAINER_TOLERANCE


@pytest.mark.parametrize("method", ["none", "sigmoid", "isotonic"])
def test_mlp_weights_file_gives_todays_occlusion(method: str, mlp_run: tuple[Path, dict[str, Any]],
                                                 all_rows: tuple[np.ndarray, np.ndarray]) -> None:
    rows, y = all_rows
    model = _variant(export.load_joblib(mlp_run[0] / "model.joblib"), method, rows, y)
    diff, name = _max_diff(model, rows)
    print(f"mlp/{method}: max |contribution difference| over {rows.shape[0]} rows = {diff:.3g}")
    assert name == "model.mlp.json"
    assert diff <= EXPLAINER_TOLERANCE


@pytest.mark.parametrize("which", ["xgb_run", "mlp_run"])
def test_run_folder_records_the_explainer(which: str, request: pytest.FixtureRequest) -> None:
    out, manifest = request.getfixturevalue(which)
    model = export.load_joblib(out / "model.joblib")
    block = manifest["explainer"]
    name = block["file"]
    assert manifest["artifacts"][name]["sha256"] == export.sha256_file(out / name)
    assert block["kind"] == {"xgboost": "xgboost_treeshap", "mlp": "mlp_occlusion"}[manifest["model_type"]]
    assert block["parity"]["max_abs_diff"] <= EXPLAINER_TOLERANCE
    assert block["parity"]["n_rows"] == manifest["onnx_parity"]["n_rows"]
    assert list(block["medians"]) == manifest["feature_order"]
    assert np.allclose(list(block["medians"].values()), model.medians, rtol=0, atol=0)
    assert calibrator_from_dict(block["calibration"]) == model.calibrator
    assert block["method"] == manifest["explanation"]["method"]
    served = load_explainer(block, (out / name).read_bytes(), manifest["feature_order"])
    rows = np.array([[6, 148, 72, 35, np.nan, 33.6, 0.627, 50]])
    np.testing.assert_allclose(served.explain(rows), explain.explain(model, rows), rtol=0, atol=1e-12)


def test_serving_explainer_imports_no_sklearn_joblib_xgboost_or_scipy(xgb_run: tuple[Path, dict[str, Any]],
                                                                      mlp_run: tuple[Path, dict[str, Any]]) -> None:
    """In a fresh interpreter: load both explainers from their files and explain; then list what got imported."""
    code = f"""
import json, sys
import numpy as np
from ml.serving_explain import load_explainer
for folder in {[str(xgb_run[0]), str(mlp_run[0])]!r}:
    m = json.load(open(folder + "/manifest.json"))
    e = load_explainer(m["explainer"], open(folder + "/" + m["explainer"]["file"], "rb").read(), m["feature_order"])
    e.explain(np.zeros((2, len(m["feature_order"]))))
print(json.dumps(sorted(n for n in sys.modules if n.split(".")[0] in ("sklearn", "joblib", "xgboost", "scipy"))))
"""
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout) == []


def test_mlp_weights_round_trip_exactly_and_reject_unknown_formats(mlp_run: tuple[Path, dict[str, Any]]) -> None:
    raw = (mlp_run[0] / "model.mlp.json").read_bytes()
    weights = MLPWeights.from_json(raw)
    assert weights.to_json() == raw
    doc = json.loads(raw)
    doc["activation"] = "softplus"
    with pytest.raises(ExplainerError, match="unsupported activation"):
        MLPWeights.from_json(json.dumps(doc).encode())
    with pytest.raises(ExplainerError, match="not valid JSON"):
        MLPWeights.from_json(b"\x80\x04pickle?")


def test_unknown_explainer_kind_is_refused(xgb_run: tuple[Path, dict[str, Any]]) -> None:
    out, manifest = xgb_run
    with pytest.raises(ExplainerError, match="unknown explainer kind"):
        load_explainer({**manifest["explainer"], "kind": "joblib"}, b"", manifest["feature_order"])

"""Model families chosen by evidence (issue 18): the penalised logistic family, one-hot encodings, declared binary
labels, the one-standard-error choice between families, small-data validation and the no-signal verdict."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from ml import explain, export
from ml.cli import main
from ml.pipeline import train_run
from ml.schema import SpecError, UseCaseSpec
from ml.serving_explain import load_explainer
from ml.training import CVResult, FamilySearch, TrainConfig, select_family
from ml.validation import validate_dataset, validate_record

MIXED_SPEC: dict[str, Any] = {
    "use_case": "mixed",
    "outcome": {"column": "event", "positive": 1},
    "patient_id": "pid",
    "features": [
        {"name": "age", "type": "numeric", "unit": "a", "min": 18, "max": 100},
        {"name": "smoker", "type": "binary", "labels": ["No", "Yes"]},
        {"name": "sex", "type": "binary", "labels": ["Female", "Male"]},
        {"name": "region", "type": "categorical", "categories": ["north", "east", "south", "west"]},
        {"name": "lab", "type": "numeric", "unit": "mmol/L", "min": 0, "max": 50},
    ],
}


def _mixed_csv(path: Path, n: int = 700, seed: int = 0, signal: bool = True) -> Path:
    """Outcome driven by age, smoking and a *non-monotone* region effect (east and west high risk), so a model that
    reads region codes as a number cannot use it; ~15% of lab and region values missing."""
    rng = np.random.default_rng(seed)
    age = rng.uniform(20, 90, n)
    smoker = rng.random(n) < 0.3
    sex = rng.random(n) < 0.5
    region = rng.integers(0, 4, n)
    lab = rng.normal(8, 2, n).clip(0.5, 40)
    z = -3 + 0.04 * (age - 20) + 1.0 * smoker + 1.4 * np.isin(region, [1, 3]) + 0.15 * (lab - 8)
    y = rng.random(n) < (1 / (1 + np.exp(-z)) if signal else 0.3)
    names = np.array(MIXED_SPEC["features"][3]["categories"], dtype=object)
    frame = pd.DataFrame({
        "pid": [f"p{i}" for i in range(n)],
        "age": age.round(1),
        "smoker": np.where(smoker, "Yes", "No"),
        "sex": np.where(sex, "Male", "Female"),
        "region": names[region],
        "lab": lab.round(2).astype(str),
        "event": y.astype(int),
    })
    frame.loc[rng.random(n) < 0.15, "lab"] = ""
    frame.loc[rng.random(n) < 0.15, "region"] = ""
    frame.to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def mixed_spec() -> UseCaseSpec:
    return UseCaseSpec.from_dict(MIXED_SPEC)


@pytest.fixture(scope="module")
def mixed_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _mixed_csv(tmp_path_factory.mktemp("mixed") / "mixed.csv")


# --- spec and validation: declared binary labels ----------------------------------------------------------------


def test_binary_labels_are_read_in_data_and_requests(mixed_spec: UseCaseSpec, mixed_csv: Path) -> None:
    report, data = validate_dataset(mixed_spec, mixed_csv)
    assert data is not None, report.text()
    raw = pd.read_csv(mixed_csv, dtype=str, keep_default_na=False)
    smoker = data.X[:, mixed_spec.feature_names.index("smoker")]
    assert np.array_equal(smoker, (raw["smoker"] == "Yes").to_numpy(dtype=float))
    sex = data.X[:, mixed_spec.feature_names.index("sex")]
    assert np.array_equal(sex, (raw["sex"] == "Male").to_numpy(dtype=float))

    base = {"age": 50, "sex": "female", "region": "south", "lab": 7.0}
    for given, expected in (("Yes", 1.0), ("No", 0.0), ("yes", 1.0), (True, 1.0), (0, 0.0), ("true", 1.0)):
        result = validate_record(mixed_spec, {**base, "smoker": given})
        assert result.ok, result.errors
        assert result.values["smoker"] == expected
        assert result.values["sex"] == 0.0
    bad = validate_record(mixed_spec, {**base, "smoker": "sometimes"})
    assert bad.errors == {"smoker": ["unknown value 'sometimes'; accepted: No/Yes, 0/1 or true/false"]}


def test_binary_label_not_in_the_spec_is_a_dataset_error(mixed_spec: UseCaseSpec, tmp_path: Path) -> None:
    path = _mixed_csv(tmp_path / "m.csv", n=100)
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    frame.loc[3, "smoker"] = "former"
    frame.to_csv(path, index=False)
    report, data = validate_dataset(mixed_spec, path)
    assert data is None
    errors = [e for e in report.errors if e.column == "smoker"]
    assert errors and errors[0].rows == [4]
    assert "accepted: No/Yes, 0/1 or true/false" in errors[0].message


@pytest.mark.parametrize(("labels", "message"), [
    (["No"], "two different values"),
    (["Yes", "yes"], "two different values"),
    (["Yes", "No"], "against its usual meaning"),
])
def test_bad_binary_labels_are_spec_errors(labels: list[str], message: str) -> None:
    with pytest.raises(SpecError, match=message):
        UseCaseSpec.from_dict({**MIXED_SPEC, "features": [{"name": "x", "type": "binary", "labels": labels}]})


def test_labels_and_ordinal_survive_the_manifest_round_trip(mixed_spec: UseCaseSpec) -> None:
    spec = UseCaseSpec.from_dict({**MIXED_SPEC, "features": [
        *MIXED_SPEC["features"], {"name": "stage", "type": "categorical", "categories": ["I", "II"], "ordinal": True}]})
    again = UseCaseSpec.from_dict(spec.to_dict())
    assert again == spec
    assert again.feature("smoker").labels == ("No", "Yes")
    assert again.feature("region").one_hot and not again.feature("stage").one_hot


# --- families, one-hot encoding, ONNX and explainer parity -------------------------------------------------------


@pytest.mark.parametrize("family", ["logistic", "xgboost", "mlp"])
def test_each_family_exports_with_parity_on_missing_values_and_one_hot_categories(
        family: str, mixed_spec: UseCaseSpec, mixed_csv: Path, tmp_path: Path) -> None:
    out = tmp_path / family
    m = train_run(spec=mixed_spec, data_path=mixed_csv, out_dir=out, seed=5, model_type=family,
                  config=TrainConfig.fast(bootstrap=50), tracking=False)
    assert m["model_type"] == family
    assert m["onnx_parity_max_abs_diff"] <= 1e-5
    assert m["onnx_parity"]["n_rows_with_missing"] > 0
    model = export.load_joblib(out / "model.joblib")
    steps = [name for name, _ in model.pipeline.steps]
    if family == "xgboost":
        assert steps == ["xgb"]
        assert m["encoding"]["region"]["encoding"].startswith("category code")
    else:
        assert steps[0] == "encode"
        encoded = model.pipeline[:-1].transform(np.array([[50, 1, 0, 3, 7.0]], dtype=np.float32))
        assert encoded.shape == (1, 4 + 4)  # 4 numeric/binary columns + one 0/1 column per region category
        assert encoded[0, -4:].tolist() == [0.0, 0.0, 0.0, 1.0]
        assert m["encoding"]["region"]["encoding"].startswith("one-hot")
    assert m["encoding"]["smoker"]["labels"] == ["No", "Yes"]

    # Every category (and a missing one) through ONNX and the fitted model alike.
    rows = np.array([[60, 1, 1, code, 9.0] for code in (0, 1, 2, 3, np.nan)], dtype=np.float64)
    parity = export.parity_check(model, (out / "model.onnx").read_bytes(), rows)
    assert parity["max_abs_diff"] <= 1e-5

    # The served explainer (no pickle) reproduces the fitted model's explanation from its file.
    meta = m["explainer"]
    assert meta["file"] == {"logistic": "model.linear.json", "xgboost": "model.xgb.ubj",
                            "mlp": "model.mlp.json"}[family]
    served = load_explainer(meta, (out / meta["file"]).read_bytes(), m["feature_order"])
    assert np.max(np.abs(served.explain(rows) - explain.explain(model, rows))) <= 1e-6
    assert m["artifacts"][meta["file"]]["sha256"] == export.sha256_file(out / meta["file"])


def test_logistic_contributions_are_additive_and_region_reference_is_the_mode(
        mixed_spec: UseCaseSpec, mixed_csv: Path, tmp_path: Path) -> None:
    out = tmp_path / "lin"
    m = train_run(spec=mixed_spec, data_path=mixed_csv, out_dir=out, seed=5, model_type="logistic",
                  config=TrainConfig.fast(bootstrap=50, calibration_methods=("sigmoid",)), tracking=False)
    model = export.load_joblib(out / "model.joblib")
    rows = np.array([[70, 1, 0, 1, 12.0], [30, 0, 1, 2, np.nan]], dtype=np.float64)
    phi, base = explain.explain_with_base(model, rows)
    # A linear model (Platt folded into it): the contributions and the base add up to the log-odds exactly.
    assert np.allclose(phi.sum(axis=1) + base, explain.margin(model, rows), atol=1e-9)
    _, data = validate_dataset(mixed_spec, mixed_csv)
    assert data is not None
    region = data.X[:, 3]
    codes, counts = np.unique(region[~np.isnan(region)], return_counts=True)
    assert m["explainer"]["medians"]["region"] == codes[np.argmax(counts)]
    assert m["explanation"]["method"].startswith("exact linear contributions")


# --- choosing between families -----------------------------------------------------------------------------------


def _search(family: str, fold_aurocs: list[float]) -> FamilySearch:
    folds = [{"auroc": a, "auprc": 0.5, "brier": 0.2, "log_loss": 0.5} for a in fold_aurocs]
    summary = {"auroc": float(np.mean(fold_aurocs)), "auroc_sd": float(np.std(fold_aurocs))}
    res = CVResult(params={"family": family}, oof=np.zeros(1), fold_metrics=folds, summary=summary)
    return FamilySearch(model_type=family, candidates=[res], best=res, folds=[(np.zeros(1), np.zeros(1))] * 5,
                        repeats=1, method="test")


def test_one_standard_error_rule_prefers_the_simpler_family_within_one_se() -> None:
    xgb_folds = [0.80, 0.84, 0.82, 0.86, 0.83]  # mean 0.830, SE = sd(ddof=1) / sqrt(5) = 0.0100
    searches = {"logistic": _search("logistic", [0.81, 0.83, 0.82, 0.82, 0.82]),  # mean 0.820: within 1 SE
                "xgboost": _search("xgboost", xgb_folds),
                "mlp": _search("mlp", [0.80, 0.82, 0.81, 0.82, 0.80])}
    sel = select_family(searches, TrainConfig(selection_metric="auroc"))
    assert sel["best_by_metric"] == "xgboost"
    assert sel["chosen"] == "logistic"
    assert sel["standard_error"] == pytest.approx(np.std(xgb_folds, ddof=1) / np.sqrt(5))
    assert "within one standard error" in sel["reason"] and "simpler" in sel["reason"]

    searches["logistic"] = _search("logistic", [0.80, 0.81, 0.81, 0.81, 0.82])  # mean 0.810: beyond 1 SE
    sel = select_family(searches, TrainConfig(selection_metric="auroc"))
    assert sel["chosen"] == "xgboost"
    assert "no simpler family is within one standard error" in sel["reason"]
    assert select_family(searches, TrainConfig(selection_metric="auroc", family_rule="best"))["chosen"] == "xgboost"


def test_auto_records_every_family_and_why_one_won(mixed_spec: UseCaseSpec, mixed_csv: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "auto"
    code = main(["train", "--spec", _write_spec(tmp_path), "--data", str(mixed_csv), "--out", str(out), "--fast",
                 "--no-tracking", "--quiet", "--seed", "5"])
    assert code == 0
    m = json.loads((out / "manifest.json").read_text())
    sel = m["model_selection"]
    assert sel["requested"] == "auto"
    assert list(sel["families"]) == ["logistic", "xgboost", "mlp"]
    for res in sel["families"].values():
        assert {"auroc", "log_loss", "se", "n_folds"} <= set(res["cv"])
        assert res["candidates"] and res["selected_params"]
    assert sel["families"]["logistic"]["penalties"] == ["l2", "l1"]
    assert m["model_type"] == sel["chosen"]
    assert m["cv"]["selected_params"] == sel["families"][sel["chosen"]]["selected_params"]
    printed = capsys.readouterr().out
    assert f"chosen:     {sel['chosen']}: {sel['reason']}" in printed
    card = (out / "model_card.md").read_text()
    assert "### Model family" in card and sel["reason"] in card
    for family in ("logistic", "xgboost", "mlp"):
        assert f"| {family}" in card


def _write_spec(tmp_path: Path) -> str:
    import yaml

    path = tmp_path / "mixed.yaml"
    path.write_text(yaml.safe_dump(MIXED_SPEC))
    return str(path)


# --- small data and the final refit ------------------------------------------------------------------------------


def test_small_data_repeats_cv_refits_on_all_rows_and_corrects_optimism(
        mixed_spec: UseCaseSpec, mixed_csv: Path, tmp_path: Path) -> None:
    cfg = TrainConfig.fast(bootstrap=50, small_data_cv_repeats=2, optimism_bootstrap=10)
    m = train_run(spec=mixed_spec, data_path=mixed_csv, out_dir=tmp_path / "small", seed=5, model_type="logistic",
                  config=cfg, tracking=False)
    small = m["small_data"]
    assert small["active"] and small["cv_repeats"] == 2
    assert m["model_selection"]["families"]["logistic"]["cv"]["n_folds"] == 2 * cfg.cv_folds
    assert m["cv"]["method"].startswith("repeated stratified 3-fold CV, 2 repetitions")
    o = small["optimism"]
    assert o["n_boot"] == 10 and o["n_rows"] == 700
    assert o["corrected_auroc"] == pytest.approx(o["apparent_auroc"] - o["optimism_auroc"])
    final = m["final_fit"]
    assert final["refit_on_all_rows"] is True and final["n_rows"] == 700
    assert final["test_part_model"]["threshold"] != m["threshold"] or final["test_part_model"]["calibration"]
    # The exported model is the all-rows refit: it differs from a model fitted on the training part only (m3).
    big = TrainConfig.fast(bootstrap=50, small_data_rows=0, small_data_events=0)
    m2 = train_run(spec=mixed_spec, data_path=mixed_csv, out_dir=tmp_path / "large", seed=5, model_type="logistic",
                   config=big, tracking=False)
    assert m2["small_data"]["active"] is False and m2["small_data"]["optimism"] is None
    # Above the small-data size the chosen model is refitted on every row too, keeping the training part's
    # calibration and threshold (no second CV); without the refit it is the training part's model.
    assert m2["final_fit"]["refit_on_all_rows"] is True and m2["final_fit"]["n_rows"] == 700
    assert m2["final_fit"]["threshold_and_calibration_from"] == "out-of-fold predictions of the training part"
    assert m2["threshold"] == m2["final_fit"]["test_part_model"]["threshold"]
    m3 = train_run(spec=mixed_spec, data_path=mixed_csv, out_dir=tmp_path / "large-no-refit", seed=5,
                   model_type="logistic", config=TrainConfig.fast(bootstrap=50, small_data_rows=0,
                                                                  small_data_events=0, refit_on_all_rows=False),
                   tracking=False)
    assert m3["final_fit"]["refit_on_all_rows"] is False and m3["final_fit"]["n_rows"] == m3["split"]["n_train"]
    assert m3["artifacts"]["model.onnx"]["sha256"] != m2["artifacts"]["model.onnx"]["sha256"]


# --- no signal ---------------------------------------------------------------------------------------------------


def test_no_signal_is_said_plainly(mixed_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    noise = _mixed_csv(tmp_path / "noise.csv", n=600, seed=11, signal=False)
    out = tmp_path / "noise"
    code = main(["train", "--spec", _write_spec(tmp_path), "--data", str(noise), "--out", str(out), "--fast",
                 "--no-tracking", "--quiet", "--model", "logistic", "--seed", "3"])
    assert code == 0
    m = json.loads((out / "manifest.json").read_text())
    assert m["signal"]["verdict"] == "no_signal"
    assert m["signal"]["reasons"]
    lo, hi = m["signal"]["cv_auroc_ci"]
    assert lo <= 0.5 <= hi or m["signal"]["cv_calibration_slope"] < 0.2
    captured = capsys.readouterr()
    assert "WARNING: NO SIGNAL" in captured.out and "WARNING: NO SIGNAL" in captured.err
    assert m["signal"]["reasons"][0] in captured.out
    card = (out / "model_card.md").read_text()
    assert "## NO SIGNAL: do not use this model" in card and m["signal"]["reasons"][0] in card


def test_data_with_signal_gets_the_signal_verdict(mixed_spec: UseCaseSpec, mixed_csv: Path, tmp_path: Path) -> None:
    m = train_run(spec=mixed_spec, data_path=mixed_csv, out_dir=tmp_path / "sig", seed=5, model_type="logistic",
                  config=TrainConfig.fast(bootstrap=50), tracking=False)
    assert m["signal"]["verdict"] == "signal" and m["signal"]["reasons"] == []
    assert m["signal"]["cv_auroc_ci"][0] > 0.5

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ml.cli import main

ROOT = Path(__file__).resolve().parents[2]
SPEC = str(ROOT / "ml" / "specs" / "diabetes.yaml")


def test_cli_train_writes_interface_files(pima_csv: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    res = subprocess.run(
        [sys.executable, "-m", "ml", "train", "--spec", SPEC, "--data", str(pima_csv), "--out", str(out),
         "--seed", "3", "--fast", "--no-tracking"],
        cwd=ROOT, env=env, capture_output=True, text=True, check=False, timeout=300,
    )
    assert res.returncode == 0, res.stderr
    for family in ("logistic", "xgboost", "mlp"):  # --model auto (the default): every family's search
        assert f"CV {family} candidate 1/2" in res.stderr  # progress on long steps
    assert "test:       AUROC" in res.stdout and "95% CI" in res.stdout
    assert "chosen:     " in res.stdout and "signal:     yes" in res.stdout
    for name in ("manifest.json", "model.onnx", "model.joblib", "model_card.md", "model_card.html",
                 "validation_report.json", "plots/roc.png", "plots/pr.png", "plots/calibration.png",
                 "plots/importance.png"):
        assert (out / name).is_file(), name
    assert json.loads((out / "manifest.json").read_text())["mlflow_run_id"] is None


def test_cli_train_bad_input_exits_2_and_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("patient_id,Glucose\nx,1,2\n")
    out = tmp_path / "run"
    assert main(["train", "--spec", SPEC, "--data", str(bad), "--out", str(out), "--no-tracking"]) == 2
    assert "malformed_csv" in capsys.readouterr().err
    assert not out.exists()
    assert main(["train", "--spec", str(tmp_path / "nope.yaml"), "--data", str(bad), "--out", str(out)]) == 2
    assert "cannot read spec" in capsys.readouterr().err


def test_cli_evaluate_reproduces_test_metrics(diabetes_spec: Any, pima_csv: Path, tmp_path: Path) -> None:
    from ml.pipeline import train_run
    from ml.training import TrainConfig

    out = tmp_path / "held-out"
    m = train_run(spec=diabetes_spec, data_path=pima_csv, out_dir=out, seed=7, model_type="xgboost",
                  config=TrainConfig.fast(refit_on_all_rows=False), tracking=False)
    assert m["final_fit"]["refit_on_all_rows"] is False
    result = tmp_path / "eval.json"
    assert main(["evaluate", "--model", str(out), "--data", str(pima_csv), "--part", "test", "--bootstrap", "200",
                 "--out", str(result)]) == 0
    ev = json.loads(result.read_text())
    assert "matches" in ev["rows"]
    assert ev["metrics"]["auroc"] == pytest.approx(m["metrics"]["test"]["auroc"])
    assert ev["metrics"]["brier"] == pytest.approx(m["metrics"]["test"]["brier"])
    assert "NOT held out" not in ev["rows"]


def test_cli_evaluate_says_a_refitted_model_has_seen_the_test_part(xgb_run: tuple[Path, dict[str, Any]],
                                                                   pima_csv: Path, tmp_path: Path) -> None:
    out, m = xgb_run
    assert m["final_fit"]["refit_on_all_rows"] is True  # Pima is small data
    result = tmp_path / "eval.json"
    assert main(["evaluate", "--model", str(out), "--data", str(pima_csv), "--part", "test", "--bootstrap", "50",
                 "--out", str(result)]) == 0
    assert "NOT held out: this model was refitted on all rows" in json.loads(result.read_text())["rows"]


def test_cli_export_matches_manifest_sha(xgb_run: tuple[Path, dict[str, Any]], pima_csv: Path,
                                         tmp_path: Path) -> None:
    out, m = xgb_run
    report = tmp_path / "export.json"
    assert main(["export", "--model", str(out), "--data", str(pima_csv), "--out", str(tmp_path / "m.onnx"),
                 "--report", str(report)]) == 0
    r = json.loads(report.read_text())
    assert r["matches_manifest"] and r["sha256"] == m["artifacts"]["model.onnx"]["sha256"]
    assert r["parity"]["max_abs_diff"] <= 1e-5


def test_cli_card_regenerates(xgb_run: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    out, _ = xgb_run
    assert main(["card", "--model", str(out), "--out-dir", str(tmp_path)]) == 0
    assert (tmp_path / "model_card.md").read_text() == (out / "model_card.md").read_text()
    assert (tmp_path / "model_card.html").is_file()


def test_dvc_repro_runs_offline(tmp_path: Path) -> None:
    work = tmp_path / "repo"
    work.mkdir()
    shutil.copytree(ROOT / "ml", work / "ml", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "dvc.yaml", work / "dvc.yaml")
    params = (ROOT / "params.yaml").read_text().replace("cv_folds: 5", "cv_folds: 3")
    (work / "params.yaml").write_text(params.replace("bootstrap: 1000", "bootstrap: 100"))
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "PATH": f"{Path(sys.executable).parent}{os.pathsep}"
           f"{os.environ.get('PATH', '')}"}
    dvc = str(Path(sys.executable).parent / "dvc")  # installed by requirements/dev.txt
    subprocess.run([dvc, "init", "--no-scm", "-q"], cwd=work, env=env, check=True, timeout=60)
    subprocess.run([dvc, "config", "core.analytics", "false"], cwd=work, env=env, check=True, timeout=60)
    res = subprocess.run([dvc, "repro"], cwd=work, env=env, capture_output=True, text=True, check=False,
                         timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    export = json.loads((work / "var" / "dvc" / "export" / "export.json").read_text())
    assert export["matches_manifest"] is True
    assert json.loads((work / "var" / "dvc" / "metrics.json").read_text())["metrics"]["auroc"] > 0.75

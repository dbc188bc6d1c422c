"""MLflow tracking: the only module that imports mlflow (lazily, so importing it is cheap).

Tracking URI: the ``tracking_uri`` argument, else ``MLFLOW_TRACKING_URI``, else ``sqlite:///var/mlflow.db`` with
artifacts under ``var/mlartifacts`` (both relative to the current directory).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

DEFAULT_TRACKING_URI = "sqlite:///var/mlflow.db"
DEFAULT_ARTIFACT_DIR = Path("var/mlartifacts")
EXPERIMENT_PREFIX = "clinpredict-"
PIP_REQUIREMENTS: tuple[str, ...] = ("onnx==1.23.2", "onnxruntime==1.32.0", "numpy==2.4.6")


def registered_model_name(use_case: str) -> str:
    return f"{EXPERIMENT_PREFIX}{use_case}"


def resolve_tracking_uri(tracking_uri: str | None = None) -> str:
    return tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def _setup(tracking_uri: str | None) -> Any:
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("DO_NOT_TRACK", "true")
    import mlflow

    uri = resolve_tracking_uri(tracking_uri)
    if uri.startswith("sqlite:///"):
        db = Path(uri.removeprefix("sqlite:///"))
        db.parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return mlflow


def _experiment(mlflow: Any, name: str, uri: str) -> str:
    exp = mlflow.get_experiment_by_name(name)
    if exp is not None:
        return str(exp.experiment_id)
    artifact_location = None
    if uri.startswith("sqlite:"):
        # Keep artifacts beside the store (var/mlartifacts for the default) instead of ./mlruns.
        db_dir = Path(uri.removeprefix("sqlite:///")).parent
        root = DEFAULT_ARTIFACT_DIR if uri == DEFAULT_TRACKING_URI else db_dir / "mlartifacts"
        artifact_location = (root.resolve() / name).as_uri()
    return str(mlflow.create_experiment(name, artifact_location=artifact_location))


def _flat_metrics(manifest: dict[str, Any]) -> dict[str, float]:
    out: dict[str, float] = {}
    test = manifest["metrics"]["test"]
    for k in ("auroc", "auprc", "brier", "log_loss", "calibration_slope", "calibration_intercept"):
        if test.get(k) is not None:
            out[f"test_{k}"] = float(test[k])
    for k in ("auroc", "auprc"):
        ci = test.get(f"{k}_ci") or [None, None]
        if ci[0] is not None:
            out[f"test_{k}_ci_low"], out[f"test_{k}_ci_high"] = float(ci[0]), float(ci[1])
    for k, v in (test.get("at_threshold") or {}).items():
        if isinstance(v, float):
            out[f"test_{k}"] = v
    for k in ("auroc", "auprc", "brier", "log_loss", "auroc_sd", "auprc_sd"):
        v = manifest["metrics"]["cv"].get(k)
        if v is not None:
            out[f"cv_{k}"] = float(v)
    for k in ("auroc", "auprc", "brier"):
        v = manifest["linear_baseline"]["test"].get(k)
        if v is not None:
            out[f"baseline_test_{k}"] = float(v)
    for family, res in (manifest.get("model_selection") or {}).get("families", {}).items():
        for k in ("auroc", "log_loss", "brier", "auprc"):
            if res["cv"].get(k) is not None:
                out[f"family_{family}_cv_{k}"] = float(res["cv"][k])
        if res["cv"].get("se"):
            out[f"family_{family}_cv_auroc_se"] = float(res["cv"]["se"]["auroc"])
    optimism = (manifest.get("small_data") or {}).get("optimism")
    if optimism:
        for k in ("apparent_auroc", "optimism_auroc", "corrected_auroc", "corrected_calibration_slope"):
            if optimism.get(k) is not None:
                out[f"optimism_{k}"] = float(optimism[k])
    out["onnx_parity_max_abs_diff"] = float(manifest["onnx_parity_max_abs_diff"])
    out["threshold"] = float(manifest["threshold"])
    return out


def log_training_run(manifest: dict[str, Any], run_dir: Path, onnx_model: Any,
                     tracking_uri: str | None = None) -> dict[str, Any]:
    """Log a finished run (params, metrics, dataset digest, plots, artifacts) and register the ONNX model as a new
    version of ``clinpredict-<use_case>``. Returns the manifest with ``mlflow_*`` keys set; writes it to
    ``run_dir/manifest.json`` and logs it too. On any failure the run and model version are deleted again."""
    mlflow = _setup(tracking_uri)
    uri = resolve_tracking_uri(tracking_uri)
    name = registered_model_name(manifest["use_case"])
    exp_id = _experiment(mlflow, name, uri)
    client = mlflow.MlflowClient()
    run = mlflow.start_run(experiment_id=exp_id, run_name=f"{manifest['model_type']}-seed{manifest['seed']}")
    run_id = run.info.run_id
    version: str | None = None
    try:
        params: dict[str, Any] = {
            "use_case": manifest["use_case"],
            "model_type": manifest["model_type"],
            "seed": manifest["seed"],
            "dataset_sha256": manifest["dataset_sha256"],
            "split_sha256": manifest["split_sha256"],
            "threshold_rule": manifest["threshold_rule"],
            "calibration": manifest["calibration"]["method"],
            "imbalance": manifest["imbalance"]["method"],
            "selection_metric": manifest["cv"]["selection_metric"],
            "cv_folds": manifest["cv"]["folds"],
        }
        for k, v in manifest["cv"]["selected_params"].items():
            params[f"hp_{k}"] = v
        selection = manifest.get("model_selection") or {}
        if selection:
            params["model_requested"] = selection.get("requested", manifest["model_type"])
            params["model_families"] = ",".join(selection["families"])
            params["model_choice_reason"] = selection["reason"]
        params["small_data"] = (manifest.get("small_data") or {}).get("active", False)
        params["refit_on_all_rows"] = (manifest.get("final_fit") or {}).get("refit_on_all_rows", False)
        signal = manifest.get("signal") or {}
        if signal:
            params["signal_verdict"] = signal["verdict"]
        mlflow.log_params({k: str(v)[:500] for k, v in params.items()})
        mlflow.log_metrics(_flat_metrics(manifest))
        mlflow.set_tags({
            "clinpredict.signal": (manifest.get("signal") or {}).get("verdict", "not assessed"),
            "clinpredict.use_case": manifest["use_case"],
            "clinpredict.dataset_sha256": manifest["dataset_sha256"],
            "clinpredict.dataset_file": manifest.get("dataset_file", ""),
        })
        mlflow.log_dict({"dataset_sha256": manifest["dataset_sha256"], "split_sha256": manifest["split_sha256"],
                         "data": manifest["data"]}, "dataset_digest.json")
        if selection:
            mlflow.log_dict({"model_selection": selection, "signal": signal,
                             "small_data": manifest.get("small_data"), "final_fit": manifest.get("final_fit")},
                            "model_selection.json")
        for rel in sorted(p for p in manifest["artifacts"] if p.startswith("plots/")):
            mlflow.log_artifact(str(Path(run_dir) / rel), artifact_path="plots")
        for rel in sorted(p for p in manifest["artifacts"] if not p.startswith("plots/")):
            mlflow.log_artifact(str(Path(run_dir) / rel), artifact_path="run")
        import mlflow.onnx

        info = mlflow.onnx.log_model(
            onnx_model,
            name="model",
            registered_model_name=name,
            pip_requirements=list(PIP_REQUIREMENTS),
            save_as_external_data=False,
        )
        version = None if info.registered_model_version is None else str(info.registered_model_version)
        manifest = {
            **manifest,
            "mlflow_run_id": run_id,
            "mlflow_model_name": name,
            "mlflow_model_version": None if version is None else int(version),
            "mlflow_tracking_uri": uri,
        }
        manifest_path = Path(run_dir) / "manifest.json"
        manifest_path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        mlflow.log_artifact(str(manifest_path), artifact_path="run")
        mlflow.end_run()
        return manifest
    except BaseException:
        mlflow.end_run(status="FAILED")
        if version is not None:
            try:
                client.delete_model_version(name, version)
            except Exception:  # noqa: S110 - best-effort cleanup; the original error is re-raised
                pass
        try:
            client.delete_run(run_id)
        except Exception:  # noqa: S110 - best-effort cleanup; the original error is re-raised
            pass
        raise


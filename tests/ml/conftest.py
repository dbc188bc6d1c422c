"""Shared fixtures: the Pima CSV and one small training run per session (fast config, MLflow in a temp sqlite)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ml.datasets import write_pima_csv
from ml.pipeline import train_run
from ml.schema import UseCaseSpec
from ml.training import TrainConfig

SPEC_DIR = Path(__file__).resolve().parents[2] / "ml" / "specs"


@pytest.fixture(scope="session")
def diabetes_spec() -> UseCaseSpec:
    return UseCaseSpec.load(SPEC_DIR / "diabetes.yaml")


@pytest.fixture(scope="session")
def fhir_spec() -> UseCaseSpec:
    return UseCaseSpec.load(SPEC_DIR / "t2d_fhir.yaml")


@pytest.fixture(scope="session")
def ml_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ml")


@pytest.fixture(scope="session")
def pima_csv(ml_tmp: Path) -> Path:
    return write_pima_csv(ml_tmp / "data" / "pima.csv")


@pytest.fixture(scope="session")
def fast_config() -> TrainConfig:
    return TrainConfig.fast()


@pytest.fixture(scope="session")
def tracking_uri(ml_tmp: Path) -> Iterator[str]:
    uri = f"sqlite:///{ml_tmp / 'mlflow' / 'mlflow.db'}"
    old = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = uri
    os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
    yield uri
    if old is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = old


@pytest.fixture(scope="session")
def xgb_run(diabetes_spec: UseCaseSpec, pima_csv: Path, ml_tmp: Path, fast_config: TrainConfig,
            tracking_uri: str) -> tuple[Path, dict[str, Any]]:
    """One tracked XGBoost run on Pima (fast config), shared by the tests that read its outputs."""
    out = ml_tmp / "runs" / "xgb"
    manifest = train_run(spec=diabetes_spec, data_path=pima_csv, out_dir=out, seed=7, model_type="xgboost",
                         config=fast_config, tracking=True, tracking_uri=tracking_uri)
    return out, manifest


@pytest.fixture(scope="session")
def mlp_run(diabetes_spec: UseCaseSpec, pima_csv: Path, ml_tmp: Path,
            fast_config: TrainConfig) -> tuple[Path, dict[str, Any]]:
    out = ml_tmp / "runs" / "mlp"
    manifest = train_run(spec=diabetes_spec, data_path=pima_csv, out_dir=out, seed=7, model_type="mlp",
                         config=fast_config, tracking=False)
    return out, manifest

"""The fitted object saved in ``model.joblib``: the sklearn pipeline plus an optional probability calibrator.

Kept small and dependency-light (numpy + sklearn + xgboost via the pipeline) because pickles refer to it by import
path: ``ml.model.ClinicalModel`` must stay importable for every registered model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

LOGIT_EPS = 1e-7


def logit(p: np.ndarray) -> np.ndarray:
    q = np.clip(np.asarray(p, dtype=np.float64), LOGIT_EPS, 1 - LOGIT_EPS)
    return np.log(q) - np.log1p(-q)


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(z, dtype=np.float64)))


@dataclass(frozen=True)
class Calibrator:
    """Maps the pipeline's positive-class probability to a calibrated one.

    ``sigmoid`` (Platt): p = sigmoid(a * logit(p_raw) + b). ``isotonic``: piecewise-linear interpolation through
    (x, y) knots, flat outside them. Fitted on out-of-fold predictions of the training part.
    """

    method: str
    a: float = 1.0
    b: float = 0.0
    x: tuple[float, ...] = ()
    y: tuple[float, ...] = ()

    def __call__(self, p_raw: np.ndarray) -> np.ndarray:
        p = np.asarray(p_raw, dtype=np.float64)
        if self.method == "sigmoid":
            return sigmoid(self.a * logit(p) + self.b)
        if self.method == "isotonic":
            return np.interp(np.clip(p, LOGIT_EPS, 1 - LOGIT_EPS), np.asarray(self.x), np.asarray(self.y))
        raise ValueError(f"unknown calibration method {self.method!r}")

    def to_dict(self) -> dict[str, Any]:
        if self.method == "sigmoid":
            return {"method": "sigmoid", "a": self.a, "b": self.b}
        return {"method": self.method, "n_knots": len(self.x)}


@dataclass
class ClinicalModel:
    """Whole fitted model. Input: float array (n, n_features) in canonical units, spec order, NaN = missing."""

    pipeline: Any
    model_type: str
    feature_names: tuple[str, ...]
    calibrator: Calibrator | None = None
    medians: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def _prepare(self, X: np.ndarray) -> np.ndarray:
        arr = np.asarray(X, dtype=np.float64)
        if arr.ndim == 1:
            arr = arr.reshape(1, -1)
        if arr.shape[1] != len(self.feature_names):
            raise ValueError(f"expected {len(self.feature_names)} features, got {arr.shape[1]}")
        # Round through float32 so this path sees exactly what the ONNX graph (float32 input) sees.
        return arr.astype(np.float32)

    def raw_proba(self, X: np.ndarray) -> np.ndarray:
        """Uncalibrated positive-class probability of the pipeline."""
        p = self.pipeline.predict_proba(self._prepare(X))[:, 1]
        return np.asarray(p, dtype=np.float64)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """(n, 2) calibrated probabilities, like sklearn's predict_proba."""
        p = self.raw_proba(X)
        if self.calibrator is not None:
            p = self.calibrator(p)
        return np.column_stack([1.0 - p, p])

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("_explain_booster", None)  # a per-process cache set by ml.explain
        return state

"""Per-prediction feature contributions on the log-odds scale, fast enough to call on every prediction.

This module works on the fitted model (``model.joblib``) and is the reference used in training. The web process
explains with ml/serving_explain.py instead (non-pickle files, no scikit-learn), which must agree with this within
1e-6 (checked by ``ml.export.explainer_parity`` at export time).

- XGBoost: exact TreeSHAP (``pred_contribs=True``). With Platt (sigmoid) calibration the calibrated log-odds are
  ``a * margin + b``, so contributions are multiplied by ``a`` and stay exact for the calibrated model. With
  isotonic calibration (not linear) the contributions explain the underlying booster's log-odds.
- Logistic regression: the same occlusion, which for a linear model is exactly coefficient x (standardised value -
  standardised reference), additive.
- MLP: occlusion against the training medians: contribution_j = logit p(x) - logit p(x with feature j set to its
  training median). A missing input is imputed with the median, so it contributes 0. Contributions do not sum
  exactly to the log-odds (interactions are not split).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ml.model import ClinicalModel, logit


def explanation_method(model: ClinicalModel) -> str:
    if model.model_type == "xgboost":
        if model.calibrator is not None and model.calibrator.method == "isotonic":
            return "TreeSHAP (exact, XGBoost pred_contribs) of the uncalibrated booster, log-odds scale"
        if model.calibrator is not None:
            return "TreeSHAP (exact, XGBoost pred_contribs) scaled by the Platt slope: calibrated log-odds scale"
        return "TreeSHAP (exact, XGBoost pred_contribs), log-odds scale"
    if model.model_type == "logistic":
        return ("exact linear contributions: coefficient x (standardised value - standardised training median; "
                "one-hot features: category vs the most frequent category), by occlusion, calibrated log-odds "
                "scale" + (" (isotonic calibration: not additive)" if model.calibrator is not None else ""))
    return "occlusion against training medians, calibrated log-odds scale"


def _booster(model: ClinicalModel) -> Any:
    final = model.pipeline.steps[-1][1] if hasattr(model.pipeline, "steps") else model.pipeline
    booster = getattr(model, "_explain_booster", None)
    if booster is None:
        booster = final.get_booster()
        booster.set_param({"nthread": 1})
        model._explain_booster = booster  # type: ignore[attr-defined]  # cached, not pickled state of interest
    return booster


def explain_with_base(model: ClinicalModel, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(contributions (n, n_features), base value (n,)) on the log-odds scale. For XGBoost (no isotonic
    calibration) ``contributions.sum(1) + base`` equals the model's log-odds exactly."""
    arr = np.asarray(X, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr.reshape(1, -1)
    arr32 = arr.astype(np.float32)
    if model.model_type == "xgboost":
        import xgboost as xgb

        dm = xgb.DMatrix(arr32, missing=np.nan)
        contribs = np.asarray(_booster(model).predict(dm, pred_contribs=True), dtype=np.float64)
        phi, base = contribs[:, :-1], contribs[:, -1]
        cal = model.calibrator
        if cal is not None and cal.method == "sigmoid":
            phi, base = phi * cal.a, base * cal.a + cal.b
        return phi, base
    # Occlusion: one batch of (n_features + 1) rows per input row.
    n, f = arr32.shape
    medians = np.asarray(model.medians, dtype=np.float32)
    batch = np.repeat(arr32, f + 1, axis=0).reshape(n, f + 1, f)
    for j in range(f):
        batch[:, j + 1, j] = medians[j]
    lo = logit(model.predict_proba(batch.reshape(-1, f))[:, 1]).reshape(n, f + 1)
    phi = lo[:, :1] - lo[:, 1:]
    base = lo[:, 0] - phi.sum(axis=1)
    return phi, base


def explain(model: Any, X: np.ndarray) -> np.ndarray:
    """Per-feature contributions (n, n_features), log-odds scale, for the object saved in ``model.joblib``."""
    return explain_with_base(model, X)[0]


def margin(model: ClinicalModel, X: np.ndarray) -> np.ndarray:
    """The log-odds the explanation decomposes (calibrated log-odds unless isotonic calibration is used)."""
    arr = np.asarray(X, dtype=np.float64)
    if model.model_type == "xgboost" and model.calibrator is not None and model.calibrator.method == "isotonic":
        return logit(model.raw_proba(arr))
    return logit(model.predict_proba(arr)[:, 1])


def global_importance(model: ClinicalModel, X: np.ndarray) -> dict[str, float]:
    """Mean |contribution| per feature over rows X."""
    phi = explain(model, X)
    return {name: float(v) for name, v in zip(model.feature_names, np.abs(phi).mean(axis=0), strict=True)}

"""Feature step: factories returning *unfitted* sklearn transformers, one per model family.

Trees get no preprocessing at all (XGBoost routes NaN natively, and a scaler in front of trees breaks ONNX parity:
ONNX scales in float32, sklearn in float64). The MLP and the logistic baseline get median imputation + scaling.
"""

from __future__ import annotations

from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler


def make_preprocessor(model_type: str) -> Pipeline | None:
    """Unfitted preprocessing for ``model_type`` ('xgboost' -> None, 'mlp'/'logistic' -> impute + scale)."""
    if model_type == "xgboost":
        return None
    if model_type in ("mlp", "logistic"):
        return Pipeline(
            [("impute", SimpleImputer(strategy="median", keep_empty_features=True)), ("scale", StandardScaler())]
        )
    raise ValueError(f"unknown model type {model_type!r}; use xgboost or mlp")

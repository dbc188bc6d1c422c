"""Feature step: factories returning *unfitted* sklearn transformers, one per model family.

Trees get no preprocessing at all (XGBoost routes NaN natively, nominal categories stay codes, and a scaler in front
of trees breaks ONNX parity: ONNX scales in float32, sklearn in float64). The MLP and the logistic family get median
imputation + standard scaling of the numeric and binary columns; nominal categorical columns (``FeatureSpec.one_hot``)
are imputed with their most frequent code and one-hot encoded (not scaled), so a linear model gives each category
its own coefficient instead of a slope over arbitrary codes.

Without nominal columns the preprocessing is the plain ``impute -> scale`` pipeline (the same steps as before
one-hot encoding existed, so such models are unchanged); with them it is one ``ColumnTransformer`` step ``encode``
whose output is the numeric columns (input order) followed by one block of 0/1 columns per nominal feature.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

# (column index, number of categories) for each nominal categorical feature; codes are 0..k-1.
OneHotColumns = Sequence[tuple[int, int]]


def one_hot_columns(spec: object) -> tuple[tuple[int, int], ...]:
    """The nominal categorical columns of a ``UseCaseSpec`` as (index in feature order, number of categories)."""
    features = getattr(spec, "features", ())
    return tuple((i, len(f.categories)) for i, f in enumerate(features) if f.one_hot)


def _numeric() -> Pipeline:
    return Pipeline(
        [("impute", SimpleImputer(strategy="median", keep_empty_features=True)), ("scale", StandardScaler())]
    )


def make_preprocessor(model_type: str, n_features: int | None = None,
                      one_hot: OneHotColumns = ()) -> Pipeline | None:
    """Unfitted preprocessing for ``model_type`` ('xgboost' -> None, 'mlp'/'logistic' -> impute + scale, with the
    ``one_hot`` columns one-hot encoded; ``n_features`` is needed then)."""
    if model_type == "xgboost":
        return None
    if model_type not in ("mlp", "logistic"):
        raise ValueError(f"unknown model type {model_type!r}; use logistic, xgboost or mlp")
    if not one_hot:
        return _numeric()
    if n_features is None:
        raise ValueError("n_features is needed to one-hot encode some columns")
    nominal = [i for i, _ in one_hot]
    numeric = [i for i in range(n_features) if i not in set(nominal)]
    transformers: list[tuple[str, object, list[int]]] = []
    if numeric:
        transformers.append(("num", _numeric(), numeric))
    for i, k in one_hot:
        transformers.append((
            f"cat{i}",
            Pipeline([
                ("impute", SimpleImputer(strategy="most_frequent", keep_empty_features=True)),
                ("onehot", OneHotEncoder(categories=[np.arange(k, dtype=np.float32)], handle_unknown="ignore",
                                         sparse_output=False, dtype=np.float32)),
            ]),
            [i],
        ))
    encode = ColumnTransformer(transformers, remainder="drop", sparse_threshold=0.0)
    return Pipeline([("encode", encode)])

"""Per-prediction explanations for serving, from files that are not pickles: no scikit-learn, joblib or pickle.

``ml train`` writes one explainer file beside ``model.onnx`` and describes it in ``manifest["explainer"]``
(``ml.export.explainer_artifact`` builds both from the fitted model):

- XGBoost (``kind`` ``xgboost_treeshap``): the booster in XGBoost's own UBJSON format (``model.xgb.ubj``). TreeSHAP
  runs in libxgboost through its C API (``ml.xgb_native``), because ``import xgboost`` imports scikit-learn.
- MLP (``kind`` ``mlp_occlusion``): imputer medians, scaler, layer weights and activations as JSON
  (``model.mlp.json``), evaluated with numpy in the same dtypes, in the same order, as scikit-learn evaluates the
  pipeline.
- Penalised logistic regression (``kind`` ``logistic_linear``): the same JSON layout with no hidden layer
  (``model.linear.json``: imputer, scaler, one-hot categories, coefficients and intercept); contributions by
  occlusion against the training reference, which for a linear model is exactly coefficient x (standardised value
  - standardised reference) (x the Platt slope when calibrated), so they add up to the log-odds.
- Nominal categorical features (one-hot encoded for the MLP and logistic families) are described by ``one_hot``
  (column, imputed code, category codes) and ``numeric_columns`` in the JSON; the occlusion reference of such a
  feature is its most frequent category.

The ONNX session is float32 throughout; occlusion through it differed from the fitted pipeline's by up to 3e-5 (Platt)
and 7e-4 (isotonic) in log-odds on Pima, against the 1e-6 required, so it is not used here.

The manifest block also holds the calibration constants (method, ``a``/``b`` or the isotonic knots) and the
training medians per feature (the occlusion reference). ``explain_with_base`` returns what
``ml.explain.explain_with_base`` returns for the fitted model (the reference, still used in training); the
difference is measured at export time and recorded as ``manifest["explainer"]["parity"]``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from ml.model import Calibrator, logit

__all__ = [
    "EXPLAINER_FORMAT_VERSION", "EXPLAINER_TOLERANCE", "LINEAR_WEIGHTS_FILE", "MLP_WEIGHTS_FILE",
    "XGB_BOOSTER_FILE", "Explainer",
    "ExplainerError", "MLPOcclusionExplainer", "MLPWeights", "XGBoostTreeShapExplainer", "calibrator_from_dict",
    "load_explainer",
]

EXPLAINER_FORMAT_VERSION = 1
EXPLAINER_TOLERANCE = 1e-6  # max |contribution - reference contribution| accepted at export time
XGB_BOOSTER_FILE = "model.xgb.ubj"
MLP_WEIGHTS_FILE = "model.mlp.json"
LINEAR_WEIGHTS_FILE = "model.linear.json"
KIND_FILES = {"xgboost_treeshap": XGB_BOOSTER_FILE, "mlp_occlusion": MLP_WEIGHTS_FILE,
              "logistic_linear": LINEAR_WEIGHTS_FILE}
WEIGHT_FORMATS = {"clinpredict-mlp": MLP_WEIGHTS_FILE, "clinpredict-linear": LINEAR_WEIGHTS_FILE}


class ExplainerError(ValueError):
    """The manifest's explainer block or the explainer file is unusable."""


class Explainer(Protocol):
    kind: str

    def explain_with_base(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...

    def explain(self, X: np.ndarray) -> np.ndarray: ...


def _rows32(X: np.ndarray, n_features: int) -> np.ndarray:
    arr = np.asarray(X, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr.reshape(1, -1)
    if arr.shape[1] != n_features:
        raise ValueError(f"expected {n_features} features, got {arr.shape[1]}")
    return arr.astype(np.float32)


def calibrator_from_dict(data: Mapping[str, Any] | None) -> Calibrator | None:
    """The calibrator described by ``manifest["explainer"]["calibration"]`` (None: uncalibrated)."""
    if not data:
        return None
    method = str(data.get("method"))
    if method == "sigmoid":
        return Calibrator("sigmoid", a=float(data["a"]), b=float(data["b"]))
    if method == "isotonic":
        return Calibrator("isotonic", x=tuple(float(v) for v in data["x"]), y=tuple(float(v) for v in data["y"]))
    raise ExplainerError(f"unknown calibration method {method!r}")


@dataclass(frozen=True)
class XGBoostTreeShapExplainer:
    """Exact TreeSHAP of the booster; with Platt calibration scaled by ``a`` (base ``a * base + b``), with isotonic
    calibration the contributions explain the uncalibrated booster (as ``ml.explain``)."""

    booster: Any  # ml.xgb_native.NativeBooster
    n_features: int
    calibrator: Calibrator | None
    kind: str = "xgboost_treeshap"

    def explain_with_base(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        contribs = np.asarray(self.booster.contributions(_rows32(X, self.n_features)), dtype=np.float64)
        phi, base = contribs[:, :-1], contribs[:, -1]
        cal = self.calibrator
        if cal is not None and cal.method == "sigmoid":
            phi, base = phi * cal.a, base * cal.a + cal.b
        return phi, base

    def explain(self, X: np.ndarray) -> np.ndarray:
        return self.explain_with_base(X)[0]


_ACTIVATIONS = ("identity", "logistic", "tanh", "relu")


@dataclass(frozen=True)
class MLPWeights:
    """The fitted impute -> scale -> MLPClassifier pipeline as plain arrays (``model.mlp.json``).

    ``forward`` repeats scikit-learn's arithmetic step by step: the imputer writes its (float32) medians into the
    float32 input, the scaler subtracts and divides by its mean and scale cast to float32, each layer is
    ``activation @ coef + intercept`` in the dtypes numpy picks for those arrays (float32 @ float64 -> float64),
    ``logistic`` is scipy's expit (see ``_activate``). Measured against the pipeline: the same probabilities to
    within 2.3e-16 (float64 weights, L-BFGS) and bit for bit (float32 weights, Adam) on the rows tried.

    With ``one_hot`` (column, imputed code, category codes) entries, ``impute``/``mean``/``scale`` cover the
    ``numeric_columns`` only and the network's input is those columns followed by one 0/1 block per entry (the
    ``ColumnTransformer`` order); a logistic regression is the same with one layer and an identity activation."""

    impute: np.ndarray
    mean: np.ndarray
    scale: np.ndarray
    coefs: tuple[np.ndarray, ...]
    intercepts: tuple[np.ndarray, ...]
    activation: str
    out_activation: str
    numeric_columns: tuple[int, ...] = ()
    one_hot: tuple[tuple[int, float, tuple[float, ...]], ...] = ()
    format: str = "clinpredict-mlp"

    def _scaled(self, x: np.ndarray) -> np.ndarray:
        missing = np.isnan(x)
        if missing.any():
            x[missing] = np.take(self.impute, np.nonzero(missing)[1])
        x -= self.mean.astype(x.dtype)
        x /= self.scale.astype(x.dtype)
        return x

    def encode(self, X32: np.ndarray) -> np.ndarray:
        """The float32 input of the first layer, as the fitted preprocessing computes it."""
        if not self.one_hot:
            return self._scaled(np.array(X32, dtype=np.float32, copy=True))
        src = np.asarray(X32, dtype=np.float32)
        blocks: list[np.ndarray] = []
        if self.numeric_columns:
            blocks.append(self._scaled(np.array(src[:, list(self.numeric_columns)], dtype=np.float32, copy=True)))
        for column, fill, categories in self.one_hot:
            codes = np.array(src[:, column], dtype=np.float32, copy=True)
            codes[np.isnan(codes)] = np.float32(fill)
            blocks.append((codes[:, None] == np.asarray(categories, dtype=np.float32)[None, :]).astype(np.float32))
        return np.hstack(blocks)

    def forward(self, X32: np.ndarray) -> np.ndarray:
        """Uncalibrated positive-class probability (n,) float64 for float32 rows (NaN = missing)."""
        a: np.ndarray = self.encode(X32)
        last = len(self.coefs) - 1
        for i, (coef, intercept) in enumerate(zip(self.coefs, self.intercepts, strict=True)):
            a = a @ coef
            a += intercept
            _activate(a, self.out_activation if i == last else self.activation)
        return np.asarray(a.reshape(a.shape[0], -1)[:, -1], dtype=np.float64)

    def to_json(self) -> bytes:
        def arr(v: np.ndarray) -> dict[str, Any]:
            return {"dtype": str(v.dtype), "shape": list(v.shape), "values": np.asarray(v).ravel().tolist()}

        final = "MLPClassifier" if self.format == "clinpredict-mlp" else "LogisticRegression"
        pre = ("SimpleImputer(median) -> StandardScaler" if not self.one_hot else
               "numeric columns: SimpleImputer(median) -> StandardScaler; one_hot columns: SimpleImputer("
               "most_frequent) -> OneHotEncoder; concatenated")
        doc: dict[str, Any] = {
            "format": self.format,
            "format_version": EXPLAINER_FORMAT_VERSION,
            "pipeline": f"{pre} -> {final}",
            "impute": arr(self.impute),
            "mean": arr(self.mean),
            "scale": arr(self.scale),
            "coefs": [arr(c) for c in self.coefs],
            "intercepts": [arr(b) for b in self.intercepts],
            "activation": self.activation,
            "out_activation": self.out_activation,
        }
        if self.one_hot:
            doc["numeric_columns"] = list(self.numeric_columns)
            doc["one_hot"] = [{"column": c, "impute": float(fill), "categories": [float(v) for v in cats]}
                              for c, fill, cats in self.one_hot]
        return (json.dumps(doc, sort_keys=True, allow_nan=False) + "\n").encode("utf-8")

    @classmethod
    def from_json(cls, raw: bytes) -> MLPWeights:
        try:
            doc = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ExplainerError(f"{MLP_WEIGHTS_FILE} is not valid JSON: {exc}") from exc

        def arr(d: Mapping[str, Any]) -> np.ndarray:
            dtype = np.dtype(str(d["dtype"]))
            if dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
                raise ExplainerError(f"{MLP_WEIGHTS_FILE}: unexpected dtype {dtype}")
            return np.asarray(d["values"], dtype=dtype).reshape([int(s) for s in d["shape"]])

        if doc.get("format") not in WEIGHT_FORMATS or doc.get("format_version") != EXPLAINER_FORMAT_VERSION:
            raise ExplainerError(f"{MLP_WEIGHTS_FILE}: unknown format {doc.get('format')!r} "
                                 f"v{doc.get('format_version')!r}")
        try:
            one_hot = tuple((int(e["column"]), float(e["impute"]), tuple(float(v) for v in e["categories"]))
                            for e in doc.get("one_hot") or ())
            numeric_columns = tuple(int(c) for c in doc.get("numeric_columns") or ())
        except (KeyError, TypeError, ValueError) as exc:
            raise ExplainerError(f"{WEIGHT_FORMATS[doc['format']]}: bad one_hot/numeric_columns: {exc}") from exc
        for key in ("activation", "out_activation"):
            if doc.get(key) not in _ACTIVATIONS:
                raise ExplainerError(f"{MLP_WEIGHTS_FILE}: unsupported {key} {doc.get(key)!r}")
        return cls(impute=arr(doc["impute"]), mean=arr(doc["mean"]), scale=arr(doc["scale"]),
                   coefs=tuple(arr(c) for c in doc["coefs"]), intercepts=tuple(arr(b) for b in doc["intercepts"]),
                   activation=doc["activation"], out_activation=doc["out_activation"],
                   numeric_columns=numeric_columns, one_hot=one_hot, format=str(doc["format"]))


def _activate(a: np.ndarray, name: str) -> None:
    if name == "relu":
        np.maximum(a, 0, out=a)
    elif name == "tanh":
        np.tanh(a, out=a)
    elif name == "logistic":
        # scikit-learn uses scipy.special.expit: 1 / (1 + exp(-x)) in the array's dtype, exp from the C library.
        # For float32 (an MLP fitted with Adam keeps float32 weights) numpy's own exp differs from the C library's
        # expf by 1 ulp for 16% of inputs, which logit turns into up to 8e-6 near p = 1, so the C library's expf is
        # called (equal to expit on 200,000 random inputs; float64 exp rounded to float32: 99.98%).
        if a.dtype == np.float32:
            a[...] = np.float32(1) / (np.float32(1) + _expf32(-a))
        else:
            a[...] = 1 / (1 + np.exp(-a))
    elif name != "identity":
        raise ExplainerError(f"unsupported activation {name!r}")


_EXPF: Any = None


def _expf32(x: np.ndarray) -> np.ndarray:
    """float32 exp computed by the C library's ``expf`` (what scipy's float32 expit calls)."""
    global _EXPF
    if _EXPF is None:
        import ctypes
        import ctypes.util

        try:
            fn = ctypes.CDLL(None).expf  # libm is loaded in every CPython process on Linux and macOS
        except (AttributeError, OSError, TypeError):
            fn = ctypes.CDLL(ctypes.util.find_library("m") or ctypes.util.find_library("c")).expf
        fn.restype, fn.argtypes = ctypes.c_float, [ctypes.c_float]
        _EXPF = fn
    flat = np.fromiter((_EXPF(v) for v in np.asarray(x, dtype=np.float32).ravel().tolist()), dtype=np.float32,
                       count=x.size)
    return flat.reshape(x.shape)


@dataclass(frozen=True)
class MLPOcclusionExplainer:
    """contribution_j = logit p(x) - logit p(x with feature j set to its training median), p calibrated; one batch
    of n_features + 1 rows per input row (as ``ml.explain``)."""

    weights: MLPWeights
    medians: np.ndarray
    calibrator: Calibrator | None
    kind: str = "mlp_occlusion"

    def _proba(self, X32: np.ndarray) -> np.ndarray:
        p = self.weights.forward(X32)
        return p if self.calibrator is None else self.calibrator(p)

    def explain_with_base(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        f = len(self.medians)
        arr32 = _rows32(X, f)
        n = arr32.shape[0]
        medians = np.asarray(self.medians, dtype=np.float32)
        batch = np.repeat(arr32, f + 1, axis=0).reshape(n, f + 1, f)
        for j in range(f):
            batch[:, j + 1, j] = medians[j]
        lo = logit(self._proba(batch.reshape(-1, f))).reshape(n, f + 1)
        phi = lo[:, :1] - lo[:, 1:]
        base = lo[:, 0] - phi.sum(axis=1)
        return phi, base

    def explain(self, X: np.ndarray) -> np.ndarray:
        return self.explain_with_base(X)[0]


def load_explainer(meta: Mapping[str, Any], raw: bytes, feature_order: Sequence[str]) -> Explainer:
    """The explainer described by ``manifest["explainer"]`` from the (already hash-verified) bytes of its file."""
    kind = meta.get("kind")
    if kind not in KIND_FILES:
        raise ExplainerError(f"unknown explainer kind {kind!r}")
    if int(meta.get("format_version", 0)) != EXPLAINER_FORMAT_VERSION:
        raise ExplainerError(f"explainer format version {meta.get('format_version')!r} is not supported")
    calibrator = calibrator_from_dict(meta.get("calibration"))
    if kind == "xgboost_treeshap":
        from ml.xgb_native import NativeBooster

        booster = NativeBooster(raw)
        if booster.num_features() != len(feature_order):
            raise ExplainerError(f"the booster has {booster.num_features()} features, the manifest "
                                 f"{len(feature_order)}")
        return XGBoostTreeShapExplainer(booster=booster, n_features=len(feature_order), calibrator=calibrator)
    medians_by_name = meta.get("medians") or {}
    missing = [name for name in feature_order if name not in medians_by_name]
    if missing:
        raise ExplainerError(f"explainer medians missing for {', '.join(missing)}")
    medians = np.asarray([float(medians_by_name[name]) for name in feature_order], dtype=np.float64)
    weights = MLPWeights.from_json(raw)
    expected = "clinpredict-linear" if kind == "logistic_linear" else "clinpredict-mlp"
    if weights.format != expected:
        raise ExplainerError(f"explainer kind {kind!r} needs a {expected} file, got {weights.format}")
    return MLPOcclusionExplainer(weights=weights, medians=medians, calibrator=calibrator, kind=str(kind))

"""Training step: configuration, leakage-free split, estimator factories, CV hyperparameter search, calibration
chosen on CV, threshold rule, and the logistic baseline."""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline
from threadpoolctl import threadpool_limits

from ml.evaluation import auprc, auroc, brier, choose_threshold
from ml.features import make_preprocessor
from ml.model import Calibrator, ClinicalModel, logit

MODEL_TYPES: tuple[str, ...] = ("xgboost", "mlp")
SELECTION_METRICS: tuple[str, ...] = ("auroc", "auprc", "brier", "log_loss")

DEFAULT_XGB_GRID: tuple[dict[str, Any], ...] = (
    {"max_depth": 2, "n_estimators": 200, "learning_rate": 0.05, "min_child_weight": 1},
    {"max_depth": 3, "n_estimators": 200, "learning_rate": 0.05, "min_child_weight": 1},
    {"max_depth": 4, "n_estimators": 200, "learning_rate": 0.05, "min_child_weight": 3},
    {"max_depth": 2, "n_estimators": 400, "learning_rate": 0.03, "min_child_weight": 5},
    {"max_depth": 3, "n_estimators": 400, "learning_rate": 0.03, "min_child_weight": 5},
    {"max_depth": 3, "n_estimators": 120, "learning_rate": 0.1, "min_child_weight": 3},
)
DEFAULT_MLP_GRID: tuple[dict[str, Any], ...] = (
    {"hidden_layer_sizes": [16], "alpha": 3.0},
    {"hidden_layer_sizes": [16], "alpha": 10.0},
    {"hidden_layer_sizes": [16], "alpha": 30.0},
    {"hidden_layer_sizes": [32, 16], "alpha": 10.0},
    {"hidden_layer_sizes": [32, 16], "alpha": 30.0},
)
# Smaller grids for large training parts (config.large_data_rows and up): subsets of the defaults above, so a large
# run costs about half the fits. On 80k synthetic rows x 30 features the six default XGBoost candidates reached CV
# AUROC 0.847-0.852; the dropped ones are the slowest (400 trees, 0.849 and 0.852) and the weakest (depth 2). The
# three MLP candidates kept reached 0.858 each there under Adam (the full MLP grid was not run at that size).
DEFAULT_XGB_GRID_LARGE: tuple[dict[str, Any], ...] = (
    {"max_depth": 3, "n_estimators": 200, "learning_rate": 0.05, "min_child_weight": 1},
    {"max_depth": 4, "n_estimators": 200, "learning_rate": 0.05, "min_child_weight": 3},
    {"max_depth": 3, "n_estimators": 120, "learning_rate": 0.1, "min_child_weight": 3},
)
DEFAULT_MLP_GRID_LARGE: tuple[dict[str, Any], ...] = (
    {"hidden_layer_sizes": [16], "alpha": 10.0},
    {"hidden_layer_sizes": [32, 16], "alpha": 10.0},
    {"hidden_layer_sizes": [32, 16], "alpha": 30.0},
)
XGB_FIXED: dict[str, Any] = {
    "subsample": 0.8,
    "colsample_bytree": 0.8,
    "reg_lambda": 1.0,
    "tree_method": "hist",
    "eval_metric": "logloss",
}


@dataclass(frozen=True)
class TrainConfig:
    """Everything that shapes a training run besides data, spec and seed (recorded in the manifest)."""

    cv_folds: int = 5
    test_fraction: float = 0.2
    selection_metric: str = "auroc"
    class_weight: str = "balanced"  # "balanced" (weights; scale_pos_weight for XGBoost) or "none"
    calibration_methods: tuple[str, ...] = ("none", "sigmoid")  # "isotonic" may be added
    calibration_min_gain: float = 0.0  # Brier improvement a calibrator must bring on CV to be used
    threshold_rule: str = "youden"
    bootstrap: int = 1000
    xgb_grid: tuple[dict[str, Any], ...] = DEFAULT_XGB_GRID
    mlp_grid: tuple[dict[str, Any], ...] = DEFAULT_MLP_GRID
    mlp_max_iter: int = 500  # L-BFGS iterations
    # MLP solver: full-batch L-BFGS below this many rows in the training part (it converges well on small data but
    # costs O(rows) per iteration for up to mlp_max_iter iterations), Adam on minibatches from it on.
    mlp_adam_from_rows: int = 5_000
    mlp_batch_size: int = 256
    mlp_max_epochs: int = 50  # Adam: passes over the data at most
    mlp_n_iter_no_change: int = 5  # Adam: stop after this many epochs without a training-loss gain of 1e-4
    # From this many rows in the training part on, the CV search uses the *_grid_large candidates.
    large_data_rows: int = 50_000
    xgb_grid_large: tuple[dict[str, Any], ...] = DEFAULT_XGB_GRID_LARGE
    mlp_grid_large: tuple[dict[str, Any], ...] = DEFAULT_MLP_GRID_LARGE
    n_jobs: int = 1  # threads for XGBoost and for the BLAS under the MLP
    min_events: int = 10
    max_invalid_fraction: float = 0.1

    def __post_init__(self) -> None:
        if self.cv_folds < 2:
            raise ValueError("cv_folds must be at least 2")
        if not 0.05 <= self.test_fraction <= 0.5:
            raise ValueError("test_fraction must be between 0.05 and 0.5")
        if self.selection_metric not in SELECTION_METRICS:
            raise ValueError(f"selection_metric must be one of {', '.join(SELECTION_METRICS)}")
        if self.class_weight not in ("balanced", "none"):
            raise ValueError("class_weight must be 'balanced' or 'none'")
        bad = set(self.calibration_methods) - {"none", "sigmoid", "isotonic"}
        if bad or not self.calibration_methods:
            raise ValueError("calibration_methods must be a non-empty subset of none, sigmoid, isotonic")
        for name in ("mlp_adam_from_rows", "large_data_rows"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be zero or positive")
        for name in ("mlp_max_iter", "mlp_batch_size", "mlp_max_epochs", "mlp_n_iter_no_change", "n_jobs"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        for name in ("xgb_grid", "mlp_grid", "xgb_grid_large", "mlp_grid_large"):
            if not getattr(self, name):
                raise ValueError(f"{name} needs at least one candidate")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["calibration_methods"] = list(self.calibration_methods)
        for key in ("xgb_grid", "mlp_grid", "xgb_grid_large", "mlp_grid_large"):
            d[key] = [dict(g) for g in getattr(self, key)]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown training config key(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        kwargs: dict[str, Any] = dict(d)
        for key in ("calibration_methods",):
            if key in kwargs:
                kwargs[key] = tuple(kwargs[key])
        for key in ("xgb_grid", "mlp_grid", "xgb_grid_large", "mlp_grid_large"):
            if key in kwargs:
                kwargs[key] = tuple(dict(g) for g in kwargs[key])
        return cls(**kwargs)

    @classmethod
    def load(cls, path: Path, section: str | None = "train") -> TrainConfig:
        import yaml

        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        if section is not None:
            raw = raw.get(section, {}) or {}
        raw = {k: v for k, v in raw.items() if k not in ("seed", "model", "model_type")}
        return cls.from_dict(raw)

    def mlp_solver_params(self, n_rows: int) -> dict[str, Any]:
        """MLPClassifier solver settings for a training part of ``n_rows`` rows (CV fits and the final fit alike)."""
        if n_rows < self.mlp_adam_from_rows:
            return {"solver": "lbfgs", "max_iter": self.mlp_max_iter}
        return {"solver": "adam", "batch_size": self.mlp_batch_size, "max_iter": self.mlp_max_epochs,
                "n_iter_no_change": self.mlp_n_iter_no_change}

    def candidates(self, model_type: str, n_rows: int) -> tuple[dict[str, Any], ...]:
        """The CV candidates for ``model_type`` on a training part of ``n_rows`` rows: the grid (the *_large one
        from ``large_data_rows`` on), MLP candidates with their solver settings (recorded with each candidate)."""
        large = n_rows >= self.large_data_rows
        if model_type == "xgboost":
            return tuple(dict(g) for g in (self.xgb_grid_large if large else self.xgb_grid))
        solver = self.mlp_solver_params(n_rows)
        return tuple({**solver, **g} for g in (self.mlp_grid_large if large else self.mlp_grid))

    @classmethod
    def fast(cls, **overrides: Any) -> TrainConfig:
        """A small configuration for tests and smoke runs (3 folds, 2 candidates, 200 bootstrap resamples)."""
        base: dict[str, Any] = {
            "cv_folds": 3,
            "bootstrap": 200,
            "xgb_grid": (
                {"max_depth": 2, "n_estimators": 60, "learning_rate": 0.1, "min_child_weight": 1},
                {"max_depth": 3, "n_estimators": 60, "learning_rate": 0.1, "min_child_weight": 3},
            ),
            "mlp_grid": ({"hidden_layer_sizes": [8], "alpha": 10.0}, {"hidden_layer_sizes": [16], "alpha": 30.0}),
            "mlp_max_iter": 300,
            "xgb_grid_large": (
                {"max_depth": 3, "n_estimators": 60, "learning_rate": 0.1, "min_child_weight": 3},
            ),
            "mlp_grid_large": ({"hidden_layer_sizes": [16], "alpha": 30.0},),
        }
        base.update(overrides)
        return cls.from_dict(base)


# --------------------------------------------------------------------------------------------------------------------
# Split
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Split:
    train: np.ndarray  # row indices
    test: np.ndarray
    sha256: str
    method: str


def split_sha256(groups: np.ndarray, train: np.ndarray, test: np.ndarray) -> str:
    """sha256 of the sorted patient ids on each side: same split <=> same hash."""
    payload = {
        "train": sorted({str(g) for g in groups[train]}),
        "test": sorted({str(g) for g in groups[test]}),
    }
    return hashlib.sha256(json.dumps(payload, separators=(",", ":")).encode()).hexdigest()


def _kfold(y: np.ndarray, groups: np.ndarray, k: int, seed: int) -> tuple[Any, str]:
    """StratifiedGroupKFold; plain StratifiedKFold when every patient has one row (same guarantee, and fast:
    StratifiedGroupKFold loops over groups in Python and takes ~10 s at 100k patients)."""
    if np.unique(groups).size == len(groups):
        return (StratifiedKFold(n_splits=k, shuffle=True, random_state=seed),
                f"StratifiedKFold(n_splits={k}, shuffle=True, random_state={seed}) (one row per patient)")
    return (StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed),
            f"StratifiedGroupKFold(n_splits={k}, shuffle=True, random_state={seed}) grouped by patient")


def _split(splitter: Any, y: np.ndarray, groups: np.ndarray) -> Any:
    if isinstance(splitter, StratifiedGroupKFold):
        return splitter.split(np.zeros(len(y)), y, groups)
    return splitter.split(np.zeros(len(y)), y)


def train_test_split_grouped(y: np.ndarray, groups: np.ndarray, *, seed: int, test_fraction: float = 0.2) -> Split:
    """Stratified split grouped by patient id (a patient's rows never straddle the split), fixed seed."""
    n_splits = max(2, round(1 / test_fraction))
    splitter, method = _kfold(y, groups, n_splits, seed)
    train, test = next(_split(splitter, y, groups))
    train, test = np.sort(train), np.sort(test)
    return Split(
        train=train,
        test=test,
        sha256=split_sha256(groups, train, test),
        method=f"{method}, first fold = test",
    )


def cv_folds(y: np.ndarray, groups: np.ndarray, *, k: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    splitter, _ = _kfold(y, groups, k, seed + 1)
    return [(tr, va) for tr, va in _split(splitter, y, groups)]


# --------------------------------------------------------------------------------------------------------------------
# Estimators
# --------------------------------------------------------------------------------------------------------------------


def class_weights(y: np.ndarray, mode: str) -> tuple[np.ndarray, float]:
    """(sample weights, positive-class weight). ``balanced``: positives weighted n_neg / n_pos."""
    n_pos = int(np.sum(y))
    n_neg = len(y) - n_pos
    w_pos = (n_neg / n_pos) if (mode == "balanced" and n_pos) else 1.0
    return np.where(y == 1, w_pos, 1.0), float(w_pos)


def make_estimator(model_type: str, params: Mapping[str, Any], *, seed: int, pos_weight: float = 1.0,
                   n_jobs: int = 1, mlp_max_iter: int = 500) -> Pipeline:
    """Unfitted pipeline for ``model_type`` with hyperparameters ``params`` (an MLP candidate may carry its solver
    settings; L-BFGS with ``mlp_max_iter`` iterations otherwise).

    An MLP ``alpha`` keeps scikit-learn's meaning for each solver: the L2 penalty is divided by the (weighted) rows of
    each gradient step, i.e. by the whole data under L-BFGS and by one minibatch under Adam, so the same alpha
    penalises n_rows / batch_size times harder under Adam. That is kept on purpose: at 80k rows, alpha 10 under
    Adam stopped after ~20 epochs with a fold AUROC of 0.862, while the L-BFGS-equivalent alpha (scaled by
    batch_size / n_rows) ran all 50 epochs to 0.841-0.858 and L-BFGS itself reached 0.822 in 85 s per fit."""
    if model_type == "xgboost":
        from xgboost import XGBClassifier

        clf = XGBClassifier(
            **XGB_FIXED, **dict(params), scale_pos_weight=pos_weight, random_state=seed, n_jobs=n_jobs
        )
        return Pipeline([("xgb", clf)])
    if model_type == "mlp":
        pre = make_preprocessor("mlp")
        assert pre is not None  # noqa: S101 - factory contract
        p: dict[str, Any] = {"solver": "lbfgs", "max_iter": mlp_max_iter, **params}
        p["hidden_layer_sizes"] = tuple(p.get("hidden_layer_sizes", (16,)))
        mlp = MLPClassifier(random_state=seed, **p)
        return Pipeline([*pre.steps, ("mlp", mlp)])
    if model_type == "logistic":
        pre = make_preprocessor("logistic")
        assert pre is not None  # noqa: S101 - factory contract
        return Pipeline([*pre.steps, ("logreg", LogisticRegression(C=1.0, max_iter=1000))])
    raise ValueError(f"unknown model type {model_type!r}; use one of {', '.join(MODEL_TYPES)}")


def fit_estimator(est: Pipeline, X: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None, *,
                  n_jobs: int = 1) -> Pipeline:
    """Fit ``est`` on float32 ``X``; the BLAS is held to ``n_jobs`` threads (XGBoost has its own ``n_jobs``): on a
    shared machine a multi-threaded BLAS under the MLP's small minibatch products can be slower than one thread."""
    X32 = np.asarray(X, dtype=np.float32)
    last = est.steps[-1][0]
    kwargs: dict[str, Any] = {}
    if sample_weight is not None and last in ("mlp", "logreg"):
        kwargs[f"{last}__sample_weight"] = sample_weight
    with warnings.catch_warnings(), threadpool_limits(limits=n_jobs, user_api="blas"):
        warnings.simplefilter("ignore", category=ConvergenceWarning)
        est.fit(X32, y, **kwargs)
    return est


def _metric_values(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import log_loss

    return {
        "auroc": auroc(y, p),
        "auprc": auprc(y, p),
        "brier": brier(y, p),
        "log_loss": float(log_loss(y, np.clip(p, 1e-7, 1 - 1e-7), labels=[0, 1])),
    }


@dataclass
class CVResult:
    params: dict[str, Any]
    oof: np.ndarray  # out-of-fold raw probabilities for the training rows
    fold_metrics: list[dict[str, float]]
    summary: dict[str, float] = field(default_factory=dict)

    def score(self, metric: str) -> float:
        v = self.summary[metric]
        return -v if metric in ("brier", "log_loss") else v


def cross_validate(model_type: str, params: Mapping[str, Any], X: np.ndarray, y: np.ndarray,
                   folds: list[tuple[np.ndarray, np.ndarray]], *, seed: int, config: TrainConfig) -> CVResult:
    oof = np.full(len(y), np.nan)
    per_fold: list[dict[str, float]] = []
    for tr, va in folds:
        sw, w_pos = class_weights(y[tr], config.class_weight)
        pos_weight = w_pos if model_type == "xgboost" else 1.0
        est = make_estimator(model_type, params, seed=seed, pos_weight=pos_weight, n_jobs=config.n_jobs,
                             mlp_max_iter=config.mlp_max_iter)
        fit_estimator(est, X[tr], y[tr], None if model_type == "xgboost" else sw, n_jobs=config.n_jobs)
        oof[va] = est.predict_proba(np.asarray(X[va], dtype=np.float32))[:, 1]
        per_fold.append(_metric_values(y[va], oof[va]))
    summary: dict[str, float] = {}
    for m in SELECTION_METRICS:
        vals = np.array([f[m] for f in per_fold])
        summary[m] = float(np.nanmean(vals))
        summary[f"{m}_sd"] = float(np.nanstd(vals))
    return CVResult(params=dict(params), oof=oof, fold_metrics=per_fold, summary=summary)


def fit_calibrator(method: str, p_raw: np.ndarray, y: np.ndarray) -> Calibrator | None:
    if method == "none":
        return None
    if method == "sigmoid":
        lr = LogisticRegression(C=1e6, max_iter=1000)
        lr.fit(logit(p_raw).reshape(-1, 1), y)
        return Calibrator("sigmoid", a=float(lr.coef_[0, 0]), b=float(lr.intercept_[0]))
    if method == "isotonic":
        iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0)
        iso.fit(np.asarray(p_raw, dtype=np.float64), y)
        return Calibrator(
            "isotonic",
            x=tuple(float(v) for v in iso.X_thresholds_),
            y=tuple(float(v) for v in iso.y_thresholds_),
        )
    raise ValueError(f"unknown calibration method {method!r}")


def choose_calibration(p_oof: np.ndarray, y: np.ndarray, folds: list[tuple[np.ndarray, np.ndarray]],
                       config: TrainConfig) -> tuple[str, dict[str, dict[str, float]]]:
    """Pick the calibration method by Brier score of calibrators fitted and scored across CV folds of the
    out-of-fold predictions ("none" wins ties and anything below ``calibration_min_gain``)."""
    scores: dict[str, dict[str, float]] = {}
    for method in config.calibration_methods:
        cal_p = np.full(len(y), np.nan)
        for tr, va in folds:
            cal = fit_calibrator(method, p_oof[tr], y[tr])
            cal_p[va] = p_oof[va] if cal is None else cal(p_oof[va])
        scores[method] = _metric_values(y, cal_p)
    best = "none" if "none" in scores else min(scores, key=lambda m: scores[m]["brier"])
    for method, s in scores.items():
        base = scores[best]["brier"]
        if s["brier"] < base - (config.calibration_min_gain if best == "none" else 0.0):
            best = method
    return best, scores


@dataclass
class TrainedModel:
    model: ClinicalModel
    selected: CVResult
    candidates: list[CVResult]
    calibration: dict[str, Any]
    threshold: float
    oof_calibrated: np.ndarray
    imbalance: dict[str, Any]


def train_model(model_type: str, X: np.ndarray, y: np.ndarray, groups: np.ndarray, feature_names: tuple[str, ...],
                *, seed: int, config: TrainConfig,
                progress: Callable[[str], None] | None = None) -> TrainedModel:
    """CV search on the training part only, calibration chosen on CV, final fit on the whole training part."""
    say = progress or (lambda _msg: None)
    if model_type not in MODEL_TYPES:
        raise ValueError(f"unknown model type {model_type!r}; use one of {', '.join(MODEL_TYPES)}")
    grid = config.candidates(model_type, len(y))
    if len(y) >= config.large_data_rows:
        say(f"{len(y)} training rows >= large_data_rows {config.large_data_rows}: {len(grid)} candidates")
    folds = cv_folds(y, groups, k=config.cv_folds, seed=seed)
    candidates: list[CVResult] = []
    for i, params in enumerate(grid, start=1):
        res = cross_validate(model_type, params, X, y, folds, seed=seed, config=config)
        candidates.append(res)
        say(
            f"CV candidate {i}/{len(grid)} {json.dumps(params, sort_keys=True)}: "
            f"AUROC {res.summary['auroc']:.3f} AUPRC {res.summary['auprc']:.3f}"
        )
    best = max(candidates, key=lambda c: c.score(config.selection_metric))  # first of ties: stable
    method, cal_scores = choose_calibration(best.oof, y, folds, config)
    calibrator = fit_calibrator(method, best.oof, y)
    oof_cal = best.oof if calibrator is None else calibrator(best.oof)
    threshold = choose_threshold(y, oof_cal, config.threshold_rule)
    say(f"selected {json.dumps(best.params, sort_keys=True)}; calibration {method}; threshold {threshold:.4f}")

    sw, w_pos = class_weights(y, config.class_weight)
    est = make_estimator(model_type, best.params, seed=seed,
                         pos_weight=w_pos if model_type == "xgboost" else 1.0,
                         n_jobs=config.n_jobs, mlp_max_iter=config.mlp_max_iter)
    fit_estimator(est, X, y, None if model_type == "xgboost" else sw, n_jobs=config.n_jobs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)  # all-NaN column -> NaN -> 0 below
        medians = np.nan_to_num(np.nanmedian(X, axis=0), nan=0.0)
    applied = "separate step after the pipeline (in model.joblib and in the ONNX graph, computed in float64)"
    final_calibrator = calibrator
    if model_type == "mlp" and calibrator is not None and calibrator.method == "sigmoid":
        # logit(p_mlp) is the output layer's pre-activation z, so Platt scaling is the same network with
        # z' = a z + b. Folding it into the last layer avoids taking logits of float32 probabilities near 0 or 1
        # in ONNX, which is what breaks joblib/ONNX parity for a separate calibration step.
        mlp = est.steps[-1][1]
        mlp.coefs_[-1] = mlp.coefs_[-1] * calibrator.a
        mlp.intercepts_[-1] = mlp.intercepts_[-1] * calibrator.a + calibrator.b
        final_calibrator = None
        applied = "folded into the MLP output layer (weights x a, bias x a + b)"
    model = ClinicalModel(pipeline=est, model_type=model_type, feature_names=feature_names,
                          calibrator=final_calibrator, medians=medians.astype(np.float64))
    imbalance = {
        "method": (
            "none" if config.class_weight == "none"
            else ("scale_pos_weight" if model_type == "xgboost" else "sample_weight") + " = n_negative / n_positive"
        ),
        "positive_weight": w_pos,
        "n_positive": int(np.sum(y)),
        "n_negative": int(len(y) - np.sum(y)),
        "resampling": "none",
        "note": "weights shift predicted probabilities upwards; the calibration step (chosen on CV) corrects them",
    }
    calibration = {
        "method": method,
        "candidates": cal_scores,
        "chosen_by": "lowest Brier score of calibrators fitted and scored across the CV folds of the "
                     "out-of-fold predictions",
        "fitted_on": "out-of-fold predictions of the training part",
        "params": None if calibrator is None else calibrator.to_dict(),
        "applied": None if calibrator is None else applied,
    }
    return TrainedModel(model=model, selected=best, candidates=candidates, calibration=calibration,
                        threshold=threshold, oof_calibrated=oof_cal, imbalance=imbalance)


def train_baseline(X: np.ndarray, y: np.ndarray, groups: np.ndarray, *, seed: int,
                   config: TrainConfig) -> tuple[Pipeline, dict[str, float]]:
    """Median imputation + scaling + logistic regression (C=1, unweighted): the linear reference."""
    folds = cv_folds(y, groups, k=config.cv_folds, seed=seed)
    res = cross_validate("logistic", {}, X, y, folds, seed=seed,
                         config=TrainConfig.from_dict({**config.to_dict(), "class_weight": "none"}))
    est = make_estimator("logistic", {}, seed=seed)
    fit_estimator(est, X, y, None, n_jobs=config.n_jobs)
    return est, res.summary

"""Training step: configuration, leakage-free split, estimator factories, CV hyperparameter search per model family,
the choice between families (one-standard-error rule), calibration chosen on CV, threshold rule, small-data
validation (repeated CV, bootstrap optimism) and the logistic baseline."""

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

from ml.evaluation import auprc, auroc, brier, calibration_slope_intercept, choose_threshold
from ml.features import OneHotColumns, make_preprocessor
from ml.model import Calibrator, ClinicalModel, logit

# Model families, simplest first: the order the one-standard-error rule prefers.
MODEL_TYPES: tuple[str, ...] = ("logistic", "xgboost", "mlp")
MODEL_CHOICES: tuple[str, ...] = ("auto", *MODEL_TYPES)
SELECTION_METRICS: tuple[str, ...] = ("auroc", "auprc", "brier", "log_loss")
GRID_KEYS: tuple[str, ...] = ("logistic_grid", "xgb_grid", "mlp_grid", "logistic_grid_large", "xgb_grid_large",
                              "mlp_grid_large")

# Penalised logistic regression on standardised inputs: C is the inverse penalty strength, l1_ratio the share of
# L1 in the penalty (0 = ridge/L2, 1 = lasso/L1, between = elastic net). L2 fits with L-BFGS, the others with SAGA.
DEFAULT_LOGISTIC_GRID: tuple[dict[str, Any], ...] = (
    {"C": 0.01, "l1_ratio": 0.0},
    {"C": 0.1, "l1_ratio": 0.0},
    {"C": 1.0, "l1_ratio": 0.0},
    {"C": 0.1, "l1_ratio": 1.0},
    {"C": 1.0, "l1_ratio": 1.0},
    {"C": 0.1, "l1_ratio": 0.5},
)
DEFAULT_LOGISTIC_GRID_LARGE: tuple[dict[str, Any], ...] = (
    {"C": 0.1, "l1_ratio": 0.0},
    {"C": 1.0, "l1_ratio": 0.0},
    {"C": 0.1, "l1_ratio": 0.5},
)

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
    # Family choice under --model auto: the simplest family (MODEL_TYPES order) whose mean CV selection metric is
    # within one standard error (per-fold sd / sqrt(folds)) of the best family's.
    family_rule: str = "one_se"  # or "best": the best mean, no preference for simpler families
    # Small data: below small_data_rows rows or small_data_events events (whole dataset) the CV is repeated
    # small_data_cv_repeats times (new fold assignment each time), the optimism of the final model's apparent AUROC
    # is estimated with optimism_bootstrap resamples (Harrell), and the chosen model is refitted on all rows.
    small_data_rows: int = 2_000
    small_data_events: int = 200
    small_data_cv_repeats: int = 5
    optimism_bootstrap: int = 200
    # After validation the chosen model is refitted on every row given (training and test parts), at every size; the
    # held-out test estimate stays in the manifest as evidence for the procedure (manifest["final_fit"]).
    refit_on_all_rows: bool = True
    # No-signal verdict: CV AUROC 95% CI includes 0.5, or a calibration slope (CV out-of-fold, or test) below this.
    signal_min_calibration_slope: float = 0.2
    # Candidates and families are compared by mean CV log loss, a proper scoring rule: it rewards discrimination and
    # calibration together, so among candidates of near-equal AUROC it prefers the one whose risks are neither over-
    # nor under-shrunk (AUROC cannot tell a penalty that squeezes every risk towards the mean from a right one).
    selection_metric: str = "log_loss"
    # No class weighting by default: weights (or resampling) for imbalance change no ranking worth having but move
    # every predicted risk (van den Goorbergh et al., JAMIA 2022, "The harm of class imbalance corrections for risk
    # prediction models"); see ml/README.md "Class weights and the selection metric" for the CV evidence here.
    class_weight: str = "none"  # or "balanced" (positives weighted n_neg / n_pos; scale_pos_weight for XGBoost)
    calibration_methods: tuple[str, ...] = ("none", "sigmoid")  # "isotonic" may be added
    calibration_min_gain: float = 0.0  # Brier improvement a calibrator must bring on CV to be used
    threshold_rule: str = "youden"
    bootstrap: int = 1000
    logistic_grid: tuple[dict[str, Any], ...] = DEFAULT_LOGISTIC_GRID
    xgb_grid: tuple[dict[str, Any], ...] = DEFAULT_XGB_GRID
    mlp_grid: tuple[dict[str, Any], ...] = DEFAULT_MLP_GRID
    logistic_max_iter: int = 2000
    mlp_max_iter: int = 500  # L-BFGS iterations
    # MLP solver: full-batch L-BFGS below this many rows in the training part (it converges well on small data but
    # costs O(rows) per iteration for up to mlp_max_iter iterations), Adam on minibatches from it on.
    mlp_adam_from_rows: int = 5_000
    mlp_batch_size: int = 256
    mlp_max_epochs: int = 50  # Adam: passes over the data at most
    mlp_n_iter_no_change: int = 5  # Adam: stop after this many epochs without a training-loss gain of 1e-4
    # From this many rows in the training part on, the CV search uses the *_grid_large candidates.
    large_data_rows: int = 50_000
    logistic_grid_large: tuple[dict[str, Any], ...] = DEFAULT_LOGISTIC_GRID_LARGE
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
        if self.family_rule not in ("one_se", "best"):
            raise ValueError("family_rule must be 'one_se' or 'best'")
        for name in ("mlp_adam_from_rows", "large_data_rows", "small_data_rows", "small_data_events",
                     "optimism_bootstrap"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be zero or positive")
        for name in ("mlp_max_iter", "mlp_batch_size", "mlp_max_epochs", "mlp_n_iter_no_change", "n_jobs",
                     "small_data_cv_repeats", "logistic_max_iter"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        for name in GRID_KEYS:
            if not getattr(self, name):
                raise ValueError(f"{name} needs at least one candidate")
        for g in (*self.logistic_grid, *self.logistic_grid_large):
            if set(g) - {"C", "l1_ratio"} or not 0.0 <= float(g.get("l1_ratio", 0.0)) <= 1.0 \
                    or float(g.get("C", 1.0)) <= 0:
                raise ValueError(f"logistic candidate {dict(g)} must have C > 0 and l1_ratio in [0, 1] only")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["calibration_methods"] = list(self.calibration_methods)
        for key in GRID_KEYS:
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
        for key in GRID_KEYS:
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
        if model_type == "logistic":
            return tuple(dict(g) for g in (self.logistic_grid_large if large else self.logistic_grid))
        if model_type == "xgboost":
            return tuple(dict(g) for g in (self.xgb_grid_large if large else self.xgb_grid))
        solver = self.mlp_solver_params(n_rows)
        return tuple({**solver, **g} for g in (self.mlp_grid_large if large else self.mlp_grid))

    def is_small(self, n_rows: int, n_events: int) -> bool:
        """Small-data mode for a dataset of ``n_rows`` rows with ``n_events`` events (see the fields above)."""
        return n_rows < self.small_data_rows or n_events < self.small_data_events

    @classmethod
    def fast(cls, **overrides: Any) -> TrainConfig:
        """A small configuration for tests and smoke runs (3 folds, 2 candidates, 200 bootstrap resamples; in
        small-data mode no CV repetition and 20 optimism resamples)."""
        base: dict[str, Any] = {
            "cv_folds": 3,
            "bootstrap": 200,
            "small_data_cv_repeats": 1,
            "optimism_bootstrap": 20,
            "logistic_grid": ({"C": 0.1, "l1_ratio": 0.0}, {"C": 1.0, "l1_ratio": 1.0}),
            "logistic_grid_large": ({"C": 1.0, "l1_ratio": 0.0},),
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


def cv_folds(y: np.ndarray, groups: np.ndarray, *, k: int, seed: int,
             repeats: int = 1) -> list[tuple[np.ndarray, np.ndarray]]:
    """k folds (``repeats`` times, each with a new assignment: random_state seed + 1, seed + 2, ...), as one list:
    folds ``r * k`` to ``r * k + k - 1`` are repetition r, so the first k are the unrepeated folds."""
    out: list[tuple[np.ndarray, np.ndarray]] = []
    for r in range(repeats):
        splitter, _ = _kfold(y, groups, k, seed + 1 + r)
        out.extend((tr, va) for tr, va in _split(splitter, y, groups))
    return out


def cv_method(y: np.ndarray, groups: np.ndarray, *, k: int, seed: int, repeats: int = 1) -> str:
    """How ``cv_folds`` splits, in words (for the manifest)."""
    _, first = _kfold(y, groups, k, seed + 1)
    if repeats == 1:
        return first
    return (f"repeated stratified {k}-fold CV, {repeats} repetitions ({k * repeats} fits per candidate), "
            f"random_state {seed + 1}..{seed + repeats}: {first.split('(')[0]} each")


# --------------------------------------------------------------------------------------------------------------------
# Estimators
# --------------------------------------------------------------------------------------------------------------------


def class_weights(y: np.ndarray, mode: str) -> tuple[np.ndarray, float]:
    """(sample weights, positive-class weight). ``balanced``: positives weighted n_neg / n_pos."""
    n_pos = int(np.sum(y))
    n_neg = len(y) - n_pos
    w_pos = (n_neg / n_pos) if (mode == "balanced" and n_pos) else 1.0
    return np.where(y == 1, w_pos, 1.0), float(w_pos)


def logistic_penalty(params: Mapping[str, Any]) -> str:
    """'l2', 'l1' or 'elasticnet' for a logistic candidate (by its l1_ratio)."""
    r = float(params.get("l1_ratio", 0.0))
    return "l2" if r == 0.0 else ("l1" if r == 1.0 else "elasticnet")


def make_estimator(model_type: str, params: Mapping[str, Any], *, seed: int, pos_weight: float = 1.0,
                   n_jobs: int = 1, mlp_max_iter: int = 500, n_features: int | None = None,
                   one_hot: OneHotColumns = (), logistic_max_iter: int = 2000) -> Pipeline:
    """Unfitted pipeline for ``model_type`` with hyperparameters ``params`` (an MLP candidate may carry its solver
    settings; L-BFGS with ``mlp_max_iter`` iterations otherwise). ``one_hot`` (column index, number of categories)
    columns are one-hot encoded for the logistic and MLP families (``ml.features``), kept as codes for XGBoost.

    An MLP ``alpha`` keeps scikit-learn's meaning for each solver: the L2 penalty is divided by the (weighted) rows of
    each gradient step, i.e. by the whole data under L-BFGS and by one minibatch under Adam, so the same alpha
    penalises n_rows / batch_size times harder under Adam. That is kept on purpose: at 80k rows, alpha 10 under
    Adam stopped after ~20 epochs with a fold AUROC of 0.862, while the L-BFGS-equivalent alpha (scaled by
    batch_size / n_rows) ran all 50 epochs to 0.841-0.858 and L-BFGS itself reached 0.822 in 85 s per fit.

    Logistic: empty ``params`` is the unpenalised-looking baseline (C=1, L2, L-BFGS, 1,000 iterations); a family
    candidate names ``C`` and ``l1_ratio`` (L2 by L-BFGS, L1/elastic net by SAGA with ``random_state=seed``)."""
    if model_type == "xgboost":
        from xgboost import XGBClassifier

        clf = XGBClassifier(
            **XGB_FIXED, **dict(params), scale_pos_weight=pos_weight, random_state=seed, n_jobs=n_jobs
        )
        return Pipeline([("xgb", clf)])
    pre = make_preprocessor(model_type, n_features, one_hot)
    assert pre is not None  # noqa: S101 - factory contract
    if model_type == "mlp":
        p: dict[str, Any] = {"solver": "lbfgs", "max_iter": mlp_max_iter, **params}
        p["hidden_layer_sizes"] = tuple(p.get("hidden_layer_sizes", (16,)))
        mlp = MLPClassifier(random_state=seed, **p)
        return Pipeline([*pre.steps, ("mlp", mlp)])
    if model_type == "logistic":
        if not params:
            return Pipeline([*pre.steps, ("logreg", LogisticRegression(C=1.0, max_iter=1000))])
        l1_ratio = float(params.get("l1_ratio", 0.0))
        solver = "lbfgs" if l1_ratio == 0.0 else "saga"
        logreg = LogisticRegression(C=float(params.get("C", 1.0)), l1_ratio=l1_ratio, solver=solver,
                                    max_iter=logistic_max_iter, random_state=seed)
        return Pipeline([*pre.steps, ("logreg", logreg)])
    raise ValueError(f"unknown model type {model_type!r}; use one of {', '.join(MODEL_TYPES)}")


def _estimator(model_type: str, params: Mapping[str, Any], *, seed: int, pos_weight: float, config: TrainConfig,
               n_features: int, one_hot: OneHotColumns) -> Pipeline:
    return make_estimator(model_type, params, seed=seed, pos_weight=pos_weight if model_type == "xgboost" else 1.0,
                          n_jobs=config.n_jobs, mlp_max_iter=config.mlp_max_iter, n_features=n_features,
                          one_hot=one_hot, logistic_max_iter=config.logistic_max_iter)


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
    oof: np.ndarray  # out-of-fold raw probabilities for the training rows (first repetition)
    fold_metrics: list[dict[str, float]]  # every fold of every repetition
    summary: dict[str, float] = field(default_factory=dict)

    def score(self, metric: str) -> float:
        v = self.summary[metric]
        return -v if metric in ("brier", "log_loss") else v

    def standard_error(self, metric: str) -> float:
        """sd of the per-fold values / sqrt(number of folds): the one-standard-error rule's yardstick."""
        vals = np.array([f[metric] for f in self.fold_metrics], dtype=np.float64)
        vals = vals[np.isfinite(vals)]
        return float(np.std(vals, ddof=1) / np.sqrt(vals.size)) if vals.size > 1 else 0.0


def cross_validate(model_type: str, params: Mapping[str, Any], X: np.ndarray, y: np.ndarray,
                   folds: list[tuple[np.ndarray, np.ndarray]], *, seed: int, config: TrainConfig,
                   one_hot: OneHotColumns = ()) -> CVResult:
    """Fit and score one candidate on every fold. With repeated folds (``cv_folds(repeats=r)``) the out-of-fold
    predictions kept are the first repetition's (every row exactly once); the metrics cover every fold."""
    oof = np.full(len(y), np.nan)
    per_fold: list[dict[str, float]] = []
    k = config.cv_folds
    for i, (tr, va) in enumerate(folds):
        sw, w_pos = class_weights(y[tr], config.class_weight)
        est = _estimator(model_type, params, seed=seed, pos_weight=w_pos, config=config, n_features=X.shape[1],
                         one_hot=one_hot)
        fit_estimator(est, X[tr], y[tr], None if model_type == "xgboost" else sw, n_jobs=config.n_jobs)
        p_va = est.predict_proba(np.asarray(X[va], dtype=np.float32))[:, 1]
        if i < k:
            oof[va] = p_va
        per_fold.append(_metric_values(y[va], p_va))
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
class FamilySearch:
    """One family's CV search on the training part: every candidate, the best one, the folds used."""

    model_type: str
    candidates: list[CVResult]
    best: CVResult
    folds: list[tuple[np.ndarray, np.ndarray]]
    repeats: int
    method: str

    def to_dict(self, metric: str) -> dict[str, Any]:
        return {
            "selected_params": self.best.params,
            "cv": {**self.best.summary, "se": {m: self.best.standard_error(m) for m in SELECTION_METRICS},
                   "n_folds": len(self.folds)},
            "candidates": [{"params": c.params, **c.summary} for c in self.candidates],
            "selection_metric": metric,
            "cv_method": self.method,
        }


def cv_search(model_type: str, X: np.ndarray, y: np.ndarray, groups: np.ndarray, *, seed: int, config: TrainConfig,
              repeats: int = 1, one_hot: OneHotColumns = (),
              progress: Callable[[str], None] | None = None) -> FamilySearch:
    """Cross-validate every candidate of ``model_type`` on (X, y) and keep the best by ``selection_metric``."""
    say = progress or (lambda _msg: None)
    if model_type not in MODEL_TYPES:
        raise ValueError(f"unknown model type {model_type!r}; use one of {', '.join(MODEL_TYPES)}")
    grid = config.candidates(model_type, len(y))
    if len(y) >= config.large_data_rows:
        say(f"{len(y)} training rows >= large_data_rows {config.large_data_rows}: {len(grid)} {model_type} "
            "candidates")
    folds = cv_folds(y, groups, k=config.cv_folds, seed=seed, repeats=repeats)
    candidates: list[CVResult] = []
    for i, params in enumerate(grid, start=1):
        res = cross_validate(model_type, params, X, y, folds, seed=seed, config=config, one_hot=one_hot)
        candidates.append(res)
        say(
            f"CV {model_type} candidate {i}/{len(grid)} {json.dumps(params, sort_keys=True)}: "
            f"AUROC {res.summary['auroc']:.3f} AUPRC {res.summary['auprc']:.3f} "
            f"log loss {res.summary['log_loss']:.3f}"
        )
    best = max(candidates, key=lambda c: c.score(config.selection_metric))  # first of ties: stable
    return FamilySearch(model_type=model_type, candidates=candidates, best=best, folds=folds, repeats=repeats,
                        method=cv_method(y, groups, k=config.cv_folds, seed=seed, repeats=repeats))


def select_family(searches: Mapping[str, FamilySearch], config: TrainConfig) -> dict[str, Any]:
    """Choose among the families' best candidates by mean CV ``selection_metric`` with the one-standard-error rule:
    the simplest family (``MODEL_TYPES`` order) whose mean is within one standard error of the best family's mean
    (``family_rule`` "best": the best mean). Returns the record kept in ``manifest["model_selection"]``."""
    metric = config.selection_metric
    order = [m for m in MODEL_TYPES if m in searches]
    scores = {m: searches[m].best.score(metric) for m in order}
    best = max(order, key=lambda m: (scores[m], -order.index(m)))
    se = searches[best].best.standard_error(metric)
    sign = -1.0 if metric in ("brier", "log_loss") else 1.0
    if config.family_rule == "one_se":
        chosen = next(m for m in order if scores[m] >= scores[best] - se)
        rule = (f"one-standard-error rule on mean CV {metric}: the simplest family ({' < '.join(order)}) whose mean "
                f"is within one standard error (sd of the best family's {len(searches[best].folds)} fold values / "
                f"sqrt({len(searches[best].folds)})) of the best family's mean")
    else:
        chosen = best
        rule = f"best mean CV {metric}"
    value = {m: sign * scores[m] for m in order}
    if len(order) == 1:
        reason = f"only {chosen} was requested (--model {chosen})"
    elif chosen == best:
        reason = (f"{chosen} has the best mean CV {metric} ({value[chosen]:.4f}); no simpler family is within one "
                  f"standard error ({se:.4f})" if config.family_rule == "one_se" and order.index(chosen) > 0
                  else f"{chosen} has the best mean CV {metric} ({value[chosen]:.4f})")
    else:
        reason = (f"{chosen} (mean CV {metric} {value[chosen]:.4f}) is within one standard error ({se:.4f}) of the "
                  f"best, {best} ({value[best]:.4f}), and is simpler")
    return {
        "chosen": chosen,
        "best_by_metric": best,
        "metric": metric,
        "rule": rule,
        "standard_error": se,
        "reason": reason,
        "scores": value,
    }


@dataclass
class TrainedModel:
    model: ClinicalModel
    selected: CVResult
    candidates: list[CVResult]
    calibration: dict[str, Any]
    threshold: float
    oof_calibrated: np.ndarray
    imbalance: dict[str, Any]


def reference_values(X: np.ndarray, one_hot: OneHotColumns = ()) -> np.ndarray:
    """Per feature, the occlusion reference of explanations: the training median, and for a nominal categorical
    column its most frequent code (a median of codes may be no category at all). All-missing columns: 0."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)  # all-NaN column -> NaN -> 0 below
        ref = np.nan_to_num(np.nanmedian(X, axis=0), nan=0.0).astype(np.float64)
    for i, _k in one_hot:
        col = X[:, i]
        col = col[~np.isnan(col)]
        if col.size:
            values, counts = np.unique(col, return_counts=True)
            ref[i] = float(values[np.argmax(counts)])  # lowest code among ties, as SimpleImputer(most_frequent)
    return ref


def fit_final(model_type: str, search: FamilySearch, X: np.ndarray, y: np.ndarray,
              feature_names: tuple[str, ...], *, seed: int, config: TrainConfig, one_hot: OneHotColumns = (),
              progress: Callable[[str], None] | None = None,
              fit_rows: tuple[np.ndarray, np.ndarray] | None = None) -> TrainedModel:
    """Calibration chosen on the best candidate's out-of-fold predictions (first repetition's folds) of (X, y),
    threshold on the calibrated ones, final fit on all of (X, y), or on ``fit_rows`` (X, y) when given: the refit on
    every row, which keeps the calibration and threshold chosen on (X, y)'s out-of-fold predictions."""
    say = progress or (lambda _msg: None)
    best = search.best
    first_folds = search.folds[: config.cv_folds]
    method, cal_scores = choose_calibration(best.oof, y, first_folds, config)
    calibrator = fit_calibrator(method, best.oof, y)
    oof_cal = best.oof if calibrator is None else calibrator(best.oof)
    threshold = choose_threshold(y, oof_cal, config.threshold_rule)
    say(f"{model_type}: selected {json.dumps(best.params, sort_keys=True)}; calibration {method}; "
        f"threshold {threshold:.4f}")

    X_fit, y_fit = (X, y) if fit_rows is None else fit_rows
    sw, w_pos = class_weights(y_fit, config.class_weight)
    est = _estimator(model_type, best.params, seed=seed, pos_weight=w_pos, config=config, n_features=X.shape[1],
                     one_hot=one_hot)
    fit_estimator(est, X_fit, y_fit, None if model_type == "xgboost" else sw, n_jobs=config.n_jobs)
    medians = reference_values(X_fit, one_hot)
    applied = "separate step after the pipeline (in model.joblib and in the ONNX graph, computed in float64)"
    final_calibrator = calibrator
    if model_type in ("mlp", "logistic") and calibrator is not None and calibrator.method == "sigmoid":
        # logit(p) is the output layer's pre-activation z (the linear predictor for logistic regression), so Platt
        # scaling is the same model with z' = a z + b. Folding it into the last layer avoids taking logits of
        # float32 probabilities near 0 or 1 in ONNX, which is what breaks joblib/ONNX parity for a separate step.
        last = est.steps[-1][1]
        if model_type == "mlp":
            last.coefs_[-1] = last.coefs_[-1] * calibrator.a
            last.intercepts_[-1] = last.intercepts_[-1] * calibrator.a + calibrator.b
            applied = "folded into the MLP output layer (weights x a, bias x a + b)"
        else:
            last.coef_ = last.coef_ * calibrator.a
            last.intercept_ = last.intercept_ * calibrator.a + calibrator.b
            applied = "folded into the logistic regression (coefficients x a, intercept x a + b)"
        final_calibrator = None
    model = ClinicalModel(pipeline=est, model_type=model_type, feature_names=feature_names,
                          calibrator=final_calibrator, medians=medians)
    imbalance = {
        "method": (
            "none" if config.class_weight == "none"
            else ("scale_pos_weight" if model_type == "xgboost" else "sample_weight") + " = n_negative / n_positive"
        ),
        "positive_weight": w_pos,
        "n_positive": int(np.sum(y_fit)),
        "n_negative": int(len(y_fit) - np.sum(y_fit)),
        "resampling": "none",
        "note": ("no imbalance correction: weights or resampling move every predicted risk and bring no ranking "
                 "worth having (van den Goorbergh et al., JAMIA 2022)" if config.class_weight == "none"
                 else "weights shift predicted probabilities upwards; the calibration step (chosen on CV) corrects "
                      "them"),
    }
    calibration = {
        "method": method,
        "candidates": cal_scores,
        "chosen_by": "lowest Brier score of calibrators fitted and scored across the CV folds of the "
                     "out-of-fold predictions",
        "fitted_on": "out-of-fold predictions of the training part"
                     + (" (first CV repetition)" if search.repeats > 1 else "")
                     + ("; applied unchanged to the model refitted on every row" if fit_rows is not None else ""),
        "params": None if calibrator is None else calibrator.to_dict(),
        "applied": None if calibrator is None else applied,
    }
    return TrainedModel(model=model, selected=best, candidates=search.candidates, calibration=calibration,
                        threshold=threshold, oof_calibrated=oof_cal, imbalance=imbalance)


def train_model(model_type: str, X: np.ndarray, y: np.ndarray, groups: np.ndarray, feature_names: tuple[str, ...],
                *, seed: int, config: TrainConfig, repeats: int = 1, one_hot: OneHotColumns = (),
                progress: Callable[[str], None] | None = None) -> TrainedModel:
    """CV search on the training part only, calibration chosen on CV, final fit on the whole training part."""
    search = cv_search(model_type, X, y, groups, seed=seed, config=config, repeats=repeats, one_hot=one_hot,
                       progress=progress)
    return fit_final(model_type, search, X, y, feature_names, seed=seed, config=config, one_hot=one_hot,
                     progress=progress)


def refit_all_rows(model_type: str, params: Mapping[str, Any], X: np.ndarray, y: np.ndarray, groups: np.ndarray,
                   feature_names: tuple[str, ...], *, seed: int, config: TrainConfig, one_hot: OneHotColumns = (),
                   progress: Callable[[str], None] | None = None) -> TrainedModel:
    """The chosen family and hyperparameters refitted on every row (small-data mode): one k-fold CV of that candidate
    on all rows gives the out-of-fold predictions its calibration and threshold are chosen on, then the final fit."""
    folds = cv_folds(y, groups, k=config.cv_folds, seed=seed)
    res = cross_validate(model_type, params, X, y, folds, seed=seed, config=config, one_hot=one_hot)
    search = FamilySearch(model_type=model_type, candidates=[res], best=res, folds=folds, repeats=1,
                          method=cv_method(y, groups, k=config.cv_folds, seed=seed))
    return fit_final(model_type, search, X, y, feature_names, seed=seed, config=config, one_hot=one_hot,
                     progress=progress)


def bootstrap_optimism(model_type: str, trained: TrainedModel, X: np.ndarray, y: np.ndarray, *, seed: int,
                       config: TrainConfig, one_hot: OneHotColumns = (), n_boot: int | None = None) -> dict[str, Any]:
    """Harrell's bootstrap optimism correction of the final model's apparent AUROC and calibration slope on all rows.

    For each of ``n_boot`` resamples (rows drawn with replacement, stratified by outcome): refit the chosen family
    with the chosen hyperparameters and class weights on the resample, score it on the resample (apparent) and on
    the original rows (test); optimism = mean(apparent - test). Corrected = the final model's apparent value minus
    the optimism. The hyperparameter search and the calibration step are not repeated inside the loop (the family
    and hyperparameters stay fixed), so the correction is somewhat optimistic itself; AUROC does not depend on a
    monotone calibration."""
    n_boot = config.optimism_bootstrap if n_boot is None else n_boot
    p_final = trained.model.predict_proba(X)[:, 1]
    apparent_auroc = auroc(y, p_final)
    apparent_slope = calibration_slope_intercept(y, p_final)[0]
    rng = np.random.default_rng(seed + 7919)
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    d_auroc: list[float] = []
    d_slope: list[float] = []
    for _ in range(n_boot):
        idx = np.concatenate([rng.choice(pos, pos.size), rng.choice(neg, neg.size)])
        sw, w_pos = class_weights(y[idx], config.class_weight)
        est = _estimator(model_type, trained.selected.params, seed=seed, pos_weight=w_pos, config=config,
                         n_features=X.shape[1], one_hot=one_hot)
        fit_estimator(est, X[idx], y[idx], None if model_type == "xgboost" else sw, n_jobs=config.n_jobs)
        p_boot = est.predict_proba(np.asarray(X[idx], dtype=np.float32))[:, 1]
        p_orig = est.predict_proba(np.asarray(X, dtype=np.float32))[:, 1]
        d_auroc.append(auroc(y[idx], p_boot) - auroc(y, p_orig))
        d_slope.append(calibration_slope_intercept(y[idx], p_boot)[0] - calibration_slope_intercept(y, p_orig)[0])
    opt_auroc = float(np.nanmean(d_auroc)) if d_auroc else float("nan")
    opt_slope = float(np.nanmean(d_slope)) if d_slope else float("nan")
    return {
        "method": "Harrell bootstrap optimism: refit the chosen family and hyperparameters on each stratified "
                  "resample; optimism = mean(metric on the resample - metric on the original rows); corrected = "
                  "apparent - optimism (the search itself is not repeated)",
        "n_boot": n_boot,
        "n_rows": int(len(y)),
        "apparent_auroc": apparent_auroc,
        "optimism_auroc": opt_auroc,
        "corrected_auroc": apparent_auroc - opt_auroc,
        "apparent_calibration_slope": apparent_slope,
        "optimism_calibration_slope": opt_slope,
        "corrected_calibration_slope": apparent_slope - opt_slope,
    }


def train_baseline(X: np.ndarray, y: np.ndarray, groups: np.ndarray, *, seed: int,
                   config: TrainConfig, one_hot: OneHotColumns = ()) -> tuple[Pipeline, dict[str, float]]:
    """Median imputation + scaling (+ one-hot of nominal columns) + logistic regression (C=1, unweighted): the
    linear reference."""
    folds = cv_folds(y, groups, k=config.cv_folds, seed=seed)
    res = cross_validate("logistic", {}, X, y, folds, seed=seed,
                         config=TrainConfig.from_dict({**config.to_dict(), "class_weight": "none"}), one_hot=one_hot)
    est = make_estimator("logistic", {}, seed=seed, n_features=X.shape[1], one_hot=one_hot)
    fit_estimator(est, X, y, None, n_jobs=config.n_jobs)
    return est, res.summary

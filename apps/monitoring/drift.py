"""Drift arithmetic against a model's reference profile (`ml.evaluation.reference_profile`): plain numpy, no Django.

Per feature the profile holds quantile bin edges of the training part's present values with the fraction of those
values in each bin (a value v falls in bin `searchsorted(edges, v, side="left")`) and the missing fraction; the same
for the out-of-fold predicted risk. A window of served predictions is binned the same way and compared with the
population stability index, PSI = sum over bins of (current - reference) * ln(current / reference). An empty bin
counts as PSI_FLOOR so one empty bin does not make the index infinite.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

PSI_FLOOR = 1e-4


def as_values(raw: Sequence[float | None]) -> np.ndarray:
    """Values as float64 with NaN for missing (None)."""
    return np.asarray([math.nan if v is None else float(v) for v in raw], dtype=np.float64)


def bin_fractions(present: np.ndarray, edges: Sequence[float]) -> np.ndarray:
    """Fraction of `present` (no NaN) in each of the len(edges) + 1 bins."""
    counts = np.bincount(np.searchsorted(np.asarray(edges, dtype=np.float64), present, side="left"),
                         minlength=len(edges) + 1)
    return counts / max(present.size, 1)


def psi(reference: Sequence[float], current: Sequence[float], floor: float = PSI_FLOOR) -> float:
    ref = np.clip(np.asarray(reference, dtype=np.float64), floor, None)
    cur = np.clip(np.asarray(current, dtype=np.float64), floor, None)
    return float(np.sum((cur - ref) * np.log(cur / ref)))


@dataclass(frozen=True)
class DistributionDrift:
    """One distribution (a feature's present values, or the predicted risks) of a window against its reference."""

    name: str
    n: int  # values in the window, missing ones included
    n_present: int
    psi: float | None  # None when too few values were present or the reference has none
    alert: bool
    edges: list[float] = field(default_factory=list)
    reference: list[float] = field(default_factory=list)
    current: list[float] = field(default_factory=list)
    mean: float | None = None
    reference_mean: float | None = None
    missing_rate: float | None = None
    reference_missing_rate: float | None = None
    missing_alert: bool = False
    note: str = ""


def distribution_drift(name: str, profile: Mapping[str, Any] | None, values: np.ndarray, *, psi_alert: float,
                       missing_alert: float, min_samples: int) -> DistributionDrift:
    """Compare `values` (NaN = missing) with one entry of a reference profile."""
    n = int(values.size)
    present = values[~np.isnan(values)]
    missing_rate = float(1 - present.size / n) if n else None
    mean = float(present.mean()) if present.size else None
    if not profile:
        return DistributionDrift(name, n, int(present.size), None, False, mean=mean, missing_rate=missing_rate,
                                 note="the model's reference profile has no entry for it")
    reference_missing = profile.get("missing_fraction")
    moved = (missing_rate is not None and reference_missing is not None
             and abs(missing_rate - float(reference_missing)) > missing_alert)
    edges = [float(e) for e in profile.get("edges") or []]
    reference = [float(f) for f in profile.get("fractions") or []]
    common = {"edges": edges, "reference": reference, "mean": mean, "reference_mean": profile.get("mean"),
              "missing_rate": missing_rate, "reference_missing_rate": reference_missing, "missing_alert": moved}
    if not reference:
        return DistributionDrift(name, n, int(present.size), None, False, **common,
                                 note="no value was present in the training data")
    if present.size < min_samples:
        return DistributionDrift(name, n, int(present.size), None, False, **common,
                                 note=f"only {present.size} present values in the window; at least {min_samples} "
                                      f"are needed for a PSI")
    current = bin_fractions(present, edges)
    value = psi(reference, current)
    return DistributionDrift(name, n, int(present.size), value, value > psi_alert, **{
        **common, "current": [float(c) for c in current]})

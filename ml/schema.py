"""Use-case spec: the feature contract shared by training, validation and serving.

A spec is a YAML file (see ``ml/specs/diabetes.yaml``). It names the outcome, the patient id column and, per
feature, its type, canonical unit, accepted alternative units with their conversion factor, LOINC code, plausible
range, codes that mean "missing" in raw data, and whether a prediction may be made without it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

FeatureType = Literal["numeric", "binary", "categorical"]
FEATURE_TYPES: tuple[str, ...] = ("numeric", "binary", "categorical")
BINARY_TRUE: frozenset[str] = frozenset({"1", "1.0", "true", "yes"})
BINARY_FALSE: frozenset[str] = frozenset({"0", "0.0", "false", "no"})


class SpecError(ValueError):
    """The use-case spec itself is malformed."""


class UnitError(ValueError):
    """A value was given in a unit the feature does not accept."""


@dataclass(frozen=True)
class UnitRule:
    """Dataset-only rule: a raw value without an explicit unit that lies below ``below`` is read in ``unit``.

    Example: glucose values below 25 cannot be mg/dL (the plausible range starts at 40) and are mmol/L.
    At prediction time a bare number always means the canonical unit; rules are never applied there.
    """

    unit: str
    below: float

    def to_dict(self) -> dict[str, Any]:
        return {"unit": self.unit, "below": self.below}


@dataclass(frozen=True)
class FeatureSpec:
    name: str
    column: str
    label: str
    type: FeatureType
    unit: str | None
    alternative_units: dict[str, float] = field(default_factory=dict)
    loinc: str | None = None
    min: float | None = None
    max: float | None = None
    missing_values: tuple[float, ...] = ()
    allow_missing: bool = True
    categories: tuple[str, ...] = ()
    unit_rules: tuple[UnitRule, ...] = ()
    description: str | None = None
    # Binary only: the two values the data (and callers) use for 0 and 1, e.g. ("No", "Yes"), ("Female", "Male").
    labels: tuple[str, ...] = ()
    # Categorical only: True when the categories are ordered (kept as codes 0..k-1 for every model family);
    # False (nominal, the default): one-hot encoded for the logistic and MLP families, codes for trees.
    ordinal: bool = False

    @property
    def one_hot(self) -> bool:
        """Whether the linear and MLP families see this feature one-hot encoded (a nominal categorical)."""
        return self.type == "categorical" and not self.ordinal

    def binary_code(self, value: str) -> float | None:
        """0.0/1.0 for a text value of a binary feature: one of its declared ``labels`` (first = 0), or
        0/1/true/false/yes/no (case-insensitive); None when the text is none of them."""
        text = value.strip()
        for code, label in enumerate(self.labels):
            if text == label or text.lower() == label.lower():
                return float(code)
        lowered = text.lower()
        if lowered in BINARY_TRUE:
            return 1.0
        if lowered in BINARY_FALSE:
            return 0.0
        return None

    def binary_accepted_text(self) -> str:
        """The values a binary feature accepts, for error messages."""
        named = f"{self.labels[0]}/{self.labels[1]}, " if self.labels else ""
        return f"{named}0/1 or true/false"

    @property
    def accepted_units(self) -> tuple[str, ...]:
        """Canonical unit first, then the alternatives in spec order."""
        units: list[str] = [self.unit] if self.unit is not None else []
        units.extend(u for u in self.alternative_units if u != self.unit)
        return tuple(units)

    def to_canonical(self, value: float, unit: str | None) -> float:
        """Convert ``value`` given in ``unit`` to the canonical unit (``None`` means already canonical)."""
        if unit is None or unit == self.unit:
            return float(value)
        factor = self.alternative_units.get(unit)
        if factor is None:
            accepted = ", ".join(self.accepted_units) or "none (unitless)"
            raise UnitError(f"unknown unit {unit!r} for {self.name}; accepted: {accepted}")
        return float(value) * factor

    def in_range(self, value: float) -> bool:
        if self.min is not None and value < self.min:
            return False
        return not (self.max is not None and value > self.max)

    def range_text(self) -> str:
        unit = f" {self.unit}" if self.unit and self.unit != "1" else ""
        if self.min is not None and self.max is not None:
            return f"between {_fmt(self.min)} and {_fmt(self.max)}{unit}"
        if self.min is not None:
            return f"at least {_fmt(self.min)}{unit}"
        if self.max is not None:
            return f"at most {_fmt(self.max)}{unit}"
        return "any number"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "column": self.column,
            "label": self.label,
            "type": self.type,
            "unit": self.unit,
            "alternative_units": dict(self.alternative_units),
            "loinc": self.loinc,
            "min": self.min,
            "max": self.max,
            "missing_values": list(self.missing_values),
            "allow_missing": self.allow_missing,
        }
        if self.categories:
            out["categories"] = list(self.categories)
        if self.unit_rules:
            out["unit_rules"] = [r.to_dict() for r in self.unit_rules]
        if self.description is not None:
            out["description"] = self.description
        if self.labels:
            out["labels"] = list(self.labels)
        if self.ordinal:
            out["ordinal"] = True
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FeatureSpec:
        where = f"feature {d.get('name', '?')!r}"
        _require(d, ("name", "type"), where)
        ftype = str(d["type"])
        if ftype not in FEATURE_TYPES:
            raise SpecError(f"{where}: type must be one of {', '.join(FEATURE_TYPES)}, got {ftype!r}")
        alt_raw = d.get("alternative_units") or {}
        if not isinstance(alt_raw, Mapping):
            raise SpecError(f"{where}: alternative_units must be a mapping unit -> factor")
        alternative_units: dict[str, float] = {}
        for unit, factor in alt_raw.items():
            f = _number(factor, f"{where}: conversion factor for {unit!r}")
            if f <= 0:
                raise SpecError(f"{where}: conversion factor for {unit!r} must be positive")
            alternative_units[str(unit)] = f
        unit = d.get("unit")
        lo = _optional_number(d.get("min"), f"{where}: min")
        hi = _optional_number(d.get("max"), f"{where}: max")
        if ftype == "binary":
            lo = 0.0 if lo is None else lo
            hi = 1.0 if hi is None else hi
        if lo is not None and hi is not None and lo > hi:
            raise SpecError(f"{where}: min {lo} is greater than max {hi}")
        categories = tuple(str(c) for c in d.get("categories") or ())
        if ftype == "categorical" and not categories:
            raise SpecError(f"{where}: a categorical feature needs a categories list")
        if ftype == "categorical":
            lo, hi = 0.0, float(len(categories) - 1)
        labels = tuple(str(x) for x in d.get("labels") or ())
        if labels:
            if ftype != "binary":
                raise SpecError(f"{where}: labels are for binary features (categorical ones have categories)")
            if len(labels) != 2 or labels[0].lower() == labels[1].lower():
                raise SpecError(f"{where}: labels must be two different values [value for 0, value for 1], "
                                f"got {list(labels)}")
            clash = [x for x in labels if x.lower() in BINARY_TRUE | BINARY_FALSE]
            if clash and [x.lower() for x in labels] not in (["0", "1"], ["false", "true"], ["no", "yes"]):
                raise SpecError(f"{where}: labels {list(labels)} would read {clash[0]!r} against its usual meaning; "
                                "0/1, true/false and yes/no are always accepted")
        ordinal = d.get("ordinal", False)
        if not isinstance(ordinal, bool):
            raise SpecError(f"{where}: ordinal must be true or false")
        if ordinal and ftype != "categorical":
            raise SpecError(f"{where}: ordinal applies to categorical features only")
        rules = tuple(
            UnitRule(unit=str(r["unit"]), below=_number(r["below"], f"{where}: unit_rules below"))
            for r in d.get("unit_rules") or ()
        )
        for r in rules:
            if r.unit not in alternative_units and r.unit != unit:
                raise SpecError(f"{where}: unit rule names unit {r.unit!r} that is not accepted")
        loinc = d.get("loinc")
        return cls(
            name=str(d["name"]),
            column=str(d.get("column", d["name"])),
            label=str(d.get("label", d["name"])),
            type=ftype,  # type: ignore[arg-type]
            unit=None if unit is None else str(unit),
            alternative_units=alternative_units,
            loinc=None if loinc is None else str(loinc),
            min=lo,
            max=hi,
            missing_values=tuple(_number(v, f"{where}: missing_values") for v in d.get("missing_values") or ()),
            allow_missing=bool(d.get("allow_missing", True)),
            categories=categories,
            unit_rules=rules,
            description=None if d.get("description") is None else str(d["description"]),
            labels=labels,
            ordinal=ordinal,
        )


@dataclass(frozen=True)
class OutcomeSpec:
    column: str
    positive: Any
    label: str

    def to_dict(self) -> dict[str, Any]:
        return {"column": self.column, "positive": self.positive, "label": self.label}


@dataclass(frozen=True)
class SubgroupSpec:
    """A column to report performance by: binned (``bins`` + ``labels``) or by its distinct values."""

    name: str
    column: str
    bins: tuple[float, ...] = ()
    labels: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "column": self.column}
        if self.bins:
            out["bins"] = list(self.bins)
            out["labels"] = list(self.labels)
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SubgroupSpec:
        where = f"subgroup {d.get('name', '?')!r}"
        _require(d, ("name", "column"), where)
        bins = tuple(_number(b, f"{where}: bins") for b in d.get("bins") or ())
        labels = tuple(str(x) for x in d.get("labels") or ())
        if bins:
            if list(bins) != sorted(bins):
                raise SpecError(f"{where}: bins must be increasing")
            if not labels:
                labels = tuple(f"{_fmt(a)}-{_fmt(b)}" for a, b in zip(bins[:-1], bins[1:], strict=True))
            if len(labels) != len(bins) - 1:
                raise SpecError(f"{where}: {len(bins)} bins need {len(bins) - 1} labels, got {len(labels)}")
        return cls(name=str(d["name"]), column=str(d["column"]), bins=bins, labels=labels)


@dataclass(frozen=True)
class UseCaseSpec:
    use_case: str
    title: str
    intended_use: str
    outcome: OutcomeSpec
    patient_id: str
    features: tuple[FeatureSpec, ...]
    subgroups: tuple[SubgroupSpec, ...] = ()
    description: str | None = None

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.features)

    def feature(self, name: str) -> FeatureSpec:
        for f in self.features:
            if f.name == name:
                return f
        raise KeyError(name)

    @classmethod
    def load(cls, path: str | Path) -> UseCaseSpec:
        p = Path(path)
        try:
            raw = yaml.safe_load(p.read_text(encoding="utf-8"))
        except OSError as exc:
            raise SpecError(f"cannot read spec {p}: {exc.strerror or exc}") from exc
        except yaml.YAMLError as exc:
            raise SpecError(f"spec {p} is not valid YAML: {exc}") from exc
        if not isinstance(raw, Mapping):
            raise SpecError(f"spec {p} must be a YAML mapping")
        return cls.from_dict(raw)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> UseCaseSpec:
        _require(d, ("use_case", "outcome", "features"), "spec")
        outcome = d["outcome"]
        if not isinstance(outcome, Mapping):
            raise SpecError("spec: outcome must be a mapping with column and positive")
        _require(outcome, ("column", "positive"), "spec outcome")
        raw_features = d["features"]
        if not isinstance(raw_features, list) or not raw_features:
            raise SpecError("spec: features must be a non-empty list")
        features = tuple(FeatureSpec.from_dict(f) for f in raw_features)
        names = [f.name for f in features]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise SpecError(f"spec: duplicate feature names: {', '.join(dupes)}")
        columns = [f.column for f in features]
        dup_cols = sorted({c for c in columns if columns.count(c) > 1})
        if dup_cols:
            raise SpecError(f"spec: several features read the same column: {', '.join(dup_cols)}")
        patient_id = str(d.get("patient_id", "patient_id"))
        if str(outcome["column"]) in columns or patient_id in columns:
            raise SpecError("spec: the outcome and patient id columns cannot be features")
        return cls(
            use_case=str(d["use_case"]),
            title=str(d.get("title", d["use_case"])),
            intended_use=str(d.get("intended_use", "")).strip(),
            outcome=OutcomeSpec(
                column=str(outcome["column"]),
                positive=outcome["positive"],
                label=str(outcome.get("label", outcome["column"])),
            ),
            patient_id=patient_id,
            features=features,
            subgroups=tuple(SubgroupSpec.from_dict(s) for s in d.get("subgroups") or ()),
            description=None if d.get("description") is None else str(d["description"]),
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "use_case": self.use_case,
            "title": self.title,
            "intended_use": self.intended_use,
            "outcome": self.outcome.to_dict(),
            "patient_id": self.patient_id,
            "subgroups": [s.to_dict() for s in self.subgroups],
            "features": [f.to_dict() for f in self.features],
        }
        if self.description is not None:
            out["description"] = self.description
        return out


def _require(d: Mapping[str, Any], keys: tuple[str, ...], where: str) -> None:
    missing = [k for k in keys if k not in d or d[k] is None]
    if missing:
        raise SpecError(f"{where}: missing required key(s): {', '.join(missing)}")


def _number(v: Any, where: str) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise SpecError(f"{where}: must be a number, got {v!r}")
    f = float(v)
    if not math.isfinite(f):
        raise SpecError(f"{where}: must be finite")
    return f


def _optional_number(v: Any, where: str) -> float | None:
    return None if v is None else _number(v, where)


def _fmt(x: float) -> str:
    return f"{x:g}"

"""Use-case specs as the patients app reads them: the `ml` feature contract plus the optional `fhir:` block that
says how FHIR R4 resources map onto it (derived features, panels with components, outcome condition codes).

Unit normalisation lives here too, so CSV import, FHIR sync and feature assembly convert values the same way:
through `FeatureSpec.to_canonical` and the plausible range of the spec, never by a rule of their own.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

import ml
from ml.schema import FeatureSpec, SpecError, UnitError, UseCaseSpec

SPECS_DIR = Path(ml.__file__).resolve().parent / "specs"
LOINC = "http://loinc.org"
# Features without a LOINC code (e.g. the Pima pedigree score) are stored under this system with the feature name.
FEATURE_SYSTEM = "urn:clinpredict:feature"


@dataclass(frozen=True)
class OutcomeCode:
    system: str
    code: str = ""
    prefix: str = ""

    def matches(self, system: str | None, code: str | None) -> bool:
        if system != self.system or not code:
            return False
        if self.code:
            return code == self.code
        return code.startswith(self.prefix)  # E11 matches E11, E11.9 and the undotted E119


@dataclass(frozen=True)
class DerivedFeature:
    name: str
    source: str  # "birth_date" (age in completed years) or "gender" (mapped through `mapping`)
    mapping: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class IngestionSpec:
    spec: UseCaseSpec
    path: Path
    derived: dict[str, DerivedFeature]
    panels: dict[str, tuple[str, ...]]
    outcome_codes: tuple[OutcomeCode, ...]

    @property
    def use_case(self) -> str:
        return self.spec.use_case

    def feature_code(self, feature: FeatureSpec) -> tuple[str, str]:
        """(code system, code) under which a feature's observations are stored."""
        return (LOINC, feature.loinc) if feature.loinc else (FEATURE_SYSTEM, feature.name)

    @property
    def features_by_code(self) -> dict[tuple[str, str], FeatureSpec]:
        return {self.feature_code(f): f for f in self.spec.features}

    def observed_loinc_codes(self) -> list[str]:
        """LOINC codes to ask a FHIR server for: every non-derived feature's code and every panel's code (a blood
        pressure arrives as a panel whose components are the systolic and diastolic values)."""
        # Component codes stay in the list: a server may also send them as Observations of their own.
        codes = {f.loinc for f in self.spec.features if f.loinc and f.name not in self.derived}
        return sorted(codes | set(self.panels))

    def outcome_code_for(self, codings: list[Mapping[str, Any]]) -> tuple[str, str] | None:
        for coding in codings:
            system, code = coding.get("system"), coding.get("code")
            if any(oc.matches(system, code) for oc in self.outcome_codes):
                return str(system), str(code)
        return None


def spec_path_for(use_case: str) -> Path:
    path = SPECS_DIR / f"{use_case}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in SPECS_DIR.glob("*.yaml")))
        raise SpecError(f"no spec for use case {use_case!r}; known: {known}")
    return path


@lru_cache(maxsize=32)
def _load_cached(path: Path, mtime: float) -> IngestionSpec:
    spec = UseCaseSpec.load(path)
    raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    fhir = raw.get("fhir") or {}
    if not isinstance(fhir, Mapping):
        raise SpecError(f"spec {path}: fhir must be a mapping")
    derived: dict[str, DerivedFeature] = {}
    for name, conf in (fhir.get("derived") or {}).items():
        if name not in spec.feature_names:
            raise SpecError(f"spec {path}: fhir.derived names {name!r}, which is not a feature")
        source = str((conf or {}).get("from", ""))
        if source not in ("birth_date", "gender"):
            raise SpecError(f"spec {path}: fhir.derived.{name}.from must be birth_date or gender, got {source!r}")
        mapping = {str(k): float(v) for k, v in ((conf or {}).get("map") or {}).items()}
        derived[name] = DerivedFeature(name=name, source=source, mapping=mapping)
    panels = {str(code): tuple(str(c) for c in members) for code, members in (fhir.get("panels") or {}).items()}
    outcome_codes = []
    for item in fhir.get("outcome_conditions") or ():
        if not item.get("system") or not (item.get("code") or item.get("prefix")):
            raise SpecError(f"spec {path}: each fhir.outcome_conditions entry needs a system and a code or prefix")
        outcome_codes.append(OutcomeCode(system=str(item["system"]), code=str(item.get("code") or ""),
                                         prefix=str(item.get("prefix") or "")))
    return IngestionSpec(spec=spec, path=path, derived=derived, panels=panels, outcome_codes=tuple(outcome_codes))


def load_ingestion_spec(path: str | Path) -> IngestionSpec:
    p = Path(path).resolve()
    try:
        mtime = p.stat().st_mtime
    except OSError as exc:
        raise SpecError(f"cannot read spec {p}: {exc.strerror or exc}") from exc
    return _load_cached(p, mtime)


# --- Unit normalisation --------------------------------------------------------------------------------------


class Unmappable(ValueError):
    """A value that cannot be stored as valid; `reason` is a stable code used to count them per reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def to_canonical(feature: FeatureSpec, value: Any, unit: str | None, *, unit_required: bool) -> float:
    """The value in the feature's canonical unit, or `Unmappable` naming why not.

    `unit_required`: FHIR quantities must say their unit when the feature has one (a bare glucose number could be
    mg/dL or mmol/L); a CSV column without a unit column is canonical by the dataset convention of `ml`."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Unmappable("not_a_number", f"{feature.name}: the value is not a number")
    number = float(value)
    if not math.isfinite(number):
        raise Unmappable("not_a_number", f"{feature.name}: the value is not a finite number")
    unit = unit or None
    if unit is None and feature.unit is not None and feature.unit != "1" and unit_required:
        raise Unmappable("unit_missing", f"{feature.name}: no unit given; accepted: {_accepted(feature)}")
    try:
        canonical = feature.to_canonical(number, unit)
    except UnitError as exc:
        raise Unmappable("unit_not_convertible",
                         f"{feature.name}: unit {unit!r} cannot be converted; accepted: {_accepted(feature)}") from exc
    if not feature.in_range(canonical):
        raise Unmappable("out_of_range", f"{feature.name}: outside the plausible range ({feature.range_text()})")
    return canonical


def _accepted(feature: FeatureSpec) -> str:
    return ", ".join(feature.accepted_units) or "no unit"

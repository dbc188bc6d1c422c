"""The promotion gate: may this version serve patients? Pure reads; services call it under their row locks.

Checks (limits from settings.CLINPREDICT_PROMOTION_GATE):
- ``artifacts``: every registered file is in model storage with its registered sha256 (nothing altered since).
- ``parity``: the ONNX file reproduced the fitted pipeline (max |p_onnx - p_joblib| <= max_onnx_parity_abs_diff).
- ``test_auroc``: the held-out AUROC is recorded and >= min_test_auroc.
- ``calibration_slope``: the held-out calibration slope is recorded and within [calibration_slope_min, _max].
- ``signal``: ``ml train`` did not find the data without signal (``manifest["signal"]["verdict"]`` is not
  "no_signal"; its reasons are the refusal's). Versions trained before the verdict existed pass, saying so.
- ``feature_spec``: the version's feature contract is compatible with the live one (the current champion's), see
  `spec_incompatibilities` for the definition. With no champion there is no live contract and the check passes.

A challenger runs only in the shadow, so it is held to ``artifacts``, ``parity`` and ``feature_spec`` (its rows are
the ones validated against the champion's contract) but not to the metric limits.
"""

from dataclasses import dataclass, field
from typing import Any

from django.conf import settings

from .artifacts import artifact_problems
from .models import ModelVersion

DEFAULT_GATE: dict[str, float] = {
    "min_test_auroc": 0.70,
    "calibration_slope_min": 0.70,
    "calibration_slope_max": 1.50,
    "max_onnx_parity_abs_diff": 1e-5,
}


def gate_limits() -> dict[str, float]:
    return {**DEFAULT_GATE, **getattr(settings, "CLINPREDICT_PROMOTION_GATE", {})}


@dataclass(frozen=True)
class GateCheck:
    name: str
    ok: bool
    detail: str


@dataclass(frozen=True)
class GateVerdict:
    version_label: str
    against_label: str | None
    checks: list[GateCheck] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)

    @property
    def failures(self) -> list[GateCheck]:
        return [check for check in self.checks if not check.ok]

    def summary(self) -> str:
        if self.ok:
            return f"{self.version_label} passes the promotion gate."
        return f"{self.version_label} is blocked by the promotion gate: " + "; ".join(
            f"{check.name}: {check.detail}" for check in self.failures
        )

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "against": self.against_label,
                "checks": {check.name: {"ok": check.ok, "detail": check.detail} for check in self.checks}}


def _features_by_name(spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {str(feature["name"]): feature for feature in spec.get("features", [])}


def _accepted_units(feature: dict[str, Any]) -> set[str]:
    return {str(feature.get("unit"))} | {str(unit) for unit in (feature.get("alternative_units") or {})}


def spec_incompatibilities(live: dict[str, Any], candidate: dict[str, Any]) -> list[str]:
    """Why `candidate`'s feature contract cannot replace `live` (empty when compatible).

    Compatible means every caller of the live model keeps getting the answer it means to ask for, and the same
    validated row can be scored by either model:
    1. the same use case and exactly the same feature names (order may differ: each model has its own order);
    2. per feature the same type and the same canonical unit (a bare number means the canonical unit, so a changed
       canonical unit would silently misread every caller that sends bare numbers);
    3. the same LOINC code where both name one (a different code is a different measurement);
    4. for categorical features the same categories; for binary features with declared labels (``[No, Yes]``) the
       same labels in the same order (a swapped or dropped label would misread or refuse a caller's text value);
    5. every unit the live model accepts is still accepted, with the same conversion factor (new units may be
       added);
    6. no feature the live model lets callers leave out becomes required.
    Plausible ranges, labels and missing-value codes may change: a value outside a new range is refused with a
    400 naming the field, never misread.
    """
    problems: list[str] = []
    if live.get("use_case") != candidate.get("use_case"):
        problems.append(f"use case '{candidate.get('use_case')}' differs from the live '{live.get('use_case')}'")
    live_features, new_features = _features_by_name(live), _features_by_name(candidate)
    missing = sorted(set(live_features) - set(new_features))
    added = sorted(set(new_features) - set(live_features))
    if missing:
        problems.append(f"features missing compared with the live model: {', '.join(missing)}")
    if added:
        problems.append(f"features the live model does not have: {', '.join(added)}")
    for name in sorted(set(live_features) & set(new_features)):
        old, new = live_features[name], new_features[name]
        if old.get("type", "numeric") != new.get("type", "numeric"):
            problems.append(f"{name}: type {new.get('type')} differs from the live {old.get('type')}")
        if old.get("unit") != new.get("unit"):
            problems.append(f"{name}: canonical unit {new.get('unit')} differs from the live {old.get('unit')}")
        if old.get("loinc") and new.get("loinc") and old["loinc"] != new["loinc"]:
            problems.append(f"{name}: LOINC {new['loinc']} differs from the live {old['loinc']}")
        if old.get("categories") != new.get("categories") and (old.get("categories") or new.get("categories")):
            problems.append(f"{name}: categories differ from the live model's")
        if old.get("labels") and old.get("labels") != new.get("labels"):
            problems.append(f"{name}: binary labels {new.get('labels') or 'none'} differ from the live "
                            f"{old.get('labels')}")
        dropped = sorted(_accepted_units(old) - _accepted_units(new))
        if dropped:
            problems.append(f"{name}: no longer accepts unit(s) {', '.join(dropped)}")
        old_factors, new_factors = old.get("alternative_units") or {}, new.get("alternative_units") or {}
        shared = set(old_factors) & set(new_factors)
        changed = sorted(u for u in shared if float(old_factors[u]) != float(new_factors[u]))
        if changed:
            problems.append(f"{name}: conversion factor changed for {', '.join(changed)}")
        if old.get("allow_missing", False) and not new.get("allow_missing", False):
            problems.append(f"{name}: may be missing for the live model but is required by this version")
    return problems


def _check_artifacts(version: ModelVersion) -> GateCheck:
    problems = artifact_problems(version)
    if problems:
        return GateCheck("artifacts", False, "; ".join(problems))
    return GateCheck("artifacts", True, f"{len(version.artifacts) or 2} file(s) match their registered sha256")


def _check_parity(version: ModelVersion, limits: dict[str, float]) -> GateCheck:
    limit = float(limits["max_onnx_parity_abs_diff"])
    value = version.onnx_parity_max_abs_diff
    ok = value <= limit
    return GateCheck("parity", ok, f"ONNX parity max |diff| {value:.2e} {'<=' if ok else '>'} {limit:.0e}")


def _check_auroc(version: ModelVersion, limits: dict[str, float]) -> GateCheck:
    limit = float(limits["min_test_auroc"])
    if version.test_auroc is None:
        return GateCheck("test_auroc", False, "no test AUROC recorded in the manifest")
    ok = version.test_auroc >= limit
    return GateCheck("test_auroc", ok, f"test AUROC {version.test_auroc:.3f} {'>=' if ok else '<'} {limit:.3f}")


def _check_slope(version: ModelVersion, limits: dict[str, float]) -> GateCheck:
    low, high = float(limits["calibration_slope_min"]), float(limits["calibration_slope_max"])
    slope = version.calibration_slope
    if slope is None:
        return GateCheck("calibration_slope", False, "no test calibration slope recorded in the manifest")
    ok = low <= slope <= high
    where = "within" if ok else "outside"
    return GateCheck("calibration_slope", ok, f"calibration slope {slope:.3f} {where} [{low:.2f}, {high:.2f}]")


def _check_signal(version: ModelVersion) -> GateCheck:
    signal = version.manifest.get("signal")
    if not isinstance(signal, dict) or "verdict" not in signal:
        return GateCheck("signal", True, "no signal verdict recorded (trained before ml train assessed it)")
    if signal["verdict"] == "no_signal":
        reasons = "; ".join(str(r) for r in signal.get("reasons") or []) or "no reason recorded"
        return GateCheck("signal", False, f"the training data showed no signal: {reasons}")
    ci = signal.get("cv_auroc_ci") or [None, None]
    shown = f" (CV AUROC 95% CI {ci[0]:.3f}-{ci[1]:.3f})" if None not in ci else ""
    return GateCheck("signal", True, f"the training data showed signal{shown}")


def _check_spec(version: ModelVersion, live: ModelVersion | None) -> GateCheck:
    if live is None:
        return GateCheck("feature_spec", True, "no live model: this version's contract becomes the live one")
    if live.pk == version.pk:
        return GateCheck("feature_spec", True, "this version is the live model")
    problems = spec_incompatibilities(live.spec_dict, version.spec_dict)
    if problems:
        return GateCheck("feature_spec", False, f"incompatible with live {live.label}: " + "; ".join(problems))
    return GateCheck("feature_spec", True, f"compatible with live {live.label}")


def promotion_gate_evaluate(*, version: ModelVersion, live: ModelVersion | None) -> GateVerdict:
    """The verdict for making `version` champion while `live` (or nobody) is champion."""
    limits = gate_limits()
    checks = [
        _check_artifacts(version),
        _check_parity(version, limits),
        _check_auroc(version, limits),
        _check_slope(version, limits),
        _check_signal(version),
        _check_spec(version, live),
    ]
    return GateVerdict(version.label, live.label if live else None, checks)


def challenger_gate_evaluate(*, version: ModelVersion, live: ModelVersion | None) -> GateVerdict:
    """The verdict for running `version` in the shadow of `live`."""
    limits = gate_limits()
    checks = [_check_artifacts(version), _check_parity(version, limits), _check_spec(version, live)]
    if live is None:
        checks.append(GateCheck("champion", False, "a challenger needs a live champion to run beside"))
    elif live.pk == version.pk:
        checks.append(GateCheck("champion", False, "this version is the champion"))
    return GateVerdict(version.label, live.label if live else None, checks)

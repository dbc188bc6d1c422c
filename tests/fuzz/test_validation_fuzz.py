"""Hypothesis on the validation layer: whatever JSON a caller sends as `features`, validation answers with field
errors or canonical values, never an exception (which would be a 500)."""

from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ml.schema import UseCaseSpec
from ml.validation import validate_record

SPEC = UseCaseSpec.load(Path(__file__).resolve().parents[2] / "ml" / "specs" / "diabetes.yaml")
NAMES = list(SPEC.feature_names)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(["value", "unit", "x"]) | st.text(
        max_size=5), inner, max_size=3),
    max_leaves=6,
)
feature_maps = st.dictionaries(st.sampled_from(NAMES) | st.text(max_size=8), json_values, max_size=10)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(features=feature_maps)
def test_any_json_gets_field_errors_or_canonical_values(features: dict[str, Any]) -> None:
    result = validate_record(SPEC, features)

    if result.ok:
        assert set(result.values) == set(NAMES)
        for name, value in result.values.items():
            feature = SPEC.feature(name)
            assert value is None or (feature.min <= value <= feature.max)
    else:
        assert result.errors and all(isinstance(m, str) and m for ms in result.errors.values() for m in ms)
        assert set(result.errors) <= set(NAMES) | set(features)


@settings(max_examples=200, deadline=None)
@given(glucose=st.floats(allow_nan=False, allow_infinity=False),
       unit=st.sampled_from(["mg/dL", "mmol/L", "mg", "", "MMOL/L"]))
def test_glucose_is_accepted_exactly_when_plausible_in_canonical_units(glucose: float, unit: str) -> None:
    features: dict[str, Any] = {name: None for name in NAMES}
    features.update({"glucose": {"value": glucose, "unit": unit}, "bmi": 30, "age": 40})

    result = validate_record(SPEC, features)

    factor = {"mg/dL": 1.0, "mmol/L": 18.016}.get(unit)
    plausible = factor is not None and 40 <= glucose * factor <= 400
    assert result.ok == plausible, result.errors

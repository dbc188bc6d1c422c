"""The API's renderer (orjson) writes what DRF's JSONRenderer writes for what the API returns, and falls back to DRF
for what orjson would write differently. Floats are the same numbers, though not always the same characters: below
1e-4 orjson writes 1.5e-7 or 0.00001 where Python writes 1.5e-07 or 1e-05."""

import dataclasses
import decimal
import json
import uuid
from datetime import UTC, date, datetime, time, timedelta, timezone
from typing import Any

import pytest
from rest_framework.renderers import JSONRenderer as DRFJSONRenderer

from apps.core.renderers import JSONRenderer


@dataclasses.dataclass
class _Point:
    x: int


SAMPLES: list[Any] = [
    {"id": uuid.UUID(int=7), "created_at": datetime(2026, 12, 5, 13, 0, 1, 123456, tzinfo=UTC),
     "day": date(2026, 12, 5), "at": time(13, 0), "probability": 0.123456789012345, "positive": False,
     "explanation": [{"feature": "glucose", "value": None, "contribution": -0.25}], "audit_seq": 2**62},
    {"error": {"code": "invalid_features", "message": "Zoë 患者 \"quoted\"\n\t", "fields": {"0": ["bad"]}}},
    {"line": "a\u2028b\u2029c", "amount": decimal.Decimal("1.25"), 3: "int key", "tuple": (1, 2)},
    [1, 2.5, "x", None, True, {"nested": [[]]}],
    {"huge": 2**70},  # beyond 64 bits: DRF renders it
    {"when": datetime(2026, 12, 5, 13, 0, 1, tzinfo=timezone(timedelta(hours=2)))},  # no microseconds
    "plain",
]


@pytest.mark.parametrize("data", SAMPLES)
def test_same_bytes_as_drf(data: Any) -> None:
    assert JSONRenderer().render(data, "application/json") == DRFJSONRenderer().render(data, "application/json")


def test_small_floats_are_the_same_numbers() -> None:
    data = {"contribution": -1.5e-07, "tiny": 1e-05, "large": 1e22, "rounded": 0.000001}
    ours, drf = JSONRenderer().render(data, "application/json"), DRFJSONRenderer().render(data, "application/json")
    assert json.loads(ours) == json.loads(drf) == data


def test_indent_and_none_and_unknown_types_are_drfs() -> None:
    data = {"a": [1, {"b": 2}]}
    assert (JSONRenderer().render(data, "application/json; indent=4")
            == DRFJSONRenderer().render(data, "application/json; indent=4"))
    assert JSONRenderer().render(None) == b""
    with pytest.raises(TypeError):  # as DRF: a type neither knows is an error, not silently written
        JSONRenderer().render({"x": object()}, "application/json")
    # A dataclass goes to DRF's encoder too, which refuses it, rather than being written by orjson's own rules.
    for renderer in (JSONRenderer(), DRFJSONRenderer()):
        with pytest.raises(TypeError):
            renderer.render({"p": [_Point(1)]}, "application/json")

from typing import Any

from django import template
from django.urls import NoReverseMatch, reverse

from apps.core.units import unit_display

register = template.Library()


@register.filter(name="unit")
def unit_filter(code: str | None) -> str:
    """`{{ feature.unit|unit }}`: the UCUM code as a person reads it (e.g. mm[Hg] -> mmHg, a -> years)."""
    return unit_display(code)


@register.filter(name="num")
def num_filter(value: Any) -> str:
    """A measured value without noise: at most two decimals, no trailing zeros (147.7312 -> 147.73, 2.0 -> 2)."""
    if value is None or value == "":
        return ""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    return f"{round(number, 2):.10g}"


@register.filter(name="percent")
def percent_filter(probability: Any) -> str:
    """A probability (0..1) as a whole percentage: 0.724 -> 72%."""
    try:
        return f"{round(float(probability) * 100)}%"
    except (TypeError, ValueError):
        return ""


@register.filter(name="quantity")
def quantity_filter(value: Any, unit: str | None) -> str:
    """`{{ value|quantity:unit }}`: "147.73 mg/dL", "33.6 kg/m²", "2" (no unit shown for counts and scores)."""
    shown = num_filter(value)
    if not shown:
        return ""
    readable = unit_display(unit)
    return f"{shown} {readable}" if readable else shown


@register.filter(name="model_card_url")
def model_card_url_filter(label: str) -> str:
    """`{{ "diabetes@3"|model_card_url }}`: the clinicians' model card page of a version label ("" if none)."""
    use_case, _, number = str(label).rpartition("@")
    try:
        return reverse("model-card", args=[use_case, int(number)])
    except (ValueError, NoReverseMatch):
        return ""

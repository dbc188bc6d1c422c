from django import template

from apps.core.units import unit_display

register = template.Library()


@register.filter(name="unit")
def unit_filter(code: str | None) -> str:
    """`{{ feature.unit|unit }}`: the UCUM code as a person reads it (e.g. mm[Hg] -> mmHg, a -> years)."""
    return unit_display(code)

"""Server-side SVG charts of the monitoring pages, drawn like apps/core/charts.py (its SVG wrapper and palette):
presentation attributes only, no script or style (CSP), a title and a description for screen readers. The pages
show the same numbers in tables. Callers pass plain data."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from django.utils.html import format_html
from django.utils.safestring import SafeString

from apps.core.charts import GRID, LOWERS, MUTED, RAISES, TEXT, _num, _svg

REFERENCE_FILL = "#9aa8b6"
CURRENT_FILL = "#0b5cad"


@dataclass(frozen=True)
class PsiBar:
    label: str
    psi: float | None  # None: not computed (see note)
    alert: bool
    note: str = ""


def psi_chart(bars: Sequence[PsiBar], *, limit: float, title: str) -> SafeString:
    """One horizontal bar per feature, length proportional to its PSI, the alert limit as a dashed line."""
    width, row, left, top = 640, 30, 150, 26
    scale_max = max([limit * 1.6, *[b.psi * 1.1 for b in bars if b.psi is not None]])
    plot = width - left - 70
    height = top + row * len(bars) + 8

    def x_of(value: float) -> float:
        return left + plot * min(value, scale_max) / scale_max

    body = [format_html('<line x1="{}" y1="{}" x2="{}" y2="{}" stroke="{}" stroke-width="1.5" '
                        'stroke-dasharray="5 3"/><text x="{}" y="16" text-anchor="middle" fill="{}" font-size="12">'
                        'alert above {}</text>', _num(x_of(limit)), top - 6, _num(x_of(limit)), height - 2, RAISES,
                        _num(x_of(limit)), RAISES, f"{limit:g}"),
            format_html('<line x1="{}" y1="{}" x2="{}" y2="{}" stroke="{}" stroke-width="1"/>', left, top - 6, left,
                        height - 2, GRID)]
    for i, bar in enumerate(bars):
        y = top + i * row
        body.append(format_html('<text x="{}" y="{}" text-anchor="end">{}</text>', left - 8, y + 15, bar.label))
        if bar.psi is None:
            body.append(format_html('<text x="{}" y="{}" fill="{}" font-size="12">not computed{}</text>', left + 6,
                                    y + 15, MUTED, f": {bar.note}" if bar.note else ""))
            continue
        colour = RAISES if bar.alert else LOWERS
        length = max(x_of(bar.psi) - left, 1.0)
        body.append(format_html(
            '<g><title>{}: PSI {}{}</title><rect x="{}" y="{}" width="{}" height="18" rx="2" fill="{}"/>'
            '<text x="{}" y="{}" fill="{}" font-weight="600" font-size="13">{}</text></g>',
            bar.label, f"{bar.psi:.3f}", " (alert)" if bar.alert else "", left, y + 2, _num(length), colour,
            _num(left + length + 6), y + 15, colour, f"{bar.psi:.2f}"))
    description = "; ".join(f"{b.label}: {'not computed' if b.psi is None else f'PSI {b.psi:.3f}'}"
                            f"{' (alert)' if b.alert else ''}" for b in bars)
    return _svg(width=width, height=height, title=title, description=description or "no features", body=body,
                css_class="chart chart-psi")


def bin_labels(edges: Sequence[float], *, percent: bool = False) -> list[str]:
    """Labels of the bins `ml.evaluation.reference_profile` defines: (-inf, e0], (e0, e1], ..., (ek, inf)."""

    def show(value: float) -> str:
        return f"{value * 100:.0f}%" if percent else f"{value:.4g}"

    if not edges:
        return ["all"]
    labels = [f"≤ {show(edges[0])}"]
    labels += [f"{show(a)}–{show(b)}" for a, b in zip(edges, edges[1:], strict=False)]
    labels.append(f"> {show(edges[-1])}")
    return labels


def distribution_chart(*, labels: Sequence[str], reference: Sequence[float], current: Sequence[float],
                       title: str) -> SafeString:
    """Share of values per bin: the training reference (grey) beside the monitoring window (blue)."""
    width, height, left, right, top, bottom = 640, 230, 46, 10, 30, 58
    plot_w, plot_h = width - left - right, height - top - bottom
    bins = max(len(labels), 1)
    top_value = max([0.05, *reference, *current]) * 1.15
    slot = plot_w / bins

    def y_of(value: float) -> float:
        return top + plot_h * (1 - value / top_value)

    body = [format_html('<rect x="{}" y="6" width="12" height="12" fill="{}"/><text x="{}" y="16" font-size="12">'
                        'training reference</text><rect x="{}" y="6" width="12" height="12" fill="{}"/>'
                        '<text x="{}" y="16" font-size="12">this window</text>', left, REFERENCE_FILL, left + 16,
                        left + 150, CURRENT_FILL, left + 166)]
    for tick in (0.0, top_value / 2, top_value / 1.15):
        body.append(format_html('<line x1="{}" y1="{}" x2="{}" y2="{}" stroke="{}" stroke-width="1"/>'
                                '<text x="{}" y="{}" text-anchor="end" fill="{}" font-size="11">{}%</text>',
                                left, _num(y_of(tick)), width - right, _num(y_of(tick)), GRID, left - 4,
                                _num(y_of(tick) + 4), MUTED, round(tick * 100)))
    for i, label in enumerate(labels):
        x = left + i * slot
        bar_w = max(slot / 2 - 3, 1.0)
        for j, (values, fill, what) in enumerate(((reference, REFERENCE_FILL, "reference"),
                                                  (current, CURRENT_FILL, "window"))):
            if i >= len(values):
                continue
            value = float(values[i])
            body.append(format_html(
                '<rect x="{}" y="{}" width="{}" height="{}" fill="{}"><title>{} {}: {}%</title></rect>',
                _num(x + 2 + j * (bar_w + 1)), _num(y_of(value)), _num(bar_w), _num(max(y_of(0) - y_of(value), 0)),
                fill, label, what, f"{value * 100:.1f}"))
        body.append(format_html('<text x="{}" y="{}" text-anchor="end" fill="{}" font-size="11" '
                                'transform="rotate(-35 {} {})">{}</text>', _num(x + slot / 2), height - bottom + 14,
                                TEXT, _num(x + slot / 2), height - bottom + 14, label))
    description = "; ".join(
        f"{label}: reference {reference[i] * 100 if i < len(reference) else 0:.1f}%, "
        f"window {current[i] * 100 if i < len(current) else 0:.1f}%" for i, label in enumerate(labels))
    return _svg(width=width, height=height, title=title, description=description, body=body,
                css_class="chart chart-distribution")


@dataclass(frozen=True)
class HistoryPoint:
    at: datetime
    value: float | None
    label: str = ""


def history_chart(series: Sequence[tuple[str, str, Sequence[HistoryPoint]]], *, limit: float | None,
                  title: str, y_label: str) -> SafeString:
    """Values over time, one line per series (name, colour, points), the alert limit as a dashed line."""
    width, height, left, right, top, bottom = 640, 220, 52, 16, 26, 36
    plot_w, plot_h = width - left - right, height - top - bottom
    points = [p for _name, _colour, pts in series for p in pts if p.value is not None]
    times = [p.at for _n, _c, pts in series for p in pts]
    top_value = max([limit * 1.4 if limit else 0.0, *[p.value * 1.1 for p in points if p.value is not None], 0.1])
    start, end = (min(times), max(times)) if times else (None, None)
    span = (end - start).total_seconds() if start and end else 0.0

    def x_of(at: datetime) -> float:
        if not span or start is None:
            return left + plot_w / 2
        return left + plot_w * (at - start).total_seconds() / span

    def y_of(value: float) -> float:
        return top + plot_h * (1 - min(value, top_value) / top_value)

    body = [format_html('<text x="14" y="{}" transform="rotate(-90 14 {})" text-anchor="middle" fill="{}" '
                        'font-size="12">{}</text>', _num(top + plot_h / 2), _num(top + plot_h / 2), MUTED, y_label)]
    for tick in (0.0, top_value / 2, top_value):
        body.append(format_html('<line x1="{}" y1="{}" x2="{}" y2="{}" stroke="{}" stroke-width="1"/>'
                                '<text x="{}" y="{}" text-anchor="end" fill="{}" font-size="11">{}</text>',
                                left, _num(y_of(tick)), width - right, _num(y_of(tick)), GRID, left - 4,
                                _num(y_of(tick) + 4), MUTED, f"{tick:.2f}"))
    if limit is not None:
        body.append(format_html('<line x1="{}" y1="{}" x2="{}" y2="{}" stroke="{}" stroke-width="1.5" '
                                'stroke-dasharray="5 3"/>', left, _num(y_of(limit)), width - right, _num(y_of(limit)),
                                RAISES))
    legend_x = left
    for name, colour, pts in series:
        body.append(format_html('<rect x="{}" y="6" width="12" height="12" fill="{}"/><text x="{}" y="16" '
                                'font-size="12">{}</text>', legend_x, colour, legend_x + 16, name))
        legend_x += 24 + 8 * len(name)
        present = [p for p in pts if p.value is not None]
        if len(present) > 1:
            line = " ".join(f"{_num(x_of(p.at))},{_num(y_of(p.value))}" for p in present if p.value is not None)
            body.append(format_html('<polyline points="{}" fill="none" stroke="{}" stroke-width="2"/>', line, colour))
        for p in present:
            value = float(p.value or 0.0)
            body.append(format_html('<circle cx="{}" cy="{}" r="4" fill="{}"><title>{} UTC: {} {}</title></circle>',
                                    _num(x_of(p.at)), _num(y_of(value)), colour, p.at.strftime("%Y-%m-%d %H:%M"),
                                    name, f"{value:.3f}"))
    if not points:
        body.append(format_html('<text x="{}" y="{}" text-anchor="middle" fill="{}">No values yet</text>',
                                _num(left + plot_w / 2), _num(top + plot_h / 2), MUTED))
    if start and end:
        body.append(format_html('<text x="{}" y="{}" fill="{}" font-size="11">{}</text>', left, height - 8, MUTED,
                                start.strftime("%Y-%m-%d")))
        body.append(format_html('<text x="{}" y="{}" text-anchor="end" fill="{}" font-size="11">{}</text>',
                                width - right, height - 8, MUTED, end.strftime("%Y-%m-%d")))
    description = "; ".join(f"{name}: " + ", ".join(f"{p.at:%Y-%m-%d} {p.value:.3f}" for p in pts
                                                    if p.value is not None) for name, _c, pts in series)
    return _svg(width=width, height=height, title=title, description=description or "no values", body=body,
                css_class="chart chart-history")

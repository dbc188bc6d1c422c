"""Server-side SVG charts for the clinician pages.

The Content-Security-Policy forbids inline `style` attributes and `<style>` elements, so every chart is plain SVG
drawn with presentation attributes (x, y, width, height, fill, stroke, font-size) and no script. Each chart is an
`role="img"` with a title and a description for screen readers; the pages also show the same numbers as a table.
Callers pass plain data (no models), so any app can use these functions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import count

from django.utils.html import format_html
from django.utils.safestring import SafeString, mark_safe

FONT = "system-ui, -apple-system, Segoe UI, Roboto, sans-serif"
TEXT = "#1d2733"
MUTED = "#5b6b7c"
GRID = "#c9d3dd"
RAISES = "#b00020"
LOWERS = "#1e7b34"
BAND_COLOURS = {"low": "#1e7b34", "moderate": "#a66300", "high": "#b00020"}
BAND_FILLS = {"low": "#e8f4ec", "moderate": "#fff4e0", "high": "#fdecee"}

_ids = count(1)


def _num(value: float) -> str:
    """Coordinates with two decimals at most (smaller pages, stable output)."""
    return f"{value:.2f}".rstrip("0").rstrip(".")


def _svg(*, width: int, height: int, title: str, description: str, body: list[str], css_class: str) -> SafeString:
    uid = next(_ids)
    head = format_html(
        '<svg xmlns="http://www.w3.org/2000/svg" class="{}" viewBox="0 0 {} {}" width="100%" '
        'role="img" aria-labelledby="chart{}-title chart{}-desc" font-family="{}" font-size="14" fill="{}">'
        '<title id="chart{}-title">{}</title><desc id="chart{}-desc">{}</desc>',
        css_class, width, height, uid, uid, FONT, TEXT, uid, title, uid, description,
    )
    return mark_safe(head + "".join(body) + "</svg>")  # noqa: S308 - every part is built with format_html/escape


# --- Contributions of the features to one prediction ------------------------------------------------------------


@dataclass(frozen=True)
class ContributionBar:
    label: str  # the feature as a person reads it
    value_text: str  # "148 mg/dL", or "missing"
    contribution: float  # log-odds; > 0 raises the risk
    note: str = ""  # e.g. "imputed" or "outside the training data"


def _fit(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def contribution_chart(bars: Sequence[ContributionBar], *, title: str, compact: bool = False) -> SafeString:
    """A diverging horizontal bar chart, one row per feature: its label and value first, then its bar (to the right
    of the centre line it raises the risk, to the left it lowers it; length proportional to |contribution|) with the
    signed contribution at the end of the bar. `compact`: a narrow layout for phones (value on a line of its own)."""
    width, row, label_chars = (360, 68, 44) if compact else (640, 52, 74)
    top = 34
    bar_y, number_y = (40, 53) if compact else (22, 35)
    centre = width / 2
    half = centre - (54 if compact else 60)  # room for the number at the end of the longest bar
    height = top + row * len(bars) + 4
    largest = max((abs(b.contribution) for b in bars), default=0.0) or 1.0
    body = [
        format_html('<text x="{}" y="16" text-anchor="end" fill="{}" font-size="13">◀ lowers risk</text>',
                    _num(centre - 8), LOWERS),
        format_html('<text x="{}" y="16" fill="{}" font-size="13">raises risk ▶</text>', _num(centre + 8), RAISES),
        format_html('<line x1="{}" y1="22" x2="{}" y2="{}" stroke="{}" stroke-width="1" stroke-dasharray="3 3"/>',
                    _num(centre), _num(centre), height - 2, GRID),
    ]
    for i, bar in enumerate(bars):
        y = top + i * row
        raises = bar.contribution > 0
        length = max(abs(bar.contribution) / largest * half, 1.0)
        x = centre if raises else centre - length
        colour = RAISES if raises else LOWERS
        sign = "+" if bar.contribution > 0 else "−" if bar.contribution < 0 else "±"
        effect = "raises" if raises else "lowers" if bar.contribution < 0 else "does not change"
        note = f" · {bar.note}" if bar.note else ""
        detail = f"{bar.value_text}{note}"
        if compact:
            text = format_html('<text x="0" y="{}" font-weight="600">{}</text>'
                               '<text x="0" y="{}" fill="{}">{}</text>',
                               y + 14, _fit(bar.label, label_chars), y + 31, MUTED, _fit(detail, label_chars + 4))
        else:
            text = format_html('<text x="0" y="{}" font-weight="600">{} <tspan fill="{}" font-weight="400">{}</tspan>'
                               '</text>', y + 14, _fit(bar.label, max(label_chars - len(detail) - 1, 24)), MUTED,
                               detail)
        number_x = centre + length + 6 if raises else centre - length - 6
        body.append(format_html(
            '<g><title>{}: {}, {} the risk by {} log-odds{}</title>{}'
            '<rect x="{}" y="{}" width="{}" height="16" rx="2" fill="{}"/>'
            '<text x="{}" y="{}" text-anchor="{}" fill="{}" font-weight="600" font-size="13">{}{}</text></g>',
            bar.label, bar.value_text, effect, f"{abs(bar.contribution):.3f}", note, text,
            _num(x), y + bar_y, _num(length), colour,
            _num(number_x), y + number_y, "start" if raises else "end", colour, sign, f"{abs(bar.contribution):.2f}",
        ))
    description = "; ".join(
        f"{b.label} {b.value_text}: {'raises' if b.contribution > 0 else 'lowers'} risk by {abs(b.contribution):.2f}"
        for b in bars
    )
    return _svg(width=width, height=height, title=title, description=description or "no factors", body=body,
                css_class="chart chart-factors chart-compact" if compact else "chart chart-factors chart-wide")


# --- Risk over time ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RiskPoint:
    at: datetime
    probability: float  # 0..1
    threshold: float  # the answering model's decision threshold
    band: str  # low / moderate / high
    label: str  # shown on hover, e.g. "diabetes@3"


def risk_over_time_chart(points: Sequence[RiskPoint], *, title: str, compact: bool = False) -> SafeString:
    """Probability (0-100%) of each prediction against time, the decision threshold of the model that answered as a
    dashed line, and the risk bands of the latest model shaded behind (low, moderate from half the threshold, high
    from the threshold). `compact`: a narrow layout for phones."""
    width, height = (380, 230) if compact else (640, 250)
    left, right, top, bottom = 52, 20, 14, 44
    plot_w, plot_h = width - left - right, height - top - bottom
    ordered = sorted(points, key=lambda p: p.at)

    def y_of(p: float) -> float:
        return top + plot_h * (1 - min(max(p, 0.0), 1.0))

    if ordered:
        start, end = ordered[0].at, ordered[-1].at
        span = (end - start).total_seconds()
    else:
        start = end = None
        span = 0.0

    def x_of(at: datetime) -> float:
        if not span or start is None:
            return left + plot_w / 2
        return left + plot_w * (at - start).total_seconds() / span

    body: list[str] = []
    if ordered:
        latest = ordered[-1].threshold
        bands = (("high", latest, 1.0), ("moderate", latest / 2, latest), ("low", 0.0, latest / 2))
        for band, low, high in bands:
            body.append(format_html('<rect x="{}" y="{}" width="{}" height="{}" fill="{}"/>',
                                    left, _num(y_of(high)), plot_w, _num(y_of(low) - y_of(high)), BAND_FILLS[band]))
    for tick in (0, 25, 50, 75, 100):
        y = y_of(tick / 100)
        body.append(format_html(
            '<line x1="{}" y1="{}" x2="{}" y2="{}" stroke="{}" stroke-width="1"/>'
            '<text x="{}" y="{}" text-anchor="end" fill="{}" font-size="12">{}%</text>',
            left, _num(y), left + plot_w, _num(y), GRID, left - 6, _num(y + 4), MUTED, tick))
    body.append(format_html(
        '<text x="14" y="{}" transform="rotate(-90 14 {})" text-anchor="middle" fill="{}" font-size="12">'
        'Estimated risk</text>', _num(top + plot_h / 2), _num(top + plot_h / 2), MUTED))
    if not ordered:
        body.append(format_html('<text x="{}" y="{}" text-anchor="middle" fill="{}">No predictions yet</text>',
                                _num(left + plot_w / 2), _num(top + plot_h / 2), MUTED))
        return _svg(width=width, height=height, title=title, description="No predictions yet.", body=body,
                    css_class=f"chart chart-history {'chart-compact' if compact else 'chart-wide'}")

    # Threshold of the model that answered each prediction (steps when a new model version was promoted).
    steps = []
    for i, p in enumerate(ordered):
        x, y = x_of(p.at), y_of(p.threshold)
        if i == 0:
            steps.append(f"{_num(left if span else x - 40)},{_num(y)}")
        else:
            steps.append(f"{_num(x)},{_num(y_of(ordered[i - 1].threshold))}")
        steps.append(f"{_num(x)},{_num(y)}")
    steps.append(f"{_num(left + plot_w if span else x_of(ordered[-1].at) + 40)},{_num(y_of(ordered[-1].threshold))}")
    body.append(format_html('<polyline points="{}" fill="none" stroke="{}" stroke-width="1.5" '
                            'stroke-dasharray="6 4"/>', " ".join(steps), TEXT))
    body.append(format_html('<text x="{}" y="{}" text-anchor="end" fill="{}" font-size="12">threshold {}%</text>',
                            left + plot_w - 2, _num(y_of(ordered[-1].threshold) - 5), TEXT,
                            round(ordered[-1].threshold * 100)))
    if len(ordered) > 1:
        line = " ".join(f"{_num(x_of(p.at))},{_num(y_of(p.probability))}" for p in ordered)
        body.append(format_html('<polyline points="{}" fill="none" stroke="{}" stroke-width="2"/>', line, "#0b5cad"))
    for p in ordered:
        body.append(format_html(
            '<circle cx="{}" cy="{}" r="6" fill="{}" stroke="#ffffff" stroke-width="2">'
            '<title>{} UTC: {}% ({} risk), {}</title></circle>',
            _num(x_of(p.at)), _num(y_of(p.probability)), BAND_COLOURS.get(p.band, TEXT),
            p.at.strftime("%Y-%m-%d %H:%M"), round(p.probability * 100), p.band, p.label))
    ticks = [ordered[0]] if not span else [ordered[0], ordered[-1]]
    for i, p in enumerate(ticks):
        anchor = "middle" if not span else ("start" if i == 0 else "end")
        body.append(format_html('<text x="{}" y="{}" text-anchor="{}" fill="{}" font-size="12">{}</text>',
                                _num(x_of(p.at)), height - bottom + 20, anchor, MUTED, p.at.strftime("%Y-%m-%d")))
    description = "; ".join(f"{p.at:%Y-%m-%d %H:%M} UTC {round(p.probability * 100)}% ({p.band})" for p in ordered)
    return _svg(width=width, height=height, title=title, description=description, body=body,
                css_class=f"chart chart-history {'chart-compact' if compact else 'chart-wide'}")


# --- One probability on the risk scale ------------------------------------------------------------------------------


def risk_scale_chart(*, probability: float, threshold: float, moderate_from: float, band: str,
                     compact: bool = False) -> SafeString:
    """A 0-100% scale with the low / moderate / high zones, the decision threshold and this estimate marked."""
    width, height, left, right = (340 if compact else 560), 76, 12, 12
    scale = width - left - right
    bar_top, bar_h = 30, 16

    def x_of(p: float) -> float:
        return left + scale * min(max(p, 0.0), 1.0)

    def anchor(p: float) -> str:
        return "start" if p < 0.12 else "end" if p > 0.88 else "middle"

    body = []
    for zone, low, high in (("low", 0.0, moderate_from), ("moderate", moderate_from, threshold),
                            ("high", threshold, 1.0)):
        body.append(format_html('<rect x="{}" y="{}" width="{}" height="{}" fill="{}"/>', _num(x_of(low)), bar_top,
                                _num(max(x_of(high) - x_of(low), 0.0)), bar_h, BAND_FILLS[zone]))
    body.append(format_html('<rect x="{}" y="{}" width="{}" height="{}" fill="none" stroke="{}"/>',
                            left, bar_top, scale, bar_h, GRID))
    body.append(format_html('<line x1="{}" y1="{}" x2="{}" y2="{}" stroke="{}" stroke-width="2" '
                            'stroke-dasharray="4 2"/>', _num(x_of(threshold)), bar_top - 4, _num(x_of(threshold)),
                            bar_top + bar_h + 8, TEXT))
    body.append(format_html('<text x="{}" y="{}" text-anchor="{}" font-size="13" fill="{}">threshold {}%</text>',
                            _num(x_of(threshold)), bar_top + bar_h + 22, anchor(threshold), TEXT,
                            round(threshold * 100)))
    marker = x_of(probability)
    colour = BAND_COLOURS.get(band, TEXT)
    body.append(format_html('<path d="M {} {} l -7 -11 h 14 z" fill="{}"/>', _num(marker), bar_top + 4, colour))
    body.append(format_html('<rect x="{}" y="{}" width="3" height="{}" fill="{}"/>', _num(marker - 1.5), bar_top,
                            bar_h, colour))
    body.append(format_html('<text x="{}" y="14" text-anchor="{}" font-size="13" font-weight="600" fill="{}">'
                            'this estimate {}%</text>', _num(marker), anchor(probability), colour,
                            round(probability * 100)))
    for tick in (0, 100):
        body.append(format_html('<text x="{}" y="{}" text-anchor="{}" font-size="12" fill="{}">{}%</text>',
                                _num(x_of(tick / 100)), bar_top + bar_h + 22, "start" if tick == 0 else "end", MUTED,
                                tick))
    description = (f"Estimated risk {round(probability * 100)}% ({band}); decision threshold {round(threshold * 100)}%;"
                   f" moderate from {round(moderate_from * 100)}%.")
    return _svg(width=width, height=height, title="Where this estimate lies on the risk scale",
                description=description, body=body,
                css_class=f"chart chart-scale {'chart-compact' if compact else 'chart-wide'}")

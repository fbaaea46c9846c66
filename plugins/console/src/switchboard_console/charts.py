"""Bar charts as SVG geometry, computed here and drawn by the ``chart`` template macro: no
script, nothing fetched. Each bar carries its value, so a test (or a screen reader) reads
the figures off the chart itself."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

COLORS = ("#2f6fde", "#e0693a", "#3aa55d", "#9a5bd4", "#c9a227")


def nice_max(value: float) -> float:
    """The axis' top: four steps of 1, 2, 2.5 or 5 times a power of ten, at least
    ``value`` (so the ticks are round numbers)."""
    if value <= 0:
        return 4.0
    quarter = value / 4
    power = 10 ** math.floor(math.log10(quarter))
    step = next(s * power for s in (1, 2, 2.5, 5, 10) if quarter <= s * power + 1e-12)
    return float(4 * step)


def bar_chart(
    categories: Sequence[str],
    series: Sequence[tuple[str, Sequence[float | None]]],
    *,
    height: int = 220,
    bar_width: int = 26,
    label_width: int = 48,
    min_width: int = 520,
) -> dict[str, Any]:
    """Grouped vertical bars: one group per category, one bar per series; a few groups
    spread over ``min_width``."""
    top = nice_max(max((v or 0 for _, values in series for v in values), default=0))
    spread = (min_width - label_width - 10) / max(1, len(categories))
    group = max(bar_width * len(series) + 18, min(spread, 160))
    plot_h = height - 40
    width = label_width + max(1, len(categories)) * group + 10
    bars = []
    for ci, category in enumerate(categories):
        for si, (name, values) in enumerate(series):
            value = values[ci] or 0
            h = plot_h * value / top
            bars.append(
                {
                    "x": label_width
                    + ci * group
                    + (group - bar_width * len(series)) / 2
                    + si * bar_width,
                    "y": 10 + plot_h - h,
                    "w": bar_width - 2,
                    "h": h,
                    "value": value,
                    "series": name,
                    "category": category,
                    "color": COLORS[si % len(COLORS)],
                }
            )
    ticks = [{"y": 10 + plot_h - plot_h * k / 4, "label": _tick(top * k / 4)} for k in range(5)]
    labels = [
        {"x": label_width + ci * group + group / 2, "label": c} for ci, c in enumerate(categories)
    ]
    legend = [
        {"name": name, "color": COLORS[i % len(COLORS)]} for i, (name, _) in enumerate(series)
    ]
    return {
        "width": width,
        "height": height,
        "plot_bottom": 10 + plot_h,
        "left": label_width,
        "bars": bars,
        "ticks": ticks,
        "labels": labels,
        "legend": legend,
    }


def _tick(value: float) -> str:
    return f"{round(value, 6):g}"

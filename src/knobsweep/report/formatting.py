"""Formatting shared by the report's renderers (`html`, `verdict`): durations, plotly labels, a
plotly layout and rounding for the figures' JSON."""

from __future__ import annotations

import html as _html
from typing import Any


def format_duration(seconds: float) -> str:
    seconds = float(seconds)
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m {secs:02d}s"


def label(text: Any) -> str:
    """Text for plotly labels: escaped, since plotly.js interprets some HTML tags."""
    return _html.escape(str(text), quote=False)


def plot_layout(title: str, xtitle: str, ytitle: str) -> dict:
    grid = {"gridcolor": "#e5e5e5", "zerolinecolor": "#cccccc"}
    return {
        "title": {"text": title},
        "paper_bgcolor": "white",
        "plot_bgcolor": "white",
        "xaxis": {"title": {"text": xtitle}, **grid},
        "yaxis": {"title": {"text": ytitle}, **grid},
        "legend": {"title": {"text": "run"}},
        "margin": {"l": 60, "r": 20, "t": 50, "b": 50},
        "height": 420,
    }


def rounded(value: float) -> float:
    return float(f"{value:.4g}")

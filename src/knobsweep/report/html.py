"""Render collected frames into one self-contained HTML page (plotly.js inlined, no network).

Escaping: every piece of user text goes through Jinja2 autoescape. Figure data is embedded as
JSON inside <script type="application/json"> with <, > and & written as \\u escapes, and
trace labels are HTML-escaped because plotly.js renders a subset of HTML in legends and ticks.
"""

from __future__ import annotations

import base64
import functools
import gzip
import html as _html
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
import pandas as pd
import plotly.offline
import yaml
from plotly.colors import qualitative

from knobsweep.cost import Cost
from knobsweep.report.benchmarks import benchmark_rows, regression_text
from knobsweep.report.collect import NOT_RUN, PARSERS, Collected, format_value, wandb_links
from knobsweep.report.formatting import format_duration, label, plot_layout, rounded
from knobsweep.report.stats import SEED_LIMITED
from knobsweep.report.verdict import cost_text, forest_figure, how_sure, total_cost, verdict_table

TEMPLATE = "template.html.jinja"
PALETTE = qualitative.Plotly + qualitative.D3 + qualitative.Dark24
ALWAYS_SHOWN_CURVES = (("reward", "Reward"), ("loss", "Loss"))
MAX_TEXT = 8000  # characters of a sample's prompt/completion shown before truncation
MAX_POINTS = 250  # points per curve drawn; longer curves are bucket-averaged (curves.csv is full)
MIN_POINTS = 60
POINTS_PER_CHART = 12_000  # with many runs each curve gets fewer points (100 runs: 120)


@dataclass(frozen=True)
class ReportMeta:
    experiment: str
    spec_path: str
    mode: str
    generated_at: str
    version: str
    baseline_config: dict | None
    git_commit: str = ""
    versions: dict | None = None


@dataclass(frozen=True)
class Column:
    key: str  # column of Collected.runs
    label: str
    kind: str  # text | int | float | delta | duration | knob | status | ci | pct | meanstd | cost


def _any(collected: Collected, column: str) -> bool:
    return column in collected.runs.columns and collected.runs[column].map(lambda v: not missing(v)).any()


def _seeded(collected: Collected) -> bool:
    return _any(collected, "arm_seeds") and collected.runs["arm_seeds"].map(lambda v: (v or 0) > 1).any()


def runs_columns(collected: Collected) -> list[Column]:
    knob_columns = [c for c in collected.runs.columns if c in collected.knobs]
    seeded = _seeded(collected)
    return [
        Column("run", "Run", "text"),
        *(Column(k, k, "knob") for k in knob_columns),
        Column("hypothesis", "Hypothesis", "text"),
        Column("seed", "Seed", "int"),
        Column("status", "Status", "status"),
        Column("steps", "Steps", "int"),
        Column("final_reward", "Final train reward", "float"),
        Column("reward_first20", "Reward first 20%", "float"),
        Column("reward_last20", "Reward last 20%", "float"),
        Column("eval_score", "Eval score [95% CI]", "ci"),
        *([Column("arm_eval_mean", "Eval mean ± std over seeds", "meanstd")] if seeded else []),
        Column("eval_correct", "Correct", "float"),
        Column("eval_format", "Format", "float"),
        Column("delta_eval_score", "Δ eval vs baseline", "delta"),
        Column("delta_final_reward", "Δ final reward vs baseline", "delta"),
        Column("health_warnings", "Health warnings", "int"),
        Column("train_time_s", "Training time", "duration"),
        Column("gpu_hours", "Cost (train + eval)", "cost"),
    ]


def eval_columns(collected: Collected) -> list[Column]:
    parsers = [p for p in PARSERS if _any(collected, f"eval_{p}")]
    return [
        Column("run", "Model", "text"),
        Column("status", "Status", "status"),
        Column("eval_score", "Score [95% CI]", "ci"),
        Column("eval_correct", "Correct", "float"),
        Column("eval_format", "Format", "float"),
        Column("eval_n", "n", "int"),
        Column("eval_parse_failures", "Parse failures", "int"),
        *[
            c
            for p in parsers
            for c in (
                Column(f"eval_{p}", f"{p} accuracy [95% CI]", "ci"),
                Column(f"eval_{p}_parse_fail_rate", f"{p} parse failures", "pct"),
            )
        ],
        Column("delta_eval_score", "Δ vs baseline", "delta"),
    ]


# ---------------------------------------------------------------- cell formatting


def missing(value: Any) -> bool:
    if value is None:
        return True
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):  # containers
        return False


def format_cell(value: Any, kind: str) -> str:
    if missing(value):
        return ""
    if kind == "knob":
        return format_value(value)
    if kind in ("float", "delta"):
        number = float(value)
        if not math.isfinite(number):
            return str(number)
        return f"{number:+.4f}" if kind == "delta" else f"{number:.4f}"
    if kind == "int":
        return str(int(value)) if isinstance(value, (int, float)) and float(value).is_integer() else str(value)
    if kind == "duration":
        return format_duration(value)
    if kind == "pct":
        return f"{100 * float(value):.1f}%"
    return str(value)


def _ci_text(row: pd.Series, key: str) -> str:
    low, high = row.get(f"{key}_ci_low"), row.get(f"{key}_ci_high")
    if missing(low) or missing(high):
        return ""
    return f" [{float(low):.3f}, {float(high):.3f}]"


def sort_key(value: Any, kind: str) -> str:
    """What the table's sorter compares: numbers as numbers, everything else as text."""
    if missing(value):
        return ""
    if kind in ("float", "delta", "int", "duration", "ci", "pct", "meanstd") and isinstance(value, (int, float)):
        return repr(float(value))
    return str(value)


def cell(row: pd.Series, column: Column, changed: set[str], baseline: str | None) -> dict:
    value = row[column.key]
    classes = []
    title = ""
    text = format_cell(value, "float" if column.kind in ("ci", "meanstd") else column.kind)
    if column.kind == "ci" and text:
        text += _ci_text(row, column.key)
    if column.kind == "cost":
        text = cost_text(row)
        hours = sum(float(row.get(k) or 0) for k in ("gpu_hours", "cpu_hours"))
        return {
            "text": text,
            "classes": "num",
            "title": "device-hours: GPU-hours for stages on GPUs, CPU-hours (cores x hours) otherwise",
            "sort": repr(hours) if text else "",
        }
    if column.kind == "meanstd" and text and not missing(row.get("arm_eval_std")):
        text += f" ± {float(row['arm_eval_std']):.4f} (n={row['arm_seeds']})"
    if column.kind in ("float", "delta", "int", "duration", "ci", "pct", "meanstd"):
        classes.append("num")
        if not missing(value):
            title = repr(value)
    if column.key in changed:
        classes.append("changed")
        title = "changed from the baseline"
    if column.kind == "delta" and not missing(value):
        noise = column.key == "delta_eval_score" and row.get("delta_eval_noise") is True
        if noise:
            classes.append("noise")
            text += f" {row.get('delta_eval_verdict')}"
            title = (
                "one seed per side: beyond eval sampling, but the run-to-run spread is unknown (see the verdict table)"
                if row.get("delta_eval_verdict") == SEED_LIMITED
                else "the 95% CI of this arm's Δ contains 0 (see the verdict table)"
            )
        elif value > 0:
            classes.append("pos")
        elif value < 0:
            classes.append("neg")
    if column.kind == "status":
        classes.append(status_class(value))
        title = row.get("reason") or ""
    if column.key == "hypothesis" and text:
        title = text  # the cell shows one line; the whole text on hover (and on click)
    if column.key == "run" and baseline is not None and value == baseline and not row["reference"]:
        title = "the baseline: deltas are measured against this run"
    return {"text": text, "classes": " ".join(classes), "title": title, "sort": sort_key(value, column.kind)}


def status_class(state: Any) -> str:
    text = str(state or NOT_RUN).lower()
    return "status-" + "".join(ch if ch.isalnum() else "-" for ch in text)


def table(frame: pd.DataFrame, columns: list[Column], collected: Collected) -> list[dict]:
    rows = []
    for _, row in frame.iterrows():
        changed = set() if row["reference"] else collected.changed.get(row["run"], set())
        kind = "reference" if row["reference"] else "baseline" if row["run"] == collected.baseline else "run"
        rows.append(
            {
                "classes": f"{kind} {status_class(row['status'])}",
                "reason": row.get("reason") or "",
                "cells": [cell(row, column, changed, collected.baseline) for column in columns],
            }
        )
    return rows


# ---------------------------------------------------------------- figures


def run_colors(collected: Collected) -> dict[str, str]:
    names = list(collected.runs.loc[~collected.runs["reference"].astype(bool), "run"])
    return {name: PALETTE[index % len(PALETTE)] for index, name in enumerate(names)}


def downsample(x, y, limit: int = MAX_POINTS) -> tuple[list[float], list[float | None]]:
    """At most `limit` points: consecutive buckets averaged (x and y alike). A y that is not a finite
    number (a step that did not compute the metric) is left out of its bucket's mean; a bucket
    with none becomes None, a gap in the drawn line."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    if len(x) > limit:
        starts = (np.arange(limit) * len(x)) // limit
        counts = np.diff(np.append(starts, len(x)))
        finite = np.isfinite(y)
        x = np.add.reduceat(x, starts) / counts
        with np.errstate(invalid="ignore", divide="ignore"):
            y = np.add.reduceat(np.where(finite, y, 0.0), starts) / np.add.reduceat(finite.astype(float), starts)
    return [rounded(v) for v in x.tolist()], [rounded(v) if math.isfinite(v) else None for v in y.tolist()]


def points_per_run(runs: int) -> int:
    """Display budget: MAX_POINTS per curve, fewer when many runs share a chart."""
    return max(MIN_POINTS, min(MAX_POINTS, POINTS_PER_CHART // max(1, runs)))


def curve_figure(collected: Collected, metric: str, title: str) -> dict | None:
    """One line per run (x = step), hover compares runs at a step; None when nothing logged it."""
    metrics = collected.metrics
    if metrics.empty or metric not in metrics.columns:
        return None
    colors = run_colors(collected)
    layout = plot_layout(title, "step", metric)
    layout["hovermode"] = "x unified"
    data = []
    downsampled = False
    limit = points_per_run(len(colors))
    for name, frame in metrics.groupby("run", sort=False):
        if name not in colors:
            continue
        values = frame[metric].to_numpy(dtype=float)
        finite = np.flatnonzero(np.isfinite(values))
        if not finite.size:
            continue
        # From the first to the last step that logged it; a step in between that did not compute it
        # (null / absent in metrics.jsonl) stays a gap in the line, never a 0.
        span = slice(finite[0], finite[-1] + 1)
        steps = frame["step"].to_numpy(dtype=float)[span]
        x, y = downsample(steps, values[span], limit)
        downsampled |= len(x) < len(steps)
        data.append(
            {
                "type": "scatter",
                "x": x,
                "y": y,
                # Markers where gaps could leave a lone point, which a line alone would not show.
                "mode": "lines+markers" if len(x) < 30 or None in y else "lines",
                "name": label(name),
                "legendgroup": label(name),
                "line": {"color": colors[name], "width": 3 if name == collected.baseline else 1.5},
                "hovertemplate": "%{y:.4g}",
            }
        )
    if not data:
        return None
    order = {name: index for index, name in enumerate(colors)}
    data.sort(key=lambda trace: order.get(_html.unescape(trace["name"]), 0))
    if downsampled:
        layout["title"]["text"] += f" (≤ {limit} points per run shown; full data in curves.csv)"
    return {"data": data, "layout": layout}


def _error(row: pd.Series, key: str) -> dict | None:
    score, low, high = row.get(key), row.get(f"{key}_ci_low"), row.get(f"{key}_ci_high")
    if missing(score) or missing(low) or missing(high):
        return None
    return {
        "type": "data",
        "symmetric": False,
        "array": [rounded(max(0.0, float(high) - float(score)))],
        "arrayminus": [rounded(max(0.0, float(score) - float(low)))],
        "color": "#333",
    }


def eval_figure(collected: Collected) -> dict | None:
    """Eval score per run as bars (one trace per run) with 95% CI error bars; each base-model
    eval as a horizontal reference line."""
    frame = collected.runs
    runs = frame[~frame["reference"].astype(bool)]
    runs = runs[runs["eval_score"].map(lambda v: not missing(v))]
    references = frame[frame["reference"].astype(bool)]
    references = references[references["eval_score"].map(lambda v: not missing(v))]
    if runs.empty and references.empty:
        return None
    colors = run_colors(collected)
    layout = plot_layout("Eval score per run (error bars: bootstrap 95% CI)", "run", "eval score")
    layout.update(showlegend=False, barmode="group")
    layout["xaxis"]["type"] = "category"
    data = []
    for _, row in runs.iterrows():
        score = float(row["eval_score"])
        trace = {
            "type": "bar",
            "x": [label(row["run"])],
            "y": [score],
            "name": label(row["run"]),
            "marker": {"color": colors.get(row["run"], PALETTE[0])},
            "text": [f"{score:.3f}"],
            "textposition": "auto",
            "hovertemplate": "%{x}<br>score %{y:.4f}<extra></extra>",
        }
        error = _error(row, "eval_score")
        if error:
            trace["error_y"] = error
        data.append(trace)
    shapes, annotations = [], []
    for index, (_, row) in enumerate(references.iterrows()):
        score = float(row["eval_score"])
        shapes.append(
            {
                "type": "line",
                "xref": "paper",
                "x0": 0,
                "x1": 1,
                "yref": "y",
                "y0": score,
                "y1": score,
                "line": {"color": "#444", "dash": "dash" if index == 0 else "dot", "width": 2},
            }
        )
        annotations.append(
            {
                "xref": "paper",
                "x": 0,
                "xanchor": "left",
                "yref": "y",
                "y": score,
                "yanchor": "bottom",
                "showarrow": False,
                "text": f"{label(row['run'])}: {score:.3f}",
            }
        )
    if shapes:
        layout["shapes"], layout["annotations"] = shapes, annotations
    return {"data": data, "layout": layout}


def parser_figure(collected: Collected) -> dict | None:
    """GSM8K accuracy under each answer parser: one bar trace per run, x = parser."""
    parsers = [p for p in PARSERS if _any(collected, f"eval_{p}")]
    if not parsers:
        return None
    colors = run_colors(collected)
    frame = collected.runs
    layout = plot_layout("Accuracy by answer parser (error bars: bootstrap 95% CI)", "parser", "accuracy")
    layout.update(barmode="group", hovermode="x unified")
    layout["yaxis"]["range"] = [0, 1.05]  # accuracies; an all-zero sweep must not centre on 0
    data = []
    for _, row in frame[~frame["reference"].astype(bool)].iterrows():
        if all(missing(row[f"eval_{p}"]) for p in parsers):
            continue
        ys = [None if missing(row[f"eval_{p}"]) else float(row[f"eval_{p}"]) for p in parsers]
        highs = [
            0.0 if missing(row[f"eval_{p}_ci_high"]) or y is None else max(0.0, float(row[f"eval_{p}_ci_high"]) - y)
            for p, y in zip(parsers, ys)
        ]
        lows = [
            0.0 if missing(row[f"eval_{p}_ci_low"]) or y is None else max(0.0, y - float(row[f"eval_{p}_ci_low"]))
            for p, y in zip(parsers, ys)
        ]
        data.append(
            {
                "type": "bar",
                "x": list(parsers),
                "y": ys,
                "name": label(row["run"]),
                "marker": {"color": colors.get(row["run"], PALETTE[0])},
                "error_y": {
                    "type": "data",
                    "symmetric": False,
                    "array": [rounded(v) for v in highs],
                    "arrayminus": [rounded(v) for v in lows],
                    "color": "#333",
                },
                "hovertemplate": "%{y:.4f}",
            }
        )
    return {"data": data, "layout": layout} if data else None


def figure_json(figure: dict) -> str:
    """Figure JSON that is safe inside a <script> element."""
    text = json.dumps(figure, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


VENDORED_PLOTLY = Path(__file__).parent / "vendor" / "plotly-basic.min.js"


def plotly_source() -> str:
    """plotly.js: the vendored basic bundle (scatter + bar, all the report draws), or the
    full bundle of the `plotly` package when the vendored file is missing."""
    if VENDORED_PLOTLY.is_file():
        return VENDORED_PLOTLY.read_text(encoding="utf-8")
    return plotly.offline.get_plotlyjs()


def plotly_bundle() -> str:
    """plotly.js gzipped and base64-encoded (~0.5 MB for the basic bundle); the page inflates
    it with the browser's DecompressionStream, so nothing is fetched."""
    return _bundle_cache()


@functools.lru_cache(maxsize=1)
def _bundle_cache() -> str:
    raw = plotly_source().encode()
    return base64.b64encode(gzip.compress(raw, compresslevel=9, mtime=0)).decode("ascii")


# ---------------------------------------------------------------- page


def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(Path(__file__).parent)),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def config_text(config: dict | None) -> str:
    if config is None:
        return ""
    # Resolved configs are plain JSON types (pydantic's JSON dump), so YAML always works.
    return yaml.safe_dump(config, sort_keys=False, default_flow_style=False, allow_unicode=True)


def _truncate(text: str) -> str:
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT] + f"\n… ({len(text) - MAX_TEXT} more characters)"


def samples_context(collected: Collected) -> list[dict]:
    groups = []
    frame = collected.samples
    order = list(collected.runs["run"])
    for name in order:
        rows = frame[frame["run"] == name]
        if rows.empty:
            continue
        groups.append(
            {
                "run": name,
                "samples": [
                    {
                        "row_id": row["row_id"],
                        "score": format_cell(row["score"], "float"),
                        "valid": "" if missing(row["valid"]) else str(row["valid"]).lower(),
                        "reason": row["reason"],
                        "ground_truth": row["ground_truth"],
                        "prompt": _truncate(row["prompt"]),
                        "completion": _truncate(row["completion"]),
                    }
                    for _, row in rows.iterrows()
                ],
            }
        )
    return groups


def rollouts_context(collected: Collected) -> list[dict]:
    groups: dict[str, list[dict]] = {}
    for item in collected.rollouts:
        groups.setdefault(item["run"], []).append(
            {
                **item,
                "score": format_cell(item["score"], "float"),
                "step": "" if item["step"] is None else str(item["step"]),
                "prompt": _truncate(item["prompt"]),
                "completion": _truncate(item["completion"]),
            }
        )
    return [{"run": run, "rollouts": items} for run, items in groups.items()]


def diffs_context(collected: Collected) -> list[dict]:
    out = []
    for run, diff in collected.diffs.items():
        if run == collected.baseline:
            continue
        out.append(
            {
                "run": run,
                "rows": [
                    {
                        "key": key,
                        "base": format_value(base) if base is not None else "—",
                        "value": format_value(value) if value is not None else "—",
                        "swept": key in collected.changed.get(run, set()),
                    }
                    for key, (base, value) in diff.items()
                ],
            }
        )
    return out


def lineage_context(collected: Collected) -> list[dict]:
    """The chain of baselines as the lineage table shows it: score [CI], and the changes from the link before."""
    out = []
    for link in collected.lineage:
        score = link["eval_score"]
        if score is None:
            shown = link["status"] or "-"
        else:
            shown = f"{score:.3f}"
            if link["ci_low"] is not None and link["ci_high"] is not None:
                shown += f" [{link['ci_low']:.3f}, {link['ci_high']:.3f}]"
            if link["seeds"] > 1:
                shown += f" ({link['seeds']} seeds)"
            if link.get("method", "").startswith("eval sampling only"):
                shown += " (eval sampling only: one seed)"
        changes = [
            f"{c['knob']}: {format_value(c['from']) if c['from'] is not None else '—'} -> "
            f"{format_value(c['to']) if c['to'] is not None else '—'}"
            for c in link["changes"]
        ]
        out.append(
            {
                "experiment": link["experiment"],
                "file": link["file"],
                "score": shown,
                "changes": changes,
                "problem": link["problem"],
            }
        )
    return out


def parser_warnings(collected: Collected) -> list[str]:
    frame = collected.runs
    out = []
    pairs = {(r, e) for r, e in zip(frame["reward_parser"], frame["eval_parser"]) if r and e and r != e}
    for reward, evaluation in sorted(pairs):
        out.append(
            f"The training reward parses answers with the '{reward}' parser but the eval accuracy uses "
            f"'{evaluation}': train rewards and eval accuracies are not measured alike."
        )
    return out


def verdict_rows(collected: Collected) -> list[dict]:
    """The verdict table's rows, each with the benchmarks its arm regressed on (report.benchmarks)."""
    rows = verdict_table(collected)
    regressions = collected.benchmarks.get("regressions", {})
    for shown, row in zip(rows, collected.verdicts):
        shown["regression"] = regression_text(row["verdict"], regressions.get(row["arm"], []))
    return rows


def task_table(collected: Collected) -> list[dict]:
    """The per-task rows (report.tasks), formatted."""
    return [
        {
            "run": row["run"],
            "task": row["task"],
            "reward": format_cell(row["final_reward"], "float"),
            "eval": format_cell(row["eval_score"], "float"),
        }
        for row in collected.tasks
    ]


def rungs_context(account: dict | None) -> dict | None:
    """The early-stop section (knobsweep.report.early_stop): where runs stopped, and compute per line."""
    if account is None:
        return None

    def text(cost) -> str:
        return cost.text() or "0"

    saved = account["saved"]
    return {
        "runs": account["runs"],
        "lines": [
            {"name": line, "spent": text(account["spent"][line]), "without": text(account["without"][line])}
            for line in account["spent"]
        ],
        "total_spent": text(account["total_spent"]),
        "total_without": text(account["total_without"]),
        "saved": text(saved)
        if saved.gpu_hours >= 0 and saved.cpu_hours >= 0
        else f"none: the rungs cost {text(Cost(-saved.gpu_hours, -saved.cpu_hours))} more than they saved",
    }


def render_report(collected: Collected, meta: ReportMeta) -> str:
    figures = []
    titles = dict(ALWAYS_SHOWN_CURVES)
    titles.update(collected.curve_titles)
    for metric, title in titles.items():
        figure = curve_figure(collected, metric, f"{title} per step")
        if figure is not None or metric in dict(ALWAYS_SHOWN_CURVES):
            figures.append(
                {
                    "id": f"fig-{metric.replace('_', '-')}",
                    "title": title,
                    "json": figure_json(figure) if figure is not None else None,
                }
            )
    evaluation = eval_figure(collected)
    parsers = parser_figure(collected)
    forest = forest_figure(collected)
    frame = collected.runs
    is_reference = frame["reference"].astype(bool)
    columns = runs_columns(collected)
    evals = eval_columns(collected)
    context = {
        "meta": meta,
        "versions": meta.versions or {},
        "baseline": collected.baseline,
        "config_text": config_text(meta.baseline_config),
        "warnings": collected.warnings,
        "parser_warnings": parser_warnings(collected),
        "health": collected.health,
        "run_columns": columns,
        "run_rows": table(frame[~is_reference], columns, collected),
        "eval_columns": evals,
        "eval_rows": table(pd.concat([frame[is_reference], frame[~is_reference]]), evals, collected),
        "curve_figures": figures,
        "eval_figure": {"id": "fig-eval", "json": figure_json(evaluation)} if evaluation is not None else None,
        "parser_figure": {"id": "fig-parsers", "json": figure_json(parsers)} if parsers is not None else None,
        "sample_groups": samples_context(collected),
        "rollout_groups": rollouts_context(collected),
        "diffs": diffs_context(collected),
        "lineage": lineage_context(collected),
        "wandb_runs": wandb_links(collected),
        "run_count": int((~is_reference).sum()),
        "verdict_rows": verdict_rows(collected),
        "benchmark_rows": benchmark_rows(collected.benchmarks),
        "task_rows": task_table(collected),
        "forest_figure": {"id": "fig-forest", "json": figure_json(forest)} if forest is not None else None,
        "total_cost": total_cost(collected),
        "rungs": rungs_context(collected.rungs),
        "how_sure": how_sure(collected),
        "plotly_js": plotly_bundle(),
    }
    return _environment().get_template(TEMPLATE).render(**context)

"""Render collected frames into one self-contained HTML page (plotly.js inlined, no network).

Escaping: every piece of user text goes through Jinja2 autoescape. Figure data is embedded as
JSON inside <script type="application/json"> with <, > and & written as \\u escapes, and
trace labels are HTML-escaped because plotly.js renders a subset of HTML in legends and ticks.
"""

from __future__ import annotations

import html as _html
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio
import plotly.offline
from plotly.colors import qualitative
import yaml

from knobsweep.report.collect import NOT_RUN, Collected, format_value

TEMPLATE = "template.html.jinja"
PALETTE = qualitative.Plotly + qualitative.D3 + qualitative.Dark24
CURVES = (("reward", "Reward"), ("loss", "Loss"), ("kl", "KL"), ("grad_norm", "Grad norm"))
ALWAYS_SHOWN_CURVES = ("reward", "loss")
MAX_TEXT = 8000  # characters of a sample's prompt/completion shown before truncation


@dataclass(frozen=True)
class ReportMeta:
    experiment: str
    spec_path: str
    mode: str
    generated_at: str
    version: str
    baseline_config: dict | None


@dataclass(frozen=True)
class Column:
    key: str  # column of Collected.runs
    label: str
    kind: str  # text | int | float | delta | duration | knob | status


def runs_columns(collected: Collected) -> list[Column]:
    knob_columns = [c for c in collected.runs.columns if c in collected.knobs]
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
        Column("eval_score", "Eval score", "float"),
        Column("eval_correct", "Correct", "float"),
        Column("eval_format", "Format", "float"),
        Column("delta_eval_score", "Δ eval vs baseline", "delta"),
        Column("delta_final_reward", "Δ final reward vs baseline", "delta"),
        Column("train_time_s", "Training time", "duration"),
    ]


EVAL_COLUMNS = [
    Column("run", "Model", "text"),
    Column("status", "Status", "status"),
    Column("eval_score", "Score", "float"),
    Column("eval_correct", "Correct", "float"),
    Column("eval_format", "Format", "float"),
    Column("eval_n", "n", "int"),
    Column("eval_parse_failures", "Parse failures", "int"),
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


def format_duration(seconds: float) -> str:
    seconds = float(seconds)
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m {secs:02d}s"


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
    return str(value)


def cell(row: pd.Series, column: Column, changed: set[str], baseline: str | None) -> dict:
    value = row[column.key]
    classes = []
    title = ""
    if column.kind in ("float", "delta", "int", "duration"):
        classes.append("num")
        if not missing(value):
            title = repr(value)
    if column.key in changed:
        classes.append("changed")
        title = "changed from the baseline"
    if column.kind == "delta" and not missing(value):
        if value > 0:
            classes.append("pos")
        elif value < 0:
            classes.append("neg")
    if column.kind == "status":
        classes.append(status_class(value))
        title = row.get("reason") or ""
    if column.key == "run" and baseline is not None and value == baseline and not row["reference"]:
        title = "the baseline: deltas are measured against this run"
    return {"text": format_cell(value, column.kind), "classes": " ".join(classes), "title": title}


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


def label(text: Any) -> str:
    """Text for plotly labels: escaped, since plotly.js interprets some HTML tags."""
    return _html.escape(str(text), quote=False)


def run_colors(collected: Collected) -> dict[str, str]:
    names = list(collected.runs.loc[~collected.runs["reference"].astype(bool), "run"])
    return {name: PALETTE[index % len(PALETTE)] for index, name in enumerate(names)}


def _layout(title: str, xtitle: str, ytitle: str) -> dict:
    return {
        "title": {"text": title},
        "template": "plotly_white",
        "xaxis": {"title": {"text": xtitle}},
        "yaxis": {"title": {"text": ytitle}},
        "legend": {"title": {"text": "run"}},
        "margin": {"l": 60, "r": 20, "t": 50, "b": 50},
        "height": 420,
    }


def curve_figure(collected: Collected, metric: str, title: str) -> go.Figure | None:
    """One line per run (x = step); None when no run logged the metric."""
    metrics = collected.metrics
    if metrics.empty or metric not in metrics.columns:
        return None
    colors = run_colors(collected)
    figure = go.Figure(layout=_layout(title, "step", metric))
    for name in colors:
        frame = metrics.loc[metrics["run"] == name, ["step", metric]].dropna()
        if frame.empty:
            continue
        figure.add_trace(
            go.Scatter(
                x=frame["step"].tolist(),
                y=frame[metric].tolist(),
                mode="lines+markers" if len(frame) < 30 else "lines",
                name=label(name),
                legendgroup=label(name),
                line={"color": colors[name], "width": 3 if name == collected.baseline else 1.5},
                hovertemplate="%{fullData.name}<br>step %{x}<br>" + metric + " %{y:.4f}<extra></extra>",
            )
        )
    return figure if figure.data else None


def eval_figure(collected: Collected) -> go.Figure | None:
    """Eval score per run as bars; each base-model eval as a horizontal reference line."""
    frame = collected.runs
    runs = frame[~frame["reference"].astype(bool)]
    runs = runs[runs["eval_score"].map(lambda v: not missing(v))]
    references = frame[frame["reference"].astype(bool)]
    references = references[references["eval_score"].map(lambda v: not missing(v))]
    if runs.empty and references.empty:
        return None
    colors = run_colors(collected)
    figure = go.Figure(layout=_layout("Eval score per run", "run", "eval score"))
    figure.update_layout(showlegend=False, xaxis={"type": "category"})
    figure.add_trace(
        go.Bar(
            x=[label(name) for name in runs["run"]],
            y=[float(v) for v in runs["eval_score"]],
            marker={"color": [colors.get(name, PALETTE[0]) for name in runs["run"]]},
            text=[f"{float(v):.3f}" for v in runs["eval_score"]],
            textposition="auto",
            name="eval score",
            hovertemplate="%{x}<br>score %{y:.4f}<extra></extra>",
        )
    )
    for index, (_, row) in enumerate(references.iterrows()):
        score = float(row["eval_score"])
        figure.add_hline(
            y=score,
            line={"color": "#444", "dash": "dash" if index == 0 else "dot", "width": 2},
            annotation_text=f"{label(row['run'])}: {score:.3f}",
            annotation_position="top left",
        )
    return figure


def figure_json(figure: go.Figure) -> str:
    """Figure JSON that is safe inside a <script> element."""
    text = pio.to_json(figure, validate=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def plotly_bundle() -> str:
    return plotly.offline.get_plotlyjs().replace("</script", "<\\/script")


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


def render_report(collected: Collected, meta: ReportMeta) -> str:
    figures = []
    for metric, title in CURVES:
        figure = curve_figure(collected, metric, f"{title} per step")
        if figure is not None or metric in ALWAYS_SHOWN_CURVES:
            figures.append(
                {
                    "id": f"fig-{metric.replace('_', '-')}",
                    "title": title,
                    "json": figure_json(figure) if figure is not None else None,
                }
            )
    evaluation = eval_figure(collected)
    frame = collected.runs
    is_reference = frame["reference"].astype(bool)
    columns = runs_columns(collected)
    context = {
        "meta": meta,
        "baseline": collected.baseline,
        "config_text": config_text(meta.baseline_config),
        "warnings": collected.warnings,
        "run_columns": columns,
        "run_rows": table(frame[~is_reference], columns, collected),
        "eval_columns": EVAL_COLUMNS,
        "eval_rows": table(pd.concat([frame[is_reference], frame[~is_reference]]), EVAL_COLUMNS, collected),
        "curve_figures": figures,
        "eval_figure": {"id": "fig-eval", "json": figure_json(evaluation)} if evaluation is not None else None,
        "sample_groups": samples_context(collected),
        "run_count": int((~is_reference).sum()),
        "plotly_js": plotly_bundle(),
    }
    return _environment().get_template(TEMPLATE).render(**context)

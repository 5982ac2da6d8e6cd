"""The report's first screen: the verdict table (one row per arm) and the forest plot beside it.

The numbers come from `collect` (`Collected.verdicts`, built by `knobsweep.report.decision`); this
module only formats them: cells for the template and a plotly figure (Δ with its 95% CI per arm,
a zero line, arms grouped by the knob they turn).
"""

from __future__ import annotations

import math
from typing import Any

from knobsweep.cost import Cost
from knobsweep.report.collect import Collected
from knobsweep.report.formatting import format_duration, label, plot_layout, rounded
from knobsweep.report.stats import BETTER, NOISE, NOT_COMPARABLE, SEED_LIMITED, WORSE
from knobsweep.spec.expand import knob_labels

VERDICT_COLORS = {BETTER: "#1a7f37", WORSE: "#cf222e", NOISE: "#6e7781", SEED_LIMITED: "#9a6700"}
OTHER_GROUP = "runs"  # forest-plot group of arms that turn several knobs (named runs, grid cells)
ROW_HEIGHT = 26  # forest plot px per arm


def _number(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _signed(value: Any, digits: int = 3) -> str:
    number = _number(value)
    return "" if number is None else f"{number:+.{digits}f}"


def _duration(seconds: Any) -> str:
    number = _number(seconds)
    return "" if number is None else format_duration(number)


def cost_text(row: dict) -> str:
    return Cost(_number(row.get("gpu_hours")) or 0.0, _number(row.get("cpu_hours")) or 0.0).text()


def _labels(collected: Collected) -> dict[str, str]:
    knobs = [row["knob"] for row in collected.verdicts if row["knob"]]
    return knob_labels(list(dict.fromkeys(knobs)))


def arm_label(row: dict, labels: dict[str, str]) -> str:
    if row["baseline"]:
        return row["arm"]
    return f"{labels[row['knob']]}={row['value']}" if row["knob"] else row["arm"]


def verdict_table(collected: Collected) -> list[dict]:
    """Formatted rows of the verdict table (the baseline first: against the base model)."""
    labels = _labels(collected)
    rows = []
    for row in collected.verdicts:
        delta, low, high, mde = (_number(row.get(k)) for k in ("delta", "ci_low", "ci_high", "mde"))
        ci = f" [{low:+.3f}, {high:+.3f}]" if low is not None and high is not None else ""
        verdict = row["verdict"]
        p_value, p_raw = _number(row.get("p_value")), _number(row.get("p_raw"))
        health = row.get("health_warnings") or 0
        rows.append(
            {
                "arm": arm_label(row, labels),
                "versus": row["versus"],
                "baseline": row["baseline"],
                "knob": row["knob"],
                "seeds": row["seeds"],
                "delta": (_signed(delta) + ci) if delta is not None else "",
                "delta_sort": "" if delta is None else repr(delta),
                "reward": _signed(row.get("delta_final_reward")),
                "verdict": verdict,
                "verdict_class": "verdict-" + verdict.replace(" ", "-"),
                "reason": row.get("reason") or "",
                "method": (row.get("method") or "")
                + (f"; p = {p_value:.3g} adjusted over the arms (raw {p_raw:.3g})" if p_value is not None else "")
                + (f". {row['left_out']}" if row.get("left_out") else ""),
                "mde": f"detects ±{mde:.3f}" if mde is not None else "",
                "eval_only": (row.get("method") or "").startswith("eval sampling only"),
                "time": _duration(row.get("train_time_s")),
                "cost": cost_text(row),
                "health": f"{health} ({row['health_kinds']})"
                if health and row.get("health_kinds")
                else (str(health) if health else "none"),
                "health_class": "health-warn" if health else "",
            }
        )
    return rows


def how_sure(collected: Collected) -> str:
    """The verdicts' footing in one sentence a user reads in five seconds: the run-to-run noise they
    used, from where, and what was corrected; or why no arm is called better or worse."""
    facts = collected.decision
    noise = facts.get("noise") if facts else None
    if not facts or not collected.verdicts:
        return ""
    if noise is None:
        return (
            "One seed per side: how much two trainings of one config differ is not measured here, so no arm is "
            "called better or worse. Seed-limited arms differ beyond eval noise only; run 2 seeds of each arm "
            "(or 3 of the baseline) to decide."
        )
    sentence = f"Run-to-run SD {100 * noise['run_sd']:.1f} points, measured on {noise['source']} ({noise['df']} d.f.)"
    if facts.get("arms", 0) > 1:
        sentence += f"; the {facts['arms']} arms are one family: {facts['correction']}"
    return sentence + "."


def total_cost(collected: Collected) -> str:
    """The sweep's measured cost: every run's training and eval, and the base model's evals."""
    frame = collected.runs
    total = Cost()
    for gpu, cpu in zip(frame["gpu_hours"], frame["cpu_hours"]):
        total = total + Cost(_number(gpu) or 0.0, _number(cpu) or 0.0)
    if total.empty:
        return ""
    references = frame["reference"].astype(bool)
    evals = sum(1 for value in frame.loc[references, "eval_time_s"] if _number(value) is not None)
    return f"{total.text()} in all: training and eval of {int((~references).sum())} runs" + (
        f", and {evals} base-model eval{'s' if evals > 1 else ''}" if evals else ""
    )


def forest_figure(collected: Collected) -> dict | None:
    """Δ of the headline eval metric with its 95% CI per arm, grouped by knob; None when no arm
    could be compared."""
    labels = _labels(collected)
    arms = [
        row
        for row in collected.verdicts
        if not row["baseline"] and row["verdict"] != NOT_COMPARABLE and _number(row.get("delta")) is not None
    ]
    if not arms:
        return None
    group_order = list(
        dict.fromkeys(labels.get(row["knob"], OTHER_GROUP) if row["knob"] else OTHER_GROUP for row in arms)
    )
    arms.sort(key=lambda row: group_order.index(labels.get(row["knob"], OTHER_GROUP) if row["knob"] else OTHER_GROUP))
    groups = [label(labels[row["knob"]]) if row["knob"] else OTHER_GROUP for row in arms]
    values = [label(row["value"]) if row["knob"] else label(row["arm"]) for row in arms]
    # Plotly orders categories as its traces first name them: an invisible first trace names them
    # all in table order (the y axis is reversed, so the first arm is at the top).
    data = [
        {
            "type": "scatter",
            "mode": "markers",
            "name": "order",
            "x": [None] * len(arms),
            "y": [groups, values],
            "showlegend": False,
            "hoverinfo": "skip",
        }
    ]
    for verdict in (BETTER, NOISE, SEED_LIMITED, WORSE):
        picked = [i for i, row in enumerate(arms) if row["verdict"] == verdict]
        if not picked:
            continue
        deltas = [float(arms[i]["delta"]) for i in picked]
        data.append(
            {
                "type": "scatter",
                "mode": "markers",
                "orientation": "h",
                "name": verdict,
                "x": [rounded(d) for d in deltas],
                "y": [[groups[i] for i in picked], [values[i] for i in picked]],
                "marker": {"color": VERDICT_COLORS[verdict], "size": 10, "symbol": "diamond"},
                "error_x": {
                    "type": "data",
                    "symmetric": False,
                    "color": VERDICT_COLORS[verdict],
                    "thickness": 2,
                    "array": [rounded(max(0.0, float(arms[i]["ci_high"]) - d)) for i, d in zip(picked, deltas)],
                    "arrayminus": [rounded(max(0.0, d - float(arms[i]["ci_low"]))) for i, d in zip(picked, deltas)],
                },
                "customdata": [
                    [f"[{float(arms[i]['ci_low']):+.3f}, {float(arms[i]['ci_high']):+.3f}]", label(arms[i]["method"])]
                    for i in picked
                ],
                "hovertemplate": "Δ %{x:+.3f} %{customdata[0]}<br>%{customdata[1]}<extra>" + verdict + "</extra>",
            }
        )
    layout = plot_layout("Δ eval score vs the baseline, 95% CI", "Δ eval score (arm − baseline)", "")
    layout["height"] = max(220, 110 + ROW_HEIGHT * len(arms))
    layout["margin"] = {"l": 10, "r": 40, "t": 40, "b": 45}
    # Plotly's toolbar sits at the top right, over a centred title in a figure this narrow: the title
    # goes left, the toolbar stands upright in the right margin.
    layout["title"].update(x=0.02, xanchor="left", xref="container")
    layout["modebar"] = {"orientation": "v"}
    layout["yaxis"].update(type="multicategory", autorange="reversed", automargin=True)
    layout["xaxis"].update(zeroline=False)
    layout["shapes"] = [
        {
            "type": "line",
            "xref": "x",
            "x0": 0,
            "x1": 0,
            "yref": "paper",
            "y0": 0,
            "y1": 1,
            "line": {"color": "#444", "width": 1.5, "dash": "dash"},
        }
    ]
    layout["showlegend"] = False  # colours are the verdicts, named in the table beside it
    return {"data": data, "layout": layout}


__all__ = ["arm_label", "cost_text", "forest_figure", "how_sure", "total_cost", "verdict_table"]

"""The report's account of rung evaluations (early_stop): where each run stopped and why, and the
compute the sweep spent against what it would have spent running every run to the end.

Spent: each run's training (its loop, metrics.jsonl's clock across segments, and one start), the
restarts the rungs add (each segment and the final job load the model and data again: the training
jobs' seconds beyond the loop, less the one start a run without rungs pays too), the rung evals
(merge and eval), and the final evals. Without stopping: every run trains to its last step at its
own measured seconds per step, with one start, and gets a final eval at the evaluated runs' mean
eval time. Device-hours follow
knobsweep.cost (GPU-hours on GPUs, CPU-hours otherwise).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from knobsweep import layout
from knobsweep.cost import Cost, stage_cost, stage_devices
from knobsweep.early_stop.plan import rung_plan
from knobsweep.io import read_jsonl

LINES = ("training", "restarts", "rung evals", "final evals")


def _json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _rung_eval_s(summary: dict) -> float:
    """A rung eval's seconds: the merge and the eval (rung_eval_s), else the eval's own."""
    return summary.get("rung_eval_s") or summary.get("elapsed_s") or 0.0


def _loop(path: Path) -> tuple[int, float]:
    """(last step, the training loop's seconds) from metrics.jsonl."""
    records = read_jsonl(path) if path.is_file() else []
    return (int(records[-1].get("step", 0)), float(records[-1].get("elapsed_s") or 0.0)) if records else (0, 0.0)


def rung_account(experiment: Any, root: str | Path = ".") -> dict | None:
    """{"runs": [one row per run], "spent": {line: Cost}, "without": {line: Cost}, "saved": Cost}, or
    None for an experiment without rungs."""
    plan = rung_plan(experiment)
    if not plan.segments:
        return None
    root = Path(root)
    rows, spent, without = [], dict.fromkeys(LINES, Cost()), dict.fromkeys(LINES, Cost())
    eval_times = [
        float(summary["elapsed_s"])
        for run in experiment.runs
        if (summary := _json(layout.path(layout.EVAL_SUMMARY, root, key=run.keys.eval))).get("elapsed_s")
    ]
    mean_eval = sum(eval_times) / len(eval_times) if eval_times else 0.0
    for run in experiment.runs:
        train, evaluate = stage_devices(run.config, "train"), stage_devices(run.config, "eval")
        segments = [s for s in plan.segments if s.run.name == run.name]
        records = [_json(layout.path(layout.RUNG_SEGMENT, root, key=s.key)) for s in segments]
        status = _json(layout.path(layout.TRAIN_STATUS, root, key=run.keys.train))
        step, loop = _loop(layout.path(layout.TRAIN_METRICS, root, key=run.keys.train))
        total_steps = next((r["max_steps"] for r in records if r.get("max_steps")), step)
        final = float(status.get("runtime_s") or 0.0) if status.get("state") in ("COMPLETED", "EARLY_STOPPED") else 0.0
        jobs = [float(r.get("runtime_s") or 0.0) for r in records if r.get("runtime_s")] + ([final] if final else [])
        starts = max(sum(jobs) - loop, 0.0)
        added = starts * (len(jobs) - 1) / len(jobs) if jobs else 0.0
        rung_evals = sum(
            float(_rung_eval_s(_json(layout.path(layout.RUNG_EVAL_SUMMARY, root, key=s.eval_key)))) for s in segments
        )
        final_eval = float(_json(layout.path(layout.EVAL_SUMMARY, root, key=run.keys.eval)).get("elapsed_s") or 0.0)
        stop = status.get("stopped_at_rung")
        start = starts / len(jobs) if jobs else 0.0  # one start, which a run without rungs pays too
        spent["training"] += stage_cost(train, loop + start)
        spent["restarts"] += stage_cost(train, added)
        spent["rung evals"] += stage_cost(evaluate, rung_evals)
        spent["final evals"] += stage_cost(evaluate, final_eval)
        per_step = loop / step if step else 0.0
        without["training"] += stage_cost(train, per_step * total_steps + start)
        without["restarts"] += stage_cost(train, 0.0)
        without["final evals"] += stage_cost(evaluate, final_eval if not stop else mean_eval)
        rows.append(
            {
                "run": run.name,
                "state": status.get("state") or "not run",
                "stopped_at": f"rung {stop['rung']} of {stop['rungs']}, step {stop['step']} of {stop['max_steps']}"
                if stop
                else "",
                "reason": status.get("reason", "") if stop else "",
                "steps": step,
                "planned_steps": total_steps,
            }
        )
    total_spent, total_without = sum(spent.values(), Cost()), sum(without.values(), Cost())
    saved = Cost(
        total_without.gpu_hours - total_spent.gpu_hours,
        total_without.cpu_hours - total_spent.cpu_hours,
    )
    return {
        "runs": rows,
        "spent": spent,
        "without": without,
        "total_spent": total_spent,
        "total_without": total_without,
        "saved": saved,
    }


def account_json(account: dict | None) -> dict | None:
    """The account as summary.json holds it (device-hours as numbers)."""
    if account is None:
        return None

    def hours(cost: Cost) -> dict:
        return {"gpu_hours": round(cost.gpu_hours, 6), "cpu_hours": round(cost.cpu_hours, 6)}

    return {
        "runs": account["runs"],
        "spent": {line: hours(cost) for line, cost in account["spent"].items()},
        "without_stopping": {line: hours(cost) for line, cost in account["without"].items()},
        "total_spent": hours(account["total_spent"]),
        "total_without_stopping": hours(account["total_without"]),
        "saved": hours(account["saved"]),
    }

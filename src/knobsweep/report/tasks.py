"""The report's per-task table: the training reward and the eval score of each task of a mixture.

An evaluator that scores rows of several tasks (reasoning_gym) reports each sample's score under `task/<task>`
too (knobsweep.rewards.reasoning_gym): training logs its mean per step as `reward/task/<task>`
(metrics.jsonl), the eval its mean over valid samples in summary.json's `parts`. Per run (and the base
model) and task: the final train reward (mean over the last 10% of logged steps, as the runs table's) and
the eval score.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from knobsweep import layout
from knobsweep.report.collect import REFERENCE_NAME, read_metrics
from knobsweep.runfiles import read_json_object

PART = "task/"
REWARD = "reward/" + PART
FINAL_SHARE = 0.10  # the last 10% of logged steps, as collect.train_numbers' final reward


def final_value(values: Any) -> float | None:
    numbers = [float(v) for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    if not numbers:
        return None
    window = numbers[-max(1, math.ceil(len(numbers) * FINAL_SHARE)) :]
    return sum(window) / len(window)


def task_rows(experiment: Any, root: str | Path = ".", warnings: list[str] | None = None) -> list[dict]:
    """One row per (model, task): run, task, final train reward, eval score; [] when no evaluator reports
    tasks."""
    root, warnings = Path(root), ([] if warnings is None else warnings)
    rows = []
    baseline = next((run for run in experiment.runs if run.is_baseline), None)
    references = [(REFERENCE_NAME, None, baseline.keys.base_eval)] if baseline else []
    for name, train_key, eval_key in [*references, *((r.name, r.keys.train, r.keys.eval) for r in experiment.runs)]:
        label = f"run '{name}'"
        summary = read_json_object(layout.path(layout.EVAL_SUMMARY, root, key=eval_key), warnings, label) or {}
        parts = summary.get("parts") if isinstance(summary.get("parts"), dict) else {}
        evals = {part[len(PART) :]: value for part, value in parts.items() if part.startswith(PART)}
        rewards = {}
        if train_key is not None:
            metrics, _ = read_metrics(layout.path(layout.TRAIN_METRICS, root, key=train_key), warnings, label)
            rewards = {c[len(REWARD) :]: final_value(metrics[c]) for c in metrics.columns if c.startswith(REWARD)}
        for task in dict.fromkeys([*rewards, *evals]):
            rows.append({"run": name, "task": task, "final_reward": rewards.get(task), "eval_score": evals.get(task)})
    return rows

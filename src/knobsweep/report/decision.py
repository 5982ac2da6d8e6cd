"""The decision a sweep exists for: per arm, is it better than the baseline beyond noise?

An arm is one knob value (a named run, a grid cell) with its seeds pooled: the runs named
`<arm>` or `<arm>,seed=<s>`. `compare_arms(experiment, root)` compares every arm with the baseline
on the headline eval metric (the eval score: the evaluator's mean score on the eval split, the same
function as the training reward) through `knobsweep.report.stats`, and the baseline with the
untrained base model. It reads status.json and samples.jsonl only and renders nothing, so any
command can decide with it; `verdict_rows` adds what the report's verdict table shows beside it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from knobsweep import layout
from knobsweep.report.history import noise_from_history
from knobsweep.report.stats import (
    NOT_COMPARABLE,
    Comparison,
    NoiseFloor,
    RunScores,
    Score,
    compare_family,
    not_comparable,
    read_scores,
    score_interval,
)
from knobsweep.runfiles import read_status
from knobsweep.spec.expand import format_value

BASE_MODEL = "base model"


@dataclass(frozen=True)
class Arm:
    name: str  # the runs' name without the seed suffix: "baseline", "learning_rate=2e-4", "sft"
    changed: dict[str, Any]  # dotted knob -> value ({} for the baseline)
    runs: tuple  # knobsweep.spec.Run, one per seed

    @property
    def knob(self) -> str:
        """The knob this arm turns, or "" for several at once (a grid cell, a named run)."""
        return next(iter(self.changed)) if len(self.changed) == 1 else ""

    @property
    def value(self) -> str:
        if self.knob:
            return format_value(self.changed[self.knob])
        return ", ".join(f"{k}={format_value(v)}" for k, v in self.changed.items())


@dataclass(frozen=True)
class ArmComparisons:
    baseline: Arm | None
    versus_base: Comparison  # the baseline against the untrained base model
    arms: dict[str, Comparison] = field(default_factory=dict)  # arm name -> against the baseline
    order: tuple[Arm, ...] = ()  # the arms besides the baseline, in the spec's order
    noise: NoiseFloor | None = None  # the run-to-run variance every verdict used (None: unknown)
    correction: str = ""  # the multiplicity correction, in words
    baseline_score: Score | None = None  # the baseline's eval score and CI under the same noise


def arm_name(run: Any) -> str:
    suffix = f",seed={run.seed}"
    return run.name.removesuffix(suffix)


def group_arms(experiment: Any) -> list[Arm]:
    """The experiment's arms in run order; a run's seeds share its arm."""
    groups: dict[str, list] = {}
    for run in experiment.runs:
        groups.setdefault(arm_name(run), []).append(run)
    return [Arm(name, dict(runs[0].changed), tuple(runs)) for name, runs in groups.items()]


def run_scores(run: Any, root: Path, warnings: list[str]) -> RunScores:
    """A run's training state and per-prompt headline scores (None until its eval exists)."""
    status = _status(layout.path(layout.TRAIN_STATUS, root, key=run.keys.train), warnings, run.name)
    state = str(status.get("state") or "not run")
    if status.get("stopped_at_rung"):  # early_stop: judged at a rung, never evaluated at the end
        return RunScores(run.name, run.seed, state, None, problem=str(status.get("reason") or "stopped at a rung"))
    samples = layout.path(layout.EVAL_SAMPLES, root, key=run.keys.eval)
    try:
        read = read_scores(samples)
    except (OSError, ValueError) as error:
        warnings.append(f"run '{run.name}': eval samples unreadable, so it is not compared: {error}")
        return RunScores(run.name, run.seed, state, None, problem=f"unreadable eval samples ({error})")
    scores, fingerprint = read if read is not None else (None, None)
    return RunScores(run.name, run.seed, state, scores, fingerprint, str(status.get("reason") or ""))


def _status(path: Path, warnings: list[str], name: str) -> dict:
    """status.json as every command reads it (knobsweep.runfiles), its warning worded as the report's own."""
    return read_status(path, warnings, f"run '{name}'")


def compare_arms(experiment: Any, root: str | Path = ".", warnings: list[str] | None = None) -> ArmComparisons:
    """Every arm against the baseline as one family, and the baseline against the base model (same
    eval config), all under one run-to-run variance: pooled over the experiment's own seeds, or,
    where every arm has one seed, measured by earlier sweeps of the same setting under results/."""
    root = Path(root)
    warnings = [] if warnings is None else warnings
    arms = group_arms(experiment)
    baseline = next((arm for arm in arms if not arm.changed), None)
    others = tuple(arm for arm in arms if arm is not baseline)
    if baseline is None:
        reason = "no baseline run (changed == {})"
        return ArmComparisons(
            None, not_comparable(reason), {arm.name: not_comparable(reason) for arm in others}, others
        )
    scores = {run.name: run_scores(run, root, warnings) for arm in arms for run in arm.runs}
    base_runs = [scores[run.name] for run in baseline.runs]
    family_runs = {arm.name: [scores[run.name] for run in arm.runs] for arm in others}
    family = compare_family(family_runs, base_runs)
    if family.noise is None:
        floor = noise_from_history(experiment, root)
        if floor is not None:
            family = compare_family(family_runs, base_runs, noise=floor)
    versus_base = compare_family({baseline.name: base_runs}, [_reference(baseline, root, warnings)], noise=family.noise)
    noise = versus_base.noise or family.noise
    for comparison in (versus_base.arms[baseline.name], *family.arms.values()):
        if comparison.left_out:
            warnings.append(f"verdicts: {comparison.left_out}")
    return ArmComparisons(
        baseline,
        versus_base.arms[baseline.name],
        family.arms,
        others,
        noise,
        family.correction,
        score_interval(base_runs, noise),
    )


def _reference(baseline: Arm, root: Path, warnings: list[str]) -> RunScores:
    """The untrained base model's eval under the baseline's eval config."""
    key = baseline.runs[0].keys.base_eval
    try:
        read = read_scores(layout.path(layout.EVAL_SAMPLES, root, key=key))
    except (OSError, ValueError) as error:
        warnings.append(f"{BASE_MODEL}: eval samples unreadable: {error}")
        return RunScores(BASE_MODEL, None, "evaluated", None, problem="unreadable eval samples")
    return RunScores(BASE_MODEL, None, "evaluated", *(read if read else (None, None)))


def run_verdicts(comparisons: ArmComparisons) -> dict[str, Comparison]:
    """Run name -> its arm's comparison with the baseline (for every run but the baseline's)."""
    out = {}
    for arm in comparisons.order:
        for run in arm.runs:
            out[run.name] = comparisons.arms[arm.name]
    return out


def decision_facts(comparisons: ArmComparisons) -> dict:
    """What every verdict of the experiment rests on, for the report's footnote and summary.json: the
    run-to-run noise (its SD, degrees of freedom and where it was measured; None when unknown) and
    the multiplicity correction."""
    return {
        "noise": comparisons.noise.as_dict() if comparisons.noise else None,
        "correction": comparisons.correction,
        "arms": len(comparisons.order),
    }


# ---------------------------------------------------------------- the verdict table's rows


def verdict_rows(comparisons: ArmComparisons, runs: Any) -> list[dict]:
    """One row per arm (the baseline first, measured against the base model) for the report's
    verdict table and exports: the comparison, the arm's mean final train reward minus the
    baseline's, its summed cost and health warnings. `runs`: the report's runs frame."""
    by_run = {row["run"]: row for row in runs.to_dict("records") if not row["reference"]}
    base_reward = None
    rows = []
    arms = ([comparisons.baseline] if comparisons.baseline else []) + list(comparisons.order)
    for arm in arms:
        is_baseline = arm is comparisons.baseline
        members = [by_run[run.name] for run in arm.runs if run.name in by_run]
        reward = _mean([row.get("final_reward") for row in members])
        if is_baseline:
            base_reward = reward
        comparison = comparisons.versus_base if is_baseline else comparisons.arms[arm.name]
        kinds = sorted({kind for row in members for kind in (row.get("health_kinds") or "").split(", ") if kind})
        rows.append(
            {
                "arm": arm.name,
                "baseline": is_baseline,
                "knob": arm.knob if not is_baseline else "",
                "value": arm.value if not is_baseline else "",
                "versus": BASE_MODEL if is_baseline else (comparisons.baseline.name if comparisons.baseline else ""),
                **comparison.as_dict(),
                "seeds": len(arm.runs),
                "delta_final_reward": None
                if is_baseline or reward is None or base_reward is None
                else _tidy(reward - base_reward),
                "final_reward": reward,
                "train_time_s": _sum([row.get("train_time_s") for row in members]),
                "gpu_hours": _sum([row.get("gpu_hours") for row in members]),
                "cpu_hours": _sum([row.get("cpu_hours") for row in members]),
                "health_warnings": int(sum(row.get("health_warnings") or 0 for row in members)),
                "health_kinds": ", ".join(kinds),
                "states": sorted({str(row.get("status")) for row in members}),
            }
        )
    return rows


def _finite(values: list) -> list[float]:
    out = []
    for value in values:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            out.append(float(value))
    return out


def _mean(values: list) -> float | None:
    numbers = _finite(values)
    return _tidy(sum(numbers) / len(numbers)) if numbers else None


def _sum(values: list) -> float | None:
    numbers = _finite(values)
    return _tidy(sum(numbers)) if numbers else None


def _tidy(value: float) -> float:
    return float(f"{value:.12g}")


__all__ = [
    "NOT_COMPARABLE",
    "Arm",
    "ArmComparisons",
    "arm_name",
    "compare_arms",
    "decision_facts",
    "group_arms",
    "run_scores",
    "run_verdicts",
    "verdict_rows",
]

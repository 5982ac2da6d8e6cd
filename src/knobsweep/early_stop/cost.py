"""What rungs cost and can save, for `knobsweep plan` (before anything runs): the whole sweep priced
by knobsweep.estimate's throughputs, three ways. Without rungs; with rungs when nothing stops (the
bound: every run also pays a rung eval and a restart per rung); with rungs when given runs stop at
given rungs (by default every arm at the first: the most stopping can save). Shared jobs are counted
once per run here, and cached stages are counted too: these lines price the sweep, not what is left
of it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from knobsweep.cost import Cost, stage_cost, stage_devices
from knobsweep.estimate import JOB_START_S, Estimator, eval_samples, train_sequences


@dataclass(frozen=True)
class RungCosts:
    without: Cost  # the sweep without rungs
    nothing_stops: Cost  # with rungs, every run to the end
    stopping: Cost  # with rungs, the runs in `stops` stopped at their rung
    lines: dict  # line -> Cost with rungs and the stops: training, restarts, rung evals, final evals


def rung_costs(
    experiment: Any,
    root: str | Path = ".",
    stops: dict[str, int] | None = None,
    estimator: Estimator | None = None,
) -> RungCosts | None:
    """The sweep's cost without rungs, with rungs when nothing stops, and with rungs when each run in
    `stops` (run name -> rung, from 1) stops there (default: every arm at the first rung). None without
    early_stop, or while a run's size is unknown (its data not converted yet)."""
    settings = experiment.early_stop
    if not settings:
        return None
    estimator = estimator or Estimator(root)
    fractions = settings["rungs"]
    stops = {run.name: 1 for run in experiment.runs if not run.is_baseline} if stops is None else stops
    lines = dict.fromkeys(("training", "restarts", "rung evals", "final evals"), Cost())
    without = nothing = Cost()
    for run in experiment.runs:
        sequences, samples = train_sequences(run, Path(root)), eval_samples(run, Path(root))
        if sequences is None or samples is None:
            return None
        train, evaluation = estimator.train(run.config), estimator.evaluation(run.config)
        train_devices, eval_devices = stage_devices(run.config, "train"), stage_devices(run.config, "eval")
        start = JOB_START_S["train"] + train.fixed_s
        loop = sequences * train.tokens_per_item / train.tokens_per_s
        prompts = settings["eval_prompts"]
        rung_samples = samples if not prompts else min(samples, prompts * int(run.config["eval"]["samples"]))
        rung_eval = evaluation.seconds(rung_samples, "eval")
        final_eval = evaluation.seconds(samples, "eval")
        without += stage_cost(train_devices, loop + start) + stage_cost(eval_devices, final_eval)
        rungs = len(fractions)
        nothing += stage_cost(train_devices, loop + (rungs + 1) * start) + stage_cost(
            eval_devices, rungs * rung_eval + final_eval
        )
        # a run stopped at rung r: its segments up to r and their rung evals, then a job that records the stop
        stop = stops.get(run.name)
        looks = stop or rungs
        lines["training"] += stage_cost(train_devices, (fractions[stop - 1] if stop else 1.0) * loop + start)
        # a stopped run's last job records the stop without loading anything: a job start only
        restarts = (looks - 1) * start + JOB_START_S["train"] if stop else looks * start
        lines["restarts"] += stage_cost(train_devices, restarts)
        lines["rung evals"] += stage_cost(eval_devices, looks * rung_eval)
        lines["final evals"] += stage_cost(eval_devices, 0.0 if stop else final_eval)
    return RungCosts(without, nothing, sum(lines.values(), Cost()), lines)


def rung_cost_lines(experiment: Any, root: str | Path = ".") -> list[str]:
    """`knobsweep plan`'s lines on the rungs' cost, with and without stopping."""
    costs = rung_costs(experiment, root)
    if experiment.early_stop is None:
        return []
    if costs is None:
        return ["early stop: the cost with rungs is known once the data is converted (or data.*_size are set)"]
    return [
        f"early stop (rungs at {', '.join(f'{f:.0%}' for f in experiment.early_stop['rungs'])} of training), "
        "the whole sweep:",
        f"  without rungs: {costs.without.text()}",
        f"  with rungs, nothing stops (the bound): {costs.nothing_stops.text()}",
        f"  with rungs, every arm stopped at the first rung: {costs.stopping.text()} = "
        + ", ".join(f"{line} {cost.text() or '0'}" for line, cost in costs.lines.items()),
    ]

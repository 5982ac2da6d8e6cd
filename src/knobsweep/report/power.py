"""What a planned sweep can detect, before anything runs (`knobsweep plan`): the power analysis
Miller 2024 asks for, under the verdict's own model of noise (`knobsweep.report.stats`).

A run's eval score varies around its config's mean by

    run variance = tau^2 + (interaction + sample variance / samples) / prompts

- tau^2: two trainings of one config differ (the seed) beyond what their evals sample;
- interaction: a run does better on some prompts than another run of its config does (seeds learn
  different prompts), which averages out over prompts but not over samples;
- sample variance: the spread of one prompt's sampled scores, which more samples average out too.

From history (the replicated arms of this setting under results/, `knobsweep.report.history`):
tau^2 from the spread of their runs' scores less its eval part, the prompt-level noise from the
run-by-prompt residuals (a two-way layout per arm), the sample variance from prompts sampled several
times. Without history: no run-to-run spread, no interaction, and a sample variance of 0.25 (the most
a score in [0, 1] can vary): what eval sampling alone would allow, and the plan says so.

A design (arms, seeds per arm and of the baseline, prompts, samples) detects, with 80% power, a Δ of
(c + t_0.80) sqrt(run variance (1/k_arm + 1/k_baseline)): c Dunnett's bound for its arms at its
degrees of freedom, as the verdict will compute it.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from knobsweep.cost import Cost, stage_cost, stage_devices
from knobsweep.report.history import Replicates, replicated_arms, sources
from knobsweep.report.manytoone import TWO_SIDED, critical_value, lambdas_of
from knobsweep.report.stats import ALPHA, minimum_detectable

MAX_SAMPLE_VARIANCE = 0.25  # a score in [0, 1] varies at most this much
MAX_SEEDS, PROMPT_FACTORS, SAMPLE_FACTORS, MAX_SAMPLES = 8, (2, 4), (2, 4, 8), 64


@dataclass(frozen=True)
class Design:
    arms: int  # arms besides the baseline
    arm_seeds: int  # runs per arm (the most common count)
    baseline_seeds: int
    prompts: int
    samples: int
    sampled: bool  # eval.temperature > 0: more samples differ

    @property
    def df(self) -> int:
        return self.arms * (self.arm_seeds - 1) + self.baseline_seeds - 1

    def text(self) -> str:
        seeds = (
            f"{self.arm_seeds} seed(s) each and of the baseline"
            if self.arm_seeds == self.baseline_seeds
            else f"{self.arm_seeds} seed(s) each, {self.baseline_seeds} of the baseline"
        )
        return f"{self.arms} arm(s), {seeds}, {self.prompts} prompts x {self.samples} sample(s)"


@dataclass(frozen=True)
class Noise:
    tau2: float  # run-to-run variance beyond eval
    interaction: float  # prompt-level variance that samples do not average out
    sample_variance: float  # per-sample variance within a prompt
    source: str  # in words: where it was measured, or the assumption

    def run_variance(self, prompts: int, samples: int) -> float:
        return self.tau2 + (self.interaction + self.sample_variance / samples) / prompts


ASSUMED = Noise(
    0.0,
    0.0,
    MAX_SAMPLE_VARIANCE,
    "assuming no run-to-run spread and a score variance of 0.25 per sample: eval sampling alone, so the real "
    "figure is larger (no finished sweep of this setting under results/ has measured the spread)",
)


def detectable(design: Design, noise: Noise) -> float | None:
    """The Δ this design finds 80% of the time; None when it gives no better/worse verdict (one seed
    per arm and of the baseline: no degrees of freedom for the run-to-run spread)."""
    if design.df == 0 or design.arms == 0:
        return None
    bound = critical_value(
        lambdas_of((design.arm_seeds,) * design.arms, design.baseline_seeds), design.df, ALPHA, TWO_SIDED
    )
    error = math.sqrt(
        noise.run_variance(design.prompts, design.samples) * (1 / design.arm_seeds + 1 / design.baseline_seeds)
    )
    return minimum_detectable(bound, design.df, error)


def measured_noise(arms: list[Replicates]) -> Noise | None:
    """The three parts of the noise, from the replicated arms of earlier sweeps; None without any."""
    between, prompt_level, sampled, samples_seen = [], [], [], []
    for arm in arms:
        shared = sorted(set.intersection(*(set(run) for run in arm.runs)))
        if len(shared) < 2:
            continue
        table = np.array([[np.mean(run[row]) for row in shared] for run in arm.runs])  # run x prompt
        runs, prompts = table.shape
        residual = table - table.mean(axis=1, keepdims=True) - table.mean(axis=0, keepdims=True) + table.mean()
        prompt_noise = float((residual**2).sum()) / ((runs - 1) * (prompts - 1))
        run_spread = float(table.mean(axis=1).var(ddof=1))
        between.append((runs - 1, run_spread - prompt_noise / prompts))
        prompt_level.append(((runs - 1) * (prompts - 1), prompt_noise))
        for run in arm.runs:
            for row in shared:
                if len(run[row]) > 1:
                    sampled.append(float(np.var(run[row], ddof=1)))
                samples_seen.append(len(run[row]))
    if not between:
        return None
    tau2 = max(0.0, sum(df * value for df, value in between) / sum(df for df, _ in between))
    prompt_noise = sum(df * value for df, value in prompt_level) / sum(df for df, _ in prompt_level)
    if sampled:  # the prompt-level noise is interaction + sample variance / samples
        sample_variance = float(np.mean(sampled))
        interaction = max(0.0, prompt_noise - sample_variance / float(np.mean(samples_seen)))
    else:  # one sample per prompt: the two cannot be told apart, so more samples are not counted on
        sample_variance, interaction = 0.0, prompt_noise
    runs = sum(len(arm.runs) for arm in arms)
    return Noise(
        tau2, interaction, sample_variance, f"measured on {runs} finished runs under results/: {sources(arms)}"
    )


def planned_design(experiment: Any, root: Path) -> Design | None:
    """The experiment's design; None when its eval size is unknown (data not converted, no data.eval_size)."""
    from knobsweep.estimate import eval_samples
    from knobsweep.report.decision import group_arms

    groups = group_arms(experiment)
    baseline = next((arm for arm in groups if not arm.changed), None)
    if baseline is None:
        return None
    run = baseline.runs[0]
    samples = int(run.config["eval"]["samples"])
    rows = eval_samples(run, root)
    if rows is None:
        return None
    others = [len(arm.runs) for arm in groups if arm is not baseline]
    arm_seeds = Counter(others).most_common(1)[0][0] if others else len(baseline.runs)
    return Design(
        len(others),
        arm_seeds,
        len(baseline.runs),
        rows // samples,
        samples,
        float(run.config["eval"]["temperature"]) > 0,
    )


@dataclass(frozen=True)
class Change:
    text: str
    design: Design
    cost: Cost


def changes(design: Design, train: Cost, evaluation: Cost) -> list[Change]:
    """Single changes to the design, each with what it adds to the sweep's cost (`train`, `evaluation`:
    one run's stages)."""
    runs = design.arms * design.arm_seeds + design.baseline_seeds
    out = []
    for seeds in range(max(design.arm_seeds, design.baseline_seeds) + 1, MAX_SEEDS + 1):
        added = design.arms * (seeds - design.arm_seeds) + seeds - design.baseline_seeds
        out.append(
            Change(
                f"{seeds} seeds of every arm and of the baseline (+{added} runs)",
                replace(design, arm_seeds=seeds, baseline_seeds=seeds),
                _times(train + evaluation, added),
            )
        )
    for seeds in range(design.baseline_seeds + 1, MAX_SEEDS + 1):
        added = seeds - design.baseline_seeds
        out.append(
            Change(
                f"{seeds} seeds of the baseline (+{added} runs)",
                replace(design, baseline_seeds=seeds),
                _times(train + evaluation, added),
            )
        )
    for factor in PROMPT_FACTORS:
        out.append(
            Change(
                f"{factor}x the eval prompts (data.eval_size {design.prompts * factor}, if the data has them)",
                replace(design, prompts=design.prompts * factor),
                _times(evaluation, (runs + 1) * (factor - 1)),
            )
        )
    if design.sampled:
        for factor in SAMPLE_FACTORS:
            if design.samples * factor <= MAX_SAMPLES:
                out.append(
                    Change(
                        f"eval.samples {design.samples * factor}",
                        replace(design, samples=design.samples * factor),
                        _times(evaluation, (runs + 1) * (factor - 1)),
                    )
                )
    return out


def _times(cost: Cost, count: float) -> Cost:
    return Cost(cost.gpu_hours * count, cost.cpu_hours * count)


def _hours(cost: Cost) -> float:
    return cost.gpu_hours + cost.cpu_hours


def power_lines(experiment: Any, root: str | Path = ".") -> list[str]:
    """What `knobsweep plan` prints about the sweep's power: the smallest Δ it detects and the cheapest
    single change that would halve it (or, where it gives no verdict, the cheapest that gives one)."""
    from knobsweep.estimate import Estimator, eval_samples, train_sequences

    root = Path(root)
    design = planned_design(experiment, root)
    if design is None:
        return ["detectable: unknown until the eval data is converted (or set data.eval_size)"]
    if design.arms == 0:
        return []
    baseline = next(run for run in experiment.runs if run.is_baseline)
    noise = measured_noise(replicated_arms(baseline.config, root)) or ASSUMED
    estimator, config = Estimator(root), baseline.config
    sequences, samples = train_sequences(baseline, root), eval_samples(baseline, root)
    train = stage_cost(stage_devices(config, "train"), estimator.train(config).seconds(sequences or 0, "train"))
    evaluation = stage_cost(stage_devices(config, "eval"), estimator.evaluation(config).seconds(samples or 0, "eval"))
    now = detectable(design, noise)
    options = [(change, detectable(change.design, noise)) for change in changes(design, train, evaluation)]
    if now is None:
        lines = [
            f"detectable: no better/worse verdict ({design.text()}): with one seed per side the run-to-run "
            "spread is not measured, so arms beyond eval noise are only seed-limited"
        ]
        # One degree of freedom (t = 12.7) gives a verdict in name only: at least two, as 3 baseline seeds do.
        enough = [(change, found) for change, found in options if found is not None and change.design.df >= 2]
        goal = "gives a verdict"
    else:
        lines = [
            f"detectable: a Δ of {100 * now:.1f} points (eval score {now:.3f}) is found 80% of the time "
            f"({design.text()}); {noise.source}"
        ]
        enough = [(change, found) for change, found in options if found is not None and found <= now / 2]
        goal = "halves it"
    if enough:
        change, found = min(enough, key=lambda pair: _hours(pair[0].cost))
        lines.append(
            f"  cheapest change that {goal}: {change.text}, +{change.cost.text() or 'no measurable cost'}; "
            f"then {100 * found:.1f} points"
        )
    elif options and now is not None:
        change, found = min(options, key=lambda pair: pair[1] if pair[1] is not None else math.inf)
        lines.append(
            f"  no single change halves it (the run-to-run spread dominates); the most: {change.text}, "
            f"{100 * found:.1f} points"
        )
    return lines


__all__ = ["ASSUMED", "Design", "Noise", "detectable", "measured_noise", "planned_design", "power_lines"]

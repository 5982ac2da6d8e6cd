"""Does the early stop stop the right arms? Simulated sweeps, rung by rung, through `decide_rung`.

The eval data is drawn as in bench/stats_calibration.py, with training time added. Every prompt
has a difficulty d_p ~ Beta(2, 2) (its accuracy under the finished baseline); at a rung a fraction
f of the way through training every run has learnt less, a shift of -20 (1 - f) points shared by
all runs. Every training run r has a random effect at each rung k, the run-to-run spread, made of a
part it keeps through training and a part fresh at each checkpoint:

    u_rk = spread (sqrt(rho) a_r + sqrt(1 - rho) e_rk),    a_r, e_rk ~ N(0, 1),

so its SD is `spread` points at every rung and its correlation between two rungs of one run is rho
(0.5 here, 0.9 in the full grid). An arm adds its true effect; each prompt is then answered once
at each rung, a fresh 0/1 sample of that checkpoint: score ~ Bernoulli(clip(d_p - 0.2 (1 - f)
+ (u_rk + effect_k) / 100, 0, 1)).

Each simulated sweep goes through `knobsweep.early_stop.decide.decide_rung` as the machinery calls
it: at rung k, the arms still running (not stopped at an earlier rung) against the baseline, with
`rungs` looks and the total one-sided alpha. The bench measures per cell:

- null: arms equal to the baseline; "per arm" is the chance that one is stopped at any rung (the
  issue's target: at most 5%); "family" the chance that any arm of the sweep is;
- -10 flat: one arm 10 points worse than the baseline at every rung (the others equal): the share
  of sweeps where it is stopped by rung 1, 2 (, 3), cumulative; "null beside it": the share of the
  other, null arms of those sweeps stopped at any rung (their family shrinks once it stops);
- -10 growing: the same arm whose gap grows with training, half of it at the first rung and all of
  it at the end: 10 (0.5 + 0.5 (f - f_1) / (1 - f_1)) points at a rung at fraction f;
- 80% at rung 1: the gap (points) the first look finds 80% of the time, by the normal-theory
  approximation of the report's minimum detectable effect (not simulated).

Every figure is followed by its Monte-Carlo standard error, in points: the SD over simulated sweeps
divided by the square root of their number (arms of one sweep share the baseline, so a sweep is the
independent unit).

Designs ("seeds"): 1, 2 or 3 seeds per arm and baseline; "1+3b": one per arm, three of the
baseline; "1+floor": one per side with a noise floor from earlier sweeps, an estimate of the true
run-score variance on 4 degrees of freedom (variance x chi2_4 / 4, as from four configs of 2
seeds), drawn afresh for every sweep.

    python bench/rungs_calibration.py --quick      # the cells the issue names (~1-2 minutes)
    python bench/rungs_calibration.py              # the whole grid (see docs/early_stop.md for its wall time)
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np

from knobsweep.early_stop.decide import decide_rung, look_alpha
from knobsweep.report.manytoone import LESS, critical_value, lambdas_of
from knobsweep.report.stats import NoiseFloor, RunScores, minimum_detectable

FRACTIONS = {2: (0.25, 0.5), 3: (0.25, 0.5, 0.75)}  # rungs -> the fractions of training they look at
PROGRESS = 0.20  # accuracy still to learn at the start of training (the shift -0.2 (1 - f))
EFFECT = -10.0  # points: the losing arm
CHUNK = 100  # sweeps simulated at once (memory)
FLOOR_DF = 4  # degrees of freedom of the noise floor a one-seed sweep brings from earlier sweeps

SPREADS = (0.0, 1.5, 4.4)  # run-to-run SD, accuracy points
# (prompts, spreads, designs, arms, rungs, alpha, rho): the main grid, then one knob moved at a time.
FULL = [
    (200, SPREADS, ("1+floor", "1+3b", "2", "3"), (2, 5), (2, 3), 0.05, 0.5),
    (200, SPREADS, ("2",), (2, 5), (2, 3), 0.025, 0.5),  # the final test's lower tail as the total alpha
    (200, SPREADS[1:], ("2",), (2, 5), (2,), 0.05, 0.9),  # a run keeps most of its luck through training
    (800, SPREADS, ("1+3b", "2"), (2, 5), (2,), 0.05, 0.5),
]
QUICK = [(200, SPREADS, ("1+3b", "2", "3"), (2,), (2,), 0.05, 0.5)]


@dataclass(frozen=True)
class Cell:
    prompts: int
    spread: float
    design: str
    arms: int
    rungs: int
    alpha: float
    rho: float

    @property
    def seeds(self) -> tuple[int, int]:
        """(seeds per arm, seeds of the baseline)."""
        if self.design == "1+3b":
            return 1, 3
        if self.design == "1+floor":
            return 1, 1
        return int(self.design), int(self.design)

    @property
    def fractions(self) -> tuple[float, ...]:
        return FRACTIONS[self.rungs]


def effects(cell: Cell, scenario: str) -> np.ndarray:
    """Each arm's true effect at each rung (points), arms x rungs; arm 0 is the losing one."""
    out = np.zeros((cell.arms, cell.rungs))
    fractions = np.array(cell.fractions)
    if scenario == "flat":
        out[0] = EFFECT
    elif scenario == "growing":
        out[0] = EFFECT * (0.5 + 0.5 * (fractions - fractions[0]) / (1 - fractions[0]))
    return out


def simulate(cell: Cell, effect: np.ndarray, repeats: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """0/1 scores of `repeats` sweeps, sweep x run x rung x prompt (the baseline's runs first, then
    each arm's), and each sweep's true run-score variance (for the noise floor)."""
    arm_seeds, base_seeds = cell.seeds
    owner = np.repeat(np.arange(-1, cell.arms), [base_seeds] + [arm_seeds] * cell.arms)  # -1: baseline
    shift = np.vstack([np.zeros((1, cell.rungs)), effect])[owner + 1]  # run x rung, points
    difficulty = rng.beta(2.0, 2.0, (repeats, 1, 1, cell.prompts))
    kept = rng.standard_normal((repeats, owner.size, 1))
    fresh = rng.standard_normal((repeats, owner.size, cell.rungs))
    run_effect = cell.spread * (math.sqrt(cell.rho) * kept + math.sqrt(1 - cell.rho) * fresh)
    progress = -PROGRESS * (1 - np.array(cell.fractions))[None, None, :, None]
    accuracy = np.clip(difficulty + progress + ((run_effect + shift) / 100)[..., None], 0.0, 1.0)
    scores = rng.random(accuracy.shape) < accuracy
    # A run's score variance between seeds: the spread plus eval sampling (at the baseline's accuracy).
    base_accuracy = np.clip(difficulty + progress, 0.0, 1.0)[:, 0, 0]
    variance = (cell.spread / 100) ** 2 + (base_accuracy * (1 - base_accuracy)).mean(axis=1) / cell.prompts
    return scores, variance


def stop_rungs(cell: Cell, scores: np.ndarray, floor: NoiseFloor | None) -> np.ndarray:
    """One sweep, rung by rung, as the machinery runs it: the rung (1-based) at which each arm
    stopped, 0 where it ran to the end."""
    arm_seeds, base_seeds = cell.seeds
    rows = [f"p{i}" for i in range(cell.prompts)]

    def run(index: int, name: str, seed: int, rung: int) -> RunScores:
        values = dict(zip(rows, scores[index, rung].astype(float).tolist()))
        return RunScores(f"{name},seed={seed}", seed, "COMPLETED", values, "eval")

    stopped = np.zeros(cell.arms, dtype=int)
    for rung, fraction in enumerate(cell.fractions):
        baseline = [run(seed, "baseline", seed, rung) for seed in range(base_seeds)]
        arms = {
            arm: [run(base_seeds + arm * arm_seeds + seed, f"arm{arm}", seed, rung) for seed in range(arm_seeds)]
            for arm in range(cell.arms)
            if not stopped[arm]
        }
        if not arms:
            break
        decisions = decide_rung(
            {f"arm{arm}": runs for arm, runs in arms.items()},
            baseline,
            rung=rung + 1,
            rungs=cell.rungs,
            fraction=fraction,
            alpha=cell.alpha,
            noise=floor,
        )
        for arm in arms:
            if decisions[f"arm{arm}"].stop:
                stopped[arm] = rung + 1
    return stopped


def run_scenario(cell: Cell, scenario: str, repeats: int, rng: np.random.Generator) -> np.ndarray:
    """The stop rung of every arm of `repeats` sweeps, sweep x arm."""
    out = np.zeros((repeats, cell.arms), dtype=int)
    for start in range(0, repeats, CHUNK):
        scores, variance = simulate(cell, effects(cell, scenario), min(CHUNK, repeats - start), rng)
        for sweep in range(len(scores)):
            floor = None
            if cell.design == "1+floor":
                estimate = variance[sweep] * rng.chisquare(FLOOR_DF) / FLOOR_DF
                floor = NoiseFloor(float(estimate), FLOOR_DF, "earlier sweeps (simulated)")
            out[start + sweep] = stop_rungs(cell, scores[sweep], floor)
    return out


def rate(per_sweep: np.ndarray) -> str:
    """Mean of a per-sweep share, in percent, with its Monte-Carlo standard error."""
    error = per_sweep.std(ddof=1) / math.sqrt(per_sweep.size) if per_sweep.size > 1 else float("nan")
    return f"{100 * per_sweep.mean():.1f} ± {100 * error:.1f}"


def detectable(cell: Cell) -> float:
    """The gap (points) one look finds 80% of the time, in the normal-theory approximation the
    report's minimum detectable effect uses: (c + t_0.80(df)) SE, c Dunnett's one-sided bound at
    the level of a look, SE from the true run-score variance at the first rung."""
    arm_seeds, base_seeds = cell.seeds
    if cell.design == "1+floor":
        df = FLOOR_DF
    else:
        df = (arm_seeds - 1) * cell.arms + base_seeds - 1
    accuracy = np.clip(np.random.default_rng(0).beta(2.0, 2.0, 100_000) - PROGRESS * (1 - cell.fractions[0]), 0, 1)
    variance = (cell.spread / 100) ** 2 + (accuracy * (1 - accuracy)).mean() / cell.prompts
    lambdas = lambdas_of((arm_seeds,) * cell.arms, base_seeds)
    bound = critical_value(lambdas, df, look_alpha(cell.alpha, cell.rungs), LESS)
    return 100 * minimum_detectable(bound, df, math.sqrt(variance * (1 / arm_seeds + 1 / base_seeds)))


def measure(job: tuple) -> dict:
    cell, repeats, seed = job
    rng = np.random.default_rng(seed)
    null = run_scenario(cell, "null", repeats, rng) > 0
    out = {"per arm": rate(null.mean(axis=1)), "family": rate(null.any(axis=1).astype(float))}
    out["80%"] = f"{detectable(cell):.1f}"
    for scenario in ("flat", "growing"):
        stopped = run_scenario(cell, scenario, repeats, rng)
        losing = stopped[:, 0]
        out[scenario] = " / ".join(rate(((losing > 0) & (losing <= k)).astype(float)) for k in range(1, cell.rungs + 1))
        if scenario == "flat":  # the null arms beside a losing one: tested in a family that shrinks
            out["beside"] = rate((stopped[:, 1:] > 0).mean(axis=1))
    return out


def exact_split(alpha: float, rungs: int, correlation: float) -> float:
    """The one-sided level per look at which `rungs` equicorrelated normal statistics cross it at
    least once with probability `alpha` (Pocock's equal split, for this correlation between looks):
    what Bonferroni's alpha / rungs gives away."""
    from scipy.optimize import brentq
    from scipy.stats import multivariate_normal, norm

    cov = np.full((rungs, rungs), correlation) + (1 - correlation) * np.eye(rungs)
    normal = multivariate_normal(np.zeros(rungs), cov, seed=1)

    def excess(level: float) -> float:
        return 1 - normal.cdf(np.full(rungs, norm.isf(level))) - alpha

    return brentq(excess, alpha / rungs, alpha, xtol=1e-6)


def print_splits(alpha: float) -> None:
    """Bonferroni's level per look beside the exact equal split, for correlations between looks."""
    print(f"\n# per-look level, one-sided, total {alpha:g}: Bonferroni against the exact equal split")
    print("| rungs | correlation between looks | Bonferroni | exact equal split |")
    print("|---|---|---|---|")
    for rungs, correlation in itertools.product((2, 3), (0.3, 0.6, 0.9)):
        print(f"| {rungs} | {correlation:g} | {alpha / rungs:.4f} | {exact_split(alpha, rungs, correlation):.4f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, help="simulated sweeps per cell and scenario (300 quick, 500 full)")
    parser.add_argument("--quick", action="store_true", help="only the cells the issue names (200 prompts, 2 rungs)")
    parser.add_argument("--seed", type=int, default=20261208)
    parser.add_argument("--processes", type=int, default=1, help="cells measured side by side")
    args = parser.parse_args()
    args.repeats = args.repeats or (300 if args.quick else 500)
    cells = [
        Cell(prompts, spread, design, arms, rungs, alpha, rho)
        for prompts, spreads, designs, arm_counts, rung_counts, alpha, rho in (QUICK if args.quick else FULL)
        for spread, design, arms, rungs in itertools.product(spreads, designs, arm_counts, rung_counts)
    ]
    columns = ["prompts", "spread", "seeds", "arms", "rungs", "alpha", "rho", "null: per arm", "null: family"]
    columns += ["-10 flat: by rung 1 / 2 (/ 3)", "null beside it", "-10 growing: by rung 1 / 2 (/ 3)", "80% at rung 1"]
    print(f"# {len(cells)} cells, {args.repeats} simulated sweeps per cell and scenario; stopped, % ± MC s.e.")
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    started = time.perf_counter()
    jobs = [(cell, args.repeats, args.seed + index) for index, cell in enumerate(cells)]
    with ProcessPoolExecutor(min(args.processes, os.cpu_count() or 1)) as pool:  # a seed per cell: any order
        for cell, out in zip(cells, pool.map(measure, jobs)):
            values = [cell.prompts, f"{cell.spread:g}", cell.design, cell.arms, cell.rungs, cell.alpha, cell.rho]
            values += [out["per arm"], out["family"], out["flat"], out["beside"], out["growing"], out["80%"]]
            print("| " + " | ".join(str(v) for v in values) + " |", flush=True)
    print(f"# {time.perf_counter() - started:.0f} s", file=sys.stderr)
    print_splits(0.05)


if __name__ == "__main__":
    main()

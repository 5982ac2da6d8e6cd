"""Is the report's verdict honest? Simulated sweeps through the code the report calls.

Eval data is drawn the way training produces it: every prompt has a difficulty (its accuracy under
the baseline, Beta(2, 2) over prompts); every training run adds a random effect (the run-to-run
spread every RL paper reports: normal, SD = `spread` accuracy points); an arm adds its true effect;
each prompt is then answered once (0/1 scores: Bernoulli) or scored on a continuous scale (a Beta
draw around the run's accuracy on it, concentration 6). Arms and baseline are equal under the null.

Each simulated sweep goes through `knobsweep.report.stats.compare_family` (what
`knobsweep.report.decision.compare_arms` calls for the report and `knobsweep next`), and the bench
counts per cell:

- false: the share of null arms labelled better or worse (per arm), with its 95% Monte-Carlo interval;
- family: the share of null sweeps with any arm labelled better or worse (the family-wise error);
- power +5 / +10: the share of sweeps in which one arm with a true +5 / +10 points (the others null)
  is labelled better; and wrong: the share in which it is labelled worse;
- limited: the share of null arms labelled seed-limited (one seed per side, no noise floor).

Designs ("seeds"): 1, 2 or 3 seeds per arm and baseline, and "1+3b": one seed per arm, three of the
baseline (the cheap way to measure the run-to-run spread).

    python bench/stats_calibration.py                 # the whole grid
    python bench/stats_calibration.py --quick         # the cells the targets name
    python bench/stats_calibration.py --quick --against e1a7d59 --arms 1   # through stats.py of a git revision

An older stats.py decides arm by arm (no family), so its per-arm figures need only one arm.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import itertools
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.stats import binomtest

from knobsweep.report import stats

PROMPTS = (50, 200, 800)
SPREADS = (0.0, 1.5, 4.4, 8.6)  # run-to-run SD, accuracy points
DESIGNS = ("1", "2", "3", "1+3b")
SCORES = ("0/1", "continuous")
ARMS = (1, 5, 10)
EFFECTS = (5.0, 10.0)  # points, for power
CONCENTRATION = 6.0  # continuous scores: Beta(q c, (1 - q) c) per prompt
# The cells the targets name (--quick), plus the one-seed cells where the old verdict was honest.
QUICK = [
    (800, spread, design, scores, arms)
    for spread in SPREADS
    for design in ("1", "2", "1+3b")
    for scores in SCORES
    for arms in (1, 5, 10)
]


@dataclass(frozen=True)
class Cell:
    prompts: int
    spread: float
    design: str
    scores: str
    arms: int

    @property
    def seeds(self) -> tuple[int, int]:
        """(seeds per arm, seeds of the baseline)."""
        return (1, 3) if self.design == "1+3b" else (int(self.design), int(self.design))


def simulate(cell: Cell, effects: list[float], rng: np.random.Generator) -> tuple[dict, list]:
    """One sweep's RunScores: arms (name -> runs) and the baseline's runs; `effects` per arm (points)."""
    arm_seeds, base_seeds = cell.seeds
    rows = [f"p{i}" for i in range(cell.prompts)]
    difficulty = rng.beta(2.0, 2.0, cell.prompts)

    def run(name: str, seed: int, effect: float) -> stats.RunScores:
        accuracy = np.clip(difficulty + (rng.normal(0.0, cell.spread) + effect) / 100, 0.0, 1.0)
        if cell.scores == "0/1":
            scores = (rng.random(cell.prompts) < accuracy).astype(float)
        else:
            q = np.clip(accuracy, 0.005, 0.995)
            scores = rng.beta(q * CONCENTRATION, (1 - q) * CONCENTRATION)
        return stats.RunScores(f"{name},seed={seed}", seed, "COMPLETED", dict(zip(rows, scores.tolist())), "eval")

    baseline = [run("baseline", seed, 0.0) for seed in range(base_seeds)]
    arms = {f"arm{i}": [run(f"arm{i}", seed, effect) for seed in range(arm_seeds)] for i, effect in enumerate(effects)}
    return arms, baseline


def decide(module, arms: dict, baseline: list) -> dict[str, str]:
    """Each arm's verdict through `module` (knobsweep.report.stats, or an older revision's)."""
    if hasattr(module, "compare_family"):
        family = module.compare_family(arms, baseline)
        return {name: comparison.verdict for name, comparison in family.arms.items()}
    return {name: module.compare(runs, baseline).verdict for name, runs in arms.items()}


def share(count: int, total: int) -> str:
    low, high = binomtest(count, total).proportion_ci(confidence_level=0.95, method="wilson")
    return f"{100 * count / total:5.1f}% [{100 * low:4.1f}, {100 * high:4.1f}]"


def measure(cell: Cell, module, repeats: int, rng: np.random.Generator) -> dict:
    false = family = limited = 0
    for _ in range(repeats):
        verdicts = decide(module, *simulate(cell, [0.0] * cell.arms, rng))
        wrong = sum(v in (stats.BETTER, stats.WORSE) for v in verdicts.values())
        false += wrong
        family += wrong > 0
        limited += sum(v == getattr(stats, "SEED_LIMITED", "") for v in verdicts.values())
    out = {
        "false": share(false, repeats * cell.arms),
        "family": share(family, repeats),
        "limited": f"{100 * limited / (repeats * cell.arms):5.1f}%",
    }
    for effect in EFFECTS:
        found = wrong_sign = 0
        for _ in range(repeats):
            verdicts = decide(module, *simulate(cell, [effect] + [0.0] * (cell.arms - 1), rng))
            found += verdicts["arm0"] == stats.BETTER
            wrong_sign += verdicts["arm0"] == stats.WORSE
        out[f"+{effect:g}"] = share(found, repeats)
        out[f"wrong +{effect:g}"] = f"{100 * wrong_sign / repeats:4.1f}%"
    return out


def measure_cell(job: tuple) -> dict:
    cell, revision, repeats, seed = job
    return measure(cell, stats_at(revision) if revision else stats, repeats, np.random.default_rng(seed))


@functools.cache
def stats_at(revision: str):
    """knobsweep/report/stats.py as it was at a git revision, imported on its own."""
    root = Path(__file__).resolve().parents[1]
    source = subprocess.run(
        ["git", "show", f"{revision}:src/knobsweep/report/stats.py"],
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    path = Path(tempfile.mkdtemp()) / f"stats_{revision}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=400, help="simulated sweeps per cell and question")
    parser.add_argument("--quick", action="store_true", help="only the 800-prompt cells the targets name")
    parser.add_argument("--against", metavar="REV", help="run the cells through stats.py of this git revision")
    parser.add_argument("--arms", type=int, nargs="+", choices=ARMS, help="only these family sizes")
    parser.add_argument("--seed", type=int, default=20261207)
    parser.add_argument("--processes", type=int, default=os.cpu_count(), help="cells measured side by side")
    args = parser.parse_args()
    module = stats_at(args.against) if args.against else stats
    cells = (
        [Cell(*values) for values in QUICK]
        if args.quick
        else [Cell(*values) for values in itertools.product(PROMPTS, SPREADS, DESIGNS, SCORES, ARMS)]
    )
    cells = [cell for cell in cells if not args.arms or cell.arms in args.arms]
    columns = ["prompts", "spread", "seeds", "scores", "arms", "false", "family", "+5", "+10", "wrong +5", "limited"]
    print(f"# {len(cells)} cells, {args.repeats} simulated sweeps per cell and question, through {module.__name__}")
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    started = time.perf_counter()
    jobs = [(cell, args.against, args.repeats, args.seed + index) for index, cell in enumerate(cells)]
    with ProcessPoolExecutor(args.processes) as pool:  # each cell its own seed: the same figures in any order
        for cell, out in zip(cells, pool.map(measure_cell, jobs)):
            values = [cell.prompts, f"{cell.spread:g}", cell.design, cell.scores, cell.arms]
            print("| " + " | ".join(str(v) for v in values + [out[c] for c in columns[5:]]) + " |", flush=True)
    print(f"# {time.perf_counter() - started:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()

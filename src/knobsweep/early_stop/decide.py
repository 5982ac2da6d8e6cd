"""Does an arm stop at this rung? The calibrated many-to-one verdict, asked one-sidedly, with the
error of looking several times split over the looks.

At a rung every arm still running and the baseline are scored on the same eval prompts at the same
step; `decide_rung` puts them through `knobsweep.report.stats.compare_family`, the function the
report's verdict uses (Dunnett's many-to-one test on run scores, the run-to-run variance pooled
over every config with two or more seeds, or a known noise floor), with two changes:

- **One-sided.** Only "is it worse?" is asked (alternative "less"): an arm that is better or
  within noise always goes on, so an upper tail would spend error on nothing. Only the verdict
  WORSE stops; seed-limited (one seed per side, no noise floor), within noise, better and not
  comparable go on.
- **Several looks.** An arm equal to the baseline faces one test per rung; each has its own chance
  of a false stop. `alpha` is the one-sided error allowed over all the rungs, for the family of
  arms, and each look gets `alpha / rungs` (Bonferroni). The union bound holds whatever the
  correlation between rungs (the same runs, later checkpoints), which the group-sequential bounds
  (Pocock, O'Brien-Fleming; Jennison & Turnbull 2000) must assume: they are built for a statistic
  that accumulates data, and a rung scores a new checkpoint on the same prompts instead.

bench/rungs_calibration.py measures the false-stop rate and the power of this rule on simulated
sweeps; docs/early_stop.md gives its tables.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from knobsweep.report.stats import (
    LESS,
    NOISE,
    SEED_LIMITED,
    WORSE,
    Comparison,
    NoiseFloor,
    RunScores,
    compare_family,
)
from knobsweep.spec.early_stop import EarlyStopConfig

# one-sided false-stop error over all the rungs, for the family of arms: the spec's default (early_stop.alpha)
ALPHA = EarlyStopConfig.model_fields["alpha"].default


@dataclass(frozen=True)
class RungDecision:
    """One arm at one rung: whether it stops, the comparison that decided, and why, in words."""

    stop: bool
    comparison: Comparison  # this arm against the baseline at this rung (one-sided: ci_low is -1)
    reason: str  # a stop: rung, delta, bound and test; going on: "goes on at <rung>: <why>"
    rung: int = 0
    rungs: int = 0
    fraction: float = 0.0
    alpha: float = 0.0  # the one-sided level of this look

    def as_dict(self) -> dict:
        return {
            "stop": self.stop,
            "reason": self.reason,
            "rung": self.rung,
            "rungs": self.rungs,
            "fraction": self.fraction,
            "alpha": self.alpha,
            "comparison": self.comparison.as_dict(),
        }


def look_alpha(alpha: float, rungs: int) -> float:
    """The one-sided level of each look: `alpha` split evenly over the rungs (Bonferroni)."""
    return alpha / rungs


def decide_rung(
    arms: Mapping[str, Sequence[RunScores]],
    baseline: Sequence[RunScores],
    *,
    rung: int,
    rungs: int,
    fraction: float,
    alpha: float = ALPHA,
    noise: NoiseFloor | None = None,
) -> dict[str, RungDecision]:
    """Each arm still running (name -> its runs at this rung, one per seed) against the baseline's
    runs at the same step: stop only where the arm is worse beyond noise at level alpha / rungs.

    `rung` counts from 1 of `rungs` looks; `fraction` is the share of training done (for the
    reason); `alpha` the one-sided false-stop error over all the rungs; `noise` a run-to-run
    variance measured elsewhere, for sweeps with one seed per config (without it they never stop).
    Pass only the arms still running: one stopped at an earlier rung has no later checkpoint.
    """
    _check(rung, rungs, fraction, alpha)
    level = look_alpha(alpha, rungs)
    family = compare_family(arms, baseline, alpha=level, alternative=LESS, noise=noise)
    where = f"rung {rung} of {rungs} ({fraction:.0%} of training)"
    # family.correction states the report's 5%; this look's level is its own.
    tested = sum(comparison.comparable for comparison in family.arms.values())
    test = (
        f"Dunnett's many-to-one test over {tested} arm{'s' if tested != 1 else ''}, one-sided, "
        f"alpha {level:.3g} per look (alpha {alpha:g} split over {rungs} look{'s' if rungs > 1 else ''}, Bonferroni)"
    )
    decisions = {}
    for name, comparison in family.arms.items():
        stop = comparison.verdict == WORSE
        if stop:
            reason = (
                f"worse than the baseline at {where}: delta {comparison.delta:+.3f}, upper bound "
                f"{comparison.ci_high:+.3f} ({test})"
            )
        else:
            reason = f"goes on at {where}: {_going_on(comparison)}"
        decisions[name] = RungDecision(stop, comparison, reason, rung, rungs, fraction, level)
    return decisions


def _going_on(comparison: Comparison) -> str:
    """Why an arm goes on, in words: a one-sided look calls a better arm "within noise" too."""
    if comparison.verdict == NOISE:
        return "not worse than the baseline beyond noise"
    if comparison.verdict == SEED_LIMITED:
        return "seed-limited (one seed per side and no noise floor: no stop)"
    return f"{comparison.verdict} ({comparison.reason})" if comparison.reason else comparison.verdict


def _check(rung: object, rungs: object, fraction: object, alpha: object) -> None:
    if not _integer(rungs) or rungs < 1:
        raise ValueError(f"decide_rung: rungs must be an integer >= 1, got {rungs!r}")
    if not _integer(rung) or not 1 <= rung <= rungs:
        raise ValueError(f"decide_rung: rung must be an integer in 1..{rungs} (rungs), got {rung!r}")
    if not _number(fraction) or not 0 < fraction < 1:
        raise ValueError(f"decide_rung: fraction must be a number strictly between 0 and 1, got {fraction!r}")
    if not _number(alpha) or not 0 < alpha < 1:
        raise ValueError(f"decide_rung: alpha must be a number strictly between 0 and 1, got {alpha!r}")


def _integer(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


__all__ = ["ALPHA", "RungDecision", "decide_rung", "look_alpha"]

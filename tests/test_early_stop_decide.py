"""The stop decision at a rung: only an arm worse than the baseline beyond noise stops, one-sided,
at alpha split over the looks; one seed per side stops only with a known noise floor."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from knobsweep.early_stop.decide import RungDecision, decide_rung, look_alpha
from knobsweep.report.stats import BETTER, NOISE, NOT_COMPARABLE, SEED_LIMITED, WORSE, NoiseFloor, RunScores

PROMPTS = [f"p{i}" for i in range(200)]


def runs(name: str, levels: list[float], seed: int = 0) -> list[RunScores]:
    """One run per level: 0/1 prompt scores whose mean is exactly the level (same prompts in every run)."""
    rng = np.random.default_rng(seed)
    out = []
    for index, level in enumerate(levels):
        scores = np.zeros(len(PROMPTS))
        scores[rng.permutation(len(PROMPTS))[: round(level * len(PROMPTS))]] = 1.0
        out.append(RunScores(f"{name},seed={index}", index, "COMPLETED", dict(zip(PROMPTS, scores.tolist())), "d"))
    return out


def at_rung(arms: dict, baseline: list, **kwargs) -> dict[str, RungDecision]:
    return decide_rung(arms, baseline, **{"rung": 1, "rungs": 2, "fraction": 0.25, **kwargs})


def test_worse_arm_stops_equal_and_better_go_on():
    baseline = runs("baseline", [0.50, 0.52], seed=1)
    arms = {
        "worse": runs("worse", [0.30, 0.32], seed=2),
        "equal": runs("equal", [0.51, 0.50], seed=3),
        "better": runs("better", [0.70, 0.72], seed=4),
    }
    decisions = at_rung(arms, baseline)
    assert decisions["worse"].stop and decisions["worse"].comparison.verdict == WORSE
    assert decisions["worse"].comparison.delta == pytest.approx(-0.20)
    assert decisions["worse"].comparison.ci_low == -1.0  # one-sided: only an upper bound
    assert decisions["worse"].comparison.ci_high < 0
    reason = decisions["worse"].reason
    assert reason.startswith("worse than the baseline at rung 1 of 2 (25% of training): delta -0.200, upper bound -0.")
    assert "alpha 0.025 per look (alpha 0.05 split over 2 looks, Bonferroni)" in reason
    assert "test over 3 arms, one-sided" in reason
    assert not decisions["equal"].stop and decisions["equal"].comparison.verdict == NOISE
    assert decisions["equal"].reason == (
        "goes on at rung 1 of 2 (25% of training): not worse than the baseline beyond noise"
    )
    # One-sided "less": a better arm is never called better here, and never stops.
    assert not decisions["better"].stop and decisions["better"].comparison.verdict == NOISE


def test_one_seed_per_side_never_stops_without_a_noise_floor():
    decisions = at_rung({"arm": runs("arm", [0.20], seed=2)}, runs("baseline", [0.60], seed=1))
    assert decisions["arm"].comparison.verdict == SEED_LIMITED  # 40 points apart: beyond eval noise
    assert not decisions["arm"].stop
    assert decisions["arm"].reason == (
        "goes on at rung 1 of 2 (25% of training): seed-limited (one seed per side and no noise floor: no stop)"
    )


def test_one_seed_per_side_stops_with_a_noise_floor():
    floor = NoiseFloor(variance=0.02**2, df=8, source="earlier sweeps")
    decisions = at_rung({"arm": runs("arm", [0.40], seed=2)}, runs("baseline", [0.60], seed=1), noise=floor)
    assert decisions["arm"].stop and decisions["arm"].comparison.verdict == WORSE
    assert "earlier sweeps" in decisions["arm"].comparison.method


def test_alpha_is_split_over_the_looks():
    # A known run-to-run SD (df large: a z test) and one arm: the one-sided bound is 1.645 SE at 5% and
    # 1.960 SE at 2.5%. A delta of -1.8 SE stops with one look and goes on with two.
    sd = 0.05
    floor = NoiseFloor(variance=sd**2, df=100_000, source="given")
    delta = -1.8 * sd * math.sqrt(2)
    arms, baseline = {"arm": runs("arm", [0.5 + delta], seed=2)}, runs("baseline", [0.5], seed=1)
    one = decide_rung(arms, baseline, rung=1, rungs=1, fraction=0.5, noise=floor)["arm"]
    two = decide_rung(arms, baseline, rung=2, rungs=2, fraction=0.5, noise=floor)["arm"]
    observed = one.comparison.delta / (sd * math.sqrt(2))
    assert -1.96 < observed < -1.645  # the rounding to whole prompts keeps it between the bounds
    assert one.stop and one.alpha == pytest.approx(0.05)
    assert not two.stop and two.alpha == pytest.approx(0.025)
    assert 0.025 < two.comparison.p_value < 0.05
    assert look_alpha(0.05, 4) == pytest.approx(0.0125)


def test_not_comparable_goes_on_and_as_dict():
    failed = [RunScores("arm,seed=0", 0, "FAILED", None, "d", reason="OOM")]
    decisions = at_rung({"arm": failed}, runs("baseline", [0.5, 0.5], seed=1), rung=2, fraction=0.5)
    decision = decisions["arm"]
    assert not decision.stop and decision.comparison.verdict == NOT_COMPARABLE
    assert decision.as_dict() == {
        "stop": False,
        "reason": "goes on at rung 2 of 2 (50% of training): not comparable (failed run: arm,seed=0 FAILED (OOM))",
        "rung": 2,
        "rungs": 2,
        "fraction": 0.5,
        "alpha": 0.025,
        "comparison": decision.comparison.as_dict(),
    }
    assert BETTER not in {d.comparison.verdict for d in decisions.values()}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rung": 0}, "rung must be an integer in 1..2 (rungs), got 0"),
        ({"rung": 3}, "rung must be an integer in 1..2 (rungs), got 3"),
        ({"rung": 1.0}, "rung must be an integer in 1..2 (rungs), got 1.0"),
        ({"rungs": 0}, "rungs must be an integer >= 1, got 0"),
        ({"rungs": True}, "rungs must be an integer >= 1, got True"),
        ({"fraction": 0.0}, "fraction must be a number strictly between 0 and 1, got 0.0"),
        ({"fraction": 1}, "fraction must be a number strictly between 0 and 1, got 1"),
        ({"fraction": float("nan")}, "fraction must be a number strictly between 0 and 1, got nan"),
        ({"alpha": 0}, "alpha must be a number strictly between 0 and 1, got 0"),
        ({"alpha": 1.5}, "alpha must be a number strictly between 0 and 1, got 1.5"),
    ],
)
def test_bad_arguments_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=f"^{re.escape('decide_rung: ' + message)}$"):
        at_rung({"arm": runs("arm", [0.5, 0.5])}, runs("baseline", [0.5, 0.5]), **kwargs)

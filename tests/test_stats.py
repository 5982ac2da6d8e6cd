"""An arm against the baseline (a family of one), on constructed data with known answers."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest

from knobsweep.report.stats import (
    BETTER,
    NOISE,
    NOT_COMPARABLE,
    SEED_LIMITED,
    NoiseFloor,
    RunScores,
    compare,
    mcnemar,
    read_scores,
    t_interval,
)

ROWS = [f"test-{i}" for i in range(40)]


def run(name: str, values: list[float], seed: int | None = 0, state: str = "COMPLETED", data: str = "d") -> RunScores:
    return RunScores(name, seed, state, dict(zip(ROWS, values)), data)


def noisy(seed: int, low: float = 0.0, high: float = 0.5) -> list[float]:
    rng = random.Random(seed)
    return [rng.uniform(low, high) for _ in ROWS]


def test_identical_runs_give_zero_inside_the_ci() -> None:
    values = noisy(1)
    result = compare([run("arm", values)], [run("baseline", values)])
    assert result.verdict == NOISE and result.delta == 0.0
    assert result.ci_low <= 0.0 <= result.ci_high
    binary = [float(i % 3 == 0) for i in range(len(ROWS))]
    exact = compare([run("arm", binary)], [run("baseline", binary)])
    assert exact.verdict == NOISE and (exact.delta, exact.ci_low, exact.ci_high, exact.p_raw) == (0, 0, 0, 1)
    assert "McNemar" in exact.method


def test_one_seed_per_side_is_seed_limited_beyond_eval_noise_and_never_better() -> None:
    # The arm beats the baseline on every prompt: beyond eval sampling, but with one training run per
    # side a lucky seed could do that too. No better/worse verdict without a known run-to-run spread.
    base = noisy(2)
    result = compare([run("arm", [v + 0.1 for v in base])], [run("baseline", base)])
    assert result.verdict == SEED_LIMITED and result.delta == pytest.approx(0.1)
    assert result.ci_low == pytest.approx(0.1) and result.ci_high == pytest.approx(0.1)  # the eval-only interval
    assert "eval sampling only (paired t interval over 40 prompts)" in result.method
    assert "run 2 seeds of each arm, or 3 of the baseline" in result.reason and result.p_value is None
    # The same runs with a run-to-run SD known from elsewhere: a verdict, the eval interval no longer the CI.
    known = compare([run("arm", [v + 0.1 for v in base])], [run("baseline", base)], noise=NoiseFloor(0.02**2, 8, "h"))
    assert known.verdict == BETTER and known.ci_low < 0.1 - 2 * 0.02 * math.sqrt(2) < known.ci_high
    assert known.p_value < 0.05 and known.mde > 0


def test_paired_beats_unpaired_on_shared_prompts() -> None:
    # Prompts differ a lot in difficulty; the arm adds a small, steady gain on each. Unpaired CIs (each
    # run's own t interval, combined in quadrature) drown it; the paired eval-only interval sees it.
    base = noisy(3, 0.0, 0.9)
    rng = random.Random(4)
    arm = [v + 0.03 + rng.uniform(-0.02, 0.02) for v in base]
    result = compare([run("arm", arm)], [run("baseline", base)])
    assert result.verdict == SEED_LIMITED and result.ci_low > 0
    _, arm_low, arm_high, _ = t_interval(arm)
    _, base_low, base_high, _ = t_interval(base)
    unpaired_half = math.hypot((arm_high - arm_low) / 2, (base_high - base_low) / 2)
    assert abs(result.delta) < unpaired_half  # an unpaired interval would have called it noise


def test_mcnemar_exact_known_answers() -> None:
    # 8 prompts only the arm gets right, 1 only the baseline, 11 both right: p = 2 * P(X >= 8 | 9, 1/2).
    arm = [1.0] * 8 + [0.0] + [1.0] * 11
    base = [0.0] * 8 + [1.0] + [1.0] * 11
    delta, low, high, p = mcnemar(arm, base)
    assert delta == pytest.approx(7 / 20) and p == pytest.approx(2 * (9 + 1) / 2**9)
    assert 0 < low < delta < high
    # 6 against 2 (of 20): p = 2 * (28 + 8 + 1) / 256, not significant, and the CI says the same.
    delta, low, high, p = mcnemar([1.0] * 6 + [0.0] * 2 + [0.0] * 12, [0.0] * 6 + [1.0] * 2 + [0.0] * 12)
    assert delta == pytest.approx(0.2) and p == pytest.approx(74 / 256) and low < 0 < high
    # All 20 discordant one way: Clopper-Pearson's lower bound for 20/20 is 0.025 ** (1 / 20).
    delta, low, high, p = mcnemar([1.0] * 20, [0.0] * 20)
    assert (delta, high) == (1.0, 1.0) and low == pytest.approx(2 * 0.025 ** (1 / 20) - 1)
    assert p == pytest.approx(2 / 2**20)


def test_t_interval_known_answer() -> None:
    mean, low, high, p = t_interval([0.1, 0.3])
    # mean 0.2, standard error 0.1, t(0.975, 1 d.f.) = 12.7062; p = 2 P(T_1 > 2) = 0.2952
    assert mean == pytest.approx(0.2) and high - mean == pytest.approx(1.270620, rel=1e-5)
    assert low == pytest.approx(0.2 - 1.270620, rel=1e-5) and p == pytest.approx(0.295167, rel=1e-4)
    with pytest.raises(ValueError, match="at least 2"):
        t_interval([0.1])


@pytest.mark.parametrize("right,wrong,size", [(8, 1, 20), (6, 2, 20), (0, 5, 30), (13, 13, 40), (40, 0, 40)])
def test_mcnemar_agrees_with_scipy_stats(right: int, wrong: int, size: int) -> None:
    from scipy.stats import binomtest

    arm = [1.0] * right + [0.0] * wrong + [1.0] * (size - right - wrong)
    base = [0.0] * right + [1.0] * wrong + [1.0] * (size - right - wrong)
    _, low, high, p = mcnemar(arm, base)
    test = binomtest(right, right + wrong, 0.5)
    interval = test.proportion_ci(confidence_level=0.95, method="exact")
    scale = (right + wrong) / size
    assert p == pytest.approx(test.pvalue)
    assert low == pytest.approx(scale * (2 * interval.low - 1)) and high == pytest.approx(
        scale * (2 * interval.high - 1)
    )
    assert (low > 0 or high < 0) == (p < 0.05)  # the CI and the test agree


def test_two_seeds_with_spread_are_wider_than_two_standard_errors() -> None:
    # Seed means: arm 0.60 and 0.50, baseline 0.40 and 0.42 (each seed a constant over the prompts).
    arm = [run("arm,seed=0", [0.60] * 40, 0), run("arm,seed=1", [0.50] * 40, 1)]
    base = [run("baseline,seed=0", [0.40] * 40, 0), run("baseline,seed=1", [0.42] * 40, 1)]
    result = compare(arm, base)
    assert (result.seeds, result.baseline_seeds) == (2, 2) and result.delta == pytest.approx(0.14)
    # Pooled run-to-run variance: (0.05^2 * 2 + 0.01^2 * 2) / 2 d.f. = 0.0026; SE of the delta
    # sqrt(0.0026 (1/2 + 1/2)) = 0.05099; one arm: Dunnett is the t test, t(0.975, 2 d.f.) = 4.3027.
    half = 4.302653 * math.sqrt(0.0026)
    assert result.ci_low == pytest.approx(0.14 - half, rel=1e-5) and result.ci_high == pytest.approx(0.14 + half)
    assert result.verdict == NOISE  # 2 seeds a side cannot separate 0.14 from a spread this large...
    assert abs(0.14) > 2 * math.sqrt(0.0026)  # ...which a "2 standard errors" rule would have called separated
    assert "2 d.f." in result.method and result.p_value == pytest.approx(result.p_raw)  # one arm: nothing to adjust
    # A difference of scores in [0, 1] lies in [-1, 1]: the interval is cut there.
    wide = compare([run("arm,seed=0", [0.9] * 40, 0), run("arm,seed=1", [0.1] * 40, 1)], base)
    assert (wide.ci_low, wide.ci_high) == (-1.0, 1.0) and wide.verdict == NOISE


def test_seeds_that_agree_are_separated_and_every_baseline_seed_counts() -> None:
    base = [run(f"baseline,seed={s}", noisy(10 + s), s) for s in range(3)]
    arm = [run(f"arm,seed={s}", [v + 0.2 for v in noisy(10 + s)], s) for s in range(3)]
    result = compare(arm, base)
    assert result.verdict == BETTER and result.delta == pytest.approx(0.2) and result.seeds == 3
    # One arm seed against three baseline seeds: no seed is dropped; the baseline's seeds give the spread.
    lone = compare([arm[0]], base)
    assert lone.baseline_seeds == 3 and lone.delta == pytest.approx(
        sum(noisy(10)) / 40 + 0.2 - sum(sum(noisy(10 + s)) / 40 for s in range(3)) / 3
    )
    assert "2 d.f." in lone.method
    # The baseline against the base model (one reference run, no seed): the baseline's seeds give the spread.
    reference = run("base model", noisy(10), None, state="evaluated")
    versus_base = compare(base, [reference])
    assert versus_base.seeds == 3 and versus_base.comparable


def test_not_comparable_says_why() -> None:
    base = [run("baseline,seed=0", noisy(1), 0), run("baseline,seed=1", noisy(2), 1)]
    failed = compare([run("arm,seed=0", noisy(3), 0, state="FAILED")], base)
    assert failed.verdict == NOT_COMPARABLE and failed.reason.startswith("failed run: arm,seed=0 FAILED")
    pending = compare([run("arm,seed=0", noisy(3), 0), RunScores("arm,seed=1", 1, "RUNNING", None)], base)
    assert pending.verdict == NOT_COMPARABLE and pending.reason == "missing seeds: arm,seed=1 not evaluated"
    other_data = compare([run("arm,seed=0", noisy(3), 0, data="other")], base)
    assert other_data.verdict == NOT_COMPARABLE and other_data.reason.startswith("different eval data")
    assert compare([], base).verdict == NOT_COMPARABLE
    assert failed.delta is None and failed.ci_low is None
    nan = compare([run("arm,seed=0", [float("nan")] + noisy(3)[1:], 0)], base)
    assert (
        nan.verdict == NOT_COMPARABLE
        and nan.reason == "arm,seed=0: score nan for prompt test-0 is not a number in [0, 1]"
    )
    infinite = compare([run("arm,seed=0", noisy(3), 0)], [run("baseline", [math.inf] * 40)])
    assert infinite.verdict == NOT_COMPARABLE and "score inf for prompt test-0" in infinite.reason


def test_read_scores_means_valid_samples_and_fingerprints_the_prompts(tmp_path: Path) -> None:
    def write(name: str, records: list[dict]) -> Path:
        path = tmp_path / name
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
        return path

    records = [
        {"row_id": "test-0", "sample": 0, "score": 1.0, "ground_truth": "3"},
        {"row_id": "test-0", "sample": 1, "score": 0.5, "ground_truth": "3"},
        {"row_id": "test-1", "sample": 0, "score": None, "valid": False, "ground_truth": "4"},
        {"row_id": "test-1", "sample": 1, "score": 0.0, "ground_truth": "4"},
        {"row_id": "test-2", "sample": 0, "score": None, "valid": False, "ground_truth": "5"},
    ]
    scores, fingerprint = read_scores(write("a.jsonl", records))
    assert scores == {"test-0": 0.75, "test-1": 0.0}
    _, same = read_scores(write("b.jsonl", [{**r, "score": 0.0} for r in reversed(records)]))
    _, other = read_scores(write("c.jsonl", [{**r, "ground_truth": "9"} for r in records]))
    assert same == fingerprint != other
    assert read_scores(tmp_path / "missing.jsonl") is None
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(records[0]) + "\n{oops\n")
    with pytest.raises(ValueError, match=r"bad\.jsonl:2: not a JSON line"):
        read_scores(bad)


def test_few_differing_prompts_are_not_enough() -> None:
    # 4 of 40 prompts better, none worse: a sign test gives p = 2 / 2^4 = 0.125; the paired t
    # interval over the prompts contains 0 too, so even before seed noise this is within noise.
    base = [0.0] * 40
    arm = [0.9, 0.9, 0.1, 0.1] + [0.0] * 36
    result = compare([run("arm", arm)], [run("baseline", base)])
    assert result.verdict == NOISE and result.ci_low < 0 < result.ci_high
    assert "within eval noise alone" in result.reason

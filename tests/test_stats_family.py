"""Many arms against one baseline: Dunnett's procedure on run scores, the pooled run-to-run noise,
one-sided questions, prompts left out, a noise floor from earlier sweeps, and the plan's power."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from knobsweep import layout
from knobsweep.report import manytoone
from knobsweep.report.decision import compare_arms
from knobsweep.report.history import replicated_arms
from knobsweep.report.power import ASSUMED, Design, detectable, measured_noise
from knobsweep.report.stats import (
    BETTER,
    NOISE,
    NOT_COMPARABLE,
    SEED_LIMITED,
    WORSE,
    NoiseFloor,
    RunScores,
    compare_family,
    score_interval,
)

PROMPTS = [f"p{i}" for i in range(50)]


def runs(name: str, levels: list[float], rng: np.random.Generator) -> list[RunScores]:
    """One run per level: prompt scores spread around the level (the same prompts in every run)."""
    out = []
    for seed, level in enumerate(levels):
        noise = rng.normal(0.0, 0.05, len(PROMPTS))
        scores = np.clip(level + noise - noise.mean(), 0.0, 1.0)  # the run's mean is its level
        out.append(RunScores(f"{name},seed={seed}", seed, "COMPLETED", dict(zip(PROMPTS, scores.tolist())), "d"))
    return out


@pytest.mark.parametrize("alternative", ["two-sided", "less", "greater"])
def test_dunnett_equals_scipy_on_run_scores(alternative: str) -> None:
    from scipy.stats import dunnett

    rng = np.random.default_rng(1)
    levels = {"a": [0.50, 0.53], "b": [0.41, 0.44, 0.40], "c": [0.55], "d": [0.47, 0.52]}
    base_levels = [0.48, 0.50, 0.47]
    arms = {name: runs(name, values, rng) for name, values in levels.items()}
    family = compare_family(arms, runs("baseline", base_levels, rng), alternative=alternative)
    scipy = dunnett(*(np.array(v) for v in levels.values()), control=np.array(base_levels), alternative=alternative)
    interval = scipy.confidence_interval(0.95)
    for index, name in enumerate(levels):
        ours = family.arms[name]
        assert ours.p_value == pytest.approx(scipy.pvalue[index], abs=2e-3)  # scipy's is quasi-Monte Carlo
        if alternative != "less":
            assert ours.ci_low == pytest.approx(interval.low[index], abs=2e-3)
        if alternative != "greater":
            assert ours.ci_high == pytest.approx(interval.high[index], abs=2e-3)
    # Pooled over every config with two or more seeds: 1 + 2 + 0 + 1 + 2 (baseline) = 6 d.f.
    assert family.noise.df == 6 and "6 d.f." in family.arms["a"].method
    assert family.correction.startswith("Dunnett's many-to-one procedure over 4 arms")


def test_the_bound_is_students_t_for_one_arm_and_wider_for_many() -> None:
    from scipy.special import stdtrit

    for df in (1, 2, 6, 40):
        assert manytoone.critical_value((math.sqrt(0.5),), df, 0.05, "two-sided") == pytest.approx(
            stdtrit(df, 0.975), rel=1e-6
        )
    one, ten = (manytoone.critical_value((math.sqrt(0.5),) * k, 11, 0.05, "two-sided") for k in (1, 10))
    assert ten > one * 1.3  # ten looks at once need a wider bound than one
    # Known variance (infinite d.f.), one arm: the normal quantile.
    assert manytoone.critical_value((math.sqrt(0.5),), math.inf, 0.05, "two-sided") == pytest.approx(1.959964, 1e-5)


def test_a_clear_loser_is_worse_and_the_others_within_noise_with_their_detectable_effect() -> None:
    rng = np.random.default_rng(2)
    baseline = runs("baseline", [0.50, 0.52], rng)
    arms = {"lr": runs("lr", [0.30, 0.31], rng), "n": runs("n", [0.51, 0.50], rng)}
    family = compare_family(arms, baseline)
    lr, n = family.arms["lr"], family.arms["n"]
    assert lr.verdict == WORSE and lr.ci_high < 0 and lr.p_value < 0.05 and lr.p_raw < lr.p_value
    assert n.verdict == NOISE and n.ci_low < 0 < n.ci_high
    assert n.mde == pytest.approx(lr.mde) and n.mde > abs(n.delta)
    assert n.reason == f"the design detects {100 * n.mde:.1f} points or more (80% power)"
    # Asking only whether an arm is worse (an early stop): a narrower bound on that side, and a better
    # arm is never called better.
    worse_only = compare_family({**arms, "up": runs("up", [0.70, 0.72], rng)}, baseline, alternative="less")
    assert worse_only.arms["lr"].verdict == WORSE and worse_only.arms["up"].verdict == NOISE
    assert worse_only.arms["lr"].ci_low == -1.0


def test_one_seed_everywhere_is_seed_limited_unless_a_floor_is_given() -> None:
    rng = np.random.default_rng(3)
    baseline = runs("baseline", [0.50], rng)
    arms = {"big": runs("big", [0.70], rng), "small": runs("small", [0.505], rng)}
    family = compare_family(arms, baseline)
    assert family.noise is None and family.correction.startswith("none: with one seed per side")
    assert family.arms["big"].verdict == SEED_LIMITED and family.arms["big"].ci_low > 0
    assert "it stands if the run-to-run SD is under" in family.arms["big"].reason
    assert family.arms["small"].verdict == NOISE and "within eval noise alone" in family.arms["small"].reason
    floor = NoiseFloor(0.03**2, 10, "earlier sweeps")
    decided = compare_family(arms, baseline, noise=floor)
    assert decided.arms["big"].verdict == BETTER and decided.arms["small"].verdict == NOISE
    assert "from earlier sweeps (10 d.f.)" in decided.arms["big"].method


def test_a_lone_baseline_against_a_replicated_arm_uses_the_arms_spread() -> None:
    rng = np.random.default_rng(4)
    family = compare_family({"x": runs("x", [0.60, 0.62, 0.58], rng)}, runs("baseline", [0.50], rng))
    x = family.arms["x"]
    assert family.noise.df == 2 and x.verdict == BETTER and (x.seeds, x.baseline_seeds) == (3, 1)
    # SE = sd sqrt(1/3 + 1) with sd = 0.02: the lone baseline run carries most of the uncertainty.
    assert x.ci_high - x.delta == pytest.approx(
        manytoone.critical_value(manytoone.lambdas_of((3,), 1), 2, 0.05, "two-sided") * 0.02 * math.sqrt(4 / 3),
        rel=1e-6,
    )


def test_prompts_left_out_are_counted_and_named_and_a_mostly_empty_run_is_not_comparable() -> None:
    rng = np.random.default_rng(5)
    baseline = runs("baseline", [0.5, 0.5], rng)
    gappy = runs("gappy", [0.5, 0.5], rng)
    gappy[1] = RunScores(
        gappy[1].name, 1, "COMPLETED", {k: v for k, v in gappy[1].scores.items() if k not in ("p3", "p7")}, "d"
    )
    empty = runs("empty", [0.5, 0.5], rng)
    empty[0] = RunScores(empty[0].name, 0, "COMPLETED", dict(list(empty[0].scores.items())[:20]), "d")
    family = compare_family({"gappy": gappy, "empty": empty}, baseline)
    assert family.prompts == 48
    assert family.arms["gappy"].left_out == "2 of 50 prompts left out: no valid sample in gappy,seed=1 (2)"
    assert family.arms["empty"].verdict == NOT_COMPARABLE
    assert family.arms["empty"].reason.startswith("empty,seed=0 has no valid sample on 30 of the baseline's 50")


def test_score_interval_uses_the_same_noise() -> None:
    rng = np.random.default_rng(6)
    baseline = runs("baseline", [0.50, 0.54], rng)
    score = score_interval(baseline, NoiseFloor(0.02**2, 4, "x"))
    half = 2.776445 * 0.02 / math.sqrt(2)  # t(0.975, 4 d.f.)
    assert score.mean == pytest.approx(0.52) and score.high - score.mean == pytest.approx(half, rel=1e-5)
    alone = score_interval(baseline[:1], None)
    assert alone.method.startswith("eval sampling only") and alone.low < 0.50 < alone.high


# ---------------------------------------------------------------- earlier sweeps: the floor and the plan


def write_run(root: Path, train_key: str, eval_key: str, samples: dict[str, list[float]], config: dict) -> None:
    import yaml

    from knobsweep.report.history import _eval_config

    train = layout.path(layout.TRAIN_DIR, root, key=train_key)
    train.mkdir(parents=True)
    (train / "status.json").write_text(json.dumps({"state": "COMPLETED"}))
    (train / "run.yaml").write_text(yaml.safe_dump({"model": config["model"], "train": config["train"], "seed": 0}))
    evaluation = layout.path(layout.EVAL_DIR, root, key=eval_key)
    evaluation.mkdir(parents=True)
    (evaluation / "summary.json").write_text(json.dumps({"config": _eval_config(config)}))
    lines = [
        {"row_id": row, "ground_truth": row, "score": score} for row, scores in samples.items() for score in scores
    ]
    (evaluation / "samples.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))


def earlier_sweep(root: Path, config: dict, levels: list[float], rng: np.random.Generator, name: str = "earlier"):
    """An earlier sweep's report listing one arm with a seed per level, its runs' files where layout puts them."""
    rows = []
    for seed, level in enumerate(levels):
        samples = {
            row: [float(rng.random() < level + 0.1 * (i % 3 - 1)) for _ in range(4)] for i, row in enumerate(PROMPTS)
        }
        write_run(root, f"{name}-t{seed}", f"{name}-e{seed}", samples, config)
        rows.append(
            {
                "run": f"baseline,seed={seed}",
                "arm": "baseline",
                "reference": False,
                "train_key": f"{name}-t{seed}",
                "eval_key": f"{name}-e{seed}",
            }
        )
    summary = root / "results" / name / "summary.json"
    summary.parent.mkdir(parents=True, exist_ok=True)
    summary.write_text(json.dumps({"experiment": name, "rows": rows}))


def test_a_one_seed_sweep_takes_its_noise_floor_from_earlier_sweeps_of_its_setting(write_spec, tmp_path) -> None:
    from knobsweep.spec import load_experiment

    spec = write_spec(
        """
        baseline:
          model: {name: tiny}
          data: {source: gsm8k, path: data/gsm8k, train_size: 8, eval_size: 50}
          eval: {temperature: 1.0, samples: 4}
        sweep:
          train.learning_rate: [3.0e-4]
        """
    )
    experiment = load_experiment(spec)
    baseline, arm = experiment.runs
    rng = np.random.default_rng(7)
    for run, level in ((baseline, 0.5), (arm, 0.8)):
        samples = {row: [float(rng.random() < level) for _ in range(4)] for row in PROMPTS}
        write_run(tmp_path, run.keys.train, run.keys.eval, samples, run.config)
    assert compare_arms(experiment, tmp_path).arms["learning_rate=3e-4"].verdict == SEED_LIMITED
    # An earlier sweep of the same model, method and eval, on the same prompts, with 6 seeds of an arm.
    earlier_sweep(tmp_path, baseline.config, [0.5, 0.52, 0.49, 0.5, 0.51, 0.5], rng)
    # ...and one of another model, which must not count.
    other = {**baseline.config, "model": {**baseline.config["model"], "name": "Qwen/Qwen2.5-0.5B"}}
    earlier_sweep(tmp_path, other, [0.1, 0.9], rng, name="other")
    comparisons = compare_arms(experiment, tmp_path)
    assert comparisons.noise.df == 5 and comparisons.noise.source.endswith(": earlier (6 runs)")
    assert comparisons.arms["learning_rate=3e-4"].verdict == BETTER
    assert [arm.experiment for arm in replicated_arms(baseline.config, tmp_path)] == ["earlier"]

    # The plan's power from the same history, against the assumption it makes without any.
    noise = measured_noise(replicated_arms(baseline.config, tmp_path))
    assert noise.source == "measured on 6 finished runs under results/: earlier (6 runs)"
    assert 0.15 < noise.sample_variance < 0.3  # 0/1 samples near 0.5
    design = Design(arms=2, arm_seeds=2, baseline_seeds=2, prompts=50, samples=4, sampled=True)
    assert detectable(design, noise) > 0 and detectable(design, ASSUMED) > 0
    assert detectable(Design(2, 1, 1, 50, 4, True), noise) is None  # one seed everywhere: no verdict at all
    more = detectable(Design(2, 2, 2, 200, 4, True), ASSUMED)
    assert more == pytest.approx(detectable(design, ASSUMED) / 2, rel=1e-6)  # eval noise alone: 4x prompts halve it

"""Is an arm better than the baseline, beyond noise? One model of noise for every verdict.

Every run of an experiment is scored on the same eval prompts. A run's score is its mean over
those prompts; two runs of one config differ by the run-to-run spread (the training seed: data
order, initialisation, sampled rollouts) plus eval sampling, and every RL paper reports that spread
as large (Hochlehnert et al. 2025: 5-15 points on small math sets). So the unit of evidence is the
training run, not the prompt (Bouthillier et al. 2021):

- **The run-to-run variance is pooled over the sweep.** Every arm of one experiment shares the
  model, data, method and eval, so the variance of a run's score between seeds of one config is
  pooled over every arm with two or more seeds and the baseline: sum(k_i - 1) degrees of freedom
  (five arms of 2 seeds and a 2-seed baseline give 6, where a per-arm t test has 1). It holds eval
  sampling too (a run's score is measured on sampled completions), so nothing is counted twice.
- **Many arms are one family.** Each arm's mean is tested against the baseline's with Dunnett's
  many-to-one procedure (Dunnett 1955; `knobsweep.report.manytoone`), which controls the
  family-wise error: with ten arms equal to the baseline, the chance that any is called better or
  worse stays 5%. The interval is the simultaneous 95% interval; the p-value is adjusted over the
  family (the raw one is kept beside it).
- **One seed per side gives no better/worse verdict** unless a noise floor is known (the caller
  passes one, e.g. from earlier sweeps). Without it the verdict is **seed-limited** where the
  eval-only interval (paired over prompts: exact McNemar for 0/1 scores, else the paired t
  interval) excludes 0, and **within noise** where even that interval contains 0.
- **How much noise** is said too: each arm's minimum detectable effect, the true delta this design
  finds 80% of the time (Miller 2024's power analysis).

Comparisons that would mislead are **not comparable**, with the reason: a failed run, a run
without its eval, a non-finite score, different eval data. A prompt left out because one run has
no valid sample on it is counted and named. Nothing here renders anything: `knobsweep.report`
draws the verdicts, and other commands decide with `compare_family` alone.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from knobsweep.report.manytoone import (
    GREATER,
    LESS,
    TWO_SIDED,
    adjusted_p_values,
    critical_value,
    lambdas_of,
    t_quantile,
)

CONFIDENCE = 0.95
ALPHA = 1 - CONFIDENCE
POWER = 0.80  # the minimum detectable effect is found this often
MAX_LEFT_OUT = 0.10  # an arm whose runs lack valid samples on more of the prompts is not comparable

BETTER, WORSE, NOISE, SEED_LIMITED, NOT_COMPARABLE = (
    "better",
    "worse",
    "within noise",
    "seed-limited",
    "not comparable",
)
VERDICTS = (BETTER, WORSE, NOISE, SEED_LIMITED, NOT_COMPARABLE)
FAILED = ("FAILED", "CANCELLED")  # training states whose eval (if any) is not a result
DIFFERENT_DATA = "different eval data"


@dataclass(frozen=True)
class RunScores:
    """One run's per-prompt eval scores: `scores` maps row_id -> the mean headline score of that
    prompt's valid samples (None: no eval yet); `eval_data` fingerprints the prompts scored
    (row_id and ground truth), so two runs are compared only on the same eval data."""

    name: str
    seed: int | None
    state: str  # training state (COMPLETED, FAILED, ...); "evaluated" for the base model
    scores: dict[str, float] | None
    eval_data: str | None = None
    reason: str = ""  # why a FAILED / CANCELLED run stopped
    problem: str = ""  # why its eval cannot be used (an unreadable samples.jsonl)


@dataclass(frozen=True)
class NoiseFloor:
    """The run-to-run variance of a run's eval score (its mean over the eval prompts) between runs
    of one config, with its degrees of freedom and where it was measured, in words."""

    variance: float
    df: int
    source: str

    @property
    def sd(self) -> float:
        return math.sqrt(self.variance)

    def as_dict(self) -> dict:
        return {"run_sd": self.sd, "df": self.df, "source": self.source}


@dataclass(frozen=True)
class Comparison:
    """An arm against the baseline: delta of the mean headline score with its 95% CI and a verdict."""

    verdict: str  # better | worse | within noise | seed-limited | not comparable
    delta: float | None = None
    ci_low: float | None = None  # simultaneous over the family; seed-limited: the eval-only interval
    ci_high: float | None = None
    reason: str = ""  # not comparable: why; seed-limited / within noise: what would settle it
    method: str = ""  # how the CI was computed, in words
    prompts: int = 0  # prompts compared
    seeds: int = 0  # the arm's runs
    baseline_seeds: int = 0
    p_value: float | None = None  # adjusted over the family (Dunnett); eval-only where seed-limited
    p_raw: float | None = None  # the same test, unadjusted
    mde: float | None = None  # the smallest true delta this design finds with 80% power
    left_out: str = ""  # prompts left out of the comparison, and why

    @property
    def comparable(self) -> bool:
        return self.verdict != NOT_COMPARABLE

    @property
    def decided(self) -> bool:
        """Better or worse beyond noise: what `knobsweep next --adopt auto` may act on."""
        return self.verdict in (BETTER, WORSE)

    def as_dict(self) -> dict:
        return {
            "verdict": self.verdict,
            "delta": self.delta,
            "ci_low": self.ci_low,
            "ci_high": self.ci_high,
            "reason": self.reason,
            "method": self.method,
            "prompts": self.prompts,
            "seeds": self.seeds,
            "baseline_seeds": self.baseline_seeds,
            "p_value": self.p_value,
            "p_raw": self.p_raw,
            "mde": self.mde,
            "left_out": self.left_out,
        }


@dataclass(frozen=True)
class Family:
    """Every arm of one experiment against its baseline, decided together."""

    arms: dict[str, Comparison] = field(default_factory=dict)
    noise: NoiseFloor | None = None  # the run-to-run variance used (None: not known)
    correction: str = ""  # what was corrected, in words (for the report's footnote)
    prompts: int = 0


def not_comparable(reason: str) -> Comparison:
    return Comparison(NOT_COMPARABLE, reason=reason)


def verdict_of(low: float, high: float) -> str:
    """`within noise` when the CI contains 0, else the side it lies on."""
    if low > 0:
        return BETTER
    if high < 0:
        return WORSE
    return NOISE


# ---------------------------------------------------------------- eval-only intervals (one run per side)


def mcnemar(arm: Sequence[float], base: Sequence[float]) -> tuple[float, float, float, float]:
    """(delta, low, high, p) for paired 0/1 scores: the exact McNemar test.

    Only discordant prompts carry information: b (arm right, baseline wrong) and c (the reverse).
    Given n = b + c, b ~ Binomial(n, pi) and delta = (b - c) / N = n (2 pi - 1) / N; the CI maps
    the Clopper-Pearson interval of pi onto delta, and p is the exact two-sided binomial test of
    pi = 1/2 (the two agree: the CI excludes 0 exactly when p < 0.05). No discordant prompt
    gives delta 0 with the interval [0, 0] and p = 1.
    """
    # scipy.special, not scipy.stats: the same functions, and a tenth of the import time (~0.3 s
    # against ~2.5 s here), which every report build would pay.
    from scipy.special import bdtr, betaincinv

    a, z = np.asarray(arm, dtype=float), np.asarray(base, dtype=float)
    if a.shape != z.shape or a.size == 0:
        raise ValueError(f"mcnemar: need two equally long, non-empty score lists, got {a.size} and {z.size}")
    b = int(((a == 1) & (z == 0)).sum())
    c = int(((a == 0) & (z == 1)).sum())
    size, discordant = a.size, b + c
    delta = (b - c) / size
    if discordant == 0:
        return 0.0, 0.0, 0.0, 1.0
    tail = ALPHA / 2
    # Clopper-Pearson: beta quantiles; exact two-sided binomial p at 1/2 (symmetric: twice the smaller tail).
    low = 0.0 if b == 0 else float(betaincinv(b, discordant - b + 1, tail))
    high = 1.0 if b == discordant else float(betaincinv(b + 1, discordant - b, 1 - tail))
    p_value = min(1.0, 2 * float(bdtr(min(b, c), discordant, 0.5)))
    scale = discordant / size
    return delta, scale * (2 * low - 1), scale * (2 * high - 1), p_value


def t_interval(values: Sequence[float]) -> tuple[float, float, float, float]:
    """(mean, low, high, p) of k >= 2 values: Student's t interval of their mean and the two-sided
    p-value of mean 0 (a constant nonzero list: an interval of width 0 and p = 0)."""
    from scipy.special import stdtr

    array = np.asarray(values, dtype=float)
    if array.size < 2:
        raise ValueError(f"t_interval: need at least 2 values, got {array.size}")
    mean = float(array.mean())
    error = float(array.std(ddof=1)) / math.sqrt(array.size)
    half = t_quantile(1 - ALPHA / 2, array.size - 1) * error
    if error == 0:
        return mean, mean, mean, 1.0 if mean == 0 else 0.0
    return mean, mean - half, mean + half, float(2 * stdtr(array.size - 1, -abs(mean) / error))


def eval_interval(arm: Sequence[float], base: Sequence[float]) -> tuple[float, float, float, float, str]:
    """(delta, low, high, p, method) of one run against one other, paired over their prompts: what
    eval sampling alone allows, blind to the run-to-run spread."""
    a, b = np.asarray(arm, dtype=float), np.asarray(base, dtype=float)
    if _binary(a) and _binary(b):
        delta, low, high, p = mcnemar(a, b)
        return delta, low, high, p, f"exact McNemar test over {a.size} paired 0/1 prompts"
    if a.size == 1:
        delta = float(a[0] - b[0])
        return delta, delta, delta, 1.0, "one prompt"
    delta, low, high, p = t_interval(a - b)
    return delta, low, high, p, f"paired t interval over {a.size} prompts"


def _binary(values: np.ndarray) -> bool:
    return bool(np.isin(values, (0.0, 1.0)).all())


# ---------------------------------------------------------------- the family


def compare_family(
    arms: Mapping[str, Sequence[RunScores]],
    baseline: Sequence[RunScores],
    *,
    alpha: float = ALPHA,
    alternative: str = TWO_SIDED,
    noise: NoiseFloor | None = None,
) -> Family:
    """Every arm (name -> its runs, one per seed) against the baseline's runs, as one family.

    `noise`: the run-to-run variance to use instead of the one pooled from these runs (a base-model
    comparison takes its experiment's; a one-seed sweep one measured elsewhere). `alternative`:
    "less" asks only whether an arm is worse (an early stop), "greater" only whether it is better.
    """
    problem = _problem(baseline, None)
    if problem:
        return Family({name: not_comparable(problem) for name in arms})
    reference = baseline[0].eval_data
    verdicts: dict[str, Comparison] = {}
    candidates: dict[str, Sequence[RunScores]] = {}
    base_prompts = set.intersection(*(set(run.scores) for run in baseline))
    for name, runs in arms.items():
        problem = _problem(runs, reference)
        if problem == DIFFERENT_DATA:
            problem = _data_difference(runs, baseline)
        problem = problem or _too_many_left_out(runs, base_prompts)
        if problem:
            verdicts[name] = not_comparable(problem)
        else:
            candidates[name] = runs
    shared = sorted(base_prompts.intersection(*(set(run.scores) for runs in candidates.values() for run in runs)))
    if not shared:  # only where an arm's runs share no prompt with the baseline's (or its seeds none)
        verdicts.update({name: not_comparable("no eval prompt scored in every run") for name in candidates})
        return Family({name: verdicts[name] for name in arms}, noise)

    every_run = [*baseline, *(run for runs in candidates.values() for run in runs)]
    left_out = _left_out(every_run, shared)
    means = {run.name: _mean_over(run, shared) for run in every_run}
    used = noise if noise is not None else _pooled([baseline, *candidates.values()], means)
    if not candidates:
        return Family({name: verdicts[name] for name in arms}, used, prompts=len(shared))
    if used is None or used.df == 0 or not math.isfinite(used.variance):
        verdicts.update(
            {
                name: _without_noise(runs[0], baseline[0], shared, left_out, len(candidates))
                for name, runs in candidates.items()
            }
        )
        correction = "none: with one seed per side no better/worse verdict is given"
        used = None
    else:
        verdicts.update(_dunnett(candidates, baseline, means, used, alpha, alternative, len(shared), left_out))
        correction = _correction(len(candidates), alternative)
    return Family({name: verdicts[name] for name in arms}, used, correction, len(shared))


def compare(arm: Sequence[RunScores], baseline: Sequence[RunScores], *, noise: NoiseFloor | None = None) -> Comparison:
    """One arm against the baseline: a family of one."""
    return compare_family({"arm": arm}, baseline, noise=noise).arms["arm"]


@dataclass(frozen=True)
class Score:
    """A config's eval score (the mean of its runs' scores over their shared prompts) with its 95% CI."""

    mean: float
    low: float
    high: float
    method: str


def score_interval(runs: Sequence[RunScores], noise: NoiseFloor | None) -> Score | None:
    """The mean score of one config's runs and its 95% CI under the same model of noise as the
    verdicts: the run-to-run variance over sqrt(k) with its degrees of freedom; without one (a
    single run), eval sampling only (the t interval over its prompts), and the method says so.
    None when the runs cannot be scored."""
    if _problem(runs, None):
        return None
    shared = sorted(set.intersection(*(set(run.scores) for run in runs)))
    if not shared:
        return None
    means = [_mean_over(run, shared) for run in runs]
    mean = float(np.mean(means))
    if noise is not None and noise.df > 0:
        half = t_quantile(1 - ALPHA / 2, noise.df) * noise.sd / math.sqrt(len(runs))
        method = f"{len(runs)} run(s); run-to-run SD {noise.sd:.3f} from {noise.source} ({noise.df} d.f.)"
        return Score(mean, max(0.0, mean - half), min(1.0, mean + half), method)
    if len(shared) < 2:
        return Score(mean, mean, mean, "one prompt")
    _, low, high, _ = t_interval([runs[0].scores[p] for p in shared])
    return Score(mean, max(0.0, low), min(1.0, high), f"eval sampling only (one run, t over {len(shared)} prompts)")


def _problem(runs: Sequence[RunScores], reference: str | None) -> str:
    """Why these runs cannot be compared (empty: they can)."""
    if not runs:
        return "no runs" if reference is not None else "no baseline run"
    for run in runs:
        if run.state in FAILED:
            return f"failed run: {run.name} {run.state}" + (f" ({run.reason})" if run.reason else "")
    for run in runs:
        if run.problem:
            return f"{run.name}: {run.problem}"
    pending = [run.name for run in runs if run.scores is None]
    if pending:
        return ("missing seeds: " if len(runs) > 1 else "no eval yet: ") + ", ".join(pending) + " not evaluated"
    for run in runs:
        if not run.scores:
            return f"{run.name}: no prompt has a valid sample"
        if not _unit_scores(run.scores):
            bad = next(row for row, score in run.scores.items() if not _unit_score(score))
            return f"{run.name}: score {run.scores[bad]!r} for prompt {bad} is not a number in [0, 1]"
    fingerprints = {run.eval_data for run in runs}
    if reference is not None and fingerprints != {reference}:
        return DIFFERENT_DATA
    if reference is None and len(fingerprints) > 1:
        return "different eval data between the baseline's seeds"
    return ""


def _unit_scores(scores: dict[str, float]) -> bool:
    """Every score a finite number in [0, 1] (vectorised: this runs on every run of every report)."""
    try:
        values = np.fromiter(scores.values(), dtype=float, count=len(scores))
    except (TypeError, ValueError):
        return False
    return bool(np.isfinite(values).all() and values.min() >= -1e-9 and values.max() <= 1 + 1e-9)


def _unit_score(score: object) -> bool:
    return (
        isinstance(score, (int, float))
        and not isinstance(score, bool)
        and math.isfinite(score)
        and -1e-9 <= score <= 1 + 1e-9
    )


def _mean_over(run: RunScores, prompts: list[str]) -> float:
    return float(np.fromiter(map(run.scores.__getitem__, prompts), dtype=float, count=len(prompts)).mean())


def _too_many_left_out(runs: Sequence[RunScores], prompts: set[str]) -> str:
    for run in runs:
        missing = len(prompts - set(run.scores))
        if missing > MAX_LEFT_OUT * len(prompts):
            return (
                f"{run.name} has no valid sample on {missing} of the baseline's {len(prompts)} prompts "
                f"(more than {MAX_LEFT_OUT:.0%}): its eval is not a score of the same prompts"
            )
    return ""


def _left_out(runs: Sequence[RunScores], shared: list[str]) -> str:
    """Prompts some run scored but the comparison leaves out, naming the runs that lack them."""
    every = set().union(*(run.scores for run in runs))
    if len(every) == len(shared):
        return ""
    lacking = [(run.name, len(every) - len(run.scores)) for run in runs if len(run.scores) < len(every)]
    named = ", ".join(f"{name} ({count})" for name, count in lacking[:4]) + (" ..." if len(lacking) > 4 else "")
    return f"{len(every) - len(shared)} of {len(every)} prompts left out: no valid sample in {named}"


def _pooled(groups: Sequence[Sequence[RunScores]], means: dict[str, float]) -> NoiseFloor | None:
    """The run-to-run variance pooled over every group (arm or baseline) with two or more runs."""
    squares, df, replicated = 0.0, 0, []
    for runs in groups:
        if len(runs) < 2:
            continue
        values = np.array([means[run.name] for run in runs])
        squares += float(((values - values.mean()) ** 2).sum())
        df += len(runs) - 1
        replicated.append(len(runs))
    if df == 0:
        return None
    return NoiseFloor(squares / df, df, f"this sweep's seeds, {sum(replicated)} runs of {len(replicated)} configs")


def _dunnett(
    candidates: Mapping[str, Sequence[RunScores]],
    baseline: Sequence[RunScores],
    means: dict[str, float],
    noise: NoiseFloor,
    alpha: float,
    alternative: str,
    prompts: int,
    left_out: str,
) -> dict[str, Comparison]:
    from scipy.special import stdtr

    base_mean = float(np.mean([means[run.name] for run in baseline]))
    names = list(candidates)
    sizes = tuple(len(candidates[name]) for name in names)
    deltas = np.array([np.mean([means[run.name] for run in candidates[name]]) - base_mean for name in names])
    errors = np.array([math.sqrt(noise.variance * (1 / k + 1 / len(baseline))) for k in sizes])
    lambdas = lambdas_of(sizes, len(baseline))
    bound = critical_value(lambdas, noise.df, alpha, alternative)
    with np.errstate(divide="ignore", invalid="ignore"):
        statistics = np.where(errors > 0, deltas / errors, np.sign(deltas) * np.inf)
    adjusted = adjusted_p_values(np.nan_to_num(statistics, posinf=1e12, neginf=-1e12), lambdas, noise.df, alternative)
    if alternative == TWO_SIDED:
        raw = np.clip(2 * stdtr(noise.df, -np.abs(statistics)), 0, 1)
    else:  # the tail in the tested direction
        raw = stdtr(noise.df, statistics if alternative == LESS else -statistics)
    method = (
        f"Dunnett's test, {len(names)} arm(s) against the baseline, on run scores (each run's mean over "
        f"{prompts} prompts); run-to-run SD {noise.sd:.3f} from {noise.source} ({noise.df} d.f.)"
    )
    out = {}
    for index, name in enumerate(names):
        delta, error = float(deltas[index]), float(errors[index])
        low = max(-1.0, delta - bound * error) if alternative != LESS else -1.0
        high = min(1.0, delta + bound * error) if alternative != GREATER else 1.0
        verdict = verdict_of(low, high)
        mde = minimum_detectable(bound, noise.df, error)
        out[name] = Comparison(
            verdict,
            delta,
            low,
            high,
            reason="" if verdict != NOISE else f"the design detects {_points(mde)} or more (80% power)",
            method=method,
            prompts=prompts,
            seeds=sizes[index],
            baseline_seeds=len(baseline),
            p_value=float(adjusted[index]),
            p_raw=float(raw[index]),
            mde=mde,
            left_out=left_out,
        )
    return out


def _without_noise(arm: RunScores, base: RunScores, prompts: list[str], left_out: str, arms: int) -> Comparison:
    """One run against one run and no known run-to-run spread: within noise if eval sampling alone
    explains the delta, else seed-limited (the spread of seeds might)."""
    delta, low, high, p, method = eval_interval([arm.scores[p] for p in prompts], [base.scores[p] for p in prompts])
    if low <= 0 <= high:
        verdict = NOISE
        reason = "within eval noise alone; one seed per side cannot measure the run-to-run spread, which adds to it"
    else:
        verdict = SEED_LIMITED
        reason = (
            "beyond eval noise, but one seed per side cannot tell a knob from a lucky seed: it stands if the "
            f"run-to-run SD is under {_points(settling_sd(abs(delta), arms))}; run 2 seeds of each arm, or 3 of "
            "the baseline, to measure it"
        )
    return Comparison(
        verdict,
        delta,
        low,
        high,
        reason=reason,
        method=f"eval sampling only ({method}); the run-to-run spread is unknown",
        prompts=len(prompts),
        seeds=1,
        baseline_seeds=1,
        p_raw=p,
        left_out=left_out,
    )


def minimum_detectable(bound: float, df: float, error: float) -> float:
    """The smallest true Δ a test with this critical bound finds with 80% power, at this standard
    error: (c + t_0.80(df)) SE (the usual normal-theory approximation; Miller 2024, section 5)."""
    return (bound + t_quantile(POWER, df)) * error


def settling_sd(delta: float, arms: int = 1, seeds: int = 2) -> float:
    """The largest run-to-run SD at which |delta| is decided with `seeds` seeds on every side of a
    family of `arms`: delta / (c sqrt(2 / seeds))."""
    df = (arms + 1) * (seeds - 1)
    lambdas = lambdas_of((seeds,) * arms, seeds)
    return delta / (critical_value(lambdas, df, ALPHA, TWO_SIDED) * math.sqrt(2 / seeds))


def _points(value: float) -> str:
    return f"{100 * value:.1f} points"


def _correction(arms: int, alternative: str) -> str:
    side = {TWO_SIDED: "two-sided", LESS: "one-sided: worse only", GREATER: "one-sided: better only"}[alternative]
    if arms == 1:
        return f"one arm, nothing to correct ({side})"
    return f"Dunnett's many-to-one procedure over {arms} arms, {side}, family-wise error 5%"


def _data_difference(arm: Sequence[RunScores], baseline: Sequence[RunScores]) -> str:
    first, other = baseline[0], next(r for r in (*arm, *baseline) if r.eval_data != baseline[0].eval_data)
    shared = len(set(first.scores or {}) & set(other.scores or {}))
    return (
        f"different eval data: {other.name} was scored on {len(other.scores or {})} prompts, "
        f"{first.name} on {len(first.scores or {})} ({shared} row ids shared)"
    )


# ---------------------------------------------------------------- reading samples.jsonl


def read_scores(path: Path) -> tuple[dict[str, float], str] | None:
    """(row_id -> mean score of the row's valid samples, eval-data fingerprint) from an eval's
    samples.jsonl; None when the file is missing (`read_sample_scores`)."""
    read = read_sample_scores(path)
    if read is None:
        return None
    samples, fingerprint = read
    return {row: sum(scores) / len(scores) for row, scores in samples.items()}, fingerprint


def read_sample_scores(path: Path) -> tuple[dict[str, list[float]], str] | None:
    """(row_id -> the scores of the row's valid samples, eval-data fingerprint) from an eval's
    samples.jsonl; None when the file is missing. Invalid samples (score null) are skipped; a row
    with none valid is left out. The fingerprint hashes every row's id and ground truth.
    Raises ValueError naming the file and line for a line that is not a JSON object."""
    if not path.is_file():
        return None
    samples: dict[str, list[float]] = {}
    truths: dict[str, str] = {}
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}:{number}: not a JSON line ({error})") from None
            if not isinstance(record, dict) or "row_id" not in record:
                raise ValueError(f"{path}:{number}: expected a JSON object with a row_id")
            row = str(record["row_id"])
            truths.setdefault(row, json.dumps(record.get("ground_truth"), sort_keys=True, default=str))
            score = record.get("score")
            if isinstance(score, (int, float)) and not isinstance(score, bool) and math.isfinite(score):
                samples.setdefault(row, []).append(float(score))
    fingerprint = hashlib.sha256(json.dumps(sorted(truths.items())).encode()).hexdigest()[:16]
    return samples, fingerprint


__all__ = [
    "BETTER",
    "GREATER",
    "LESS",
    "NOISE",
    "NOT_COMPARABLE",
    "SEED_LIMITED",
    "TWO_SIDED",
    "VERDICTS",
    "WORSE",
    "Comparison",
    "Family",
    "NoiseFloor",
    "RunScores",
    "Score",
    "compare",
    "compare_family",
    "eval_interval",
    "mcnemar",
    "minimum_detectable",
    "read_sample_scores",
    "read_scores",
    "score_interval",
    "settling_sd",
    "t_interval",
]

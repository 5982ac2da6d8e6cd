"""The tuning rules of the managed-RFT guides as one table: symptom -> test on a run's curves -> knob,
direction, suggested values, reason, source. docs/loop.md lists them with their sources.

A test reads one finished run (`RunData`) and returns its evidence (`Evidence`: the metric, the steps
and the values that show the symptom) or None. A change proposes raw values from the run's config;
`knobsweep.loop.values` then clips them to the schema's range and drops those the spec rejects.
Thresholds the spec already has (train.health: kl_max, invalid_rate_max, reward_collapse_drop,
kto_margin_warmup) are read from the run's config; the others are the constants below.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from knobsweep.dotted import get_dotted
from knobsweep.loop.curves import Points, mean, number, slope, smoothed, window
from knobsweep.runfiles import iter_json_lines

MIN_RISE = 0.05  # a reward change smaller than this is flat (the health monitor's threshold too)
SMOOTHING = 5  # steps in the reward's moving mean (the health monitor's window)
END = 0.8  # "the end of the run": its last 20% of logged steps
FILTERED_HIGH = 0.75  # share of groups whose completions all scored the same
CLIPPED_HIGH = 0.2  # share of completions cut at rollout.max_tokens
KL_MIN = 0.05  # a KL below this is not "growing without bound", however fast it rises
ENTROPY_FALL = 0.25  # entropy at the end below this share of its start: collapsed
IDENTICAL_HIGH = 0.5  # share of the last steps whose rollouts were all the same text
NAMED_ROWS = 5  # data rows named by the invalid-sample rule

GUIDE = "https://fireworks.ai/docs/fine-tuning/parameter-tuning"
REFERENCE = "https://fireworksai.mintlify.app/fine-tuning/rft-parameters-reference"
OPENAI_RFT = "https://developers.openai.com/api/docs/guides/reinforcement-fine-tuning"
GRADERS = "https://developers.openai.com/api/docs/guides/graders"
TRL_KTO = "https://huggingface.co/docs/trl/kto_trainer"
TRL_GRPO = "https://huggingface.co/docs/trl/grpo_trainer"  # its "Logged metrics"


@dataclass(frozen=True)
class RunData:
    name: str
    config: dict  # the run's resolved config
    curves: dict[str, Points]  # metrics.jsonl: metric -> [(step, value)]
    rollouts: Path  # rollouts.jsonl (the invalid-sample rule names its rows)
    warnings: list[str] = field(default_factory=list)  # what reading its files skipped or distrusted (runfiles)


@dataclass(frozen=True)
class Evidence:
    metric: str
    steps: str  # "12-30"
    values: str  # "0.61 -> 0.20"
    note: str = ""  # what the table says instead of a knob change (a rule without one)


@dataclass(frozen=True)
class Change:
    knob: str
    direction: str  # "x0.5", "+1", "raise"
    propose: Callable[[dict], list[float]]  # the run's config -> raw values (then clipped and validated)


@dataclass(frozen=True)
class Rule:
    name: str
    symptom: str
    test: Callable[[RunData], Evidence | None]
    changes: tuple[Change, ...]  # () for a symptom no knob fixes
    reason: str
    sources: tuple[str, ...] = field(default=())


def _span(points: Points) -> str:
    return f"{points[0][0]}-{points[-1][0]}"


def _health(run: RunData, name: str) -> Any:
    return get_dotted(run.config, f"train.health.{name}")


# ---------------------------------------------------------------- the tests


def reward_crash(run: RunData) -> Evidence | None:
    """A peak of the reward's moving mean, then a fall of more than train.health.reward_collapse_drop
    (default half) of what it had gained."""
    reward = run.curves.get("reward", [])
    width = max(1, min(SMOOTHING, len(reward) // 4))
    curve = smoothed(reward, width)
    if len(curve) < 3:
        return None
    start = curve[0]
    peak = max(curve, key=lambda point: point[1])
    low = min(curve[curve.index(peak) :], key=lambda point: point[1])
    gain = peak[1] - start[1]
    if gain < MIN_RISE or peak[1] - low[1] <= _health(run, "reward_collapse_drop") * gain:
        return None
    return Evidence(
        f"reward ({width}-step mean)",
        f"{start[0]} -> {peak[0]} -> {low[0]}",
        f"{number(start[1])} -> peak {number(peak[1])} -> {number(low[1])}",
    )


def reward_rising(run: RunData) -> Evidence | None:
    """The reward's mean over the last 20% of steps is above the 20% before by MIN_RISE, and still rising."""
    reward = run.curves.get("reward", [])
    if len(reward) < 10:
        return None
    last, before = window(reward, END, 1.0), window(reward, END - 0.2, END)
    if mean(last) - mean(before) < MIN_RISE or slope(last) <= 0:
        return None
    return Evidence(
        "reward (mean of 20% of steps)",
        f"{_span(before)} -> {_span(last)}",
        f"{number(mean(before))} -> {number(mean(last))} (slope {number(slope(last))}/step at the end)",
    )


def reward_flat_filtered(run: RunData) -> Evidence | None:
    """Most groups have zero reward variance (TRL's frac_reward_zero_std, or the groups the trainer
    filtered), and the reward never rose."""
    name = "frac_reward_zero_std" if "frac_reward_zero_std" in run.curves else "filtered_group_rate"
    share, reward = run.curves.get(name, []), run.curves.get("reward", [])
    if not share or mean(share) < FILTERED_HIGH:
        return None
    if reward and max(value for _, value in reward) - reward[0][1] >= MIN_RISE:
        return None
    flat = f"; reward {number(min(v for _, v in reward))}-{number(max(v for _, v in reward))}" if reward else ""
    return Evidence(name, _span(share), f"mean {number(mean(share))}{flat}")


def kl_growing(run: RunData) -> Evidence | None:
    """GRPO's KL to the reference: its last-20% mean above train.health.kl_max, or still rising at the
    end and at least doubled since the middle of the run."""
    kl = run.curves.get("kl", [])
    if run.config["train"]["method"] != "grpo" or len(kl) < 5:
        return None
    middle, last = window(kl, 0.4, 0.6), window(kl, END, 1.0)
    above = mean(last) > _health(run, "kl_max")
    rising = mean(last) >= KL_MIN and mean(last) >= 2 * mean(middle) and slope(last) > 0
    if not (above or rising):
        return None
    return Evidence("kl", f"{_span(middle)} -> {_span(last)}", f"{number(mean(middle))} -> {number(mean(last))}")


def clipped_completions(run: RunData) -> Evidence | None:
    """Over the last 20% of steps, more than CLIPPED_HIGH of the completions end at the length cap."""
    clipped = run.curves.get("completions/clipped_ratio", [])
    last = window(clipped, END, 1.0)
    if not last or mean(last) <= CLIPPED_HIGH:
        return None
    cap = run.config["rollout"]["max_tokens"]
    return Evidence("completions/clipped_ratio", _span(last), f"mean {number(mean(last))} at max_tokens {cap}")


def entropy_collapse(run: RunData) -> Evidence | None:
    """Every rollout of a step the same text on most of the last steps, or the entropy fallen below
    ENTROPY_FALL of where it started."""
    identical = window(run.curves.get("identical_rollouts", []), END, 1.0)
    if identical and mean(identical) >= IDENTICAL_HIGH:
        return Evidence("identical_rollouts", _span(identical), f"{mean(identical):.0%} of steps")
    entropy = run.curves.get("entropy", [])
    if len(entropy) < 5:
        return None
    first, last = window(entropy, 0.0, 0.2), window(entropy, END, 1.0)
    if mean(first) <= 0 or mean(last) >= ENTROPY_FALL * mean(first):
        return None
    return Evidence("entropy", f"{_span(first)} -> {_span(last)}", f"{number(mean(first))} -> {number(mean(last))}")


def invalid_samples(run: RunData) -> Evidence | None:
    """The share of samples the evaluator could not score, over the run, above train.health.invalid_rate_max;
    the note names the rows (rollouts.jsonl) most often invalid and why."""
    invalid = run.curves.get("invalid_rate", [])
    if not invalid or mean(invalid) <= _health(run, "invalid_rate_max"):
        return None
    label = f"run '{run.name}'"
    bad = [r for _, r in iter_json_lines(run.rollouts, run.warnings, label) if r.get("valid") is False]
    rows = Counter(str(r.get("row_id")) for r in bad)
    reasons = Counter(str(r.get("reason") or "") for r in bad)
    if rows:
        named = ", ".join(row for row, _ in rows.most_common(NAMED_ROWS))
        note = f"not a knob: the evaluator or the data; rows {named} (most often: {reasons.most_common(1)[0][0]})"
    else:
        note = "not a knob: the evaluator or the data; no invalid rollout logged (train.rollouts_per_step)"
    return Evidence("invalid_rate", _span(invalid), f"mean {number(mean(invalid))}", note)


def kto_margin_negative(run: RunData) -> Evidence | None:
    """KTO's reward margin (chosen minus rejected) negative on average after train.health.kto_margin_warmup."""
    warmup = _health(run, "kto_margin_warmup")
    margins = [(step, value) for step, value in run.curves.get("rewards/margins", []) if step > warmup]
    if run.config["train"]["method"] != "kto" or not margins or mean(margins) >= 0:
        return None
    return Evidence("rewards/margins", _span(margins), f"mean {number(mean(margins))} after step {warmup}")


# ---------------------------------------------------------------- the proposals


def _times(knob: str, *factors: float) -> Callable[[dict], list[float]]:
    return lambda config: [get_dotted(config, knob) * factor for factor in factors]


def _above(knob: str, *values: float) -> Callable[[dict], list[float]]:
    """The guide's values above the current one."""
    return lambda config: [value for value in values if value > get_dotted(config, knob)]


def _plus(knob: str, *steps: float) -> Callable[[dict], list[float]]:
    return lambda config: [get_dotted(config, knob) + step for step in steps]


def _kl_beta(config: dict) -> list[float]:
    beta = config["train"]["kl_beta"] or 0.0
    return [beta * 2, beta * 4] if beta else [0.01, 0.04]


RULES: tuple[Rule, ...] = (
    Rule(
        "reward_crash",
        "reward rises then crashes",
        reward_crash,
        (Change("train.learning_rate", "x0.5", _times("train.learning_rate", 0.5)),),
        "the reward spiked then collapsed: the learning rate overshoots; half of it should climb steadily",
        (GUIDE, REFERENCE),
    ),
    Rule(
        "reward_rising",
        "reward still rising at the end",
        reward_rising,
        (
            Change("train.epochs", "+1", _plus("train.epochs", 1)),
            Change("train.learning_rate", "raise, within 2x", _times("train.learning_rate", 1.5, 2.0)),
        ),
        "the reward was still climbing when training ended: another epoch (or a faster rate, within 2x) "
        "lets it reach its plateau",
        (GUIDE, REFERENCE),
    ),
    Rule(
        "reward_flat_filtered",
        "reward flat, most groups filtered",
        reward_flat_filtered,
        (
            Change("rollout.temperature", "raise to 0.8-1.0", _above("rollout.temperature", 0.8, 1.0)),
            Change("rollout.n", "raise to 8-16", _above("rollout.n", 8, 16)),
        ),
        "groups whose completions all score the same carry no learning signal: more varied or more completions "
        "per prompt find a difference; also check that the evaluator gives varied scores",
        (REFERENCE, GRADERS, TRL_GRPO),
    ),
    Rule(
        "kl_growing",
        "KL growing without bound",
        kl_growing,
        (Change("train.kl_beta", "raise", _kl_beta),),
        "the policy drifts ever further from the reference: a larger KL coefficient (loss grpo only) holds it",
        (TRL_GRPO, OPENAI_RFT),
    ),
    Rule(
        "clipped_completions",
        "completions cut at the length cap",
        clipped_completions,
        (Change("rollout.max_tokens", "x2, x4", _times("rollout.max_tokens", 2, 4)),),
        "completions end at rollout.max_tokens before their answer, so the reward scores truncated text",
        (REFERENCE, TRL_GRPO),
    ),
    Rule(
        "entropy_collapse",
        "identical rollouts / entropy collapse",
        entropy_collapse,
        (Change("rollout.temperature", "raise", _plus("rollout.temperature", 0.2, 0.4)),),
        "the policy samples (nearly) one completion per prompt, so groups stop exploring: "
        "a higher sampling temperature restores it",
        (REFERENCE, TRL_GRPO),
    ),
    Rule(
        "invalid_samples",
        "invalid-sample rate high",
        invalid_samples,
        (),
        "samples the evaluator cannot score are dropped from the loss: fix the evaluator or the data rows, "
        "no knob does",
        (OPENAI_RFT, GRADERS),
    ),
    Rule(
        "kto_margin_negative",
        "KTO margins negative after warm-up",
        kto_margin_negative,
        (
            Change("train.learning_rate", "x0.5", _times("train.learning_rate", 0.5)),
            Change("train.kto.beta", "x2", _times("train.kto.beta", 2)),
        ),
        "undesirable completions gain on desirable ones: a lower learning rate or a larger KTO beta "
        "keeps the policy near the reference",
        (TRL_KTO,),
    ),
)

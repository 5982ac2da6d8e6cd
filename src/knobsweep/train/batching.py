"""How many sequences one optimizer step trains on, and how they are split over devices.

The knobs (all in the `train` section):

- `batch_size` (int | null): the batch of one optimizer step, counted the way the method
  thinks. GRPO: prompts, each sampled `rollout.n` times, so `batch_size * n` sequences.
  SFT / KTO: sequences (training examples). When set, it wins over `batch_tokens`.
- `batch_tokens` (int, default 32768): used when `batch_size` is null. The managed RFT
  services' definition of the batch: tokens per optimizer step, every sequence budgeted at
  the full context, so sequences per step = `batch_tokens // max_context_length`
  (`train.max_context_length`, default 4096); GRPO takes `max(1, sequences // n)` prompts.
- `per_device_batch_size` (int | null): memory, not learning: the most sequences one device
  holds at once. Null: a process's whole share in one micro-batch (no accumulation).
- `steps_per_generation` (GRPO only, int | null): micro-batches per generation batch (TRL's
  field of that name). Null: the accumulation steps, i.e. one generation per optimizer step,
  fully on-policy. `k * accumulation` generates once per k optimizer steps (steps 2..k of
  each generation train on completions of older weights: off-policy, where clipping acts).

The arithmetic (`batch_plan`):

    sequences_per_step = batch_size * n              GRPO, batch_size set
                       = batch_size                  SFT / KTO, batch_size set
                       = batch_tokens // max_context_length
                         (GRPO: prompts = max(1, that // n), sequences = prompts * n)
    share              = sequences_per_step / num_processes            must be whole
    accumulation       = the smallest divisor of share >= ceil(share / per_device_batch_size)
    per_device         = share / accumulation        <= per_device_batch_size
    => sequences_per_step = num_processes * per_device * accumulation, exactly.

An explicit `batch_size` is never changed: one that cannot be split evenly over the processes
is a ValueError naming the values that would work. A `batch_tokens` budget is a rough size,
so its sequences are rounded down (never below one per process) until they split evenly;
the explanation says so. A `per_device_batch_size` that does not divide the share is lowered
to the largest size that does (it is a memory ceiling, and the batch stays exact).

GRPO (TRL's GRPOConfig rules): a generation batch of
`per_device * num_processes * steps_per_generation` completions must hold whole groups of n,
and n >= 2. With the default steps_per_generation it is the step's own `prompts * n`, so the
rule only bites when `train.steps_per_generation` is set. `train.trl.num_iterations` (TRL)
reuses each generation batch that many more times on top of this.

KTO: TRL pairs each completion with another one of the same micro-batch for its KL estimate,
so the per-device batch must be >= 2 (unless `train.trl.loss_type` is "apo_zero_unpaired").

Example: the demo (grpo, batch_size 2, n 8, 1 process) trains 16 sequences per step, all in
one micro-batch: per-device 16, accumulation 1, one generation per step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from knobsweep.registry import METHODS
from knobsweep.spec.schema import RolloutConfig, TrainConfig

PAIRED_MIN_PER_DEVICE = 2  # KTO's KL term pairs each completion with another one in the micro-batch


@dataclass(frozen=True)
class BatchPlan:
    per_device_batch_size: int  # TRL's per_device_train_batch_size
    gradient_accumulation_steps: int
    steps_per_generation: int | None  # GRPO only (TRL's field); None for SFT / KTO
    sequences_per_step: int  # sequences (GRPO: completions) per optimizer step, over all processes
    prompts_per_step: int  # GRPO: groups of n; SFT / KTO: = sequences_per_step
    explanation: str  # one or two lines of the arithmetic, for the console and run logs


def batch_plan(train: TrainConfig, rollout: RolloutConfig | None, num_processes: int) -> BatchPlan:
    """The batch fields of TRL's config for `train.method`; see the module docstring. `rollout` is read
    by a method that generates (GRPO: rollout.n completions per prompt)."""
    method = METHODS[train.method]
    if num_processes < 1:
        raise ValueError(f"num_processes={num_processes!r}: expected a positive integer")
    processes, batch_size, cap = num_processes, train.batch_size, train.per_device_batch_size
    spg = train.steps_per_generation
    n = rollout.n if method.generates else None
    if spg is not None and not method.generates:
        raise ValueError(f"train.steps_per_generation={spg}: only GRPO generates; train.method is {train.method!r}")

    if batch_size is not None:
        sequences, prompts, size_text = _from_batch_size(batch_size, n, processes)
    else:  # the token budget only counts when batch_size is null
        sequences, prompts, size_text = _from_batch_tokens(train.batch_tokens, train.max_context_length, n, processes)

    share = sequences // processes
    pairs = method.pairs_in_micro_batch and train.trl.get("loss_type") != "apo_zero_unpaired"
    min_per_device = PAIRED_MIN_PER_DEVICE if pairs else 1
    per_device, accumulation = _split(share, cap, min_per_device, train.method, batch_size, processes)
    split_text = f"{_plural(processes, 'process')} x per-device {per_device} x accumulation {accumulation}"
    if cap is not None and per_device < min(cap, share):
        split_text += (
            f" (per_device_batch_size {cap} does not split {share} sequences per process evenly; {per_device} does)"
        )
    explanation = f"{size_text}; {split_text}"

    steps_per_generation = None
    if n is not None:
        steps_per_generation = accumulation if spg is None else spg
        _check_generation(steps_per_generation, per_device, processes, accumulation, n)
        explanation += "\n" + _generation_text(steps_per_generation, per_device, processes, accumulation, n)
    return BatchPlan(
        per_device_batch_size=per_device,
        gradient_accumulation_steps=accumulation,
        steps_per_generation=steps_per_generation,
        sequences_per_step=sequences,
        prompts_per_step=prompts,
        explanation=explanation,
    )


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 'es' if word.endswith(('s', 'h')) else 's'}"


def _from_batch_size(batch_size: int, n: int | None, processes: int) -> tuple[int, int, str]:
    """(sequences, prompts, text) of an explicit batch_size, which must split evenly over the processes."""
    if n is not None:
        sequences = batch_size * n
        if sequences % processes:
            unit = processes // math.gcd(n, processes)  # batch sizes that work are its multiples
            raise ValueError(
                f"train.batch_size * rollout.n = {batch_size} * {n} = {sequences} completions per step cannot be "
                f"split evenly over {processes} processes: use a train.batch_size that is a multiple of {unit} "
                f"(e.g. {_nearby_multiples(batch_size, unit)}), or a rollout.n that makes "
                f"batch_size * n a multiple of {processes}"
            )
        return (
            sequences,
            batch_size,
            (f"batch_size {_plural(batch_size, 'prompt')} x n={n} = {sequences} sequences per step"),
        )
    if batch_size % processes:
        raise ValueError(
            f"train.batch_size={batch_size} sequences per step cannot be split evenly over {processes} processes: "
            f"use a multiple of {processes} (e.g. {_nearby_multiples(batch_size, processes)})"
        )
    return batch_size, batch_size, f"batch_size {_plural(batch_size, 'sequence')} per step"


def _from_batch_tokens(batch_tokens: int, context: int, n: int | None, processes: int) -> tuple[int, int, str]:
    """(sequences, prompts, text) of a token budget, rounded down to split evenly (at least one unit)."""
    budget = batch_tokens // context
    text = f"batch_tokens {batch_tokens} / max_context_length {context} = {_plural(budget, 'sequence')}"
    if n is not None:
        unit = processes // math.gcd(n, processes)  # prompts per step must be a multiple of this
        prompts = max(1, budget // n)
        rounded = max(unit, prompts - prompts % unit)
        sequences = rounded * n
        if rounded == prompts and sequences == budget:
            return sequences, rounded, f"{text} per step = {_plural(rounded, 'prompt')} x n={n}"
        why = (
            "whole prompts, at least one"
            if unit == 1
            else f"a multiple of {unit} prompts, to split over {processes} processes"
        )
        return (
            sequences,
            rounded,
            (f"{text} -> {_plural(rounded, 'prompt')} x n={n} = {sequences} sequences per step (rounded to {why})"),
        )
    if budget < 1:
        raise ValueError(
            f"train.batch_tokens={batch_tokens} < train.max_context_length={context}: not one whole sequence per "
            f"step; use batch_tokens >= {context * processes} or set train.batch_size"
        )
    sequences = max(processes, budget - budget % processes)
    if sequences == budget:
        return sequences, sequences, f"{text} per step"
    return sequences, sequences, (f"{text} -> {sequences} per step (rounded to a multiple of {processes} processes)")


def _split(
    share: int, cap: int | None, min_per_device: int, method: str, batch_size: int | None, processes: int
) -> tuple[int, int]:
    """(per_device, accumulation) with per_device * accumulation == share, per_device <= cap, fewest micro-batches."""
    limit = share if cap is None else min(cap, share)
    for accumulation in range(math.ceil(share / limit), share + 1):
        if share % accumulation == 0 and share // accumulation >= min_per_device:
            return share // accumulation, accumulation
    # Only KTO gets here: no micro-batch size in [2, cap] divides the share.
    why = (
        f"{method.upper()} needs at least {min_per_device} sequences per micro-batch (its KL term pairs each "
        "completion with another one in the same micro-batch)"
    )
    source = (
        f"train.batch_size={batch_size} over {_plural(processes, 'process')}"
        if batch_size is not None
        else f"the batch_tokens budget over {_plural(processes, 'process')}"
    )
    if share < min_per_device:
        raise ValueError(
            f"{source} leaves {share} sequence per process: {why}; use a train.batch_size of at "
            f"least {min_per_device * processes}"
        )
    smallest = next(size for size in range(min_per_device, share + 1) if share % size == 0)
    other = (
        f", or a batch whose per-process share has a divisor in {min_per_device}..{cap}"
        if cap >= min_per_device
        else ""
    )
    raise ValueError(
        f"train.per_device_batch_size={cap}: {why}, and {source} leaves {share} sequences per process, which "
        f"splits evenly into micro-batches of {smallest} at the smallest: raise train.per_device_batch_size to "
        f"{smallest}{other}"
    )


def _check_generation(spg: int, per_device: int, processes: int, accumulation: int, n: int) -> None:
    """TRL: a generation batch holds whole groups of n. Ours also lines up with optimizer steps."""
    generation = per_device * processes * spg
    whole_groups = generation % n == 0
    aligned = spg % accumulation == 0 or accumulation % spg == 0
    if whole_groups and aligned:
        return
    # Values that pass both: divisors of the accumulation steps, or multiples (always: accumulation itself).
    candidates = [d for d in range(1, accumulation + 1) if accumulation % d == 0]
    candidates += [k * accumulation for k in range(2, 9)]
    valid = [c for c in candidates if (per_device * processes * c) % n == 0]
    nearest = sorted(valid, key=lambda c: (abs(c - spg), c))[:3]
    if not whole_groups:
        problem = (
            f"a generation batch of {per_device} per device x {_plural(processes, 'process')} x {spg} = "
            f"{generation} completions does not hold whole groups of rollout.n={n} (TRL's rule)"
        )
    else:
        problem = (
            f"{spg} micro-batches per generation do not line up with the {accumulation} micro-batches "
            "(gradient accumulation steps) of an optimizer step"
        )
    raise ValueError(
        f"train.steps_per_generation={spg}: {problem}; values that work here: "
        f"{', '.join(str(c) for c in sorted(nearest))} (k x {accumulation}: one generation feeds k "
        "optimizer steps)"
    )


def _generation_text(spg: int, per_device: int, processes: int, accumulation: int, n: int) -> str:
    generation = per_device * processes * spg
    groups = f"{generation} completions ({_plural(generation // n, 'prompt')} x n={n})"
    if spg == accumulation:
        return f"generation: {groups} once per optimizer step (on-policy)"
    if spg > accumulation:
        return (
            f"generation: {groups} every {spg} micro-batches = once per {spg // accumulation} optimizer steps "
            f"(steps_per_generation {spg}; all but the first step of each generation are off-policy)"
        )
    return (
        f"generation: {groups} every {_plural(spg, 'micro-batch')} = {accumulation // spg} generations per "
        "optimizer step (on-policy)"
    )


def _nearby_multiples(value: int, unit: int) -> str:
    """Up to two multiples of unit around value, e.g. '4 or 8'."""
    below = value - value % unit
    above = below + unit
    choices = [m for m in (below, above) if m >= unit]
    return " or ".join(str(m) for m in choices)

"""The batch arithmetic: our knobs (batch_size / batch_tokens / per_device_batch_size /
steps_per_generation) onto TRL's per-device batch, accumulation and generation batch."""

from __future__ import annotations

import pytest

from knobsweep.errors import SpecError
from knobsweep.spec.schema import RolloutConfig, TrainConfig, TrainJob
from knobsweep.spec.validate import parse
from knobsweep.train import batching
from knobsweep.train.batching import BatchPlan


def batch_plan(method: str, train: dict, rollout: dict | None, num_processes: int) -> BatchPlan:
    """The plan of a train section (`method` + knobs) and a rollout section, read by the spec's models."""
    return batching.batch_plan(
        TrainConfig(method=method, **train), None if rollout is None else RolloutConfig(**rollout), num_processes
    )


def fields(plan: BatchPlan) -> tuple:
    return (
        plan.per_device_batch_size,
        plan.gradient_accumulation_steps,
        plan.steps_per_generation,
        plan.sequences_per_step,
        plan.prompts_per_step,
    )


# --- today's behaviour: batch_size prompts, all in one micro-batch ------------------------


def test_demo_keeps_one_micro_batch_per_step():
    plan = batch_plan("grpo", {"batch_size": 2}, {"n": 8}, num_processes=1)
    assert fields(plan) == (16, 1, 1, 16, 2)
    assert plan.explanation.splitlines() == [
        "batch_size 2 prompts x n=8 = 16 sequences per step; 1 process x per-device 16 x accumulation 1",
        "generation: 16 completions (2 prompts x n=8) once per optimizer step (on-policy)",
    ]


def test_two_processes_split_the_completions():
    plan = batch_plan("grpo", {"batch_size": 2}, {"n": 4}, num_processes=2)
    assert fields(plan) == (4, 1, 1, 8, 2)
    assert "2 processes x per-device 4 x accumulation 1" in plan.explanation


def test_batch_size_wins_over_batch_tokens():
    plan = batch_plan("grpo", {"batch_size": 3, "batch_tokens": 10**6, "max_context_length": 1024}, {"n": 2}, 1)
    assert (plan.sequences_per_step, plan.prompts_per_step) == (6, 3)


# --- batch_tokens: the managed services' tokens per optimizer step ------------------------


def test_default_batch_tokens_for_grpo():
    plan = batch_plan("grpo", {"batch_size": None}, {"n": 8}, num_processes=1)
    assert fields(plan) == (8, 1, 1, 8, 1)
    assert plan.explanation.splitlines()[0] == (
        "batch_tokens 32768 / max_context_length 4096 = 8 sequences per step = 1 prompt x n=8; "
        "1 process x per-device 8 x accumulation 1"
    )


def test_batch_tokens_rounds_to_whole_prompts_and_says_so():
    # 32768 / 2048 = 16 sequences; n=6 -> 2 prompts = 12 sequences
    plan = batch_plan("grpo", {"batch_tokens": 32768, "max_context_length": 2048}, {"n": 6}, 1)
    assert (plan.sequences_per_step, plan.prompts_per_step) == (12, 2)
    assert "16 sequences -> 2 prompts x n=6 = 12 sequences per step (rounded" in plan.explanation
    # Fewer tokens than one group: still one prompt (max(1, ...)).
    plan = batch_plan("grpo", {"batch_tokens": 4096}, {"n": 8}, 1)
    assert (plan.sequences_per_step, plan.prompts_per_step) == (8, 1)


def test_batch_tokens_rounds_prompts_to_split_over_processes():
    # 16 sequences / n=4 = 4 prompts; 3 processes need prompts * 4 divisible by 3 -> 3 prompts
    plan = batch_plan("grpo", {"batch_tokens": 65536}, {"n": 4}, num_processes=3)
    assert fields(plan) == (4, 1, 1, 12, 3)
    assert "a multiple of 3 prompts, to split over 3 processes" in plan.explanation
    # n a multiple of the processes: any prompt count splits
    assert batch_plan("grpo", {"batch_tokens": 3 * 4096 * 4}, {"n": 4}, num_processes=2).prompts_per_step == 3


def test_batch_tokens_for_sft_and_kto_counts_sequences():
    plan = batch_plan("sft", {"batch_size": None}, None, num_processes=2)
    assert fields(plan) == (4, 1, None, 8, 8)
    assert plan.explanation == (
        "batch_tokens 32768 / max_context_length 4096 = 8 sequences per step; "
        "2 processes x per-device 4 x accumulation 1"
    )
    plan = batch_plan("kto", {"batch_tokens": 7 * 1024, "max_context_length": 1024}, None, num_processes=2)
    assert plan.sequences_per_step == 6 and "(rounded to a multiple of 2 processes)" in plan.explanation
    # Never below one sequence per process.
    assert batch_plan("sft", {"batch_tokens": 4096}, None, num_processes=4).sequences_per_step == 4


def test_a_budget_below_one_sequence_is_an_error():
    with pytest.raises(
        ValueError,
        match=r"train.batch_tokens=1000 < train.max_context_length=4096.*"
        r"batch_tokens >= 4096",
    ):
        batch_plan("sft", {"batch_tokens": 1000}, None, 1)


# --- per_device_batch_size: a memory ceiling, accumulation makes up the rest --------------


@pytest.mark.parametrize(
    "cap, expected",
    [
        (None, (32, 1)),
        (32, (32, 1)),
        (64, (32, 1)),
        (16, (16, 2)),
        (8, (8, 4)),
        (1, (1, 32)),
        (6, (4, 8)),  # 6 does not divide 32: the largest size below it that does
        (12, (8, 4)),
    ],
)
def test_per_device_cap_sets_the_accumulation(cap, expected):
    plan = batch_plan("grpo", {"batch_size": 4, "per_device_batch_size": cap}, {"n": 8}, num_processes=1)
    assert (plan.per_device_batch_size, plan.gradient_accumulation_steps) == expected
    assert plan.steps_per_generation == plan.gradient_accumulation_steps  # one generation per step
    assert plan.per_device_batch_size * plan.gradient_accumulation_steps == plan.sequences_per_step == 32


def test_a_cap_that_does_not_divide_is_explained():
    plan = batch_plan("sft", {"batch_size": 24, "per_device_batch_size": 5}, None, num_processes=2)
    assert (plan.per_device_batch_size, plan.gradient_accumulation_steps) == (4, 3)
    assert "per_device_batch_size 5 does not split 12 sequences per process evenly; 4 does" in plan.explanation


def test_sequences_always_equal_processes_x_per_device_x_accumulation():
    for processes in (1, 2, 3, 4, 8):
        for batch_size in range(1, 13):
            for n in (2, 3, 4, 8):
                for cap in (None, 1, 3, 5, 16):
                    try:
                        plan = batch_plan(
                            "grpo", {"batch_size": batch_size, "per_device_batch_size": cap}, {"n": n}, processes
                        )
                    except ValueError as error:
                        assert (batch_size * n) % processes, error  # the only reason to refuse
                        continue
                    assert plan.sequences_per_step == batch_size * n
                    assert processes * plan.per_device_batch_size * plan.gradient_accumulation_steps == batch_size * n
                    assert cap is None or plan.per_device_batch_size <= cap


# --- GRPO generation batches (TRL: whole groups of n) -------------------------------------


def test_steps_per_generation_goes_off_policy():
    plan = batch_plan("grpo", {"batch_size": 4, "per_device_batch_size": 4, "steps_per_generation": 8}, {"n": 4}, 1)
    assert fields(plan) == (4, 4, 8, 16, 4)
    assert "32 completions (8 prompts x n=4) every 8 micro-batches = once per 2 optimizer steps" in plan.explanation
    assert "off-policy" in plan.explanation


def test_smaller_generation_batches_than_a_step():
    plan = batch_plan("grpo", {"batch_size": 4, "per_device_batch_size": 4, "steps_per_generation": 2}, {"n": 4}, 1)
    assert (plan.steps_per_generation, plan.gradient_accumulation_steps) == (2, 4)
    assert "2 generations per optimizer step (on-policy)" in plan.explanation


def test_a_generation_batch_of_partial_groups_is_refused():
    with pytest.raises(
        ValueError,
        match=r"train.steps_per_generation=1: a generation batch of 4 per device x "
        r"1 process x 1 = 4 completions does not hold whole groups of "
        r"rollout.n=8.*values that work here: 2, 4, 8",
    ):
        batch_plan("grpo", {"batch_size": 4, "per_device_batch_size": 4, "steps_per_generation": 1}, {"n": 8}, 1)


def test_a_generation_that_straddles_optimizer_steps_is_refused():
    with pytest.raises(
        ValueError,
        match=r"steps_per_generation=3: 3 micro-batches per generation do not line up "
        r"with the 4 micro-batches.*values that work here: 1, 2, 4",
    ):
        batch_plan("grpo", {"batch_size": 4, "per_device_batch_size": 4, "steps_per_generation": 3}, {"n": 8}, 2)


def test_grpo_batch_must_split_over_processes():
    with pytest.raises(
        ValueError,
        match=r"train.batch_size \* rollout.n = 2 \* 4 = 8 completions per step cannot "
        r"be split evenly over 3 processes: use a train.batch_size that is a "
        r"multiple of 3 \(e.g. 3\)",
    ):
        batch_plan("grpo", {"batch_size": 2}, {"n": 4}, num_processes=3)
    with pytest.raises(ValueError, match=r"multiple of 2 \(e.g. 2 or 4\)"):
        batch_plan("grpo", {"batch_size": 3}, {"n": 3}, num_processes=2)


def test_grpo_needs_two_completions_and_a_rollout_section():
    job = {"model": {"name": "tiny"}, "train": {"batch_size": 2}, "reward": {"name": "gsm8k"}, "seed": 0}
    with pytest.raises(SpecError, match=r"--config-json: rollout.n: 1 is out of range; allowed: 2 <= value <= 256"):
        parse(TrainJob, {**job, "rollout": {"n": 1}}, "--config-json")
    with pytest.raises(SpecError, match=r"--config-json: rollout: is required: train.method 'grpo' samples "):
        parse(TrainJob, job, "--config-json")


# --- SFT / KTO --------------------------------------------------------------------------


def test_sft_counts_sequences():
    plan = batch_plan("sft", {"batch_size": 16, "per_device_batch_size": 4}, None, num_processes=2)
    assert fields(plan) == (4, 2, None, 16, 16)
    assert plan.explanation == "batch_size 16 sequences per step; 2 processes x per-device 4 x accumulation 2"
    with pytest.raises(
        ValueError,
        match=r"train.batch_size=5 sequences per step cannot be split evenly over 2 "
        r"processes: use a multiple of 2 \(e.g. 4 or 6\)",
    ):
        batch_plan("sft", {"batch_size": 5}, None, 2)
    with pytest.raises(ValueError, match=r"train.steps_per_generation=2: only GRPO generates; train.method is 'sft'"):
        batch_plan("sft", {"batch_size": 4, "steps_per_generation": 2}, None, 1)


def test_kto_keeps_pairs_in_each_micro_batch():
    # 14 per process, cap 6: 7 would break the cap, 1 would break KTO's KL pairs -> 2 x 7
    plan = batch_plan("kto", {"batch_size": 14, "per_device_batch_size": 6}, None, 1)
    assert (plan.per_device_batch_size, plan.gradient_accumulation_steps) == (2, 7)
    with pytest.raises(
        ValueError,
        match=r"train.batch_size=2 over 2 processes leaves 1 sequence per process: "
        r"KTO needs at least 2 .*train.batch_size of at least 4",
    ):
        batch_plan("kto", {"batch_size": 2}, None, 2)
    with pytest.raises(
        ValueError,
        match=r"train.per_device_batch_size=1: KTO needs at least 2.*7 sequences per "
        r"process.*raise train.per_device_batch_size to 7",
    ):
        batch_plan("kto", {"batch_size": 14, "per_device_batch_size": 1}, None, 2)
    # The unpaired APO loss has no KL term, so one sequence per micro-batch is fine.
    plan = batch_plan("kto", {"batch_size": 2, "trl": {"loss_type": "apo_zero_unpaired"}}, None, 2)
    assert plan.per_device_batch_size == 1


@pytest.mark.parametrize(
    "train, message",
    [
        ({"batch_size": 0}, r"train.batch_size: 0 is out of range; allowed: 1 <= value <= 4096"),
        ({"batch_size": 2.5}, r"train.batch_size: 2.5: Input should be a valid integer"),
        ({"batch_tokens": None}, r"train.batch_tokens: None: Input should be a valid integer"),
        ({"max_context_length": -1}, r"train.max_context_length: -1 is out of range"),
        ({"per_device_batch_size": "eight"}, r"train.per_device_batch_size: 'eight'"),
        ({"steps_per_generation": 0}, r"train.steps_per_generation: 0 is out of range"),
        ({"method": "dpo"}, r"train.method: 'dpo' is not allowed; allowed: 'grpo', 'sft' or 'kto'"),
    ],
)
def test_bad_knob_values_are_named_by_the_schema(train, message):
    with pytest.raises(SpecError, match=message):
        parse(TrainConfig, train, "--config-json", "train")


def test_bad_processes_are_named():
    with pytest.raises(ValueError, match=r"num_processes=0"):
        batch_plan("sft", {}, None, 0)


# --- the plan is accepted by TRL as is ------------------------------------------------------


@pytest.mark.parametrize(
    "train, n",
    [
        ({"batch_size": 2}, 8),
        ({"batch_size": 4, "per_device_batch_size": 6}, 8),
        ({"batch_size": 4, "per_device_batch_size": 4, "steps_per_generation": 8}, 4),
        ({"batch_tokens": 32768, "max_context_length": 2048}, 6),
    ],
)
def test_trl_grpo_config_accepts_the_plan(tmp_path, train, n):
    from trl import GRPOConfig

    plan = batch_plan("grpo", train, {"n": n}, num_processes=1)
    args = GRPOConfig(
        output_dir=str(tmp_path),
        use_cpu=True,
        bf16=False,
        gradient_checkpointing=False,
        report_to="none",
        num_generations=n,
        per_device_train_batch_size=plan.per_device_batch_size,
        gradient_accumulation_steps=plan.gradient_accumulation_steps,
        steps_per_generation=plan.steps_per_generation,
    )
    assert args.generation_batch_size == plan.per_device_batch_size * plan.steps_per_generation
    assert args.generation_batch_size % n == 0
    assert args.per_device_train_batch_size * args.gradient_accumulation_steps == plan.sequences_per_step

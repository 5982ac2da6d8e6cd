"""GRPO training: the loss mapping, the GRPOConfig built from our knobs, the reward wrapper,
and (slow) the real `accelerate launch -m knobsweep.train` on the tiny model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from transformers import TrainerState

from knobsweep.errors import SpecError
from knobsweep.io import read_jsonl
from knobsweep.rewards import Evaluation, get_evaluator
from knobsweep.spec.schema import TrainJob
from knobsweep.spec.validate import parse
from knobsweep.train.grpo import EvaluatorReward, build_grpo_config, completion_text, grpo_config_kwargs, loss_fields

REPO = Path(__file__).resolve().parents[1]
GSM8K_TRAIN = REPO / "data" / "gsm8k" / "train.jsonl"
ACCELERATE = [
    sys.executable,
    "-m",
    "accelerate.commands.launch",
    "--cpu",
    "--num_processes",
    "1",
    "--num_machines",
    "1",
    "--mixed_precision",
    "no",
    "--dynamo_backend",
    "no",
]


def train_config(**train) -> dict:
    """A TRAIN section (docs/contracts.md; unset knobs take the schema's defaults), small enough for a few
    CPU steps."""
    return {
        "model": {
            "name": "tiny",
            "lora": {
                "rank": 8,
                "alpha": 16,
                "dropout": 0.05,
                "target_modules": "all-linear",
                "exclude_modules": ["lm_head", "embed_tokens"],
            },
        },
        "train": {
            "method": "grpo",
            "loss": "grpo",
            "learning_rate": 5e-4,
            "epochs": 1,
            "batch_size": 2,
            "kl_beta": None,
            "log_every": 1,
            "trl": {},
            **train,
        },
        "rollout": {"n": 4, "temperature": 1.0, "top_p": 1.0, "top_k": 0, "max_tokens": 16, "extra_body": {}},
        "reward": {"name": "gsm8k", "format_weight": 0.5},
        "seed": 0,
    }


# --- loss methods onto GRPOConfig (notes/ml-stack.md) -------------------------------------


def test_loss_fields_follow_the_method_table():
    assert loss_fields("grpo", None) == dict(
        loss_type="dapo", epsilon=0.2, epsilon_high=0.2, beta=0.001, importance_sampling_level="token"
    )
    assert loss_fields("grpo", 0.05)["beta"] == 0.05
    assert loss_fields("grpo", 0.0)["beta"] == 0.0
    assert loss_fields("dapo", None) == dict(
        loss_type="dapo", epsilon=0.2, epsilon_high=0.28, beta=0.0, importance_sampling_level="token"
    )
    assert loss_fields("gspo-token", None) == dict(
        loss_type="grpo", epsilon=3e-4, epsilon_high=4e-4, beta=0.0, importance_sampling_level="sequence"
    )
    assert loss_fields("dapo", 0.0)["beta"] == 0.0  # an explicit zero is no KL, so allowed


def test_the_schema_rejects_kl_without_grpo_and_unknown_losses():
    with pytest.raises(SpecError, match=r"train.kl_beta: 0.01: kl_beta must be 0/unset when loss is dapo"):
        parse(TrainJob, train_config(loss="dapo", kl_beta=0.01), "--config-json")
    with pytest.raises(SpecError, match=r"train.loss: 'ppo' is not allowed; allowed: 'grpo', 'dapo' or 'gspo-token'"):
        parse(TrainJob, train_config(loss="ppo"), "--config-json")


# --- our knobs onto a real GRPOConfig ----------------------------------------------------


def test_knobs_reach_grpo_config(tmp_path):
    config = train_config(loss="gspo-token", batch_size=3, epochs=2, log_every=5)
    config["rollout"].update(
        n=6, temperature=0.7, top_p=0.9, top_k=40, max_tokens=32, extra_body={"repetition_penalty": 1.1}
    )
    args = build_grpo_config(grpo_config_kwargs(TrainJob(**config), tmp_path, num_processes=1, use_cuda=False))
    # 3 prompts per step x 6 completions each, all generated and trained in one step.
    assert (args.per_device_train_batch_size, args.gradient_accumulation_steps) == (18, 1)
    assert (args.generation_batch_size, args.steps_per_generation, args.num_generations) == (18, 1, 6)
    assert (args.temperature, args.top_p, args.top_k, args.max_completion_length) == (0.7, 0.9, 40, 32)
    assert args.generation_kwargs == {"repetition_penalty": 1.1}
    assert (args.loss_type, args.importance_sampling_level, args.epsilon, args.epsilon_high, args.beta) == (
        "grpo",
        "sequence",
        3e-4,
        4e-4,
        0.0,
    )
    # metrics.jsonl gets every step; log_every only paces the console table
    assert (args.learning_rate, args.num_train_epochs, args.logging_steps, args.seed) == (5e-4, 2, 1, 0)
    assert (args.use_cpu, args.bf16, args.gradient_checkpointing, args.mask_truncated_completions) == (
        True,
        False,
        False,
        False,
    )
    assert args.save_strategy == "steps" and args.report_to == []
    assert (args.save_steps, args.save_total_limit) == (50, 2)  # train.save_every / keep_checkpoints defaults
    assert Path(args.output_dir) == tmp_path / "checkpoints"


def test_trl_pass_through_wins_and_unknown_fields_are_named(tmp_path):
    # (fields a knob sets are refused: tests/test_spec_trl_fields.py)
    config = train_config(trl={"mask_truncated_completions": True, "lr_scheduler_type": "constant"})
    args = build_grpo_config(grpo_config_kwargs(TrainJob(**config), tmp_path, num_processes=1, use_cuda=False))
    assert (args.mask_truncated_completions, args.lr_scheduler_type) == (True, "constant")

    bad = grpo_config_kwargs(
        TrainJob(**train_config(trl={"num_generation": 4})), tmp_path, num_processes=1, use_cuda=False
    )
    with pytest.raises(ValueError, match=r"train.trl.num_generation: not a GRPOConfig field.*'num_generations'"):
        build_grpo_config(bad)


def test_a_missing_section_is_named():
    config = train_config()
    del config["seed"], config["reward"]
    with pytest.raises(SpecError) as caught:
        parse(TrainJob, config, "--config-json")
    assert [str(p) for p in caught.value.problems] == ["--config-json: seed: is required but missing"]
    with pytest.raises(SpecError, match=r"--config-json: reward: is required: train.method 'grpo' samples"):
        parse(TrainJob, {**config, "seed": 0}, "--config-json")


def test_batch_must_split_over_processes(tmp_path):
    kwargs = grpo_config_kwargs(TrainJob(**train_config()), tmp_path, num_processes=2, use_cuda=False)
    assert kwargs["per_device_train_batch_size"] == 4
    with pytest.raises(ValueError, match=r"2 \* 4 = 8 completions per step cannot be split evenly over 3"):
        grpo_config_kwargs(TrainJob(**train_config()), tmp_path, num_processes=3, use_cuda=False)


# --- the reward function TRL calls --------------------------------------------------------


def test_reward_wraps_the_gsm8k_evaluator(tmp_path):
    reward = EvaluatorReward(
        get_evaluator({"name": "gsm8k", "format_weight": 0.5}),
        columns=["row_id", "ground_truth"],
        rollouts_path=tmp_path / "rollouts.jsonl",
        rollouts_per_step=4,
    )
    assert reward.__name__ == "gsm8k"
    texts = ["so #### 72", "#### 5", "####", "no answer", "#### 3"]
    logged: dict[str, list[float]] = {}
    state = TrainerState()
    state.global_step = 4
    scores = reward(
        prompts=[[{"role": "user", "content": "q"}]] * 5,
        completions=[[{"role": "assistant", "content": t}] for t in texts],
        completion_ids=[[1]] * 5,
        trainer_state=state,
        log_metric=lambda name, value: logged.setdefault(name, []).append(value),
        log_extra=lambda column, values: None,
        row_id=[f"train-{i}" for i in range(5)],
        ground_truth=["72", "6", "1", "1", "not a number"],  # the last row makes the evaluator raise
    )
    assert scores == [1.0, 0.5, 0.25, 0.0, None]
    assert logged["invalid_rate"] == [0.2]
    assert logged["reward/correct"] == [0.25]
    assert logged["reward/format"] == [pytest.approx((1 + 1 + 0.5 + 0) / 4)]

    rollouts = read_jsonl(tmp_path / "rollouts.jsonl")
    assert [r["row_id"] for r in rollouts] == ["train-0", "train-1", "train-2", "train-3"]
    assert {r["step"] for r in rollouts} == {5}
    assert rollouts[0]["completion"] == "so #### 72" and rollouts[0]["valid"] is True
    assert rollouts[0]["metrics"] == {"correct": 1.0, "format": 1.0}


class OutOfRange:
    name = "broken"

    def __call__(self, completion: str, row: dict) -> Evaluation:
        return Evaluation(score=float(len(completion)), reason="length")


def test_junk_scores_and_invalid_evaluations_count_as_invalid():
    reward = EvaluatorReward(OutOfRange(), columns=[])
    logged: dict[str, list[float]] = {}
    scores = reward(
        prompts=["p", "p"],
        completions=["", "long"],
        log_metric=lambda name, value: logged.setdefault(name, []).append(value),
    )
    assert scores == [0.0, None]
    assert logged == {"invalid_rate": [0.5], "identical_rollouts": [0.0]}
    assert reward.evaluate("long", {})[1]["reason"] == "evaluator returned score 4.0, not in [0, 1]"
    assert completion_text("plain") == "plain"


# --- the real stage under accelerate launch ---------------------------------------------


def gsm8k_inputs(root: Path, rows: int) -> tuple[Path, Path]:
    """(tiny model dir, data dir with train.parquet) from the first real GSM8K rows, in the contract's schema."""
    from knobsweep.models.tiny import build_tiny_model, texts_from_parquet

    rows = [json.loads(line) for line in GSM8K_TRAIN.read_text().splitlines()[:rows]]
    frame = pd.DataFrame(
        {
            "row_id": [f"train-{i}" for i in range(len(rows))],
            "prompt": [[{"role": "user", "content": row["question"]}] for row in rows],
            "ground_truth": [row["answer"].split("#### ")[-1].replace(",", "") for row in rows],
            "answer": [row["answer"] for row in rows],
        }
    )
    (root / "data").mkdir()
    frame.to_parquet(root / "data" / "train.parquet")
    model = build_tiny_model(texts_from_parquet(root / "data" / "train.parquet"), root / "tiny")
    return model, root / "data"


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> tuple[Path, Path]:
    return gsm8k_inputs(tmp_path_factory.mktemp("grpo"), 6)


def launch(config: dict, model: Path, data: Path, out: Path) -> subprocess.CompletedProcess:
    command = ACCELERATE + [
        "-m",
        "knobsweep.train",
        "--config-json",
        json.dumps(config),
        "--model",
        str(model),
        "--data",
        str(data),
        "--out",
        str(out),
    ]
    # PYTHONPATH=tests: the tests' evaluators (entry points of tests/knobsweep_test_evaluators-1.0.dist-info)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "tests")}
    return subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, cwd=REPO)


@pytest.mark.slow
def test_accelerate_launch_trains_and_writes_the_contract_outputs(inputs, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model, data = inputs
    config = train_config()  # 6 prompts / 2 per step = 3 steps
    # scores that spread within a group, so every step trains (the random tiny model never writes GSM8K's
    # `#### N`: with the gsm8k reward the run would rightly end EARLY_STOPPED without a learning signal)
    config["reward"] = {"name": "test-length"}
    out = tmp_path / "train"
    result = launch(config, model, data, out)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    status = json.loads((out / "status.json").read_text())
    assert (status["state"], status["step"], status["reason"]) == ("COMPLETED", 3, "")
    assert status["started_at"] <= status["updated_at"]
    assert yaml.safe_load((out / "run.yaml").read_text()) == TrainJob(**config).model_dump(mode="json")  # as read

    metrics = read_jsonl(out / "metrics.jsonl")
    assert [m["step"] for m in metrics] == [1, 2, 3]
    for line in metrics:
        for key in (
            "reward",
            "learning_rate",
            "elapsed_s",
            "reward/length",
            "invalid_rate",
            "completions/mean_length",
            "filtered_group_rate",
        ):
            assert key in line, key
        # Computed from the tokens trained on: there when a group was kept, absent (not 0) when every one
        # was filtered (the random tiny model often scores a whole step alike).
        trained = line["filtered_group_rate"] < 1
        for key in ("loss", "kl", "grad_norm"):
            assert (key in line) == trained, (key, line)
    rollouts = read_jsonl(out / "rollouts.jsonl")
    assert {r["step"] for r in rollouts} == {1, 2, 3}
    assert set(rollouts[0]) == {"step", "row_id", "prompt", "completion", "score", "reason", "valid", "metrics"}
    assert "Reward" in result.stdout and "Invalid" in result.stdout  # the console table

    tuned = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model), out / "adapter")
    assert tuned.peft_config["default"].r == 8
    assert len(AutoTokenizer.from_pretrained(out / "adapter")) == len(AutoTokenizer.from_pretrained(model))


@pytest.fixture(scope="module")
def inputs40(tmp_path_factory) -> tuple[Path, Path]:
    return gsm8k_inputs(tmp_path_factory.mktemp("grpo40"), 40)


# TRL's names, per loss: the KL term only where beta > 0 (loss grpo); clipping metrics for every loss.
LOSS_METRICS = {
    "grpo": ("kl", "clip_ratio/region_mean"),
    "dapo": ("clip_ratio/region_mean",),
    "gspo-token": ("clip_ratio/region_mean",),
}


@pytest.mark.slow
@pytest.mark.parametrize("loss", sorted(LOSS_METRICS))
def test_each_loss_trains_20_steps_and_logs_its_metrics(inputs40, tmp_path, loss):
    model, data = inputs40
    config = train_config(loss=loss)  # 40 prompts / 2 per step = 20 steps
    # Scores by length, so every group has variance: no step is filtered away, whatever the tiny model says.
    config["reward"] = {"name": "test-length"}
    out = tmp_path / "train"
    result = launch(config, model, data, out)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    status = json.loads((out / "status.json").read_text())
    assert (status["state"], status["step"]) == ("COMPLETED", 20)
    metrics = read_jsonl(out / "metrics.jsonl")
    assert [m["step"] for m in metrics] == list(range(1, 21))
    for line in metrics:
        for key in (
            "reward",
            "reward_std",
            "loss",
            "grad_norm",
            "entropy",
            "completions/mean_length",
            "invalid_rate",
            "filtered_group_rate",
            "tokens_per_s",
            "elapsed_s",
            *LOSS_METRICS[loss],
        ):
            assert key in line, (loss, key, sorted(line))
    if loss != "grpo":
        assert "kl" not in metrics[0]  # beta is 0 for dapo and gspo-token: TRL computes no KL


@pytest.mark.slow
def test_a_bad_trl_field_fails_with_status_and_message(inputs, tmp_path):
    model, data = inputs
    out = tmp_path / "train"
    result = launch(train_config(trl={"num_generation": 4}), model, data, out)
    assert result.returncode != 0
    status = json.loads((out / "status.json").read_text())
    assert status["state"] == "FAILED"
    assert "train.trl.num_generation: not a GRPOConfig field" in status["reason"]
    assert "did you mean 'num_generations'" in status["reason"]
    assert "train.trl.num_generation" in result.stderr
    assert not (out / "adapter").exists()

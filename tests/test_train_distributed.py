"""Several training processes for real: `resources.train.processes: 2` (CPU, gloo) runs the launcher
and code path of two GPUs (`knobsweep.resources.launch_command`); GRPO, SFT and KTO against one
process on the same global batch, one writer per file, SIGTERM + resume of every rank.

Why the runs can be compared step for step: the LoRA starts from the same seed, dropout is 0, and the
data order is the sampler's (the same for any number of processes). GRPO samples completions, and
one process draws them from a random stream that two processes split differently, so here it
decodes greedily (top_k 1), with an evaluator that scores a process's completions 0, 1, 0, 1, ...
(rewards with spread, the same for one process and for two). A group of identical completions has
no policy gradient (its advantages sum to 0), so TRL's entropy bonus (entropy_coef 1) gives every
step a gradient that does not depend on sampling. What is left is where sums are taken (each
process sums its half, then gloo / NCCL adds the halves): float32 reassociation, about 1e-6
relative; we allow 1e-4 (bf16 on GPUs: 2e-2). A batch counted per process instead of globally, a
loss averaged over one process's tokens or a reward normalized within one process's half of a group
is off by tens of percent or a factor of 2, far outside that.

bench/gpu_check.sh runs this file on GPUs with KNOBSWEEP_TEST_GPUS=2: the same tests on 2 GPUs
(NCCL), against 1 GPU.
"""

from __future__ import annotations

import json
import os
import random
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from test_train_grpo import GSM8K_TRAIN, REPO, train_config
from test_train_lifecycle import finish, sigterm_after, status_of

from knobsweep.io import read_jsonl
from knobsweep.resources import launch_command
from knobsweep.rewards import Evaluation
from knobsweep.train.lifecycle import latest_checkpoint

TESTS = Path(__file__).resolve().parent
GPUS = int(os.environ.get("KNOBSWEEP_TEST_GPUS", "0"))  # bench/gpu_check.sh: 2
# (resources of one process, of two): CPU processes (gloo), or GPUs (NCCL)
ONE, TWO = ({"gpus": 1}, {"gpus": 2}) if GPUS else ({"gpus": 0, "processes": 1}, {"gpus": 0, "processes": 2})
RTOL = 2e-2 if GPUS else 1e-4
ROWS = 8


class AlternatingEvaluator:
    """Scores 0, 1, 0, 1, ... in call order: a group of identical (greedy) completions still has
    spread, the same for one process as for two (each scores an even share of the batch)."""

    name = "alternating"
    delay_s = 0.05  # time to interrupt a run between steps

    def __init__(self):
        self.calls = 0

    def __call__(self, completion: str, row: dict) -> Evaluation:
        self.calls += 1
        time.sleep(self.delay_s)
        return Evaluation(score=float(self.calls % 2), reason="call parity")


class HalfSignalEvaluator(AlternatingEvaluator):
    """Alternating scores for the even rows, 0.5 for the odd ones: an odd row's group has no spread."""

    name = "half-signal"

    def __call__(self, completion: str, row: dict) -> Evaluation:
        if int(row["row_id"].rsplit("-", 1)[1]) % 2:
            time.sleep(self.delay_s)
            return Evaluation(score=0.5, reason="odd row")
        return super().__call__(completion, row)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    """The tiny model, and train.parquet for each method from the first GSM8K rows."""
    from knobsweep.models.tiny import build_tiny_model

    root = tmp_path_factory.mktemp("distributed")
    rows = [json.loads(line) for line in GSM8K_TRAIN.read_text().splitlines()[:ROWS]]
    final = [row["answer"].split("#### ")[-1].replace(",", "") for row in rows]
    prompts = [[{"role": "user", "content": row["question"]}] for row in rows]
    answers = [[{"role": "assistant", "content": f"#### {answer}"}] for answer in final]
    ids = [f"train-{i}" for i in range(ROWS)]
    frames = {
        "rl": pd.DataFrame({"row_id": ids[:6], "prompt": prompts[:6], "ground_truth": final[:6]}),
        "sft": pd.DataFrame({"row_id": ids, "prompt": prompts, "completion": answers}),
        "kto": pd.DataFrame(
            {
                "row_id": ids,
                "prompt": prompts,
                "completion": [answers[i if i % 2 == 0 else (i + 1) % ROWS] for i in range(ROWS)],
                "label": [i % 2 == 0 for i in range(ROWS)],
            }
        ),
    }
    paths = {}
    for name, frame in frames.items():
        (root / name).mkdir()
        frame.to_parquet(root / name / "train.parquet")
        paths[name] = root / name
    paths["model"] = build_tiny_model(
        [row["question"] for row in rows] + [row["answer"] for row in rows], root / "tiny"
    )
    return paths


def config_of(method: str, **train) -> dict:
    config = train_config(method=method, learning_rate=5e-4, **train)
    config["model"]["lora"]["dropout"] = 0.0  # dropout masks depend on how rows are split over processes
    if method == "grpo":
        # 1 prompt x n=4 per step: each process holds half of a group, so advantages need every process's rewards
        config["train"].update(batch_size=1, rollouts_per_step=4, trl={"entropy_coef": 1.0})
        config["rollout"].update(n=4, top_k=1, max_tokens=16)
        config["reward"] = {"name": "test-alternating"}
    else:
        config["train"].pop("kl_beta")
        config["train"].update(batch_size=4, max_context_length=256)  # 8 rows: 2 steps
        if method == "sft":
            config["train"]["sft"] = {"max_length": 256}
        del config["rollout"], config["reward"]
    return config


DATA = {"grpo": "rl", "sft": "sft", "kto": "kto"}


def start(config: dict, inputs: dict, out: Path, resources: dict, tracked: bool = False) -> subprocess.Popen:
    """The training command as the train rule runs it: `launch_command`'s launcher, then the stage;
    `tracked`: with an offline W&B run."""
    stage = [
        "-m",
        "knobsweep.train",
        "--config-json",
        json.dumps(config),
        "--model",
        str(inputs["model"]),
        "--data",
        str(inputs[DATA[config["train"]["method"]]]),
        "--out",
        str(out),
    ]
    if tracked:
        run_info = out.parent / f"{out.name}-run-info.json"
        tracking = {"wandb": {"project": "knobsweep-tests", "mode": "offline"}}
        run_info.write_text(json.dumps({"experiment": "ddp", "run": out.name, "changed": {}, "tracking": tracking}))
        stage += ["--run-info", str(run_info)]
    cpus = resources.get("processes") or 1
    command = f"{launch_command({**resources, 'cpus': cpus, 'nodes': 1})} {shlex.join(stage)}"
    # the tests' evaluators; `accelerate` of this environment; its own process group, as in a job
    env = {
        **{name: value for name, value in os.environ.items() if name != "WANDB_SERVICE"},
        "WANDB_SILENT": "true",
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": str(TESTS),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    return subprocess.Popen(
        ["bash", "-c", command],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=REPO,
        start_new_session=True,
    )


def train(
    config: dict, inputs: dict, out: Path, resources: dict, tracked: bool = False
) -> tuple[dict, list[dict], str]:
    code, output = finish(start(config, inputs, out, resources, tracked), timeout=600)
    assert code == 0, output[-4000:]
    return status_of(out), read_jsonl(out / "metrics.jsonl"), output


def assert_one_writer(out: Path, status: dict, metrics: list[dict], output: str, steps: int) -> None:
    """Exactly one process wrote each file: one metrics line per step, one console table, one adapter."""
    assert [m["step"] for m in metrics] == list(range(1, steps + 1)), [m["step"] for m in metrics]
    # the console: one table, one batch plan, one closing line (the other process's progress bars
    # may share a line with them, so count the texts, not lines)
    assert len(re.findall(r"Step +Loss", output)) == 1, output[-3000:]
    assert output.count("batch: batch_size") == 1 and output.count(" completed: ") == 1, output[-3000:]
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    # one W&B run, the one status.json names
    [run_dir] = (out / "wandb").glob("offline-run-*")
    assert run_dir.name.endswith(f"-{status['wandb']['id']}")
    assert not list(out.glob("*.tmp*")) and not list((out / "adapter").glob("*.tmp*"))
    assert status["state"] == "COMPLETED" and status["step"] == steps, status


def assert_same_run(one: tuple, two: tuple, keys: tuple[str, ...]) -> None:
    """Two processes did what one did: same batch, same steps, same values at every step."""
    (status1, metrics1, _), (status2, metrics2, _) = one, two
    plan1, plan2 = status1["batch_plan"], status2["batch_plan"]
    assert plan1["sequences_per_step"] == plan2["sequences_per_step"]
    assert plan2["per_device_batch_size"] * plan2["gradient_accumulation_steps"] * 2 == plan2["sequences_per_step"]
    assert len(metrics1) == len(metrics2)
    for line1, line2 in zip(metrics1, metrics2):
        for key in keys:
            assert line2[key] == pytest.approx(line1[key], rel=RTOL, abs=1e-6), (line1["step"], key)


@pytest.mark.slow
@pytest.mark.parametrize(
    "method, keys",
    [
        ("grpo", ("reward", "reward_std", "loss", "grad_norm", "entropy", "completions/mean_length")),
        ("sft", ("loss", "grad_norm", "mean_token_accuracy", "num_tokens")),
        ("kto", ("loss", "grad_norm", "rewards/chosen", "rewards/rejected", "kl")),
    ],
)
def test_two_processes_train_as_one_on_the_same_global_batch(inputs, tmp_path, method, keys):
    config = config_of(method)
    steps = 6 if method == "grpo" else ROWS // 4
    one = train(config, inputs, tmp_path / "one", ONE)
    two = train(config, inputs, tmp_path / "two", TWO, tracked=True)
    assert (one[0]["processes"], two[0]["processes"]) == (1, 2)
    assert "2 processes x per-device" in two[2], two[2][-3000:]
    assert_one_writer(tmp_path / "two", *two, steps)
    assert_same_run(one, two, keys)
    if method == "grpo":
        # every rollout of a step, both processes' halves, written once (not process 0's half alone)
        for out in ("one", "two"):
            rollouts = read_jsonl(tmp_path / out / "rollouts.jsonl")
            assert len(rollouts) == 4 * steps and {r["step"] for r in rollouts} == set(range(1, steps + 1))
        pick = lambda out: [(r["step"], r["row_id"], r["score"]) for r in read_jsonl(tmp_path / out / "rollouts.jsonl")]  # noqa: E731
        assert pick("two") == pick("one")


@pytest.mark.slow
def test_a_process_whose_groups_were_all_filtered_keeps_in_step_with_the_others(inputs, tmp_path):
    """Seed 0 orders the 6 prompts 2 5 | 3 0 | 1 4: with 2 prompts per step (a group per process), each
    step one process's only group is filtered (an odd row) and the other's trains. The filtered process
    used to take one collective more than the other (filtering.filter_batch): the run hung at step 2."""
    config = config_of("grpo")
    config["train"].update(batch_size=2, trl={})  # no entropy bonus: TRL takes it per process, not globally
    config["reward"] = {"name": "test-half-signal"}
    status, metrics, _ = train(config, inputs, tmp_path / "two", TWO)
    assert (status["state"], status["step"]) == ("COMPLETED", 3), status
    # half the groups filtered: the even row's group trained (rewards 0, 1, 0, 1: mean 0.5), the odd row's did not
    assert [(m["filtered_group_rate"], m["reward"]) for m in metrics] == [(0.5, 0.5)] * 3, metrics
    assert all(isinstance(m.get("grad_norm"), float) for m in metrics), metrics


def expected_row_order(rows: int, epochs: int, seed: int) -> list[int]:
    """The prompt order of an uninterrupted run: TRL's RepeatSampler, one generator over the epochs."""
    from trl.trainer.utils import RepeatSampler

    sampler = RepeatSampler(range(rows), mini_repeat_count=1, batch_size=1, shuffle=True, seed=seed)
    return [index for _ in range(epochs) for index in sampler]


def test_a_resumed_epoch_keeps_the_order_of_an_uninterrupted_run():
    from knobsweep.train.trainer import EpochRepeatSampler

    uninterrupted = expected_row_order(6, 3, seed=0)
    sampler = EpochRepeatSampler(range(6), mini_repeat_count=1, batch_size=1, shuffle=True, seed=0)
    assert [i for _ in range(3) for i in sampler] == uninterrupted  # as TRL's, epoch after epoch
    resumed = EpochRepeatSampler(range(6), mini_repeat_count=1, batch_size=1, shuffle=True, seed=0)
    resumed.set_epoch(2)  # a fresh sampler after a resume in the third epoch
    assert list(resumed) == uninterrupted[12:] != uninterrupted[:6]


@pytest.mark.slow
def test_sigterm_stops_every_process_and_the_same_command_resumes_them_from_one_checkpoint(inputs, tmp_path):
    config = config_of("grpo", epochs=2, save_every=2)  # 6 prompts x 2 epochs = 12 steps
    total = 12
    kill_after = random.randint(7, 9)  # in the second epoch, after its first checkpoint
    out = tmp_path / "train"
    metrics = out / "metrics.jsonl"
    code, output = sigterm_after(start(config, inputs, out, TWO), metrics, kill_after, 600)
    assert code == 128 + signal.SIGTERM, output[-3000:]
    cancelled = status_of(out)
    assert cancelled["state"] == "CANCELLED" and cancelled["reason"].startswith("SIGTERM at step "), cancelled
    checkpoint = latest_checkpoint(out / "checkpoints")
    assert checkpoint.name == f"checkpoint-{cancelled['step']}"
    # one checkpoint, written once: the weights by the main process, each process's RNG state by itself
    assert sorted(p.name for p in checkpoint.glob("rng_state*")) == ["rng_state_0.pth", "rng_state_1.pth"]

    code, output = finish(start(config, inputs, out, TWO), timeout=600)
    assert code == 0, output[-4000:]
    status = status_of(out)
    assert (status["state"], status["step"], status["attempt"]) == ("COMPLETED", total, 2), status
    assert status["resumed_from"] == str(checkpoint)
    assert [r["step"] for r in read_jsonl(metrics)] == list(range(1, total + 1))
    # the prompts of every step, before and after the resume, in the order of an uninterrupted run
    rollouts = read_jsonl(out / "rollouts.jsonl")
    order = expected_row_order(6, 2, seed=config["seed"])
    assert [r["row_id"] for r in rollouts] == [
        f"train-{order[step - 1]}" for step in range(1, total + 1) for _ in range(4)
    ]

"""Cost: measured per run in the report, estimated per run and in total by `knobsweep plan`."""

from __future__ import annotations

import json

import pytest
import yaml
from conftest import finish_stages

from knobsweep import layout
from knobsweep.cli import main
from knobsweep.cost import CPU, GPU, Cost, Devices, measured_cost, stage_devices
from knobsweep.estimate import JOB_START_S, RULES_OF_THUMB, estimate_plan
from knobsweep.spec import load_experiment

SPEC = """
baseline:
  model: {name: tiny}
  data: {source: gsm8k, path: data/gsm8k, train_size: 20, eval_size: 5}
  rollout: {n: 4, max_tokens: 16}
  eval: {samples: 2, temperature: 0.7}
sweep:
  train.learning_rate: [2.0e-4]
  eval.max_tokens: [64]
"""


def test_devices_and_measured_cost() -> None:
    cpu = {"model": {"name": "tiny"}, "resources": {"train": {"cpus": 2}, "eval": {}}}
    assert stage_devices(cpu, "train") == Devices(CPU, 2) and stage_devices(cpu, "eval") == Devices(CPU, 1)
    assert measured_cost(cpu, 1800, 360) == Cost(cpu_hours=1.0 + 0.1)
    gpu = {"model": {"name": "Qwen/Qwen2.5-0.5B-Instruct"}, "resources": {"train": {"gpus": 4, "nodes": 2}}}
    assert stage_devices(gpu, "train") == Devices(GPU, 8) and stage_devices(gpu, "eval") == Devices(GPU, 1)
    cost = measured_cost(gpu, 900, 3600)
    assert cost == Cost(gpu_hours=8 * 0.25 + 1.0) and cost.text() == "3 GPU-h"
    assert Cost(1.5, 0.25).text() == "1.5 GPU-h + 0.25 CPU-h" and Cost().empty


def finished_train(root, key: str, *, model: str = "tiny", method: str = "grpo", device: str = "CPU") -> None:
    """A finished run that trained 10 steps x 8 sequences of 50 tokens (4,000 tokens) in a 20 s loop,
    with 5 s of loading and validation around it."""
    directory = layout.path(layout.TRAIN_DIR, root, key=key)
    directory.mkdir(parents=True)
    (directory / "run.yaml").write_text(yaml.safe_dump({"model": {"name": model}, "train": {"method": method}}))
    (directory / "status.json").write_text(
        json.dumps({"state": "COMPLETED", "runtime_s": 25.0, "device": device, "batch_plan": {"sequences_per_step": 8}})
    )
    lines = [{"step": s, "elapsed_s": 2.0 * s, "num_tokens": 400 * s} for s in range(1, 11)]
    lines.append({"step": 10, "elapsed_s": 20.5, "rewards/x": 1})  # a line without num_tokens
    (directory / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))


def finished_eval(root, key: str, model: str) -> None:
    """10 samples of 16 generated tokens in 0.8 s of generation, 3 s in all."""
    path = layout.path(layout.EVAL_SUMMARY, root, key=key)
    path.parent.mkdir(parents=True)
    path.write_text(
        json.dumps({"model": model, "n": 10, "completion_tokens": 160, "generate_s": 0.8, "elapsed_s": 3.0})
    )


def test_plan_estimates_from_rules_of_thumb_without_history(write_spec, tmp_path) -> None:
    experiment = load_experiment(write_spec(SPEC))
    plan = estimate_plan(experiment, tmp_path)
    rule = RULES_OF_THUMB[("tiny", CPU)]
    train = plan.runs["baseline"]["train"]
    # 20 rows x 1 epoch x n=4 sequences of (150 prompt + 16 completion) tokens, on 1 CPU core
    start_train, start_eval = JOB_START_S["train"], JOB_START_S["eval"]
    assert train.seconds == pytest.approx(start_train + rule["train_fixed_s"] + 80 * 166 / rule["train_tokens_per_s"])
    assert "rule of thumb" in train.source and train.devices == Devices(CPU, 1)
    evaluation = plan.runs["baseline"]["eval"]
    assert evaluation.seconds == pytest.approx(
        start_eval + rule["eval_fixed_s"] + 5 * 2 * 512 / rule["eval_tokens_per_s"]
    )
    # Three runs: two training jobs (the eval-only arm shares the baseline's), three evals, and the base
    # model's eval under each of the two eval configs.
    assert set(plan.runs["max_tokens=64"]) == {"train", "eval"}
    assert plan.base_evals == 2 and plan.unknown == 0
    jobs = [
        plan.runs["baseline"]["train"],
        plan.runs["learning_rate=2e-4"]["train"],
        *(plan.runs[name]["eval"] for name in ("baseline", "learning_rate=2e-4", "max_tokens=64")),
    ]
    base_evals = 2 * (start_eval + rule["eval_fixed_s"]) + 5 * 2 * (512 + 64) / rule["eval_tokens_per_s"]
    assert plan.total.cpu_hours == pytest.approx((sum(job.seconds for job in jobs) + base_evals) / 3600)
    assert plan.total.gpu_hours == 0


def test_plan_estimates_from_finished_runs_of_the_same_model_and_method(write_spec, tmp_path, capsys) -> None:
    spec = write_spec(SPEC)
    experiment = load_experiment(spec)
    finished_train(tmp_path, "0" * 16)
    finished_train(tmp_path, "1" * 16, method="sft")  # another method: not used
    finished_train(tmp_path, "2" * 16, device="GPU")  # another kind of device: not used
    finished_eval(tmp_path, "3" * 16, f"results/merge/{'0' * 16}")  # a merged tiny/grpo run: model tiny
    finished_eval(tmp_path, "4" * 16, "Qwen/Qwen2.5-0.5B-Instruct")  # another model: not used
    # The baseline is trained and evaluated already: nothing of it is estimated.
    finished_eval(tmp_path, experiment.baseline.keys.eval, "results/models/tiny-x")
    finish_stages(tmp_path, experiment.baseline)
    plan = estimate_plan(experiment, tmp_path)
    assert plan.runs["baseline"] == {}
    train = plan.runs["learning_rate=2e-4"]["train"]
    # measured: 200 tokens/s in the loop, 50 tokens per sequence, 5 s fixed; planned: 80 sequences
    assert train.seconds == pytest.approx(JOB_START_S["train"] + 5 + 80 * 50 / 200)
    assert train.source == "train: measured on 1 finished tiny/grpo run(s) on CPU here"
    evaluation = plan.runs["learning_rate=2e-4"]["eval"]
    # two tiny evals (the merged run and the tiny model itself): 200 tokens/s, 16 per sample, 2.2 s fixed
    assert evaluation.seconds == pytest.approx(JOB_START_S["eval"] + 2.2 + 10 * 16 / 200)
    assert evaluation.source == "eval: measured on 2 finished eval(s) of tiny here"
    assert "max_tokens=64" in plan.runs and "train" not in plan.runs["max_tokens=64"]  # shares the cached one

    assert main(["plan", str(spec), "--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    rows = {line.split("│")[1].strip(): line.split("│") for line in out.splitlines() if line.startswith("│")}
    assert rows["baseline"][8].strip() == "cached"
    assert rows["learning_rate=2e-4"][8].strip() == "50 s" and rows["learning_rate=2e-4"][9].strip().endswith("CPU-h")
    assert "estimated cost of what will run:" in out and "measured on 1 finished tiny/grpo run(s)" in out


def test_unknown_sizes_are_said_not_guessed(write_spec, tmp_path) -> None:
    spec = write_spec(SPEC.replace("train_size: 20, eval_size: 5", "eval_size: 5"))
    plan = estimate_plan(load_experiment(spec), tmp_path)
    train = plan.runs["baseline"]["train"]
    assert train.seconds is None and "set data.train_size" in train.why
    assert plan.unknown == 2  # two training jobs; the evals have a size

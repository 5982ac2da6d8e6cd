"""Training in rung segments (early_stop): a run that goes on past its rungs trains exactly as an
uninterrupted run (same steps, data order, learning rates, losses and rewards), and a run a rung
stopped ends EARLY_STOPPED with the rung's reason, without training again. Real TRL GRPO on the tiny
model (`python -m knobsweep.train`, as a rule runs it without the launcher)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
from test_train_grpo import REPO, inputs, train_config  # noqa: F401 (inputs is a fixture)

from knobsweep.io import read_jsonl
from knobsweep.merge import skip_reason
from knobsweep.train.rungs import generation_period, rung_step

TESTS = REPO / "tests"


def train(config: dict, model, data, out, *extra: str) -> dict:
    command = [sys.executable, "-m", "knobsweep.train", "--config-json", json.dumps(config)]
    command += ["--model", str(model), "--data", str(data), "--out", str(out), *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(TESTS)}
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env, cwd=REPO)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return json.loads((out / "status.json").read_text())


def curves(out) -> list[dict]:
    keys = ("step", "loss", "reward", "reward_std", "learning_rate", "kl", "grad_norm", "epoch")
    return [{key: line.get(key) for key in keys} for line in read_jsonl(out / "metrics.jsonl")]


def rollouts(out) -> list[tuple]:
    """(step, prompt, completion) of every rollout logged: the data order and what was sampled."""
    return [(r["step"], json.dumps(r["prompt"]), r["completion"]) for r in read_jsonl(out / "rollouts.jsonl")]


def same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-4, abs_tol=1e-6)
    return a == b


def test_a_rung_ends_on_a_generation_boundary_inside_the_run():
    assert rung_step(0.25, 150) == 37
    assert rung_step(0.5, 150, period=4) == 72  # a generation batch of 4 steps is never split
    assert rung_step(0.01, 150, period=4) == 4  # at least one generation in
    assert rung_step(0.99, 2) == 1  # never the last step: a rung there saves nothing

    class Args:
        steps_per_generation, num_iterations, gradient_accumulation_steps = 4, 2, 2

    assert generation_period(Args()) == 4  # 4 x 2 micro-batches per generation, 2 per step
    assert generation_period(object()) == 1  # SFT / KTO: no generation to align with


@pytest.mark.slow
def test_a_run_that_goes_on_past_its_rungs_trains_as_an_uninterrupted_run(inputs, tmp_path):
    model, data = inputs
    # 6 prompts, 1 per step, 2 epochs: 12 steps; rungs at step 3 (epoch 1) and step 7 (mid-epoch 2), so the
    # resumed sampler must give epoch 2's order, not epoch 1's again. Checkpoints every 5 steps, 2 kept.
    config = train_config(batch_size=1, epochs=2, save_every=5, keep_checkpoints=2)
    config["reward"] = {"name": "test-length"}  # scores that spread within a group: every step trains
    whole = tmp_path / "whole"
    assert train(config, model, data, whole)["state"] == "COMPLETED"

    out = tmp_path / "segmented"
    for fraction, step in ((0.25, 3), (0.6, 7)):
        rung = tmp_path / f"rung-{fraction}"
        status = train(config, model, data, out, "--rung", str(fraction), "--rung-out", str(rung))
        assert (status["state"], status["step"]) == ("PAUSED", step), status
        segment = json.loads((rung / "segment.json").read_text())
        assert (segment["step"], segment["max_steps"]) == (step, 12)
        assert (rung / "adapter" / "adapter_model.safetensors").is_file()
        assert not (out / "adapter").exists()
    status = train(config, model, data, out)
    assert (status["state"], status["step"], status["attempt"]) == ("COMPLETED", 12, 3), status

    assert [c["step"] for c in curves(out)] == list(range(1, 13))
    for a, b in zip(curves(whole), curves(out), strict=True):
        assert all(same(a[key], b[key]) for key in a), (a, b)
    assert rollouts(out) == rollouts(whole)


@pytest.mark.slow
def test_a_run_a_rung_stopped_ends_early_stopped_without_training(inputs, tmp_path):
    model, data = inputs
    config = train_config(batch_size=1, epochs=1)
    config["reward"] = {"name": "test-length"}
    out, rung = tmp_path / "train", tmp_path / "rung"
    train(config, model, data, out, "--rung", "0.5", "--rung-out", str(rung))
    stop = {
        "rung": 1,
        "rungs": 2,
        "fraction": 0.5,
        "step": 3,
        "max_steps": 6,
        "adapter": str(rung / "adapter"),
        "reason": "worse than the baseline at rung 1 of 2 (50% of training): delta -0.300, upper bound -0.100",
    }
    decision = tmp_path / "decision.json"
    decision.write_text(json.dumps({"stopped": {out.name: stop}}))
    later = tmp_path / "rung-2"  # the next segment's job records the stop and trains nothing
    train(config, model, data, out, "--rung", "0.75", "--rung-out", str(later), "--decision", str(decision))
    assert json.loads((later / "segment.json").read_text())["stopped"] == stop
    status = train(config, model, data, out, "--decision", str(decision))
    assert (status["state"], status["step"]) == ("EARLY_STOPPED", 3)
    assert status["reason"].startswith("early stop at rung 1 of 2 (step 3 of 6): worse than the baseline")
    assert "delta -0.300" in status["reason"]
    assert [line["step"] for line in read_jsonl(out / "metrics.jsonl")] == [1, 2, 3]  # the curves end at the stop
    assert (out / "adapter" / "adapter_model.safetensors").is_file()  # the weights at the stop
    assert skip_reason(out / "status.json").startswith("EARLY_STOPPED: early stop at rung 1")  # merge skips it

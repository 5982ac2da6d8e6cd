"""The training run's lifecycle: status states, validation, invalid samples, zero-variance group
filtering, health warnings, checkpoints, SIGTERM + resume, NaN -> FAILED, EARLY_STOPPED.

Unit tests on hand-built inputs, then (slow) the real `accelerate launch -m knobsweep.train`
on the tiny model. The evaluators below reach the training subprocess as registered evaluators (test-length,
test-slow, test-flaky): tests/knobsweep_test_evaluators-1.0.dist-info declares them as entry points, found
with PYTHONPATH=tests.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from test_train_grpo import ACCELERATE, REPO, inputs, train_config  # noqa: F401 (inputs is a fixture)

from knobsweep.errors import FieldError
from knobsweep.io import append_jsonl, read_jsonl
from knobsweep.rewards import EVALUATORS, Evaluation, get_evaluator, register_evaluator
from knobsweep.spec.schema import HealthConfig
from knobsweep.train.callbacks import StopRequest
from knobsweep.train.filtering import filter_batch, group_keep_mask
from knobsweep.train.grpo import EvaluatorReward, smoke_test_evaluator, validate_rows
from knobsweep.train.health import HealthMonitor, NonFiniteError
from knobsweep.train.lifecycle import Cancelled, _install_signal_handlers, latest_checkpoint, restore_logs
from knobsweep.train.status import RunStatus

TESTS = Path(__file__).resolve().parent


# --- evaluators the training subprocess imports -----------------------------------------


class LengthEvaluator:
    """Scores by completion length (so groups have variance); optionally slow."""

    name = "length"
    delay_s = 0.0

    def __call__(self, completion: str, row: dict) -> Evaluation:
        if self.delay_s:
            time.sleep(self.delay_s)
        return Evaluation(
            score=(len(completion) % 5) / 4, reason="length mod 5", metrics={"length": float(len(completion))}
        )


class SlowEvaluator(LengthEvaluator):
    name = "slow"
    delay_s = 0.04


class FlakyEvaluator(LengthEvaluator):
    """Raises on exactly 3 of every 10 calls."""

    name = "flaky"

    def __init__(self):
        self.calls = 0

    def __call__(self, completion: str, row: dict) -> Evaluation:
        self.calls += 1
        if self.calls % 10 in (1, 4, 7):
            raise RuntimeError("flaky evaluator failed on purpose")
        return super().__call__(completion, row)


class HangingEvaluator:
    name = "hanging"

    def __call__(self, completion: str, row: dict) -> Evaluation:
        if completion == "hang":
            threading.Event().wait(5)
        return Evaluation(score=0.5)


class ConstantEvaluator:
    name = "constant"

    def __call__(self, completion: str, row: dict) -> Evaluation:
        return Evaluation(score=0.5)


# --- zero-variance groups and invalid samples leave the batch ----------------------------


def hand_built_batch(rows: int = 8, length: int = 3) -> dict:
    return {
        "prompt_ids": torch.arange(rows * 2).view(rows, 2),
        "prompt_mask": torch.ones(rows, 2, dtype=torch.long),
        "completion_ids": torch.arange(rows * length).view(rows, length),
        "completion_mask": torch.ones(rows, length, dtype=torch.long),
        "advantages": torch.linspace(-1, 1, rows),
        "old_per_token_logps": torch.zeros(rows, length),
        "num_items_in_batch": torch.tensor(rows * length),
        "num_images": [0] * rows,
    }


def test_group_keep_mask_removes_zero_variance_groups_and_invalid_rows():
    nan = float("nan")
    rewards = torch.tensor(
        [
            0.0,
            1.0,
            0.5,
            0.0,  # signal: kept
            0.5,
            0.5,
            0.5,
            0.5,  # zero variance: filtered
            1.0,
            nan,
            0.0,
            1.0,  # signal, one invalid row dropped
            nan,
            nan,
            nan,
            0.3,  # a single valid score: no signal, filtered
            0.2,
            0.2,
            nan,
            0.2,  # valid scores all equal: filtered
        ]
    )
    keep, filtered, groups = group_keep_mask(rewards, group_size=4)
    assert (filtered, groups) == (3, 5)
    assert keep.tolist() == [True] * 4 + [False] * 4 + [True, False, True, True] + [False] * 8
    with pytest.raises(ValueError, match="groups of 3"):
        group_keep_mask(rewards, group_size=3)


def test_filter_batch_drops_rows_out_of_every_denominator():
    batch = hand_built_batch()
    keep = torch.tensor([True, True, False, False, True, False, True, True])
    out = filter_batch(batch, keep, drop_rows=True)
    assert out["completion_ids"].size(0) == out["prompt_ids"].size(0) == out["old_per_token_logps"].size(0) == 5
    assert out["advantages"].tolist() == pytest.approx(batch["advantages"][keep].tolist())
    assert out["num_images"] == [0] * 5
    assert int(out["num_items_in_batch"]) == 5 * 3  # the token-mean denominator counts kept tokens only
    assert batch["completion_ids"].size(0) == 8  # the input is not modified


def test_filter_batch_pads_to_the_row_count_of_every_process():
    batch = hand_built_batch()
    keep = torch.tensor([False, True, False, False, True, False, False, False])
    out = filter_batch(batch, keep, drop_rows=True, rows=4)  # another process keeps 4 rows
    assert out["completion_ids"].size(0) == out["advantages"].size(0) == len(out["num_images"]) == 4
    # the kept rows and, as inert rows (no token, no advantage), the first dropped ones
    assert out["completion_ids"][:, 0].tolist() == [0, 3, 6, 12]
    assert out["completion_mask"].sum(dim=1).tolist() == [0, 3, 0, 3]
    assert out["advantages"].tolist() == pytest.approx(
        [0.0, batch["advantages"][1].item(), 0.0, batch["advantages"][4].item()]
    )
    assert int(out["num_items_in_batch"]) == 6


def test_filter_batch_masks_rows_when_shapes_must_stay():
    batch = hand_built_batch()
    keep = torch.tensor([True, False] * 4)
    out = filter_batch(batch, keep, drop_rows=False)
    assert out["completion_mask"].shape == (8, 3)
    assert out["completion_mask"].sum(dim=1).tolist() == [3, 0] * 4
    assert out["advantages"][1::2].abs().sum() == 0
    assert int(out["num_items_in_batch"]) == 12


def test_a_fully_filtered_batch_keeps_one_inert_row():
    batch = hand_built_batch()
    totals = []  # as if summed over two processes; a collective: once per batch, filtered or not
    out = filter_batch(
        batch, torch.zeros(8, dtype=torch.bool), drop_rows=True, total_items=lambda n: totals.append(n) or n * 2
    )
    assert len(totals) == 1
    assert out["completion_ids"].size(0) == 1
    assert out["completion_mask"].sum() == 0 and out["advantages"].abs().sum() == 0
    assert int(out["num_items_in_batch"]) == 0


# --- health monitor ----------------------------------------------------------------------


def test_health_monitor_warns_once_per_episode():
    monitor = HealthMonitor("grpo", HealthConfig(grad_norm_max=1.0, grad_norm_patience=2, flat_patience=2))
    kinds = lambda step, **m: [kind for kind, _ in monitor.check(step, m)]  # noqa: E731
    assert kinds(1, grad_norm=5.0, reward=0.1, reward_std=0.1) == []
    assert kinds(2, grad_norm=5.0, kl=2.0, reward=0.1, reward_std=0.0) == ["grad_norm_spike", "kl_blowup"]
    assert kinds(3, grad_norm=5.0, kl=2.0, reward=0.1, reward_std=0.0) == ["reward_flat"]  # the rest still active
    assert kinds(4, grad_norm=0.5, invalid_rate=0.5, identical_rollouts=1.0) == ["invalid_rate", "identical_rollouts"]
    assert kinds(5, grad_norm=5.0) == []
    assert kinds(6, grad_norm=5.0) == ["grad_norm_spike"]  # cleared at step 4, so a new episode
    # A step that computed no grad norm / KL (every group filtered) neither clears nor resets anything:
    # the KL blow-up of step 2 was never measured again until now, so it is the same episode.
    assert kinds(7, grad_norm=5.0, kl=2.0) == []
    assert kinds(8, grad_norm=5.0, kl=0.5) == [] and kinds(9, grad_norm=5.0, kl=2.0) == ["kl_blowup"]
    assert kinds(10, reward=0.1) == []
    assert kinds(11, grad_norm=5.0, kl=2.0) == []  # the same two episodes, not new ones
    monitor = HealthMonitor("grpo", HealthConfig(grad_norm_max=1.0, grad_norm_patience=3))
    assert kinds(1, grad_norm=5.0) == kinds(2, grad_norm=5.0) == kinds(3, reward=0.0) == []
    assert kinds(4, grad_norm=5.0) == ["grad_norm_spike"]  # three measured steps in a row
    # A KL hovering around kl_max is one excursion until it falls to half of it.
    monitor = HealthMonitor("grpo", HealthConfig(kl_max=1.0))
    assert [kinds(step, kl=kl) for step, kl in enumerate([1.2, 0.9, 1.3, 0.6, 1.1, 0.4, 1.05], start=1)] == [
        ["kl_blowup"],
        [],
        [],
        [],
        [],
        [],
        ["kl_blowup"],
    ]


def test_health_monitor_sees_a_reward_collapse_and_non_finite_values():
    monitor = HealthMonitor("grpo", HealthConfig())
    found = []
    for step, reward in enumerate([0.1] * 5 + [0.5] * 5 + [0.1] * 5, start=1):
        found += [(step, kind) for kind, _ in monitor.check(step, {"reward": reward})]
    assert [kind for _, kind in found] == ["reward_collapse"] and found[0][0] > 10
    monitor.check_finite(1, {"loss": 0.5, "grad_norm": 1.0})
    with pytest.raises(NonFiniteError, match="grad_norm is inf at step 7"):
        monitor.check_finite(7, {"loss": 0.5, "grad_norm": float("inf")})


# --- status.json -------------------------------------------------------------------------


def test_status_keeps_history_warnings_and_resumes(tmp_path):
    status = RunStatus(tmp_path / "status.json")
    for state in ("PENDING", "VALIDATING", "RUNNING"):
        status.write(state)
    status.write(step=4)
    status.warn(3, "kl_blowup", "KL 2 > 1")
    status.warn(6, "invalid_rate", "too many")
    status.write("CANCELLED", reason="SIGTERM at step 6", step=6)
    saved = json.loads((tmp_path / "status.json").read_text())
    assert [h["state"] for h in saved["history"]] == ["PENDING", "VALIDATING", "RUNNING", "CANCELLED"]
    assert (saved["state"], saved["reason"], saved["step"], saved["attempt"]) == (
        "CANCELLED",
        "SIGTERM at step 6",
        6,
        1,
    )
    assert "finished_at" in saved

    again = RunStatus(tmp_path / "status.json")
    again.resume(4, "checkpoints/checkpoint-4")
    again.write("PENDING")
    saved = json.loads((tmp_path / "status.json").read_text())
    assert (saved["attempt"], saved["resumed_from"], saved["step"]) == (2, "checkpoints/checkpoint-4", 4)
    assert saved["started_at"] <= saved["updated_at"] and "finished_at" not in saved
    assert [w["kind"] for w in saved["warnings"]] == ["kl_blowup"]  # the one past the checkpoint is gone
    assert [h["state"] for h in saved["history"]][-2:] == ["CANCELLED", "PENDING"]


def test_one_stop_request_heard_twice_still_saves_and_a_second_ctrl_c_stops_at_once():
    """Slurm signals every process of a step and `accelerate launch` passes its own SIGTERM on: the
    trainer hears one preemption two or three times and must still finish its step and save."""
    from rich.console import Console

    stop = StopRequest()
    before = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}
    _install_signal_handlers(stop, Console(quiet=True))
    try:
        stop.in_loop = True
        for _ in range(3):
            os.kill(os.getpid(), signal.SIGTERM)
        assert stop.signum == signal.SIGTERM  # still finishing the step: no Cancelled raised
        with pytest.raises(Cancelled, match="SIGINT again: stopped at once"):
            os.kill(os.getpid(), signal.SIGINT)
    finally:
        for signum, handler in before.items():
            signal.signal(signum, handler)


# --- the evaluator contract: timeouts, validation ----------------------------------------


def test_a_hanging_evaluator_times_out_as_one_invalid_sample():
    reward = EvaluatorReward(HangingEvaluator(), columns=[], timeout=0.2)
    logged: dict[str, list[float]] = {}
    started = time.monotonic()
    scores = reward(
        prompts=["p"] * 3,
        completions=["a", "hang", "b"],
        log_metric=lambda name, value: logged.setdefault(name, []).append(value),
    )
    assert time.monotonic() - started < 2
    assert scores == [0.5, None, 0.5]
    assert logged["invalid_rate"] == [pytest.approx(1 / 3)]
    assert "timed out" in reward.evaluate("hang", {})[1]["reason"]


def test_validation_checks_rows_and_smoke_tests_the_evaluator():
    from datasets import Dataset

    validate_rows(Dataset.from_dict({"row_id": ["a"], "prompt": ["plain text"]}))
    good = Dataset.from_dict({"row_id": ["a", "b"], "prompt": [[{"role": "user", "content": "q"}]] * 2})
    validate_rows(good)
    bad = Dataset.from_dict(
        {
            "row_id": ["a", "b", "c"],
            "prompt": [
                [{"role": "user", "content": "q"}],
                [{"role": "user", "content": " "}],
                [{"role": "user", "content": "ok"}],
            ],
        }
    )
    with pytest.raises(ValueError, match=r"1 of 3 rows have an unusable prompt \(row b: every message is empty\)"):
        validate_rows(bad)
    with pytest.raises(ValueError, match="no 'prompt' column"):
        validate_rows(Dataset.from_dict({"question": ["q"]}))

    rows = [{"row_id": "r0", "ground_truth": "72", "answer": "48 + 24 = 72\n#### 72"}]
    summary = smoke_test_evaluator(EvaluatorReward(get_evaluator({"name": "gsm8k"}), columns=[]), rows)
    assert summary["invalid"] == 0 and len(summary["distinct_scores"]) >= 2
    with pytest.raises(ValueError, match=r"'constant' gave all 6 smoke-test candidates .* the same score 0.5"):
        smoke_test_evaluator(EvaluatorReward(ConstantEvaluator(), columns=[]), rows)

    class Broken:
        name = "broken"

        def __call__(self, completion, row):
            raise KeyError("ground_truth")

    with pytest.raises(ValueError, match=r"'broken' could not score any of 6 .* raised KeyError"):
        smoke_test_evaluator(EvaluatorReward(Broken(), columns=[]), rows)


def test_evaluators_by_entry_point_and_registration_never_by_import_path():
    # the tests' own evaluators come in as an installed package's would: entry points
    # (tests/knobsweep_test_evaluators-1.0.dist-info, found where tests/ is on the path)
    assert type(get_evaluator({"name": "test-flaky"})).__name__ == "FlakyEvaluator"
    with pytest.raises(FieldError, match="unknown evaluator 'test_train_lifecycle:FlakyEvaluator'"):
        get_evaluator({"name": "test_train_lifecycle:FlakyEvaluator"})  # code named by a config is never imported
    register_evaluator("length-test", "test_train_lifecycle:LengthEvaluator")
    try:
        assert get_evaluator({"name": "length-test"}).name == "length"
    finally:
        EVALUATORS.pop("length-test")
    with pytest.raises(ValueError, match="module:attribute"):
        register_evaluator("x", "no_colon")


# --- resume bookkeeping ------------------------------------------------------------------


def test_restore_logs_cuts_back_to_the_checkpoint(tmp_path):
    checkpoint = tmp_path / "checkpoints" / "checkpoint-4"
    checkpoint.mkdir(parents=True)
    (checkpoint / "trainer_state.json").write_text(json.dumps({"global_step": 4}))
    (tmp_path / "checkpoints" / "checkpoint-6").mkdir()  # an unfinished save: no trainer_state.json
    assert latest_checkpoint(tmp_path / "checkpoints") == checkpoint
    metrics, rollouts = tmp_path / "metrics.jsonl", tmp_path / "rollouts.jsonl"
    for step in range(1, 7):
        append_jsonl(metrics, {"step": step})
        append_jsonl(rollouts, {"step": step, "row_id": "r"})
    assert restore_logs(checkpoint, (metrics, rollouts)) == 4
    assert [r["step"] for r in read_jsonl(metrics)] == [1, 2, 3, 4]
    assert [r["step"] for r in read_jsonl(rollouts)] == [1, 2, 3, 4]

    # A copy inside the checkpoint wins (the live file may have been deleted by a workflow manager).
    (checkpoint / "knobsweep-logs").mkdir()
    (checkpoint / "knobsweep-logs" / "metrics.jsonl").write_text('{"step": 1}\n{"step": 2}\n{"step": 3}\n{"step": 4}\n')
    metrics.unlink()
    restore_logs(checkpoint, (metrics, rollouts))
    assert [r["step"] for r in read_jsonl(metrics)] == [1, 2, 3, 4]


# --- the real stage under accelerate launch ---------------------------------------------


def start(
    config: dict,
    model: Path,
    data: Path,
    out: Path,
    env: dict | None = None,
    launcher: bool = True,
    warm_start: Path | None = None,
) -> subprocess.Popen:
    """The stage as a rule runs it (under `accelerate launch`), or without the launcher process
    (`launcher=False`: the same single-process run, ~3 s faster, for tests about the stage itself)."""
    command = (ACCELERATE if launcher else [sys.executable]) + [
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
    command += ["--warm-start", str(warm_start)] if warm_start else []
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(TESTS), **(env or {})}
    # Its own process group, as under Slurm or a terminal: a signal reaches the launcher and the trainer.
    return subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=REPO, start_new_session=True
    )


def finish(process: subprocess.Popen, timeout: float = 300) -> tuple[int, str]:
    output, _ = process.communicate(timeout=timeout)
    return process.returncode, output


def status_of(out: Path) -> dict:
    return json.loads((out / "status.json").read_text())


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def sigterm_after(process: subprocess.Popen, metrics: Path, step: int, timeout: float) -> tuple[int, str]:
    """Once metrics.jsonl reaches `step`, SIGTERM to the launcher's process group (like Slurm preemption:
    every process of the job); (exit status, output) of the launcher."""
    wait_for(
        lambda: (
            process.poll() is not None or (metrics.is_file() and any(r["step"] >= step for r in read_jsonl(metrics)))
        ),
        timeout,
        f"step {step}",
    )
    assert process.poll() is None, finish(process)[1][-3000:]
    os.killpg(process.pid, signal.SIGTERM)
    return finish(process, timeout=300)


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_and_a_rerun_resumes_to_the_same_end(inputs, tmp_path):
    model, data = inputs
    # 6 prompts, 1 per step, 2 epochs: 12 steps; a checkpoint every 2 steps, the last 2 kept.
    config = train_config(batch_size=1, epochs=2, save_every=2, keep_checkpoints=2)
    config["reward"] = {"name": "test-slow"}  # ~0.2 s per step: time to interrupt
    total = 12
    kill_after = random.randint(3, total - 3)  # a random step after the first checkpoint
    out = tmp_path / "train"
    process = start(config, model, data, out)
    metrics = out / "metrics.jsonl"
    sigterm_after(process, metrics, kill_after, 240)
    # The launcher dies at once; the trainer finishes its step and saves first.
    wait_for(lambda: status_of(out)["state"] == "CANCELLED", 60, "status CANCELLED")
    cancelled = status_of(out)
    assert cancelled["reason"].startswith("SIGTERM at step ")
    assert "saved; run the same command again" in cancelled["reason"]
    stopped_at = cancelled["step"]
    assert kill_after <= stopped_at < total, (kill_after, stopped_at)
    assert latest_checkpoint(out / "checkpoints").name == f"checkpoint-{stopped_at}"
    assert len(list((out / "checkpoints").glob("checkpoint-*"))) <= 2  # keep_checkpoints
    assert not (out / "adapter").exists()

    code, output = finish(start(config, model, data, out))
    assert code == 0, output[-4000:]
    status = status_of(out)
    assert (status["state"], status["step"], status["attempt"]) == ("COMPLETED", total, 2), status
    assert status["resumed_from"].endswith(f"checkpoint-{stopped_at}")
    assert [h["state"] for h in status["history"]] == [
        "PENDING",
        "VALIDATING",
        "RUNNING",
        "CANCELLED",
        "PENDING",
        "VALIDATING",
        "RUNNING",
        "COMPLETED",
    ]
    steps = [r["step"] for r in read_jsonl(metrics)]
    assert steps == list(range(1, total + 1)), steps  # each step exactly once
    elapsed = [r["elapsed_s"] for r in read_jsonl(metrics)]
    assert elapsed == sorted(elapsed)  # the clock continues across the resume
    assert {r["step"] for r in read_jsonl(out / "rollouts.jsonl")} == set(range(1, total + 1))
    trainer_state = json.loads((latest_checkpoint(out / "checkpoints") / "trainer_state.json").read_text())
    assert trainer_state["global_step"] == trainer_state["max_steps"] == total  # what an uninterrupted run does
    assert (out / "adapter" / "adapter_config.json").is_file()


@pytest.mark.slow
def test_a_finished_run_whose_adapter_was_deleted_resumes_from_its_final_checkpoint(inputs, tmp_path):
    # The train job also merges: when the merge fails, Snakemake deletes the job's outputs, adapter/
    # included. The rerun must take the final checkpoint back, not train again.
    model, data = inputs
    config = train_config(batch_size=1, epochs=1, save_every=4)  # 6 steps; the end is saved too
    config["reward"] = {"name": "test-length"}  # a learning signal: COMPLETED
    out = tmp_path / "train"
    code, output = finish(start(config, model, data, out, launcher=False))
    assert code == 0, output[-4000:]
    first = (out / "adapter" / "adapter_model.safetensors").read_bytes()
    shutil.rmtree(out / "adapter")

    code, output = finish(start(config, model, data, out, launcher=False))
    assert code == 0, output[-4000:]
    status = status_of(out)
    assert (status["state"], status["step"], status["attempt"]) == ("COMPLETED", 6, 2), status
    assert status["resumed_from"].endswith("checkpoint-6")
    assert [r["step"] for r in read_jsonl(out / "metrics.jsonl")] == list(range(1, 7))  # no step trained again
    assert (out / "adapter" / "adapter_model.safetensors").read_bytes() == first


@pytest.mark.slow
def test_an_evaluator_failing_on_30_percent_costs_samples_not_the_run(inputs, tmp_path):
    model, data = inputs
    config = train_config(batch_size=2, epochs=2)  # 6 steps of 8 samples
    config["reward"] = {"name": "test-flaky"}
    out = tmp_path / "train"
    code, output = finish(start(config, model, data, out, launcher=False))
    assert code == 0, output[-4000:]
    status = status_of(out)
    assert status["state"] == "COMPLETED"
    assert status["summary"]["invalid_rate"] == pytest.approx(0.3, abs=0.1)
    metrics = read_jsonl(out / "metrics.jsonl")
    assert all("invalid_rate" in m and "filtered_group_rate" in m and "tokens_per_s" in m for m in metrics)
    invalid = [r for r in read_jsonl(out / "rollouts.jsonl") if not r["valid"]]
    assert invalid and all("flaky evaluator failed on purpose" in r["reason"] for r in invalid)
    assert "invalid_rate" in {w["kind"] for w in status["warnings"]}  # 30% > the 20% default threshold
    assert "warning" in output and "Invalid" in output


@pytest.mark.slow
def test_a_nan_loss_fails_the_run_and_keeps_the_last_good_checkpoint(inputs, tmp_path):
    model, data = inputs
    config = train_config(save_every=2)
    config["reward"] = {"name": "test-length"}
    out = tmp_path / "train"
    code, output = finish(start(config, model, data, out, env={"KNOBSWEEP_TEST_NAN_AT_STEP": "3"}, launcher=False))
    assert code != 0
    status = status_of(out)
    assert status["state"] == "FAILED", status
    assert "loss is nan at step 3" in status["reason"] and "checkpoint-2" in status["reason"]
    assert [(w["step"], w["kind"]) for w in status["warnings"]] == [(3, "non_finite")]
    assert [r["step"] for r in read_jsonl(out / "metrics.jsonl")] == [1, 2]
    assert [p.name for p in (out / "checkpoints").glob("checkpoint-*")] == ["checkpoint-2"]
    assert not (out / "adapter").exists()


@pytest.mark.slow
def test_an_epoch_without_signal_stops_early_and_saves_the_adapter(inputs, tmp_path):
    model, data = inputs
    # Strict GSM8K correctness only: the random tiny model never answers right, so every group is 0s.
    config = train_config(epochs=2)
    config["reward"] = {"name": "gsm8k", "format_weight": 0.0}
    out = tmp_path / "train"
    code, output = finish(start(config, model, data, out, launcher=False))
    assert code == 0, output[-4000:]
    status = status_of(out)
    assert status["state"] == "EARLY_STOPPED", status
    assert status["step"] == 3 and "stopped after step 3 of 6" in status["reason"]
    assert status["reason"].startswith("no learning signal: every group of all 3 steps had zero score variance")
    assert "try a higher rollout.temperature" in status["reason"] and status["learned"] is False
    assert "all_groups_filtered" in {w["kind"] for w in status["warnings"]}
    metrics = read_jsonl(out / "metrics.jsonl")
    assert [m["step"] for m in metrics] == [1, 2, 3]
    for line in metrics:
        # Measured on the generation batch: present, and 0 / 1 for real.
        assert line["filtered_group_rate"] == 1.0 and line["frac_reward_zero_std"] == 1.0 and line["reward"] == 0.0
        # Computed on the tokens trained on, of which there were none: absent, not 0.
        assert not {"loss", "grad_norm", "entropy", "kl", "policy_loss"} & set(line), line
        assert not any(name.startswith("clip_ratio/") for name in line) and None not in line.values()
    assert (out / "adapter" / "adapter_config.json").is_file()


# --- several processes (torchrun + gloo on the CPU, as `accelerate launch` runs them on GPUs) ---


def start_ranks(config: dict, model: Path, data: Path, out: Path, env: dict | None = None) -> subprocess.Popen:
    """The stage in 2 processes; each decides for itself unless knobsweep makes them agree."""
    with socket.socket() as probe:  # a free rendezvous port: tests may run next to each other
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        str(port),
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
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(TESTS), **(env or {})}
    return subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=REPO, start_new_session=True
    )


def rank_pid(launcher: subprocess.Popen, rank: int) -> int:
    """The pid of the worker process with RANK=rank, started by the launcher."""
    children = Path(f"/proc/{launcher.pid}/task/{launcher.pid}/children").read_text().split()
    for pid in children:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        if f"RANK={rank}".encode() in environ:
            return int(pid)
    raise AssertionError(f"no worker with RANK={rank} among {children}")


@pytest.mark.slow
def test_a_nan_on_one_process_fails_every_process_at_once(inputs, tmp_path):
    model, data = inputs
    config = train_config(batch_size=1, save_every=2)  # 6 steps; 1 prompt x n=4 = 2 completions per process
    out = tmp_path / "train"
    code, output = finish(
        start_ranks(config, model, data, out, env={"KNOBSWEEP_TEST_NAN_AT_STEP": "3", "KNOBSWEEP_TEST_NAN_RANK": "1"}),
        timeout=180,
    )
    assert code != 0
    assert "2 processes x per-device 2" in output, output[-3000:]  # both processes train one batch
    status = status_of(out)
    # Process 0's loss was finite: it stops because process 1's was not, instead of waiting for it forever.
    assert status["state"] == "FAILED", status
    assert "another process's loss is not finite at step 3" in status["reason"] and "checkpoint-2" in status["reason"]
    assert [r["step"] for r in read_jsonl(out / "metrics.jsonl")] == [1, 2]


@pytest.mark.slow
def test_a_signal_to_one_process_stops_every_process_after_the_same_step(inputs, tmp_path):
    model, data = inputs
    config = train_config(batch_size=1, epochs=2, save_every=2)  # 12 steps
    config["reward"] = {"name": "test-slow"}
    out = tmp_path / "train"
    launcher = start_ranks(config, model, data, out)
    metrics = out / "metrics.jsonl"
    wait_for(
        lambda: launcher.poll() is not None or (metrics.is_file() and any(r["step"] >= 3 for r in read_jsonl(metrics))),
        240,
        "step 3",
    )
    assert launcher.poll() is None, finish(launcher)[1][-3000:]
    os.kill(rank_pid(launcher, 1), signal.SIGTERM)  # only one process hears it
    finish(launcher, timeout=180)
    cancelled = status_of(out)
    assert cancelled["state"] == "CANCELLED" and cancelled["reason"].startswith("SIGTERM at step "), cancelled
    stopped_at = cancelled["step"]
    assert latest_checkpoint(out / "checkpoints").name == f"checkpoint-{stopped_at}"

    code, output = finish(start_ranks(config, model, data, out), timeout=240)
    assert code == 0, output[-4000:]
    status = status_of(out)
    assert (status["state"], status["step"]) == ("COMPLETED", 12), status
    assert [r["step"] for r in read_jsonl(metrics)] == list(range(1, 13))

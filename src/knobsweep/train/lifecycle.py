"""The run lifecycle every training method shares (`run_training`).

Outputs (docs/contracts.md): run.yaml, status.json, metrics.jsonl, rollouts.jsonl (GRPO),
adapter/, checkpoints/.

Lifecycle (status.json): PENDING -> VALIDATING (dataset rows, the method's checks,
the batch plan, the warm-start path, the model load) -> RUNNING -> COMPLETED | FAILED (an
exception, a NaN/Inf loss) | CANCELLED (SIGTERM / SIGINT: a checkpoint is saved, exit 128 +
signal) | EARLY_STOPPED (GRPO: an epoch with no learning signal, or none in the whole run, which
status.json says as `learned: false`; the adapter is saved, exit 0).
Running the same command again resumes from the latest checkpoint in OUT/checkpoints
(metrics.jsonl / rollouts.jsonl are cut back to its step).
"""

from __future__ import annotations

import json
import math
import shutil
import signal
import threading
import time
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.markup import escape

from knobsweep import layout, registry
from knobsweep.io import atomic_dir, atomic_write_text, read_jsonl
from knobsweep.spec.schema import RunInfo, TrainJob
from knobsweep.train.batching import batch_plan
from knobsweep.train.callbacks import (
    NO_SIGNAL_HINT,
    HealthCallback,
    LifecycleCallback,
    MetricsLogger,
    StopRequest,
    never_learned,
)
from knobsweep.train.health import HealthMonitor, NonFiniteError
from knobsweep.train.method import Method, build_trl_config, get_method
from knobsweep.train.rungs import (
    RungStop,
    copy_rung_model,
    generation_period,
    planned_steps,
    read_stop,
    rung_step,
    stop_reason,
    write_segment,
)
from knobsweep.train.status import (
    CANCELLED,
    COMPLETED,
    EARLY_STOPPED,
    FAILED,
    PAUSED,
    PENDING,
    RUNNING,
    VALIDATING,
    RunStatus,
)


class Cancelled(BaseException):
    """The run was stopped by a signal (SIGTERM / SIGINT); exit status 128 + signal."""

    def __init__(self, signum: int, message: str):
        super().__init__(message)
        self.signum = signum


# --- resume -------------------------------------------------------------------------------


def latest_checkpoint(checkpoints: Path) -> Path | None:
    """The checkpoint-N with the largest N that holds a trainer_state.json (a finished save)."""
    if not checkpoints.is_dir():
        return None
    done = [
        p
        for p in checkpoints.glob("checkpoint-*")
        if (p / "trainer_state.json").is_file() and p.name.split("-")[-1].isdigit()
    ]
    return max(done, key=lambda p: int(p.name.split("-")[-1]), default=None)


def restore_logs(checkpoint: Path, logs: tuple[Path, ...]) -> int:
    """Cut metrics.jsonl / rollouts.jsonl back to the checkpoint's step; return that step.

    The copies saved inside the checkpoint win (they survive a workflow manager deleting a
    failed job's outputs); otherwise lines past the step are dropped from the live file.
    """
    step = int(json.loads((checkpoint / "trainer_state.json").read_text())["global_step"])
    for path in logs:
        saved = checkpoint / layout.CHECKPOINT_LOGS / path.name
        source = saved if saved.is_file() else path
        records = read_jsonl(source) if source.is_file() else []
        kept = [r for r in records if int(r.get("step", 0)) <= step]
        atomic_write_text(path, "".join(json.dumps(r, allow_nan=True) + "\n" for r in kept))
    return step


def load_dataset(data_dir: str | Path):
    """train.parquet of a data stage directory as a datasets.Dataset (the method checks its columns)."""
    import pandas as pd
    from datasets import Dataset

    path = Path(data_dir) / layout.TRAIN_ROWS
    if not path.is_file():
        raise FileNotFoundError(f"--data {data_dir}: no train.parquet there (run the data stage first)")
    frame = pd.read_parquet(path)
    if frame.empty:
        raise ValueError(f"{path}: no rows")
    return Dataset.from_pandas(frame, preserve_index=False)


def run_summary(metrics_path: Path, keys: tuple[str, ...]) -> dict:
    """Means over every step in metrics.jsonl of the keys a reader asks about first."""
    records = read_jsonl(metrics_path) if metrics_path.is_file() else []
    summary: dict[str, Any] = {"steps": len(records)}
    for key in keys:
        values = [r[key] for r in records if isinstance(r.get(key), (int, float)) and math.isfinite(r[key])]
        summary[key] = round(sum(values) / len(values), 6) if values else None
    return summary


def _install_signal_handlers(stop: StopRequest, console: Console) -> None:
    """SIGTERM (Slurm preemption, scancel) / SIGINT (Ctrl-C): inside the training loop, finish the
    step, save a checkpoint and stop; outside it, or on a second Ctrl-C, stop at once.

    A stop already under way ignores SIGTERM: one stop request often arrives several times (Slurm
    signals every process of the step, and `accelerate launch` (>= 1.16) passes its own SIGTERM on to
    the trainer), and Slurm's SIGKILL ends a step that takes too long anyway."""
    if threading.current_thread() is not threading.main_thread():
        return

    def handler(signum, frame):
        if stop.signum is None and stop.in_loop:
            stop.signum = signum
            console.print(f"[yellow]{signal.Signals(signum).name}[/]: finishing this step, saving a checkpoint")
            return
        if stop.signum is not None and signum == signal.SIGTERM:
            return
        raise Cancelled(
            signum,
            f"{signal.Signals(signum).name} {'again' if stop.signum else 'outside the training loop'}: stopped at once",
        )

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, handler)


# --- the run ------------------------------------------------------------------------------


def run_training(
    job: TrainJob,
    model_path: str,
    data_dir: str | Path,
    out_dir: str | Path,
    run_info: RunInfo | None = None,
    warm_start: str | None = None,
    rung: tuple[float, Path] | None = None,
    decision: str | Path | None = None,
) -> Path:
    """Train with job.train.method; write the contract's outputs into out_dir; return it.

    Resumes from the latest checkpoint in out_dir/checkpoints when run.yaml there records the same
    job. `run_info` ({experiment, run, changed, tracking}; not part of the run's identity)
    names the run for experiment tracking. `warm_start`: an adapter or model directory to start from
    (warmstart.inspect_warm_start). Raises `Cancelled` after SIGTERM / SIGINT (a
    checkpoint saved first); on any other exception status.json says FAILED with the reason,
    and the exception propagates.
    """
    import torch
    from accelerate import PartialState

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # Without CUDA, accelerate sees the processes of a multi-process launch (torchrun, gloo) only
    # when told it runs on the CPU; the trainer's own Accelerator is told the same (use_cpu).
    state = PartialState(cpu=not torch.cuda.is_available())
    is_main = state.is_main_process
    status = RunStatus(out_dir / layout.STATUS, write=is_main)
    console = Console(highlight=False, soft_wrap=True)  # log files: one line per row, never wrapped
    logs = (out_dir / layout.METRICS, out_dir / layout.ROLLOUTS)
    checkpoints = out_dir / layout.CHECKPOINTS
    run_yaml = out_dir / layout.RUN_CONFIG
    config = job.model_dump(mode="json")
    same_run = run_yaml.is_file() and yaml.safe_load(run_yaml.read_text()) == config
    checkpoint = latest_checkpoint(checkpoints) if same_run else None
    stopped = read_stop(decision, out_dir.name)
    if stopped is not None:  # a rung stopped this run: nothing trains
        if is_main:
            _end_stopped(stopped, out_dir, status, checkpoint, rung)
        return out_dir
    state.wait_for_everyone()  # every process has looked before the main one changes anything
    if is_main:
        if checkpoint is None:
            # Another config's checkpoints, or only unfinished saves: start afresh.
            shutil.rmtree(checkpoints, ignore_errors=True)
            for path in logs:
                atomic_write_text(path, "")
            # A fresh start is a new W&B run: an attempt that died before its first checkpoint
            # must not have its steps logged twice under one run id.
            (out_dir / layout.WANDB_RUN_ID).unlink(missing_ok=True)
        else:
            status.resume(restore_logs(checkpoint, logs), str(checkpoint))
        atomic_write_text(run_yaml, yaml.safe_dump(config, sort_keys=False))
    status.write(PENDING)
    state.wait_for_everyone()
    stop = StopRequest()
    _install_signal_handlers(stop, console)
    started = time.monotonic()
    lifecycle = method = None
    try:
        # What ran it, for cost estimates of later runs (knobsweep.estimate): GPU or CPU, processes.
        status.write(VALIDATING, device="GPU" if torch.cuda.is_available() else "CPU", processes=state.num_processes)
        method = get_method(job.train.method)
        trainer, tokenizer, lifecycle = _validate_and_build(
            method, job, model_path, data_dir, out_dir, state, status, console, stop, run_info, warm_start
        )
        segment = None
        if rung is not None:
            total = planned_steps(trainer)
            segment = {"fraction": rung[0], "step": rung_step(rung[0], total, generation_period(trainer.args))}
            segment["max_steps"] = total
            done = int(checkpoint.name.split("-")[-1]) if checkpoint else 0
            if done >= segment["step"]:  # trained this far already (a segment re-run, or a finished run)
                finished = done > segment["step"] and (out_dir / layout.ADAPTER).is_dir()
                status.write(COMPLETED if finished else PAUSED, reason="" if finished else f"at step {done}")
                if is_main:
                    _record_segment(segment, checkpoints, Path(rung[1]), tokenizer, 0.0)
                return out_dir
            trainer.add_callback(RungStop(segment["step"]))
        if checkpoint is None:
            status.write(initial_weights=_fingerprint(trainer))
        status.write(RUNNING, reason=f"resumed from {checkpoint.name}" if checkpoint else "")
        trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
        trainer.accelerator.wait_for_everyone()
        step = trainer.state.global_step
        if stop.signum is not None:
            last = latest_checkpoint(checkpoints)
            raise Cancelled(
                stop.signum,
                f"{stop.name} at step {step}: "
                f"{last.name + ' saved' if last else 'no checkpoint saved'}; "
                "run the same command again to resume",
            )
        if segment is not None and step == segment["step"] and not lifecycle.early_stop_reason:
            runtime = round(time.monotonic() - started, 2)
            status.write(
                PAUSED,
                reason=f"at rung {segment['fraction']:.0%} of training (step {step} of {segment['max_steps']}): "
                "waiting for the rung decision",
                step=step,
            )
            if is_main:
                _record_segment(segment, checkpoints, Path(rung[1]), tokenizer, runtime)
            return out_dir
        if is_main:
            with atomic_dir(out_dir / layout.ADAPTER) as tmp:
                save_policy(trainer.accelerator.unwrap_model(trainer.model), tmp)
                tokenizer.save_pretrained(tmp)
    except Cancelled as exc:
        status.write(CANCELLED, reason=str(exc))
        console.print(f"[bold yellow]CANCELLED[/]: {escape(str(exc))}")
        raise
    except NonFiniteError as exc:
        last = latest_checkpoint(checkpoints)
        status.warn(exc.step or status.step, "non_finite", str(exc))
        status.write(
            FAILED,
            reason=f"NonFiniteError: {exc}; stopped before the weights or a checkpoint took it; "
            f"last good checkpoint: {last if last else 'none'}",
        )
        console.print(f"[bold red]FAILED[/]: {escape(str(exc))}")
        raise
    except BaseException as exc:
        status.write(FAILED, reason=f"{type(exc).__name__}: {exc}")
        raise
    finally:
        stop.in_loop = False
    # only a method that generates has groups to filter, and so can end without a learning signal
    nothing_learned = never_learned(read_jsonl(logs[0])) if registry.method(method.name).generates else None
    reason = "; ".join(part for part in (nothing_learned, lifecycle.early_stop_reason) if part)
    final = EARLY_STOPPED if reason else COMPLETED
    reason += f"; {NO_SIGNAL_HINT}" if reason else ""
    # learned: false tells the merge there is nothing to merge (knobsweep.merge.skip_reason)
    status.write(
        final,
        reason=reason,
        step=step,
        runtime_s=round(time.monotonic() - started, 2),
        summary=run_summary(logs[0], method.summary_keys),
        learned=nothing_learned is None,
    )
    if is_main:
        console.print(
            f"[bold]{method.title} {final.lower().replace('_', ' ')}[/]: {step} steps in "
            f"{time.monotonic() - started:.1f} s (torch threads {torch.get_num_threads()}) -> {out_dir}"
            + (f"\n{escape(reason)}" if reason else "")
        )
    return out_dir


def _record_segment(segment: dict, checkpoints: Path, rung_dir: Path, tokenizer, runtime_s: float) -> None:
    """segment.json and the rung's model; a run already past the rung without its checkpoint (trained
    to the end elsewhere, its rung checkpoint rotated out) has no rung model: its rung is skipped."""
    checkpoint = checkpoints / f"checkpoint-{segment['step']}"
    if checkpoint.is_dir():
        copy_rung_model(checkpoint, rung_dir / layout.ADAPTER, tokenizer)
        write_segment(rung_dir, {**segment, "checkpoint": str(checkpoint), "runtime_s": runtime_s})
    else:
        reason = f"the run had trained past step {segment['step']} without keeping its checkpoint: no rung model"
        write_segment(rung_dir, {**segment, "skipped": reason, "runtime_s": runtime_s})


def _end_stopped(stop: dict, out_dir: Path, status: RunStatus, checkpoint: Path | None, rung) -> None:
    """A run a rung stopped: a later segment records the stop; the final job ends EARLY_STOPPED with the
    rung's reason and the rung's adapter (which the merge and the eval then skip: knobsweep.merge)."""
    if rung is not None:
        write_segment(Path(rung[1]), {"fraction": rung[0], "stopped": stop, "runtime_s": 0.0})
        return
    if checkpoint is not None:
        status.resume(int(checkpoint.name.split("-")[-1]), str(checkpoint))
    shutil.copytree(stop["adapter"], out_dir / layout.ADAPTER, dirs_exist_ok=True)
    status.write(
        EARLY_STOPPED,
        reason=stop_reason(stop),
        step=stop["step"],
        runtime_s=0.0,
        summary=run_summary(out_dir / layout.METRICS, ()),
        stopped_at_rung=stop,
    )


def save_policy(model, directory: Path) -> None:
    """save_pretrained of the trained weights only: a PEFT model that TRL gave a frozen "ref" copy of a
    warm-start adapter (its KL reference) saves the "default" adapter alone, as a fresh LoRA would."""
    peft_configs = getattr(model, "peft_config", None)
    if isinstance(peft_configs, dict) and "default" in peft_configs and len(peft_configs) > 1:
        model.save_pretrained(directory, selected_adapters=["default"])
    else:
        model.save_pretrained(directory)


def _fingerprint(trainer) -> dict:
    from knobsweep.train.warmstart import trainable_fingerprint

    return trainable_fingerprint(trainer.accelerator.unwrap_model(trainer.model))


def _validate_and_build(
    method: Method,
    job: TrainJob,
    model_path,
    data_dir,
    out_dir,
    state,
    status,
    console,
    stop,
    run_info: RunInfo | None,
    warm_start: str | None,
):
    """VALIDATING: every check that can fail before a step runs, then the trainer."""
    import torch
    from transformers import AutoTokenizer, PrinterCallback

    from knobsweep.train.tracking import TrackingSetup, wandb_setup
    from knobsweep.train.warmstart import check_vocabulary, inspect_warm_start, load_policy

    train = job.train
    monitor = HealthMonitor(method.name, train.health)
    dataset = method.validate_rows(job, load_dataset(data_dir))
    warm_kind = inspect_warm_start(warm_start)
    plan = batch_plan(train, job.rollout, state.num_processes)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    status.write(
        validation=method.validate_with_tokenizer(job, dataset, tokenizer, out_dir, state.is_main_process),
        batch_plan={k: v for k, v in vars(plan).items() if k != "explanation"},
    )

    tracking = (
        wandb_setup(run_info, out_dir, job.model_dump(mode="json"), record=lambda run: status.write(wandb=run))
        if run_info
        else TrackingSetup("none")
    )
    tracking.apply()  # os.environ, before the trainer exists: its W&B integration reads it at init
    if tracking.record:  # status.json names the W&B run (with its URL once it exists): reports link to it
        status.write(wandb=tracking.record)
    use_cuda = torch.cuda.is_available()
    # model_init_kwargs only acts when TRL loads the model itself; we load it, so apply it here.
    model_kwargs = {
        "dtype": torch.bfloat16 if use_cuda else torch.float32,
        **(train.trl.get("model_init_kwargs") or {}),
    }
    args = build_trl_config(method.config_class, method.trl_kwargs(job, out_dir, plan, use_cuda, tracking.report_to))
    model, peft, warm_description = load_policy(model_path, job.model.lora, warm_start, warm_kind, model_kwargs)
    check_vocabulary(model, tokenizer, warm_start)
    if warm_kind:
        status.write(warm_start={"from": warm_start, "kind": warm_kind, "how": warm_description})

    metrics_path = out_dir / layout.METRICS
    previous = read_jsonl(metrics_path) if metrics_path.is_file() else []
    last = previous[-1] if previous else None
    health = HealthCallback(monitor, status, console)
    lifecycle = LifecycleCallback(stop, status, console, health, logs=(metrics_path, out_dir / layout.ROLLOUTS))
    logger = MetricsLogger(
        metrics_path,
        status,
        console,
        log_every=train.log_every,
        elapsed_offset=float(last["elapsed_s"]) if last else 0.0,
        last=last,
        columns=method.columns,
    )
    trainer = method.build_trainer(
        model=model,
        args=args,
        dataset=dataset,
        tokenizer=tokenizer,
        peft_config=peft,
        callbacks=[logger, health, lifecycle, *tracking.callbacks],  # a step is logged before it is judged
    )
    lifecycle.trainer = trainer
    # What the trainer trains on after its own preparation (SFT drops rows whose loss mask is
    # empty after truncation, and packing merges rows), next to the rows the file had.
    status.write(train_rows=len(trainer.train_dataset))
    dropped = method.dropped_rows(job, len(dataset), len(trainer.train_dataset))
    if dropped and not any(w["kind"] == "rows_dropped" for w in status.warnings):  # once, also over resumes
        health.report(0, "rows_dropped", dropped)
    trainer.remove_callback(PrinterCallback)  # it prints every log as a dict; MetricsLogger prints a table
    if state.is_main_process:
        lora = job.model.lora
        console.print(
            f"[bold]{method.title}[/] {escape(str(model_path))}: {escape(method.describe(job, dataset))}, "
            f"lr {train.learning_rate}, "
            f"{'LoRA r=' + str(lora.rank) if lora else 'full fine-tune'}"
            + (f", warm start from {escape(str(warm_description))}" if warm_kind else "")
        )
        console.print(f"[bold]batch[/]: {escape(plan.explanation)}")
        if tracking.report_to != "none":
            console.print(f"[bold]tracking[/]: {tracking.report_to}")
    return trainer, tokenizer, lifecycle

"""TrainerCallbacks shared by every training method.

- `MetricsLogger`: one metrics.jsonl line per optimizer step (every value the Trainer logs, plus
  elapsed_s and tokens_per_s; a value not computed on the step is absent, not 0), status.json's step
  kept current, and a compact console row every `log_every` steps, so a Slurm log reads as a table
  instead of a wall of dicts.
- `HealthCallback`: the `health.HealthMonitor` checks on each step's metrics; warnings go to
  status.json and the console; a non-finite loss / grad norm raises `NonFiniteError`.
- `LifecycleCallback`: a stop request (SIGTERM / SIGINT) saves a checkpoint and ends the loop;
  a GRPO epoch in which every group was filtered out ends the run early; each checkpoint gets a
  copy of metrics.jsonl / rollouts.jsonl, so a resume restores them even if they were deleted.
"""

from __future__ import annotations

import shutil
import signal
import time
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from transformers import TrainerCallback

from knobsweep import layout
from knobsweep.io import append_jsonl
from knobsweep.train.health import HealthMonitor
from knobsweep.train.status import RunStatus

# (header, metric key, width, format) of each method's console table.
_STEP, _LOSS = ("Step", "step", 6, "d"), ("Loss", "loss", 10, ".4g")
_RATE = (("Tok/s", "tokens_per_s", 9, ".1f"), ("Elapsed", "elapsed_s", 8, ".1f"))
GRPO_COLUMNS = (
    _STEP,
    _LOSS,
    ("Reward", "reward", 8, ".4f"),
    ("KL", "kl", 10, ".4g"),
    ("Invalid", "invalid_rate", 8, ".2f"),
    ("Filtered", "filtered_group_rate", 9, ".2f"),
    *_RATE,
)
SFT_COLUMNS = (
    _STEP,
    _LOSS,
    ("Acc", "mean_token_accuracy", 7, ".3f"),
    ("Entropy", "entropy", 8, ".3f"),
    ("GradNorm", "grad_norm", 9, ".3g"),
    *_RATE,
)
KTO_COLUMNS = (
    _STEP,
    _LOSS,
    ("Chosen", "rewards/chosen", 9, ".4f"),
    ("Reject", "rewards/rejected", 9, ".4f"),
    ("Margin", "rewards/margins", 9, ".4f"),
    ("KL", "kl", 9, ".4g"),
    *_RATE,
)
COLUMNS = GRPO_COLUMNS


def _cell(value, width: int, spec: str) -> str:
    try:
        text = "-" if value is None else format(value, spec)
    except (TypeError, ValueError):
        text = str(value)
    return text.rjust(width)


class MetricsLogger(TrainerCallback):
    """Appends one JSON line per logged step to `metrics_path`: step, elapsed_s, tokens_per_s, every logged value.

    `elapsed_offset` and `last` (the last line kept from before a resume) continue the clock and
    the token rate across attempts; `columns` are the console table's (header, key, width, format).
    """

    def __init__(
        self,
        metrics_path: str | Path,
        status: RunStatus,
        console: Console | None = None,
        log_every: int = 1,
        elapsed_offset: float = 0.0,
        last: dict | None = None,
        columns: tuple = COLUMNS,
    ):
        self.metrics_path = Path(metrics_path)
        self.status = status
        self.console = console or Console(highlight=False, soft_wrap=True)
        self.log_every = max(1, int(log_every))
        self.offset = float(elapsed_offset)
        self._t0 = time.monotonic()
        self._header_printed = False
        self._last = last or {}
        self.columns = columns

    def on_train_begin(self, args, state, control, **kwargs):
        self._t0 = time.monotonic()

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        # The Trainer's end-of-training summary (train_runtime, train_loss, ...) is not a step.
        if "train_runtime" in logs:
            return
        elapsed = round(self.offset + time.monotonic() - self._t0, 3)
        # A metric that was not computed on this step (None: e.g. entropy when every group was
        # filtered) is left out of the line, so no reader can take it for a 0.
        record = {
            "step": state.global_step,
            "elapsed_s": elapsed,
            **{name: value for name, value in logs.items() if value is not None},
        }
        record["tokens_per_s"] = self._tokens_per_s(record)
        append_jsonl(self.metrics_path, record)
        self._last = record
        self.status.write(step=state.global_step)
        if state.global_step % self.log_every == 0 or state.global_step == 1:
            self._print_row(record)

    def _tokens_per_s(self, record: dict) -> float | None:
        tokens = record.get("num_tokens")
        if not isinstance(tokens, (int, float)):
            return None
        d_tokens = tokens - float(self._last.get("num_tokens") or 0.0)
        d_time = record["elapsed_s"] - float(self._last.get("elapsed_s") or 0.0)
        return round(d_tokens / d_time, 2) if d_tokens > 0 and d_time > 0 else None

    def _print_row(self, record: dict) -> None:
        if not self._header_printed:
            self.console.print("".join(name.rjust(width + 1) for name, _, width, _ in self.columns), style="bold")
            self._header_printed = True
        self.console.print("".join(" " + _cell(record.get(key), width, spec) for _, key, width, spec in self.columns))


class HealthCallback(TrainerCallback):
    """Runs the health checks on every logged step; warnings are recorded and printed, never silent."""

    def __init__(self, monitor: HealthMonitor, status: RunStatus, console: Console):
        self.monitor, self.status, self.console = monitor, status, console

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or "train_runtime" in logs:
            return
        self.monitor.check_finite(state.global_step, logs)  # raises: before this step's checkpoint is saved
        for kind, message in self.monitor.check(state.global_step, logs):
            self.report(state.global_step, kind, message)

    def report(self, step: int, kind: str, message: str) -> None:
        self.status.warn(step, kind, message)
        if self.status.enabled:
            self.console.print(f"[yellow]warning[/] step {step} {kind}: {escape(message)}")


def any_process(flag: bool, device) -> bool:
    """True when `flag` is true on any process (a MAX all-reduce; the flag itself when single-process).

    Decisions that end the loop (a NaN loss, a stop signal) must be taken by every rank together:
    a rank that leaves alone makes the others wait in the next collective until it times out."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


class StopRequest:
    """Set by the SIGTERM / SIGINT handler; read at the end of each optimizer step."""

    def __init__(self):
        self.signum: int | None = None
        self.in_loop = False  # a first signal outside the training loop exits at once

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum else ""


# What to change when a GRPO run gets no learning signal (managed-RFT guidance: the group needs spread)
NO_SIGNAL_HINT = (
    "try a higher rollout.temperature (0.8-1.0), a larger rollout.n (8-16), or an evaluator whose "
    "scores spread within a group (reward options, e.g. partial credit)"
)


def never_learned(records: list[dict]) -> str | None:
    """Why a GRPO run's weights never moved (every group of every step filtered), or None.

    Read from metrics.jsonl, so a resumed run is judged on all its steps."""
    rates = [r.get("filtered_group_rate") for r in records]
    if not rates or any(not isinstance(rate, (int, float)) or rate < 1 for rate in rates):
        return None
    return (
        f"no learning signal: every group of all {len(rates)} steps had zero score variance (or no valid "
        "score), so no step changed the weights"
    )


class LifecycleCallback(TrainerCallback):
    def __init__(
        self,
        stop: StopRequest,
        status: RunStatus,
        console: Console,
        health: HealthCallback,
        logs: tuple[Path, ...] = (),
    ):
        self.stop, self.status, self.console, self.health = stop, status, console, health
        self.logs = logs
        self.trainer = None  # set once the trainer exists (GRPO's epoch_groups / epoch_filtered)
        self.early_stop_reason = ""

    def on_train_begin(self, args, state, control, **kwargs):
        self.stop.in_loop = True

    def on_train_end(self, args, state, control, **kwargs):
        self.stop.in_loop = False

    def on_epoch_begin(self, args, state, control, **kwargs):
        if hasattr(self.trainer, "epoch_groups"):  # GRPO only: SFT / KTO have no groups to filter
            self.trainer.epoch_groups = self.trainer.epoch_filtered = 0

    def on_step_end(self, args, state, control, **kwargs):
        # Every rank stops after the same step, and saves together, even when only some got the signal.
        if any_process(self.stop.signum is not None, args.device) and self.stop.signum is None:
            self.stop.signum = signal.SIGTERM  # another process was signalled (Slurm signals every step)
        if self.stop.signum is not None:
            control.should_save = True
            control.should_log = True
            control.should_training_stop = True

    def on_epoch_end(self, args, state, control, **kwargs):
        trainer = self.trainer
        if not getattr(trainer, "epoch_groups", 0) or trainer.epoch_filtered < trainer.epoch_groups:
            return
        epoch = round(state.epoch or 0)
        message = (
            f"every one of the {trainer.epoch_groups} groups of epoch {epoch} had zero score variance "
            "(or no valid score): no learning signal"
        )
        self.health.report(state.global_step, "all_groups_filtered", message)
        if state.global_step < state.max_steps:  # more epochs planned: stop instead of spinning
            self.early_stop_reason = message + f"; stopped after step {state.global_step} of {state.max_steps}"
            control.should_training_stop = True

    def on_save(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        checkpoint = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if checkpoint.is_dir():
            (checkpoint / layout.CHECKPOINT_LOGS).mkdir(exist_ok=True)
            for path in self.logs:
                if path.is_file():
                    shutil.copyfile(path, checkpoint / layout.CHECKPOINT_LOGS / path.name)

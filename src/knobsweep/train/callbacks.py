"""TrainerCallbacks shared by every training method.

`MetricsLogger` turns each Trainer log into one metrics.jsonl line (the report's source),
keeps status.json's step current, and prints a compact console row, so a Slurm log reads
as a table instead of a wall of dicts.
"""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console
from transformers import TrainerCallback

from knobsweep.io import append_jsonl
from knobsweep.train.status import RunStatus

# (header, metric key, width, format) of the console table.
COLUMNS = (("Step", "step", 6, "d"), ("Loss", "loss", 10, ".4g"), ("Reward", "reward", 8, ".4f"),
           ("KL", "kl", 10, ".4g"), ("Invalid", "invalid_rate", 8, ".2f"), ("Elapsed", "elapsed_s", 8, ".1f"))


def _cell(value, width: int, spec: str) -> str:
    text = "-" if value is None else format(value, spec)
    return text.rjust(width)


class MetricsLogger(TrainerCallback):
    """Appends one JSON line per logged step to `metrics_path`: step, elapsed_s, every logged value."""

    def __init__(self, metrics_path: str | Path, status: RunStatus, console: Console | None = None):
        self.metrics_path = Path(metrics_path)
        self.status = status
        self.console = console or Console(highlight=False, soft_wrap=True)
        self._t0 = time.monotonic()
        self._header_printed = False

    def on_train_begin(self, args, state, control, **kwargs):
        self._t0 = time.monotonic()

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        # The Trainer's end-of-training summary (train_runtime, train_loss, ...) is not a step.
        if "train_runtime" in logs:
            return
        record = {"step": state.global_step, "elapsed_s": round(time.monotonic() - self._t0, 3), **logs}
        append_jsonl(self.metrics_path, record)
        self.status.write(step=state.global_step)
        self._print_row(record)

    def _print_row(self, record: dict) -> None:
        if not self._header_printed:
            self.console.print("".join(name.rjust(width + 1) for name, _, width, _ in COLUMNS), style="bold")
            self._header_printed = True
        self.console.print("".join(" " + _cell(record.get(key), width, spec) for _, key, width, spec in COLUMNS))

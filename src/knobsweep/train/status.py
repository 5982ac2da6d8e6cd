"""status.json of a training run: its lifecycle state, why, when, and the health warnings.

    PENDING -> VALIDATING -> RUNNING -> COMPLETED | FAILED | CANCELLED | EARLY_STOPPED
    (with rungs, RUNNING -> PAUSED at each rung, until the rung decision lets the next segment run)

    {"state", "reason", "started_at", "updated_at", "finished_at" (terminal states), "step",
     "attempt" (1, then +1 per resume), "resumed_from" (checkpoint dir or null),
     "history": [{"state", "at", "reason", "step"}], "warnings": [{"step", "kind", "message"}], ...}

Always rewritten whole through `atomic_write_json`, so a reader (the report, `knobsweep
status`, a re-run deciding what to do) never sees a torn file.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from knobsweep.io import atomic_write_json

PENDING, VALIDATING, RUNNING, PAUSED = "PENDING", "VALIDATING", "RUNNING", "PAUSED"
COMPLETED, FAILED, CANCELLED, EARLY_STOPPED = "COMPLETED", "FAILED", "CANCELLED", "EARLY_STOPPED"
STATES = (PENDING, VALIDATING, RUNNING, PAUSED, COMPLETED, FAILED, CANCELLED, EARLY_STOPPED)
TERMINAL = (COMPLETED, FAILED, CANCELLED, EARLY_STOPPED)


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class RunStatus:
    """Writes one status.json; keeps the state history and the warnings across writes.

    `write=False` (non-main processes) keeps the bookkeeping but never touches the file.
    """

    def __init__(self, path: str | Path, write: bool = True):
        self.path = Path(path)
        self.enabled = write
        self.started_at = utc_now()
        self.state = ""  # the first write(PENDING) starts the history
        self.reason = ""
        self.step = 0
        self.attempt = 1
        self.resumed_from: str | None = None
        self.history: list[dict] = []
        self.warnings: list[dict] = []
        self.extra: dict[str, Any] = {}

    def resume(self, checkpoint_step: int, checkpoint: str) -> None:
        """Carry the previous attempt's start, history and warnings (up to the checkpoint) over."""
        try:
            previous = json.loads(self.path.read_text())
        except (OSError, ValueError):
            previous = {}
        self.started_at = previous.get("started_at", self.started_at)
        self.attempt = int(previous.get("attempt", 1)) + 1
        self.history = list(previous.get("history", []))
        self.warnings = [w for w in previous.get("warnings", []) if w.get("step", 0) <= checkpoint_step]
        self.resumed_from = checkpoint
        self.step = checkpoint_step
        if isinstance(previous.get("wandb"), dict):  # the W&B run it logs to, if this attempt does not track
            self.extra["wandb"] = previous["wandb"]

    def warn(self, step: int, kind: str, message: str) -> dict:
        warning = {"step": step, "kind": kind, "message": message}
        self.warnings.append(warning)
        self.write()
        return warning

    def write(self, state: str | None = None, reason: str | None = None, step: int | None = None, **extra: Any) -> None:
        if state is not None and state != self.state:
            assert state in STATES, state
            self.state = state
            self.reason = reason or ""
            self.history.append(
                {"state": state, "at": utc_now(), "reason": self.reason, "step": self.step if step is None else step}
            )
        elif reason is not None:
            self.reason = reason
        self.step = self.step if step is None else step
        self.extra.update(extra)
        if not self.enabled:
            return
        now = utc_now()
        atomic_write_json(
            self.path,
            {
                "state": self.state,
                "reason": self.reason,
                "started_at": self.started_at,
                "updated_at": now,
                **({"finished_at": now} if self.state in TERMINAL else {}),
                "step": self.step,
                "attempt": self.attempt,
                "resumed_from": self.resumed_from,
                "history": self.history,
                "warnings": self.warnings,
                **self.extra,
            },
        )

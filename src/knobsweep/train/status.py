"""status.json of a training run: RUNNING at start, then COMPLETED or FAILED with a reason.

Always rewritten whole through `atomic_write_json`, so a reader (the report, `knobsweep
status`, a re-run deciding what to do) never sees a torn file.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from knobsweep.io import atomic_write_json

RUNNING, COMPLETED, FAILED = "RUNNING", "COMPLETED", "FAILED"


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class RunStatus:
    """Writes {state, reason, started_at, updated_at, step, ...} to one status.json."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.started_at = utc_now()
        self.state = RUNNING
        self.step = 0

    def write(self, state: str | None = None, reason: str = "", step: int | None = None, **extra: Any) -> None:
        self.state = state or self.state
        self.step = self.step if step is None else step
        atomic_write_json(
            self.path,
            {
                "state": self.state,
                "reason": reason,
                "started_at": self.started_at,
                "updated_at": utc_now(),
                "step": self.step,
                **extra,
            },
        )

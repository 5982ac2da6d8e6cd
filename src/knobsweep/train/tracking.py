"""Weights & Biases tracking of a training run (optional; `tracking.wandb` in the spec).

    tracking: {wandb: {project: my-sweeps, entity: null, mode: online | offline}}

`wandb_setup` (for a job's `RunInfo`, its `tracking` section parsed by the spec's models) returns what the
trainer needs: `report_to` for the TRL config, environment
variables to set before the trainer is built (`TrackingSetup.apply()`), and a callback. The
transformers WandbCallback (report_to="wandb") calls `wandb.init()` on the main process with no
arguments but the project (WANDB_PROJECT) and, when TrainingArguments.run_name is set, a name;
wandb itself reads the rest from the environment, so:

- the run is grouped by experiment (WANDB_RUN_GROUP), named by run (WANDB_NAME) and tagged with
  the knob it changes (WANDB_TAGS: "knob:<dotted name>" and "<dotted name>=<value>", or
  "baseline");
- its files go under the run's output directory (WANDB_DIR=out_dir: out_dir/wandb/<run>/);
- a resumed training run continues the same W&B run: the id is generated once, kept in
  out_dir/wandb_run_id and passed as WANDB_RUN_ID with WANDB_RESUME=allow;
- no model or gradients are uploaded (WANDB_LOG_MODEL=false, WANDB_WATCH=false).

The callback (`WandbRunCallback`, after the WandbCallback in the trainer's list) logs the
resolved run config to wandb.config at train begin, and sets the name and tags on the run again
in case a TrainingArguments.run_name or a caller's environment overrode them. It also hands the run's
record (`TrackingSetup.record` plus its URL when online) to `record`: the training stage keeps it in
status.json as `wandb`, so a report of any experiment that reuses the training links to its W&B run.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import string
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from knobsweep import layout
from knobsweep.io import atomic_write_text
from knobsweep.spec.schema import RunInfo

logger = logging.getLogger(__name__)

RUN_ID_PATTERN = re.compile(r"[a-z0-9]{1,64}")
TAG_MAX = 64  # W&B rejects longer tags
BASELINE_TAG = "baseline"
WANDB_SERVICE = "WANDB_SERVICE"  # how wandb hands its service to child processes (wandb.env.SERVICE)


@dataclass
class TrackingSetup:
    report_to: str  # "wandb" | "none": TrainingArguments.report_to
    env: dict[str, str] = field(default_factory=dict)  # set before the trainer is built
    callbacks: list = field(default_factory=list)  # TrainerCallbacks to add to the trainer
    record: dict = field(default_factory=dict)  # the W&B run: id, name, group, project, entity, mode

    def apply(self) -> None:
        """Put `env` into os.environ (wandb.init reads it in this process).

        An inherited WANDB_SERVICE (a parent process's wandb service) is dropped when tracking: the run
        gets a service of its own, which ends with it. On a shared one, an attempt stopped by a signal
        leaves its run open there, and the resumed attempt's wandb.init fails: "run ID ... is in use"."""
        if self.report_to == "wandb":
            os.environ.pop(WANDB_SERVICE, None)
        os.environ.update(self.env)


def wandb_setup(
    run_info: RunInfo, out_dir: Path, config: dict, record: Callable[[dict], None] | None = None
) -> TrackingSetup:
    """The W&B setup of one training run; no `tracking.wandb` is off (report_to "none").

    `config` is the resolved run config logged to wandb.config; `record` gets the run's record (with its
    URL) once the run exists. Creates out_dir and out_dir/wandb_run_id.
    """
    options = run_info.tracking.wandb
    if options is None:
        return TrackingSetup(report_to="none")
    out_dir = Path(out_dir)
    run_id = persistent_run_id(out_dir)
    tags = run_tags(run_info.changed)
    env = {
        "WANDB_PROJECT": options.project,
        "WANDB_MODE": options.mode,
        "WANDB_DIR": str(out_dir.resolve()),
        "WANDB_RUN_GROUP": run_info.experiment,
        "WANDB_NAME": run_info.run,
        "WANDB_TAGS": ",".join(tags),
        "WANDB_RUN_ID": run_id,
        "WANDB_RESUME": "allow",
        "WANDB_LOG_MODEL": "false",
        "WANDB_WATCH": "false",
    }
    if options.entity:
        env["WANDB_ENTITY"] = options.entity
    summary = {
        "id": run_id,
        "name": run_info.run,
        "group": run_info.experiment,
        "project": options.project,
        "entity": options.entity,
        "mode": options.mode,
    }
    callback = WandbRunCallback(
        config=config, name=run_info.run, tags=tags, run_id=run_id, summary=summary, record=record
    )
    return TrackingSetup(report_to="wandb", env=env, callbacks=[callback], record=summary)


def run_tags(changed: dict[str, Any]) -> list[str]:
    """["knob:<name>", "<name>=<value>", ...] for each changed knob, or ["baseline"]."""
    if not changed:
        return [BASELINE_TAG]
    tags = []
    for name, value in changed.items():
        tags += [_tag(f"knob:{name}"), _tag(f"{name}={_value_text(value)}")]
    return tags


def _value_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"), sort_keys=True)  # 0.0001, true, null, [1,2]


def _tag(text: str) -> str:
    # WANDB_TAGS is comma-separated, so a comma inside a tag (a list value) would split it.
    text = text.replace(",", ";")
    return text if len(text) <= TAG_MAX else text[: TAG_MAX - 3] + "..."


def persistent_run_id(out_dir: Path) -> str:
    """The W&B run id of this training output: read from out_dir/wandb_run_id, or made once.

    Race-free across the processes of one launch: each writes its candidate to a private temp
    file and hard-links it into place, which fails if another got there first; all then read
    the winner.
    """
    path = Path(out_dir) / layout.WANDB_RUN_ID
    if not path.exists():
        candidate = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        atomic_write_text(candidate, new_run_id() + "\n")
        try:
            os.link(candidate, path)
        except FileExistsError:
            pass
        finally:
            candidate.unlink(missing_ok=True)
    run_id = path.read_text(encoding="utf-8").strip()
    if not RUN_ID_PATTERN.fullmatch(run_id):
        raise ValueError(
            f"{path}: {run_id!r} is not a W&B run id (1-64 lowercase letters and digits); "
            "delete the file to start a new W&B run"
        )
    return run_id


def new_run_id() -> str:
    """8 random lowercase letters and digits, like wandb.util.generate_id()."""
    alphabet = string.ascii_lowercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(8))


class WandbRunCallback(TrainerCallback):
    """Logs the resolved run config to W&B and keeps the run's name and tags ours.

    Runs after transformers' WandbCallback (which calls wandb.init at train begin), on the main
    process only, and only when a W&B run exists.
    """

    def __init__(
        self,
        config: dict,
        name: str,
        tags: list[str],
        run_id: str,
        summary: dict | None = None,
        record: Callable[[dict], None] | None = None,
    ):
        self.config = config
        self.name = name
        self.tags = list(tags)
        self.run_id = run_id
        self.summary = dict(summary or {})
        self.record = record

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        import wandb

        run = wandb.run
        if run is None:
            return
        if run.id != self.run_id:
            logger.warning(
                "W&B run id %s is not the id in %s (%s): was WANDB_RUN_ID set before the trainer "
                "was built? A resumed training run will start a new W&B run.",
                run.id,
                layout.WANDB_RUN_ID,
                self.run_id,
            )
        wandb.config.update(self.config, allow_val_change=True)
        if run.name != self.name:
            run.name = self.name
        missing = [tag for tag in self.tags if tag not in (run.tags or ())]
        if missing:
            run.tags = tuple(run.tags or ()) + tuple(missing)
        if self.record is not None:
            online = self.summary.get("mode") == "online"
            # the entity W&B resolved (the API key's default when the spec names none), and the run's page
            self.record(
                {**self.summary, "entity": run.entity or self.summary.get("entity"), "url": run.url if online else None}
            )

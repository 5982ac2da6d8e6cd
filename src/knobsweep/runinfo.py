"""Who a training job is for (W&B's group, run name and tags): a file beside the job, never a Snakemake param.

Names and tracking are no part of a run's identity (its train key): two experiments sharing a
baseline, or a follow-up written by `knobsweep next`, reach one training job under other experiment
and run names. Were they a param of the train rule, Snakemake would retrain the finished job whenever
they differ ("Params have changed since last execution") while `knobsweep plan` rightly calls it
cached. So the rule passes only this file's path, results/train/<key>/run_info.json (a function of
the key), and the Snakefile's `onstart` writes the file, before any job runs (`write_run_info`):

- a training that never started gets the first run of this workflow that uses its key (experiment,
  run, the knobs it changes) and that experiment's `tracking:`;
- a training that started (its status.json exists, so a W&B run may too) keeps the experiment, run
  and knobs it started under: a resumed run continues its W&B run under the same name, group and
  tags; its `tracking:` is the one of the spec that runs it now;
- a finished training (its adapter exists) is left alone: it is reused as it is, and its status.json
  says which W&B run logged it (the report links to that run).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from knobsweep import layout
from knobsweep.errors import Problem, SpecError
from knobsweep.io import atomic_write_json

# What a started training keeps from the record it started under: its W&B run's name, group and tags.
IDENTITY = ("experiment", "run", "changed")


def _recorded(path: Path) -> dict | None:
    """The file's record, or None when it is missing or not a record (then it is written again)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_run_info(train_jobs: Mapping[str, Any], root: str | Path = ".") -> int:
    """Write run_info.json for every training of `train_jobs` (train key -> pipeline.Job) that has not
    finished, as the module says; return how many files were written (a few stat calls per job, a
    write only where the record changes)."""
    written = 0
    for key, job in train_jobs.items():
        path = layout.path(layout.TRAIN_RUN_INFO, root, key=key)
        old = _recorded(path)
        if old is not None and layout.path(layout.TRAIN_ADAPTER, root, key=key).exists():
            continue
        new = dict(job.run_info)
        if old is not None and layout.path(layout.TRAIN_STATUS, root, key=key).exists():
            new.update({name: old[name] for name in IDENTITY if name in old})
        if new != old:
            atomic_write_json(path, new)
            written += 1
    return written


def read_run_info(path: str | Path):
    """The RunInfo in `path` (the training stage's --run-info); a SpecError names the file and what is wrong."""
    from knobsweep.spec.schema import RunInfo
    from knobsweep.spec.validate import parse

    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SpecError(
            [
                Problem(
                    str(path),
                    "",
                    "no such file: the workflow writes it when it starts (the Snakefile's onstart); "
                    "leave --run-info out to train without experiment tracking",
                )
            ]
        ) from None
    except (OSError, ValueError) as error:
        raise SpecError([Problem(str(path), "", f"cannot be read as JSON ({error})")]) from None
    return parse(RunInfo, data, str(path))

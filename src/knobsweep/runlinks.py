"""results/<experiment>/runs/<run name>/: a run's files found by its name, not its keys.

Each run's folder holds relative links into the stage folders its keys name (layout), so a
stage shared by several runs or experiments is linked, never copied:

    train/ merged/ eval/ [benchmarks/]            the run's train, merge, eval (and benchmark) folders
    status.json metrics.jsonl rollouts.jsonl      -> train/...
    adapter/ checkpoints/                         -> train/...
    eval_summary.json eval_samples.jsonl          -> eval/summary.json, eval/samples.jsonl
    train.log merge.log eval.log                  the stages' logs

A link may point at a stage that has not run yet. When a run's key changes, each link is replaced
atomically (a new link renamed over the old one); runs that left the spec lose their folders.
The Snakefile refreshes the links when a workflow starts, and every report build does too.

Since a link follows today's spec, not what ran, each refresh also records, per run name, the keys
of the stages it last found run (runs/.last-ran.json, LAST_RAN): `knobsweep plan
--why` compares today's configuration with theirs.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from collections.abc import Iterable
from pathlib import Path

from knobsweep import layout
from knobsweep.io import atomic_write_json

# the longest folder name kept whole (file systems allow 255 bytes)
MAX_NAME_BYTES = 200
# in results/<experiment>/runs/: run name -> {stage: key} of the stages it last ran. No run folder
# takes this name (folder_name escapes a leading '.').
LAST_RAN = ".last-ran.json"


def folder_name(run_name: str) -> str:
    """A run name as one path component: '/' and '%' escaped as in URLs, a leading '.' too (no hidden
    folders), and a name too long for a file system cut, with a hash of the whole name."""
    name = run_name.replace("%", "%25").replace("/", "%2F").replace("\0", "%00")
    if name.startswith("."):
        name = "%2E" + name[1:]
    if len(name.encode()) > MAX_NAME_BYTES:
        digest = hashlib.sha256(run_name.encode()).hexdigest()[:12]
        name = name.encode()[: MAX_NAME_BYTES - 13].decode(errors="ignore") + "-" + digest
    return name


def run_links(run) -> dict[str, str]:
    """Link name -> target (relative to the run's folder) for one run."""
    keys = run.keys
    up = "../../../../"  # results/<experiment>/runs/<run>/ -> the working directory
    in_train = layout.TRAIN_DIR + "/"
    in_eval = layout.EVAL_DIR + "/"
    return {
        "train": up + layout.TRAIN_DIR.format(key=keys.train),
        "merged": up + layout.MERGE_DIR.format(key=keys.train),
        "eval": up + layout.EVAL_DIR.format(key=keys.eval),
        **{
            Path(pattern).name: "train/" + pattern.removeprefix(in_train)
            for pattern in (
                layout.TRAIN_STATUS,
                layout.TRAIN_METRICS,
                layout.TRAIN_ROLLOUTS,
                layout.TRAIN_ADAPTER,
                layout.TRAIN_CHECKPOINTS,
            )
        },
        "eval_summary.json": "eval/" + layout.EVAL_SUMMARY.removeprefix(in_eval),
        "eval_samples.jsonl": "eval/" + layout.EVAL_SAMPLES.removeprefix(in_eval),
        **{
            f"{stage}.log": up + layout.LOGS.format(stage=stage, key=key)
            for stage, key in (("train", keys.train), ("merge", keys.train), ("eval", keys.eval))
        },
        # lm-eval's results, samples and summary of the merged model (eval.benchmarks)
        **({"benchmarks": up + layout.BENCHMARK_DIR.format(key=keys.benchmark)} if keys.benchmark else {}),
    }


def run_folder(experiment_name: str, run_name: str, root: str | Path = ".") -> Path:
    return layout.path(layout.RUN_LINKS, root, experiment=experiment_name, run=folder_name(run_name))


def refresh(experiments: Iterable, root: str | Path = ".") -> None:
    """Make every experiment's runs/ folder match its runs. A link that cannot be written is named on
    stderr and the others are still made: the links help people find files, no stage depends on them."""
    for experiment in experiments:
        runs_dir = layout.path(layout.RUN_LINKS, root, experiment=experiment.name, run="")
        wanted = {folder_name(run.name): run for run in experiment.runs}
        try:
            for name, run in wanted.items():
                _link_folder(runs_dir / name, run_links(run))
            _remove_stale(runs_dir, set(wanted))
        except OSError as error:
            print(f"knobsweep: could not write the run links under {runs_dir}: {error}", file=sys.stderr)
        record = runs_dir / LAST_RAN
        try:
            _record_last_ran(experiment.runs, record, root)
        except (OSError, ValueError) as error:
            print(f"knobsweep: could not update {record}: {error}", file=sys.stderr)


def ran_markers(run, root: str | Path = ".") -> dict[str, tuple[str, Path]]:
    """Stage -> (its key, the file whose presence means that stage of `run` ran): data and evals once
    finished, training once started (its run.yaml: a failed attempt ran that configuration too)."""
    keys = run.keys
    return {
        "data": (keys.data, layout.path(layout.DATA_MANIFEST, root, key=keys.data)),
        "train": (keys.train, layout.path(layout.TRAIN_DIR, root, key=keys.train) / layout.RUN_CONFIG),
        "eval": (keys.eval, layout.path(layout.EVAL_SUMMARY, root, key=keys.eval)),
        "base_eval": (keys.base_eval, layout.path(layout.EVAL_SUMMARY, root, key=keys.base_eval)),
        **{
            stage: (key, layout.path(layout.BENCHMARK_SUMMARY, root, key=key))
            for stage, key in (("benchmark", keys.benchmark), ("base_benchmark", keys.base_benchmark))
            if key
        },
    }


def read_last_ran(record: Path) -> dict[str, dict[str, str]]:
    """The LAST_RAN record: {} before the first refresh; a ValueError for one that is not a mapping of
    run -> {stage: key} (a hand edit, a full disk), which `refresh` names and writes again."""
    data = json.loads(record.read_text(encoding="utf-8")) if record.exists() else {}
    if not isinstance(data, dict) or not all(isinstance(stages, dict) for stages in data.values()):
        raise ValueError("not a mapping of run name -> {stage: key}")
    return data


def _record_last_ran(runs: Iterable, record: Path, root: str | Path) -> None:
    """Update each run's entry with the keys of its stages that ran: a few stat calls per run, and a
    write only when an entry changed."""
    try:
        old: dict | None = read_last_ran(record)
    except ValueError as error:  # started again: what ran is read from the stage folders below
        print(f"knobsweep: {record}: unreadable ({error}); written again", file=sys.stderr)
        old = None
    new = {name: dict(stages) for name, stages in (old or {}).items()}
    for run in runs:
        for stage, (key, output) in ran_markers(run, root).items():
            if output.exists():
                new.setdefault(run.name, {})[stage] = key
    if new != old:
        atomic_write_json(record, new)


def _link_folder(folder: Path, links: dict[str, str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, target in links.items():
        path = folder / name
        if os.path.islink(path) and os.readlink(path) == target:
            continue
        tmp = folder / f".{name}.{os.getpid()}.tmp"
        if os.path.lexists(tmp):
            os.unlink(tmp)
        os.symlink(target, tmp)
        os.replace(tmp, path)  # atomic: the old link, then the new one, never neither
    for entry in os.scandir(folder):
        if entry.name not in links and entry.is_symlink():
            os.unlink(entry.path)


def _remove_stale(runs_dir: Path, keep: set[str]) -> None:
    """Folders of runs no longer in the spec, if they hold nothing but links (ours)."""
    for entry in os.scandir(runs_dir):
        if entry.name in keep or not entry.is_dir(follow_symlinks=False):
            continue
        if all(item.is_symlink() for item in os.scandir(entry.path)):
            shutil.rmtree(entry.path)

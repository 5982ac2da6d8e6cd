"""`knobsweep plan --why`: why each stage that will run has to, and which runs share it.

A stage runs because nothing ran under its key. Its reason is measured against the configuration the
same run name had when that stage last ran in this experiment: the keys runlinks records
(runs/.last-ran.json; before the first record, the run's links) name the stage folders, whose
resolved configs (train/<key>/run.yaml, eval/<key>/summary.json, data/<key>/manifest.json) give the
fields that differ, old -> new; with no earlier result, "no previous result".
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import yaml

from knobsweep import layout, runlinks
from knobsweep.io import canonical_json, normalised
from knobsweep.planned import plan
from knobsweep.runfiles import read_status
from knobsweep.spec.expand import format_value
from knobsweep.spec.experiment import evaluation_config, train_config

NO_PREVIOUS = "no previous result"
LABELS = {
    "data": "data",
    "train": "train",
    "merge": "merge",
    "eval": "eval",
    "benchmark": "benchmarks",
    "base_eval": "eval of the base model",
    "base_benchmark": "benchmarks of the base model",
}


class WhyError(ValueError):
    """A file under results/ that cannot be read; the message names it."""


def stage_outputs(run, root: Path) -> dict[str, Path]:
    """The file or folder whose presence means a stage of this run is done (benchmarks: where it runs them)."""
    keys = run.keys
    return {
        "data": layout.path(layout.DATA_MANIFEST, root, key=keys.data),
        "train": layout.path(layout.TRAIN_ADAPTER, root, key=keys.train),
        "merge": layout.path(layout.MERGE_DIR, root, key=keys.train),
        "eval": layout.path(layout.EVAL_SUMMARY, root, key=keys.eval),
        **({"benchmark": layout.path(layout.BENCHMARK_SUMMARY, root, key=keys.benchmark)} if keys.benchmark else {}),
    }


def changed_fields(old: dict, new: dict, prefix: str = "") -> list[str]:
    """'field old -> new' for each leaf (a dotted path) whose value differs; 'unset' where one side lacks it."""
    old_leaves, new_leaves = _leaves(normalised(old), prefix), _leaves(normalised(new), prefix)
    lines = []
    for path in [*new_leaves, *(p for p in old_leaves if p not in new_leaves)]:
        before, after = old_leaves.get(path, _UNSET), new_leaves.get(path, _UNSET)
        if canonical_json(before, is_normalised=True) != canonical_json(after, is_normalised=True):
            lines.append(f"{path} {_show(before)} -> {_show(after)}")
    return lines


_UNSET = "\0unset"


def _show(value: Any) -> str:
    return "unset" if value == _UNSET else format_value(value)


def _leaves(tree: Any, prefix: str) -> dict[str, Any]:
    if not isinstance(tree, dict) or not tree:
        return {prefix: tree}
    leaves = {}
    for name, value in tree.items():
        leaves.update(_leaves(value, f"{prefix}.{name}" if prefix else name))
    return leaves


def why_lines(experiment, root: str | Path = ".") -> list[str]:
    """One line per stage job that will run: '<stage> (<its runs>): <why>'; a job shared by runs
    whose reasons differ names the runs of each reason."""
    root = Path(root)
    record_path = layout.path(layout.RUN_LINKS, root, experiment=experiment.name, run=runlinks.LAST_RAN)
    record = _read(record_path, json.loads)
    planned = plan([experiment], root)  # what will run, as `knobsweep plan` and Snakemake decide it
    jobs: dict[tuple[str, str], dict[str, list[str]]] = {}
    reasons: dict[tuple, str] = {}  # a job's reason against one earlier key is worked out once
    for run in experiment.runs:
        last = record.get(run.name) or _last_from_links(experiment.name, run, root)
        outputs = {
            **stage_outputs(run, root),
            "base_eval": layout.path(layout.EVAL_SUMMARY, root, key=run.keys.base_eval),
        }
        if run.keys.base_benchmark:
            outputs["base_benchmark"] = layout.path(layout.BENCHMARK_SUMMARY, root, key=run.keys.base_benchmark)
        train_runs = planned.will_run("train", run.keys.train)
        for stage, output in outputs.items():
            key = _key(run, stage)
            if not planned.will_run(stage, key):
                continue
            previous = last.get("train" if stage == "merge" else stage)
            cache_key = (stage, key, previous, last.get("data"), train_runs)
            if cache_key not in reasons:
                # a stage whose result is there runs again because a file it reads is rebuilt
                reasons[cache_key] = (
                    planned.reasons[(stage, key)]
                    if output.exists()
                    else _reason(stage, run, previous, last, root, train_runs=train_runs)
                )
            jobs.setdefault((stage, key), {}).setdefault(reasons[cache_key], []).append(run.name)
    lines = []
    for (stage, _), by_reason in sorted(jobs.items(), key=lambda job: list(LABELS).index(job[0][0])):
        names = [name for group in by_reason.values() for name in group]
        if len(names) == 1:
            who = names[0]
        elif len(names) == len(experiment.runs):
            who = f"shared by all {len(names)} runs"
        else:
            who = f"shared by {_listed(names)}"
        text = "; ".join(
            reason if len(by_reason) == 1 else f"{reason} [{_listed(group)}]" for reason, group in by_reason.items()
        )
        lines.append(f"{LABELS[stage]} ({who}): {text}")
    return lines


def _listed(names: list[str], most: int = 5) -> str:
    """Run names, the first `most` of a long list: a sweep of hundreds keeps one line per job."""
    shown = ", ".join(names[:most])
    return shown if len(names) <= most else f"{shown} and {len(names) - most} more"


def _key(run, stage: str) -> str:
    keys = run.keys
    return {
        "data": keys.data,
        "eval": keys.eval,
        "base_eval": keys.base_eval,
        "benchmark": keys.benchmark,
        "base_benchmark": keys.base_benchmark,
    }.get(stage, keys.train)


def _reason(stage: str, run, previous: str | None, last: dict, root: Path, train_runs: bool) -> str:
    if stage == "merge":
        return "follows its training" if train_runs else "its training finished, not merged yet"
    if previous is None:
        return NO_PREVIOUS
    if previous == _key(run, stage):
        return _same_key(stage, previous, root)
    if stage == "data":
        return _data_reason(run, previous, root)
    if stage == "train":
        return _train_reason(run, previous, last, root)
    if stage in ("benchmark", "base_benchmark"):
        return _benchmark_reason(run, stage, previous, root, train_runs)
    return _eval_reason(run, stage, previous, root, train_runs)


def _same_key(stage: str, key: str, root: Path) -> str:
    """The stage ran under today's key and has no result: an attempt that failed, or a deleted folder."""
    status_file = layout.path(layout.TRAIN_STATUS, root, key=key)
    if stage == "train" and status_file.exists():
        status = read_status(status_file, [], "")  # as every command reads it: "unreadable" with why
        reason = f": {status['reason']}" if status.get("reason") else ""
        return f"same configuration as its last attempt, which ended {status.get('state', 'unfinished')}{reason}"
    return "same configuration as its last result, whose files are gone"


def _gone(stage: str, key: str) -> str:
    return f"its configuration changed since its last result ({stage} {key}), whose files are gone"


def _data_reason(run, previous: str, root: Path) -> str:
    from knobsweep.data import input_fingerprint
    from knobsweep.spec.sources import read_options

    manifest_file = layout.path(layout.DATA_MANIFEST, root, key=previous)
    if not manifest_file.exists():
        return _gone("data", previous)
    manifest = _read(manifest_file, json.loads)
    before, read = manifest.get("options"), manifest.get("inputs")
    if not isinstance(before, dict) or not isinstance(read, dict):
        raise WhyError(f"{manifest_file}: cannot be read (no 'options' and 'inputs' mappings: not a manifest)")
    options = read_options(run.config["data"])
    options = options if isinstance(options, dict) else options.model_dump(mode="json")
    fields = changed_fields(before, options, "data")
    if not fields:  # the same options: what they read changed
        inputs = input_fingerprint(run.config["data"])
        fields = [f"{name} changed" for name in sorted({*inputs, *read}) if inputs.get(name) != read.get(name)]
    return ", ".join(fields) or "its converter's version changed"


def _train_reason(run, previous: str, last: dict, root: Path) -> str:
    from knobsweep.spec.schema import TrainJob

    run_yaml = layout.path(layout.TRAIN_DIR, root, key=previous) / layout.RUN_CONFIG
    if not run_yaml.exists():
        return _gone("train", previous)
    before = _read(run_yaml, yaml.safe_load)
    fields = changed_fields(before, TrainJob.model_validate(train_config(run.config)).model_dump(mode="json"))
    if fields:
        return ", ".join(fields)
    if last.get("data") not in (None, run.keys.data):
        return "its data changed"
    return "the weights it starts from changed (base model or train.warm_start_from)"


def _eval_reason(run, stage: str, previous: str, root: Path, train_runs: bool) -> str:
    from knobsweep.spec.schema import EvalJob

    summary_file = layout.path(layout.EVAL_SUMMARY, root, key=previous)
    if not summary_file.exists():
        return _gone(stage.replace("_", " "), previous)
    summary = _read(summary_file, json.loads)
    current = EvalJob.model_validate(evaluation_config(run.config)).model_dump(mode="json")
    config = summary.get("config")
    fields = changed_fields(config if isinstance(config, dict) else {}, current)
    if stage == "eval" and Path(str(summary.get("model"))).name != run.keys.train:
        fields.append("its model is retrained" if train_runs else "its model changed")
    return ", ".join(fields) or ("its data changed" if stage == "base_eval" else "its data or model changed")


def _benchmark_reason(run, stage: str, previous: str, root: Path, train_runs: bool) -> str:
    from knobsweep.spec.experiment import benchmark_config

    summary_file = layout.path(layout.BENCHMARK_SUMMARY, root, key=previous)
    if not summary_file.exists():
        return _gone(LABELS[stage], previous)
    summary = _read(summary_file, json.loads)
    fields = changed_fields(summary.get("config", {}), benchmark_config(run.config))
    if stage == "benchmark" and Path(str(summary.get("model"))).name != run.keys.train:
        fields.append("its model is retrained" if train_runs else "its model changed")
    return ", ".join(fields) or "its tasks' files, lm-eval's version or its model changed"


def _last_from_links(experiment_name: str, run, root: Path) -> dict[str, str]:
    """Before runlinks recorded anything: the keys the run's train and eval links name, where they ran."""
    folder = runlinks.run_folder(experiment_name, run.name, root)
    last = {}
    for stage, marker in (("train", layout.TRAIN_DIR + "/" + layout.RUN_CONFIG), ("eval", layout.EVAL_SUMMARY)):
        link = folder / stage
        if link.is_symlink():
            key = Path(os.readlink(link)).name
            if layout.path(marker, root, key=key).exists():
                last[stage] = key
    return last


def _read(path: Path, parse) -> dict:
    """A file of ours under results/, parsed into a mapping; {} when it is not there. One that cannot be
    read (or holds no mapping) is a WhyError naming it: `plan --why` says so in one line."""
    if not path.exists():
        return {}
    try:
        data = parse(path.read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, ValueError, RecursionError, yaml.YAMLError) as error:
        raise WhyError(f"{path}: cannot be read ({error})") from error
    if not isinstance(data, dict):
        raise WhyError(f"{path}: cannot be read (expected a mapping, got {type(data).__name__})")
    return data

"""Experiments, runs and the stage keys that make results cacheable and shareable.

Each stage's key hashes exactly the configuration that feeds it plus its inputs' keys
(as Nextflow and Bazel do): runs differing only in an eval knob share one training job,
and two experiments with the same baseline share everything.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from knobsweep.io import content_hash, file_sha256
from knobsweep.spec.errors import Problem, SpecError
from knobsweep.spec.expand import expand
from knobsweep.spec.load import load_spec
from knobsweep.spec.validate import closest

TINY = "tiny"
# Bump when a stage's outputs change meaning, so old caches are not reused.
STAGE_VERSIONS = {"data": 1, "tiny": 1, "train": 1, "eval": 1}


@dataclass(frozen=True)
class StageKeys:
    data: str
    model: str | None  # the tiny model's key; None for a hub id or local path
    train: str
    eval: str
    base_eval: str  # the untrained base model under this run's eval config


@dataclass(frozen=True)
class Run:
    name: str
    changed: dict[str, Any]  # dotted knob -> value; {} for the baseline
    seed: int
    config: dict  # the fully resolved run config
    keys: StageKeys

    @property
    def is_baseline(self) -> bool:
        return not self.changed


@dataclass(frozen=True)
class Experiment:
    name: str
    path: Path
    runs: tuple[Run, ...]
    hypotheses: dict[str, str] = field(default_factory=dict)
    mode: str = "ofat"

    @property
    def baseline(self) -> Run:
        return next(run for run in self.runs if run.is_baseline)


@functools.lru_cache(maxsize=None)
def _file_digest(path: str, size: int, mtime_ns: int) -> str:
    return file_sha256(path)


def is_local_path(text: str) -> bool:
    return text.startswith(("/", "./", "../", "~")) or os.path.exists(text)


def data_inputs(data: dict) -> dict[str, str]:
    """What the converted data depends on besides its options: local file contents or a hub id."""
    path = data["path"]
    if not is_local_path(path):
        return {path: f"hub:{path}@{data['hub_config']}"}
    files = {}
    for split in (data["train_split"], data["eval_split"]):
        file = Path(os.path.expanduser(path)) / f"{split}.jsonl"
        if not file.is_file():
            raise FileNotFoundError(f"{file} (a local data.path needs <split>.jsonl for each split)")
        stat = file.stat()
        files[str(file)] = _file_digest(str(file), stat.st_size, stat.st_mtime_ns)
    return files


def stage_keys(config: dict) -> StageKeys:
    data = config["data"]
    data_key = content_hash({"stage": "data", "v": STAGE_VERSIONS["data"], "options": data,
                             "inputs": data_inputs(data)})
    model_name = config["model"]["name"]
    model_key = (content_hash({"stage": "tiny", "v": STAGE_VERSIONS["tiny"], "data": data_key})
                 if model_name == TINY else None)
    base_model = {"tiny": model_key} if model_key else {"name": model_name}
    train_key = content_hash({"stage": "train", "v": STAGE_VERSIONS["train"], "data": data_key,
                              "base": base_model, "config": train_config(config)})
    eval_config = evaluation_config(config)
    eval_key = content_hash({"stage": "eval", "v": STAGE_VERSIONS["eval"], "data": data_key,
                             "model": {"train": train_key}, "config": eval_config})
    base_eval_key = content_hash({"stage": "eval", "v": STAGE_VERSIONS["eval"], "data": data_key,
                                  "model": base_model, "config": eval_config})
    return StageKeys(data_key, model_key, train_key, eval_key, base_eval_key)


def train_config(config: dict) -> dict:
    """The part of a run config that feeds training (and so keys it)."""
    return {k: config[k] for k in ("model", "train", "rollout", "reward", "seed")}


def evaluation_config(config: dict) -> dict:
    return {"eval": config["eval"], "reward": config["reward"]}


def trl_field_problems(runs: list[Run], file: str) -> list[Problem]:
    """`train.trl` passes fields to TRL unchanged, so a misspelt one must fail here, not mid-run."""
    used = {(key, run.name) for run in runs for key in run.config["train"]["trl"]}
    if not used:
        return []
    import dataclasses

    from trl import GRPOConfig  # imported only when used: it takes seconds

    known = sorted(f.name for f in dataclasses.fields(GRPOConfig))
    problems, reported = [], set()
    for key, run_name in sorted(used):
        if key not in known and key not in reported:
            reported.add(key)
            problems.append(Problem(file, f"train.trl.{key}",
                                    f"unknown TRL GRPOConfig field '{key}'{closest(key, known)}", run_name))
    return problems


def load_experiment(path: str | Path) -> Experiment:
    """Load, validate and expand one experiment file; raises SpecError naming every problem."""
    path = Path(path)
    spec, name = load_spec(path)
    runs = []
    problems = []
    for run_name, changed, seed, config in expand(spec, str(path)):
        try:
            keys = stage_keys(config)
        except FileNotFoundError as error:
            problems.append(Problem(str(path), "data.path", f"{config['data']['path']!r}: no such local data: {error}", run_name))
            continue
        runs.append(Run(run_name, changed, seed, config, keys))
    problems += trl_field_problems(runs, str(path))
    if problems:
        raise SpecError(problems)
    return Experiment(name=name, path=path, runs=tuple(runs),
                      hypotheses=dict(spec.hypotheses), mode=spec.mode)

"""Experiments, runs and the stage keys that make results cacheable and shareable.

Each stage's key hashes exactly the configuration that feeds it plus its inputs' keys
(as Nextflow and Bazel do): runs differing only in an eval knob share one training job,
and two experiments with the same baseline share everything.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from knobsweep.data import DataError, get_converter
from knobsweep.io import canonical_json, content_hash
from knobsweep.spec.errors import Problem, SpecError
from knobsweep.spec.expand import expand
from knobsweep.spec.load import load_spec
from knobsweep.spec.validate import closest

TINY = "tiny"
# Bump when a stage's outputs change meaning, so old caches are not reused
# (data converters carry their own CONVERTER_VERSION).
STAGE_VERSIONS = {"tiny": 1, "train": 1, "eval": 1}


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


def data_identity(data: dict) -> dict:
    """What converted data depends on: the converter's version and its inputs' content hashes."""
    converter = get_converter(data["source"])
    return {"converter": converter.CONVERTER_VERSION, "inputs": converter.input_fingerprint(data)}


def stage_keys(config: dict, data_identities: dict[str, dict]) -> StageKeys:
    """The key of every stage of a run; `data_identities` caches input hashing across runs."""
    data = config["data"]
    options = canonical_json(data)
    if options not in data_identities:
        data_identities[options] = data_identity(data)
    data_key = content_hash({"stage": "data", "options": data, **data_identities[options]})
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
    runs, problems, data_identities = [], [], {}
    for run_name, changed, seed, config in expand(spec, str(path)):
        try:
            keys = stage_keys(config, data_identities)
        except DataError as error:
            problems.append(Problem(str(path), "", str(error), run_name))
            continue
        runs.append(Run(run_name, changed, seed, config, keys))
    problems += trl_field_problems(runs, str(path))
    if problems:
        raise SpecError(problems)
    return Experiment(name=name, path=path, runs=tuple(runs),
                      hypotheses=dict(spec.hypotheses), mode=spec.mode)

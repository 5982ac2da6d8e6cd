"""What knobsweep can run, by name: training methods, data sources and evaluators.

The spec (its schema and resolver), the stages and the batch plan read these tables. Nothing here
imports what it names: a method's trainer, a source's converter and an evaluator's class are imported
by the stage that uses them, so the schema stays light to import (Snakemake imports it in every job).

Installed packages add sources and evaluators through entry points (`knobsweep.sources`: name = the
`data.source` value, value = the converter module; `knobsweep.evaluators`: name = the `reward.name`
value, value = "module:Class"), so every stage process sees them.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from dataclasses import dataclass
from types import ModuleType

from knobsweep.errors import FieldError

TINY = "tiny"  # model.name of the offline tiny model (knobsweep.models.tiny), built from the run's data
FORMATS = ("rl", "sft", "kto")  # the row formats of train.parquet (docs/contracts.md)


@dataclass(frozen=True)
class Method:
    """A training method (`train.method`)."""

    data_format: str  # the rows it trains on (data.format)
    trl_config: str  # the name of its TRL config class (trl.<name>), which train.trl passes fields to
    implementation: str  # "module:Class" of its knobsweep.train.method.Method
    trainer: str  # "module:Class" of its trainer (TRL's, with knobsweep's hooks: knobsweep.train.trainer)
    generates: bool  # samples rollout.n completions per prompt, scored by the reward (reads rollout, reward)
    pairs_in_micro_batch: bool  # its loss pairs each sequence with another of the same micro-batch (KTO's KL)

    @property
    def hashed_sections(self) -> tuple[str, ...]:
        """The run config sections its training reads, so its train key hashes them: a method that does not
        generate learns from the rows alone, and rollout / reward knobs only score its eval."""
        return ("model", "train", "rollout", "reward", "seed") if self.generates else ("model", "train", "seed")


_TRAINERS = "knobsweep.train.trainer"
METHODS: dict[str, Method] = {
    "grpo": Method(
        "rl",
        "GRPOConfig",
        "knobsweep.train.grpo:GRPOMethod",
        f"{_TRAINERS}:KnobsweepGRPOTrainer",
        generates=True,
        pairs_in_micro_batch=False,
    ),
    "sft": Method(
        "sft",
        "SFTConfig",
        "knobsweep.train.sft:SFTMethod",
        f"{_TRAINERS}:KnobsweepSFTTrainer",
        generates=False,
        pairs_in_micro_batch=False,
    ),
    "kto": Method(
        "kto",
        "KTOConfig",
        "knobsweep.train.kto:KTOMethod",
        f"{_TRAINERS}:KnobsweepKTOTrainer",
        generates=False,
        pairs_in_micro_batch=True,
    ),
}


@dataclass(frozen=True)
class Source:
    """A data source (`data.source`): the converter module that reads it."""

    converter: str  # the module (knobsweep.data describes what it provides)
    default_reward: str | None = None  # the evaluator its rows are scored with when `reward` is left out


SOURCES: dict[str, Source] = {
    "gsm8k": Source("knobsweep.data.gsm8k", default_reward="gsm8k"),
    "openspiel": Source("knobsweep.data.openspiel", default_reward="openspiel"),
    "swe_synth": Source("knobsweep.data.swe_synth"),
    "swe_bench": Source("knobsweep.data.swe_bench"),
    "jsonl": Source("knobsweep.data.custom"),
    "parquet": Source("knobsweep.data.custom"),
    "hf": Source("knobsweep.data.custom"),
    "reasoning_gym": Source("knobsweep.data.reasoning_gym", default_reward="reasoning_gym"),
}
BUILTIN_SOURCES = frozenset(SOURCES)  # their options are models of knobsweep.spec.sources

# evaluator name -> "module:Class"; the class's keyword arguments are the evaluator's options
EVALUATORS: dict[str, str] = {
    "gsm8k": "knobsweep.rewards.gsm8k:Gsm8kEvaluator",
    "openspiel": "knobsweep.rewards.openspiel:OpenSpielEvaluator",
    "swe_patch": "knobsweep.rewards.swe:SwePatchEvaluator",
    "swe_tests": "knobsweep.rewards.swe:SweTestsEvaluator",
    "match": "knobsweep.rewards.match:MatchEvaluator",
    "reasoning_gym": "knobsweep.rewards.reasoning_gym:ReasoningGymEvaluator",
}

BUILTIN_EVALUATORS = frozenset(EVALUATORS)  # the committed JSON schema names these, whatever is installed

for _entry in importlib.metadata.entry_points(group="knobsweep.sources"):
    SOURCES.setdefault(_entry.name, Source(_entry.value))
for _entry in importlib.metadata.entry_points(group="knobsweep.evaluators"):
    EVALUATORS.setdefault(_entry.name, _entry.value)


def method(name: str) -> Method:
    if name not in METHODS:
        raise FieldError("train.method", f"{name!r} is not a training method; allowed: {', '.join(METHODS)}")
    return METHODS[name]


def converter(source: str) -> ModuleType:
    """The converter module of a registered source, imported."""
    if source not in SOURCES:
        raise FieldError("data.source", f"{source!r} is not a known data source; allowed: {', '.join(sorted(SOURCES))}")
    return importlib.import_module(SOURCES[source].converter)


def load(target: str):
    """The attribute a "module:attribute" target names, imported."""
    module, _, attribute = target.partition(":")
    return getattr(importlib.import_module(module), attribute)

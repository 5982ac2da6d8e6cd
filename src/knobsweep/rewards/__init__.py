"""Evaluators: score one completion against one data row, for training rewards and eval.

An evaluator is a callable object with a `name`; `get_evaluator` builds one from the
run config's `reward` section ({"name": ..., **options}). One module per task; register
it in `knobsweep.registry.EVALUATORS` (imported lazily, so a task's heavy dependencies load
only when used).
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from knobsweep.errors import FieldError, did_you_mean
from knobsweep.registry import EVALUATORS, load


@dataclass
class Evaluation:
    """One completion's result. `score` is in [0, 1]; `valid=False` means "could not be
    judged" (skipped and counted by the caller), not "wrong"."""

    score: float
    reason: str = ""
    valid: bool = True
    metrics: dict[str, float] = field(default_factory=dict)


@runtime_checkable
class Evaluator(Protocol):
    name: str

    def __call__(self, completion: str, row: dict) -> Evaluation: ...


def format_weight_option(value: object, meaning: str, *, up_to_one: bool = False) -> float:
    """An evaluator's `format_weight`: a number in [0, 1) ([0, 1] with up_to_one), else a FieldError saying what it
    pays for (`meaning`)."""
    top = 1.0 if up_to_one else math.nextafter(1.0, 0.0)
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or not 0 <= value <= top
    ):
        allowed = "[0, 1]" if up_to_one else "[0, 1)"
        raise FieldError("reward.format_weight", f"must be a number in {allowed} ({meaning}), got {value!r}")
    return float(value)


def register_evaluator(name: str, target: str) -> None:
    """Add an evaluator to this process's registry: `target` is "module:attribute" of its class.

    The workflow's stages are separate processes: to reach them, declare the evaluator as a
    `knobsweep.evaluators` entry point of an installed package instead."""
    if ":" not in target:
        raise ValueError(f"register_evaluator({name!r}, {target!r}): target must be 'module:attribute'")
    EVALUATORS[name] = target


def evaluator_class(name: str) -> type:
    """The class a registered name stands for, imported. Only registered names: an import path in a spec or
    a stage's --config-json would run whatever code it names."""
    target = EVALUATORS.get(name) if isinstance(name, str) else None
    if target is None:
        raise FieldError(
            "reward.name",
            f"unknown evaluator {name!r}{did_you_mean(name, EVALUATORS)}; valid names: {', '.join(sorted(EVALUATORS))}",
        )
    return load(target)


def evaluator_options(factory: type) -> dict[str, inspect.Parameter]:
    """The options an evaluator class takes: its keyword parameters, with their defaults."""
    return {
        p.name: p
        for p in inspect.signature(factory).parameters.values()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }


def get_evaluator(section: dict) -> Evaluator:
    """Build the evaluator a `reward` section names, e.g. {"name": "gsm8k", "format_weight": 0.2}: a
    registered name only (knobsweep.registry.EVALUATORS, entry points included)."""
    if not isinstance(section, dict) or "name" not in section:
        raise ValueError(f"reward: expected a mapping with a 'name' (one of {sorted(EVALUATORS)}), got {section!r}")
    options = dict(section)
    name = options.pop("name")
    factory = evaluator_class(name)
    allowed = list(evaluator_options(factory))
    for option in options:
        if option not in allowed:
            raise FieldError(
                f"reward.{option}",
                f"unknown option for evaluator {name!r}"
                f"{did_you_mean(option, allowed)}; allowed options: {', '.join(allowed) or 'none'}",
            )
    return factory(**options)

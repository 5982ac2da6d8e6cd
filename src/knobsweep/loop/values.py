"""Suggested knob values that the spec accepts: clipped to the schema's range (read from the pydantic
field, never restated here) and checked by validating the whole candidate run config, so a combination
the spec rejects (kl_beta with loss dapo, say) is never proposed."""

from __future__ import annotations

import copy
import math
from typing import Any

import annotated_types
from pydantic import ValidationError

from knobsweep.dotted import get_dotted, set_dotted
from knobsweep.spec.schema import RunConfig
from knobsweep.spec.validate import field_info, problems_from


def bounds(knob: str) -> tuple[float, float]:
    """The inclusive range the schema allows for a numeric knob (-inf/inf where it sets none; an
    exclusive bound is left to the validation of the candidate)."""
    info = field_info(RunConfig, tuple(knob.split(".")))
    low, high = -math.inf, math.inf
    for item in info.metadata if info is not None else ():
        if isinstance(item, annotated_types.Ge):
            low = float(item.ge)
        elif isinstance(item, annotated_types.Le):
            high = float(item.le)
    return low, high


def tidy(value: float, like: Any) -> float | int:
    """An int for an int knob, else a float without binary noise (1.5e-4, not 0.00015000000000000001)."""
    if isinstance(like, int) and not isinstance(like, bool):
        return int(round(value))
    return float(f"{value:.6g}")


def run_config(config: dict) -> dict:
    """A resolved run's config as RunConfig takes it (without the seed the expansion adds)."""
    return {key: value for key, value in config.items() if key != "seed"}


def rejection(config: dict, knob: str, value: Any, file: str = "") -> str | None:
    """Why the spec rejects `config` with `knob` set to `value` (the first problem), or None."""
    candidate = copy.deepcopy(run_config(config))
    set_dotted(candidate, knob, value)
    try:
        RunConfig.model_validate(candidate)
    except ValidationError as error:
        return str(problems_from(error, RunConfig, file)[0]).removeprefix(": ")
    return None


def allowed_values(config: dict, knob: str, values: list[float]) -> tuple[list, list[str]]:
    """(`values` clipped to the knob's range, without repeats, the current value and those the spec
    rejects; why each rejected one was dropped)."""
    low, high = bounds(knob)
    current = get_dotted(config, knob)
    like = current if current is not None else values[0] if values else 0.0
    kept, dropped = [], []
    for value in values:
        value = tidy(min(max(value, low), high), like)
        if value == current or value in kept:
            continue
        why = rejection(config, knob, value)
        if why:
            dropped.append(why)
        else:
            kept.append(value)
    return kept, dropped

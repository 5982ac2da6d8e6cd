"""Turn pydantic errors into messages that name the dotted path, the value and what is allowed."""

from __future__ import annotations

import difflib
import types
import typing
from typing import Any

import annotated_types
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from knobsweep.errors import Problem


def dotted(loc: tuple) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]
    return []


def is_free_mapping(annotation: Any) -> bool:
    """A `dict[str, Any]` knob (train.trl, rollout.extra_body) accepts any sub-key."""
    origin = typing.get_origin(annotation)
    if origin is dict:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(is_free_mapping(arg) for arg in typing.get_args(annotation))
    return False


def field_info(model: type[BaseModel], loc: tuple) -> FieldInfo | None:
    """The field a location names (None when it is not a known field)."""
    owner: type[BaseModel] | None = model
    info = None
    for part in loc:
        if owner is None or not isinstance(part, str) or part not in owner.model_fields:
            return None
        info = owner.model_fields[part]
        nested = _models_in(info.annotation)
        owner = nested[0] if nested else None
    return info


def model_at(model: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    """The section model a location names (the root for an empty location)."""
    if not loc:
        return model
    info = field_info(model, loc)
    nested = _models_in(info.annotation) if info else []
    return nested[0] if nested else None


def closest(name: str, choices: list[str]) -> str:
    match = difflib.get_close_matches(name, choices, n=1, cutoff=0.5)
    return f"; did you mean '{match[0]}'?" if match else ""


def allowed_range(info: FieldInfo | None) -> str:
    if info is None:
        return ""
    low = high = None
    for item in info.metadata:
        if isinstance(item, annotated_types.Ge):
            low = f"{item.ge} <= value"
        elif isinstance(item, annotated_types.Gt):
            low = f"{item.gt} < value"
        elif isinstance(item, annotated_types.Le):
            high = f"value <= {item.le}"
        elif isinstance(item, annotated_types.Lt):
            high = f"value < {item.lt}"
    if low and high:
        return f"allowed: {low.split(' ')[0]} {low.split(' ')[1]} value {high.split(' ', 1)[1]}"
    return f"allowed: {low or high}" if (low or high) else ""


def explain(model: type[BaseModel], error: dict) -> tuple[str, str]:
    """(dotted path, message) for one pydantic error of `model`."""
    loc = tuple(error["loc"])
    kind = error["type"]
    value = error.get("input")
    path = dotted(loc)
    if kind == "extra_forbidden":
        owner = model_at(model, loc[:-1])
        choices = sorted(owner.model_fields) if owner else []
        return path, f"unknown key '{loc[-1]}'{closest(str(loc[-1]), choices)} (valid keys: {', '.join(choices)})"
    if kind == "missing":
        return path, "is required but missing"
    if kind == "literal_error":
        return path, f"{value!r} is not allowed; allowed: {error['ctx']['expected']}"
    info = field_info(model, loc)
    shown = f"{value!r}" if not isinstance(value, dict) else "a mapping"
    if kind in ("greater_than_equal", "less_than_equal", "greater_than", "less_than"):
        return path, f"{shown} is out of range; {allowed_range(info)}"
    if kind == "value_error":
        message = str(error["msg"]).removeprefix("Value error, ")
        if isinstance(value, dict):
            # A rule across fields names the field it is about first: point the path at it.
            first = message.split(" ", 1)[0]
            owner = model_at(model, loc)
            if owner and first in owner.model_fields:
                return f"{path}.{first}", f"{value.get(first)!r}: {message}"
            return path, message
        return path, f"{shown} {message}"
    bounds = allowed_range(info)
    return path, f"{shown}: {error['msg']}" + (f"; {bounds}" if bounds else "")


def problems_from(error: ValidationError, model: type[BaseModel], file: str, prefix: str = "",
                  run: str | None = None) -> list[Problem]:
    found = []
    for item in error.errors():
        path, message = explain(model, item)
        full = f"{prefix}.{path}" if prefix and path else (prefix or path)
        found.append(Problem(file=file, path=full, message=message, run=run))
    return found

"""Turn pydantic errors into problems that name the dotted path, the value and what is allowed."""

from __future__ import annotations

import functools
import types
import typing
from typing import Any, TypeVar

import annotated_types
from pydantic import BaseModel, Discriminator, Tag, ValidationError, ValidationInfo, field_validator
from pydantic.fields import FieldInfo

from knobsweep.errors import FieldError, Problem, SpecError, did_you_mean

Model = TypeVar("Model", bound=BaseModel)
SEED_MAX = 2**32 - 1  # the largest seed torch, numpy and random all take


def dotted(loc: tuple) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


def joined(path: str, sub: str) -> str:
    """A dotted path below another: joined("train", "sft.max_length"), joined("data", "[2]")."""
    if not path or not sub:
        return path or sub
    return f"{path}{sub}" if sub.startswith("[") else f"{path}.{sub}"


def models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType, typing.Annotated):
        return [m for arg in typing.get_args(annotation) for m in models_in(arg)]
    return []


def _tagged(info: FieldInfo) -> dict[str, type[BaseModel]]:
    """A tagged union field's members by tag (the name pydantic puts in an error's location), else {}."""
    if not any(isinstance(item, Discriminator) for item in info.metadata):
        return {}
    members = {}
    for member in typing.get_args(info.annotation):
        model, *marks = typing.get_args(member)
        members.update({mark.tag: model for mark in marks if isinstance(mark, Tag)})
    return members


def is_free_mapping(annotation: Any) -> bool:
    """A `dict[str, Any]` knob (train.trl, rollout.extra_body) accepts any sub-key."""
    origin = typing.get_origin(annotation)
    if origin is dict:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(is_free_mapping(arg) for arg in typing.get_args(annotation))
    return False


def _walk(model: type[BaseModel], loc: tuple) -> tuple[FieldInfo | None, type[BaseModel] | None, tuple]:
    """(the field a location names, the section model it holds, the location without union tags);
    the field is None when the location names no known field."""
    owner: type[BaseModel] | dict | None = model
    info, path = None, []
    for index, part in enumerate(loc):
        if isinstance(owner, dict):  # a tagged union: the part picks its member
            owner = owner.get(part)
            continue
        path.append(part)
        if owner is None or not isinstance(part, str) or part not in owner.model_fields:
            return None, None, (*path, *loc[index + 1 :])
        info = owner.model_fields[part]
        nested = models_in(info.annotation)
        owner = _tagged(info) or (nested[0] if nested else None)
    return info, owner if not isinstance(owner, dict) else None, tuple(path)


def field_info(model: type[BaseModel], loc: tuple) -> FieldInfo | None:
    """The field a location names (None when it is not a known field)."""
    return _walk(model, loc)[0]


def model_at(model: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    """The section model a location names (the root for an empty location)."""
    return _walk(model, loc)[1] if loc else model


def _scalar_kinds(annotation: Any) -> set[type]:
    """{int}, {float}, {int, float} or {bool} for a number or boolean field (optional or not); empty for
    any other, and for a union that also takes text."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType, typing.Annotated):
        kinds = [_scalar_kinds(arg) if arg is not str else {str} for arg in typing.get_args(annotation)]
        found = set().union(*kinds)
        return set() if str in found else found
    return {annotation} if annotation in (int, float, bool) else set()


def _numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False  # pydantic says it is not a number
    return True


class StrictScalars(BaseModel):
    """Number fields take numbers only: `true` is not 1 and "3" is not 3 (an int is a fine float, and
    8.0 a fine int: they are equal, and share a key); boolean fields take true or false, not "yes".
    Lax pydantic would turn them into numbers, and an arm could silently equal the baseline."""

    @field_validator("*", mode="before")
    @classmethod
    def _strict_scalars(cls, value: Any, info: ValidationInfo) -> Any:
        is_list, kinds = _field_kinds(cls, info.field_name)
        if not kinds:  # most fields: nothing to check (and this runs for every field of every run)
            return value
        if is_list and isinstance(value, list):  # seeds: [0, 1]
            problems = [(f"[{i}]", problem) for i, item in enumerate(value) if (problem := _not_a(kinds, item))]
        else:
            problem = _not_a(kinds, value)
            problems = [("", problem)] if problem else []
        if problems:
            where, problem = problems[0]
            bounds = allowed_range(cls.model_fields[info.field_name]).removeprefix("allowed: ")
            raise FieldError(where, problem + (f", {bounds}" if bounds and "true or false" not in problem else ""))
        return value


@functools.cache
def _field_kinds(model: type[BaseModel], name: str) -> tuple[bool, frozenset[type]]:
    """(whether the field is a list, the scalar kinds of the field or of its items), once per field:
    reading annotations for every field of 10,000 runs doubled the time to load a big sweep."""
    annotation = model.model_fields[name].annotation
    if typing.get_origin(annotation) is list:
        return True, frozenset(_scalar_kinds(typing.get_args(annotation)[0]))
    return False, frozenset(_scalar_kinds(annotation))


def _not_a(kinds: frozenset[type], value: Any) -> str | None:
    """Why `value` is not of a scalar field of `kinds` (as _scalar_kinds gives), or None."""
    if not kinds or value is None:
        return None
    if kinds == {bool}:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return f"{value!r} is {'text' if isinstance(value, str) else 'a number'}; allowed: true or false"
        return None
    wanted = "an integer" if kinds == {int} else "a number"
    if isinstance(value, bool):
        return f"{str(value).lower()} is a boolean; allowed: {wanted}"
    if isinstance(value, str) and _numeric(value):
        return f"{value!r} is text (write the number without quotes); allowed: {wanted}"
    return None


def allowed_range(info: FieldInfo | None) -> str:
    if info is None:
        return ""
    low = high = None
    for item in [*info.metadata, *_item_metadata(info.annotation)]:
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


def _item_metadata(annotation: Any) -> list:
    """The constraints on the items of a list field (`list[Annotated[int, Field(ge=0)]]`)."""
    found = []
    for arg in typing.get_args(annotation) if typing.get_origin(annotation) is list else ():
        for mark in typing.get_args(arg)[1:] if typing.get_origin(arg) is typing.Annotated else ():
            found += mark.metadata if isinstance(mark, FieldInfo) else [mark]
    return found


def explain(model: type[BaseModel], error: dict) -> tuple[str, str]:
    """(dotted path, message) for one pydantic error of `model`."""
    loc = tuple(error["loc"])
    kind = error["type"]
    value = error.get("input")
    path = dotted(_walk(model, loc)[2])
    if kind == "extra_forbidden":
        owner = model_at(model, loc[:-1])
        renamed = getattr(owner, "RENAMED", {}).get(loc[-1])  # an option of the previous release
        if renamed:
            return path, f"renamed to {renamed}, as every source calls it"
        choices = sorted(owner.model_fields) if owner else []
        return path, f"unknown key '{loc[-1]}'{did_you_mean(str(loc[-1]), choices)}; valid keys: {', '.join(choices)}"
    if kind == "missing":
        return path, "is required but missing"
    if kind == "literal_error":
        return path, f"{value!r} is not allowed; allowed: {error['ctx']['expected']}"
    info = field_info(model, loc)
    if info is None and loc and isinstance(loc[-1], int):  # an item of a list field: its item constraints
        info = field_info(model, loc[:-1])
    shown = f"{value!r}" if not isinstance(value, dict) else "a mapping"
    if kind in ("greater_than_equal", "less_than_equal", "greater_than", "less_than"):
        return path, f"{shown} is out of range; {allowed_range(info)}"
    if kind == "value_error":
        cause = (error.get("ctx") or {}).get("error")
        if isinstance(cause, FieldError):  # a rule across fields says which field it is about
            return joined(path, cause.path), cause.message
        message = str(error["msg"]).removeprefix("Value error, ")
        return path, message if isinstance(value, dict) else f"{shown} {message}"
    bounds = allowed_range(info)
    return path, f"{shown}: {error['msg']}" + (f"; {bounds}" if bounds else "")


def problems_from(
    error: ValidationError, model: type[BaseModel], file: str, prefix: str = "", run: str | None = None
) -> list[Problem]:
    found = []
    for item in error.errors():
        path, message = explain(model, item)
        found.append(Problem(file=file, path=joined(prefix, path), message=message, run=run))
    return found


def parse(model: type[Model], value: Any, file: str, prefix: str = "") -> Model:
    """`value` validated as `model` (a stage's --config-json, say), or a SpecError naming every problem:
    the file (or argument), the dotted path under `prefix`, the value and what is allowed."""
    try:
        return model.model_validate(value)
    except ValidationError as error:
        raise SpecError(problems_from(error, model, file, prefix)) from None

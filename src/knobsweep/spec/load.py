"""Read an experiment file with OmegaConf (interpolation, `defaults:` base files) and validate it."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException
from pydantic import ValidationError

from knobsweep.errors import Problem, SpecError, did_you_mean
from knobsweep.layout import RESERVED_NAMES
from knobsweep.spec.schema import ExperimentSpec, RunConfig
from knobsweep.spec.validate import field_info, is_free_mapping, model_at, models_in, problems_from


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML keeps the last of two equal keys silently; a spec must not lose a knob that way."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def read_raw(path: Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The file as a plain dict, with its `defaults:` files merged underneath, interpolations resolved."""
    file = str(path)
    if not path.is_file():
        raise SpecError([Problem(file, "", "no such file")])
    if path.resolve() in _seen:
        raise SpecError([Problem(file, "defaults", "includes itself (a cycle of defaults files)")])
    try:
        loaded = OmegaConf.create(yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader) or {})
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(error, "problem", None) or str(error)
        raise SpecError([Problem(file, "", f"YAML syntax error: {where}{problem}")]) from None
    except OmegaConfBaseException as error:
        raise SpecError([Problem(file, "", f"not a valid config: {error}")]) from None
    if not isinstance(loaded, type(OmegaConf.create({}))):
        raise SpecError([Problem(file, "", "must be a mapping (baseline:, sweep:, ...)")])
    defaults = loaded.pop("defaults", [])
    if isinstance(defaults, str):
        defaults = [defaults]
    bases = []
    for index, base in enumerate(defaults):
        base_path = (
            (path.parent / str(base)).with_suffix(".yaml")
            if not str(base).endswith((".yaml", ".yml"))
            else path.parent / str(base)
        )
        if not base_path.is_file():
            raise SpecError([Problem(file, f"defaults[{index}]", f"{str(base)!r}: no such file {base_path}")])
        bases.append(OmegaConf.create(read_raw(base_path, _seen + (path.resolve(),))))
    try:
        merged = OmegaConf.merge(*bases, loaded)
        return OmegaConf.to_container(merged, resolve=True)  # type: ignore[return-value]
    except OmegaConfBaseException as error:
        key = getattr(error, "full_key", "") or ""
        raise SpecError(
            [Problem(file, str(key), f"cannot resolve: {error.msg if hasattr(error, 'msg') else error}")]
        ) from None


def knob_problem(knob: str, where: str, file: str) -> Problem | None:
    """A dotted knob path that names no field of a run config (sub-keys of free sections are fine:
    `train.trl.*`, and `data.*` / `reward.*`, whose options their converter / evaluator checks)."""
    parts = tuple(knob.split("."))
    free = any(
        (sub := field_info(RunConfig, parts[:i])) is not None
        and (is_free_mapping(sub.annotation) or _open_section(sub.annotation))
        for i in range(1, len(parts))
    )
    if field_info(RunConfig, parts) is not None or free:
        return None
    owner = model_at(RunConfig, parts[:-1])
    prefix = "".join(f"{part}." for part in parts[:-1])
    choices = [prefix + name for name in owner.model_fields] if owner else []
    return Problem(file, where, f"unknown knob '{knob}'{did_you_mean(knob, choices)}")


def _open_section(annotation) -> bool:
    """A section (or one of a union's) that admits any key: `reward`, a third-party source's `data`."""
    return any(model.model_config.get("extra") == "allow" for model in models_in(annotation))


def check_sweep_knobs(spec: ExperimentSpec, file: str) -> list[Problem]:
    problems = []
    for knob, values in spec.sweep.items():
        problem = knob_problem(knob, f"sweep.{knob}", file)
        if problem:
            problems.append(problem)
        elif not values:
            problems.append(Problem(file, f"sweep.{knob}", "needs at least one value to try"))
    for run, overrides in spec.runs.items():
        if run == "baseline" or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.=-]*", run):
            problems.append(Problem(file, f"runs.{run}", "a run name is letters, digits and _.=- (not 'baseline')"))
        if not overrides:
            problems.append(Problem(file, f"runs.{run}", "needs at least one knob that differs from the baseline"))
        problems += [p for knob in overrides if (p := knob_problem(knob, f"runs.{run}.{knob}", file))]
    for knob in spec.hypotheses:
        if knob not in spec.sweep and knob not in spec.runs:
            problems.append(
                Problem(
                    file,
                    f"hypotheses.{knob}",
                    f"'{knob}' is not a swept knob or a named run{did_you_mean(knob, [*spec.sweep, *spec.runs])}",
                )
            )
    return problems


def load_spec(path: str | Path) -> tuple[ExperimentSpec, str]:
    """Validated spec and the experiment's name; raises SpecError listing every problem."""
    path = Path(path)
    file = str(path)
    raw = read_raw(path)
    try:
        spec = ExperimentSpec.model_validate(raw)
    except ValidationError as error:
        raise SpecError(problems_from(error, ExperimentSpec, file, run="baseline")) from None
    name = spec.name or path.stem
    problems = check_sweep_knobs(spec, file)
    if spec.parent is not None and not (path.parent / spec.parent).is_file():
        problems.append(
            Problem(
                file,
                "parent",
                f"{spec.parent!r}: no such file {path.parent / spec.parent} "
                "(parent: the experiment file this one follows up, relative to this file)",
            )
        )
    if name in RESERVED_NAMES:
        problems.append(
            Problem(
                file,
                "name",
                f"'{name}' is reserved for a results folder; choose another (not one of {sorted(RESERVED_NAMES)})",
            )
        )
    if problems:
        raise SpecError(problems)
    return spec, name

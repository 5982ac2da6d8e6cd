"""Read an experiment file with OmegaConf (interpolation, `defaults:` base files) and validate it."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException
from pydantic import ValidationError

from knobsweep.errors import Problem, SpecError, did_you_mean
from knobsweep.layout import RESERVED_NAMES
from knobsweep.spec.expand import flat_overrides
from knobsweep.spec.reading import read_yaml
from knobsweep.spec.schema import EXPERIMENT_NAME, EXPERIMENT_NAME_MAX, ExperimentSpec, RunConfig
from knobsweep.spec.validate import field_info, is_free_mapping, model_at, models_in, problems_from


def read_raw(path: Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The file as a plain dict, with its `defaults:` files merged underneath, interpolations resolved."""
    file = str(path)
    if path.resolve() in _seen:
        raise SpecError([Problem(file, "defaults", "includes itself (a cycle of defaults files)")])
    try:
        loaded = OmegaConf.create(read_yaml(path) or {})
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


MAX_RUNS = 20_000
NOT_SWEPT = (
    "resources do not change results, so they are not hashed (arms would share one training job); "
    "set them in the baseline or profiles/"
)


def run_count(spec: ExperimentSpec) -> int:
    """How many runs the spec expands to, counted without expanding it."""
    arms = math.prod(len(v) for v in spec.sweep.values()) if spec.mode == "grid" else sum(map(len, spec.sweep.values()))
    return (1 + arms * bool(spec.sweep) + len(spec.runs)) * len(spec.seeds)


def check_sweep_knobs(spec: ExperimentSpec, file: str) -> list[Problem]:
    problems = []
    for knob, values in spec.sweep.items():
        problem = knob_problem(knob, f"sweep.{knob}", file)
        if problem:
            problems.append(problem)
        elif knob.split(".")[0] == "resources":
            problems.append(Problem(file, f"sweep.{knob}", NOT_SWEPT))
        elif not values:
            problems.append(Problem(file, f"sweep.{knob}", "needs at least one value to try"))
    for run, overrides in spec.runs.items():
        if run == "baseline" or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.=-]*", run):
            problems.append(Problem(file, f"runs.{run}", "a run name is letters, digits and _.=- (not 'baseline')"))
        if not overrides:
            problems.append(Problem(file, f"runs.{run}", "needs at least one knob that differs from the baseline"))
        for knob in flat_overrides(overrides):
            problem = knob_problem(knob, f"runs.{run}.{knob}", file)
            if problem or knob.split(".")[0] == "resources":
                problems.append(problem or Problem(file, f"runs.{run}.{knob}", NOT_SWEPT))
    repeated = sorted({seed for seed in spec.seeds if spec.seeds.count(seed) > 1})
    if repeated:
        problems.append(
            Problem(file, "seeds", f"{repeated[0]} is listed twice; each seed is one replicate, list it once")
        )
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


PARENT_HINT = "parent: the experiment file this one follows up, relative to this file"


def parent_problems(parent: str | None, path: Path) -> list[Problem]:
    """`parent:` must name another experiment file of the same workflow (the lineage copies values out of
    it): a .yaml / .yml file that validates as an experiment, inside the folder holding the workflow (the
    nearest one above `path` with a Snakefile; without one, anywhere)."""
    if parent is None:
        return []
    target = path.parent / parent
    where = f"{parent!r} ({target})"
    if not target.is_file():
        return [Problem(str(path), "parent", f"{parent!r}: no such file {target} ({PARENT_HINT})")]
    if target.suffix not in (".yaml", ".yml"):
        return [Problem(str(path), "parent", f"{where} is not an experiment file (.yaml or .yml; {PARENT_HINT})")]
    home = next((folder for folder in path.resolve().parents if (folder / "Snakefile").is_file()), None)
    if home is not None and not target.resolve().is_relative_to(home):
        return [Problem(str(path), "parent", f"{where} is outside this workflow's folder {home} ({PARENT_HINT})")]
    if target.resolve() == path.resolve():
        return [Problem(str(path), "parent", f"{where} is this file itself ({PARENT_HINT})")]
    try:
        raw = read_raw(target)
        ExperimentSpec.model_validate(raw)
    except SpecError as error:
        return [Problem(str(path), "parent", f"{where} is not a valid experiment file: {error.problems[0]}")]
    except ValidationError as error:
        first = problems_from(error, ExperimentSpec, str(target))[0]
        return [Problem(str(path), "parent", f"{where} is not an experiment file: {first}")]
    return []


def load_spec(path: str | Path, stem: str | None = None) -> tuple[ExperimentSpec, str]:
    """Validated spec and the experiment's name; raises SpecError listing every problem."""
    path = Path(path)
    file = str(path)
    raw = read_raw(path)
    try:
        spec = ExperimentSpec.model_validate(raw)
    except ValidationError as error:
        raise SpecError(problems_from(error, ExperimentSpec, file, run="baseline")) from None
    name = spec.name or stem or path.stem
    problems = check_sweep_knobs(spec, file)
    if spec.name is None and not (re.fullmatch(EXPERIMENT_NAME, name) and len(name) <= EXPERIMENT_NAME_MAX):
        problems.append(
            Problem(
                file,
                "name",
                f"the file's stem {name!r} is not an experiment name (letters, digits and _ . -, starting with a "
                f"letter or digit, at most {EXPERIMENT_NAME_MAX} characters: a results/ folder); rename the file "
                "or set name:",
            )
        )
    problems += parent_problems(spec.parent, path)
    runs = run_count(spec)
    if runs > MAX_RUNS:
        sizes = (" x " if spec.mode == "grid" else " + ").join(str(len(v)) for v in spec.sweep.values())
        problems.append(
            Problem(
                file,
                "sweep",
                f"expands to {runs:,} runs ({spec.mode}: {sizes}, {len(spec.runs)} named runs, "
                f"{len(spec.seeds)} seeds); at most {MAX_RUNS:,} runs per experiment",
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

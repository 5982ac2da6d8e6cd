"""Expand a spec into runs: the baseline plus one run per knob value (or the grid), per seed."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from typing import Any

from pydantic import ValidationError

from knobsweep.dotted import config_diff, get_dotted, set_dotted
from knobsweep.errors import Problem, SpecError
from knobsweep.io import canonical_json, normalised
from knobsweep.spec.resolve import resolve_sections
from knobsweep.spec.schema import ExperimentSpec, RunConfig
from knobsweep.spec.validate import field_info, is_free_mapping, model_at, problems_from


def format_value(value: Any) -> str:
    """Short, readable knob values for run names: 2e-4, 0.7, dapo, 16."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e5):
            mantissa, exponent = f"{value:.6e}".split("e")
            return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
        return f"{value:g}"
    if isinstance(value, (list, dict)):
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    return "null" if value is None else str(value)


def knob_labels(knobs: list[str]) -> dict[str, str]:
    """The last path component names a knob, unless two swept knobs share it."""
    leaves = [knob.rsplit(".", 1)[-1] for knob in knobs]
    return {knob: leaf if leaves.count(leaf) == 1 else knob for knob, leaf in zip(knobs, leaves)}


# a section whose mapping names another member (data source, evaluator) is replaced, not merged:
# the options of one converter or evaluator mean nothing to another
SELECTORS = {"data": "source", "reward": "name"}


def flat_overrides(overrides: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A named run's knobs as dotted leaves: `{model: {lora: {rank: 16}}}` is `{model.lora.rank: 16}`.
    Free mappings (train.trl), open sections (reward) and the data source stay whole."""
    flat: dict[str, Any] = {}
    for key, value in overrides.items():
        knob = f"{prefix}{key}"
        parts = tuple(knob.split("."))
        section = model_at(RunConfig, parts)
        if isinstance(value, dict) and value and section is not None and section.model_config.get("extra") == "forbid":
            flat.update(flat_overrides(value, f"{knob}."))
        else:
            flat[knob] = value
    return flat


def _merges(raw: dict, knob: str, value: Any) -> bool:
    """Whether `value` changes only what it names (see SELECTORS)."""
    selector = SELECTORS.get(knob)
    return not (
        selector
        and isinstance(value, dict)
        and selector in value
        and value[selector] != get_dotted(raw, f"{knob}.{selector}")
    )


def _changes(spec: ExperimentSpec) -> Iterator[tuple[str | None, dict[str, Any], str]]:
    """(name for a named run, else None; its knob settings relative to the baseline; where the file
    asks for it), the baseline first."""
    yield None, {}, "baseline"
    if spec.mode == "grid":
        knobs = list(spec.sweep)
        for combo in itertools.product(*(spec.sweep[k] for k in knobs)):
            yield None, dict(zip(knobs, combo)), "sweep"
    else:
        for knob, values in spec.sweep.items():
            for index, value in enumerate(values):
                yield None, {knob: value}, f"sweep.{knob}[{index}]"
    for name, overrides in spec.runs.items():
        yield name, flat_overrides(overrides), f"runs.{name}"


def _free(knob: str) -> bool:
    info = field_info(RunConfig, tuple(knob.split(".")))
    return info is not None and is_free_mapping(info.annotation)


def _really_changed(
    written: dict[str, Any], config: dict, base: dict, labels: dict[str, str]
) -> tuple[dict[str, Any], dict[str, str]]:
    """The knobs that really differ from the baseline (a grid cell may repeat baseline values), with
    their labels; a mapping value counts by the leaves it changes (`model.lora: {rank: 16}` changes
    model.lora.rank, labelled lora.rank); a free mapping (rollout.extra_body) and a section replaced
    by another source or evaluator (SELECTORS) count whole."""
    changed: dict[str, Any] = {}
    leaf_labels: dict[str, str] = {}
    for knob, value in written.items():
        now, before = get_dotted(config, knob), get_dotted(base, knob)
        label = labels.get(knob, knob)
        mapping = isinstance(value, dict) and isinstance(now, dict) and isinstance(before, dict)
        if mapping and not _free(knob) and _merges(base, knob, value):
            for leaf, (_, new) in config_diff(before, now, f"{knob}.").items():
                changed[leaf] = new
                leaf_labels[leaf] = label + leaf[len(knob) :]
        elif canonical_json(now, is_normalised=True) != canonical_json(before, is_normalised=True):
            changed[knob], leaf_labels[knob] = now, label
    return changed, leaf_labels


def _name_part(label: str, knob: str, value: Any, switched: dict[str, dict]) -> str:
    """`label=value` for a run name. A section switched to another data source or evaluator (SELECTORS) is
    named by what it switched to, `data.source=jsonl`, not by the whole resolved section; a second arm
    switching to the same one adds the options that tell it from the first."""
    selector = SELECTORS.get(knob)
    if not (selector and isinstance(value, dict) and selector in value):
        return f"{label}={format_value(value)}"
    short = f"{label}.{selector}={format_value(value[selector])}"
    first = switched.setdefault(short, value)
    if first == value:
        return short
    return ",".join(
        [short, *(f"{label}.{leaf}={format_value(new)}" for leaf, (_, new) in config_diff(first, value).items())]
    )


def _repeated_values(spec: ExperimentSpec, file: str, base_json: str) -> list[Problem]:
    """A sweep value that gives the same run as an earlier value of its knob (0.0001 and 1.0e-4,
    `{rank: 16}` and 16 on model.lora.rank's section, ...): one arm silently vanishing is refused."""
    problems = []
    for knob, values in spec.sweep.items():
        first: dict[str, int] = {}
        for index, value in enumerate(values):
            raw = json.loads(base_json)
            set_dotted(raw, knob, value, merge=_merges(raw, knob, value))
            try:
                text = canonical_json(normalised(RunConfig.model_validate(raw).model_dump(mode="json")))
            except ValidationError:
                continue  # the expansion names the bad value
            if text not in first:
                first[text] = index
                continue
            earlier = first[text]
            problems.append(
                Problem(
                    file,
                    f"sweep.{knob}[{index}]",
                    f"{format_value(value)} gives the same run as sweep.{knob}[{earlier}] "
                    f"({format_value(values[earlier])}); list each value once",
                )
            )
    return problems


def expand(
    spec: ExperimentSpec, file: str, warnings: list[Problem] | None = None
) -> list[tuple[str, dict[str, Any], int, dict]]:
    """(name, changed knobs, seed, resolved config) for every run, validated; configs are
    `normalised` (canonical form), so their keys can skip that walk. A sweep value that equals the
    baseline (or an earlier arm) once defaults are filled adds no run; `warnings` gets a Problem
    saying so, as it does for a named run equal to an earlier one (it shares that run's stages)."""
    base_config = spec.baseline.model_dump(mode="json")
    base_json = json.dumps(base_config)
    # The resolved baseline (always expanded first): what a run's changes are measured against.
    base_text, base_resolved = "", normalised(base_config)
    cache: dict = {}
    labels = knob_labels(list(spec.sweep))
    problems: list[Problem] = []
    variants: list[tuple[str, dict[str, Any], dict]] = []
    seen: dict[str, str] = {}  # resolved config -> the first run with it
    switched: dict[str, dict] = {}  # "data.source=jsonl" -> the first arm's section of that source (_name_part)
    arm_names: set[str] = set()
    problems += _repeated_values(spec, file, base_json)
    for given_name, changed, origin in _changes(spec):
        raw = json.loads(base_json)  # a deep copy, several times faster than copy.deepcopy
        for knob, value in changed.items():
            set_dotted(raw, knob, value, merge=_merges(raw, knob, value))
        name = given_name or ",".join(_name_part(labels[k], k, v, {}) for k, v in changed.items()) or "baseline"
        try:
            config = RunConfig.model_validate(raw).model_dump(mode="json", exclude_none=False)
        except ValidationError as error:
            for problem in problems_from(error, RunConfig, file, run=name):
                if problem.path in changed:  # point at the sweep value (or named run), not the baseline
                    where = (
                        f"runs.{given_name}.{problem.path}"
                        if given_name
                        else f"sweep.{problem.path}[{spec.sweep[problem.path].index(changed[problem.path])}]"
                    )
                    problem = Problem(file, where, problem.message, name)
                problems.append(problem)
            continue
        resolved, found = resolve_sections(config, file, name, cache)
        problems += found
        if resolved is None:
            continue
        config = normalised(resolved)  # canonical once: every key below hashes it without a second walk
        text = canonical_json(config, is_normalised=True)
        # A grid crossing the baseline's own values has a cell equal to it: that is no mistake.
        grid_baseline = origin == "sweep" and seen.get(text) == "baseline"
        if changed and text in seen and not grid_baseline and warnings is not None:
            warnings.append(_same_as(file, origin, name, seen[text], dropped=given_name is None))
        if given_name is None and (changed and text == base_text or text in seen):
            continue  # a value equal to the baseline's (or repeated) adds no run
        if not changed and given_name is None:
            base_text, base_resolved = text, config
        changed, leaf_labels = _really_changed(changed, config, base_resolved, labels)
        if given_name is None:
            name = ",".join(_name_part(leaf_labels[k], k, v, switched) for k, v in changed.items()) or "baseline"
        seen.setdefault(text, name)
        variants.append((name, changed, config))
        if given_name is None:
            arm_names.add(name)
    problems += [
        Problem(file, f"runs.{name}", f"'{name}' is also the name of a sweep arm; give the named run another name")
        for name in spec.runs
        if name in arm_names
    ]
    if problems:
        raise SpecError(problems)
    runs = []
    for name, changed, config in variants:
        for seed in spec.seeds:
            run_name = name if len(spec.seeds) == 1 else f"{name},seed={seed}"
            runs.append((run_name, changed, seed, {**config, "seed": seed}))
    return runs


def _same_as(file: str, where: str, name: str, twin: str, dropped: bool) -> Problem:
    """A run whose resolved config is `twin`'s: the same keys, so the same stages."""
    twin_text = "the baseline" if twin == "baseline" else f"arm {twin}"
    if dropped:
        return Problem(file, where, f"arm {name} equals {twin_text} after defaults: same stages, nothing new to run")
    return Problem(file, where, f"run {name} equals {twin_text} after defaults: it shares its stages")

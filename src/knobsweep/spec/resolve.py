"""Resolve what the schema leaves to the run: `data.format` (from train.method), a third-party source's
options (its converter's `resolve_options`) and `reward` (its evaluator's signature).

A built-in source's options are complete once the schema has read them (knobsweep.spec.sources).
Resolving fills every default in, so two specs that spell a default out or leave it implicit hash alike.
"""

from __future__ import annotations

from typing import Any

from knobsweep.errors import FieldError, Problem
from knobsweep.io import canonical_json
from knobsweep.registry import BUILTIN_SOURCES, METHODS, SOURCES, converter
from knobsweep.spec.sources import BUILTIN_OPTIONS


def resolve_sections(config: dict, file: str, run: str, cache: dict) -> tuple[dict | None, list[Problem]]:
    """(config with `data` and `reward` resolved, []) or (None, the problems); `cache` spans runs."""
    problems: list[Problem] = []
    data = dict(config["data"])
    method = config["train"]["method"]
    reads = METHODS[method].data_format
    if data.get("format") is None:
        data["format"] = reads
    elif data["format"] != reads:
        problems.append(
            Problem(
                file,
                "data.format",
                f"{data['format']!r} rows cannot train train.method "
                f"{method!r}, which reads {reads!r} rows "
                "(leave data.format unset to follow the method)",
                run,
            )
        )
    try:
        data = _cached(cache, "data", data, _resolve_data)
    except FieldError as error:
        problems.append(Problem(file, error.path, error.message, run))
    except ValueError as error:  # a third-party converter's own error: its message says where
        problems.append(Problem(file, "data", str(error), run))
    reward = config.get("reward")
    if reward is None:
        source = config["data"]["source"]
        default = SOURCES[source].default_reward
        if default is None:
            problems.append(
                Problem(
                    file,
                    "reward",
                    f"is required for data.source '{source}' (it has no default evaluator); e.g. reward: {{name: ...}}",
                    run,
                )
            )
        reward = {"name": default} if default else None
    if reward is not None:
        try:
            reward = _cached(cache, "reward", reward, _resolve_reward)
        except FieldError as error:
            problems.append(Problem(file, error.path, error.message, run))
        except ValueError as error:  # a third-party evaluator's own error: its message says where
            problems.append(Problem(file, "reward", str(error), run))
    if reward is not None and not problems:
        problems += _timeout_problems(config, reward, file, run)
    if problems:
        return None, problems
    return {**config, "data": data, "reward": reward}, []


def _timeout_problems(config: dict, reward: dict, file: str, run: str) -> list[Problem]:
    """An evaluator allowed longer per sample (its `timeout_s`) than GRPO waits for one
    (train.reward_timeout_s) would have most samples time out and be dropped as invalid."""
    own, waits = reward.get("timeout_s"), config["train"].get("reward_timeout_s")
    generates = METHODS[config["train"]["method"]].generates  # only a method that samples calls it while training
    if not generates or not isinstance(own, (int, float)) or waits is None or waits >= own:
        return []
    return [
        Problem(
            file,
            "train.reward_timeout_s",
            f"{waits:g} s is shorter than the evaluator's own "
            f"reward.timeout_s ({own:g} s): samples would time out and "
            f"be dropped as invalid; raise it to at least {own:g}",
            run,
        )
    ]


def _cached(cache: dict, kind: str, section: dict, resolve) -> Any:
    key = (kind, canonical_json(section))
    if key not in cache:
        try:
            cache[key] = (resolve(section), None)
        except ValueError as error:
            cache[key] = (None, error)
    value, error = cache[key]
    if error is not None:
        raise error
    return value


def _resolve_data(section: dict) -> dict:
    """The section with its format checked against what the source produces; a third-party source's
    options resolved by its converter (a built-in source's model has filled them in already)."""
    source = section["source"]
    if source in BUILTIN_SOURCES:
        formats, resolved = BUILTIN_OPTIONS[source].formats(), section
    else:
        module = converter(source)
        formats = getattr(module, "FORMATS", ("rl",))
        resolved = {"format": section["format"], **module.resolve_options(section)}
    if resolved["format"] not in formats:
        raise FieldError(
            "data.format",
            f"source {source!r} cannot produce {resolved['format']!r} rows; it produces: {', '.join(formats)}",
        )
    return resolved


def _resolve_reward(section: dict) -> dict:
    """The evaluator's options with its defaults filled in; building it once checks them (and, for
    evaluators that need a service such as Docker, that it is there)."""
    from knobsweep.rewards import evaluator_class, evaluator_options, get_evaluator

    get_evaluator(section)
    defaults = {
        name: p.default
        for name, p in evaluator_options(evaluator_class(section["name"])).items()
        if p.default is not p.empty and _plain(p.default)
    }
    return {"name": section["name"], **defaults, **{k: v for k, v in section.items() if k != "name"}}


def _plain(value: Any) -> bool:
    """A default that belongs in a hashed config (JSON data, not an object)."""
    try:
        canonical_json(value)
    except TypeError:
        return False
    return True

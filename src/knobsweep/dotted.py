"""Dotted knob paths ("train.sft.max_length") over nested config dicts, and the difference of two configs."""

from __future__ import annotations

import copy
from typing import Any


def get_dotted(config: Any, knob: str) -> Any:
    """The value at `knob`, or None where the path does not exist."""
    node = config
    for part in knob.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def set_dotted(config: dict, knob: str, value: Any, merge: bool = True) -> None:
    """Set a copy of `value` at `knob`, making the sections on the way. A mapping written over a
    mapping changes only the keys it names (`merge`), so `model.lora: {rank: 16}` keeps the other
    LoRA settings; `merge=False` replaces the whole mapping."""
    *parents, leaf = knob.split(".")
    node = config
    for part in parents:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    if merge and isinstance(value, dict) and isinstance(node.get(leaf), dict):
        _merge(node[leaf], value)
    else:
        node[leaf] = copy.deepcopy(value)


def _merge(target: dict, value: dict) -> None:
    for key, item in value.items():
        if isinstance(item, dict) and isinstance(target.get(key), dict):
            _merge(target[key], item)
        else:
            target[key] = copy.deepcopy(item)


def config_diff(reference: Any, config: Any, prefix: str = "") -> dict[str, tuple[Any, Any]]:
    """{dotted knob: (reference value, config value)} for every leaf that differs (lists are leaves).
    `resources` is never a difference: where a job runs does not change what it computes."""
    if isinstance(reference, dict) and isinstance(config, dict):
        changes: dict[str, tuple[Any, Any]] = {}
        for key in sorted(set(reference) | set(config)):
            if not prefix and key == "resources":
                continue
            changes.update(config_diff(reference.get(key), config.get(key), f"{prefix}{key}."))
        return changes
    return {} if reference == config else {prefix.rstrip("."): (reference, config)}

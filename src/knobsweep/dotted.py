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


def set_dotted(config: dict, knob: str, value: Any) -> None:
    """Set a copy of `value` at `knob`, making (or replacing) the sections on the way."""
    *parents, leaf = knob.split(".")
    node = config
    for part in parents:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[leaf] = copy.deepcopy(value)


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

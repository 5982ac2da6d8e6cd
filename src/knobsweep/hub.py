"""Telling a Hugging Face hub id ("openai/gsm8k") from a local path that is missing ("data/mine")."""

from __future__ import annotations

import re
from pathlib import Path

# "name" or "owner/name", as on the Hugging Face hub.
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")
# Data files by suffix: a path ending in one names a file, not a dataset.
JSON_SUFFIXES = (".json", ".traj")
JSONL_SUFFIXES = (".jsonl", ".ndjson")
PARQUET_SUFFIXES = (".parquet",)
DATA_SUFFIXES = JSON_SUFFIXES + JSONL_SUFFIXES + PARQUET_SUFFIXES


def looks_like_hub_id(path: str) -> bool:
    """True for "name" or "owner/name" that is not an existing or obviously local path."""
    local = Path(path).expanduser()
    return (
        _HUB_ID.fullmatch(path) is not None
        and ".." not in path
        and not local.exists()
        and Path(path).suffix.lower() not in DATA_SUFFIXES
        # "data/x" next to an existing data/ folder is a missing local path, not a hub id.
        and (local.parent == Path(".") or not local.parent.is_dir())
    )

"""Data conversion: one converter module per `data.source`, all writing the same layout.

A built-in converter module (knobsweep.registry.SOURCES) reads its source's options model
(knobsweep.spec.sources: defaults, ranges and rules) and provides
    CONVERTER_VERSION: str                       bump when its output for the same input changes
    convert(options) -> ConversionResult         the rows
    input_fingerprint(options) -> dict[str, str] what it reads -> sha256 (or hub revision)
and may provide
    split_files(options) -> {"train": [...], "eval": [...]} | None   its local input files per split, so
                                                 the spec checks sizes against their rows before any job
The version and the fingerprint belong in the data stage's cache key, so editing a converter
or an input file re-converts only that data. Row schemas per format: docs/contracts.md;
eval.parquet always holds rl rows (the eval stage generates from `prompt` and scores them).
A third-party converter (the `knobsweep.sources` entry point) also provides FORMATS and
resolve_options(section: dict) -> dict, and reads the dict that returns (docs/datasets.md).
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from knobsweep import layout
from knobsweep.errors import DataError  # noqa: F401 - third-party converters import it from here
from knobsweep.io import atomic_dir
from knobsweep.registry import converter
from knobsweep.spec.sources import SourceOptions, read_options

if TYPE_CHECKING:
    import pyarrow as pa

# pyarrow is imported where rows are converted and written, not at import: the spec imports the
# converters to key their inputs (input_fingerprint) in every Snakemake process, which writes no rows.


@functools.cache
def messages_type() -> pa.DataType:
    """The Arrow type of a column of messages: a list of {role, content}."""
    import pyarrow as pa

    return pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))


def __getattr__(name: str):
    if name == "MESSAGES":  # the name third-party converters use (docs/datasets.md), made on first use
        return messages_type()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def shuffle_key(seed: int, row_id: str, salt: str = "") -> bytes:
    """A row's place in a seeded order. A hash order, not random.shuffle: it cannot change with
    the Python or numpy version, which the cache key does not record."""
    return hashlib.sha256(f"{salt}{seed}:{row_id}".encode()).digest()


@dataclass
class ConversionResult:
    train: list[dict]
    eval: list[dict]
    schema: pa.Schema
    options: dict  # the options with defaults filled in, as recorded in the manifest
    inputs: dict[str, str]  # input_fingerprint of what was actually read
    dropped: list[dict]  # {"split", "line" (1-based), "reason"} per unusable input row
    # eval.parquet's schema when it differs from train's (sft / kto train rows, rl eval rows).
    eval_schema: pa.Schema | None = None
    # Counts worth a look (e.g. KTO labels {"label_true": n, "label_false": m}): manifest["stats"].
    stats: dict = field(default_factory=dict)


def _source(options: SourceOptions | dict) -> str:
    return options.source if isinstance(options, SourceOptions) else options["source"]


SHOWN_PAIRS = 100  # prompt_overlap lists this many (eval, train) pairs; the count is exact


def prompt_overlap(train: list[dict], evaluation: list[dict]) -> dict:
    """Eval rows whose prompt is also a train row's: {"eval_rows": how many, "of": all eval rows,
    "pairs": [{"eval": row_id, "train": row_id}, ...] (the first SHOWN_PAIRS)}. Such an eval row scores
    a prompt the model trained on, whatever source or converter made the rows."""
    seen: dict[str, str] = {}
    for row in train:
        key = _prompt_text(row)
        if key is not None:
            seen.setdefault(key, row.get("row_id"))
    pairs = [
        {"eval": row.get("row_id"), "train": seen[key]}
        for row in evaluation
        if (key := _prompt_text(row)) is not None and key in seen
    ]
    return {"eval_rows": len(pairs), "of": len(evaluation), "pairs": pairs[:SHOWN_PAIRS]}


def _prompt_text(row: dict) -> str | None:
    """A row's prompt as comparable text (each message's content stripped); a `messages` row's
    prompt is its conversation before the last assistant turn, as its eval row's would be."""
    prompt = row.get("prompt")
    if prompt is None and isinstance(row.get("messages"), list):
        turns = row["messages"]
        last = max((i for i, m in enumerate(turns) if isinstance(m, dict) and m.get("role") == "assistant"), default=0)
        prompt = turns[:last] or None
    if isinstance(prompt, list):
        prompt = [[m.get("role"), str(m.get("content", "")).strip()] if isinstance(m, dict) else m for m in prompt]
    return None if prompt is None else json.dumps(prompt, sort_keys=True, default=str)


def input_fingerprint(section: dict) -> dict[str, str]:
    """What the `data` section reads, each with its content hash: part of the cache key."""
    options = read_options(section)
    return converter(_source(options)).input_fingerprint(options)


def convert_to_dir(section: dict, out: str | Path) -> dict:
    """Convert the `data` section into `out`/{train,eval}.parquet + manifest.json.

    All or nothing: `out` appears only once every file is written. Returns the manifest.
    """
    options = read_options(section)
    source = _source(options)
    module = converter(source)
    result = module.convert(options)
    manifest = {
        "source": source,
        "options": result.options,
        "converter_version": module.CONVERTER_VERSION,
        "inputs": result.inputs,
        "rows": {"train": len(result.train), "eval": len(result.eval)},
        "dropped": result.dropped,
        "prompt_overlap": prompt_overlap(result.train, result.eval),
    }
    if result.stats:
        manifest["stats"] = result.stats
    import pyarrow as pa
    import pyarrow.parquet as pq

    with atomic_dir(out) as tmp:
        for name, rows, schema in (
            (layout.TRAIN_ROWS, result.train, result.schema),
            (layout.EVAL_ROWS, result.eval, result.eval_schema or result.schema),
        ):
            pq.write_table(pa.Table.from_pylist(rows, schema=schema), tmp / name)
        # A plain write: the directory rename is what makes the output appear atomically.
        (tmp / layout.MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest

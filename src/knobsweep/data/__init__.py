"""Data conversion: one converter module per `data.source`, all writing the same layout.

A converter module (registered in knobsweep.registry.SOURCES) provides
    CONVERTER_VERSION: str                       bump when its output for the same input changes
    FORMATS: tuple[str, ...]                     the row formats it can produce ("rl", "sft", "kto")
    resolve_options(options) -> dict             defaults filled in; bad options raise DataError
    convert(options) -> ConversionResult         options = the run config's `data` section
    input_fingerprint(options) -> dict[str, str] what it reads -> sha256 (or hub revision)
The version and the fingerprint belong in the data stage's cache key, so editing a converter
or an input file re-converts only that data. Row schemas per format: docs/contracts.md;
eval.parquet always holds rl rows (the eval stage generates from `prompt` and scores them).
"""

from __future__ import annotations

import difflib
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from knobsweep.errors import DataError
from knobsweep.io import atomic_dir
from knobsweep.registry import FORMATS, converter

MESSAGE = pa.struct([("role", pa.string()), ("content", pa.string())])
MESSAGES = pa.list_(MESSAGE)


def check_format(source: str, fmt, formats: tuple[str, ...]) -> None:
    """Raise DataError unless `fmt` is a format this source can produce."""
    if fmt not in FORMATS:
        raise DataError(f"data.format: unknown format {fmt!r}; valid formats: {', '.join(FORMATS)}")
    if fmt not in formats:
        raise DataError(
            f"data.format: source {source!r} cannot produce {fmt!r} rows; it produces: {', '.join(formats)}"
        )


def with_defaults(options: dict, defaults: dict, source: str, formats: tuple[str, ...]) -> dict:
    """`options` over `defaults`, for source `source`: an unknown option (named with the closest
    known one), another source, or a format it cannot produce raises DataError."""
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        close = difflib.get_close_matches(unknown[0], list(defaults), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise DataError(f"data.{unknown[0]}: unknown option for source {source!r}{hint}; "
                        f"allowed options: {', '.join(defaults)}")
    resolved = {**defaults, **options}
    if resolved["source"] != source:
        raise DataError(f"data.source: expected {source!r}, got {resolved['source']!r}")
    check_format(source, resolved["format"], formats)
    return resolved


def check_sizes_and_seed(resolved: dict) -> None:
    """`train_size` / `eval_size` (positive or null = all rows) and `seed` (an integer)."""
    for key in ("train_size", "eval_size"):
        size = resolved[key]
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
            raise DataError(f"data.{key}: must be a positive integer or null (all rows), got {size!r}")
    if isinstance(resolved["seed"], bool) or not isinstance(resolved["seed"], int):
        raise DataError(f"data.seed: must be an integer, got {resolved['seed']!r}")


def jsonl_records(data: bytes) -> Iterator[tuple[int, dict | None, str | None]]:
    """(0-based line index, record, None) per line of a JSON-lines file, or (index, None, reason)
    for a line that cannot be read; blank lines (e.g. a trailing newline) are layout, not rows."""
    for index, line in enumerate(data.splitlines()):
        if not line.strip():
            continue
        try:
            yield index, json.loads(line), None
        except ValueError as error:  # JSONDecodeError and UnicodeDecodeError
            yield index, None, f"not a JSON line: {error}"


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


def _source(options: dict) -> str:
    if not isinstance(options, dict) or "source" not in options:
        raise DataError(f"data: expected a mapping with a 'source', got {options!r}")
    return options["source"]


def input_fingerprint(options: dict) -> dict[str, str]:
    """What the `data` section reads, each with its content hash: part of the cache key."""
    return converter(_source(options)).input_fingerprint(options)


def convert_to_dir(options: dict, out: str | Path) -> dict:
    """Convert the `data` section into `out`/{train,eval}.parquet + manifest.json.

    All or nothing: `out` appears only once every file is written. Returns the manifest.
    """
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
    }
    if result.stats:
        manifest["stats"] = result.stats
    schemas = {"train": result.schema, "eval": result.eval_schema or result.schema}
    with atomic_dir(out) as tmp:
        for name, rows in (("train", result.train), ("eval", result.eval)):
            pq.write_table(pa.Table.from_pylist(rows, schema=schemas[name]), tmp / f"{name}.parquet")
        # A plain write: the directory rename is what makes the output appear atomically.
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest

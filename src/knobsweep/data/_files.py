"""Reading the inputs of the SWE converters: local JSON / JSONL / parquet files or a hub dataset.

Every record comes with where it was read (`Record.origin`, e.g. "preds.jsonl:3") so a
dropped row can be named in the manifest. `line` is 1-based: the line of a JSONL file, the
item of a JSON list, the row of a parquet file or hub split, and 1 for a file that holds a
single JSON object (a SWE-agent `.traj`, say). A JSON document keeps its shape
(`Record.document` is True for a whole-file object or list) so a converter can tell one
trajectory file from a list of records.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from knobsweep.errors import DataError, FieldError
from knobsweep.hub import DATA_SUFFIXES, JSONL_SUFFIXES, PARQUET_SUFFIXES
from knobsweep.io import NESTED_TOO_DEEP, file_sha256, json_lines, read_regular, require_utf8, special_kind


@dataclass
class Record:
    file: str  # the input file (as given) or "hub:<id>"
    line: int  # 1-based position in that input
    value: Any  # the parsed JSON value / row dict; None when `error` says why it could not be read
    error: str | None = None
    document: bool = False  # the value is a whole JSON file (not one line / item / row)

    @property
    def origin(self) -> str:
        return f"{self.file}:{self.line}"


def expand_paths(paths: list[str], option: str) -> list[Path]:
    """Local files named by `paths` (a directory stands for its data files, sorted by name)."""
    files: list[Path] = []
    for path in paths:
        local = Path(path).expanduser()
        if local.is_dir():
            found = sorted(p for p in local.iterdir() if p.is_file() and p.suffix.lower() in DATA_SUFFIXES)
            if not found:
                raise FieldError(
                    f"data.{option}",
                    f"{path!r}: the directory has no data files (looked for {', '.join(DATA_SUFFIXES)})",
                )
            files.extend(found)
        elif local.is_file():
            if local.suffix.lower() not in DATA_SUFFIXES:
                raise FieldError(
                    f"data.{option}",
                    f"{path!r}: unsupported file type {local.suffix or '(none)'!r}; "
                    f"expected one of {', '.join(DATA_SUFFIXES)}",
                )
            files.append(local)
        elif special_kind(local):  # reading a device, FIFO or socket blocks or never ends
            raise FieldError(
                f"data.{option}",
                f"{path!r} is {special_kind(local)} ({local.absolute()}); expected a regular data file or a directory",
            )
        else:
            raise FieldError(f"data.{option}", f"{path!r}: no such file or directory ({local.absolute()})")
    return files


def fingerprint(files: list[Path]) -> dict[str, str]:
    return {file.as_posix(): file_sha256(file) for file in files}


def read_file(file: Path) -> tuple[str, Iterator[Record]]:
    """(sha256 of the bytes read, the file's records): hashing what was converted, not a re-read."""
    data = read_regular(file)
    digest = hashlib.sha256(data).hexdigest()
    suffix = file.suffix.lower()
    name = file.as_posix()
    if suffix not in PARQUET_SUFFIXES:
        require_utf8(data, name)
    if suffix in JSONL_SUFFIXES:
        return digest, _jsonl_records(name, data)
    if suffix in PARQUET_SUFFIXES:
        return digest, _parquet_records(name, data)
    return digest, _json_records(name, data)


def _jsonl_records(name: str, data: bytes) -> Iterator[Record]:
    for line in json_lines(data.splitlines(keepends=True)):
        yield Record(name, line.index + 1, line.value, line.error)


def _json_records(name: str, data: bytes) -> Iterator[Record]:
    try:
        yield Record(name, 1, json.loads(data), document=True)
    except ValueError as error:  # one unreadable file among several is a dropped row, not a failure
        yield Record(name, 1, None, f"not a JSON file: {error}", document=True)
    except RecursionError:
        yield Record(name, 1, None, f"not a usable JSON file: {NESTED_TOO_DEEP}", document=True)


def _parquet_records(name: str, data: bytes) -> Iterator[Record]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(pa.BufferReader(data))
    except (pa.ArrowException, OSError) as error:
        raise DataError(f"{name}: not a parquet file: {error}") from error
    for index, row in enumerate(table.to_pylist()):
        yield Record(name, index + 1, row)


def load_hub_split(path: str, config: str | None, split: str, option: str = "path"):
    """One split of a hub dataset (`datasets.load_dataset`); every failure is a DataError."""
    import datasets  # slow to import; only hub users pay for it

    try:
        return datasets.load_dataset(path, config, split=split)
    except Exception as error:  # network, auth, unknown id / config / split: all end here
        raise FieldError(
            f"data.{option}",
            f"{path!r}: not a local file or directory ({Path(path).absolute()}) and loading "
            f"it from the Hugging Face hub (config {config!r}, split {split!r}) failed: "
            f"{type(error).__name__}: {error}",
        ) from error


def hub_records(dataset, label: str) -> Iterator[Record]:
    for index, row in enumerate(dataset):
        yield Record(label, index + 1, row)

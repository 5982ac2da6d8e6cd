"""Atomic writes, JSON lines and content hashes shared by every stage.

Every file a stage produces is written to a temporary sibling and renamed into place,
so a killed job never leaves a file (or directory) that looks finished.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shlex
import shutil
import stat
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from knobsweep.errors import DataError

# The reason a JSON value is refused when it is nested deeper than the parser recurses (~1000 levels).
NESTED_TOO_DEEP = "nested too deep (more than about 1000 levels of arrays / objects)"


def canonical_json(obj: Any, *, is_normalised: bool = False) -> str:
    """JSON with sorted keys and no whitespace: equal configs give equal text.

    `is_normalised`: obj is already `normalised(...)` output (as the run configs of
    `spec.expand` are), so the walk over every leaf is skipped; the text is the same.
    """
    return json.dumps(obj if is_normalised else normalised(obj), sort_keys=True, separators=(",", ":"), allow_nan=False)


def normalised(obj: Any) -> Any:
    """A copy in canonical form: string keys, lists for tuples, integral floats as ints (1.0 == 1,
    so equivalent spellings share a key); a non-finite number is a ValueError."""
    # Dispatch on the exact type: this runs over every leaf of every run config of a sweep.
    kind = type(obj)
    if kind is dict:
        return {k if type(k) is str else str(k): normalised(v) for k, v in obj.items()}
    if kind is str or kind is int or kind is bool or obj is None:
        return obj
    if kind is float or isinstance(obj, float):
        if not math.isfinite(obj):
            raise ValueError(f"cannot hash a non-finite number: {obj!r}")
        return int(obj) if obj.is_integer() else float(obj)
    if isinstance(obj, dict):
        return {str(k): normalised(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [normalised(v) for v in obj]
    return obj


def json_object(text: str) -> dict:
    """argparse `type=` for a stage's --config-json: a JSON object, else a clear usage error."""
    import argparse

    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"not valid JSON: {error}") from None
    except RecursionError:
        raise argparse.ArgumentTypeError(f"not usable JSON: {NESTED_TOO_DEEP}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {type(value).__name__}")
    return value


def content_hash(obj: Any, length: int = 16, *, is_normalised: bool = False) -> str:
    """A short, stable hex digest of a JSON-able object (`is_normalised`: as in canonical_json)."""
    return hashlib.sha256(canonical_json(obj, is_normalised=is_normalised).encode()).hexdigest()[:length]


SPECIAL_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISSOCK, "a socket"),
)


def _kind(mode: int) -> str:
    return next((name for test, name in SPECIAL_KINDS if test(mode)), "not a regular file")


def special_kind(path: str | Path) -> str | None:
    """What `path` is when it exists but is neither a regular file nor a directory ("a FIFO (named
    pipe)", "a character device", ...), else None (a missing path is the caller's to name).
    A symbolic link counts as what it points to."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    return None if stat.S_ISREG(mode) or stat.S_ISDIR(mode) else _kind(mode)


class NotRegularFileError(DataError):
    """An input that is not a regular file: reading a device, FIFO or socket blocks or never ends."""

    def __init__(self, path: str | Path, kind: str):
        super().__init__(f"{path} is {kind}, not a regular file; data is read only from regular files and directories")


def _open_regular(path: str | Path) -> BinaryIO:
    """`path` opened for reading, once os.stat says it is a regular file: opening a FIFO would
    wait for a writer, and reading /dev/zero never ends."""
    try:
        mode = os.stat(path).st_mode
        if not stat.S_ISREG(mode):
            raise NotRegularFileError(path, _kind(mode))
        # O_NONBLOCK: should a FIFO replace the file after the stat, the open does not wait for a writer.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as error:
        raise DataError(f"{path}: cannot read it: {error.strerror or error}") from error
    handle = os.fdopen(fd, "rb")
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        handle.close()
        raise NotRegularFileError(path, _kind(mode))
    return handle


def file_sha256(path: str | Path) -> str:
    """The sha256 of a regular file's bytes (anything else is a NotRegularFileError)."""
    digest = hashlib.sha256()
    with _open_regular(path) as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_regular(path: str | Path) -> bytes:
    """The bytes of a regular file (anything else is a NotRegularFileError)."""
    with _open_regular(path) as handle:
        return handle.read()


def require_utf8(data: bytes, name: str) -> None:
    """A DataError when the JSON(-lines) file `name` is plainly UTF-16 / UTF-32 (a byte-order mark,
    or a NUL byte beside every ASCII character), with the command that fixes it: said once for the
    file, not as every line dropped for "not JSON"."""
    found = next((why for bom, why in BOMS if data.startswith(bom)), None)
    head = data[:64]
    if found is None and len(head) >= 4 and head.count(0) * 2 >= len(head) - 1:
        # Without a mark, iconv needs the byte order: ASCII in UTF-16LE has its NULs second.
        order = "LE" if head[1::2].count(0) > head[::2].count(0) else "BE"
        found = (f"UTF-16{order}", "a NUL byte beside every character")
    if found is not None:
        encoding, sign = found
        converted = Path(name).with_suffix(".utf8" + Path(name).suffix).as_posix()
        raise DataError(
            f"{name}: not UTF-8: looks like {encoding} ({sign}); convert it with "
            f"`iconv -f {encoding} -t UTF-8 {shlex.quote(name)} > {shlex.quote(converted)}`"
        )


# UTF-32's little-endian mark starts with UTF-16's: longest first.
BOMS = (
    (b"\xff\xfe\x00\x00", ("UTF-32", "a UTF-32 byte-order mark")),
    (b"\x00\x00\xfe\xff", ("UTF-32", "a UTF-32 byte-order mark")),
    (b"\xff\xfe", ("UTF-16", "a UTF-16 byte-order mark")),
    (b"\xfe\xff", ("UTF-16", "a UTF-16 byte-order mark")),
)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def new_file_mode() -> int:
    """The mode open() gives a new file under this process's umask (644 for the usual 022): a file made
    by mkstemp (600) and renamed into place gets it, since results and specs are shared like any file."""
    return 0o666 & ~_umask()


def atomic_write_text(path: str | Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, new_file_mode())
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n")


def append_jsonl(path: str | Path, record: dict) -> None:
    """Append one JSON line; a single write() so a line is never interleaved."""
    line = json.dumps(record, allow_nan=True) + "\n"
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(line)
        handle.flush()


@dataclass(frozen=True)
class JsonLine:
    index: int  # 0-based line number
    value: Any  # the parsed JSON value; None when `error` says why the line is not JSON
    error: str | None = None
    torn: bool = False  # not JSON and without its newline: the last line of a writer killed mid-write


def json_lines(lines: Iterable[str | bytes]) -> Iterator[JsonLine]:
    """Each non-blank line of a JSON-lines file (an open file, or data.splitlines(keepends=True)) parsed;
    a line that is not JSON comes with why, so each reader decides: fail, skip, or drop the row."""
    for index, line in enumerate(lines):
        if not line.strip():
            continue  # blank lines (e.g. a trailing newline) are layout, not records
        try:
            yield JsonLine(index, json.loads(line))
        except ValueError as error:  # JSONDecodeError and UnicodeDecodeError
            ending = b"\n" if isinstance(line, bytes) else "\n"
            yield JsonLine(index, None, f"not a JSON line: {error}", torn=not line.endswith(ending))
        except RecursionError:  # a hostile line, e.g. [[[[... 100,000 deep: that row, not the reader
            yield JsonLine(index, None, f"not a usable JSON line: {NESTED_TOO_DEEP}")


def read_jsonl(path: str | Path) -> list:
    """Read JSON lines, ignoring a torn last line left by a killed writer; any other bad line is an error."""
    with open(path, "rb") as handle:
        lines = list(json_lines(handle))
    bad = next((line for line in lines if line.error and not line.torn), None)
    if bad is not None:
        raise ValueError(f"{path}:{bad.index + 1}: {bad.error}")
    return [line.value for line in lines if line.error is None]


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary directory that replaces `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp creates 0700
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise

"""SWE-bench task instances -> RL rows: the issue as the prompt, the gold patch as ground_truth.

Inputs (one of):
- `path`: a hub dataset id (default princeton-nlp/SWE-bench_Lite, `train_split` test), or a local
  JSON file (a list of instances or one instance), JSONL file, parquet file, or a directory of
  them; `paths`: several local files / directories, read in order.
- `cache_dir` + `use_cache_only: true`: a directory of `task_{i}.json` files (one instance
  each, `i` its index in the hub split), read with no network. With a hub `path` and
  `use_cache_only: false`, the hub split is loaded and every task not yet in `cache_dir` is
  written there, so a later run can go offline.

`task_ids` keeps the listed instance ids (all must exist); `task_id_range: [start, end)` keeps
the tasks whose 0-based index (hub row, cache file number, or position across the local
inputs) is in that range. The tasks are split into train / eval with a seeded hash order
(`eval_ratio` of them to eval), then cut to `train_size` / `eval_size`.

Row: row_id = instance_id; prompt = one user message (repo, the issue text, and the
instruction to answer with a unified diff in a ```diff block); ground_truth = the gold patch;
extras instance_id, repo, base_commit, FAIL_TO_PASS / PASS_TO_PASS (JSON text lists; the
input may hold lists or JSON strings, as on the hub), test_patch, version,
environment_setup_commit (null when absent) for the swe_patch / swe_tests evaluators.
Tasks with a missing field, an unparsable test list, a gold patch that is not a unified diff,
or a repeated instance_id are dropped and listed in the manifest (file and line).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from knobsweep.data import ConversionResult, _files, messages_type, shuffle_key
from knobsweep.data._files import Record
from knobsweep.errors import DataError, FieldError
from knobsweep.spec.sources import SweBenchOptions, SweInputs

if TYPE_CHECKING:
    import pyarrow as pa

CONVERTER_VERSION = "1"

# Shared with swe_synth's eval prompts, so the swe_patch evaluator scores what was asked for.
PATCH_INSTRUCTION = (
    "Write a patch that resolves the issue. Answer with a single unified diff, as `git diff` "
    "prints it (paths relative to the repository root, `--- a/<path>` and `+++ b/<path>` "
    "headers, `@@` hunks with correct line counts), inside one ```diff fenced code block."
)


def row_schema() -> pa.Schema:
    """The rows' schema (train and eval)."""
    import pyarrow as pa

    text = pa.string()
    columns = (
        "ground_truth",
        "instance_id",
        "repo",
        "base_commit",
        "FAIL_TO_PASS",
        "PASS_TO_PASS",
        "test_patch",
        "version",
        "environment_setup_commit",
    )
    return pa.schema([("row_id", text), ("prompt", messages_type()), *((column, text) for column in columns)])


_CACHE_FILE = re.compile(r"task_(\d+)\.json")
_REQUIRED = ("instance_id", "repo", "base_commit", "problem_statement", "patch")


def issue_message(problem_statement: str, repo: str | None) -> dict:
    header = f"Repository: {repo}\n\n" if repo else ""
    return {"role": "user", "content": f"{header}<issue>\n{problem_statement.strip()}\n</issue>"}


def with_instruction(messages: list[dict]) -> list[dict]:
    """`messages` with PATCH_INSTRUCTION closing the last user turn (or as a user turn of its own)."""
    messages = [dict(m) for m in messages]
    if messages and messages[-1]["role"] == "user":
        messages[-1]["content"] += "\n\n" + PATCH_INSTRUCTION
    else:
        messages.append({"role": "user", "content": PATCH_INSTRUCTION})
    return messages


def build_prompt(problem_statement: str, repo: str | None) -> list[dict]:
    return with_instruction([issue_message(problem_statement, repo)])


def _hub_label(options: SweBenchOptions) -> str:
    return f"hub:{options.path}@{options.hub_config}/{options.train_split}"


def _cache_files(options: SweBenchOptions) -> list[tuple[int, Path]]:
    """(index, file) of the cached tasks, those in task_id_range only: the others are not read."""
    cache_dir, span = options.cache_dir, options.task_id_range
    directory = Path(cache_dir).expanduser()
    if not directory.is_dir():
        raise FieldError("data.cache_dir", f"{cache_dir!r}: no such directory ({directory.absolute()})")
    found = sorted((int(match.group(1)), p) for p in directory.iterdir() if (match := _CACHE_FILE.fullmatch(p.name)))
    if not found:
        raise FieldError("data.cache_dir", f"{cache_dir!r}: no task_{{i}}.json files there")
    return [(index, file) for index, file in found if span is None or span[0] <= index < span[1]]


def _local_files(options: SweBenchOptions) -> list[Path]:
    paths = options.paths if options.paths is not None else [options.path]
    return _files.expand_paths(paths, "paths" if options.paths is not None else "path")


def input_fingerprint(options: SweBenchOptions) -> dict[str, str]:
    """{input file: sha256} for local files and cached tasks, {hub id: "hub:<id>@<config>/<split>"} otherwise."""
    if options.use_cache_only:
        return _files.fingerprint([p for _, p in _cache_files(options)])
    if options.is_hub:
        return {options.path: _hub_label(options)}
    return _files.fingerprint(_local_files(options))


# ------------------------------------------------------------------------------ reading


def _indexed_records(options: SweBenchOptions, inputs: dict[str, str]) -> Iterator[tuple[int, Record]]:
    """(0-based task index, record) for every task in the input; fills `inputs` with what was read."""
    if options.use_cache_only:
        for index, file in _cache_files(options):
            digest, records = _files.read_file(file)
            inputs[file.as_posix()] = digest
            for record in records:
                yield index, record
        return
    if options.is_hub:
        dataset = _files.load_hub_split(options.path, options.hub_config, options.train_split)
        inputs[options.path] = _hub_label(options)
        label = f"hub:{options.path}/{options.train_split}"
        records = list(_files.hub_records(dataset, label))
        if options.cache_dir is not None:
            _fill_cache(options.cache_dir, records)
        for record in records:
            yield record.line - 1, record
        return
    index = 0
    for file in _local_files(options):
        digest, records = _files.read_file(file)
        inputs[file.as_posix()] = digest
        for record in _items(records):
            yield index, record
            index += 1


def _items(records: Iterable[Record]) -> Iterator[Record]:
    """A JSON file holding a list of instances stands for its items (line = item number)."""
    for record in records:
        if record.document and isinstance(record.value, list):
            for number, item in enumerate(record.value, start=1):
                yield Record(record.file, number, item)
        else:
            yield record


def _fill_cache(cache_dir: str, records: list[Record]) -> None:
    from knobsweep.io import atomic_write_text

    directory = Path(cache_dir).expanduser()
    directory.mkdir(parents=True, exist_ok=True)
    for record in records:
        file = directory / f"task_{record.line - 1}.json"
        if not file.exists():
            atomic_write_text(file, json.dumps(record.value, default=str, indent=1) + "\n")


def _optional_text(value) -> str | None:
    return None if value is None or value == "" else str(value)


def _to_row(record: dict) -> tuple[dict | None, str | None]:
    from knobsweep.rewards.swe import parse_patch, parse_test_list  # light: unidiff only

    if not isinstance(record, dict):
        return None, f"not a JSON object: {type(record).__name__}"
    for key in _REQUIRED:
        if not isinstance(record.get(key), str) or not record[key].strip():
            return None, f"missing or empty {key!r}"
    try:
        tests = {f: parse_test_list(record.get(f), f) for f in ("FAIL_TO_PASS", "PASS_TO_PASS")}
    except ValueError as error:
        return None, str(error)
    if not tests["FAIL_TO_PASS"] and not tests["PASS_TO_PASS"]:
        return None, "FAIL_TO_PASS and PASS_TO_PASS are both empty"
    try:
        parse_patch(record["patch"])
    except ValueError as error:
        return None, f"gold patch: {error}"
    return {
        "row_id": record["instance_id"],
        "prompt": build_prompt(record["problem_statement"], record["repo"]),
        "ground_truth": record["patch"],
        "instance_id": record["instance_id"],
        "repo": record["repo"],
        "base_commit": record["base_commit"],
        "FAIL_TO_PASS": json.dumps(tests["FAIL_TO_PASS"]),
        "PASS_TO_PASS": json.dumps(tests["PASS_TO_PASS"]),
        "test_patch": _optional_text(record.get("test_patch")),
        "version": _optional_text(record.get("version")),
        "environment_setup_commit": _optional_text(record.get("environment_setup_commit")),
    }, None


# ------------------------------------------------------------------------------ splitting


def split_rows(rows: list[dict], group_of, options: SweInputs, what: str) -> tuple[list[dict], list[dict]]:
    """(train, eval): whole groups in a seeded hash order, `eval_ratio` of the rows to eval, then sizes.

    Rows of one group (one task instance) never end up on both sides.
    """
    groups: dict[str, list[dict]] = {}
    for row in rows:
        groups.setdefault(group_of(row), []).append(row)
    if len(groups) < 2:
        raise DataError(
            f"{what}: {len(rows)} usable rows from {len(groups)} task(s); a train / eval split "
            f"(data.eval_ratio) needs at least 2 tasks"
        )
    order = sorted(groups, key=lambda key: shuffle_key(options.seed, key, salt="split:"))
    wanted = min(max(1, round(options.eval_ratio * len(rows))), len(rows) - 1)
    evals: list[dict] = []
    train: list[dict] = []
    for key in order:
        # Fill eval first; the last group always goes to train so it is never empty.
        (evals if len(evals) < wanted and key != order[-1] else train).extend(groups[key])
    out = []
    for split, chosen, size in (("train", train, options.train_size), ("eval", evals, options.eval_size)):
        chosen.sort(key=lambda row: shuffle_key(options.seed, row["row_id"]))
        if size is not None and size > len(chosen):
            raise FieldError(
                f"data.{split}_size",
                f"{what}: {size} but the {split} split has only {len(chosen)} rows "
                f"(data.eval_ratio={options.eval_ratio}); lower the size or set it to null",
            )
        out.append(chosen[:size])
    return out[0], out[1]


def inputs_label(inputs: dict[str, str]) -> str:
    """The inputs named in an error: the first one, and how many more."""
    names = list(inputs)
    if not names:
        return "the input"
    if len(names) == 1:
        return names[0]
    return f"{names[0]} (and {len(names) - 1} more input file{'s' if len(names) > 2 else ''})"


def summarise_dropped(dropped: list[dict]) -> str:
    return "; ".join(f"{d['file']}:{d['line']}: {d['reason']}" for d in dropped[:3])


# ------------------------------------------------------------------------------ convert


def convert(options: SweBenchOptions) -> ConversionResult:
    """Read the tasks, select (task_ids / task_id_range), drop unusable ones, split and cut."""
    inputs: dict[str, str] = {}
    rows, dropped = [], []
    first_seen: dict[str, str] = {}
    present: set = set()  # selected instance ids, usable or not
    wanted_ids = set(options.task_ids or [])
    span = options.task_id_range
    for index, record in _indexed_records(options, inputs):
        if span is not None and not span[0] <= index < span[1]:
            continue
        value = record.value
        instance_id = value.get("instance_id") if isinstance(value, dict) else None
        if wanted_ids and instance_id not in wanted_ids:
            continue
        present.add(instance_id)
        row, reason = (None, record.error) if record.error else _to_row(value)
        if row is not None and row["instance_id"] in first_seen:
            first = first_seen[row["instance_id"]]
            row, reason = None, f"duplicate instance_id {row['instance_id']!r} (first read at {first})"
        if row is None:
            dropped.append({"split": "input", "file": record.file, "line": record.line, "reason": reason})
            continue
        first_seen[row["instance_id"]] = record.origin
        rows.append(row)
    what = inputs_label(inputs)
    if wanted_ids:
        missing = sorted(wanted_ids - present)
        if missing:
            raise FieldError(
                "data.task_ids",
                f"not found in {what}{' within data.task_id_range' if span else ''}: "
                f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}",
            )
    if not rows:
        if not dropped:
            raise DataError(f"{what}: no SWE-bench tasks selected (the input or the selection is empty)")
        raise DataError(
            f"{what}: no usable SWE-bench tasks, all {len(dropped)} were dropped ({summarise_dropped(dropped)})"
        )
    train, evals = split_rows(rows, lambda row: row["instance_id"], options, what)
    return ConversionResult(
        train=train,
        eval=evals,
        schema=row_schema(),
        options=options.model_dump(mode="json"),
        inputs=inputs,
        dropped=dropped,
    )

"""SWE-bench task instances -> RL rows: the issue as the prompt, the gold patch as ground_truth.

Inputs (one of):
- `path`: a hub dataset id (default princeton-nlp/SWE-bench_Lite, `hub_split` test), or a local
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
from pathlib import Path
from typing import Iterable, Iterator

import pyarrow as pa

from knobsweep.data import MESSAGES, ConversionResult, check_sizes_and_seed, shuffle_key, with_defaults
from knobsweep.data import _files
from knobsweep.data._files import Record
from knobsweep.errors import DataError

CONVERTER_VERSION = "1"
FORMATS = ("rl",)
HUB_DEFAULT = "princeton-nlp/SWE-bench_Lite"

DEFAULTS: dict = {
    "source": "swe_bench",
    "format": "rl",
    "path": None,  # null (and no paths / cache-only) = HUB_DEFAULT
    "paths": None,
    "hub_config": None,
    "hub_split": "test",
    "cache_dir": None,
    "use_cache_only": False,
    "task_ids": None,
    "task_id_range": None,
    "eval_ratio": 0.2,
    "train_size": None,
    "eval_size": None,
    "seed": 0,
}

# Shared with swe_synth's eval prompts, so the swe_patch evaluator scores what was asked for.
PATCH_INSTRUCTION = (
    "Write a patch that resolves the issue. Answer with a single unified diff, as `git diff` "
    "prints it (paths relative to the repository root, `--- a/<path>` and `+++ b/<path>` "
    "headers, `@@` hunks with correct line counts), inside one ```diff fenced code block."
)

ROW_SCHEMA = pa.schema(
    [
        ("row_id", pa.string()),
        ("prompt", MESSAGES),
        ("ground_truth", pa.string()),
        ("instance_id", pa.string()),
        ("repo", pa.string()),
        ("base_commit", pa.string()),
        ("FAIL_TO_PASS", pa.string()),
        ("PASS_TO_PASS", pa.string()),
        ("test_patch", pa.string()),
        ("version", pa.string()),
        ("environment_setup_commit", pa.string()),
    ]
)

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


# ------------------------------------------------------------------------------ options


def check_common(resolved: dict) -> None:
    """The checks swe_bench and swe_synth share: inputs, split and sizes."""
    if resolved["path"] is not None and (not isinstance(resolved["path"], str) or not resolved["path"]):
        raise DataError(f"data.path: must be a non-empty string (hub id, file or directory), got {resolved['path']!r}")
    paths = resolved["paths"]
    if paths is not None:
        if not isinstance(paths, list) or not paths or not all(isinstance(p, str) and p for p in paths):
            raise DataError(f"data.paths: must be a non-empty list of local files or directories, got {paths!r}")
        if resolved["path"] is not None:
            raise DataError("data.path and data.paths: give one of them (paths for several local files)")
    if not isinstance(resolved["hub_split"], str) or not resolved["hub_split"]:
        raise DataError(f"data.hub_split: must be a non-empty string, got {resolved['hub_split']!r}")
    if resolved["hub_config"] is not None and not isinstance(resolved["hub_config"], str):
        raise DataError(f"data.hub_config: must be a string or null, got {resolved['hub_config']!r}")
    ratio = resolved["eval_ratio"]
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0 < ratio < 1:
        raise DataError(
            f"data.eval_ratio: must be a number between 0 and 1 (exclusive; the share of rows for "
            f"the eval split), got {ratio!r}"
        )
    check_sizes_and_seed(resolved)


def resolve_options(options: dict) -> dict:
    """The `data` section with defaults filled in; wrong names or values raise DataError."""
    resolved = with_defaults(options, DEFAULTS, "swe_bench", FORMATS)
    check_common(resolved)
    cache_dir, cache_only = resolved["cache_dir"], resolved["use_cache_only"]
    if not isinstance(cache_only, bool):
        raise DataError(f"data.use_cache_only: must be true or false, got {cache_only!r}")
    if cache_dir is not None and (not isinstance(cache_dir, str) or not cache_dir):
        raise DataError(f"data.cache_dir: must be a directory path or null, got {cache_dir!r}")
    if cache_only:
        if cache_dir is None:
            raise DataError("data.use_cache_only: true needs data.cache_dir (a directory of task_{i}.json files)")
        if resolved["path"] is not None or resolved["paths"] is not None:
            raise DataError("data.use_cache_only: true reads only data.cache_dir; remove data.path / data.paths")
    elif resolved["path"] is None and resolved["paths"] is None:
        resolved["path"] = HUB_DEFAULT
    if cache_dir is not None and not cache_only and not _is_hub(resolved):
        raise DataError(
            "data.cache_dir: caches a hub dataset's tasks; with a local data.path / data.paths "
            "leave it out (or set use_cache_only: true and drop the path)"
        )
    task_ids = resolved["task_ids"]
    if task_ids is not None and (
        not isinstance(task_ids, list) or not task_ids or not all(isinstance(t, str) and t for t in task_ids)
    ):
        raise DataError(f"data.task_ids: must be a non-empty list of instance ids, got {task_ids!r}")
    span = resolved["task_id_range"]
    if span is not None:
        if (
            not isinstance(span, list)
            or len(span) != 2
            or not all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in span)
            or span[0] >= span[1]
        ):
            raise DataError(
                f"data.task_id_range: must be [start, end) with 0 <= start < end (0-based task "
                f"indices), got {span!r}"
            )
    return resolved


def _is_hub(options: dict) -> bool:
    return options["paths"] is None and options["path"] is not None and _files.looks_like_hub_id(options["path"])


def _hub_label(options: dict) -> str:
    return f"hub:{options['path']}@{options['hub_config']}/{options['hub_split']}"


def _cache_files(options: dict) -> list[tuple[int, Path]]:
    """(index, file) of the cached tasks, those in task_id_range only: the others are not read."""
    cache_dir, span = options["cache_dir"], options["task_id_range"]
    directory = Path(cache_dir).expanduser()
    if not directory.is_dir():
        raise DataError(f"data.cache_dir {cache_dir!r}: no such directory ({directory.absolute()})")
    found = sorted(
        (int(match.group(1)), p) for p in directory.iterdir() if (match := _CACHE_FILE.fullmatch(p.name))
    )
    if not found:
        raise DataError(f"data.cache_dir {cache_dir!r}: no task_{{i}}.json files there")
    return [(index, file) for index, file in found if span is None or span[0] <= index < span[1]]


def _local_files(options: dict) -> list[Path]:
    paths = options["paths"] if options["paths"] is not None else [options["path"]]
    return _files.expand_paths(paths, "paths" if options["paths"] is not None else "path")


def input_fingerprint(options: dict) -> dict[str, str]:
    """{input file: sha256} for local files and cached tasks, {hub id: "hub:<id>@<config>/<split>"} otherwise."""
    options = resolve_options(options)
    if options["use_cache_only"]:
        return _files.fingerprint([p for _, p in _cache_files(options)])
    if _is_hub(options):
        return {options["path"]: _hub_label(options)}
    return _files.fingerprint(_local_files(options))


# ------------------------------------------------------------------------------ reading


def _indexed_records(options: dict, inputs: dict[str, str]) -> Iterator[tuple[int, Record]]:
    """(0-based task index, record) for every task in the input; fills `inputs` with what was read."""
    if options["use_cache_only"]:
        for index, file in _cache_files(options):
            digest, records = _files.read_file(file)
            inputs[file.as_posix()] = digest
            for record in records:
                yield index, record
        return
    if _is_hub(options):
        dataset = _files.load_hub_split(options["path"], options["hub_config"], options["hub_split"])
        inputs[options["path"]] = _hub_label(options)
        label = f"hub:{options['path']}/{options['hub_split']}"
        records = list(_files.hub_records(dataset, label))
        if options["cache_dir"] is not None:
            _fill_cache(options["cache_dir"], records)
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


def split_rows(rows: list[dict], group_of, options: dict, what: str) -> tuple[list[dict], list[dict]]:
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
    order = sorted(groups, key=lambda key: shuffle_key(options["seed"], key, salt="split:"))
    wanted = min(max(1, round(options["eval_ratio"] * len(rows))), len(rows) - 1)
    evals: list[dict] = []
    train: list[dict] = []
    for key in order:
        # Fill eval first; the last group always goes to train so it is never empty.
        (evals if len(evals) < wanted and key != order[-1] else train).extend(groups[key])
    out = []
    for split, chosen, size in (("train", train, options["train_size"]), ("eval", evals, options["eval_size"])):
        chosen.sort(key=lambda row: shuffle_key(options["seed"], row["row_id"]))
        if size is not None and size > len(chosen):
            raise DataError(
                f"{what}: data.{split}_size={size} but the {split} split has only {len(chosen)} rows "
                f"(data.eval_ratio={options['eval_ratio']}); lower the size or set it to null"
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


def convert(options: dict) -> ConversionResult:
    """Read the tasks, select (task_ids / task_id_range), drop unusable ones, split and cut."""
    options = resolve_options(options)
    inputs: dict[str, str] = {}
    rows, dropped = [], []
    first_seen: dict[str, str] = {}
    present: set = set()  # selected instance ids, usable or not
    wanted_ids = set(options["task_ids"] or [])
    span = options["task_id_range"]
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
            raise DataError(
                f"data.task_ids: not found in {what}{' within data.task_id_range' if span else ''}: "
                f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}"
            )
    if not rows:
        if not dropped:
            raise DataError(f"{what}: no SWE-bench tasks selected (the input or the selection is empty)")
        raise DataError(
            f"{what}: no usable SWE-bench tasks, all {len(dropped)} were dropped ({summarise_dropped(dropped)})"
        )
    train, evals = split_rows(rows, lambda row: row["instance_id"], options, what)
    return ConversionResult(
        train=train, eval=evals, schema=ROW_SCHEMA, options=options, inputs=inputs, dropped=dropped
    )


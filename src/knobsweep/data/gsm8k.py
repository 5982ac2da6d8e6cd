"""GSM8K -> RL rows {row_id, prompt, ground_truth, answer}.

`path` is a local directory holding `<train_split>.jsonl` and `<eval_split>.jsonl` (the
upstream format: one {"question", "answer"} object per line) or a hub dataset id loaded
with `datasets.load_dataset(path, hub_config)`. Each split is shuffled with `seed` and cut
to its size. Unusable rows are dropped and listed in the manifest: `line` is the 1-based
line number in the file (for a hub split, the row index + 1); `row_id` is
"<split>-<0-based line / row index>", so every row can be traced to its source.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from pathlib import Path
from typing import Iterable

import pyarrow as pa

from knobsweep.data import ConversionResult, DataError
from knobsweep.io import file_sha256
from knobsweep.rewards.gsm8k import extract_ground_truth

CONVERTER_VERSION = "1"

# verl's GSM8K instruction (examples/data_preprocess/gsm8k.py), so the strict `#### N`
# evaluator scores what the prompt asked for.
INSTRUCTION = 'Let\'s think step by step and output the final answer after "####".'

DEFAULTS: dict = {
    "source": "gsm8k",
    "path": "openai/gsm8k",
    "hub_config": "main",
    "train_split": "train",
    "eval_split": "test",
    "train_size": None,
    "eval_size": None,
    "seed": 0,
}

ROW_SCHEMA = pa.schema(
    [
        ("row_id", pa.string()),
        ("prompt", pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))),
        ("ground_truth", pa.string()),
        ("answer", pa.string()),
    ]
)

# "name" or "owner/name", as on the Hugging Face hub.
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")


def resolve_options(options: dict) -> dict:
    """The `data` section with defaults filled in; wrong names or values raise DataError."""
    unknown = sorted(set(options) - set(DEFAULTS))
    if unknown:
        close = difflib.get_close_matches(unknown[0], list(DEFAULTS), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise DataError(
            f"data.{unknown[0]}: unknown option for source 'gsm8k'{hint}; "
            f"allowed options: {', '.join(DEFAULTS)}"
        )
    resolved = {**DEFAULTS, **options}
    if resolved["source"] != "gsm8k":
        raise DataError(f"data.source: expected 'gsm8k', got {resolved['source']!r}")
    for key in ("path", "train_split", "eval_split"):
        if not isinstance(resolved[key], str) or not resolved[key]:
            raise DataError(f"data.{key}: must be a non-empty string, got {resolved[key]!r}")
    if resolved["hub_config"] is not None and not isinstance(resolved["hub_config"], str):
        raise DataError(f"data.hub_config: must be a string or null, got {resolved['hub_config']!r}")
    for key in ("train_size", "eval_size"):
        size = resolved[key]
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
            raise DataError(f"data.{key}: must be a positive integer or null (all rows), got {size!r}")
    if isinstance(resolved["seed"], bool) or not isinstance(resolved["seed"], int):
        raise DataError(f"data.seed: must be an integer, got {resolved['seed']!r}")
    return resolved


def _local_dir(options: dict) -> Path | None:
    """The local directory `path` names, or None when it is a hub dataset id.

    A path that looks local (absolute, ./, ~, several parts, or under an existing folder)
    but is missing fails here: a hub lookup would only add a confusing network error.
    """
    path = options["path"]
    local = Path(path).expanduser()
    if local.is_dir():
        return local
    expected = f"{options['train_split']}.jsonl and {options['eval_split']}.jsonl"
    if local.exists():
        raise DataError(
            f"data.path {path!r} is a file; expected a directory holding {expected}, "
            f"or a hub dataset id such as 'openai/gsm8k'"
        )
    hub_like = (
        _HUB_ID.fullmatch(path) is not None
        and ".." not in path
        # "data/gsm8k" next to an existing data/ folder is a missing directory, not a hub id.
        and (local.parent == Path(".") or not local.parent.is_dir())
    )
    if not hub_like:
        raise DataError(
            f"data.path {path!r}: no such directory ({local.absolute()}); expected a directory "
            f"holding {expected}, or a hub dataset id such as 'openai/gsm8k'"
        )
    return None


def _split_file(directory: Path, split: str) -> Path:
    file = directory / f"{split}.jsonl"
    if not file.is_file():
        present = sorted(p.name for p in directory.glob("*.jsonl")) or ["no .jsonl files"]
        raise DataError(f"{file}: no such file (split {split!r}); {directory} has: {', '.join(present)}")
    return file


def input_fingerprint(options: dict) -> dict[str, str]:
    """{input file: sha256} for a local directory, {hub id: "hub:<id>@<config>"} otherwise."""
    options = resolve_options(options)
    directory = _local_dir(options)
    if directory is None:
        return _hub_fingerprint(options)
    files = (_split_file(directory, options[key]) for key in ("train_split", "eval_split"))
    return {file.as_posix(): file_sha256(file) for file in files}


def _hub_fingerprint(options: dict) -> dict[str, str]:
    return {options["path"]: f"hub:{options['path']}@{options['hub_config']}"}


# A source yields (index, record, None) per row, or (index, None, reason) when it cannot be read.
Records = Iterable[tuple[int, dict | None, str | None]]


def _jsonl_records(data: bytes) -> Records:
    for index, line in enumerate(data.splitlines()):
        if not line.strip():
            continue  # blank lines (e.g. a trailing newline) are layout, not rows
        try:
            yield index, json.loads(line), None
        except ValueError as error:  # JSONDecodeError and UnicodeDecodeError
            yield index, None, f"not a JSON line: {error}"


def _to_row(record, split: str, index: int) -> tuple[dict | None, str | None]:
    if not isinstance(record, dict):
        return None, f"not a JSON object: {type(record).__name__}"
    for key in ("question", "answer"):
        if not isinstance(record.get(key), str) or not record[key].strip():
            return None, f"missing or empty {key!r}"
    try:
        ground_truth = extract_ground_truth(record["answer"])
    except ValueError as error:
        return None, str(error)
    return {
        "row_id": f"{split}-{index}",
        "prompt": [{"role": "user", "content": record["question"] + "\n" + INSTRUCTION}],
        "ground_truth": ground_truth,
        "answer": record["answer"],
    }, None


def _shuffle_key(seed: int, row_id: str) -> bytes:
    # A hash order, not random.shuffle: it cannot change with the Python or numpy version,
    # which the cache key does not record.
    return hashlib.sha256(f"{seed}:{row_id}".encode()).digest()


def _convert_split(
    records: Records, split: str, label: str, size: int | None, seed: int
) -> tuple[list[dict], list[dict]]:
    """(the selected rows, the dropped-row records) of one split."""
    rows, dropped = [], []
    for index, record, reason in records:
        row = None
        if reason is None:
            row, reason = _to_row(record, split, index)
        if row is None:
            dropped.append({"split": split, "line": index + 1, "reason": reason})
        else:
            rows.append(row)
    if not rows:
        if not dropped:
            raise DataError(f"{label}: no GSM8K rows (the split is empty)")
        first = "; ".join(f"line {d['line']}: {d['reason']}" for d in dropped[:3])
        raise DataError(f"{label}: no usable GSM8K rows, all {len(dropped)} were dropped ({first})")
    rows.sort(key=lambda row: _shuffle_key(seed, row["row_id"]))
    if size is not None and size > len(rows):
        raise DataError(
            f"{label}: asked for {size} rows but only {len(rows)} are usable; "
            f"lower the size or set it to null for all rows"
        )
    return rows[:size], dropped


def convert(options: dict) -> ConversionResult:
    """Read both splits, drop unusable rows, shuffle with `seed` and cut to size."""
    options = resolve_options(options)
    directory = _local_dir(options)
    splits = {"train": options["train_split"], "eval": options["eval_split"]}
    sizes = {"train": options["train_size"], "eval": options["eval_size"]}
    dropped: list[dict] = []
    out: dict[str, list[dict]] = {}
    if directory is not None:
        inputs = {}
        for role, split in splits.items():
            file = _split_file(directory, split)
            data = file.read_bytes()
            # Hash the bytes converted, so the manifest describes exactly this output.
            inputs[file.as_posix()] = hashlib.sha256(data).hexdigest()
            out[role], bad = _convert_split(
                _jsonl_records(data), split, str(file), sizes[role], options["seed"]
            )
            dropped += bad
    else:
        hub = _load_hub(options)
        inputs = _hub_fingerprint(options)
        for role, split in splits.items():
            if split not in hub:
                raise DataError(
                    f"data.{role}_split: hub dataset {options['path']!r} has no split {split!r}; "
                    f"it has: {', '.join(hub)}"
                )
            records = ((index, record, None) for index, record in enumerate(hub[split]))
            label = f"{options['path']} ({options['hub_config']}) split {split!r}"
            out[role], bad = _convert_split(records, split, label, sizes[role], options["seed"])
            dropped += bad
    return ConversionResult(
        train=out["train"],
        eval=out["eval"],
        schema=ROW_SCHEMA,
        options=options,
        inputs=inputs,
        dropped=dropped,
    )


def _load_hub(options: dict):
    import datasets  # slow to import; only hub users pay for it

    try:
        return datasets.load_dataset(options["path"], options["hub_config"])
    except Exception as error:  # network, auth, unknown id or config: all end here
        raise DataError(
            f"data.path {options['path']!r}: not a local directory ({Path(options['path']).absolute()}) "
            f"and loading it from the Hugging Face hub (config {options['hub_config']!r}) failed: "
            f"{type(error).__name__}: {error}"
        ) from error

"""GSM8K -> rl, sft or kto rows (`format`); eval rows are always rl.

rl:  {row_id, prompt, ground_truth, answer}: the question (+ the answer-format instruction)
     and the final number the `#### N` evaluator compares with.
sft: {row_id, prompt, completion}: the same prompt, the reference solution (with its `#### N`)
     as the assistant turn.
kto: {row_id, prompt, completion, label}: GSM8K-derived labels. A seeded coin per row keeps
     the reference solution (label true) or changes its final `#### N` to a wrong number
     (label false); the manifest's stats count each.

`path` is a local directory holding `<train_split>.jsonl` and `<eval_split>.jsonl` (the
upstream format: one {"question", "answer"} object per line) or a hub dataset id loaded
with `datasets.load_dataset(path, hub_config)`. Each split is shuffled with `seed` and cut
to its size. Unusable rows are dropped and listed in the manifest: `line` is the 1-based
line number in the file (for a hub split, the row index + 1); `row_id` is
"<split>-<0-based line / row index>", so every row can be traced to its source.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING

from knobsweep.data import ConversionResult, messages_type, shuffle_key
from knobsweep.errors import DataError, FieldError
from knobsweep.hub import looks_like_hub_id
from knobsweep.io import JsonLine, file_sha256, json_lines, read_regular, require_utf8, special_kind
from knobsweep.rewards.gsm8k import STRICT_PATTERN, extract_ground_truth, extract_strict_answer
from knobsweep.spec.sources import Gsm8kOptions

CONVERTER_VERSION = "2"  # 2: the `format` option (sft and kto rows)

# verl's GSM8K instruction (examples/data_preprocess/gsm8k.py), so the strict `#### N`
# evaluator scores what the prompt asked for.
INSTRUCTION = 'Let\'s think step by step and output the final answer after "####".'

if TYPE_CHECKING:
    import pyarrow as pa


@functools.cache
def schemas() -> dict[str, pa.Schema]:
    """train.parquet's schema of each format (eval.parquet holds rl rows)."""
    import pyarrow as pa

    messages = messages_type()
    return {
        "rl": pa.schema(
            [("row_id", pa.string()), ("prompt", messages), ("ground_truth", pa.string()), ("answer", pa.string())]
        ),
        "sft": pa.schema([("row_id", pa.string()), ("prompt", messages), ("completion", messages)]),
        "kto": pa.schema(
            [("row_id", pa.string()), ("prompt", messages), ("completion", messages), ("label", pa.bool_())]
        ),
    }


def _local_dir(options: Gsm8kOptions) -> Path | None:
    """The local directory `path` names, or None when it is a hub dataset id.

    A path that looks local (absolute, ./, ~, several parts, or under an existing folder)
    but is missing fails here: a hub lookup would only add a confusing network error.
    """
    path = options.path
    local = Path(path).expanduser()
    if local.is_dir():
        return local
    expected = f"{options.train_split}.jsonl and {options.eval_split}.jsonl"
    if local.exists():
        raise FieldError(
            "data.path",
            f"{path!r} is {special_kind(local) or 'a file'}; expected a directory holding {expected}, "
            "or a hub dataset id such as 'openai/gsm8k'",
        )
    if not looks_like_hub_id(path):
        raise FieldError(
            "data.path",
            f"{path!r}: no such directory ({local.absolute()}); expected a directory "
            f"holding {expected}, or a hub dataset id such as 'openai/gsm8k'",
        )
    return None


def _split_file(directory: Path, split: str) -> Path:
    file = directory / f"{split}.jsonl"
    if special_kind(file):  # reading a device, FIFO or socket blocks or never ends
        raise DataError(f"{file} is {special_kind(file)} (split {split!r}); expected a regular .jsonl file")
    if not file.is_file():
        present = sorted(p.name for p in directory.glob("*.jsonl")) or ["no .jsonl files"]
        raise DataError(f"{file}: no such file (split {split!r}); {directory} has: {', '.join(present)}")
    return file


def split_files(options: Gsm8kOptions) -> dict[str, list[Path]] | None:
    """{"train": [file], "eval": [file]} of a local directory, None for a hub dataset (the spec counts their
    rows to check data.train_size / eval_size and train.batch_size before anything runs)."""
    directory = _local_dir(options)
    if directory is None:
        return None
    return {
        role: [_split_file(directory, split)]
        for role, split in (("train", options.train_split), ("eval", options.eval_split))
    }


def input_fingerprint(options: Gsm8kOptions) -> dict[str, str]:
    """{input file: sha256} for a local directory, {hub id: "hub:<id>@<config>"} otherwise."""
    directory = _local_dir(options)
    if directory is None:
        return _hub_fingerprint(options)
    files = (_split_file(directory, split) for split in (options.train_split, options.eval_split))
    return {file.as_posix(): file_sha256(file) for file in files}


def _hub_fingerprint(options: Gsm8kOptions) -> dict[str, str]:
    return {options.path: f"hub:{options.path}@{options.hub_config}"}


# A split's records: a JsonLine per row (its index, value, and why it cannot be read when it cannot).
Records = Iterable[JsonLine]


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


def _convert_split(
    records: Records, role: str, split: str, label: str, size: int | None, seed: int
) -> tuple[list[dict], list[dict]]:
    """(the selected rows, the dropped-row records) of one split."""
    rows, dropped = [], []
    for line in records:
        index, row, reason = line.index, None, line.error
        if reason is None:
            row, reason = _to_row(line.value, split, index)
        if row is None:
            dropped.append({"split": split, "line": index + 1, "reason": reason})
        else:
            rows.append(row)
    if not rows:
        if not dropped:
            raise DataError(f"{label}: no GSM8K rows (the split is empty)")
        first = "; ".join(f"line {d['line']}: {d['reason']}" for d in dropped[:3])
        raise DataError(f"{label}: no usable GSM8K rows, all {len(dropped)} were dropped ({first})")
    rows.sort(key=lambda row: shuffle_key(seed, row["row_id"]))
    if size is not None and size > len(rows):
        raise FieldError(
            f"data.{role}_size",
            f"{label}: asked for {size} rows but only {len(rows)} are usable; "
            f"lower the size or set it to null for all rows",
        )
    return rows[:size], dropped


def convert(options: Gsm8kOptions) -> ConversionResult:
    """Read both splits, drop unusable rows, shuffle with `seed` and cut to size."""
    directory = _local_dir(options)
    splits = {"train": options.train_split, "eval": options.eval_split}
    sizes = {"train": options.train_size, "eval": options.eval_size}
    dropped: list[dict] = []
    out: dict[str, list[dict]] = {}
    if directory is not None:
        inputs = {}
        for role, split in splits.items():
            file = _split_file(directory, split)
            data = read_regular(file)
            require_utf8(data, file.as_posix())
            # Hash the bytes converted, so the manifest describes exactly this output.
            inputs[file.as_posix()] = hashlib.sha256(data).hexdigest()
            records = json_lines(data.splitlines(keepends=True))
            out[role], bad = _convert_split(records, role, split, str(file), sizes[role], options.seed)
            dropped += bad
    else:
        hub = _load_hub(options)
        inputs = _hub_fingerprint(options)
        for role, split in splits.items():
            if split not in hub:
                raise FieldError(
                    f"data.{role}_split",
                    f"hub dataset {options.path!r} has no split {split!r}; it has: {', '.join(hub)}",
                )
            records = (JsonLine(index, record) for index, record in enumerate(hub[split]))
            label = f"{options.path} ({options.hub_config}) split {split!r}"
            out[role], bad = _convert_split(records, role, split, label, sizes[role], options.seed)
            dropped += bad
    train, stats = _format_rows(out["train"], options.format, options.seed)
    return ConversionResult(
        train=train,
        eval=out["eval"],
        schema=schemas()[options.format],
        eval_schema=schemas()["rl"],
        options=options.model_dump(mode="json"),
        inputs=inputs,
        dropped=dropped,
        stats=stats,
    )


def _format_rows(rows: list[dict], fmt: str, seed: int) -> tuple[list[dict], dict]:
    """rl rows as `fmt` rows, with the stats the manifest records."""
    if fmt == "rl":
        return rows, {}
    out = []
    for row in rows:
        item = {"row_id": row["row_id"], "prompt": row["prompt"]}
        solution = row["answer"]
        if fmt == "kto":
            # A per-row seeded coin: the same row gets the same label whatever the size cut.
            label = shuffle_key(seed, row["row_id"], salt="kto-label:")[0] % 2 == 0
            if not label:
                solution = wrong_final_answer(solution, seed, row["row_id"])
            item["label"] = label
        item["completion"] = [{"role": "assistant", "content": solution}]
        out.append(item)
    if fmt == "kto":
        true = sum(row["label"] for row in out)
        return out, {"label_true": true, "label_false": len(out) - true}
    return out, {}


def wrong_final_answer(solution: str, seed: int, row_id: str) -> str:
    """`solution` with its last `#### N` changed to another number (N + a seeded non-zero
    offset in [-10, 10], kept non-negative for a non-negative N), written in N's style."""
    # The number extract_ground_truth reads: the last strict `#### N` that is a number.
    for match in reversed(list(STRICT_PATTERN.finditer(solution))):
        written = match.group(1).rstrip(".")
        if extract_strict_answer("#### " + written) is not None:
            break
    else:
        raise ValueError("reference answer has no '#### N' final number")
    start = match.start(1)
    end = start + len(written)
    value = Decimal(written.replace(",", ""))
    digest = shuffle_key(seed, row_id, salt="kto-wrong:")
    offset = digest[0] % 10 + 1
    sign = 1 if digest[1] % 2 or value - offset < 0 <= value else -1
    wrong = value + sign * offset
    text = f"{wrong:,}" if "," in written else str(wrong)
    return solution[:start] + text + solution[end:]


def _load_hub(options: Gsm8kOptions):
    import datasets  # slow to import; only hub users pay for it

    try:
        return datasets.load_dataset(options.path, options.hub_config)
    except Exception as error:  # network, auth, unknown id or config: all end here
        raise FieldError(
            "data.path",
            f"{options.path!r}: not a local directory ({Path(options.path).absolute()}) "
            f"and loading it from the Hugging Face hub (config {options.hub_config!r}) failed: "
            f"{type(error).__name__}: {error}",
        ) from error

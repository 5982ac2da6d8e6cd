"""Your own data -> rl, sft or kto rows: JSON lines (`jsonl`), Parquet (`parquet`) or a
Hugging Face dataset (`hf`).

Where the rows come from (jsonl / parquet):
    path: FILE                     every row is a train row; eval rows come from `eval_files`,
                                   or `eval_ratio` holds out a seeded share of them
    path: DIR                      DIR/<train_split>.<ext> and DIR/<eval_split>.<ext> (or shards
                                   <split>-*.<ext>); with no eval file, `eval_files` / `eval_ratio`
    train_files: [F, ...]          several train files, concatenated (+ `eval_files` or `eval_ratio`)
hf:
    path: HUB_ID | DIR             `datasets.load_dataset(path, hub_config, revision=...)`, or
                                   `load_from_disk` for a directory written by `save_to_disk`;
                                   `train_files` / `eval_files` become its `data_files`
                                   (e.g. path: json, train_files: [a.jsonl]); splits by name.

Which columns hold what (`*_key`; a prompt or response may be a string or a list of
{role, content} messages; `system_prompt` is put in front of every prompt):
    rl   prompt_key + ground_truth_key (+ extra_keys, passed to the evaluator by name)
    sft  messages_key (a whole conversation), or prompt_key + response_key
    kto  prompt_key + response_key (one assistant turn) + label_key (a bool, 0/1, "true"/"false")
eval.parquet always holds rl rows: prompt + ground_truth (for sft / kto data without a
ground-truth column, the reference response; a kto row labelled false has none and is dropped).

A row that cannot be used (an unparsable line, a missing column, a wrong type) is dropped and
listed in the manifest: {split: train|eval, file, line: 1-based line (jsonl) or row (parquet,
hf), reason}. `row_id` is "<split or file stem>-<0-based line / row index>". Each split is
shuffled with `seed` and cut to its size.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from knobsweep.data import ConversionResult, messages_type, shuffle_key
from knobsweep.errors import DataError, FieldError
from knobsweep.hub import looks_like_hub_id
from knobsweep.io import JsonLine, file_sha256, json_lines, read_regular, require_utf8, special_kind
from knobsweep.spec.sources import CustomOptions

if TYPE_CHECKING:
    import pyarrow as pa

CONVERTER_VERSION = "2"  # 2: messages with a role other than ROLES are dropped
EXTENSIONS = {"jsonl": (".jsonl", ".json"), "parquet": (".parquet",)}
LABELS = {"true": True, "false": False}
# The roles TRL's chat-template path knows (trl.data_utils): a typo ("asistant") or another
# convention ("human", "gpt") would reach the template as an unknown turn.
ROLES = ("system", "user", "assistant", "tool")


# ------------------------------------------------------------------------------- inputs


@dataclass
class Part:
    """One readable piece of a split: a file, or a split of a loaded hf dataset."""

    label: str  # row_id prefix: the file stem or the split name
    name: str  # how messages and the manifest name it: the file, or "<path>:<split>"


def _files(options: CustomOptions) -> tuple[list[Path], list[Path] | None]:
    """(train files, eval files or None for a holdout) of a jsonl / parquet source."""
    if options.train_files is not None:
        train = [_existing_file("train_files", f) for f in options.train_files]
    else:
        path = Path(options.path).expanduser()
        if path.is_dir():
            return _directory_files(path, options)
        if not path.exists():
            raise FieldError("data.path", f"{options.path!r}: no such file or directory ({path.absolute()})")
        _regular("path", options.path, path)
        train = [path]
    if options.eval_files is not None:
        return train, [_existing_file("eval_files", f) for f in options.eval_files]
    if options.eval_ratio is None:
        raise FieldError(
            "data.eval_ratio",
            f"{', '.join(map(str, train))} holds no eval split; set data.eval_files, "
            f"or data.eval_ratio (e.g. 0.1) to hold out a seeded share of the train rows",
        )
    return train, None


def _existing_file(key: str, name: str) -> Path:
    path = Path(name).expanduser()
    if not path.is_file():
        what = "a directory" if path.is_dir() else special_kind(path) or "no such file"
        raise FieldError(f"data.{key}", f"{name!r} is {what} ({path.absolute()}); expected a data file")
    return path


def _regular(key: str, name: str, path: Path) -> None:
    """A device, FIFO or socket named as data would block (or never end) when read: refused."""
    kind = special_kind(path)
    if kind:
        raise FieldError(
            f"data.{key}", f"{name!r} is {kind} ({path.absolute()}); expected a regular data file or a directory"
        )


def _split_files(directory: Path, split: str, source: str) -> list[Path]:
    found = []
    for ext in EXTENSIONS[source]:
        found += [directory / f"{split}{ext}"] if (directory / f"{split}{ext}").exists() else []
        found += sorted(directory.glob(f"{split}-*{ext}"))
    for file in found:
        _regular("path", file.as_posix(), file)
    return [file for file in found if file.is_file()]  # a directory named like a split is not one


def _directory_files(directory: Path, options: CustomOptions) -> tuple[list[Path], list[Path] | None]:
    source = options.source
    pattern = " or ".join(f"<split>{ext}" for ext in EXTENSIONS[source])

    def present() -> str:
        names = sorted(p.name for ext in EXTENSIONS[source] for p in directory.glob(f"*{ext}"))
        return ", ".join(names) or f"no {' / '.join(EXTENSIONS[source])} files"

    train = _split_files(directory, options.train_split, source)
    if not train:
        raise FieldError(
            "data.train_split",
            f"{directory} has no {options.train_split!r} file ({pattern}, or shards <split>-*); it has: {present()}",
        )
    if options.eval_files is not None:
        return train, [_existing_file("eval_files", f) for f in options.eval_files]
    if options.eval_ratio is not None:
        return train, None
    evals = _split_files(directory, options.eval_split, source)
    if not evals:
        raise FieldError(
            "data.eval_split",
            f"{directory} has no {options.eval_split!r} file; it has: {present()}; "
            f"set data.eval_split, data.eval_files, or data.eval_ratio (e.g. 0.1) to hold out train rows",
        )
    return train, evals


def _labels(files: list[Path]) -> dict[Path, str]:
    """row_id prefixes: the file stem ("train" for a directory's train.jsonl, as the hub names
    splits), or the whole path where two files share a stem."""
    files = list(dict.fromkeys(files))  # one file may be read for both splits
    stems = [f.name.split(".")[0] for f in files]
    return {f: stem if stems.count(stem) == 1 else f.with_suffix("").as_posix() for f, stem in zip(files, stems)}


def _hf_local(options: CustomOptions) -> Path | None:
    """The local directory an hf `path` names, or None for a hub id or a loader name."""
    path = Path(options.path).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise FieldError(
            "data.path",
            f"{options.path!r} is {special_kind(path) or 'a file'}; for source 'hf' give a directory or a hub id, or "
            f"path: json (or parquet, csv) with data.train_files; for one file use source jsonl / parquet",
        )
    return None


def _tree_fingerprint(directory: Path) -> dict[str, str]:
    return {
        file.as_posix(): file_sha256(file)
        for file in sorted(directory.rglob("*"))
        if file.is_file() and not any(part.startswith(".") for part in file.relative_to(directory).parts)
    }


def split_files(options: CustomOptions) -> dict[str, list[Path]] | None:
    """{"train": files, "eval": files} of a local source (no "eval" when it is held out of the train rows),
    None for a hub dataset: the spec counts their rows before anything runs."""
    if options.source == "hf":
        return None
    train, evals = _files(options)
    return {"train": train, **({"eval": evals} if evals is not None else {})}


def input_fingerprint(options: CustomOptions) -> dict[str, str]:
    """{input file: sha256}; for a hub dataset {hub id: "hub:<id> config=... revision=..."}."""
    if options.source != "hf":
        train, evals = _files(options)
        return {f.as_posix(): file_sha256(f) for f in train + (evals or [])}
    for key in ("train_files", "eval_files"):
        for name in getattr(options, key) or []:
            _regular(key, name, Path(name).expanduser())
    data_files = [Path(f).expanduser() for f in (options.train_files or []) + (options.eval_files or [])]
    if data_files and all(f.is_file() for f in data_files):
        return {f.as_posix(): file_sha256(f) for f in data_files}
    local = _hf_local(options)
    if local is not None:
        return _tree_fingerprint(local)
    return {options.path: _hub_identity(options)}


def _hub_identity(options: CustomOptions) -> str:
    # Without a `revision` the hub copy can change under the same key: pin one to be sure.
    files = options.train_files or []
    return f"hub:{options.path} config={options.hub_config or 'default'} revision={options.revision or 'latest'}" + (
        f" data_files={','.join(files)}" if files else ""
    )


# ------------------------------------------------------------------------------- reading


def _read_file(path: Path, source: str) -> tuple[str, list]:
    """(sha256 of the bytes read, records) of one jsonl / parquet file."""
    data = read_regular(path)
    digest = hashlib.sha256(data).hexdigest()
    if source == "jsonl":
        require_utf8(data, path.as_posix())
        return digest, list(json_lines(data.splitlines(keepends=True)))
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(pa.BufferReader(data))
    except (pa.ArrowException, OSError) as error:
        raise DataError(f"{path}: not a readable Parquet file: {error}") from error
    return digest, [JsonLine(index, record) for index, record in enumerate(table.to_pylist())]


def _hf_splits(options: CustomOptions) -> dict:
    """{split name: datasets.Dataset} of an hf source, through the `datasets` library."""
    path, local = options.path, _hf_local(options)
    if local is None and not looks_like_hub_id(path):
        raise FieldError("data.path", f"{path!r}: no such directory ({Path(path).absolute()}) and not a hub dataset id")
    saved = local is not None and any((local / name).is_file() for name in ("dataset_dict.json", "state.json"))

    import datasets  # slow to import; only hf users pay for it

    data_files = None
    if options.train_files is not None:
        data_files = {options.train_split: options.train_files}
        if options.eval_files is not None:
            data_files[options.eval_split] = options.eval_files
    try:
        if saved:
            loaded = datasets.load_from_disk(str(local))
        else:
            loaded = datasets.load_dataset(path, options.hub_config, revision=options.revision, data_files=data_files)
    except Exception as error:  # network, auth, unknown id or config, unreadable files: all end here
        where = "the saved dataset" if saved else ("the local dataset" if local else "the Hugging Face hub dataset")
        raise FieldError(
            "data.path",
            f"{path!r}: loading {where} failed"
            + (f" (config {options.hub_config!r})" if options.hub_config else "")
            + f": {type(error).__name__}: {error}",
        ) from error
    if isinstance(loaded, datasets.Dataset):  # save_to_disk of one split
        return {options.train_split: loaded}
    return dict(loaded)


def _read_inputs(options: CustomOptions) -> tuple[dict[str, list[tuple[Part, list]] | None], dict[str, str]]:
    """({"train": [(part, records)], "eval": [...] or None (held out)}, inputs fingerprint)."""
    source = options.source
    if source != "hf":
        train, evals = _files(options)
        labels = _labels(train + (evals or []))
        inputs, parts = {}, {}
        for role, files in (("train", train), ("eval", evals)):
            if files is None:
                parts[role] = None
                continue
            parts[role] = []
            for file in files:
                inputs[file.as_posix()], records = _read_file(file, source)
                parts[role].append((Part(labels[file], str(file)), records))
        return parts, inputs

    splits = _hf_splits(options)
    parts = {}
    for role in ("train", "eval"):
        split = getattr(options, f"{role}_split")
        if role == "eval" and options.eval_ratio is not None:
            parts[role] = None
            continue
        if split not in splits:
            raise FieldError(
                f"data.{role}_split",
                f"dataset {options.path!r} has no split {split!r}; it has: "
                f"{', '.join(splits) or 'none'}"
                + ("; or set data.eval_ratio to hold out train rows" if role == "eval" else ""),
            )
        records = [JsonLine(index, record) for index, record in enumerate(splits[split].to_list())]
        parts[role] = [(Part(split, f"{options.path}:{split}"), records)]
    return parts, input_fingerprint(options)


# ------------------------------------------------------------------------------- rows


class BadRow(Exception):
    """A row that cannot be used; the message is the manifest's reason."""


def _messages(value, key: str, option: str, role: str) -> list[dict]:
    """A string -> one `role` message; a list of {role, content} -> those messages."""
    if isinstance(value, str):
        if not value.strip():
            raise BadRow(f"{key!r} ({option}) is empty")
        return [{"role": role, "content": value}]
    if isinstance(value, list) and value:
        messages = []
        for number, message in enumerate(value, 1):
            if not (
                isinstance(message, dict)
                and isinstance(message.get("role"), str)
                and isinstance(message.get("content"), str)
            ):
                raise BadRow(f"{key!r} ({option}) message {number} is not a {{role, content}} pair of strings")
            if message["role"] not in ROLES:
                raise BadRow(
                    f"{key!r} ({option}) message {number} has role {message['role']!r}; allowed: {', '.join(ROLES)}"
                )
            messages.append({"role": message["role"], "content": message["content"]})
        return messages
    got = "an empty list" if value == [] else type(value).__name__
    raise BadRow(f"{key!r} ({option}) must be a string or a list of {{role, content}} messages, got {got}")


def _column(record: dict, options: CustomOptions, option: str):
    key = getattr(options, option)
    if key not in record:
        raise BadRow(f"missing {key!r} (data.{option}); the row has: {', '.join(map(str, record)) or 'no columns'}")
    if record[key] is None:
        raise BadRow(f"{key!r} (data.{option}) is null")
    return record[key]


def _text(value) -> str:
    """A ground truth or extra as text: strings as they are, anything else as JSON."""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)


class RowBuilder:
    """Turns one input record into a train row of the run's format or an rl eval row."""

    def __init__(self, options: CustomOptions):
        self.options = options
        self.format = options.format
        system = options.system_prompt
        self.system = [{"role": "system", "content": system}] if system else []

    def name(self, option: str) -> str:
        """How a reason names a column: "'question' (data.prompt_key)"."""
        return f"{getattr(self.options, option)!r} (data.{option})"

    def messages(self, record: dict, option: str, role: str) -> list[dict]:
        value = _column(record, self.options, option)
        messages = _messages(value, getattr(self.options, option), f"data.{option}", role)
        if role == "assistant" and not any(m["role"] == "assistant" for m in messages):
            raise BadRow(f"{self.name(option)} has no assistant message")
        return messages

    def prompt(self, record: dict) -> list[dict]:
        return self._with_system(self.messages(record, "prompt_key", "user"))

    def _with_system(self, messages: list[dict]) -> list[dict]:
        return messages if not self.system or messages[0]["role"] == "system" else self.system + messages

    def conversation(self, record: dict) -> list[dict] | None:
        """An sft record's whole conversation, or None when it has none (prompt + response)."""
        if self.format != "sft" or record.get(self.options.messages_key) is None:
            return None
        messages = self._with_system(self.messages(record, "messages_key", "user"))
        if not any(m["role"] == "assistant" for m in messages):
            raise BadRow(f"{self.name('messages_key')} has no assistant message")
        return messages

    def extras(self, record: dict) -> dict:
        missing = [key for key in self.options.extra_keys if key not in record]
        if missing:
            raise BadRow(
                f"missing extra column {missing[0]!r} (data.extra_keys); the row has: {', '.join(map(str, record))}"
            )
        return {key: record[key] for key in self.options.extra_keys}

    def label(self, record: dict) -> bool:
        value = _column(record, self.options, "label_key")
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in LABELS:
            return LABELS[value.strip().lower()]
        raise BadRow(f'{self.name("label_key")} must be a bool, 0/1 or "true"/"false", got {value!r}')

    def train_row(self, record: dict, row_id: str) -> dict:
        if self.format == "rl":
            return self.eval_row(record, row_id)
        if self.format == "sft":
            conversation = self.conversation(record)
            if conversation is not None:
                return {"row_id": row_id, "messages": conversation}
            if record.get(self.options.prompt_key) is None:
                raise BadRow(
                    f"no {self.name('messages_key')} and no {self.name('prompt_key')}; "
                    f"the row has: {', '.join(map(str, record)) or 'no columns'}"
                )
            return {
                "row_id": row_id,
                "prompt": self.prompt(record),
                "completion": self.messages(record, "response_key", "assistant"),
            }
        # kto: one assistant turn and a yes/no label
        prompt, completion = self.prompt(record), self.messages(record, "response_key", "assistant")
        if len(completion) != 1:
            raise BadRow(
                f"{self.name('response_key')} must be one assistant message for kto, got {len(completion)} messages"
            )
        return {"row_id": row_id, "prompt": prompt, "completion": completion, "label": self.label(record)}

    def eval_row(self, record: dict, row_id: str) -> dict:
        """An rl row: prompt + ground_truth (+ extras). sft / kto data without a ground-truth
        column is scored against its reference response."""
        prompt, truth = self._prompt_and_reference(record)
        if truth is None:
            truth = _text(_column(record, self.options, "ground_truth_key"))
        if not truth.strip():
            raise BadRow(f"{self.name('ground_truth_key')} is empty")
        return {"row_id": row_id, "prompt": prompt, "ground_truth": truth, **self.extras(record)}

    def _prompt_and_reference(self, record: dict) -> tuple[list[dict], str | None]:
        """(prompt, the reference response when sft / kto data has no ground-truth column, else None)."""
        need_reference = self.format != "rl" and record.get(self.options.ground_truth_key) is None
        conversation = self.conversation(record)
        if conversation is not None:
            # The conversation up to its last assistant turn is the prompt; that turn the reference.
            last = max(i for i, m in enumerate(conversation) if m["role"] == "assistant")
            if last == 0:
                raise BadRow(f"{self.name('messages_key')} starts with the assistant: no prompt to evaluate")
            return conversation[:last], conversation[last]["content"] if need_reference else None
        prompt = self.prompt(record)
        if not need_reference:
            return prompt, None
        if self.format == "kto" and not self.label(record):
            raise BadRow(
                f"labelled false and no {self.name('ground_truth_key')}: no reference answer to evaluate against"
            )
        completion = self.messages(record, "response_key", "assistant")
        return prompt, "\n".join(m["content"] for m in completion if m["role"] == "assistant")


# ------------------------------------------------------------------------------- convert


def convert(options: CustomOptions) -> ConversionResult:
    """Read the inputs, build rows of the run's format (eval: rl rows), shuffle and cut."""
    parts, inputs = _read_inputs(options)
    builder = RowBuilder(options)
    dropped: list[dict] = []

    # Per split, (part, index, record) of every JSON object read; anything else is dropped here.
    parsed: dict[str, list] = {"train": [], "eval": []}
    for role, role_parts in parts.items():
        for part, records in role_parts or []:
            for line in records:
                reason = line.error
                if reason is None and not isinstance(line.value, dict):
                    reason = f"not a JSON object: {type(line.value).__name__}"
                if reason is None:
                    parsed[role].append((part, line.index, line.value))
                else:
                    dropped.append(_dropped(role, part, line.index, reason))
    if parts["eval"] is None:
        parsed["train"], parsed["eval"] = _hold_out(parsed["train"], options, parts["train"], dropped)

    rows: dict[str, list[dict]] = {}
    for role, make in (("train", builder.train_row), ("eval", builder.eval_row)):
        rows[role] = []
        for part, index, record in parsed[role]:
            try:
                rows[role].append(make(record, f"{part.label}-{index}"))
            except BadRow as error:
                dropped.append(_dropped(role, part, index, str(error)))
        rows[role] = _select(rows[role], role, options, parts, dropped)

    train, stats = _finish_train(rows["train"], options.format)
    dropped.sort(key=lambda d: (d["split"] != "train", d["file"], d["line"]))  # in reading order
    extras = _extra_types(rows["train"] + rows["eval"], options)
    _encode_extras(train + rows["eval"], extras)
    schema, eval_schema = _schemas(options.format, train, extras)
    return ConversionResult(
        train=train,
        eval=rows["eval"],
        schema=schema,
        eval_schema=eval_schema,
        options=options.model_dump(mode="json"),
        inputs=inputs,
        dropped=dropped,
        stats=stats,
    )


def _dropped(role: str, part: Part, index: int, reason: str) -> dict:
    return {"split": role, "file": part.name, "line": index + 1, "reason": reason}


def _hold_out(rows: list, options: CustomOptions, parts: list, dropped: list[dict]) -> tuple[list, list]:
    """(train, eval) of one pool: a seeded `eval_ratio` share, at least one row each."""
    if len(rows) < 2:
        where = ", ".join(part.name for part, _ in parts)
        raise FieldError(
            "data.eval_ratio",
            f"holding out eval rows needs at least 2 readable train rows, got {len(rows)} from {where}: "
            + _shortage([d for d in dropped if d["split"] == "train"], len(rows)),
        )
    order = sorted(rows, key=lambda r: shuffle_key(options.seed, f"{r[0].label}-{r[1]}", salt="holdout:"))
    count = min(max(1, round(options.eval_ratio * len(rows))), len(rows) - 1)
    held = {id(r) for r in order[:count]}
    # Keep the input order within each side; the split-wise shuffle comes later.
    return [r for r in rows if id(r) not in held], [r for r in rows if id(r) in held]


def _select(rows: list[dict], role: str, options: CustomOptions, parts: dict, dropped: list[dict]) -> list[dict]:
    """Shuffle with the seed and cut to size; an empty or all-bad split is an error."""
    where = ", ".join(part.name for part, _ in (parts[role] or parts["train"]))
    label = f"{where} ({role} rows{', held out by data.eval_ratio' if parts[role] is None else ''})"
    if not rows:
        bad = sorted((d for d in dropped if d["split"] == role), key=lambda d: (d["file"], d["line"]))
        if not bad:
            raise DataError(f"{label}: no rows (the input is empty)")
        raise DataError(
            f"{label}: no usable rows for format {options.format!r}, all {len(bad)} were dropped ({_first(bad)})"
        )
    rows.sort(key=lambda row: shuffle_key(options.seed, row["row_id"]))
    size = getattr(options, f"{role}_size")
    if size is not None and size > len(rows):
        raise FieldError(
            f"data.{role}_size",
            f"{label}: asks for {size} rows but only {len(rows)} are usable; lower it or set it to null for all rows",
        )
    return rows[:size]


def _first(bad: list[dict]) -> str:
    return "; ".join(f"{d['file']} line {d['line']}: {d['reason']}" for d in bad[:3])


def _shortage(bad: list[dict], readable: int) -> str:
    """Why a pool holds `readable` rows: the input is empty, or its other rows were dropped (the first reasons)."""
    if not bad:
        return "the input is empty" if readable == 0 else "the input holds only that row"
    bad = sorted(bad, key=lambda d: (d["file"], d["line"]))
    every = "all " if readable == 0 else ""
    return f"{every}{len(bad)} rows were dropped as unreadable ({_first(bad)})"


def _finish_train(rows: list[dict], fmt: str) -> tuple[list[dict], dict]:
    """sft rows in one shape (messages when any row is a whole conversation); the stats."""
    if fmt == "kto":
        true = sum(row["label"] for row in rows)
        return rows, {"label_true": true, "label_false": len(rows) - true}
    if fmt == "sft" and any("messages" in row for row in rows):
        converted = [row for row in rows if "messages" not in row]
        rows = [
            row if "messages" in row else {"row_id": row["row_id"], "messages": row["prompt"] + row["completion"]}
            for row in rows
        ]
        return rows, ({"prompt_completion_as_messages": len(converted)} if converted else {})
    return rows, {}


def _extra_types(rows: list[dict], options: CustomOptions) -> dict[str, str]:
    """One Arrow type (its pyarrow name) per extra column: its values' type, or JSON text when they are mixed."""
    types = {}
    for key in options.extra_keys:
        kinds = {type(row[key]) for row in rows if row.get(key) is not None}
        if kinds == {bool}:
            types[key] = "bool_"
        elif kinds == {int}:
            types[key] = "int64"
        elif kinds and kinds <= {int, float}:
            types[key] = "float64"
        else:
            types[key] = "string"
    return types


def _encode_extras(rows: list[dict], types: dict[str, str]) -> None:
    for key, kind in types.items():
        for row in rows:
            if row.get(key) is not None and kind == "string":
                row[key] = _text(row[key])


def _schemas(fmt: str, rows: list[dict], extras: dict[str, str]) -> tuple[pa.Schema, pa.Schema]:
    """(train.parquet's schema, eval.parquet's: rl rows with the extra columns)."""
    import pyarrow as pa

    messages, text = messages_type(), pa.string()
    rl = pa.schema(
        [
            ("row_id", text),
            ("prompt", messages),
            ("ground_truth", text),
            *((key, getattr(pa, kind)()) for key, kind in extras.items()),
        ]
    )
    if fmt == "rl":
        return rl, rl
    if fmt == "kto":
        return pa.schema([("row_id", text), ("prompt", messages), ("completion", messages), ("label", pa.bool_())]), rl
    if rows and "messages" in rows[0]:
        return pa.schema([("row_id", text), ("messages", messages)]), rl
    return pa.schema([("row_id", text), ("prompt", messages), ("completion", messages)]), rl

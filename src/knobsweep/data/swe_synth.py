"""SWE agent trajectories -> SFT rows (SWE-Synth, SWE-smith, SWE-agent, mini-swe-agent).

Inputs: `path`, a hub dataset id (default swesynth/SWE-Synth_Moatless-SFT-Trajectories:
instance_id, messages, model_patch, run_name; `train_split` train) or a local file / directory;
or `paths`, several local files / directories read in order. Accepted record layouts:
- {instance_id, messages, model_patch?, problem_statement?, repo?} (SWE-Synth, SWE-smith
  `ft_xml`), in JSONL, parquet, or a JSON list of them; `conversations` (ShareGPT) = messages;
- a SWE-agent `.traj` file: `history` -> messages, `info.submission` -> model_patch, the file
  name (without .traj / .json) -> instance_id; a mini-swe-agent trajectory file (a JSON list of
  messages, or {messages, info: {submission}});
- predictions: {instance_id, model_patch} (JSONL, or a JSON object mapping ids to them, as in
  SWE-bench preds.json / mini-swe-agent results). A prediction gives its patch to the
  trajectory with the same instance_id that has none; one with no such trajectory is dropped.

Messages are normalised: roles system / user / assistant (human -> user, gpt -> assistant);
tool outputs (roles tool, function, ipython, observation) become `tool_role` messages:
"user" (the default: every chat template renders it, as SWE-agent feeds observations back)
or "tool" (for a template that renders tool turns, e.g. Qwen's). Content given as a list of
parts joins the parts' text; an assistant's `tool_calls` are appended to its content as
<tool_call> JSON; consecutive messages of one role are joined (some templates require
alternation).

`mode`:
- "trajectory" (default): sft rows {row_id, messages}: the whole conversation, ending at its
  last assistant turn (trailing observations teach nothing);
- "patch": sft rows {row_id, prompt, completion}: the prompt (`prompt_from`: "messages" = the
  trajectory's messages before the first assistant turn; "problem_statement" = the record's
  problem statement in swe_bench's prompt), the instruction to answer with a diff, and
  model_patch in a ```diff block as the assistant turn. Rows without a well-formed patch are dropped.

Eval rows are always rl rows (row_id, prompt, ground_truth = model_patch or "" when the
record has none, instance_id, origin), the prompt built as in patch mode, so the eval stage
can score generated patches with the swe_patch evaluator (rows without a patch are scored
invalid). `eval_ratio` of the rows go to eval, whole instance_ids at a time (a seeded hash
order), then `train_size` / `eval_size` cut each split.

Truncation: `max_length` (tokens; null = none) x `chars_per_token` (default 3.5) is a character
budget for each row's text (message contents + 16 characters per message for the chat
template's markers). A trajectory keeps its longest run of whole turns from the start that
fits and ends with an assistant turn; when not even the first assistant turn fits, the longest
messages before it are cut (head kept, a "[... N characters cut ...]" marker added). Patch rows
and eval prompts cut their longest prompt messages the same way; the patch is never cut (a row
whose patch alone is over budget is dropped). The manifest's stats: truncated_train,
truncated_eval, eval_without_patch, char_budget.

row_id: the instance_id (#2, #3... when an id repeats); "row-<k>" for records without one.
Extra column `origin` ("<file>:<line>") names where each row was read.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from knobsweep.data import ConversionResult, _files, messages_type
from knobsweep.data._files import Record
from knobsweep.data.swe_bench import inputs_label, issue_message, split_rows, summarise_dropped, with_instruction
from knobsweep.errors import DataError
from knobsweep.spec.sources import SweSynthOptions

if TYPE_CHECKING:
    import pyarrow as pa

CONVERTER_VERSION = "1"
MESSAGE_OVERHEAD = 16  # characters per message for the chat template's role markers


@functools.cache
def schemas() -> dict[str, pa.Schema]:
    """The train rows' schema of each mode, and the eval rows' ("eval")."""
    import pyarrow as pa

    messages, text = messages_type(), pa.string()
    return {
        "trajectory": pa.schema([("row_id", text), ("messages", messages)]),
        "patch": pa.schema([("row_id", text), ("prompt", messages), ("completion", messages)]),
        "eval": pa.schema(
            [("row_id", text), ("prompt", messages), ("ground_truth", text), ("instance_id", text), ("origin", text)]
        ),
    }


_ROLES = {
    "system": "system",
    "user": "user",
    "human": "user",
    "assistant": "assistant",
    "gpt": "assistant",
    "model": "assistant",
}
_TOOL_ROLES = ("tool", "function", "ipython", "observation")


def char_budget(options: SweSynthOptions) -> int | None:
    length = options.max_length
    return None if length is None else int(length * options.chars_per_token)


def _local_files(options: SweSynthOptions) -> list[Path]:
    if options.paths is not None:
        return _files.expand_paths(options.paths, "paths")
    return _files.expand_paths([options.path], "path")


def input_fingerprint(options: SweSynthOptions) -> dict[str, str]:
    """{input file: sha256} for local files, {hub id: "hub:<id>@<config>/<split>"} otherwise."""
    if options.is_hub:
        return {options.path: f"hub:{options.path}@{options.hub_config}/{options.train_split}"}
    return _files.fingerprint(_local_files(options))


# ------------------------------------------------------------------------------ records


@dataclass
class Entry:
    """One input record, normalised: a trajectory, a prediction (patch only), or both."""

    origin: Record
    instance_id: str | None
    messages: list[dict] | None
    model_patch: str | None
    problem_statement: str | None
    repo: str | None

    @property
    def prediction_only(self) -> bool:
        return self.messages is None and self.problem_statement is None


def _records(options: SweSynthOptions, inputs: dict[str, str]) -> Iterator[Record]:
    if options.is_hub:
        dataset = _files.load_hub_split(options.path, options.hub_config, options.train_split)
        inputs[options.path] = f"hub:{options.path}@{options.hub_config}/{options.train_split}"
        yield from _files.hub_records(dataset, f"hub:{options.path}/{options.train_split}")
        return
    for file in _local_files(options):
        digest, records = _files.read_file(file)
        inputs[file.as_posix()] = digest
        yield from records


def _file_stem(name: str) -> str:
    stem = Path(name).name
    for suffix in (".json", ".traj"):
        stem = stem.removesuffix(suffix)
    return stem


def _is_message(value) -> bool:
    return isinstance(value, dict) and ("role" in value or "from" in value)


def _expand(record: Record) -> Iterator[tuple[Record, object]]:
    """(where, record value) per record: a JSON file may hold one trajectory, a list of records,
    or an {instance_id: prediction} mapping."""
    value = record.value
    if not record.document:
        yield record, value
    elif isinstance(value, list) and value and all(_is_message(m) for m in value):
        yield record, {"messages": value}  # a mini-swe-agent message list: one trajectory
    elif isinstance(value, list):
        for number, item in enumerate(value, start=1):
            yield Record(record.file, number, item), item
    elif (
        isinstance(value, dict)
        and value
        and "messages" not in value
        and "history" not in value
        and all(isinstance(v, dict) and "model_patch" in v for v in value.values())
    ):
        for number, (key, item) in enumerate(value.items(), start=1):
            yield Record(record.file, number, item), {"instance_id": key, **item}
    else:
        yield record, value


def _text(value) -> str | None:
    if hasattr(value, "tolist"):
        value = value.tolist()
    return value if isinstance(value, str) and value.strip() else None


def _entry(record: Record, value, tool_role: str) -> tuple[Entry | None, str | None]:
    if not isinstance(value, dict):
        return None, f"not a JSON object: {type(value).__name__}"
    info = value.get("info") if isinstance(value.get("info"), dict) else {}
    raw = next((value[k] for k in ("messages", "history", "conversations") if value.get(k) is not None), None)
    messages = None
    if raw is not None:
        messages, problem = normalise_messages(raw, tool_role)
        if problem:
            return None, problem
    instance_id = _text(value.get("instance_id")) or (_file_stem(record.file) if record.document else None)
    entry = Entry(
        origin=record,
        instance_id=instance_id,
        messages=messages,
        model_patch=_text(value.get("model_patch")) or _text(info.get("submission")),
        problem_statement=_text(value.get("problem_statement")),
        repo=_text(value.get("repo")),
    )
    if entry.prediction_only and entry.model_patch is None:
        return None, "no trajectory: none of messages / history / conversations, and no model_patch"
    if entry.prediction_only and entry.instance_id is None:
        return None, "a prediction (model_patch) without an instance_id"
    return entry, None


def _content(message: dict, number: int) -> tuple[str | None, str | None]:
    content = message.get("content", message.get("value"))
    if hasattr(content, "tolist"):
        content = content.tolist()
    if content is None:
        text = ""
    elif isinstance(content, str):
        text = content
    elif isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, dict) and isinstance(part.get("text"), str):
                parts.append(part["text"])
            else:
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                return None, f"message {number}: a content part of type {kind!r} has no text"
        text = "\n".join(parts)
    else:
        return None, f"message {number}: content of type {type(content).__name__}, expected text or a list of parts"
    calls = message.get("tool_calls")
    if hasattr(calls, "tolist"):
        calls = calls.tolist()
    for call in calls or []:
        function = call.get("function", call) if isinstance(call, dict) else call
        text += f"\n<tool_call>\n{json.dumps(function, ensure_ascii=False, default=str)}\n</tool_call>"
    return text, None


def normalise_messages(raw, tool_role: str = "user") -> tuple[list[dict] | None, str | None]:
    """(messages as [{role, content}] with the roles above, None) or (None, why not)."""
    if hasattr(raw, "tolist"):
        raw = raw.tolist()
    if not isinstance(raw, list) or not raw:
        return None, f"messages: expected a non-empty list of messages, got {type(raw).__name__}"
    out: list[dict] = []
    for number, message in enumerate(raw, start=1):
        if not isinstance(message, dict):
            return None, f"message {number}: not an object ({type(message).__name__})"
        given = message.get("role", message.get("from"))
        role = tool_role if given in _TOOL_ROLES else _ROLES.get(given)
        if role is None:
            allowed = ", ".join(list(_ROLES) + list(_TOOL_ROLES))
            return None, f"message {number}: unknown role {given!r} (allowed: {allowed})"
        text, problem = _content(message, number)
        if problem:
            return None, problem
        if out and out[-1]["role"] == role:
            joined = (out[-1]["content"], text)
            out[-1]["content"] = "\n\n".join(joined) if all(joined) else "".join(joined)
        else:
            out.append({"role": role, "content": text})
    return out, None


def _attach_predictions(entries: list[Entry], dropped: list[dict]) -> list[Entry]:
    """Predictions give their patch to same-id trajectories without one; unmatched ones are dropped."""
    full = [e for e in entries if not e.prediction_only]
    ids = {e.instance_id for e in full}
    for prediction in (e for e in entries if e.prediction_only):
        if prediction.instance_id not in ids:
            dropped.append(
                _drop(
                    prediction.origin,
                    f"prediction for {prediction.instance_id!r}: no trajectory with that instance_id in the inputs",
                )
            )
            continue
        for entry in full:
            if entry.instance_id == prediction.instance_id and entry.model_patch is None:
                entry.model_patch = prediction.model_patch
    return full


def _drop(record: Record, reason: str) -> dict:
    return {"split": "input", "file": record.file, "line": record.line, "reason": reason}


# ------------------------------------------------------------------------------ truncation


def _size(messages: list[dict]) -> int:
    return sum(len(m["content"]) + MESSAGE_OVERHEAD for m in messages)


def _marker(count: int) -> str:
    return f"\n[... {count} characters cut ...]"


def _cut(content: str, cap: int) -> str:
    return content if len(content) <= cap else content[:cap] + _marker(len(content) - cap)


def shrink(messages: list[dict], budget: int, protected: set[int]) -> list[dict] | None:
    """`messages` cut to `budget` characters, or None when that cannot be done.

    The unprotected contents are capped at one common length (the longest cut most, short ones
    kept whole), each cut keeping its head plus a "[... N characters cut ...]" marker.
    """
    if _size(messages) <= budget:
        return messages
    free = [i for i in range(len(messages)) if i not in protected]
    available = budget - _size(messages) + sum(len(messages[i]["content"]) for i in free)

    def cost(cap: int) -> int:
        return sum(len(_cut(messages[i]["content"], cap)) for i in free)

    low, high = 0, max((len(messages[i]["content"]) for i in free), default=0)
    while low < high:  # the largest cap that fits
        middle = (low + high + 1) // 2
        low, high = (middle, high) if cost(middle) <= available else (low, middle - 1)
    if not free or cost(low) > available:
        return None
    return [
        {"role": m["role"], "content": _cut(m["content"], low) if i in free else m["content"]}
        for i, m in enumerate(messages)
    ]


def fit_trajectory(messages: list[dict], budget: int) -> list[dict] | None:
    """The longest start of whole turns that fits and ends with an assistant turn; else the first
    exchange with its longest context messages cut; None when the first assistant turn alone is over."""
    size, best = 0, None
    for index, message in enumerate(messages):
        size += len(message["content"]) + MESSAGE_OVERHEAD
        if size > budget:
            break
        if message["role"] == "assistant":
            best = index
    if best is not None:
        return messages[: best + 1]
    first = next(i for i, m in enumerate(messages) if m["role"] == "assistant")
    return shrink(messages[: first + 1], budget, protected={first})


# ------------------------------------------------------------------------------ rows


def _context(entry: Entry, prompt_from: str) -> tuple[list[dict] | None, str | None]:
    """The patch-mode / eval prompt before the diff instruction, or (None, why not)."""
    if prompt_from == "problem_statement":
        if entry.problem_statement is None:
            return None, "no problem_statement (data.prompt_from: problem_statement)"
        return [issue_message(entry.problem_statement, entry.repo)], None
    if entry.messages is None:
        return None, "no messages to take the prompt from (data.prompt_from: messages)"
    first = next((i for i, m in enumerate(entry.messages) if m["role"] == "assistant"), len(entry.messages))
    if first == 0:
        return None, "the trajectory starts with an assistant turn: no prompt before it"
    return entry.messages[:first], None


def _prompt(context: list[dict], budget: int | None) -> list[dict] | None:
    """The context cut to leave room for the instruction within `budget`, then the instruction."""
    if budget is None:
        return with_instruction(context)
    room = budget - (_size(with_instruction(context)) - _size(context))
    fitted = shrink(context, room, protected=set())
    return None if fitted is None else with_instruction(fitted)


def _fenced(patch: str) -> str:
    return "```diff\n" + patch.strip("\n") + "\n```"


def _well_formed(patch: str | None) -> str | None:
    from knobsweep.rewards.swe import parse_patch  # light: unidiff only

    if patch is None:
        return "no model_patch (data.mode: patch needs one)"
    try:
        parse_patch(patch)
    except ValueError as error:
        return f"model_patch: {error}"
    return None


def _rows(entry: Entry, options: SweSynthOptions, budget: int | None) -> tuple[dict | None, str | None]:
    """(a row with both forms' fields and whether its train / eval text was cut, or why it cannot be used)."""
    context, problem = _context(entry, options.prompt_from)
    if problem:
        return None, problem
    row = {
        "ground_truth": entry.model_patch or "",
        "instance_id": entry.instance_id,
        "origin": entry.origin.origin,
        "cut_train": False,
    }
    if options.mode == "trajectory":
        if entry.messages is None:
            return None, "no messages (data.mode: trajectory trains on the conversation)"
        messages = entry.messages
        while messages and messages[-1]["role"] != "assistant":
            messages = messages[:-1]  # trailing observations teach nothing
        if not messages:
            return None, "no assistant message in the trajectory"
        if budget is not None and _size(messages) > budget:
            messages = fit_trajectory(messages, budget)
            if messages is None:
                return None, f"the first assistant turn alone is over the {budget}-character budget"
            row["cut_train"] = True
        row["messages"] = messages
        prompt_budget = budget
    else:
        problem = _well_formed(entry.model_patch)
        if problem:
            return None, problem
        row["completion"] = [{"role": "assistant", "content": _fenced(entry.model_patch)}]
        prompt_budget = None if budget is None else budget - _size(row["completion"])
    row["prompt"] = _prompt(context, prompt_budget)
    if row["prompt"] is None:
        return None, (
            f"the prompt cannot be cut to fit the {budget}-character budget"
            + (f" beside the {_size(row['completion'])}-character patch" if "completion" in row else "")
        )
    row["cut_eval"] = row["prompt"] != with_instruction(context)
    if options.mode == "patch":
        row["cut_train"] = row["cut_eval"]  # the same prompt
    return row, None


def convert(options: SweSynthOptions) -> ConversionResult:
    """Read and normalise the trajectories, attach predictions, build rows, split and cut."""
    budget = char_budget(options)
    inputs: dict[str, str] = {}
    entries, dropped = [], []
    for record in _records(options, inputs):
        if record.error:
            dropped.append(_drop(record, record.error))
            continue
        for where, value in _expand(record):
            entry, reason = _entry(where, value, options.tool_role)
            if entry is None:
                dropped.append(_drop(where, reason))
            else:
                entries.append(entry)
    entries = _attach_predictions(entries, dropped)
    what = inputs_label(inputs)

    rows = []
    counts: dict[str, int] = {}
    for entry in entries:
        row, reason = _rows(entry, options, budget)
        if row is None:
            dropped.append(_drop(entry.origin, reason))
            continue
        base = entry.instance_id or f"row-{len(rows)}"
        counts[base] = counts.get(base, 0) + 1
        row["row_id"] = base if counts[base] == 1 else f"{base}#{counts[base]}"
        row["group"] = base
        rows.append(row)
    if not rows:
        if not dropped:
            raise DataError(f"{what}: no trajectories (the input is empty)")
        raise DataError(
            f"{what}: no usable trajectories, all {len(dropped)} records were dropped ({summarise_dropped(dropped)})"
        )

    train, evals = split_rows(rows, lambda row: row["group"], options, what)
    train_fields = ("row_id", "messages") if options.mode == "trajectory" else ("row_id", "prompt", "completion")
    train_rows = [{key: row[key] for key in train_fields} for row in train]
    eval_rows = [
        {
            "row_id": row["row_id"],
            "prompt": row["prompt"],
            "ground_truth": row["ground_truth"],
            "instance_id": row["instance_id"],
            "origin": row["origin"],
        }
        for row in evals
    ]
    stats = {
        "truncated_train": sum(row["cut_train"] for row in train),
        "truncated_eval": sum(row["cut_eval"] for row in evals),
        "eval_without_patch": sum(not row["ground_truth"] for row in evals),
    }
    if budget is not None:
        stats["char_budget"] = budget
    return ConversionResult(
        train=train_rows,
        eval=eval_rows,
        schema=schemas()[options.mode],
        eval_schema=schemas()["eval"],
        options=options.model_dump(mode="json"),
        inputs=inputs,
        dropped=dropped,
        stats=stats,
    )

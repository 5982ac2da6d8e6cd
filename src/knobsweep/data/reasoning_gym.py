"""reasoning-gym's procedurally generated tasks -> rl rows, scored by reasoning-gym's own score_answer.

Tasks. `tasks` names reasoning-gym generators (`reasoning_gym.create_dataset(name, seed=, size=, **config)`),
each with its options (`config`) and a `weight`: each split's rows are shared by weight (several tasks make a
mixture, each row scored by its own task's scorer: knobsweep.rewards.reasoning_gym).

Seeds. reasoning-gym generates row i of a dataset from `Random(seed + i)`, so train row i of a task uses
`seed + i` and eval row j uses `eval_seed + j` (default `seed + 1,000,000`): the seed ranges never overlap
(the options refuse an eval_seed that makes them), and the eval rows stay put when train_size changes.
Small tasks still repeat questions, so by default (`eval_overlap: drop`) an eval row whose question is also a
train row's of the same task is dropped and listed in the manifest's `dropped` ("line" = eval row index + 1);
with `eval_overlap: keep` they stay. Nothing is downloaded: the same options and reasoning-gym version give
the same rows, byte for byte.

Format `sft` (train rows only; eval rows stay rl): the prompt, and `<answer>ANSWER</answer>` as the assistant's
completion, for an SFT run that teaches the answer format before GRPO (train.warm_start_from).

Rows: row_id "<split>-<task>-<index>", prompt (the system prompt, reasoning-gym's `default` unless
`system_prompt` says otherwise, then the question as the user's message), ground_truth (the answer), answer
(the reference completion `<answer>ANSWER</answer>`, the format the system prompt asks for: the training
stage's evaluator smoke test and the tiny model's tokenizer read it), task, entry (the generated item as JSON:
question, answer and metadata, what score_answer reads) and task_seed.
"""

from __future__ import annotations

import importlib.metadata
import json
from typing import TYPE_CHECKING

from knobsweep.data import ConversionResult, messages_type
from knobsweep.errors import FieldError
from knobsweep.spec.sources import ReasoningGymOptions

if TYPE_CHECKING:
    import pyarrow as pa

CONVERTER_VERSION = "1"


def sft_schema() -> pa.Schema:
    """sft train rows: the prompt, and the reference completion as the assistant's turn."""
    import pyarrow as pa

    return pa.schema([("row_id", pa.string()), ("prompt", messages_type()), ("completion", messages_type())])


def row_schema() -> pa.Schema:
    """The rl rows' schema (train, and eval in every format)."""
    import pyarrow as pa

    return pa.schema(
        [
            ("row_id", pa.string()),
            ("prompt", messages_type()),
            ("ground_truth", pa.string()),
            ("answer", pa.string()),
            ("task", pa.string()),
            ("entry", pa.string()),
            ("task_seed", pa.int64()),
        ]
    )


def reasoning_gym_version() -> str:
    return importlib.metadata.version("reasoning-gym")


def input_fingerprint(options: ReasoningGymOptions) -> dict[str, str]:
    """No input files: the rows come from the generators, so the installed reasoning-gym is the input."""
    return {"reasoning_gym": f"reasoning-gym=={reasoning_gym_version()}"}


def system_message(options: ReasoningGymOptions) -> list[dict]:
    """The system message the prompt starts with: a reasoning-gym prompt by name, the text given, or none."""
    if options.system_prompt is None:
        return []
    from reasoning_gym.utils import SYSTEM_PROMPTS

    return [{"role": "system", "content": SYSTEM_PROMPTS.get(options.system_prompt, options.system_prompt)}]


def answer_text(answer) -> str:
    return answer if isinstance(answer, str) else json.dumps(answer, sort_keys=True)


def generate(options: ReasoningGymOptions, split: str, first_seed: int, sizes: list[int]) -> list[dict]:
    """One split's rows: `sizes[k]` rows of task k, generated with seeds first_seed, first_seed + 1, ..."""
    import reasoning_gym

    system = system_message(options)
    rows = []
    for task, size in zip(options.tasks, sizes):
        dataset = reasoning_gym.create_dataset(task.name, seed=first_seed, size=size, **task.config)
        for index in range(size):
            item = dataset[index]
            answer = answer_text(item["answer"])
            entry = {"question": item["question"], "answer": item["answer"], "metadata": item.get("metadata", {})}
            rows.append(
                {
                    "row_id": f"{split}-{task.name}-{index}",
                    "prompt": [*system, {"role": "user", "content": item["question"]}],
                    "ground_truth": answer,
                    "answer": f"<answer>{answer}</answer>",
                    "task": task.name,
                    "entry": json.dumps(entry, sort_keys=True, default=str),
                    "task_seed": first_seed + index,
                }
            )
    return rows


def convert(options: ReasoningGymOptions) -> ConversionResult:
    """Generate both splits, then drop (or keep) eval rows whose question a train row of the same task has."""
    train = generate(options, "train", options.seed, options.per_task(options.train_size))
    candidates = generate(options, "eval", options.eval_seed, options.per_task(options.eval_size))
    seen = {(row["task"], row["prompt"][-1]["content"]) for row in train}
    evaluation, dropped = [], []
    for row in candidates:
        if options.eval_overlap == "drop" and (row["task"], row["prompt"][-1]["content"]) in seen:
            index = int(row["row_id"].rsplit("-", 1)[1])
            dropped.append(
                {"split": "eval", "line": index + 1, "reason": f"{row['task']}: the question of a train row"}
            )
        else:
            evaluation.append(row)
    left = {row["task"] for row in evaluation}
    empty = [task.name for task in options.tasks if task.name not in left]
    if empty:
        raise FieldError(
            "data.eval_overlap",
            f"every eval row of {', '.join(empty)} repeats a train question (the task has few distinct "
            "questions): raise data.eval_size, make the task harder (its config), or set eval_overlap: keep",
        )
    rows = train
    if options.format == "sft":  # learn the answer format (and the answers) before a reward can pay for it
        rows = [
            {
                "row_id": r["row_id"],
                "prompt": r["prompt"],
                "completion": [{"role": "assistant", "content": r["answer"]}],
            }
            for r in train
        ]
    return ConversionResult(
        train=rows,
        eval=evaluation,
        schema=sft_schema() if options.format == "sft" else row_schema(),
        eval_schema=row_schema(),
        options=options.model_dump(mode="json"),
        inputs=input_fingerprint(options),
        dropped=dropped,
        stats={
            "reasoning_gym_version": reasoning_gym_version(),
            "tasks": {
                task.name: {
                    "train": sum(row["task"] == task.name for row in train),
                    "eval": sum(row["task"] == task.name for row in evaluation),
                    "train_seeds": [options.seed, options.seed + count - 1],
                    "eval_seeds": [options.eval_seed, options.eval_seed + eval_count - 1],
                }
                for task, count, eval_count in zip(
                    options.tasks, options.per_task(options.train_size), options.per_task(options.eval_size)
                )
            },
        },
    )

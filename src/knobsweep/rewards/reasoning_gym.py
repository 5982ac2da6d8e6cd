"""reasoning-gym's own scorers: the answer extracted as reasoning-gym documents it, scored by its task's score_answer.

    answer = reasoning_gym.utils.extract_answer(completion, tag_name=tag)   # the last <answer>...</answer>
    score  = reasoning_gym.get_score_answer_fn(row["task"])(answer=answer, entry=json.loads(row["entry"]))

Each row carries its own task (knobsweep.data.reasoning_gym), so a mixture scores every row with its own task's
scorer. `format_weight` (default 0) pays a completion for writing `<answer>` tags at all, as the gsm8k evaluator
pays for `#### N`: score = format_weight * answered + (1 - format_weight) * reasoning-gym's score (exactly 1 for a
right answer). Metrics: answered (1 when the tags were found), correct (1 when reasoning-gym scores it 1) and
`task/<task>` (the score, under the row's task: its mean over valid samples is that task's reward or eval score).
"""

from __future__ import annotations

import functools
import json

from knobsweep.errors import FieldError
from knobsweep.rewards import Evaluation, format_weight_option

SHOWN = 60  # characters of an answer quoted in a reason


@functools.cache
def score_function(task: str):
    """The task's score_answer (reasoning_gym.get_score_answer_fn), built once per task."""
    import reasoning_gym

    return reasoning_gym.get_score_answer_fn(task)


def extract(completion: str, tag: str) -> str | None:
    from reasoning_gym.utils import extract_answer

    return extract_answer(completion, tag_name=tag)


def task_score(completion: str, task: str, entry: dict, tag: str = "answer") -> tuple[str | None, float]:
    """(the extracted answer, reasoning-gym's score of it in [0, 1])."""
    answer = extract(completion, tag)
    if answer is None:  # nothing to score (some scorers raise on None)
        return None, 0.0
    return answer, float(score_function(task)(answer=answer, entry=entry))


class ReasoningGymEvaluator:
    name = "reasoning_gym"

    def __init__(self, tag: str = "answer", format_weight: float = 0.0):
        if not isinstance(tag, str) or not tag.isidentifier():
            raise FieldError(
                "reward.tag", f"must be a tag name such as 'answer' (it reads <tag>...</tag>), got {tag!r}"
            )
        self.format_weight = format_weight_option(format_weight, f"the share of the score paid for <{tag}> tags")
        self.tag = tag

    def __call__(self, completion: str, row: dict) -> Evaluation:
        task, text = row.get("task"), row.get("entry")
        if not isinstance(task, str) or not isinstance(text, str):
            raise ValueError(
                f"row {row.get('row_id', '?')}: no reasoning-gym task and entry (columns task, entry: "
                "rows of data.source reasoning_gym)"
            )
        answer, raw = task_score(completion, task, json.loads(text), self.tag)
        answered = answer is not None
        correct = raw >= 1.0
        if correct and answered:
            score = 1.0  # written out: (1 - w) + w can be off by one ulp
        else:
            score = self.format_weight * answered + (1.0 - self.format_weight) * raw
        if not answered:
            reason = f"no <{self.tag}>...</{self.tag}> answer"
        else:
            shown = answer if len(answer) <= SHOWN else answer[:SHOWN] + "..."
            reason = f"{task}: {'correct' if correct else f'scored {raw:g}'}: {shown!r}"
        return Evaluation(
            score=score,
            reason=reason,
            metrics={"answered": float(answered), "correct": float(correct), f"task/{task}": score},
        )

    def __repr__(self) -> str:
        return f"ReasoningGymEvaluator(tag={self.tag!r}, format_weight={self.format_weight})"

"""GSM8K scored strictly: the completion's last `#### N` must equal the reference number.

The pattern is lm-evaluation-harness's "strict-match" one, so training rewards and eval
scores mean what GSM8K numbers usually mean. Numbers compare by value ("1,000" == "1000",
"5.00" == "5"). A small format part rewards writing `#### N` at all, so a model that has
not yet learnt the answer format still gets a signal to learn it.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal

from knobsweep.rewards import Evaluation

STRICT_PATTERN = re.compile(r"#### (\-?[0-9\.\,]+)")
# What a strict match must look like once commas are gone: "1,2.3.4" is matched but not a number.
_NUMBER = re.compile(r"-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")


def extract_strict_answer(text: str) -> str | None:
    """The number in the last `#### N` of `text`, commas removed, or None if there is none."""
    for match in reversed(list(STRICT_PATTERN.finditer(text))):
        # A sentence-ending period ("#### 18.") is part of the match but not of the number.
        number = match.group(1).replace(",", "").rstrip(".")
        if _NUMBER.fullmatch(number):
            return number
    return None


def extract_ground_truth(answer_text: str) -> str:
    """The final number of a GSM8K reference solution ("... #### 1,000" -> "1000")."""
    number = extract_strict_answer(answer_text)
    if number is None:
        raise ValueError("reference answer has no '#### N' final number")
    return number


def _value(number: str) -> Decimal | None:
    number = number.strip().replace(",", "")
    return Decimal(number) if _NUMBER.fullmatch(number) else None


class Gsm8kEvaluator:
    """score = (1 - format_weight) * correct + format_weight * format, in [0, 1].

    correct: 1 when the last `#### N` equals row["ground_truth"] numerically.
    format: 1 for a `#### N` answer, 0.5 for `####` with no number after it, else 0.
    """

    name = "gsm8k"

    def __init__(self, format_weight: float = 0.1):
        if (
            isinstance(format_weight, bool)
            or not isinstance(format_weight, (int, float))
            or not math.isfinite(format_weight)
            or not 0.0 <= format_weight <= 1.0
        ):
            raise ValueError(
                f"reward.format_weight: must be a number in [0, 1] (the share of the score "
                f"given for writing '#### N'), got {format_weight!r}"
            )
        self.format_weight = float(format_weight)

    def __call__(self, completion: str, row: dict) -> Evaluation:
        # A bad row is a data error, not a bad completion: raise, and the caller marks
        # the sample invalid with this message.
        expected = str(row.get("ground_truth", ""))
        expected_value = _value(expected)
        if expected_value is None:
            raise ValueError(f"row {row.get('row_id', '?')}: ground_truth {expected!r} is not a number")

        answer = extract_strict_answer(completion)
        if answer is None:
            fmt = 0.5 if "####" in completion else 0.0
            reason = "no '#### N' answer" + (" ('####' without a number)" if fmt else "")
            return Evaluation(
                score=self.format_weight * fmt,
                reason=reason,
                metrics={"correct": 0.0, "format": fmt},
            )

        correct = _value(answer) == expected_value
        return Evaluation(
            # Written out rather than computed so a correct answer scores exactly 1.0
            # ((1 - w) + w can be off by one ulp in floating point).
            score=1.0 if correct else self.format_weight,
            reason=f"correct: {answer}" if correct else f"wrong: got {answer}, expected {expected}",
            metrics={"correct": float(correct), "format": 1.0},
        )

    def __repr__(self) -> str:
        return f"Gsm8kEvaluator(format_weight={self.format_weight})"

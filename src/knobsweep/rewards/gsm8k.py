"""GSM8K scored strictly: the completion's last `#### N` must equal the reference number.

The pattern is lm-evaluation-harness's "strict-match" regex, but the rule is not lm-eval's: knobsweep takes
the *last* `#### N` and compares numbers by value ("1,000" == "1000", "5.00" == "5"); lm-eval's strict-match
takes the *first* (`take_first`) and compares text once `,`, `$` and a final `.` are removed ("5.00" != "5").
Its flexible parser differs the same way from lm-eval's flexible-extract (it also skips a last match that is
not a number). lm-eval's own GSM8K runs under its names in eval.benchmarks (lm_eval_tasks/gsm8k_local), and
the report says which is which where it shows them. A small format part rewards writing `#### N` at all, so
a model that has not yet learnt the answer format still gets a signal to learn it.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal

from knobsweep.errors import FieldError
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
            or not 0.0 <= format_weight < 1.0
        ):
            raise FieldError(
                "reward.format_weight",
                f"must be a number in [0, 1) (the share of the score given for writing '#### N'; at 1 a wrong "
                f"answer scores as much as a right one, so correctness no longer counts), got {format_weight!r}",
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


# ---------------------------------------------------------------- eval parsers
#
# GSM8K scores move by tens of points with the answer parser, so evaluation scores every
# completion three ways: `strict` (the `#### N` above, the training reward's parser),
# `flexible` (the last number anywhere in the completion, by lm-evaluation-harness's
# "flexible-extract" regex, compared by value) and `math_verify` (Hugging Face's math-verify: LaTeX / expression
# extraction plus symbolic comparison). Each returns the parsed answer or None (a parse
# failure), and whether it equals the reference.

PARSERS = ("strict", "flexible", "math_verify")
REWARD_PARSER = "strict"  # what Gsm8kEvaluator (the training reward) uses
FLEXIBLE_PATTERN = re.compile(r"(-?[$0-9.,]{2,})|(-?[0-9]+)")


def extract_flexible_answer(text: str) -> str | None:
    """The last number in `text` (commas and `$` removed), or None if there is none."""
    for match in reversed(list(FLEXIBLE_PATTERN.finditer(text))):
        number = (match.group(1) or match.group(2)).replace(",", "").replace("$", "").rstrip(".")
        if _NUMBER.fullmatch(number):
            return number
    return None


def math_verify_available() -> bool:
    try:
        import math_verify  # noqa: F401
    except ImportError:
        return False
    return True


def _math_verify(completion: str, expected: str) -> tuple[str | None, bool]:
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

    configs = [LatexExtractionConfig(), ExprExtractionConfig()]
    answer = parse(completion, extraction_config=configs)
    if not answer:
        return None, False
    gold = parse(expected, extraction_config=[ExprExtractionConfig()])
    return str(answer[-1]), bool(gold) and bool(verify(gold, answer))


def parse_all(completion: str, ground_truth: str, math_verify: bool | None = None) -> dict[str, dict]:
    """{parser: {"answer": str | None, "correct": bool}} for each parser in PARSERS.

    math_verify is skipped (absent from the result) when the package is not installed.
    """
    expected = _value(str(ground_truth))
    out: dict[str, dict] = {}
    for name, extract in (("strict", extract_strict_answer), ("flexible", extract_flexible_answer)):
        answer = extract(completion)
        value = _value(answer) if answer is not None else None
        out[name] = {"answer": answer, "correct": value is not None and value == expected}
    if math_verify is None:
        math_verify = math_verify_available()
    if math_verify:
        try:
            answer, correct = _math_verify(completion, str(ground_truth))
        except Exception as exc:  # a parser crash is a parse failure, never a lost eval
            out["math_verify"] = {"answer": None, "correct": False, "error": f"{type(exc).__name__}: {exc}"[:200]}
        else:
            out["math_verify"] = {"answer": answer, "correct": correct}
    return out

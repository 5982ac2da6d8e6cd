"""Match a completion against row["ground_truth"]: the evaluator for your own RL data.

    mode: exact     the answer equals the ground truth
          contains  the ground truth appears in the answer
          numeric   the answer's last number equals the ground truth's number by value
                    ("1,000" == "1000", "5.00" == "5", "$12" == "12")
          regex     `pattern` (one capture group) picks the answer out of the completion,
                    which must then equal the ground truth
    pattern         one capture group; in every mode, when given, its last match is the answer
                    (e.g. "#### (.+)" or "<answer>(.*?)</answer>"); a completion it does not match
                    scores 0
    case_sensitive  compare letters as written (default: ignore case)
    strip           trim surrounding whitespace on both sides first (default: on)
    format_weight   the score of a wrong answer that could at least be read (the pattern
                    matched; numeric: a number was found), as in the gsm8k evaluator: a model
                    that has not learnt the answer format yet still gets a signal (default 0)

score 1 for a match, format_weight for a readable wrong answer, else 0; metrics
{"matched": 1 or 0, "answered": 1 or 0}; a reason saying what was compared.
A row without a usable ground truth raises: the caller marks that sample invalid.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from knobsweep.errors import FieldError
from knobsweep.rewards import Evaluation, format_weight_option
from knobsweep.rewards.gsm8k import extract_flexible_answer

MODES = ("exact", "contains", "numeric", "regex")
SHOWN = 60  # characters of an answer quoted in a reason


class MatchEvaluator:
    name = "match"

    def __init__(
        self,
        mode: str = "exact",
        pattern: str | None = None,
        case_sensitive: bool = False,
        strip: bool = True,
        format_weight: float = 0.0,
    ):
        if mode not in MODES:
            raise FieldError("reward.mode", f"must be one of {', '.join(MODES)}, got {mode!r}")
        if mode == "regex" and pattern is None:
            raise FieldError(
                "reward.pattern", "mode 'regex' needs a pattern with one capture group, e.g. 'answer: (.+)'"
            )
        self.regex = None
        if pattern is not None:
            if not isinstance(pattern, str) or not pattern:
                raise FieldError("reward.pattern", f"must be a non-empty regular expression, got {pattern!r}")
            try:
                self.regex = re.compile(pattern, 0 if case_sensitive else re.IGNORECASE)
            except re.error as error:
                raise FieldError("reward.pattern", f"{pattern!r} is not a valid regular expression: {error}") from None
            if self.regex.groups != 1:
                raise FieldError(
                    "reward.pattern",
                    f"{pattern!r} must have exactly one capture group (the answer), it has {self.regex.groups}",
                )
        for option, value in (("case_sensitive", case_sensitive), ("strip", strip)):
            if not isinstance(value, bool):
                raise FieldError(f"reward.{option}", f"must be true or false, got {value!r}")
        self.format_weight = format_weight_option(format_weight, "the score of a readable but wrong answer")
        self.mode, self.pattern, self.case_sensitive, self.strip = mode, pattern, case_sensitive, strip

    def _normal(self, text: str) -> str:
        text = text.strip() if self.strip else text
        return text if self.case_sensitive else text.casefold()

    def __call__(self, completion: str, row: dict) -> Evaluation:
        truth = row.get("ground_truth")
        if not isinstance(truth, str) or not truth.strip():
            raise ValueError(f"row {row.get('row_id', '?')}: no ground_truth to match against (got {truth!r})")

        answer = completion
        if self.regex is not None:
            matches = list(self.regex.finditer(completion))
            if not matches:
                return self._result(False, False, f"no match for pattern {self.pattern!r}")
            answer = matches[-1].group(1) or ""

        if self.mode == "numeric":
            return self._numeric(answer, truth, row)
        got, want = self._normal(answer), self._normal(truth)
        if self.mode == "contains":
            ok = want in got
            return self._result(ok, bool(got), f"{'contains' if ok else 'does not contain'} {_quote(truth)}")
        ok = got == want
        reason = f"matched {_quote(truth)}" if ok else f"got {_quote(answer)}, expected {_quote(truth)}"
        return self._result(ok, bool(got), reason)

    def _numeric(self, answer: str, truth: str, row: dict) -> Evaluation:
        expected = _number(truth)
        if expected is None:
            raise ValueError(f"row {row.get('row_id', '?')}: ground_truth {truth!r} is not a number (mode numeric)")
        found = extract_flexible_answer(answer)
        if found is None:
            return self._result(False, False, "no number in the answer")
        ok = Decimal(found) == expected
        return self._result(ok, True, f"correct: {found}" if ok else f"wrong: got {found}, expected {truth.strip()}")

    def _result(self, matched: bool, answered: bool, reason: str) -> Evaluation:
        # Written out so a match scores exactly 1.0 and a readable wrong answer format_weight.
        score = 1.0 if matched else (self.format_weight if answered else 0.0)
        return Evaluation(score=score, reason=reason, metrics={"matched": float(matched), "answered": float(answered)})

    def __repr__(self) -> str:
        return (
            f"MatchEvaluator(mode={self.mode!r}, pattern={self.pattern!r}, "
            f"case_sensitive={self.case_sensitive}, strip={self.strip}, format_weight={self.format_weight})"
        )


def _number(text: str) -> Decimal | None:
    cleaned = text.strip().replace(",", "").replace("$", "").rstrip(".")
    try:
        value = Decimal(cleaned)
    except InvalidOperation:
        return None
    return value if value.is_finite() else None


def _quote(text: str) -> str:
    return repr(text if len(text) <= SHOWN else text[:SHOWN] + "...")

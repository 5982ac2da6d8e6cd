"""The GSM8K evaluator, checked against every real test answer and the usual edge cases."""

from __future__ import annotations

import json
import math
from decimal import Decimal

import pytest
from conftest import FIXTURES

from knobsweep.rewards import Evaluation, Evaluator, get_evaluator
from knobsweep.rewards.gsm8k import Gsm8kEvaluator, extract_ground_truth, extract_strict_answer


@pytest.fixture(scope="module")
def real_test_rows() -> list[dict]:
    path = FIXTURES / "gsm8k" / "test.jsonl"
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    for row in rows:
        row["ground_truth"] = extract_ground_truth(row["answer"])
    return rows


def test_real_test_split_has_the_documented_shape(real_test_rows):
    # tests/fixtures/README.md: 1319 rows, 14 with thousands commas, 2 negative.
    finals = [row["answer"].rsplit("####", 1)[1] for row in real_test_rows]
    assert len(real_test_rows) == 1319
    assert sum("," in f for f in finals) == 14
    assert sum(row["ground_truth"].startswith("-") for row in real_test_rows) == 2
    assert all("," not in row["ground_truth"] for row in real_test_rows)


def test_every_real_answer_scores_one_against_its_own_ground_truth(real_test_rows):
    evaluate = Gsm8kEvaluator()
    for row in real_test_rows:
        result = evaluate(row["answer"], row)
        assert result.score == 1.0, (row["answer"], result)
        assert result.metrics == {"correct": 1.0, "format": 1.0}
        assert result.valid
        assert result.reason == f"correct: {row['ground_truth']}"


@pytest.mark.parametrize("format_weight", [0.1, 0.0, 0.37, 0.99])
def test_every_real_answer_is_wrong_against_a_different_ground_truth(real_test_rows, format_weight):
    evaluate = Gsm8kEvaluator(format_weight=format_weight)
    n = len(real_test_rows)
    for i, row in enumerate(real_test_rows):
        # The next row whose final number differs (by value, not spelling).
        other = next(
            real_test_rows[(i + k) % n]
            for k in range(1, n)
            if Decimal(real_test_rows[(i + k) % n]["ground_truth"]) != Decimal(row["ground_truth"])
        )
        result = evaluate(row["answer"], other)
        assert result.metrics == {"correct": 0.0, "format": 1.0}
        assert result.score == format_weight * 1.0
        assert result.reason == f"wrong: got {row['ground_truth']}, expected {other['ground_truth']}"


@pytest.mark.parametrize(
    "completion, ground_truth, correct",
    [
        ("so 1000 in total.\n#### 1,000", "1000", True),
        ("#### 1000", "1,000", True),
        ("#### 1,234,567", "1234567", True),
        ("She lost 3.\n#### -3", "-3", True),
        ("#### -3", "3", False),
        ("#### 5.00", "5", True),
        ("#### 0.5", "0.50", True),
        ("#### 2.5", "2", False),
        ("#### 18.", "18", True),  # a sentence-ending period is not part of the number
        ("#### 17\nwait, I made an error.\n#### 18", "18", True),  # the last answer counts
        ("#### 18\nhmm, no.\n#### 17", "18", False),
        ("#### 18 dollars", "18", True),
        ("#### 007", "7", True),
    ],
)
def test_strict_numeric_match(completion, ground_truth, correct):
    result = Gsm8kEvaluator()(completion, {"ground_truth": ground_truth})
    assert result.metrics == {"correct": float(correct), "format": 1.0}
    assert result.score == (1.0 if correct else 0.1)
    assert result.reason.startswith("correct: " if correct else "wrong: got ")


@pytest.mark.parametrize(
    "completion, fmt",
    [
        ("The answer is 18.", 0.0),  # a bare number is not a strict answer
        ("", 0.0),
        ("\x00\ufffd 🙂 }{][ <<1+1=2>>", 0.0),
        ("### 18", 0.0),
        ("####", 0.5),
        ("The answer:\n#### ", 0.5),
        ("#### eighteen", 0.5),
        ("####18", 0.5),  # lm-evaluation-harness's strict pattern needs the space
        ("#### $18", 0.5),
        ("#### ...", 0.5),
        ("#### 1.2.3", 0.5),
        ("#### ,", 0.5),
        ("#### -", 0.5),
    ],
)
def test_no_strict_answer(completion, fmt):
    result = Gsm8kEvaluator(format_weight=0.2)(completion, {"ground_truth": "18"})
    assert result.metrics == {"correct": 0.0, "format": fmt}
    assert result.score == pytest.approx(0.2 * fmt)
    assert result.valid
    assert result.reason.startswith("no '#### N' answer")
    assert ("without a number" in result.reason) == (fmt == 0.5)


def test_reasons():
    evaluate = Gsm8kEvaluator()
    assert evaluate("#### 18", {"ground_truth": "18"}).reason == "correct: 18"
    assert evaluate("#### 17", {"ground_truth": "18"}).reason == "wrong: got 17, expected 18"
    assert evaluate("18", {"ground_truth": "18"}).reason == "no '#### N' answer"


@pytest.mark.parametrize("format_weight", [0.0, 0.1, 0.3, 0.7, 0.9, 0.99])
def test_score_is_always_in_unit_interval(format_weight):
    evaluate = Gsm8kEvaluator(format_weight=format_weight)
    for completion in ["#### 18", "#### 17", "####", "nothing", "#### 1,8"]:
        result = evaluate(completion, {"ground_truth": "18"})
        assert isinstance(result, Evaluation)
        assert 0.0 <= result.score <= 1.0
        expected = (1 - format_weight) * result.metrics["correct"] + format_weight * result.metrics["format"]
        assert result.score == pytest.approx(expected, abs=1e-12)


def test_extractors():
    assert extract_strict_answer("a\n#### 1,000") == "1000"
    assert extract_strict_answer("#### 3\n#### -4.50.") == "-4.50"
    assert extract_strict_answer("#### 3\n#### x") == "3"  # the last *number* after ####
    assert extract_strict_answer("no answer") is None
    assert extract_ground_truth("Natalia sold 48/2 = <<48/2=24>>24 clips.\n#### 72") == "72"
    with pytest.raises(ValueError, match="no '#### N'"):
        extract_ground_truth("the answer is 72")


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5, math.nan, math.inf, "0.1", None, True])
def test_format_weight_is_validated(bad):
    with pytest.raises(ValueError, match=r"format_weight: must be a number in \[0, 1\)"):
        Gsm8kEvaluator(format_weight=bad)


def test_bad_ground_truth_raises_a_clear_error():
    evaluate = Gsm8kEvaluator()
    with pytest.raises(ValueError, match="row train-3: ground_truth 'seventy' is not a number"):
        evaluate("#### 70", {"row_id": "train-3", "ground_truth": "seventy"})
    with pytest.raises(ValueError, match="ground_truth '' is not a number"):
        evaluate("#### 70", {})


def test_get_evaluator_builds_gsm8k():
    evaluator = get_evaluator({"name": "gsm8k", "format_weight": 0.2})
    assert isinstance(evaluator, Gsm8kEvaluator)
    assert isinstance(evaluator, Evaluator)
    assert evaluator.name == "gsm8k"
    assert evaluator.format_weight == 0.2
    assert get_evaluator({"name": "gsm8k"}).format_weight == 0.1
    assert evaluator("#### 4", {"ground_truth": "5"}).score == 0.2


def test_get_evaluator_errors_name_the_problem():
    with pytest.raises(ValueError, match=r"unknown evaluator 'gsm8kk' \(did you mean 'gsm8k'\?\); valid names: gsm8k"):
        get_evaluator({"name": "gsm8kk"})
    with pytest.raises(
        ValueError,
        match=r"reward.format_wieght: unknown option.*did you mean 'format_weight'.*allowed options: format_weight",
    ):
        get_evaluator({"name": "gsm8k", "format_wieght": 0.2})
    with pytest.raises(ValueError, match="expected a mapping with a 'name'"):
        get_evaluator({"format_weight": 0.2})
    with pytest.raises(ValueError, match="format_weight: must be a number"):
        get_evaluator({"name": "gsm8k", "format_weight": 2})


@pytest.mark.parametrize(
    "completion, expected",
    [
        ("so 3 + 4 = 7", "7"),
        ("it costs $1,234.50.", "1234.50"),
        ("#### -5", "-5"),
        ("answer: 18.", "18"),
        ("no numbers here", None),
    ],
)
def test_flexible_takes_the_last_number(completion, expected):
    from knobsweep.rewards.gsm8k import extract_flexible_answer

    assert extract_flexible_answer(completion) == expected


def test_parse_all_three_ways():
    from knobsweep.rewards.gsm8k import PARSERS, parse_all

    result = parse_all("The total is \\boxed{1,000} dollars", "1000")
    assert set(result) == set(PARSERS)
    assert result["strict"] == {"answer": None, "correct": False}
    assert result["flexible"]["correct"] and result["math_verify"]["correct"]
    wrong = parse_all("#### 12", "13")
    assert all(entry["answer"] is not None and not entry["correct"] for entry in wrong.values())
    assert set(parse_all("#### 13", "13", math_verify=False)) == {"strict", "flexible"}


def test_strict_agrees_with_the_evaluator_on_real_answers(real_test_rows):
    from knobsweep.rewards.gsm8k import parse_all

    for row in real_test_rows[:200]:
        result = parse_all(row["answer"], row["ground_truth"], math_verify=False)
        assert result["strict"]["correct"] and result["flexible"]["correct"], row["answer"]

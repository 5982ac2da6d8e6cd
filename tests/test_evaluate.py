"""Evaluation with the hf backend on the tiny model and real GSM8K rows."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from knobsweep.data import convert_to_dir
from knobsweep.errors import SpecError
from knobsweep.evaluate import evaluate, pass_at_k, score_samples, summarize
from knobsweep.io import read_jsonl
from knobsweep.models.tiny import build_tiny_model, texts_from_parquet
from knobsweep.rewards import Evaluation, get_evaluator
from knobsweep.spec.schema import EvalJob
from knobsweep.spec.validate import parse

REPO = Path(__file__).resolve().parents[1]
GSM8K_DIR = REPO / "data" / "gsm8k"
EVAL_ROWS = 6
REWARD = {"name": "gsm8k", "format_weight": 0.1}


def config(**eval_options) -> dict:
    return {
        "eval": {
            "backend": "hf",
            "temperature": 0.0,
            "top_p": 1.0,
            "max_tokens": 24,
            "samples": 1,
            "batch_size": 4,
            **eval_options,
        },
        "reward": REWARD,
    }


def job(**eval_options) -> EvalJob:
    """config() as the evaluation stage reads it (the spec's models)."""
    return EvalJob.model_validate(config(**eval_options))


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("data") / "gsm8k"
    convert_to_dir({"source": "gsm8k", "path": str(GSM8K_DIR), "train_size": 100, "eval_size": EVAL_ROWS}, out)
    return out


@pytest.fixture(scope="module")
def model(data, tmp_path_factory) -> Path:
    return build_tiny_model(texts_from_parquet(data / "train.parquet"), tmp_path_factory.mktemp("models") / "tiny")


def completions(out: Path) -> list[str]:
    return [r["completion"] for r in read_jsonl(out / "samples.jsonl")]


def test_cli_writes_a_consistent_summary(model, data, tmp_path):
    out = tmp_path / "eval"
    cfg = config()
    cfg["eval"]["backend"] = "auto"  # no GPU here: auto must pick hf
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "knobsweep.evaluate",
            "--config-json",
            json.dumps(cfg),
            "--model",
            str(model),
            "--data",
            str(data),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr
    print(proc.stdout)  # shows the hf backend's tokens/s under `pytest -s`
    assert "tokens/s" in proc.stdout

    summary = json.loads((out / "summary.json").read_text())
    records = read_jsonl(out / "samples.jsonl")
    assert summary["backend"] == "hf" and summary["model"] == str(model)
    assert summary["n"] == len(records) == EVAL_ROWS * summary["samples"] == EVAL_ROWS
    assert 0.0 <= summary["score"] <= 1.0
    assert set(summary["parts"]) == {"correct", "format"}
    assert summary["n_valid"] == EVAL_ROWS and 0 <= summary["n_correct"] <= EVAL_ROWS
    assert 0 <= summary["parse_failures"] <= EVAL_ROWS
    assert summary["tokens_per_s"] > 0 and summary["elapsed_s"] >= summary["generate_s"] > 0
    assert 0 < summary["completion_tokens"] <= EVAL_ROWS * 24
    assert "pass_at_k" not in summary
    for record in records:
        assert set(record) >= {"row_id", "prompt", "completion", "ground_truth", "score", "reason", "valid", "parts"}
        assert record["prompt"][0]["role"] == "user" and record["valid"] is True
    assert summary["score"] == pytest.approx(sum(r["score"] for r in records) / len(records))
    # Every parser scored, with parse failures and a bootstrap CI around each score.
    assert set(summary["parsers"]) == {"strict", "flexible", "math_verify"}
    for name, entry in summary["parsers"].items():
        assert entry["n"] == EVAL_ROWS and 0 <= entry["parse_failures"] <= EVAL_ROWS
        assert entry["ci95"][0] <= entry["score"] <= entry["ci95"][1]
        assert entry["score"] == pytest.approx(sum(r["parsers"][name]["correct"] for r in records) / EVAL_ROWS)
    assert summary["parsers"]["strict"]["parse_failures"] == summary["parse_failures"]
    assert summary["eval_parser"] == summary["reward_parser"] == "strict"
    assert summary["score_ci95"][0] <= summary["score"] <= summary["score_ci95"][1]


def test_greedy_is_deterministic(model, data, tmp_path):
    first = evaluate(job(), model, data, tmp_path / "a")
    second = evaluate(job(), model, data, tmp_path / "b")
    assert completions(tmp_path / "a") == completions(tmp_path / "b")
    assert first["score"] == second["score"]


def test_sampling_gives_samples_per_prompt_and_pass_at_k(model, data, tmp_path):
    cfg = job(temperature=1.0, samples=4, batch_size=3)
    summary = evaluate(cfg, model, data, tmp_path / "a")
    assert summary["n"] == EVAL_ROWS * 4 and summary["samples"] == 4
    assert set(summary["pass_at_k"]) == {"1", "2", "4"}
    assert all(0.0 <= v <= 1.0 for v in summary["pass_at_k"].values())
    records = read_jsonl(tmp_path / "a" / "samples.jsonl")
    first_row = [r["completion"] for r in records if r["row_id"] == records[0]["row_id"]]
    assert len(first_row) == 4 and len(set(first_row)) > 1, "sampling returned identical completions"
    # A fixed seed makes sampled evals reproducible too.
    evaluate(cfg, model, data, tmp_path / "b")
    assert completions(tmp_path / "a") == completions(tmp_path / "b")


def test_pass_at_k_on_known_outcomes():
    rows = [{"row_id": "r0", "prompt": [], "ground_truth": "18"}, {"row_id": "r1", "prompt": [], "ground_truth": "3"}]
    # r0: 1 of 4 right; r1: none right, one without any '#### N'.
    outputs = [["#### 18", "#### 17", "#### 16", "#### 15"], ["#### 1", "#### 2", "#### 4", "no answer"]]
    summary = summarize(score_samples(get_evaluator(REWARD), rows, outputs), samples=4)
    assert summary["n_correct"] == 1 and summary["parse_failures"] == 1
    assert summary["pass_at_k"] == {"1": pytest.approx(0.125), "2": pytest.approx(0.25), "4": 0.5}
    assert summary["parts"]["correct"] == pytest.approx(1 / 8)
    assert pass_at_k(n=4, c=1, k=2) == pytest.approx(0.5)


def test_raising_or_junk_evaluator_marks_samples_invalid():
    gsm8k = get_evaluator(REWARD)

    def flaky(completion: str, row: dict) -> Evaluation:
        if "boom" in completion:
            raise RuntimeError("parser exploded")
        if "junk" in completion:
            return Evaluation(score=float("nan"))
        return gsm8k(completion, row)

    rows = [{"row_id": f"r{i}", "prompt": [], "ground_truth": "18"} for i in range(4)]
    outputs = [["#### 18"], ["boom #### 18"], ["junk"], ["#### 5"]]
    records = score_samples(flaky, rows, outputs)
    assert [r["valid"] for r in records] == [True, False, False, True]
    assert "RuntimeError: parser exploded" in records[1]["reason"]
    assert records[1]["score"] is None and "junk" in records[2]["reason"]

    summary = summarize(records, samples=1)
    assert summary["n"] == 4 and summary["n_valid"] == 2 and summary["n_correct"] == 1
    assert summary["score"] == pytest.approx((1.0 + 0.1) / 2)  # invalid samples are skipped


@pytest.mark.parametrize(
    "options, message",
    [
        ({"backend": "tpu"}, r"eval.backend: 'tpu' is not allowed; allowed: 'auto', 'hf' or 'vllm'"),
        ({"samples": 0}, r"eval.samples: 0 is out of range; allowed: 1 <= value <= 64"),
        ({"temperature": 2.5}, r"eval.temperature: 2.5 is out of range; allowed: 0.0 <= value <= 2.0"),
        ({"max_tokens": 8}, r"eval.max_tokens: 8 is out of range; allowed: 16 <= value <= 16384"),
        ({"parser": "lenient"}, r"eval.parser: 'lenient' is not allowed"),
    ],
)
def test_the_stage_reads_its_config_with_the_specs_ranges(options, message, tmp_path):
    out = tmp_path / "eval"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "knobsweep.evaluate",
            "--config-json",
            json.dumps(config(**options)),
            "--model",
            "unused",
            "--data",
            "unused",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2 and f"--config-json: {message}" in result.stderr.replace("\\", ""), result.stderr
    assert not out.exists()
    with pytest.raises(SpecError, match=message):
        parse(EvalJob, config(**options), "--config-json")


def _record(row_id, completion, ground_truth="42", score=None):
    from knobsweep.rewards.gsm8k import parse_all

    return {
        "row_id": row_id,
        "completion": completion,
        "ground_truth": ground_truth,
        "score": score if score is not None else 0.0,
        "valid": True,
        "parts": {},
        "parsers": parse_all(completion, ground_truth),
    }


def test_parsers_side_by_side_and_bootstrap_ci():
    records = [
        _record("a", "#### 42", score=1.0),  # all three right
        _record("b", "so the answer is 42."),  # strict fails to parse
        _record("c", "The answer is $\\boxed{42}$"),  # strict fails; others right
        _record("d", "I think 41"),  # flexible/math_verify parse, wrong
        _record("e", "no idea"),  # nobody parses
    ]
    summary = summarize(records, 1, parser="flexible")
    parsers = summary["parsers"]
    assert parsers["strict"]["score"] == pytest.approx(1 / 5) and parsers["strict"]["parse_failures"] == 4
    assert parsers["flexible"]["score"] == pytest.approx(3 / 5) and parsers["flexible"]["parse_failures"] == 1
    assert parsers["math_verify"]["score"] == pytest.approx(3 / 5)
    assert parsers["flexible"]["parse_failure_rate"] == pytest.approx(0.2)
    assert summary["accuracy"] == pytest.approx(3 / 5) and summary["eval_parser"] == "flexible"
    assert summary["reward_parser"] == "strict"
    # Seeded: the same records give the same CI; the CI brackets the estimate.
    assert summarize(records, 1, parser="flexible")["parsers"] == parsers
    low, high = parsers["flexible"]["ci95"]
    assert 0.0 <= low < 0.6 < high <= 1.0


def test_bootstrap_resamples_prompts_not_samples():
    from knobsweep.evaluate import bootstrap_ci

    # 2 prompts x 50 samples each: the CI reflects 2 units, so it is wide.
    records = [{"row_id": r, "v": float(r == "x")} for r in ("x", "y") for _ in range(50)]
    low, high = bootstrap_ci(records, lambda rec: rec["v"])
    assert low == 0.0 and high == 1.0
    assert bootstrap_ci([], lambda rec: 0.0) is None

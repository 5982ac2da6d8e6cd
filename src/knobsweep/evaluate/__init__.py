"""Evaluate a model on a data stage's eval split: generate completions, score, summarise.

`python -m knobsweep.evaluate --config-json EVAL --model M --data D --out OUT`

Generation is a backend (`hf`: transformers, any machine; `vllm`: a GPU with the `gpu` extra, or
vLLM's CPU build); scoring uses the same evaluators as training rewards (`knobsweep.rewards`), so an eval
score and a training reward mean the same thing. An evaluator that raises or returns junk
marks that one sample invalid: it is counted, never a crash.
"""

from __future__ import annotations

import importlib
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from knobsweep import layout
from knobsweep.io import atomic_dir, atomic_write_json
from knobsweep.spec.schema import EvalConfig, EvalJob

PARSER_CHOICES = ("strict", "flexible", "math_verify")  # the GSM8K answer parsers, each reported (eval.parser)
BOOTSTRAP_RESAMPLES = 1000

# Sampled evals (temperature > 0) are reproducible: the same config (eval.seed included) gives the
# same samples; the bootstrap CIs use a fixed seed of their own, so they move only with the data.
SEED = 0


@dataclass
class Generations:
    """What a backend returns: `samples` completions per prompt, in prompt order."""

    completions: list[list[str]]
    completion_tokens: int  # tokens actually generated (up to and including EOS)
    generate_s: float  # wall time of generation alone (no model loading)


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def resolve_backend(name: str) -> tuple[str, str]:
    """(backend, why): `auto` -> `vllm` where a CUDA GPU is present and vllm imports, else `hf`.

    On a CPU, auto keeps hf even with vLLM's CPU build installed: its engine start-up (tens of
    seconds, bench/vllm_vs_hf.py) outweighs its faster generation at the sizes a CPU evaluates.
    """
    if name != "auto":
        return name, "eval.backend"
    from knobsweep.vllm_env import VLLMUnavailable, cuda_available, import_vllm, installed_version

    if not cuda_available():
        installed = installed_version()
        return "hf", "auto: no CUDA GPU" + (
            f"; {installed} is installed: eval.backend vllm runs it" if installed else ""
        )
    try:
        import_vllm()
    except VLLMUnavailable as exc:
        return "hf", f"auto: a CUDA GPU, but {exc}"
    return "vllm", f"auto: a CUDA GPU and {installed_version()}"


def generate(backend: str, model: str, conversations: list[list[dict]], options: EvalConfig) -> Generations:
    """Run the named (resolved) backend; each module imports its engine only when called."""
    module = importlib.import_module(f"knobsweep.evaluate.{backend}")
    greedy = options.temperature == 0
    samples = options.samples
    generations = module.generate(
        model,
        conversations,
        temperature=options.temperature,
        top_p=options.top_p,
        max_tokens=options.max_tokens,
        # Greedy samples are all the same completion: generate it once, copy it below.
        samples=1 if greedy else samples,
        batch_size=options.batch_size,
        seed=options.seed,
    )
    if greedy and samples > 1:
        generations.completions = [c * samples for c in generations.completions]
    return generations


def load_rows(data_dir: str | Path) -> list[dict]:
    """eval.parquet as plain Python dicts (pyarrow, so `prompt` stays a list of dicts)."""
    import pyarrow.parquet as pq

    path = Path(data_dir) / layout.EVAL_ROWS
    if not path.is_file():
        raise FileNotFoundError(f"--data {data_dir}: no eval.parquet there (run the data stage first)")
    table = pq.read_table(path)
    missing = {"row_id", "prompt", "ground_truth"} - set(table.column_names)
    if missing:
        raise ValueError(f"{path}: missing columns {sorted(missing)} (expected row_id, prompt, ground_truth)")
    if table.num_rows == 0:
        raise ValueError(f"{path}: no rows to evaluate")
    return table.to_pylist()


def score_sample(evaluator: Callable, completion: str, row: dict) -> dict:
    """Score one completion; anything but a well-formed, valid Evaluation is `valid: False`."""
    try:
        result = evaluator(completion, row)
    except Exception as exc:  # an evaluator bug or a bad row must not lose the whole eval
        return {"score": None, "reason": f"evaluator raised {type(exc).__name__}: {exc}", "valid": False, "parts": {}}
    score = getattr(result, "score", None)
    metrics = getattr(result, "metrics", None)
    if not (
        _number(score) and 0 <= score <= 1 and isinstance(metrics, dict) and all(_number(v) for v in metrics.values())
    ):
        return {"score": None, "reason": f"evaluator returned junk: {result!r:.200}", "valid": False, "parts": {}}
    if not getattr(result, "valid", True):
        return {"score": None, "reason": result.reason or "evaluator marked it invalid", "valid": False, "parts": {}}
    return {
        "score": float(score),
        "reason": result.reason,
        "valid": True,
        "parts": {k: float(v) for k, v in metrics.items()},
    }


def score_samples(
    evaluator: Callable, rows: list[dict], completions: list[list[str]], parsers: bool | None = None
) -> list[dict]:
    """One samples.jsonl record per (row, sample), in row order.

    With `parsers` (default: for the GSM8K evaluator) each record also holds
    `parsers: {strict|flexible|math_verify: {answer, correct}}`.
    """
    from knobsweep.rewards.gsm8k import math_verify_available, parse_all

    if parsers is None:
        parsers = getattr(evaluator, "name", None) == "gsm8k"
    use_math_verify = parsers and math_verify_available()
    records = []
    for row, row_completions in zip(rows, completions, strict=True):
        for index, completion in enumerate(row_completions):
            extra = {}
            if parsers:
                extra["parsers"] = parse_all(completion, str(row.get("ground_truth", "")), use_math_verify)
            records.append(
                {
                    "row_id": row["row_id"],
                    "sample": index,
                    "prompt": row["prompt"],
                    "completion": completion,
                    "ground_truth": row["ground_truth"],
                    **score_sample(evaluator, completion, row),
                    **extra,
                }
            )
    return records


def _is_correct(record: dict) -> bool:
    # Evaluators that report a `correct` part (GSM8K) define correctness; others: full score.
    if "correct" in record["parts"]:
        return record["parts"]["correct"] >= 1
    return record["score"] >= 1


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c are correct (Chen et al., 2021)."""
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def bootstrap_ci(
    records: list[dict], value: Callable[[dict], float], resamples: int = BOOTSTRAP_RESAMPLES, seed: int = SEED
) -> list[float] | None:
    """Seeded percentile-bootstrap 95% CI of the mean of `value`, resampling prompts (rows).

    Several samples of one prompt are not independent, so the unit resampled is the row:
    each row contributes the mean of its samples' values.
    """
    import numpy as np

    per_row: dict[str, list[float]] = {}
    for record in records:
        per_row.setdefault(str(record["row_id"]), []).append(float(value(record)))
    if not per_row:
        return None
    means = np.array([sum(v) / len(v) for v in per_row.values()])
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(means), size=(resamples, len(means)))
    stats = means[draws].mean(axis=1)
    low, high = np.percentile(stats, [2.5, 97.5])
    return [round(float(low), 6), round(float(high), 6)]


def parser_summary(records: list[dict]) -> dict[str, dict]:
    """Per parser: accuracy (`score`), its 95% CI, parse failures (count and rate)."""
    out: dict[str, dict] = {}
    names = [n for n in PARSER_CHOICES if any(n in r.get("parsers", {}) for r in records)]
    for name in names:
        judged = [r for r in records if name in r.get("parsers", {})]
        correct = [bool(r["parsers"][name]["correct"]) for r in judged]
        failures = sum(r["parsers"][name]["answer"] is None for r in judged)
        out[name] = {
            "score": sum(correct) / len(judged),
            "ci95": bootstrap_ci(judged, lambda r, name=name: float(r["parsers"][name]["correct"])),
            "parse_failures": failures,
            "parse_failure_rate": failures / len(judged),
            "n": len(judged),
        }
    return out


def summarize(records: list[dict], samples: int, parser: str = "strict") -> dict:
    """Means over valid samples (invalid ones are skipped and counted), pass@k if samples > 1.

    `score_ci95` is a seeded bootstrap 95% CI of `score`; `parsers` scores GSM8K completions
    with every answer parser; `accuracy` is the `parser` (eval.parser) one's score.
    """
    valid = [r for r in records if r["valid"]]
    part_names = sorted({name for r in valid for name in r["parts"]})
    summary = {
        # None, not 0, when nothing could be judged: a zero would look like a real result.
        "score": sum(r["score"] for r in valid) / len(valid) if valid else None,
        "parts": {name: _mean([r["parts"][name] for r in valid if name in r["parts"]]) for name in part_names},
        "n": len(records),
        "n_valid": len(valid),
        "n_correct": sum(_is_correct(r) for r in valid),
        "parse_failures": _parse_failures(records),
        "samples": samples,
        "score_ci95": bootstrap_ci(valid, lambda r: r["score"]) if valid else None,
    }
    parsers = parser_summary(records)
    if parsers:
        from knobsweep.rewards.gsm8k import REWARD_PARSER

        summary["parsers"] = parsers
        summary["eval_parser"] = parser
        summary["reward_parser"] = REWARD_PARSER
        chosen = parsers.get(parser)
        summary["accuracy"] = chosen["score"] if chosen else None
        summary["accuracy_ci95"] = chosen["ci95"] if chosen else None
    if samples > 1:
        per_row: dict[str, list[bool]] = {}
        for r in valid:
            per_row.setdefault(r["row_id"], []).append(_is_correct(r))
        ks = sorted({1, samples} | {2**i for i in range(1, samples.bit_length()) if 2**i < samples})
        # A row enters pass@k only with at least k valid samples to draw from.
        summary["pass_at_k"] = {
            str(k): _mean([pass_at_k(len(v), sum(v), k) for v in per_row.values() if len(v) >= k]) for k in ks
        }
    return summary


# Evaluator parts that say "an answer could be read" (swe_patch: a unified diff; match: an answer).
READABLE_PARTS = ("well_formed", "answered")


def _parse_failures(records: list[dict]) -> int:
    """Completions whose answer could not be read: by the evaluator's own part where it reports one
    (READABLE_PARTS), else by GSM8K's strict `#### N` parser."""
    from knobsweep.rewards.gsm8k import extract_strict_answer

    for part in READABLE_PARTS:
        if any(part in r["parts"] for r in records):
            return sum(r["parts"].get(part, 1) == 0 for r in records)
    return sum(extract_strict_answer(r["completion"]) is None for r in records)


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def write_not_evaluated(job: EvalJob, model: str, out_dir: str | Path, reason: str) -> dict:
    """The summary of a model that was not merged: no scores (None, never 0), and why."""
    summary = {
        "not_evaluated": f"the run was not merged ({reason})",
        "score": None,
        "score_ci95": None,
        "parts": {},
        "n": 0,
        "n_valid": 0,
        "n_correct": 0,
        "parse_failures": 0,
        "samples": job.eval.samples,
        "model": str(model),
        "config": job.model_dump(mode="json"),
    }
    with atomic_dir(out_dir) as tmp:
        (tmp / layout.SAMPLES).write_text("", encoding="utf-8")
        atomic_write_json(tmp / layout.SUMMARY, summary)
    return summary


def prompt_subset(rows: list[dict], prompts: int | None, seed: int) -> list[dict]:
    """`prompts` rows drawn with `seed` (in the split's order), the same for every model scored on this
    split; all rows when `prompts` is None or not fewer than the rows."""
    if prompts is None or prompts >= len(rows):
        return rows
    import random

    return [rows[i] for i in sorted(random.Random(seed).sample(range(len(rows)), prompts))]


def evaluate(
    job: EvalJob,
    model: str,
    data_dir: str | Path,
    out_dir: str | Path,
    prompts: int | None = None,
    prompt_seed: int = 0,
) -> dict:
    """Generate, score and write summary.json + samples.jsonl into `out_dir` atomically; `prompts`: score a
    seeded subset of the eval split (`prompt_subset`; rung evals, early_stop)."""
    from knobsweep.rewards import get_evaluator

    started = time.perf_counter()
    not_merged = Path(model) / layout.NOT_MERGED
    if not_merged.is_file():  # a run that never learned (knobsweep.merge): nothing to evaluate
        return write_not_evaluated(job, model, out_dir, json.loads(not_merged.read_text())["reason"])
    options = job.eval
    evaluator = get_evaluator(job.reward.model_dump())  # fail on a bad reward before generating
    rows = prompt_subset(load_rows(data_dir), prompts, prompt_seed)
    backend, why = resolve_backend(options.backend)
    print(f"eval backend: {backend} ({why})", file=sys.stderr, flush=True)

    generations = generate(backend, str(model), [row["prompt"] for row in rows], options)
    records = score_samples(evaluator, rows, generations.completions)
    summary = summarize(records, options.samples, options.parser)
    summary.update(
        backend=backend,
        model=str(model),
        completion_tokens=generations.completion_tokens,
        generate_s=generations.generate_s,
        tokens_per_s=generations.completion_tokens / generations.generate_s,
        elapsed_s=time.perf_counter() - started,
        config=job.model_dump(mode="json"),
    )
    with atomic_dir(out_dir) as tmp:
        (tmp / layout.SAMPLES).write_text(
            "".join(json.dumps(r, allow_nan=False) + "\n" for r in records), encoding="utf-8"
        )
        atomic_write_json(tmp / layout.SUMMARY, summary)
    return summary

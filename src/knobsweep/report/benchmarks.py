"""The report's benchmarks: did the knob hurt anything else? lm-eval's scores per arm, and paired deltas.

Every merged model and the base model ran the same lm-eval tasks (eval.benchmarks; knobsweep.benchmarks). Per
benchmark (a task's metric under one of its filters: gsm8k_local's exact_match under strict-match) each arm is
compared with the baseline on the items both scored, with the report's paired statistics (items play the part
of eval prompts: knobsweep.report.stats), and the baseline with the base model. An arm worse than the baseline
on a benchmark is a regression: the verdict table names it beside the arm's verdict on the target.

Scores are lm-eval's own aggregates (results.json), shown as its command line prints them (4 decimals).
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

from knobsweep import layout
from knobsweep.report.decision import BASE_MODEL, group_arms
from knobsweep.report.stats import BETTER, WORSE, Comparison, Family, RunScores, compare_family, not_comparable

OPPOSITE = {BETTER: WORSE, WORSE: BETTER}


def compare_with_baseline(arms: dict[str, list[RunScores]], baseline: list[RunScores]) -> Family:
    """Every arm against the baseline on one benchmark's items, as one family (the verdict table's calibrated
    statistics: run-to-run variance pooled over the seeds, many arms decided together)."""
    return compare_family(arms, baseline)


def read_summary(key: str | None, root: Path, warnings: list[str], label: str) -> dict | None:
    if key is None:
        return None
    path = layout.path(layout.BENCHMARK_SUMMARY, root, key=key)
    if not path.is_file():
        return None
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        warnings.append(f"{label}: {path}: unreadable ({error})")
        return None
    return summary if isinstance(summary, dict) else None


def item_scores(key: str, task: str, filter_name: str, metric: str, root: Path) -> tuple[dict[str, float], str] | None:
    """(doc_id -> the item's value, a fingerprint of the items and targets) from samples_<task>.jsonl; None when
    the file is missing or a value is not a number in [0, 1] (no paired mean difference then)."""
    path = layout.path(layout.BENCHMARK_DIR, root, key=key) / layout.BENCHMARK_SAMPLES.format(task=task)
    if not path.is_file():
        return None
    scores: dict[str, float] = {}
    items = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            record = json.loads(line)
            if record.get("filter") != filter_name or metric not in record:
                continue
            value = record[metric]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
                return None
            doc = str(record.get("doc_id"))
            scores[doc] = float(value)
            items.append((doc, str(record.get("doc_hash", "")), str(record.get("target_hash", ""))))
    if not scores:
        return None
    return scores, hashlib.sha256(json.dumps(sorted(items)).encode()).hexdigest()[:16]


def _run_scores(
    name: str, key: str | None, seed: int | None, state: tuple[str, str], which: tuple[str, str, str], root: Path
) -> RunScores:
    """One model's per-item scores on one benchmark (task, filter, metric); None until it ran."""
    read = item_scores(key, *which, root) if key else None
    return RunScores(name, seed, state[0], *(read or (None, None)), reason=state[1])


def _state(run: Any, root: Path) -> tuple[str, str]:
    path = layout.path(layout.TRAIN_STATUS, root, key=run.keys.train)
    try:
        status = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (OSError, ValueError):
        status = {}
    status = status if isinstance(status, dict) else {}
    return str(status.get("state") or "not run"), str(status.get("reason") or "")


def _benchmarks(summaries: list[dict]) -> list[tuple[str, dict]]:
    """(task, its metric entry: metric, filter, higher_is_better) of every benchmark any model reports, in order
    of first appearance."""
    seen: dict[tuple[str, str], dict] = {}
    for summary in summaries:
        for task, entry in (summary.get("tasks") or {}).items():
            for name, metric in (entry.get("metrics") or {}).items():
                seen.setdefault((task, name), metric)
    return [(task, metric) for (task, _), metric in seen.items()]


def _value(summary: dict | None, task: str, name: str) -> tuple[float | None, float | None, int | None]:
    entry = ((summary or {}).get("tasks") or {}).get(task) or {}
    metric = (entry.get("metrics") or {}).get(name) or {}
    value, stderr = metric.get("value"), metric.get("stderr")
    finite = [v if isinstance(v, (int, float)) and math.isfinite(v) else None for v in (value, stderr)]
    return finite[0], finite[1], entry.get("n")


def collect_benchmarks(experiment: Any, root: str | Path = ".", warnings: list[str] | None = None) -> dict:
    """{"rows": one per (benchmark, model): scores, deltas and verdicts; "regressions": arm name -> the
    benchmarks it is worse on}; empty when the experiment runs no benchmarks."""
    root, warnings = Path(root), ([] if warnings is None else warnings)
    arms = group_arms(experiment)
    baseline = next((arm for arm in arms if not arm.changed), None)
    if baseline is None or not any(run.keys.benchmark for arm in arms for run in arm.runs):
        return {"rows": [], "regressions": {}}
    summaries = {
        run.name: read_summary(run.keys.benchmark, root, warnings, f"run '{run.name}' benchmarks")
        for arm in arms
        for run in arm.runs
    }
    base_key = baseline.runs[0].keys.base_benchmark
    base_summary = read_summary(base_key, root, warnings, f"{BASE_MODEL} benchmarks")
    states = {run.name: _state(run, root) for arm in arms for run in arm.runs}
    others = [arm for arm in arms if arm is not baseline]
    rows: list[dict] = []
    regressions: dict[str, list[str]] = {}
    present = [s for s in (base_summary, *summaries.values()) if s]
    for task, metric in _benchmarks(present):
        filter_name, metric_name = metric["filter"], metric["metric"]
        label = f"{task} {filter_name} {metric_name}" if filter_name != "none" else f"{task} {metric_name}"

        which = (task, filter_name, metric_name)
        runs = {
            run.name: _run_scores(run.name, run.keys.benchmark, run.seed, states[run.name], which, root)
            for arm in arms
            for run in arm.runs
        }
        base_runs = [runs[run.name] for run in baseline.runs]
        reference = _run_scores(BASE_MODEL, base_key, None, ("evaluated", ""), which, root)
        family = compare_with_baseline({arm.name: [runs[r.name] for r in arm.runs] for arm in others}, base_runs)
        versus_base = (
            compare_family({baseline.name: base_runs}, [reference], noise=family.noise).arms[baseline.name]
            if reference.scores is not None
            else not_comparable("the base model has no benchmark results yet")
        )
        lower_is_better = metric.get("higher_is_better") is False
        rows.append(_row(label, task, metric, BASE_MODEL, "", [base_summary], None, lower_is_better))
        base_summaries = [summaries[run.name] for run in baseline.runs]
        rows.append(_row(label, task, metric, baseline.name, BASE_MODEL, base_summaries, versus_base, lower_is_better))
        for arm in others:
            arm_summaries = [summaries[run.name] for run in arm.runs]
            row = _row(
                label, task, metric, arm.name, baseline.name, arm_summaries, family.arms[arm.name], lower_is_better
            )
            rows.append(row)
            if row["verdict"] == WORSE:
                regressions.setdefault(arm.name, []).append(label)
    return {"rows": rows, "regressions": regressions}


def _row(
    label: str,
    task: str,
    metric: dict,
    model: str,
    versus: str,
    summaries: list[dict | None],
    comparison: Comparison | None,
    lower_is_better: bool,
) -> dict:
    values = [_value(summary, task, f"{metric['metric']},{metric['filter']}") for summary in summaries]
    numbers = [value for value, _, _ in values if value is not None]
    verdict = comparison.verdict if comparison is not None else ""
    if lower_is_better:  # a metric where less is better (a perplexity): the verdict follows its direction
        verdict = OPPOSITE.get(verdict, verdict)
    return {
        "benchmark": label,
        "task": task,
        "filter": metric["filter"],
        "metric": metric["metric"],
        "model": model,
        "versus": versus,
        "seeds": len(summaries),
        "score": sum(numbers) / len(numbers) if numbers else None,
        "stderr": values[0][1] if len(values) == 1 else None,
        "n": values[0][2],
        **({} if comparison is None else comparison.as_dict()),
        "verdict": verdict,
    }


def regression_text(arm_verdict: str, worse_on: list[str]) -> str:
    """The verdict table's note of an arm's regressions: "better on the target, worse on X, Y"."""
    if not worse_on:
        return ""
    listed = ", ".join(worse_on)
    return f"better on the target, worse on {listed}" if arm_verdict == BETTER else f"worse on {listed}"


def _four(value: Any, signed: bool = False) -> str:
    """A number as lm-eval's command line prints it (4 decimals)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        return ""
    return f"{value:+.4f}" if signed else f"{value:.4f}"


def benchmark_rows(benchmarks: dict) -> list[dict]:
    """The benchmarks table's cells: score ± stderr, Δ [95% CI] against the baseline (the base model for the
    baseline's row), the verdict and how it was reached."""
    out = []
    for row in benchmarks.get("rows", []):
        delta, low, high = row.get("delta"), row.get("ci_low"), row.get("ci_high")
        interval = f" [{_four(low, True)}, {_four(high, True)}]" if _four(low) and _four(high) else ""
        stderr = _four(row.get("stderr"))
        verdict = row.get("verdict") or ""
        out.append(
            {
                "benchmark": row["benchmark"],
                "model": row["model"],
                "versus": row["versus"],
                "reference": not row["versus"],
                "score": _four(row["score"]) + (f" ± {stderr}" if stderr else ""),
                "seeds": row["seeds"] if row["seeds"] > 1 else "",
                "n": "" if row.get("n") is None else str(row["n"]),
                "delta": _four(delta, True) + interval if _four(delta) else "",
                "verdict": verdict,
                "verdict_class": "verdict-" + verdict.replace(" ", "-") if verdict else "",
                "reason": row.get("reason") or "",
                "method": row.get("method") or "",
            }
        )
    return out

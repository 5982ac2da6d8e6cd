"""Read an experiment's result files into pandas frames.

Nothing here renders anything. Every reader tolerates a missing, partial or unreadable file:
the run keeps its row with empty cells, and a line goes into `Collected.warnings`.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from knobsweep import layout, runfiles
from knobsweep.cost import measured_cost
from knobsweep.dotted import config_diff, get_dotted
from knobsweep.report.decision import compare_arms, decision_facts, run_verdicts, verdict_rows
from knobsweep.report.stats import NOISE, SEED_LIMITED
from knobsweep.runfiles import Metrics, iter_json_lines, read_json_object, read_status
from knobsweep.spec.expand import format_value

NOT_RUN = "not run"
REFERENCE_NAME = "base model"
# Curves drawn when logged: (column in the long metrics frame, title, metrics.jsonl names tried in order).
CURVE_SOURCES = (
    ("reward", "Reward", ("reward",)),
    ("loss", "Loss", ("loss",)),
    ("kl", "KL", ("kl",)),
    ("entropy", "Entropy", ("entropy",)),
    ("grad_norm", "Grad norm", ("grad_norm",)),
    ("completion_length", "Completion length", ("completions/mean_length", "completion_length")),
    ("invalid_rate", "Invalid rate", ("invalid_rate",)),
    ("zero_std_share", "Zero-variance group share", ("frac_reward_zero_std",)),
)
CURVE_METRICS = tuple(name for name, _, _ in CURVE_SOURCES)
PARSERS = ("strict", "flexible", "math_verify")
ROLLOUT_PICKS = ("best", "worst", "early", "mid", "late")

# Fixed summary columns, in order; the swept knobs' columns go after `changed`.
HEAD_COLUMNS = ["run", "reference", "changed"]
TAIL_COLUMNS = [
    "hypothesis",
    "seed",
    "status",
    "reason",
    "steps",
    "final_reward",
    "reward_first20",
    "reward_last20",
    "eval_score",
    "eval_correct",
    "eval_format",
    "eval_n",
    "eval_parse_failures",
    "eval_score_ci_low",
    "eval_score_ci_high",
    *[f"eval_{p}{suffix}" for p in PARSERS for suffix in ("", "_ci_low", "_ci_high", "_parse_fail_rate")],
    "eval_parser",
    "reward_parser",
    "delta_eval_score",
    "delta_eval_noise",
    "delta_eval_verdict",
    "delta_final_reward",
    "arm",
    "arm_seeds",
    "arm_eval_mean",
    "arm_eval_std",
    "arm_reward_mean",
    "arm_reward_std",
    "health_warnings",
    "health_kinds",
    "train_time_s",
    "eval_time_s",
    "gpu_hours",
    "cpu_hours",
    "wandb_run",
    "wandb_url",
    "train_key",
    "eval_key",
]


@dataclass
class Collected:
    """Everything the renderer needs, as frames plus a little bookkeeping."""

    runs: pd.DataFrame  # one row per run, then the reference row(s); columns = summary_columns
    metrics: pd.DataFrame  # long: run, step, elapsed_s, reward, loss, ... (sorted by run order, step)
    samples: pd.DataFrame  # run, row_id, prompt, completion, ground_truth, score, reason, valid
    knobs: list[str]  # swept knobs (dotted), in order of first appearance
    changed: dict[str, set[str]]  # run name -> knobs that run changes
    baseline: str | None  # name of the baseline run
    warnings: list[str] = field(default_factory=list)
    health: list[dict] = field(default_factory=list)  # run, step, kind, message (status.json warnings)
    rollouts: list[dict] = field(default_factory=list)  # run, pick, step, row_id, prompt, completion, score, reason
    diffs: dict[str, dict[str, tuple[Any, Any]]] = field(default_factory=dict)  # run -> {knob: (baseline, run)}
    curve_titles: dict[str, str] = field(default_factory=dict)  # metric -> title, for curves logged
    verdicts: list[dict] = field(default_factory=list)  # one per arm: decision.verdict_rows
    decision: dict = field(default_factory=dict)  # the noise the verdicts used and the correction: decision_facts
    lineage: list[dict] = field(default_factory=list)  # the chain of parent baselines: report.lineage
    benchmarks: dict = field(default_factory=dict)  # lm-eval scores and verdicts: report.benchmarks
    tasks: list[dict] = field(default_factory=list)  # reward and eval per task of a mixture: report.tasks
    rungs: dict | None = None  # early_stop: where runs stopped and the compute saved (report.early_stop)

    @property
    def summary_columns(self) -> list[str]:
        return list(self.runs.columns)


# ---------------------------------------------------------------- file readers (knobsweep.runfiles)


def read_metrics(path: Path, warnings: list[str], label: str) -> tuple[pd.DataFrame, Metrics]:
    """metrics.jsonl as a frame with one row per step (the curves' names added beside TRL's), and as read."""
    metrics = runfiles.read_metrics(path, warnings, label)
    frame = metrics.frame.copy()
    if frame.empty:
        return pd.DataFrame(columns=["step", "elapsed_s"]), metrics
    for name, _, sources in CURVE_SOURCES:
        source = next((c for c in sources if c in frame.columns), None)
        if source is not None and source != name:
            frame[name] = frame[source]
    for column in ("elapsed_s", *CURVE_METRICS):
        if column in frame.columns and frame[column].dtype != float:  # text where a number belongs
            frame[column] = pd.to_numeric(frame[column], errors="coerce").astype(float)
    return frame, metrics


def read_samples(path: Path, limit: int, warnings: list[str], label: str) -> list[dict]:
    """The first `limit` lines of samples.jsonl (the file can hold the whole eval split)."""
    return [record for _, record in itertools.islice(iter_json_lines(path, warnings, label), limit)]


# ---------------------------------------------------------------- numbers


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _int(value: Any) -> int | None:
    number = _finite(value)
    return int(number) if number is not None else None


def _tidy(value: float | None) -> float | None:
    """Drop float noise from derived numbers (0.15000000000000002 -> 0.15)."""
    return None if value is None else float(f"{value:.12g}")


def train_numbers(metrics: Metrics) -> dict[str, float | None]:
    """steps, final reward (last 10% of logged steps), first/last 20% means, training time; a window
    holding a NaN reward is left empty (runfiles warned about it)."""
    out: dict[str, float | None] = {
        "steps": None,
        "final_reward": None,
        "reward_first20": None,
        "reward_last20": None,
        "train_time_s": None,
    }
    if metrics.empty:
        return out
    out["steps"] = _int(metrics.frame["step"].max())
    out["final_reward"] = metrics.final_reward()
    out["reward_first20"] = metrics.window_mean("reward", 0.20, last=False)
    out["reward_last20"] = metrics.window_mean("reward", 0.20, last=True)
    if "elapsed_s" in metrics.frame.columns:
        elapsed = pd.to_numeric(metrics.frame["elapsed_s"], errors="coerce").dropna()
        if not elapsed.empty:
            out["train_time_s"] = _finite(elapsed.iloc[-1])
    return out


def _ci(value: Any) -> tuple[float | None, float | None]:
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return _finite(value[0]), _finite(value[1])
    return None, None


def eval_numbers(summary: dict | None) -> dict[str, Any]:
    summary = summary or {}
    parts = summary.get("parts") if isinstance(summary.get("parts"), dict) else {}
    low, high = _ci(summary.get("score_ci95"))
    out: dict[str, Any] = {
        "eval_score": _finite(summary.get("score")),
        "eval_correct": _finite(parts.get("correct")),
        "eval_format": _finite(parts.get("format")),
        "eval_n": _int(summary.get("n")),
        "eval_parse_failures": _int(summary.get("parse_failures")),
        "eval_score_ci_low": low,
        "eval_score_ci_high": high,
        "eval_parser": summary.get("eval_parser") if isinstance(summary.get("eval_parser"), str) else None,
        "reward_parser": summary.get("reward_parser") if isinstance(summary.get("reward_parser"), str) else None,
    }
    parsers = summary.get("parsers") if isinstance(summary.get("parsers"), dict) else {}
    for name in PARSERS:
        entry = parsers.get(name) if isinstance(parsers.get(name), dict) else {}
        low, high = _ci(entry.get("ci95"))
        out[f"eval_{name}"] = _finite(entry.get("score"))
        out[f"eval_{name}_ci_low"] = low
        out[f"eval_{name}_ci_high"] = high
        out[f"eval_{name}_parse_fail_rate"] = _finite(entry.get("parse_failure_rate"))
    return out


def health_warnings(status: dict | None, run: str) -> list[dict]:
    """status.json `warnings: [{step, kind, message}]` as rows (malformed entries kept as text)."""
    items = (status or {}).get("warnings")
    if not isinstance(items, list):
        return []
    out = []
    for item in items:
        if isinstance(item, dict):
            out.append(
                {
                    "run": run,
                    "step": _int(item.get("step")),
                    "kind": _text(item.get("kind")),
                    "message": _text(item.get("message")),
                }
            )
        else:
            out.append({"run": run, "step": None, "kind": "", "message": _text(item)})
    return out


def wandb_cells(status: dict | None) -> dict[str, str | None]:
    """The W&B run that logged the training (status.json `wandb`, knobsweep.train.tracking), whichever
    experiment ran it: entity/project/name (id), and its page when it was logged online."""
    run = (status or {}).get("wandb")
    if not isinstance(run, dict) or not run.get("id"):
        return {"wandb_run": None, "wandb_url": None}
    where = "/".join(str(part) for part in (run.get("entity"), run.get("project")) if part)
    text = f"{where}/{run.get('name')} ({run.get('id')})" + (" offline" if run.get("mode") == "offline" else "")
    url = run.get("url")
    return {"wandb_run": text, "wandb_url": url if isinstance(url, str) and url.startswith("https://") else None}


def wandb_links(collected: Collected) -> list[dict]:
    """[{run, text, url}] of the runs a W&B run logged, for the report's runs section."""
    frame = collected.runs[~collected.runs["reference"].astype(bool)]
    return [
        {"run": run, "text": text, "url": url}
        for run, text, url in zip(frame["run"], frame["wandb_run"], frame["wandb_url"])
        if isinstance(text, str)
    ]


def pick_rollouts(path: Path, last_step: int | None, warnings: list[str], label: str, run: str) -> list[dict]:
    """Best and worst scored rollouts, plus the first, a middle and the last one logged."""
    best = worst = early = mid = late = None
    middle = (last_step or 0) / 2
    for _, record in iter_json_lines(path, warnings, label):
        score = _finite(record.get("score"))
        step = _finite(record.get("step"))
        if early is None:
            early = record
        if mid is None and step is not None and step >= middle and last_step:
            mid = record
        late = record
        if score is not None:
            if best is None or score > _finite(best.get("score")):
                best = record
            if worst is None or score < _finite(worst.get("score")):
                worst = record
    out = []
    for pick, record in zip(ROLLOUT_PICKS, (best, worst, early, mid, late)):
        if record is None:
            continue
        out.append({"run": run, "pick": pick, "step": _int(record.get("step")), **_shown(record)})
    return out


# ---------------------------------------------------------------- config helpers


def _changed_text(changed: dict[str, Any]) -> str:
    return ", ".join(f"{knob}={format_value(value)}" for knob, value in changed.items())


def _hypothesis(changed: dict[str, Any], hypotheses: dict[str, str]) -> str:
    found = [(knob, hypotheses[knob]) for knob in changed if hypotheses.get(knob)]
    if len(found) == 1:
        return str(found[0][1])
    return "\n".join(f"{knob}: {text}" for knob, text in found)


# ---------------------------------------------------------------- the experiment


def collect_experiment(experiment: Any, root: str | Path = ".", samples_per_run: int = 3) -> Collected:
    """Read every run's metrics, status and eval files (and the base model's eval)."""
    root = Path(root)
    warnings: list[str] = []
    runs = list(experiment.runs)
    hypotheses = dict(getattr(experiment, "hypotheses", None) or {})
    baseline = next((run for run in runs if run.is_baseline), None)
    if baseline is None:  # report anyway, without deltas
        warnings.append("no baseline run (changed == {}): deltas are left empty")

    names = [run.name for run in runs]
    if len(set(names)) != len(names):
        warnings.append("run names are not unique; rows with the same name are ambiguous")

    knobs: list[str] = []
    for run in runs:
        for knob in run.changed:
            if knob not in knobs:
                knobs.append(knob)
    knob_columns = [k for k in knobs if k not in HEAD_COLUMNS + TAIL_COLUMNS]

    rows: list[dict] = []
    curves: list[pd.DataFrame] = []
    samples: list[dict] = []
    health: list[dict] = []
    rollouts: list[dict] = []
    diffs: dict[str, dict] = {}
    base_config = baseline.config if baseline is not None else None
    for run in runs:
        label = f"run '{run.name}'"
        keys = run.keys
        status = read_status(layout.path(layout.TRAIN_STATUS, root, key=keys.train), warnings, label)
        metrics, read = read_metrics(layout.path(layout.TRAIN_METRICS, root, key=keys.train), warnings, label)
        summary = read_json_object(layout.path(layout.EVAL_SUMMARY, root, key=keys.eval), warnings, label)

        state = str(status.get("state")) if status and status.get("state") else NOT_RUN
        reason = str(status.get("reason") or "") if status else ""
        if state == "FAILED":
            warnings.append(f"{label} FAILED" + (f": {reason}" if reason else ""))
        numbers = train_numbers(read)
        if numbers["steps"] is None and status:
            numbers["steps"] = _int(status.get("step"))
        if state == "COMPLETED" and summary is None:
            warnings.append(f"{label} is trained but has no eval summary yet")
        run_health = health_warnings(status, run.name)
        health += run_health
        if run_health:
            kinds = sorted({item["kind"] for item in run_health if item["kind"]})
            warnings.append(
                f"{label}: {len(run_health)} training health warning(s)"
                + (f" ({', '.join(kinds)})" if kinds else "")
                + "; see Health warnings"
            )
        runtime = _finite((status or {}).get("runtime_s"))
        if runtime is not None and numbers["train_time_s"] is None:
            numbers["train_time_s"] = runtime
        eval_time = _finite((summary or {}).get("elapsed_s"))
        # The whole training stage (runtime_s) where recorded, else the training loop's clock.
        cost = measured_cost(run.config, runtime if runtime is not None else numbers["train_time_s"], eval_time)
        diffs[run.name] = config_diff(base_config, run.config) if base_config is not None else {}
        rollouts += pick_rollouts(
            layout.path(layout.TRAIN_ROLLOUTS, root, key=keys.train),
            numbers["steps"],
            warnings,
            label,
            run.name,
        )

        row = {
            "run": run.name,
            "reference": False,
            "changed": _changed_text(run.changed),
            **{k: run.changed[k] if k in run.changed else get_dotted(run.config, k) for k in knob_columns},
            "hypothesis": hypotheses.get(run.name) or _hypothesis(run.changed, hypotheses),  # a named run's own
            "seed": run.seed,
            "status": state,
            "reason": reason,
            **numbers,
            **eval_numbers(summary),
            "arm": _changed_text(run.changed) or "baseline",
            "health_warnings": len(run_health),
            "health_kinds": ", ".join(sorted({item["kind"] for item in run_health if item["kind"]})),
            "eval_time_s": eval_time,
            "gpu_hours": _tidy(cost.gpu_hours) if cost.gpu_hours else None,
            "cpu_hours": _tidy(cost.cpu_hours) if cost.cpu_hours else None,
            **wandb_cells(status),
            "train_key": keys.train,
            "eval_key": keys.eval,
        }
        rows.append(row)

        if not metrics.empty:
            curve = metrics[[c for c in ("step", "elapsed_s", *CURVE_METRICS) if c in metrics.columns]].copy()
            curve.insert(0, "seed", run.seed)
            curve.insert(0, "run", run.name)
            curves.append(curve)  # NaN / inf steps included: runfiles warned about them
        samples += _sample_rows(run.name, keys.eval, root, samples_per_run, warnings, label)

    rows += _reference_rows(runs, baseline, root, samples_per_run, warnings, samples)

    columns = HEAD_COLUMNS + knob_columns + TAIL_COLUMNS
    # object dtype keeps None as None and ints as ints (no NaN-promotion to float).
    frame = pd.DataFrame([[row.get(c) for c in columns] for row in rows], columns=columns, dtype=object)
    _add_seed_stats(frame)
    _add_deltas(frame, baseline.name if baseline is not None else None)
    comparisons = compare_arms(experiment, root, warnings)
    verdicts = run_verdicts(comparisons)
    arm_verdicts = [
        None if reference or name not in verdicts or not verdicts[name].comparable else verdicts[name].verdict
        for name, reference in zip(frame["run"], frame["reference"])
    ]
    # The run's arm is not decided beyond noise (within noise, or seed-limited), and its verdict.
    frame["delta_eval_noise"] = pd.Series(
        [None if v is None else v in (NOISE, SEED_LIMITED) for v in arm_verdicts], index=frame.index, dtype=object
    )
    frame["delta_eval_verdict"] = pd.Series(arm_verdicts, index=frame.index, dtype=object)

    metrics_frame = (
        pd.concat(curves, ignore_index=True) if curves else pd.DataFrame(columns=["run", "step", "elapsed_s"])
    )
    samples_frame = pd.DataFrame.from_records(
        samples,
        columns=["run", "row_id", "prompt", "completion", "ground_truth", "score", "reason", "valid"],
    )
    return Collected(
        runs=frame,
        metrics=metrics_frame,
        samples=samples_frame,
        knobs=knobs,
        changed={run.name: set(run.changed) for run in runs},
        baseline=baseline.name if baseline is not None else None,
        warnings=list(dict.fromkeys(warnings)),  # the verdicts read some files again: one line each
        health=health,
        rollouts=rollouts,
        diffs=diffs,
        curve_titles={
            name: title
            for name, title, _ in CURVE_SOURCES
            if name in metrics_frame.columns and metrics_frame[name].notna().any()
        },
        verdicts=verdict_rows(comparisons, frame),
        decision=decision_facts(comparisons),
    )


def _reference_rows(
    runs: list, baseline: Any, root: Path, limit: int, warnings: list[str], samples: list[dict]
) -> list[dict]:
    """One row per distinct base-model eval (one per eval config), the baseline's first."""
    ordered: list[str] = []
    first = [baseline] if baseline is not None else []
    for run in first + runs:
        if run.keys.base_eval not in ordered:
            ordered.append(run.keys.base_eval)
    rows = []
    for index, key in enumerate(ordered):
        name = REFERENCE_NAME if len(ordered) == 1 or index == 0 else f"{REFERENCE_NAME} [{key[:8]}]"
        label = f"reference '{name}'"
        summary = read_json_object(layout.path(layout.EVAL_SUMMARY, root, key=key), warnings, label)
        users = [run.name for run in runs if run.keys.base_eval == key]
        eval_time = _finite((summary or {}).get("elapsed_s"))
        cost = measured_cost(next(run.config for run in runs if run.keys.base_eval == key), None, eval_time)
        rows.append(
            {
                "run": name,
                "reference": True,
                "changed": "",
                "hypothesis": "untrained base model" + (f" (eval config of {', '.join(users)})" if index else ""),
                "status": "evaluated" if summary is not None else NOT_RUN,
                "reason": "",
                **eval_numbers(summary),
                "eval_time_s": eval_time,
                "gpu_hours": _tidy(cost.gpu_hours) if cost.gpu_hours else None,
                "cpu_hours": _tidy(cost.cpu_hours) if cost.cpu_hours else None,
                "eval_key": key,
            }
        )
        samples += _sample_rows(name, key, root, limit, warnings, label)
    return rows


def _sample_rows(name: str, key: str, root: Path, limit: int, warnings: list[str], label: str) -> list[dict]:
    path = layout.path(layout.EVAL_SAMPLES, root, key=key)
    out = []
    for record in read_samples(path, limit, warnings, label):
        out.append(
            {
                "run": name,
                **_shown(record),
                "ground_truth": _text(record.get("ground_truth")),
                "valid": record.get("valid"),
            }
        )
    return out


def _shown(record: dict) -> dict:
    """What the report shows of a rollout or an eval sample, as text and numbers."""
    return {
        "row_id": _text(record.get("row_id")),
        "prompt": _prompt_text(record.get("prompt")),
        "completion": _text(record.get("completion")),
        "score": _finite(record.get("score")),
        "reason": _text(record.get("reason")),
    }


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else format_value(value)


def _prompt_text(prompt: Any) -> str:
    """Chat prompts show each message's content; plain strings pass through."""
    if isinstance(prompt, list):
        parts = []
        for message in prompt:
            if isinstance(message, dict):
                role = message.get("role")
                content = _text(message.get("content"))
                parts.append(f"[{role}] {content}" if role and role != "user" else content)
            else:
                parts.append(_text(message))
        return "\n\n".join(parts)
    return _text(prompt)


def _add_seed_stats(frame: pd.DataFrame) -> None:
    """arm_*: mean and sample std of eval score / final reward over the seeds of one arm."""
    columns = {
        c: [None] * len(frame)
        for c in ("arm_seeds", "arm_eval_mean", "arm_eval_std", "arm_reward_mean", "arm_reward_std")
    }
    runs = frame[~frame["reference"].astype(bool)]
    for _, group in runs.groupby("arm", sort=False):
        for source, name in (("eval_score", "eval"), ("final_reward", "reward")):
            values = [v for v in (_finite(x) for x in group[source]) if v is not None]
            mean = sum(values) / len(values) if values else None
            std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else None
            for index in group.index:
                position = frame.index.get_loc(index)
                columns[f"arm_{name}_mean"][position] = _tidy(mean)
                columns[f"arm_{name}_std"][position] = _tidy(std)
                columns["arm_seeds"][position] = len(group)
    for column, values in columns.items():
        frame[column] = pd.Series(values, index=frame.index, dtype=object)


def _add_deltas(frame: pd.DataFrame, baseline: str | None) -> None:
    """delta_* = row value - the baseline run's value (None where either side is missing); whether
    it is within noise is the paired comparison of the run's arm (knobsweep.report.decision)."""
    for column, source in (("delta_eval_score", "eval_score"), ("delta_final_reward", "final_reward")):
        base = None
        if baseline is not None:
            match = frame[(frame["run"] == baseline) & (~frame["reference"].astype(bool))]
            if not match.empty:
                base = _finite(match.iloc[0][source])
        deltas = [_finite(v) for v in frame[source]]
        frame[column] = pd.Series(
            [_tidy(d - base) if (d is not None and base is not None) else None for d in deltas],
            index=frame.index,
            dtype=object,
        )

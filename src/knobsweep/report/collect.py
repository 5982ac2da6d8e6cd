"""Read an experiment's result files into pandas frames.

Nothing here renders anything. Every reader tolerates a missing, partial or unreadable file:
the run keeps its row with empty cells, and a line goes into `Collected.warnings`.
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from knobsweep import layout
from knobsweep.spec.expand import format_value

NOT_RUN = "not run"
REFERENCE_NAME = "base model"
CURVE_METRICS = ("reward", "loss", "kl", "grad_norm")

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
    "delta_eval_score",
    "delta_final_reward",
    "train_time_s",
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

    @property
    def summary_columns(self) -> list[str]:
        return list(self.runs.columns)


# ---------------------------------------------------------------- file readers


def read_json(path: Path, warnings: list[str], label: str) -> dict | None:
    """A JSON object file, or None if it is missing; unreadable files add a warning."""
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        warnings.append(f"{label}: {path}: unreadable ({error})")
        return None
    if not isinstance(data, dict):
        warnings.append(f"{label}: {path}: expected a JSON object, got {type(data).__name__}")
        return None
    return data


def iter_jsonl(path: Path, warnings: list[str], label: str) -> Iterable[dict]:
    """JSON lines as dicts, skipping (and reporting) bad lines; a torn last line is silent."""
    if not path.is_file():
        return
    try:
        handle = open(path, encoding="utf-8", errors="replace")
    except OSError as error:
        warnings.append(f"{label}: {path}: unreadable ({error})")
        return
    with handle:
        bad = 0
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                if not line.endswith("\n"):  # the writer was killed mid-line
                    continue
                bad += 1
                if bad == 1:
                    warnings.append(f"{label}: {path}:{number}: not a JSON line, skipped")
                continue
            if isinstance(record, dict):
                yield record
        if bad > 1:
            warnings.append(f"{label}: {path}: {bad} bad lines skipped in all")


def read_metrics(path: Path, warnings: list[str], label: str) -> pd.DataFrame:
    """metrics.jsonl as a frame sorted by step (a re-logged step keeps its last line)."""
    frame = pd.DataFrame.from_records(list(iter_jsonl(path, warnings, label)))
    if frame.empty or "step" not in frame.columns:
        return pd.DataFrame(columns=["step", "elapsed_s"])
    for column in ("step", "elapsed_s", *CURVE_METRICS):
        if column in frame.columns:
            # Non-numbers (a stray string) become NaN; inf stays, so it can be reported.
            frame[column] = pd.to_numeric(frame[column], errors="coerce").astype(float)
    frame = frame.dropna(subset=["step"])
    # Several lines for one step (TRL's end-of-training summary, a resumed run) merge into
    # one row holding each column's last logged value.
    return frame.groupby("step", sort=True).last().reset_index()


def read_samples(path: Path, limit: int, warnings: list[str], label: str) -> list[dict]:
    """The first `limit` lines of samples.jsonl (the file can hold the whole eval split)."""
    return list(itertools.islice(iter_jsonl(path, warnings, label), limit))


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


def _window_mean(values: pd.Series, fraction: float, last: bool) -> float | None:
    """Mean over the first/last `fraction` of the values (at least one value)."""
    values = values[values.map(lambda v: _finite(v) is not None)]
    if values.empty:
        return None
    count = max(1, math.ceil(len(values) * fraction))
    window = values.iloc[-count:] if last else values.iloc[:count]
    return _tidy(_finite(window.mean()))


def _tidy(value: float | None) -> float | None:
    """Drop float noise from derived numbers (0.15000000000000002 -> 0.15)."""
    return None if value is None else float(f"{value:.12g}")


def train_numbers(metrics: pd.DataFrame) -> dict[str, float | None]:
    """steps, final reward (last 10% of logged steps), first/last 20% means, training time."""
    out: dict[str, float | None] = {
        "steps": None,
        "final_reward": None,
        "reward_first20": None,
        "reward_last20": None,
        "train_time_s": None,
    }
    if metrics.empty:
        return out
    out["steps"] = _int(metrics["step"].max())
    if "reward" in metrics.columns:
        reward = metrics["reward"]
        out["final_reward"] = _window_mean(reward, 0.10, last=True)
        out["reward_first20"] = _window_mean(reward, 0.20, last=False)
        out["reward_last20"] = _window_mean(reward, 0.20, last=True)
    if "elapsed_s" in metrics.columns:
        elapsed = metrics["elapsed_s"].dropna()
        if not elapsed.empty:
            out["train_time_s"] = _finite(elapsed.iloc[-1])
    return out


def eval_numbers(summary: dict | None) -> dict[str, float | None]:
    summary = summary or {}
    parts = summary.get("parts") if isinstance(summary.get("parts"), dict) else {}
    return {
        "eval_score": _finite(summary.get("score")),
        "eval_correct": _finite(parts.get("correct")),
        "eval_format": _finite(parts.get("format")),
        "eval_n": _int(summary.get("n")),
        "eval_parse_failures": _int(summary.get("parse_failures")),
    }


# ---------------------------------------------------------------- config helpers


def get_dotted(config: Any, knob: str) -> Any:
    node = config
    for part in knob.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


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
    for run in runs:
        label = f"run '{run.name}'"
        keys = run.keys
        status = read_json(layout.path(layout.TRAIN_STATUS, root, key=keys.train), warnings, label)
        metrics = read_metrics(layout.path(layout.TRAIN_METRICS, root, key=keys.train), warnings, label)
        summary = read_json(layout.path(layout.EVAL_SUMMARY, root, key=keys.eval), warnings, label)

        state = str(status.get("state")) if status and status.get("state") else NOT_RUN
        reason = str(status.get("reason") or "") if status else ""
        if state == "FAILED":
            warnings.append(f"{label} FAILED" + (f": {reason}" if reason else ""))
        numbers = train_numbers(metrics)
        if numbers["steps"] is None and status:
            numbers["steps"] = _int(status.get("step"))
        if state == "COMPLETED" and summary is None:
            warnings.append(f"{label} is trained but has no eval summary yet")

        row = {
            "run": run.name,
            "reference": False,
            "changed": _changed_text(run.changed),
            **{k: run.changed[k] if k in run.changed else get_dotted(run.config, k) for k in knob_columns},
            "hypothesis": _hypothesis(run.changed, hypotheses),
            "seed": run.seed,
            "status": state,
            "reason": reason,
            **numbers,
            **eval_numbers(summary),
            "train_key": keys.train,
            "eval_key": keys.eval,
        }
        rows.append(row)

        if not metrics.empty:
            curve = metrics[[c for c in ("step", "elapsed_s", *CURVE_METRICS) if c in metrics.columns]].copy()
            curve.insert(0, "run", run.name)
            curves.append(curve)
            for metric in CURVE_METRICS:
                if metric in metrics.columns and metrics[metric].map(math.isinf).any():
                    warnings.append(f"{label}: infinite {metric} in metrics.jsonl")
        samples += _sample_rows(run.name, keys.eval, root, samples_per_run, warnings, label)

    rows += _reference_rows(runs, baseline, root, samples_per_run, warnings, samples)

    columns = HEAD_COLUMNS + knob_columns + TAIL_COLUMNS
    # object dtype keeps None as None and ints as ints (no NaN-promotion to float).
    frame = pd.DataFrame([[row.get(c) for c in columns] for row in rows], columns=columns, dtype=object)
    _add_deltas(frame, baseline.name if baseline is not None else None)

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
        warnings=warnings,
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
        summary = read_json(layout.path(layout.EVAL_SUMMARY, root, key=key), warnings, label)
        users = [run.name for run in runs if run.keys.base_eval == key]
        rows.append(
            {
                "run": name,
                "reference": True,
                "changed": "",
                "hypothesis": "untrained base model" + (f" (eval config of {', '.join(users)})" if index else ""),
                "status": "evaluated" if summary is not None else NOT_RUN,
                "reason": "",
                **eval_numbers(summary),
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
                "row_id": _text(record.get("row_id")),
                "prompt": _prompt_text(record.get("prompt")),
                "completion": _text(record.get("completion")),
                "ground_truth": _text(record.get("ground_truth")),
                "score": _finite(record.get("score")),
                "reason": _text(record.get("reason")),
                "valid": record.get("valid"),
            }
        )
    return out


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


def _add_deltas(frame: pd.DataFrame, baseline: str | None) -> None:
    """delta_* = row value - the baseline run's value (None where either side is missing)."""
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

"""What earlier sweeps measured of the noise: their replicated arms, in the same setting.

A sweep with one seed per arm cannot measure how much two trainings of one config differ, so its
verdicts are seed-limited; and `knobsweep plan` cannot say what a design will detect without that
spread. An earlier sweep of the same setting may have measured it: every arm of it run with two or
more seeds is a sample of the spread. Same setting means the same base model and method and the
same eval config (eval and reward, as the eval stage recorded it in summary.json); for a verdict,
also the same eval prompts (the fingerprint of their row ids and ground truths). The earlier sweeps
are the reports under results/ (each `results/<experiment>/summary.json` lists its runs by arm and
seed).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

from knobsweep import layout
from knobsweep.report.stats import NoiseFloor, read_sample_scores
from knobsweep.spec.experiment import evaluation_config

FINISHED = ("COMPLETED", "EARLY_STOPPED")


@dataclass(frozen=True)
class Replicates:
    """The runs of one arm of an earlier sweep (one per seed): each run's row_id -> its valid samples' scores."""

    experiment: str
    arm: str
    runs: tuple[dict[str, list[float]], ...]

    def run_means(self) -> list[float]:
        """Each run's score, over the prompts every run of the arm scored."""
        shared = set.intersection(*(set(run) for run in self.runs))
        return [float(np.mean([np.mean(run[row]) for row in shared])) for run in self.runs] if shared else []


def _json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # a half-written or foreign file measures nothing: skipped
        return {}
    return data if isinstance(data, dict) else {}


def _setting(config: dict) -> tuple[str, str]:
    return str((config.get("model") or {}).get("name")), str((config.get("train") or {}).get("method"))


def _trained_setting(root: Path, train_key: str) -> tuple[str, str] | None:
    """(base model, method) a finished training ran with, from its run.yaml."""
    import yaml

    if _json(layout.path(layout.TRAIN_STATUS, root, key=train_key)).get("state") not in FINISHED:
        return None
    try:
        run_yaml = layout.path(layout.TRAIN_DIR, root, key=train_key) / layout.RUN_CONFIG
        config = yaml.safe_load(run_yaml.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return None
    return _setting(config) if isinstance(config, dict) else None


def _eval_config(config: dict) -> dict | None:
    from knobsweep.spec.schema import EvalJob

    try:
        return EvalJob.model_validate(evaluation_config(config)).model_dump(mode="json")
    except (KeyError, ValidationError):  # a hand-built run config without its eval: nothing to match
        return None


def replicated_arms(
    config: dict, root: str | Path = ".", *, prompts: str | None = None, exclude: set[str] = frozenset()
) -> list[Replicates]:
    """The arms of the sweeps under results/ run with two or more finished, evaluated seeds in the
    setting of `config` (a run config); `prompts`: only evals of these eval prompts (a fingerprint);
    `exclude`: train keys left out (an experiment's own runs)."""
    root = Path(root)
    eval_config = _eval_config(config)
    if eval_config is None:
        return []
    setting = _setting(config)
    found = []
    for summary_path in sorted((root / layout.RESULTS).glob("*/summary.json")):
        summary = _json(summary_path)
        if not isinstance(summary.get("rows"), list):
            continue
        arms: dict[str, list[dict]] = {}
        for row in summary["rows"]:
            if isinstance(row, dict) and not row.get("reference") and row.get("train_key") not in exclude:
                arms.setdefault(str(row.get("arm")), []).append(row)
        for arm, rows in arms.items():
            runs = [_run_samples(root, row, setting, eval_config, prompts) for row in rows]
            runs = [run for run in runs if run]
            if len(runs) >= 2:
                found.append(Replicates(str(summary.get("experiment")), arm, tuple(runs)))
    return found


def _run_samples(
    root: Path, row: dict, setting: tuple[str, str], eval_config: dict, prompts: str | None
) -> dict[str, list[float]] | None:
    """The run's per-prompt sample scores, if it ran in this setting (and on these eval prompts)."""
    train_key, eval_key = row.get("train_key"), row.get("eval_key")
    if not isinstance(train_key, str) or not isinstance(eval_key, str):
        return None
    if _trained_setting(root, train_key) != setting:
        return None
    if _json(layout.path(layout.EVAL_SUMMARY, root, key=eval_key)).get("config") != eval_config:
        return None
    try:
        read = read_sample_scores(layout.path(layout.EVAL_SAMPLES, root, key=eval_key))
    except (OSError, ValueError):
        return None
    if read is None or (prompts is not None and read[1] != prompts):
        return None
    return read[0]


def sources(arms: list[Replicates]) -> str:
    """Which sweeps, in words: `demo (6 runs), demo_next (4 runs)`."""
    runs: dict[str, int] = {}
    for arm in arms:
        runs[arm.experiment] = runs.get(arm.experiment, 0) + len(arm.runs)
    return ", ".join(f"{name} ({count} runs)" for name, count in runs.items())


def noise_from_history(experiment: Any, root: str | Path = ".") -> NoiseFloor | None:
    """The run-to-run variance of a run's score pooled over the replicated arms of earlier sweeps in
    this experiment's setting and on its eval prompts; None when there is none. The experiment's
    own runs are left out, so the floor and the deltas it judges share no run."""
    root = Path(root)
    baseline = next((run for run in experiment.runs if run.is_baseline), None)
    if baseline is None:
        return None
    try:
        read = read_sample_scores(layout.path(layout.EVAL_SAMPLES, root, key=baseline.keys.eval))
    except (OSError, ValueError):  # the verdict names the unreadable file; no floor from it
        return None
    if read is None:
        return None
    own = {run.keys.train for run in experiment.runs}
    arms = replicated_arms(baseline.config, root, prompts=read[1], exclude=own)
    squares, df = 0.0, 0
    for arm in arms:
        means = np.array(arm.run_means())
        if means.size >= 2:
            squares += float(((means - means.mean()) ** 2).sum())
            df += means.size - 1
    if df == 0:
        return None
    where = "earlier sweeps of this model, method and eval under results/: " + sources(arms)
    return NoiseFloor(squares / df, df, where)


__all__ = ["Replicates", "noise_from_history", "replicated_arms", "sources"]

"""The chain of baselines an experiment follows up (`parent:`, written by `knobsweep next`), oldest first:
each experiment's baseline with its headline eval score and 95% CI (from its results, else "not run") and
what changed in the baseline's config at each link."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from knobsweep.dotted import config_diff
from knobsweep.errors import SpecError
from knobsweep.report.collect import NOT_RUN
from knobsweep.report.decision import compare_arms


def _parent(path: Path) -> Path | None:
    from knobsweep.spec.load import load_spec

    spec, _ = load_spec(path)
    return Path(os.path.normpath(path.parent / spec.parent)) if spec.parent else None


def _baseline_score(experiment: Any, root: Path, warnings: list[str]) -> dict:
    """The baseline's eval score and 95% CI under its experiment's model of noise (the verdicts'):
    the run-to-run variance over its seeds, or eval sampling only for a lone run, as `method` says."""
    score = compare_arms(experiment, root, warnings).baseline_score
    if score is None:
        return {"eval_score": None, "ci_low": None, "ci_high": None, "seeds": 0, "status": NOT_RUN, "method": ""}
    seeds = sum(1 for run in experiment.runs if run.is_baseline)
    return {
        "eval_score": score.mean,
        "ci_low": score.low,
        "ci_high": score.high,
        "seeds": seeds,
        "status": "evaluated",
        "method": score.method,
    }


def _config(experiment: Any) -> dict:
    baseline = next(run for run in experiment.runs if run.is_baseline)
    return {key: value for key, value in baseline.config.items() if key != "seed"}


def lineage(experiment: Any, root: str | Path = ".", warnings: list[str] | None = None) -> list[dict]:
    """One dict per experiment of the chain, oldest first; [] for an experiment without `parent:`.
    A parent that cannot be read, or a cycle of parents, ends the chain with a row saying so."""
    from knobsweep.spec import load_experiment

    root, warnings = Path(root), [] if warnings is None else warnings
    path = Path(str(getattr(experiment, "path", "")))
    if not path.is_file() or not any(run.is_baseline for run in experiment.runs):
        return []
    chain: list[dict] = []
    seen = {path.resolve()}
    current, loaded = path, experiment
    while True:
        link = {
            "experiment": loaded.name,
            "file": str(current),
            "problem": "",
            **_baseline_score(loaded, root, warnings),
        }
        chain.append((link, _config(loaded)))
        try:
            parent = _parent(current)
        except SpecError as error:
            link["problem"] = f"its parent cannot be read: {error.problems[0]}"
            break
        if parent is None:
            break
        if parent.resolve() in seen:
            chain.append(({"experiment": "", "file": str(parent), "problem": "a cycle: named again here"}, None))
            break
        seen.add(parent.resolve())
        try:
            loaded, current = load_experiment(parent), parent
        except SpecError as error:
            problem = f"cannot be read: {error.problems[0]}"
            chain.append(({"experiment": "", "file": str(parent), "problem": problem}, None))
            break
    if len(chain) == 1:
        return []
    rows = []
    older = None
    for link, config in reversed(chain):
        changes = config_diff(older, config) if older is not None and config is not None else {}
        empty = {"eval_score": None, "ci_low": None, "ci_high": None, "seeds": 0, "status": "", "method": ""}
        rows.append({**empty, **link, "changes": [{"knob": k, "from": a, "to": b} for k, (a, b) in changes.items()]})
        older = config if config is not None else older
    return rows

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
from knobsweep.report.decision import run_scores
from knobsweep.report.stats import prompt_interval


def _parent(path: Path) -> Path | None:
    from knobsweep.spec.load import load_spec

    spec, _ = load_spec(path)
    return Path(os.path.normpath(path.parent / spec.parent)) if spec.parent else None


def _baseline_score(experiment: Any, root: Path, warnings: list[str]) -> dict:
    """The baseline's eval score and 95% CI over its eval prompts. With several seeds a prompt's score is
    its mean over the seeds (they share the prompts), so the interval is the pooled mean's, as the
    verdict table's are, not a union of the seeds' own intervals."""
    scored = [
        found.scores
        for found in (run_scores(run, root, warnings) for run in experiment.runs if run.is_baseline)
        if found.scores
    ]
    shared = sorted(set.intersection(*(set(scores) for scores in scored))) if scored else []
    if not shared:
        return {"eval_score": None, "ci_low": None, "ci_high": None, "seeds": 0, "status": NOT_RUN}
    mean, low, high = prompt_interval([sum(scores[prompt] for scores in scored) / len(scored) for prompt in shared])
    return {"eval_score": mean, "ci_low": low, "ci_high": high, "seeds": len(scored), "status": "evaluated"}


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
        empty = {"eval_score": None, "ci_low": None, "ci_high": None, "seeds": 0, "status": ""}
        rows.append({**empty, **link, "changes": [{"knob": k, "from": a, "to": b} for k, (a, b) in changes.items()]})
        older = config if config is not None else older
    return rows

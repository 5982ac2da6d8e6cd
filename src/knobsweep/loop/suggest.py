"""`knobsweep suggest`: every rule of `rules.RULES` on each finished run, the baseline first."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from knobsweep import layout
from knobsweep.loop.curves import read_curves
from knobsweep.loop.rules import RULES, Change, Evidence, Rule, RunData
from knobsweep.loop.values import allowed_values
from knobsweep.runfiles import UNREADABLE, read_status
from knobsweep.train.status import COMPLETED, EARLY_STOPPED

FINISHED = (COMPLETED, EARLY_STOPPED)  # an early-stopped run finished: no learning signal, or a rung stopped it
HEALTHY = "no symptom found; the baseline looks healthy"


class LoopError(Exception):
    """Bad input to `suggest` / `next`: the message names the run, arm or knob and what is allowed."""


@dataclass(frozen=True)
class Proposal:
    change: Change
    values: tuple  # allowed by the spec, in the order proposed
    dropped: tuple[str, ...]  # why the other proposed values were left out


@dataclass(frozen=True)
class Suggestion:
    run: str
    rule: Rule
    evidence: Evidence
    proposals: tuple[Proposal, ...]


def run_state(run: Any, root: Path, warnings: list[str] | None = None) -> tuple[str, str]:
    """(training state, reason) from the run's status.json, read as every command reads it
    (knobsweep.runfiles): ("not run", "") without one, ("unreadable", why) for one that is not JSON."""
    path = layout.path(layout.TRAIN_STATUS, root, key=run.keys.train)
    status = read_status(path, [] if warnings is None else warnings, f"run '{run.name}'")
    return str(status.get("state") or "not run"), str(status.get("reason") or "")


def unfinished(run: Any, root: Path) -> str | None:
    """Why a run is not a finished result ("is RUNNING", "FAILED: ..."), or None when it finished."""
    state, reason = run_state(run, root)
    if state in FINISHED:
        return None
    if state == "not run":
        return "has not run"
    if state == UNREADABLE:
        return f"has a status.json that cannot be read: {reason}"
    return f"{'is ' if state not in ('FAILED', 'CANCELLED') else ''}{state}" + (f": {reason}" if reason else "")


def rung_stop(run: Any, root: Path) -> str | None:
    """Why a run a rung stopped (early_stop) is no result to adopt, or None: it never trained to the end.
    Its partial curves are still read (`suggest`): they show why it lost."""
    status = read_status(layout.path(layout.TRAIN_STATUS, root, key=run.keys.train), [], run.name)
    if status.get("stopped_at_rung"):
        return f"was stopped at a rung ({status.get('reason')}): a stopped arm never trained to the end"
    return None


def finished_baseline(experiment: Any, root: Path) -> list[Any]:
    """The baseline's runs (one per seed); a LoopError names the first that has not finished."""
    runs = [run for run in experiment.runs if run.is_baseline]
    if not runs:
        raise LoopError(f"{experiment.path}: experiment '{experiment.name}' has no baseline run")
    for run in runs:
        why = unfinished(run, root)
        if why:
            raise LoopError(
                f"{experiment.path}: run '{run.name}' {why}; suggest and next need a finished baseline "
                f"(state {' or '.join(FINISHED)}): run the sweep first"
            )
    return runs


def run_data(run: Any, root: Path) -> RunData:
    """A run's curves and rollouts file; `warnings` holds what reading them skipped or distrusted."""
    warnings: list[str] = []
    curves = read_curves(layout.path(layout.TRAIN_METRICS, root, key=run.keys.train), warnings, f"run '{run.name}'")
    return RunData(run.name, run.config, curves, layout.path(layout.TRAIN_ROLLOUTS, root, key=run.keys.train), warnings)


def diagnose(data: RunData, config: dict | None = None) -> list[Suggestion]:
    """The rules that fire on one run, with values proposed from `config` (default: the run's own)."""
    config = config or data.config
    found = []
    for rule in RULES:
        evidence = rule.test(data)
        if evidence is None:
            continue
        proposals = []
        for change in rule.changes:
            kept, dropped = allowed_values(config, change.knob, change.propose(config))
            proposals.append(Proposal(change, tuple(kept), tuple(dropped)))
        found.append(Suggestion(data.name, rule, evidence, tuple(proposals)))
    return found


def suggest(experiment: Any, root: str | Path = ".") -> tuple[list[Suggestion], list[str]]:
    """(the suggestions for every finished run, the baseline's first; a note per run left out and per
    line of its files skipped or distrusted)."""
    root = Path(root)
    baseline = finished_baseline(experiment, root)
    found, notes = [], []
    for run in baseline + [run for run in experiment.runs if not run.is_baseline]:
        why = unfinished(run, root)
        if why:
            notes.append(f"run '{run.name}' {why}: not read")
            continue
        data = run_data(run, root)
        found += diagnose(data)
        notes += data.warnings
    return found, list(dict.fromkeys(notes))


def table_rows(found: list[Suggestion]) -> list[tuple[str, ...]]:
    """(run, symptom, evidence, knob change, suggested values, rule) per proposal; a rule without a knob
    change gets one row that says what to fix instead."""
    from knobsweep.spec.expand import format_value

    rows = []
    for suggestion in found:
        evidence = suggestion.evidence
        shown = f"{evidence.metric}, steps {evidence.steps}: {evidence.values}"
        head = (suggestion.run, suggestion.rule.symptom, shown)
        if not suggestion.proposals:
            rows.append((*head, evidence.note, "-", suggestion.rule.name))
        for proposal in suggestion.proposals:
            values = ", ".join(format_value(value) for value in proposal.values)
            if proposal.dropped and not values:
                values = f"none the spec allows ({proposal.dropped[0]})"
            elif not values:
                values = "none: the current value is already at the guide's values or the schema's bound"
            change = f"{proposal.change.knob} {proposal.change.direction}"
            rows.append((*head, change, values, suggestion.rule.name))
    return rows

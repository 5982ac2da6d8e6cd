"""CLI of a rung decision: which arms of an experiment stop at this rung.

    python -m knobsweep.early_stop.rung_decision --config-json DECISION --out results/rung_decisions/<key>

DECISION (knobsweep.early_stop.plan) names the rung, the rung settings, and each run's arm, seed,
train key, segment and rung eval. Arms still running and the baseline are compared on their rung
evals' per-prompt scores by `decide_rung` (knobsweep.early_stop.decide); decision.json holds every
arm's decision (`decisions`) and the runs that stop here or stopped before (`stopped`: train key ->
rung, step, delta, bound, reason and the rung's adapter), which the arm's later jobs read.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from knobsweep import layout
from knobsweep.io import atomic_dir, atomic_write_json, json_object


def _scores(entry: dict, name: str, root: Path):
    from knobsweep.report.stats import RunScores, read_scores

    read = read_scores(layout.path(layout.RUNG_EVAL_SAMPLES, root, key=entry["eval"]))
    scores, fingerprint = read if read is not None and read[0] else (None, None)
    return RunScores(name, entry["seed"], "rung", scores, fingerprint)


def decide(config: dict, root: Path = Path(".")) -> dict:
    """decision.json's content for one rung of one experiment."""
    from knobsweep.early_stop.decide import decide_rung

    rung, fractions = config["rung"], config["rungs"]
    fraction = fractions[rung - 1]
    previous = json.loads((root / config["previous"]).read_text()) if config["previous"] else {}
    stopped = dict(previous.get("stopped", {}))
    runs = config["runs"]
    baseline = [_scores(entry, name, root) for name, entry in runs.items() if entry["baseline"]]
    arms: dict[str, list] = {}
    for name, entry in runs.items():
        if not entry["baseline"] and entry["train"] not in stopped:
            arms.setdefault(entry["arm"], []).append(_scores(entry, name, root))
    decisions = (
        decide_rung(arms, baseline, rung=rung, rungs=len(fractions), fraction=fraction, alpha=config["alpha"])
        if arms
        else {}
    )
    for entry in runs.values():
        decision = decisions.get(entry["arm"])
        if decision is None or not decision.stop:
            continue
        segment = json.loads(layout.path(layout.RUNG_SEGMENT, root, key=entry["segment"]).read_text())
        comparison = decision.comparison
        stopped[entry["train"]] = {
            "rung": rung,
            "rungs": len(fractions),
            "fraction": fraction,
            "step": segment["step"],
            "max_steps": segment["max_steps"],
            "delta": comparison.delta,
            "ci_high": comparison.ci_high,
            "reason": decision.reason,
            "adapter": layout.RUNG_ADAPTER.format(key=entry["segment"]),
        }
    return {
        "experiment": config["experiment"],
        "rung": rung,
        "fraction": fraction,
        "alpha": config["alpha"],
        "decisions": {arm: decision.as_dict() for arm, decision in decisions.items()},
        "stopped": stopped,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m knobsweep.early_stop.rung_decision", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--config-json", required=True, type=json_object, help="the decision's runs and settings")
    parser.add_argument("--out", required=True, help="output directory results/rung_decisions/<key>")
    args = parser.parse_args(argv)
    result = decide(args.config_json)
    with atomic_dir(args.out) as tmp:
        atomic_write_json(tmp / layout.DECISION, result)
    for arm, decision in result["decisions"].items():
        print(f"{arm}: {'STOP, ' if decision['stop'] else ''}{decision['reason']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

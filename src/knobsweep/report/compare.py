"""`knobsweep compare A.yaml B.yaml`: the runs of two experiments in one report.

The first experiment's baseline is the reference. Each run of the second is described by the knobs
in which its resolved config differs from that baseline, so the runs table, the deltas against the
baseline and the parameter diff read across both files. Run names get their experiment as a prefix
(`A/baseline`, `B/learning_rate=2e-4`); the report goes to results/<A>-vs-<B>/.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from knobsweep.dotted import config_diff
from knobsweep.spec import Experiment


def combine(first: Experiment, second: Experiment) -> Experiment:
    """One experiment holding both one's runs, measured against the first's baseline."""
    if first.name == second.name:
        raise ValueError(
            f"both files are experiment '{first.name}' ({first.path}, {second.path}); compare two different experiments"
        )
    reference = first.baseline.config
    runs = [dataclasses.replace(run, name=f"{first.name}/{run.name}") for run in first.runs]
    for run in second.runs:
        # A run identical to the reference still differs in where it comes from: say so, or it
        # would pass for a second baseline.
        changed = {knob: value for knob, (_, value) in config_diff(reference, run.config).items()}
        changed = changed or {"experiment": second.name}
        runs.append(dataclasses.replace(run, name=f"{second.name}/{run.name}", changed=changed))
    return Experiment(
        name=f"{first.name}-vs-{second.name}",
        path=Path(f"{first.path} + {second.path}"),
        runs=tuple(runs),
        hypotheses={**second.hypotheses, **first.hypotheses},
        mode="compare",
    )

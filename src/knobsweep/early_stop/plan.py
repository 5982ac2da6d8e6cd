"""The rung stages of an experiment with `early_stop:`, and their keys.

For each rung (a fraction of training) every run trains a segment up to the rung's step
(results/rungs/<segment-key>/: its record and the rung's adapter), the segment's model is scored on
the rung's eval prompts (results/rung_eval/<key>/), and the experiment decides at the rung which
arms stop (results/rung_decisions/<key>/decision.json). An arm's next segment waits for the
decision (and records the stop instead of training when it says stop); the baseline never stops,
so its segments wait only for its previous segment. A run's final training job then waits for its
last rung, and resumes from the rung's checkpoint (an arm that stopped ends EARLY_STOPPED there).

Keys: a segment's key hashes its run's train key and the fraction; a rung eval's, the segment's key,
the eval config and the prompt subset; a decision's, the rung, every rung setting, the rung evals it
reads and the previous decision. No run's train or eval key changes: a run that goes on trains
exactly as it would without rungs (tests/test_rungs_train.py), so its final training, merge and eval
are shared with the same sweep run without rungs. A run a rung stopped keeps its folder
results/train/<key>/ (checkpoints up to the rung, status EARLY_STOPPED): an experiment without rungs
that has the same run lists other inputs for its training job, which Snakemake takes as a reason to
run it again, and it resumes from the rung's checkpoint to the end (docs/early_stop.md).
"""

from __future__ import annotations

from dataclasses import dataclass

from knobsweep import layout
from knobsweep.io import content_hash


@dataclass(frozen=True)
class Segment:
    """One run's training up to one rung, and the rung's eval of it."""

    key: str
    run: object  # knobsweep.spec.experiment.Run
    rung: int  # 1-based
    fraction: float
    eval_key: str
    after: str | None  # the file it waits for: the run's previous segment (baseline) or decision (arm)
    decision: str | None  # the previous rung decision, which may have stopped an arm

    @property
    def dir(self) -> str:
        return layout.RUNG_DIR.format(key=self.key)

    @property
    def record(self) -> str:
        return layout.RUNG_SEGMENT.format(key=self.key)


@dataclass(frozen=True)
class Decision:
    """The experiment's decision at one rung: which arms stop."""

    key: str
    rung: int
    config: dict  # what the decision stage reads (--config-json): settings, runs, their rung evals
    inputs: tuple[str, ...]

    @property
    def file(self) -> str:
        return layout.RUNG_DECISION.format(key=self.key)


@dataclass(frozen=True)
class RungPlan:
    segments: tuple[Segment, ...] = ()
    decisions: tuple[Decision, ...] = ()
    last: dict = None  # run name -> (the file its final training waits for, the decision it reads or None)

    def final(self, run) -> tuple[tuple[str, ...], str | None]:
        """(extra inputs, --decision) of a run's final training job."""
        if not self.last or run.name not in self.last:
            return (), None
        after, decision = self.last[run.name]
        return (after,), decision


def arm_of(run) -> str:
    """The arm a run belongs to (its name without the seed)."""
    return run.name.removesuffix(f",seed={run.seed}")


def rung_plan(experiment) -> RungPlan:
    """The rung stages of an experiment (an empty plan without early_stop, or without arms)."""
    settings = experiment.early_stop
    if not settings or not any(not run.is_baseline for run in experiment.runs):
        return RungPlan(last={})
    from knobsweep.spec.experiment import evaluation_config

    fractions = settings["rungs"]
    subset = {"prompts": settings["eval_prompts"], "seed": settings["eval_seed"]}
    segments: list[Segment] = []
    decisions: list[Decision] = []
    previous: dict[str, Segment] = {}
    decision: Decision | None = None
    for rung, fraction in enumerate(fractions, start=1):
        current = []
        for run in experiment.runs:
            key = content_hash({"stage": "rung_train", "train": run.keys.train, "fraction": fraction})
            eval_key = content_hash(
                {
                    "stage": "rung_eval",
                    "segment": key,
                    "data": run.keys.data,
                    "config": evaluation_config(run.config),
                    "subset": subset,
                }
            )
            if run.is_baseline:
                after = previous[run.name].record if run.name in previous else None
                waits_on = None
            else:
                after = waits_on = decision.file if decision else None
            segment = Segment(key, run, rung, fraction, eval_key, after, waits_on)
            current.append(segment)
            previous[run.name] = segment
        segments += current
        entries = {
            segment.run.name: {
                "arm": arm_of(segment.run),
                "seed": segment.run.seed,
                "baseline": segment.run.is_baseline,
                "train": segment.run.keys.train,
                "segment": segment.key,
                "eval": segment.eval_key,
            }
            for segment in current
        }
        config = {
            "experiment": experiment.name,
            "rung": rung,
            "rungs": fractions,
            "alpha": settings["alpha"],
            "runs": entries,
            "previous": decision.file if decision else None,
        }
        inputs = tuple(layout.RUNG_EVAL_SUMMARY.format(key=s.eval_key) for s in current)
        inputs += tuple(s.record for s in current)
        decision = Decision(
            content_hash({"stage": "rung_decision", **{k: v for k, v in config.items() if k != "experiment"}}),
            rung,
            config,
            inputs + ((decision.file,) if decision else ()),
        )
        decisions.append(decision)
    last = {
        run.name: (previous[run.name].record, None) if run.is_baseline else (decision.file, decision.file)
        for run in experiment.runs
    }
    return RungPlan(tuple(segments), tuple(decisions), last)

"""What `knobsweep plan` says will run: the stage jobs Snakemake runs, decided the way the rules make it.

A stage job runs when one of its outputs is missing, or when a job it reads from runs and the file it
reads is missing too. A file that exists is the right one whatever its timestamp: it is named by its
content key, and the rules declare stage inputs `ancient` (rules/common.smk, `stage_inputs`). Nothing
else of a run reaches Snakemake as a rerun trigger: its params are functions of the stage's key (or,
the launch command, of its resources, which Snakemake leaves out of its params trigger), and names and
tracking come from results/train/<key>/run_info.json (knobsweep.runinfo). The report is rebuilt when
an output of its is missing, an eval or benchmark it reads runs, or one of its inputs (the experiment
file, the evals' and benchmarks' summaries) is newer than its oldest output, as Snakemake's timestamps
decide.

`tests/test_workflow.py` holds `snakemake -n` to this, job for job, on every plan it checks.
"""

from __future__ import annotations

import json
import os
from base64 import urlsafe_b64encode
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from knobsweep import layout
from knobsweep.early_stop.plan import RungPlan, rung_plan

# stage -> the Snakemake rule whose job runs it (a run's merge runs in its train job)
RULES = {
    "data": "convert_data",
    "tiny": "tiny_model",
    "train": "train",
    "merge": "train",
    "eval": "evaluate",
    "base_eval": "evaluate",
    "benchmark": "benchmark",
    "base_benchmark": "benchmark",
    "rung_train": "rung_train",
    "rung_eval": "rung_eval",
    "rung_decision": "rung_decision",
    "report": "report",
}
RUNG_RULES = ("rung_train", "rung_eval", "rung_decision")
OUTPUTS = {  # stage -> what its job must leave (the rule's declared outputs)
    "data": (layout.DATA_TRAIN, layout.DATA_EVAL, layout.DATA_MANIFEST),
    "tiny": (layout.TINY_MODEL,),
    "train": (layout.TRAIN_ADAPTER,),
    "merge": (layout.MERGE_DIR,),
    "eval": (layout.EVAL_SUMMARY, layout.EVAL_SAMPLES),
    "base_eval": (layout.EVAL_SUMMARY, layout.EVAL_SAMPLES),
    "benchmark": (layout.BENCHMARK_SUMMARY,),
    "base_benchmark": (layout.BENCHMARK_SUMMARY,),
    "rung_train": (layout.RUNG_SEGMENT,),
    "rung_eval": (layout.RUNG_EVAL_SUMMARY, layout.RUNG_EVAL_SAMPLES),
    "rung_decision": (layout.RUNG_DECISION,),
    "report": (layout.REPORT_HTML, layout.REPORT_CSV, layout.REPORT_JSON, layout.REPORT_DONE),
}

Node = tuple[str, str]  # (stage, key); the report's key is the experiment's name


@dataclass
class Plan:
    """Each stage that will run, with why ("no result", "its input ... is rebuilt", ...)."""

    reasons: dict[Node, str] = field(default_factory=dict)

    def will_run(self, stage: str, key: str | None) -> bool:
        return (stage, key) in self.reasons

    def jobs(self) -> dict[tuple[str, str], str]:
        """(rule, wildcard value) -> why, as `snakemake -n` lists the jobs it will run."""
        jobs: dict[tuple[str, str], str] = {}
        for (stage, key), why in self.reasons.items():
            jobs.setdefault((RULES[stage], key), f"{stage}: {why}")
        return jobs


def _paths(stage: str, key: str, root: Path) -> list[Path]:
    wildcard = "experiment" if stage == "report" else "key"
    return [layout.path(pattern, root, **{wildcard: key}) for pattern in OUTPUTS[stage]]


def _rung_input(path: str) -> tuple[Node, str]:
    """The node that writes a rung file (a segment's record or a decision), with its pattern."""
    if path.endswith(layout.DECISION):
        return ("rung_decision", path.split("/")[-2]), layout.RUNG_DECISION
    return ("rung_train", path.split("/")[-2]), layout.RUNG_SEGMENT


def rung_nodes(rungs: RungPlan) -> dict[Node, list[tuple[Node, str]]]:
    """An experiment's rung stages (early_stop): node -> [(upstream node, the pattern of the file it reads)]."""
    nodes: dict[Node, list[tuple[Node, str]]] = {}
    for segment in rungs.segments:
        keys = segment.run.keys
        data = [(("data", keys.data), layout.DATA_MANIFEST)]
        tiny = [(("tiny", keys.model), layout.TINY_MODEL)] if keys.model else []
        upstream = [(("train", keys.warm_start), layout.TRAIN_ADAPTER)] if keys.warm_start else []
        after = [_rung_input(segment.after)] if segment.after else []
        nodes.setdefault(("rung_train", segment.key), [*data, *tiny, *upstream, *after])
        segment_record = (("rung_train", segment.key), layout.RUNG_SEGMENT)
        nodes.setdefault(("rung_eval", segment.eval_key), [*data, segment_record, *tiny])
    for decision in rungs.decisions:
        nodes.setdefault(
            ("rung_decision", decision.key),
            [
                (("rung_eval", path.split("/")[-2]), layout.RUNG_EVAL_SUMMARY)
                if path.endswith(layout.SUMMARY)
                else _rung_input(path)
                for path in decision.inputs
            ],
        )
    return nodes


def run_nodes(run: Any, rungs: RungPlan | None = None) -> dict[str, tuple[str, list[tuple[Node, str]]]]:
    """A run's stages: stage -> (its key, [(upstream node, the pattern of the file it reads), ...]);
    `rungs`: its experiment's rung stages, whose last its training waits for."""
    keys = run.keys
    data = ("data", keys.data)
    tiny = [(("tiny", keys.model), layout.TINY_MODEL)] if keys.model else []
    upstream = [(("train", keys.warm_start), layout.TRAIN_ADAPTER)] if keys.warm_start else []
    after = [_rung_input(path) for path in rungs.final(run)[0]] if rungs else []
    return {
        "data": (keys.data, []),
        **({"tiny": (keys.model, [(data, layout.DATA_MANIFEST)])} if keys.model else {}),
        "train": (keys.train, [(data, layout.DATA_MANIFEST), *tiny, *upstream, *after]),
        "merge": (keys.train, [(("train", keys.train), layout.TRAIN_ADAPTER)]),
        "eval": (keys.eval, [(data, layout.DATA_MANIFEST), (("merge", keys.train), layout.MERGE_DIR)]),
        "base_eval": (keys.base_eval, [(data, layout.DATA_MANIFEST), *tiny]),
        **(
            {
                "benchmark": (keys.benchmark, [(("merge", keys.train), layout.MERGE_DIR)]),
                "base_benchmark": (keys.base_benchmark, tiny),
            }
            if keys.benchmark
            else {}
        ),
    }


def plan(experiments: Iterable[Any], root: str | Path = ".") -> Plan:
    """The stage jobs of these experiments (as one workflow runs them) that will run."""
    root = Path(root)
    experiments = list(experiments)
    readers: dict[Node, list[tuple[Node, Path]]] = {}  # upstream -> (downstream, the file it reads)
    found = Plan()
    exists: dict[Path, bool] = {}

    def present(path: Path) -> bool:
        if path not in exists:
            exists[path] = path.exists()
        return exists[path]

    nodes: set[Node] = set()
    node_inputs: dict[Node, list[str]] = {}  # the input files of each node, in the rule's order

    def add(node: Node, inputs: list[tuple[Node, str]]) -> None:
        if node in nodes:
            return
        nodes.add(node)
        node_inputs[node] = [layout.path(pattern, ".", key=upstream[1]).as_posix() for upstream, pattern in inputs]
        for upstream, pattern in inputs:
            readers.setdefault(upstream, []).append((node, layout.path(pattern, root, key=upstream[1])))
        missing = [path for path in _paths(*node, root) if not present(path)]
        if missing:
            found.reasons[node] = f"no {missing[0].relative_to(root)}"

    for experiment in experiments:
        rungs = rung_plan(experiment)
        for run in experiment.runs:
            for stage, (key, inputs) in run_nodes(run, rungs).items():
                add((stage, key), inputs)
        for node, inputs in rung_nodes(rungs).items():
            add(node, inputs)
    for node, inputs in node_inputs.items():  # early_stop: a training whose rung inputs changed runs again
        if node not in found.reasons and node[0] in ("train", "rung_train"):
            recorded = recorded_inputs(root, _paths(*node, Path("."))[0].as_posix())
            if recorded is not None and recorded != inputs:
                found.reasons[node] = "its inputs differ from those it ran with (a rung decision added or left out)"
    queue = list(found.reasons)
    while queue:
        upstream = queue.pop()
        for node, path in readers.get(upstream, ()):
            if node not in found.reasons and not present(path):
                found.reasons[node] = f"its input {path.relative_to(root)} is rebuilt"
                queue.append(node)
    for experiment in experiments:
        why = report_reason(experiment, found, root)
        if why:
            found.reasons[("report", experiment.name)] = why
    return found


def recorded_inputs(root: Path, output: str) -> list[str] | None:
    """The input files Snakemake recorded for the job that wrote `output` (its file-based metadata under
    .snakemake/metadata/, a urlsafe-base64 name cut into parts of the file system's name length), or
    None. Snakemake reruns a job whose input files differ from these (its `input` rerun trigger)."""
    metadata = root / ".snakemake" / "metadata"
    if not metadata.is_dir():
        return None
    longest = os.pathconf(metadata, "PC_NAME_MAX") - 1
    name = urlsafe_b64encode(output.encode()).decode()
    parts = [name[i : i + longest] for i in range(0, len(name), longest)]
    path = metadata.joinpath(*["@" + part for part in parts[:-1]], parts[-1])
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record.get("input") if isinstance(record, dict) else None


def report_reason(experiment: Any, found: Plan, root: Path) -> str | None:
    """Why Snakemake rebuilds the experiment's report, or None: a missing output, an eval it reads that
    runs, or an input newer than its oldest output."""
    outputs = _paths("report", experiment.name, root)
    missing = [path for path in outputs if not path.exists()]
    if missing:
        return f"no {missing[0].name}"
    evals = [("eval", run.keys.eval) for run in experiment.runs] + [
        ("base_eval", run.keys.base_eval) for run in experiment.runs
    ]
    benchmarks = [
        (stage, key)
        for run in experiment.runs
        if run.keys.benchmark
        for stage, key in (("benchmark", run.keys.benchmark), ("base_benchmark", run.keys.base_benchmark))
    ]
    running = next((node for node in evals + benchmarks if node in found.reasons), None)
    if running:
        return "an eval it reads runs" if running in evals else "a benchmark it reads runs"
    oldest = min(path.stat().st_mtime for path in outputs)
    inputs = [Path(experiment.path)] + [
        layout.path(layout.EVAL_SUMMARY if (stage, key) in evals else layout.BENCHMARK_SUMMARY, root, key=key)
        for stage, key in evals + benchmarks
    ]
    newer = next((path for path in inputs if path.exists() and path.stat().st_mtime > oldest), None)
    return f"{newer} is newer than it" if newer else None

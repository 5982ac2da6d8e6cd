"""What a planned sweep will cost (`knobsweep plan`): device-hours per run and in total.

Per stage, from what finished runs under results/ measured on this machine or cluster:

- training: runs of the same base model and method, on the same kind of device (GPU / CPU, as
  their status.json records it): tokens per second of the training loop, tokens per sequence, and
  the stage's fixed part (loading, validation: runtime_s minus the loop's time), medians;
- evaluation: evals of the same model (a merged run counts as its base model): generated tokens
  per second, tokens per sample and the fixed part (loading), medians.

Without such a run, a stated rule of thumb (RULES_OF_THUMB). Either way the estimate says which it
used. Stages already cached cost nothing; a job shared by several runs is counted once in the total.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from knobsweep import layout
from knobsweep.cost import CPU, GPU, Cost, Devices, stage_cost, stage_devices

TINY = "tiny"
FINISHED = ("COMPLETED", "EARLY_STOPPED")
# What no results file measures: a job's process start (launcher, imports) and, for training, the
# merge after it. Seconds per job, as measured on the demo's jobs here (Snakemake's job times minus
# runtime_s / elapsed_s); a rule of thumb everywhere else.
JOB_START_S = {"train": 20.0, "eval": 2.0}
PROMPT_TOKENS = 150  # rule of thumb: a prompt's tokens, where nothing was measured
# Rules of thumb, per device (GPU: per GPU; CPU: per core); tokens/s of training (prompt and
# completion tokens through the loop) and of generation at eval; fixed seconds per stage. The tiny
# model's CPU figures are the demo's, measured on a shared 2-core machine; the rest are rough.
RULES_OF_THUMB = {
    (TINY, CPU): {"train_tokens_per_s": 3000.0, "eval_tokens_per_s": 4000.0, "train_fixed_s": 5.0, "eval_fixed_s": 6.0},
    (TINY, GPU): {
        "train_tokens_per_s": 6000.0,
        "eval_tokens_per_s": 10000.0,
        "train_fixed_s": 5.0,
        "eval_fixed_s": 6.0,
    },
    ("hub", GPU): {
        "train_tokens_per_s": 1000.0,
        "eval_tokens_per_s": 1000.0,
        "train_fixed_s": 120.0,
        "eval_fixed_s": 60.0,
    },
    ("hub", CPU): {"train_tokens_per_s": 20.0, "eval_tokens_per_s": 5.0, "train_fixed_s": 120.0, "eval_fixed_s": 60.0},
}


@dataclass(frozen=True)
class Throughput:
    tokens_per_s: float  # over the whole stage's devices
    tokens_per_item: float  # per trained sequence / per eval sample
    fixed_s: float  # loading, validation: what does not grow with the work
    source: str  # in words: measured on what, or the rule of thumb

    def seconds(self, items: float, stage: str) -> float:
        return JOB_START_S[stage] + self.fixed_s + items * self.tokens_per_item / self.tokens_per_s


@dataclass(frozen=True)
class StageEstimate:
    seconds: float | None  # None: the amount of work is unknown yet (see `why`)
    devices: Devices
    source: str
    why: str = ""

    @property
    def cost(self) -> Cost:
        return stage_cost(self.devices, self.seconds)


@dataclass
class PlanEstimate:
    runs: dict[str, dict[str, StageEstimate]] = field(default_factory=dict)  # run -> stage -> estimate
    total: Cost = field(default_factory=Cost)
    total_s: float = 0.0  # wall time of the jobs to run, summed
    unknown: int = 0  # jobs to run whose size is not known yet
    base_evals: int = 0  # base-model evals to run, in the total
    sources: list[str] = field(default_factory=list)  # every distinct source used, for the summary


# ---------------------------------------------------------------- what finished runs measured


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # a half-written or foreign file is no measurement: skipped
        return {}
    return data if isinstance(data, dict) else {}


def _last_line_with(path: Path, key: str) -> dict:
    """The last JSON line of `path` that has `key` (reads the file's tail only)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, 2)
            size = handle.tell()
            handle.seek(max(0, size - 65536))
            lines = handle.read().decode("utf-8", errors="replace").splitlines()
    except OSError:
        return {}
    for line in reversed(lines):
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and _number(record.get(key)) is not None:
            return record
    return {}


def _number(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0:
        return float(value)
    return None


@dataclass(frozen=True)
class TrainRecord:
    model: str
    method: str
    device: str | None
    tokens_per_s: float
    tokens_per_sequence: float
    fixed_s: float


@dataclass(frozen=True)
class EvalRecord:
    model: str
    tokens_per_s: float
    tokens_per_sample: float
    fixed_s: float


def train_history(root: Path) -> list[TrainRecord]:
    """Finished training runs under root/results/train with everything an estimate needs."""
    import yaml

    records = []
    for status_path in sorted((root / layout.RESULTS / "train").glob("*/status.json")):
        status = _read_json(status_path)
        if status.get("state") not in FINISHED:
            continue
        last = _last_line_with(status_path.parent / "metrics.jsonl", "num_tokens")
        plan = status.get("batch_plan") if isinstance(status.get("batch_plan"), dict) else {}
        runtime, loop, tokens = (
            _number(v) for v in (status.get("runtime_s"), last.get("elapsed_s"), last.get("num_tokens"))
        )
        steps, per_step = _number(last.get("step")), _number(plan.get("sequences_per_step"))
        if None in (runtime, loop, tokens, steps, per_step):
            continue
        try:
            config = yaml.safe_load((status_path.parent / "run.yaml").read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError):
            continue
        model, train = config.get("model") or {}, config.get("train") or {}
        records.append(
            TrainRecord(
                str(model.get("name")),
                str(train.get("method", "grpo")),
                status.get("device"),
                tokens / loop,
                tokens / (steps * per_step),
                max(0.0, runtime - loop),
            )
        )
    return records


def eval_history(root: Path, train_models: dict[str, str]) -> list[EvalRecord]:
    """Finished evals under root/results/eval; `train_models`: train key -> its base model name."""
    records = []
    for summary_path in sorted((root / layout.RESULTS / "eval").glob("*/summary.json")):
        summary = _read_json(summary_path)
        elapsed, generate, tokens, samples = (
            _number(summary.get(k)) for k in ("elapsed_s", "generate_s", "completion_tokens", "n")
        )
        if None in (elapsed, generate, tokens, samples):
            continue
        records.append(
            EvalRecord(
                _model_family(str(summary.get("model", "")), train_models),
                tokens / generate,
                tokens / samples,
                max(0.0, elapsed - generate),
            )
        )
    return records


def _model_family(model: str, train_models: dict[str, str]) -> str:
    """An eval's model as a base model name: a tiny model dir is `tiny`, a merged run its base."""
    parts = Path(model).parts
    if len(parts) >= 2 and parts[-2] == "models" and parts[-1].startswith(f"{TINY}-"):
        return TINY
    if len(parts) >= 2 and parts[-2] == "merge":
        return train_models.get(parts[-1], model)
    return model


# ---------------------------------------------------------------- planned work


def _rows(run: Any, root: Path, split: str) -> int | None:
    manifest = _read_json(layout.path(layout.DATA_MANIFEST, root, key=run.keys.data))
    rows = manifest.get("rows") if isinstance(manifest.get("rows"), dict) else {}
    if isinstance(rows.get(split), int):
        return rows[split]
    size = run.config["data"].get(f"{split}_size")
    return size if isinstance(size, int) else None


def train_sequences(run: Any, root: Path) -> int | None:
    """Sequences the run will train on: rows x epochs (x n completions for GRPO)."""
    rows = _rows(run, root, "train")
    if rows is None:
        return None
    train = run.config["train"]
    group = run.config["rollout"]["n"] if train["method"] == "grpo" else 1
    return rows * int(train["epochs"]) * group


def eval_samples(run: Any, root: Path) -> int | None:
    rows = _rows(run, root, "eval")
    return None if rows is None else rows * int(run.config["eval"]["samples"])


class Estimator:
    """Throughputs from this results/ tree, looked up per (model, method, device)."""

    def __init__(self, root: str | Path = "."):
        self.root = Path(root)
        self.train_records = train_history(self.root)
        models: dict[str, str] = {}
        for status_path in (self.root / layout.RESULTS / "train").glob("*/run.yaml"):
            models[status_path.parent.name] = _run_model(status_path)
        self.eval_records = eval_history(self.root, models)

    def train(self, config: dict) -> Throughput:
        model, method = config["model"]["name"], config["train"]["method"]
        devices = stage_devices(config, "train")
        found = [
            r
            for r in self.train_records
            if r.model == model and r.method == method and r.device in (None, devices.kind)
        ]
        if found:
            return Throughput(
                statistics.median(r.tokens_per_s for r in found),
                statistics.median(r.tokens_per_sequence for r in found),
                statistics.median(r.fixed_s for r in found),
                f"train: measured on {len(found)} finished {model}/{method} run(s) on {devices.kind} here",
            )
        rule = self._rule(model, devices)
        per_sequence = PROMPT_TOKENS + (config["rollout"]["max_tokens"] if method == "grpo" else PROMPT_TOKENS)
        return Throughput(
            rule["train_tokens_per_s"] * devices.count,
            per_sequence,
            rule["train_fixed_s"],
            f"train: rule of thumb (no finished {model}/{method} run on {devices.kind} here): "
            f"{rule['train_tokens_per_s']:g} tokens/s per {_unit(devices)}, {per_sequence} tokens "
            f"per sequence, {rule['train_fixed_s']:g} s to start",
        )

    def evaluation(self, config: dict) -> Throughput:
        model = config["model"]["name"]
        devices = stage_devices(config, "eval")
        found = [r for r in self.eval_records if r.model == model]
        if found:
            return Throughput(
                statistics.median(r.tokens_per_s for r in found),
                statistics.median(r.tokens_per_sample for r in found),
                statistics.median(r.fixed_s for r in found),
                f"eval: measured on {len(found)} finished eval(s) of {model} here",
            )
        rule = self._rule(model, devices)
        per_sample = config["eval"]["max_tokens"]
        return Throughput(
            rule["eval_tokens_per_s"] * devices.count,
            per_sample,
            rule["eval_fixed_s"],
            f"eval: rule of thumb (no finished eval of {model} here): "
            f"{rule['eval_tokens_per_s']:g} generated tokens/s per {_unit(devices)}, "
            f"eval.max_tokens per sample, {rule['eval_fixed_s']:g} s to start",
        )

    @staticmethod
    def _rule(model: str, devices: Devices) -> dict:
        return RULES_OF_THUMB[(TINY if model == TINY else "hub", devices.kind)]


def _unit(devices: Devices) -> str:
    return "GPU" if devices.kind == GPU else "CPU core"


def _run_model(run_yaml: Path) -> str:
    import yaml

    try:
        config = yaml.safe_load(run_yaml.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        return ""
    return str((config.get("model") or {}).get("name", ""))


def estimate_plan(
    experiment: Any, root: str | Path = ".", pending: Iterable[tuple[str, str]] | None = None
) -> PlanEstimate:
    """Estimates for the stages of `experiment` that will run. `pending`: (run name, stage) pairs
    to estimate, stage train, eval or base_eval (default: those whose output does not exist yet)."""
    root = Path(root)
    estimator = Estimator(root)
    wanted = set(pending) if pending is not None else None
    out = PlanEstimate()
    counted: set[tuple[str, str]] = set()
    for run in experiment.runs:
        stages: dict[str, StageEstimate] = {}
        for stage, key, output in (
            ("train", run.keys.train, layout.TRAIN_ADAPTER),
            ("eval", run.keys.eval, layout.EVAL_SUMMARY),
        ):
            will_run = (
                (run.name, stage) in wanted if wanted is not None else not layout.path(output, root, key=key).exists()
            )
            if not will_run:
                continue
            throughput = estimator.train(run.config) if stage == "train" else estimator.evaluation(run.config)
            items = train_sequences(run, root) if stage == "train" else eval_samples(run, root)
            devices = stage_devices(run.config, stage)
            estimate = (
                StageEstimate(
                    None,
                    devices,
                    throughput.source,
                    f"{stage} size unknown until the data "
                    f"stage runs (or set data.{'train' if stage == 'train' else 'eval'}_size)",
                )
                if items is None
                else StageEstimate(throughput.seconds(items, stage), devices, throughput.source)
            )
            stages[stage] = estimate
            if throughput.source not in out.sources:
                out.sources.append(throughput.source)
            if (stage, key) not in counted:  # a job shared by several runs runs once
                counted.add((stage, key))
                if estimate.seconds is None:
                    out.unknown += 1
                else:
                    out.total = out.total + estimate.cost
                    out.total_s += estimate.seconds
        out.runs[run.name] = stages
    # The untrained base model's eval (the report's reference row), once per eval config.
    for run in experiment.runs:
        key = run.keys.base_eval
        will_run = (
            (run.name, "base_eval") in wanted
            if wanted is not None
            else not layout.path(layout.EVAL_SUMMARY, root, key=key).exists()
        )
        if ("base_eval", key) in counted or not will_run:
            continue
        counted.add(("base_eval", key))
        throughput, items = estimator.evaluation(run.config), eval_samples(run, root)
        if items is None:
            out.unknown += 1
            continue
        estimate = StageEstimate(
            throughput.seconds(items, "eval"), stage_devices(run.config, "eval"), throughput.source
        )
        out.total, out.total_s = out.total + estimate.cost, out.total_s + estimate.seconds
        out.base_evals += 1
    return out


def run_cells(stages: dict[str, StageEstimate]) -> tuple[str, str]:
    """(time, cost) of one run's stages to run, for `knobsweep plan`'s table."""
    if not stages:
        return "cached", "-"
    if any(stage.seconds is None for stage in stages.values()):
        return "?", "?"
    seconds = sum(stage.seconds for stage in stages.values())
    return _duration(seconds), sum((stage.cost for stage in stages.values()), Cost()).text()


def summary_lines(plan: PlanEstimate, left_out: str = "") -> list[str]:
    """`left_out`: jobs that will run but are priced elsewhere (the rung jobs, on their own lines)."""
    lines = [
        f"estimated cost of what will run: {plan.total.text() or 'nothing'}"
        f" ({_duration(plan.total_s)} of job time; shared jobs counted once"
        + (f", {plan.base_evals} base-model eval(s) included" if plan.base_evals else "")
        + (f"; not included: {left_out}" if left_out else "")
        + ")"
    ]
    if plan.unknown:
        lines.append(
            f"  {plan.unknown} job(s) of unknown size left out: their data is not converted yet and "
            "data.train_size / eval_size are unset"
        )
    lines += [f"  {source}" for source in plan.sources]
    if plan.sources:
        lines.append(
            f"  plus {JOB_START_S['train']:g} s per training job and {JOB_START_S['eval']:g} s per eval job "
            "to start (and merge), which no results file measures"
        )
    return lines


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m {secs:02d}s" if minutes else f"{secs} s"

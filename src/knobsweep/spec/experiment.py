"""Experiments, runs and the stage keys that make results cacheable and shareable.

Each stage's key hashes exactly the configuration that feeds it plus its inputs' keys
(as Nextflow and Bazel do): runs differing only in an eval knob share one training job,
and two experiments with the same baseline share everything.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from knobsweep import layout
from knobsweep.errors import FieldError, Problem, SpecError
from knobsweep.io import canonical_json, content_hash, file_sha256
from knobsweep.registry import METHODS, TINY, converter
from knobsweep.spec.expand import expand
from knobsweep.spec.load import load_spec
from knobsweep.spec.sources import read_options
from knobsweep.spec.trl_fields import trl_field_problem

# Bump when a stage's outputs change meaning, so old caches are not reused
# (data converters carry their own CONVERTER_VERSION).
STAGE_VERSIONS = {"tiny": 2, "train": 1, "eval": 1, "benchmark": 1}


@dataclass(frozen=True)
class StageKeys:
    data: str
    model: str | None  # the tiny model's key; None for a hub id or local path
    train: str
    eval: str
    base_eval: str  # the untrained base model under this run's eval config
    warm_start: str | None = None  # train key of the run this one starts from (train.warm_start_from)
    benchmark: str | None = None  # lm-eval on the merged model (eval.benchmarks); None without benchmarks
    base_benchmark: str | None = None  # lm-eval on the untrained base model


@dataclass(frozen=True)
class Run:
    name: str
    changed: dict[str, Any]  # dotted knob -> value; {} for the baseline
    seed: int
    config: dict  # the fully resolved run config
    keys: StageKeys
    tracking: dict = field(default_factory=dict)  # the experiment's `tracking` section (never hashed)
    warm_start: str | None = None  # where the weights of train.warm_start_from are: a run's adapter, or the path

    @property
    def is_baseline(self) -> bool:
        return not self.changed


@dataclass(frozen=True)
class Experiment:
    name: str
    path: Path
    runs: tuple[Run, ...]
    hypotheses: dict[str, str] = field(default_factory=dict)
    mode: str = "ofat"
    # not errors: arms equal to the baseline (or to each other) once defaults are filled (spec.expand)
    warnings: tuple[Problem, ...] = ()
    early_stop: dict | None = None  # the `early_stop:` section (rung evaluations), None when off

    @property
    def arms(self) -> tuple[Run, ...]:
        return tuple(run for run in self.runs if not run.is_baseline)

    @property
    def baseline(self) -> Run:
        return next(run for run in self.runs if run.is_baseline)


def data_identity(data: dict) -> dict:
    """What converted data depends on: the converter's version and its inputs' content hashes."""
    module = converter(data["source"])
    return {"converter": module.CONVERTER_VERSION, "inputs": module.input_fingerprint(read_options(data))}


def local_rows(data: dict) -> dict[str, tuple[int, str]]:
    """role ("train", "eval") -> (at most how many rows its local files hold, the files), for the sources
    whose converter names them (split_files): JSON lines count their non-blank lines, Parquet files their
    rows; a split read from the hub, or from a file of another kind, is left out."""
    module = converter(data["source"])
    files = module.split_files(read_options(data)) if hasattr(module, "split_files") else None
    found = {}
    for role, paths in (files or {}).items():
        counts = [_row_count(path) for path in paths]
        if paths and None not in counts:
            found[role] = (sum(counts), ", ".join(path.as_posix() for path in paths))
    return found


def _row_count(path: Path) -> int | None:
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        with path.open("rb") as handle:
            return sum(1 for line in handle if line.strip())
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.ParquetFile(path).metadata.num_rows
    return None


def size_problems(config: dict, rows: dict[str, tuple[int, str]]) -> list[tuple[str, str]]:
    """(path, message) for sizes the data cannot give: a data.train_size / eval_size above the rows of its
    local files (the data job would fail), and a train.batch_size above the training prompts (no step
    would be full); each names both values."""
    data, problems = config["data"], []
    for role in ("train", "eval"):
        size = data.get(f"{role}_size")
        if role in rows and isinstance(size, int) and size > rows[role][0]:
            count, files = rows[role]
            problems.append(
                (
                    f"data.{role}_size",
                    f"{size} is more than the {count} rows of {files}; lower it, or null for all rows",
                )
            )
    size, batch = data.get("train_size"), config["train"]["batch_size"]
    known = [n for n in (size if isinstance(size, int) else None, rows.get("train", (None,))[0]) if n is not None]
    if batch is not None and known and batch > min(known):
        where = f"data.train_size {size}" if min(known) == size else rows["train"][1]
        problems.append(
            (
                "train.batch_size",
                f"{batch} is more than the {min(known)} training rows ({where}): not one step would be full; "
                "lower train.batch_size or give it more rows",
            )
        )
    return problems


def stage_keys(
    config: dict,
    data_identities: dict[str, Any],
    warm_start: dict | None = None,
    tiny_model: str | None = None,
) -> StageKeys:
    """The key of every stage of a run (`config`: a normalised run config, as `expand` gives);
    `data_identities` caches the data (and tiny model) keys and the benchmark tasks' fingerprints across runs.

    `warm_start` identifies the weights training starts from ({"train": key} of another run, or
    {"path": ..., "files": fingerprint}); None for the base model. `tiny_model` overrides the tiny
    model's key: a chained run continues its upstream run's weights, so it keeps that run's tiny base
    (whose tokenizer was trained on the upstream data, e.g. the SFT rows)."""
    data = config["data"]
    options = canonical_json(data, is_normalised=True)
    if options not in data_identities:
        # Runs of a sweep mostly share their data: hash its inputs and key it once.
        data_key = content_hash({"stage": "data", "options": data, **data_identity(data)})
        model_key = content_hash({"stage": "tiny", "v": STAGE_VERSIONS["tiny"], "data": data_key})
        data_identities[options] = (data_key, model_key)
    data_key, tiny_key = data_identities[options]
    model_name = config["model"]["name"]
    model_key = (tiny_model or tiny_key) if model_name == TINY else None
    base_model = {"tiny": model_key} if model_key else {"name": model_name}
    # The config is normalised (expand); the rest is strings and ints, already in canonical form.
    train_key = content_hash(
        {
            "stage": "train",
            "v": STAGE_VERSIONS["train"],
            "data": data_key,
            "base": base_model,
            "config": train_config(config),
            **({"warm_start": warm_start} if warm_start else {}),
        },
        is_normalised=True,
    )
    eval_config = evaluation_config(config)
    eval_key = content_hash(
        {
            "stage": "eval",
            "v": STAGE_VERSIONS["eval"],
            "data": data_key,
            "model": {"train": train_key},
            "config": eval_config,
        },
        is_normalised=True,
    )
    base_eval_key = content_hash(
        {"stage": "eval", "v": STAGE_VERSIONS["eval"], "data": data_key, "model": base_model, "config": eval_config},
        is_normalised=True,
    )
    benchmark_key = base_benchmark_key = None
    if config["eval"].get("benchmarks") is not None:
        from knobsweep.benchmarks.tasks import tasks_fingerprint

        # The task definitions (YAML, data files, lm-eval's version) key the benchmarks, as input files key data;
        # runs mostly share their benchmarks: read them once.
        section = config["eval"]["benchmarks"]
        cached = "benchmarks:" + canonical_json(section, is_normalised=True)
        if cached not in data_identities:
            data_identities[cached] = tasks_fingerprint(section)
        identity = {
            "stage": "benchmark",
            "v": STAGE_VERSIONS["benchmark"],
            "config": benchmark_config(config),
            "tasks": data_identities[cached],
        }
        benchmark_key = content_hash({**identity, "model": {"train": train_key}})
        base_benchmark_key = content_hash({**identity, "model": base_model})
    return StageKeys(
        data_key,
        model_key,
        train_key,
        eval_key,
        base_eval_key,
        warm_start.get("train") if warm_start else None,
        benchmark_key,
        base_benchmark_key,
    )


def train_config(config: dict) -> dict:
    """The part of a run config that feeds training (and so keys it): the method's hashed sections.

    The weights a warm start loads are not named in it: the key's `warm_start` entry identifies them
    (the upstream run's train key, or the path's files), and the training stage gets them as
    --warm-start, so where `layout` puts an adapter is no part of any key."""
    sections = {k: config[k] for k in METHODS[config["train"]["method"]].hashed_sections}
    if config["train"]["warm_start_from"] is not None:
        sections["train"] = {**config["train"], "warm_start_from": None}
    return sections


def evaluation_config(config: dict) -> dict:
    """What the eval stage reads (and its key hashes): eval.benchmarks is the benchmark stage's."""
    evaluation = {name: value for name, value in config["eval"].items() if name != "benchmarks"}
    return {"eval": evaluation, "reward": config["reward"]}


def benchmark_config(config: dict) -> dict:
    """What the benchmark stage reads: the benchmarks and the eval's backend (vLLM where the eval uses it)."""
    return {"benchmarks": config["eval"]["benchmarks"], "backend": config["eval"]["backend"]}


def trl_field_problems(runs: list[Run], file: str) -> list[Problem]:
    """`train.trl` passes fields to TRL unchanged: one knobsweep sets from its own knob (or keeps out of
    specs) is refused naming the knob, and a misspelt one must fail here, not mid-run."""
    used = {(run.config["train"]["method"], key, run.name) for run in runs for key in run.config["train"]["trl"]}
    if not used:
        return []
    import trl  # imported only when used: it takes seconds

    from knobsweep.train.method import unknown_trl_field

    problems, reported = [], set()
    for method, key, run_name in sorted(used):
        problem = trl_field_problem(method, key) or unknown_trl_field(getattr(trl, METHODS[method].trl_config), key)
        if problem and (method, key) not in reported:
            reported.add((method, key))
            problems.append(Problem(file, f"train.trl.{key}", problem, run_name))
    return problems


def load_experiment(path: str | Path, stem: str | None = None) -> Experiment:
    """Load, validate and expand one experiment file; raises SpecError naming every problem. `stem`: the
    file's stem when it is checked under a temporary name before it is written (`knobsweep next`)."""
    path = Path(path)
    spec, name = load_spec(path, stem)
    warnings: list[Problem] = []
    expanded = expand(spec, str(path), warnings)
    by_name = {run_name: (changed, seed, config) for run_name, changed, seed, config in expanded}
    runs: dict[str, Run] = {}
    problems: list[Problem] = []
    data_identities: dict[str, tuple[str, str]] = {}
    launches: dict[str, tuple[str, str] | None] = {}
    rows: dict[str, dict[str, tuple[int, str]]] = {}  # data options -> rows of its local files
    said: set[tuple[str, str]] = set()
    tracking = spec.tracking.model_dump(mode="json")

    def build(run_name: str, chain: tuple[str, ...] = ()) -> Run | None:
        """The run with its keys; a run that warm-starts from another is built after that one."""
        if run_name in runs:
            return runs[run_name]
        changed, seed, config = by_name[run_name]
        source = config["train"]["warm_start_from"]
        warm_start = tiny_model = weights = None
        if source is not None:
            upstream_name = source if len(spec.seeds) == 1 else f"{source},seed={seed}"
            if upstream_name in by_name:
                if upstream_name == run_name or upstream_name in chain:
                    cycle = " -> ".join((*chain, run_name, upstream_name))
                    problems.append(
                        Problem(
                            str(path),
                            "train.warm_start_from",
                            f"{source!r}: runs warm-start from each other in a cycle ({cycle})",
                            run_name,
                        )
                    )
                    return None
                upstream = build(upstream_name, (*chain, run_name))
                if upstream is None:
                    return None
                if upstream.config["model"]["name"] != config["model"]["name"]:
                    problems.append(
                        Problem(
                            str(path),
                            "train.warm_start_from",
                            f"{source!r} trained model.name {upstream.config['model']['name']!r}, but this run's "
                            f"model.name is {config['model']['name']!r}: its adapter fits only the base it was "
                            "trained on; warm-start from a run of the same base model",
                            run_name,
                        )
                    )
                    return None
                warm_start = {"train": upstream.keys.train}
                tiny_model = upstream.keys.model
                weights = layout.TRAIN_ADAPTER.format(key=upstream.keys.train)
            else:
                location = Path(source).expanduser()
                problem = warm_start_problem(location, config["model"]["name"], sorted(by_name))
                if problem:
                    problems.append(Problem(str(path), "train.warm_start_from", f"{source!r} {problem}", run_name))
                    return None
                warm_start = {"path": str(location), "files": weights_fingerprint(location)}
                weights = str(location)
        try:
            keys = stage_keys(config, data_identities, warm_start, tiny_model)
        except FieldError as error:  # the inputs of `data` cannot be read (a missing file, say)
            problems.append(Problem(str(path), error.path, error.message, run_name))
            return None
        launch_problem = _launch_problem(config, launches) or _batch_problem(config)
        if launch_problem:
            problems.append(Problem(str(path), *launch_problem, run_name))
            return None
        options = canonical_json(config["data"], is_normalised=True)
        if options not in rows:  # runs mostly share their data: its files are counted once
            rows[options] = local_rows(config["data"])
        sizes = size_problems(config, rows[options])
        if sizes:
            # said once, for the first run it concerns (the seeds and arms sharing it would repeat it)
            problems.extend(
                Problem(str(path), where, message, run_name) for where, message in sizes if (where, message) not in said
            )
            said.update(sizes)
            return None
        runs[run_name] = Run(run_name, changed, seed, config, keys, tracking, weights)
        return runs[run_name]

    for run_name in by_name:
        build(run_name)
    ordered = [runs[run_name] for run_name in by_name if run_name in runs]
    problems += trl_field_problems(ordered, str(path))
    if problems:
        raise SpecError(problems)
    return Experiment(
        name=name,
        path=path,
        runs=tuple(ordered),
        hypotheses=dict(spec.hypotheses),
        mode=spec.mode,
        warnings=tuple(warnings),
        early_stop=spec.early_stop.model_dump(mode="json") if spec.early_stop else None,
    )


def _launch_problem(config: dict, cache: dict) -> tuple[str, str] | None:
    """(path, message) when the training launch cannot be built (several nodes or FSDP without
    GPUs, a missing accelerate config), so it fails at validation, not in a queued job."""
    from knobsweep.resources import launch_command, stage_resources

    distributed = config["train"]["distributed"]
    # what the request depends on (the site settings are the same for every run)
    key = canonical_json([config["resources"]["train"], config["model"]["name"], distributed], is_normalised=True)
    if key not in cache:
        try:
            launch_command(stage_resources(config, "train"), distributed)
            cache[key] = None
        except FieldError as error:
            cache[key] = (error.path, error.message)
    return cache[key]


def _batch_problem(config: dict) -> tuple[str, str] | None:
    """(path, message) when the step's batch cannot be split over the training processes (GPUs, or
    resources.train.processes): the job would fail at VALIDATING, after waiting in a queue."""
    from knobsweep.resources import stage_resources
    from knobsweep.spec.schema import RolloutConfig, TrainConfig
    from knobsweep.train.batching import batch_plan

    request = stage_resources(config, "train", site={})
    processes = int(request["gpus"]) * int(request["nodes"]) if request["gpus"] else int(request["processes"])
    rollout = RolloutConfig.model_validate(config["rollout"]) if config.get("rollout") else None
    try:
        batch_plan(TrainConfig.model_validate(config["train"]), rollout, processes)
    except ValueError as error:
        return "train.batch_size", f"{error} ({processes} processes: resources.train)"
    return None


WEIGHT_FILES = (".json", ".safetensors", ".bin", ".pt", ".model", ".txt")  # weights, configs, tokenizer


def warm_start_problem(location: Path, model: str, runs: list[str]) -> str | None:
    """Why `location` is not an adapter or model directory to start from (looking only for its
    adapter_config.json or config.json, never through the folder), or None. An adapter must have been
    trained on the run's model."""
    adapter = location / "adapter_config.json"
    if not location.is_dir() or not (adapter.is_file() or (location / "config.json").is_file()):
        return (
            f"is neither a run of this experiment (runs: {', '.join(runs)}) nor a directory holding "
            "an adapter (adapter_config.json) or a model (config.json)"
        )
    if not adapter.is_file() or model == TINY:  # the tiny base is built from the data: no name to compare
        return None
    with adapter.open("rb") as stream:
        text = stream.read(2**20)  # a PEFT config is a few hundred bytes
    try:
        settings = json.loads(text)
    except ValueError:
        settings = None
    if not isinstance(settings, dict):
        return "holds an adapter_config.json that is not a JSON mapping"
    base = settings.get("base_model_name_or_path")
    same = base == model or (base and Path(base).expanduser().resolve() == Path(model).expanduser().resolve())
    if base and not same:
        return (
            f"is an adapter trained on {base!r} (its adapter_config.json base_model_name_or_path), "
            f"but this run's model.name is {model!r}; warm-start from an adapter of the same base model"
        )
    return None


def weights_fingerprint(location: Path) -> dict[str, str]:
    """What a warm-start directory holds: the sha256 of its top-level weight, config and tokenizer
    files (the size of a large shard), so new weights at the same path re-train; nothing below it."""
    files = sorted(p for p in location.iterdir() if p.is_file() and p.suffix in WEIGHT_FILES)
    return {p.name: file_sha256(p) if p.stat().st_size <= 256 * 2**20 else f"size:{p.stat().st_size}" for p in files}

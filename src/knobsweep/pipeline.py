"""The job tables the Snakemake rules read: one entry per stage key, shared across runs and experiments.

The Snakefile builds one `Pipeline`; each rule looks its params and inputs up by the `{key}`
wildcard, so the rules hold only paths, params and resources.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field, replace
from pathlib import Path

from knobsweep import layout
from knobsweep.early_stop.plan import rung_plan
from knobsweep.resources import site_settings, stage_resources, train_job_resources
from knobsweep.spec import Experiment, Problem, SpecError, load_experiment
from knobsweep.spec.experiment import benchmark_config, evaluation_config, train_config

EXPERIMENTS_DIR = "experiments"


@dataclass(frozen=True)
class Job:
    config: dict  # exactly what the stage's key hashes
    data: str  # data key
    model: str  # what the stage loads: a hub id, a local path, or a stage output
    inputs: tuple[str, ...]  # upstream files/directories Snakemake must build first
    resources: dict  # the spec's resources for this stage
    # train: who it is for (W&B names, tags), never hashed: the job reads it from `run_info_file`, which the
    # workflow writes when it starts (knobsweep.runinfo), so no Snakemake param holds it
    run_info: dict = field(default_factory=dict)
    run_info_file: str | None = None
    warm_start: str | None = None  # train: the weights it starts from (train.warm_start_from, resolved)
    decision: str | None = None  # train (early_stop): the last rung decision, which may have stopped the run
    extra_args: tuple[str, ...] = ()  # the stage's own arguments (a rung segment's --rung, a rung eval's subset)
    out: str = ""  # rung_train: the folder it trains in (its run's train folder, not named by its own key)

    @property
    def config_json(self) -> str:
        return json.dumps(self.config, sort_keys=True, separators=(",", ":"))

    @property
    def args(self) -> str:
        """The stage module's arguments, shell-quoted: --config-json (train: --run-info and --warm-start
        too), --model and --data (not for a benchmark, which reads no data stage); the rule adds --out.
        Each is a function of the stage's key."""
        words = ["--config-json", self.config_json]
        if self.run_info_file:
            words += ["--run-info", self.run_info_file]
        if self.warm_start:
            words += ["--warm-start", self.warm_start]
        if self.decision:
            words += ["--decision", self.decision]
        words += [*self.extra_args, "--model", self.model]
        if self.data:
            words += ["--data", layout.DATA_DIR.format(key=self.data)]
        return shlex.join(words)


@dataclass
class Pipeline:
    experiments: dict[str, Experiment] = field(default_factory=dict)
    data: dict[str, Job] = field(default_factory=dict)
    tiny: dict[str, Job] = field(default_factory=dict)
    train: dict[str, Job] = field(default_factory=dict)  # training, then the merge of its adapter
    eval: dict[str, Job] = field(default_factory=dict)
    benchmark: dict[str, Job] = field(default_factory=dict)  # lm-eval on merged and base models (eval.benchmarks)
    # early_stop: each run's training up to a rung, the rung's eval of it, the experiment's decision at a rung
    rung_train: dict[str, Job] = field(default_factory=dict)
    rung_eval: dict[str, Job] = field(default_factory=dict)
    rung_decision: dict[str, Job] = field(default_factory=dict)
    site: dict = field(default_factory=site_settings)  # read once: every job's request uses them

    def add(self, experiment: Experiment) -> None:
        self.experiments[experiment.name] = experiment
        rungs = rung_plan(experiment)
        for run in experiment.runs:
            config, keys = run.config, run.keys
            manifest = layout.DATA_MANIFEST.format(key=keys.data)
            # each table entry is built once per key: thousands of runs share a few data/base-eval jobs
            if keys.data not in self.data:
                self.data[keys.data] = Job(
                    config["data"], keys.data, "", (), stage_resources(config, "data", self.site)
                )
            if keys.model:
                base = layout.TINY_MODEL.format(key=keys.model)
                if keys.model not in self.tiny:
                    self.tiny[keys.model] = Job(
                        {}, keys.data, base, (manifest,), stage_resources(config, "data", self.site)
                    )
                base_inputs: tuple[str, ...] = (base,)
            else:
                base, base_inputs = config["model"]["name"], ()
            train_inputs = (manifest, *base_inputs, *((run.warm_start,) if keys.warm_start else ()))
            after, decision = rungs.final(run)  # with rungs: the final training waits for the run's last rung
            if keys.train not in self.train:
                # A job shared by several runs (or experiments) is named after the first one.
                run_info = {
                    "experiment": experiment.name,
                    "run": run.name,
                    "changed": run.changed,
                    "tracking": run.tracking,
                }
                self.train[keys.train] = Job(
                    train_config(config),
                    keys.data,
                    base,
                    (*train_inputs, *after),  # a warm start's upstream run trains first
                    train_job_resources(config, self.site),
                    run_info,
                    layout.TRAIN_RUN_INFO.format(key=keys.train),
                    run.warm_start,
                    decision,
                )
            merged = layout.MERGE_DIR.format(key=keys.train)
            if keys.eval not in self.eval or keys.base_eval not in self.eval:
                eval_config = evaluation_config(config)
                eval_resources = stage_resources(config, "eval", self.site)
                self.eval.setdefault(keys.eval, Job(eval_config, keys.data, merged, (manifest, merged), eval_resources))
                self.eval.setdefault(
                    keys.base_eval, Job(eval_config, keys.data, base, (manifest, *base_inputs), eval_resources)
                )
            if keys.benchmark and (keys.benchmark not in self.benchmark or keys.base_benchmark not in self.benchmark):
                # on the eval's resources; no data stage: the tasks read their own data
                bench_config = benchmark_config(config)
                bench_resources = stage_resources(config, "eval", self.site)
                self.benchmark.setdefault(keys.benchmark, Job(bench_config, "", merged, (merged,), bench_resources))
                self.benchmark.setdefault(
                    keys.base_benchmark, Job(bench_config, "", base, base_inputs, bench_resources)
                )

        self._add_rungs(experiment, rungs)

    def _add_rungs(self, experiment: Experiment, rungs) -> None:
        """The rung stages (early_stop): a segment trains in its run's train folder on the train stage's
        resources; its rung eval takes the eval stage's; a decision is short, on the report's."""
        for segment in rungs.segments:
            run, train = segment.run, self.train[segment.run.keys.train]
            if segment.key not in self.rung_train:
                self.rung_train[segment.key] = replace(
                    train,
                    inputs=tuple(i for i in train.inputs if i not in rungs.final(run)[0])
                    + ((segment.after,) if segment.after else ()),
                    resources=stage_resources(run.config, "train", self.site),
                    decision=segment.decision,
                    extra_args=("--rung", repr(segment.fraction), "--rung-out", segment.dir),
                    out=layout.TRAIN_DIR.format(key=run.keys.train),
                )
            if segment.eval_key not in self.rung_eval:
                settings = experiment.early_stop
                manifest = layout.DATA_MANIFEST.format(key=run.keys.data)
                base_inputs = (train.model,) if run.keys.model else ()
                subset = ("--prompts", str(settings["eval_prompts"] or 0), "--prompt-seed", str(settings["eval_seed"]))
                self.rung_eval[segment.eval_key] = Job(
                    evaluation_config(run.config),
                    run.keys.data,
                    train.model,
                    (manifest, segment.record, *base_inputs),
                    stage_resources(run.config, "eval", self.site),
                    extra_args=("--segment", segment.dir, *subset),
                )
        for decision in rungs.decisions:
            self.rung_decision.setdefault(
                decision.key, Job(decision.config, "", "", decision.inputs, self.report_resources(experiment.name))
            )

    def report_resources(self, name: str) -> dict:
        """The report is one job per experiment: it takes the baseline's report resources."""
        return stage_resources(self.experiments[name].baseline.config, "report", self.site)

    def report_inputs(self, name: str) -> list[str]:
        """Every file a report reads; Snakemake re-builds the report when one changes."""
        experiment = self.experiments[name]
        files = [str(experiment.path)]
        for run in experiment.runs:  # an eval needs its run's train job (merged model) done
            files += [layout.EVAL_SUMMARY.format(key=run.keys.eval), layout.EVAL_SUMMARY.format(key=run.keys.base_eval)]
            if run.keys.benchmark:
                files += [layout.BENCHMARK_SUMMARY.format(key=k) for k in (run.keys.benchmark, run.keys.base_benchmark)]
        return sorted(set(files))

    def reports(self) -> list[str]:
        """What `rule all` asks for: each experiment's report, built by the report job (its marker)."""
        return [layout.REPORT_DONE.format(experiment=name) for name in self.experiments]


def experiment_files(selection: str | list | None, directory: str | Path = EXPERIMENTS_DIR) -> list[Path]:
    """Experiment files by stem (`--config experiments=a,b`), or every experiments/*.yaml."""
    directory = Path(directory)
    available = {p.stem: p for p in sorted(directory.glob("*.yaml"))}
    if selection in (None, "", []):
        return list(available.values())
    names = selection.split(",") if isinstance(selection, str) else [str(s) for s in selection]
    unknown = [n for n in names if n.strip() not in available]
    if unknown:
        raise SpecError(
            [
                Problem(
                    "--config experiments",
                    "",
                    f"no experiment named {', '.join(map(repr, unknown))} "
                    f"in {directory}/; available: {', '.join(available) or 'none'}",
                )
            ]
        )
    return [available[n.strip()] for n in names]


def build_pipeline(files: list[Path]) -> Pipeline:
    """Load and validate every experiment first, so a bad file stops everything before any job."""
    pipeline, problems, names = Pipeline(), [], {}
    for file in files:
        try:
            experiment = load_experiment(file)
        except SpecError as error:
            problems += error.problems
            continue
        if experiment.name in names:
            problems.append(
                Problem(str(file), "name", f"'{experiment.name}' is also the name of {names[experiment.name]}")
            )
            continue
        names[experiment.name] = file
        pipeline.add(experiment)
    if problems:
        raise SpecError(problems)
    return pipeline

"""The experiment spec's schema: every knob, its default and its allowed range.

The ranges are the ones users know from managed RFT services. One pydantic model per
section; `extra="forbid"` everywhere so a misspelt knob is an error, not a silent default.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_serializer,
    field_validator,
    model_validator,
)

from knobsweep.errors import FieldError, did_you_mean
from knobsweep.registry import BUILTIN_EVALUATORS, EVALUATORS, METHODS, TINY
from knobsweep.resources import slurm_value_problem
from knobsweep.spec.benchmarks import BenchmarksConfig
from knobsweep.spec.early_stop import EarlyStopConfig
from knobsweep.spec.sources import DataOptions, Gsm8kOptions
from knobsweep.spec.trl_fields import trl_problems
from knobsweep.spec.validate import SEED_MAX, StrictScalars

# An experiment's name is a folder under results/ (and `compare` names results/<A>-vs-<B>/, W&B groups take
# 128 characters): letters, digits and _ . -, at most 100 characters, so every such name fits a file name.
EXPERIMENT_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
EXPERIMENT_NAME_MAX = 100


class Section(StrictScalars):
    model_config = ConfigDict(extra="forbid", validate_default=True)


class LoraConfig(Section):
    """PEFT LoRA adapter. `model.lora: null` trains every parameter instead."""

    rank: int = Field(8, description="LoRA rank r: a power of two, 4..128")
    alpha: int = Field(16, ge=1, le=1024, description="LoRA alpha (scaling = alpha / rank)")
    dropout: float = Field(0.05, ge=0.0, lt=1.0, description="dropout on the LoRA input")
    target_modules: str | list[str] = Field("all-linear", description="module names to adapt, or 'all-linear'")
    exclude_modules: list[str] = Field(
        default_factory=lambda: ["lm_head", "embed_tokens"],
        description="module names never adapted",
    )

    @field_validator("rank")
    @classmethod
    def _power_of_two(cls, rank: int) -> int:
        if rank < 4 or rank > 128 or rank & (rank - 1):
            raise ValueError("must be a power of two in 4..128 (4, 8, 16, 32, 64, 128)")
        return rank


class ModelConfig(Section):
    name: str = Field(
        ...,
        min_length=1,
        description="hub id (Qwen/Qwen2.5-0.5B-Instruct), local path, or `tiny` (offline tiny model)",
    )
    lora: LoraConfig | None = Field(default_factory=LoraConfig)

    @field_validator("name")
    @classmethod
    def _a_model_to_load(cls, name: str) -> str:
        """What from_pretrained loads: `tiny`, a local folder (relative to the working directory), or a hub
        id; anything else would fail only inside a queued job."""
        if name == TINY or Path(name).expanduser().is_dir():
            return name
        from huggingface_hub.utils import HFValidationError, validate_repo_id

        try:
            validate_repo_id(name)
        except HFValidationError:
            raise ValueError(
                "is neither `tiny`, an existing local folder, nor a hub id (`name` or `namespace/name`: "
                "letters, digits, - _ . and at most 96 characters each)"
            ) from None
        return name


class HealthConfig(Section):
    """Thresholds of the training health monitor (warnings in status.json, never silent)."""

    grad_norm_max: float = Field(10.0, gt=0.0, description="warn when grad_norm exceeds this ...")
    grad_norm_patience: int = Field(3, ge=1, description="... for this many steps in a row")
    kl_max: float = Field(1.0, gt=0.0, description="warn when the KL to the reference exceeds this")
    invalid_rate_max: float = Field(
        0.2, ge=0.0, le=1.0, description="warn when this share of samples could not be scored"
    )
    reward_collapse_drop: float = Field(
        0.5,
        gt=0.0,
        le=1.0,
        description="warn when the reward (5-step mean) loses this share of what it had gained",
    )
    flat_patience: int = Field(
        5, ge=1, description="warn when the reward has zero variance for this many steps in a row"
    )
    kto_margin_warmup: int = Field(
        10, ge=0, description="KTO: warn when the reward margin is negative after this many steps"
    )


class SftConfig(Section):
    """SFT on `messages` (multi-turn) or prompt/completion rows (TRL SFTTrainer)."""

    completion_only_loss: bool = Field(True, description="prompt/completion rows: loss on the completion only")
    assistant_only_loss: bool = Field(
        False, description="messages rows: loss on assistant turns only (needs a chat template with generation marks)"
    )
    max_length: int = Field(1024, ge=16, le=131072, description="tokens per example; longer ones are truncated")
    packing: bool = Field(False, description="pack several examples into one sequence of max_length")


class KtoConfig(Section):
    """KTO on unpaired prompt/completion/label rows (TRL KTOTrainer)."""

    beta: float = Field(0.1, gt=0.0, le=10.0, description="strength of the implicit KL constraint")
    desirable_weight: float = Field(1.0, gt=0.0, le=100.0, description="loss weight of label=true rows")
    undesirable_weight: float = Field(1.0, gt=0.0, le=100.0, description="loss weight of label=false rows")


class TrainConfig(Section):
    method: Literal[tuple(METHODS)] = "grpo"
    loss: Literal["grpo", "dapo", "gspo-token"] = Field("grpo", description="GRPO loss (method grpo only)")
    learning_rate: float = Field(1e-4, ge=1e-7, le=5e-4)
    epochs: int = Field(1, ge=1, le=10)
    batch_size: int | None = Field(
        None,
        ge=1,
        le=4096,
        description="per optimizer step: prompts (grpo; each gets rollout.n completions) or sequences (sft, kto); "
        "null = from batch_tokens",
    )
    batch_tokens: int = Field(
        32768,
        ge=256,
        le=16_777_216,
        description="tokens per optimizer step when batch_size is null: batch_tokens // max_context_length sequences",
    )
    max_context_length: int = Field(4096, ge=32, le=1_048_576, description="prompt + completion tokens of one sequence")
    per_device_batch_size: int | None = Field(
        None, ge=1, le=4096, description="sequences one device holds at once; the rest is gradient accumulation"
    )
    kl_beta: float | None = Field(None, ge=0.0, le=10.0, description="KL coefficient; only with loss grpo")
    num_iterations: int = Field(1, ge=1, le=32, description="GRPO updates per generation batch (off-policy > 1)")
    steps_per_generation: int | None = Field(
        None, ge=1, le=256, description="optimizer steps per generation batch (off-policy); null = accumulation steps"
    )
    warm_start_from: str | None = Field(
        None, description="start from another run's weights: a run name in this experiment, or an adapter / model path"
    )
    sft: SftConfig = Field(default_factory=SftConfig)
    kto: KtoConfig = Field(default_factory=KtoConfig)
    distributed: Literal["none", "fsdp", "deepspeed"] = Field(
        "none", description="multi-GPU strategy: an accelerate config (workflow/accelerate/<name>.yaml)"
    )
    log_every: int = Field(1, ge=1, description="print a console row every N steps (metrics.jsonl gets every step)")
    save_every: int = Field(50, ge=1, description="save a checkpoint every N steps")
    keep_checkpoints: int = Field(2, ge=1, le=100, description="keep the last N checkpoints")
    reward_timeout_s: float | None = Field(
        60.0, gt=0.0, description="seconds one evaluator call may take before its sample is invalid (null = no limit)"
    )
    rollouts_per_step: int = Field(4, ge=0, le=4096, description="rollouts written to rollouts.jsonl per step")
    health: HealthConfig = Field(default_factory=HealthConfig)
    trl: dict[str, Any] = Field(
        default_factory=dict,
        description="any other TRL config field, passed through unchanged (not one a knob sets, nor paths, hub or "
        "reporting: knobsweep.spec.trl_fields)",
    )

    @model_validator(mode="after")
    def _sft_fits_the_context(self) -> TrainConfig:
        if self.method == "sft" and self.sft.max_length > self.max_context_length:
            raise FieldError(
                "sft.max_length",
                f"{self.sft.max_length} is longer than max_context_length "
                f"{self.max_context_length}; raise max_context_length or lower sft.max_length",
            )
        return self

    @model_validator(mode="after")
    def _kl_only_with_grpo(self) -> TrainConfig:
        if self.kl_beta and self.loss != "grpo":
            raise FieldError(
                "kl_beta",
                f"{self.kl_beta}: kl_beta must be 0/unset when loss is {self.loss}; "
                "a KL term is only part of loss grpo",
            )
        return self


class RolloutConfig(Section):
    n: int = Field(8, ge=2, le=256, description="completions per prompt (GRPO group size)")
    temperature: float = Field(0.7, ge=0.1, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    top_k: int = Field(40, ge=0, le=100, description="0 = off")
    max_tokens: int = Field(2048, ge=16, le=16384)
    extra_body: dict[str, Any] = Field(
        default_factory=dict, description="extra generation parameters (a mapping or JSON text)"
    )
    vllm: Literal["off", "colocate", "server"] = Field(
        "off",
        description="generate with vLLM: in the training process (colocate: on a GPU or vLLM's CPU build) "
        "or a `trl vllm-serve` server (CUDA)",
    )
    vllm_server: str | None = Field(
        None, pattern=r"^[^:\s]+:[0-9]+$", description="host:port of the vLLM server (vllm: server)"
    )

    @model_validator(mode="after")
    def _server_only_with_vllm_server(self) -> RolloutConfig:
        if self.vllm == "server" and not self.vllm_server:
            raise FieldError(
                "vllm_server", "rollout.vllm 'server' needs the 'host:port' of a running `trl vllm-serve --model M`"
            )
        if self.vllm != "server" and self.vllm_server:
            raise FieldError(
                "vllm_server", f"{self.vllm_server!r} only applies with rollout.vllm 'server', not {self.vllm!r}"
            )
        return self

    @field_validator("extra_body", mode="before")
    @classmethod
    def _json_text(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                value = json.loads(value, parse_constant=_not_finite)
            except json.JSONDecodeError as error:
                raise ValueError(f"must be a mapping or valid JSON text ({error.msg})") from None
            if not isinstance(value, dict):
                raise ValueError("JSON text must hold a mapping ({...})")
        return value


def _not_finite(name: str):
    raise ValueError(f"holds {name}, which is not a finite number")


class RewardConfig(BaseModel):
    """`name` picks a registered evaluator (knobsweep.registry.EVALUATORS: knobsweep's own and those of
    installed packages' `knobsweep.evaluators` entry points); every other key is one of its options,
    checked against the evaluator's own signature when the spec is validated. A spec never names code to
    import: that is what an installed package's entry point declares, where a reviewer sees it."""

    model_config = ConfigDict(extra="allow", validate_default=True)

    name: str = Field(
        ...,
        description="evaluator: "
        + ", ".join(sorted(BUILTIN_EVALUATORS))
        + ", or one an installed package registers (entry point group knobsweep.evaluators)",
    )

    @field_validator("name")
    @classmethod
    def _registered(cls, name: str) -> str:
        if name not in EVALUATORS:
            raise ValueError(
                f"is not a known evaluator{did_you_mean(name, EVALUATORS)}; allowed: {', '.join(sorted(EVALUATORS))}; "
                "an evaluator of your own is registered as a `knobsweep.evaluators` entry point of an installed "
                "package (docs/datasets.md), never named by its import path"
            )
        return name


class EvalConfig(Section):
    backend: Literal["auto", "hf", "vllm"] = "auto"
    temperature: float = Field(0.0, ge=0.0, le=2.0, description="0 = greedy")
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    max_tokens: int = Field(512, ge=16, le=16384)
    samples: int = Field(1, ge=1, le=64, description="completions per prompt")
    batch_size: int = Field(32, ge=1, le=4096, description="prompts per generation batch")
    parser: Literal["strict", "flexible", "math_verify"] = Field(
        "strict",
        description="GSM8K answer parser of the headline eval accuracy (all three are always reported; "
        "the training reward parses strictly)",
    )
    seed: int = Field(0, ge=0, le=SEED_MAX, description="seed of sampled evals (temperature > 0)")
    benchmarks: BenchmarksConfig | None = Field(
        None,
        description="standard benchmarks run by lm-evaluation-harness on every merged model and the base model "
        "(a stage of their own: changing them re-runs only them)",
    )

    @model_validator(mode="after")
    def _several_samples_are_sampled(self) -> EvalConfig:
        if self.samples > 1 and self.temperature == 0:
            raise FieldError(
                "samples",
                f"{self.samples} samples per prompt at temperature 0 (greedy) are {self.samples} identical "
                "completions: set eval.temperature above 0 to sample them, or samples: 1",
            )
        return self


class StageResources(Section):
    """What one stage's job asks the scheduler for (Slurm, or the local `--cores/--resources` pool).

    Unset fields take the stage's default (see `knobsweep.resources`); `partition`, `account`
    and `qos` default to the site settings (environment or slurm/site.yaml), never to a value
    written here.
    """

    gpus: int | None = Field(
        None, ge=0, le=64, description="GPUs per node; null = 1 for train/eval of a real model, else 0"
    )
    gpu_model: str | None = Field(None, description="GPU type, e.g. a100 (Slurm --gpus=<model>:<n>)")
    cpus: int | None = Field(None, ge=1, le=256, description="CPUs per node (threads); null = stage default")
    mem_mb: int | None = Field(None, ge=256, description="memory per node in MB; null = stage default")
    runtime_min: int | None = Field(None, ge=1, description="wall-clock limit in minutes; null = stage default")
    nodes: int = Field(1, ge=1, le=1024, description="nodes (multi-node training: train only)")
    processes: int | None = Field(
        None,
        ge=1,
        le=64,
        description="CPU training processes per node (train only, gpus 0): data parallelism over gloo, the "
        "multi-GPU code path without GPUs (a test and development mode); null = 1",
    )
    partition: str | None = Field(None, description="Slurm partition; null = site setting / cluster default")
    account: str | None = Field(None, description="Slurm account; null = site setting / your default")
    qos: str | None = Field(None, description="Slurm QOS; null = site setting / none")
    constraint: str | None = Field(None, description="Slurm --constraint (node features)")

    @field_validator("gpu_model", "partition", "account", "qos", "constraint")
    @classmethod
    def _what_sbatch_takes(cls, value: str | None, info: ValidationInfo) -> str | None:
        problem = value is not None and slurm_value_problem(info.field_name, value)
        if problem:
            raise FieldError("", problem)
        return value


MERGE_FIELDS = ("cpus", "mem_mb", "runtime_min")


class Resources(Section):
    data: StageResources = Field(default_factory=StageResources)
    train: StageResources = Field(default_factory=StageResources)
    merge: StageResources = Field(
        default_factory=StageResources,
        description="what the merge adds to its train job (it runs at the end of it): cpus, mem_mb, runtime_min only",
    )
    eval: StageResources = Field(default_factory=StageResources)
    report: StageResources = Field(default_factory=StageResources)

    @model_validator(mode="after")
    def _several_nodes_only_for_training(self) -> Resources:
        for stage in ("data", "merge", "eval", "report"):
            nodes = getattr(self, stage).nodes
            if nodes != 1:
                raise FieldError(f"{stage}.nodes", f"{nodes}: only the train stage runs on several nodes")
            processes = getattr(self, stage).processes
            if processes not in (None, 1):
                raise FieldError(f"{stage}.processes", f"{processes}: only the train stage runs several processes")
        if (self.train.processes or 1) > 1 and self.train.gpus:
            raise FieldError(
                "train.processes",
                f"{self.train.processes} CPU processes with gpus {self.train.gpus}: processes is the CPU stand-in "
                "for GPUs (one process per GPU is automatic); set gpus 0 (or leave it unset), or processes 1",
            )
        return self

    @model_validator(mode="after")
    def _merge_adds_to_the_train_job(self) -> Resources:
        # The merge runs on the CPU at the end of its run's train job (knobsweep.resources.train_job_resources).
        placed = {
            name: value
            for name, value in self.merge.model_dump().items()
            if name not in MERGE_FIELDS and name != "nodes" and value not in (None, 0)
        }
        if placed:
            name, value = next(iter(placed.items()))
            raise FieldError(
                f"merge.{name}",
                f"{value!r}: the merge runs on the CPU at the end of the train job, "
                f"on the train job's placement; merge takes only {', '.join(MERGE_FIELDS)}",
            )
        return self


class WandbConfig(Section):
    project: str = Field(..., min_length=1)
    entity: str | None = None
    mode: Literal["online", "offline"] = "online"


class TrackingConfig(Section):
    wandb: WandbConfig | None = Field(None, description="log each run to Weights & Biases (off by default)")


class RunConfig(Section):
    """Everything one run needs: the baseline, or the baseline with one knob turned."""

    model: ModelConfig
    data: DataOptions = Field(default_factory=Gsm8kOptions, description="source (a converter) and its options")
    train: TrainConfig = Field(default_factory=TrainConfig)
    rollout: RolloutConfig = Field(default_factory=RolloutConfig)
    reward: RewardConfig | None = Field(None, description="evaluator; null = the data source's default (gsm8k: gsm8k)")
    eval: EvalConfig = Field(default_factory=EvalConfig)
    resources: Resources = Field(default_factory=Resources)

    @field_validator("reward", mode="before")
    @classmethod
    def _reward_by_name(cls, value: Any) -> Any:
        # `reward: gsm8k` is shorthand for `reward: {name: gsm8k}`.
        return {"name": value} if isinstance(value, str) else value


class ExperimentSpec(Section):
    """The file a user writes: a baseline and the knobs to turn."""

    name: str | None = Field(
        None,
        pattern=EXPERIMENT_NAME,
        max_length=EXPERIMENT_NAME_MAX,
        description="defaults to the file's stem; letters, digits and _ . - (a results/ folder)",
    )
    parent: str | None = Field(
        None,
        min_length=1,
        description="the experiment file this one follows up, relative to this file (`knobsweep next` writes it; "
        "the report shows the chain of baselines)",
    )
    baseline: RunConfig
    sweep: dict[str, list[Any]] = Field(default_factory=dict, description="dotted knob path -> values to try")
    mode: Literal["ofat", "grid"] = Field(
        "ofat", description="ofat: one knob at a time against the baseline; grid: all combinations"
    )
    seeds: list[Annotated[int, Field(ge=0, le=SEED_MAX)]] = Field(
        default_factory=lambda: [0], min_length=1, description="one replicate of every run per seed (0..2^32-1)"
    )
    runs: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="named extra runs: name -> {dotted knob: value} over the baseline (e.g. an SFT run that a "
        "GRPO run warm-starts from)",
    )
    hypotheses: dict[str, str] = Field(
        default_factory=dict, description="knob (or named run) -> the sentence shown next to its results"
    )
    tracking: TrackingConfig = Field(default_factory=TrackingConfig, description="experiment trackers (never hashed)")
    early_stop: EarlyStopConfig | None = Field(
        None,
        description="rung evaluations: stop an arm worse than the baseline beyond noise part-way through training "
        "(docs/early_stop.md; never hashed into a run's train or eval key)",
    )


# --- what each stage receives as --config-json: exactly the sections its key hashes ---------------------


class TrainJob(Section):
    """The training stage's config: the run config sections its method reads (registry.Method.hashed_sections)."""

    model: ModelConfig
    train: TrainConfig
    rollout: RolloutConfig | None = None
    reward: RewardConfig | None = None
    seed: int = Field(..., ge=0, le=SEED_MAX)

    @model_validator(mode="after")
    def _weights_come_as_an_argument(self) -> TrainJob:
        if self.train.warm_start_from is not None:
            raise FieldError(
                "train.warm_start_from",
                "a training job gets the weights it starts from as "
                "--warm-start DIR (the spec resolves a run name or path into it)",
            )
        return self

    @model_validator(mode="after")
    def _trl_sets_no_knob(self) -> TrainJob:
        # The spec refuses these too (spec.experiment): checked again so a hand-written --config-json
        # cannot override a knob (or move checkpoints out of results/) either.
        refused = trl_problems(self.train.method, self.train.trl)
        if refused:
            name, problem = next(iter(refused.items()))
            raise FieldError(f"train.trl.{name}", problem)
        return self

    @model_validator(mode="after")
    def _what_the_method_reads(self) -> TrainJob:
        if METHODS[self.train.method].generates:
            for section in ("rollout", "reward"):
                if getattr(self, section) is None:
                    raise FieldError(
                        section, f"is required: train.method {self.train.method!r} samples completions and scores them"
                    )
        return self


class EvalJob(Section):
    """The evaluation stage's config (eval.benchmarks is the benchmark stage's: BenchmarkJob)."""

    eval: EvalConfig
    reward: RewardConfig

    @field_serializer("eval", mode="wrap")
    def _without_benchmarks(self, value: EvalConfig, handler) -> dict:
        # what the eval stage ran with, as its summary records it: the benchmarks are another stage's
        return {name: setting for name, setting in handler(value).items() if name != "benchmarks"}


class BenchmarkJob(Section):
    """The benchmark stage's config: the benchmarks, and the backend the run's eval uses (eval.backend)."""

    benchmarks: BenchmarksConfig
    backend: Literal["auto", "hf", "vllm"]


class RunInfo(Section):
    """Who a training job is for: W&B's group, name and tags (never hashed)."""

    experiment: str = Field(..., min_length=1)
    run: str = Field(..., min_length=1)
    changed: dict[str, Any] = Field(default_factory=dict, description="dotted knob -> value; {} for the baseline")
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)

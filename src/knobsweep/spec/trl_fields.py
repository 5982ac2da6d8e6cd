"""Which TRL config fields `train.trl` may not set, and why.

knobsweep builds each TRL config from its own knobs (train/method.py `common_kwargs`, then each
method's `method_kwargs`: train/grpo.py, sft.py, kto.py). A field that one of them sets must be
changed through that knob, or the run differs from what the spec, its name, its key and the report
say. Paths, hub pushing, tokens and reporting are not spec material at all: knobsweep decides where
results go, and a spec is shared and hashed. Every other TRL field passes through unchanged.
"""

from __future__ import annotations

from typing import Any

_BATCH = "train.batch_size (or train.batch_tokens) and train.per_device_batch_size"
_LOSS = "train.loss (grpo, dapo or gspo-token set the loss type, clip range and KL together)"

# field -> the knob to use instead, for every method
OWNED: dict[str, str] = {
    "learning_rate": "train.learning_rate",
    "num_train_epochs": "train.epochs",
    "max_steps": "train.epochs (a step cap would end the run before the epochs its spec, plan and report say)",
    "per_device_train_batch_size": _BATCH,
    "gradient_accumulation_steps": _BATCH,
    "seed": "seeds (one run per seed)",
    "save_steps": "train.save_every",
    "save_total_limit": "train.keep_checkpoints",
    "logging_steps": "train.log_every (metrics.jsonl gets every step)",
    "model_name_or_path": "model.name",  # not TRL fields: the model and data of a recipe's script
    "dataset_name": "data (source and its options)",
    "reward_funcs": "reward (the evaluator)",
}

# method -> {field -> knob}: what each method's own fields come from
OWNED_BY_METHOD: dict[str, dict[str, str]] = {
    "grpo": {
        "loss_type": _LOSS,
        "epsilon": _LOSS,
        "epsilon_high": _LOSS,
        "importance_sampling_level": _LOSS,
        "beta": "train.kl_beta",
        "num_generations": "rollout.n",
        "num_iterations": "train.num_iterations",
        "steps_per_generation": "train.steps_per_generation",
        "temperature": "rollout.temperature",
        "top_p": "rollout.top_p",
        "top_k": "rollout.top_k",
        "max_completion_length": "rollout.max_tokens",
        "generation_kwargs": "rollout.extra_body",
        "use_vllm": "rollout.vllm",
        "vllm_mode": "rollout.vllm",
        "vllm_server_host": "rollout.vllm_server",
        "vllm_server_port": "rollout.vllm_server",
        "vllm_max_model_length": "train.max_context_length",
        "reward_weights": "reward (knobsweep scores with one evaluator)",
    },
    "sft": {
        "completion_only_loss": "train.sft.completion_only_loss",
        "assistant_only_loss": "train.sft.assistant_only_loss",
        "max_length": "train.sft.max_length",
        "packing": "train.sft.packing",
    },
    "kto": {
        "beta": "train.kto.beta",
        "desirable_weight": "train.kto.desirable_weight",
        "undesirable_weight": "train.kto.undesirable_weight",
        "max_length": "train.max_context_length",
    },
}

# field (or prefix ending in "_") -> why it is not spec material
NOT_SPEC: dict[str, str] = {
    "output_dir": "knobsweep writes checkpoints under results/ (the run's train key decides where)",
    "overwrite_output_dir": "knobsweep writes checkpoints under results/ (the run's train key decides where)",
    "logging_dir": "knobsweep writes logs under results/",
    "resume_from_checkpoint": "knobsweep resumes from the run's own last checkpoint when the workflow runs again",
    "save_strategy": "knobsweep saves every train.save_every steps, so a cancelled run resumes",
    "push_to_hub": "a spec does not publish: push a finished run's merged model yourself",
    "hub_": "a spec does not publish, and a token in a spec would be copied into every config and log",
    "push_to_hub_": "a spec does not publish: push a finished run's merged model yourself",
    "report_to": "tracking is the spec's `tracking:` section (W&B), outside the hashed config",
    "run_name": "knobsweep names each run after the knobs it changes",
    "disable_tqdm": "knobsweep prints its own progress table",
    "logging_strategy": "knobsweep logs every step to metrics.jsonl (train.log_every paces the console)",
    "bf16": "knobsweep sets the precision from the device (bf16 on a GPU, fp32 on the CPU)",
    "fp16": "knobsweep sets the precision from the device (bf16 on a GPU, fp32 on the CPU)",
    "use_cpu": "knobsweep picks the device from resources.train.gpus",
    "do_eval": "knobsweep evaluates in its own stage: the `eval:` section",
    "eval_strategy": "knobsweep evaluates in its own stage: the `eval:` section",
    "per_device_eval_batch_size": "knobsweep evaluates in its own stage: eval.batch_size",
}


def trl_field_problem(method: str, name: str) -> str | None:
    """Why `train.trl.<name>` may not be set for `method`, or None when it passes through to TRL."""
    knob = OWNED_BY_METHOD.get(method, {}).get(name) or OWNED.get(name)
    if knob:
        return f"knobsweep sets it from its own knob; use {knob} instead"
    why = NOT_SPEC.get(name) or next(
        (text for prefix, text in NOT_SPEC.items() if prefix.endswith("_") and name.startswith(prefix)), None
    )
    return f"not spec material: {why}" if why else None


def trl_problems(method: str, fields: dict[str, Any]) -> dict[str, str]:
    """{field: why it is refused} for the `train.trl` fields knobsweep owns or keeps out of specs."""
    return {name: problem for name in fields if (problem := trl_field_problem(method, name))}

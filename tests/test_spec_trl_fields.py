"""`train.trl` may not set what a knob sets, nor paths, hub pushing, tokens or reporting (issue 13).

Tested with a real published recipe: open-r1's GRPO demo config (tests/fixtures/open-r1, Apache-2.0),
every field of it put under `train.trl`."""

from __future__ import annotations

import json

import pytest
import yaml
from conftest import FIXTURES

from knobsweep.cli import main
from knobsweep.spec import SpecError, load_experiment
from knobsweep.train.__main__ import main as train_main

RECIPE = yaml.safe_load((FIXTURES / "open-r1" / "grpo_config_demo.yaml").read_text())

BASE = """
baseline:
  model: {name: tiny}
  data: {source: gsm8k, path: data/gsm8k, train_size: 20, eval_size: 5}
"""

# what each field of the recipe is, for train.method grpo: the knob that sets it ...
OWNED = {
    "model_name_or_path": "model.name",
    "dataset_name": "data (source and its options)",
    "reward_funcs": "reward (the evaluator)",
    "reward_weights": "reward (knobsweep scores with one evaluator)",
    "use_vllm": "rollout.vllm",
    "gradient_accumulation_steps": "train.batch_size (or train.batch_tokens) and train.per_device_batch_size",
    "per_device_train_batch_size": "train.batch_size (or train.batch_tokens) and train.per_device_batch_size",
    "learning_rate": "train.learning_rate",
    "logging_steps": "train.log_every (metrics.jsonl gets every step)",
    "max_completion_length": "rollout.max_tokens",
    "num_generations": "rollout.n",
    "num_train_epochs": "train.epochs",
    "save_total_limit": "train.keep_checkpoints",
    "seed": "seeds (one run per seed)",
    "max_steps": "train.epochs (a step cap would end the run before the epochs its spec, plan and report say)",
}
# ... not spec material ...
NOT_SPEC = {
    "bf16": "knobsweep sets the precision from the device (bf16 on a GPU, fp32 on the CPU)",
    "do_eval": "knobsweep evaluates in its own stage: the `eval:` section",
    "hub_model_id": "a spec does not publish, and a token in a spec would be copied into every config and log",
    "hub_strategy": "a spec does not publish, and a token in a spec would be copied into every config and log",
    "logging_strategy": "knobsweep logs every step to metrics.jsonl (train.log_every paces the console)",
    "output_dir": "knobsweep writes checkpoints under results/ (the run's train key decides where)",
    "overwrite_output_dir": "knobsweep writes checkpoints under results/ (the run's train key decides where)",
    "per_device_eval_batch_size": "knobsweep evaluates in its own stage: eval.batch_size",
    "push_to_hub": "a spec does not publish: push a finished run's merged model yourself",
    "report_to": "tracking is the spec's `tracking:` section (W&B), outside the hashed config",
    "save_strategy": "knobsweep saves every train.save_every steps, so a cancelled run resumes",
}
# ... fields of open-r1's own scripts, or of an older TRL / transformers (refused as unknown, as before) ...
UNKNOWN = {
    "model_revision",
    "torch_dtype",
    "attn_implementation",
    "dataset_prompt_column",
    "system_prompt",
    "max_prompt_length",
    "warmup_ratio",
}
# ... and the rest, which pass through to GRPOConfig unchanged
ACCEPTED = {
    "gradient_checkpointing",
    "gradient_checkpointing_kwargs",
    "log_completions",
    "log_level",
    "logging_first_step",
    "lr_scheduler_type",
}


def with_trl(fields: dict, method: str = "grpo") -> str:
    return BASE + f"  train: {{method: {method}, trl: {json.dumps(fields)}}}\n"


def test_the_recipe_is_sorted_completely():
    assert set(RECIPE) == set(OWNED) | set(NOT_SPEC) | UNKNOWN | ACCEPTED


def test_each_field_of_a_real_recipe_is_refused_naming_the_knob_or_why(write_spec, capsys):
    path = write_spec(with_trl(RECIPE))
    assert main(["validate", str(path)]) == 1
    out = " ".join(capsys.readouterr().out.split())
    assert not (path.parent / "results").exists()
    for field, knob in OWNED.items():
        assert (
            f"exp.yaml: train.trl.{field}: knobsweep sets it from its own knob; use {knob} instead (run 'baseline')"
            in out
        ), field
    for field, why in NOT_SPEC.items():
        assert f"exp.yaml: train.trl.{field}: not spec material: {why} (run 'baseline')" in out, field
    for field in UNKNOWN:
        assert f"exp.yaml: train.trl.{field}: not a GRPOConfig field in TRL " in out, field
    for field in ACCEPTED:
        assert f"train.trl.{field}:" not in out, field


def test_the_remaining_fields_of_the_recipe_are_accepted_unchanged(write_spec):
    accepted = {field: RECIPE[field] for field in ACCEPTED}
    config = load_experiment(write_spec(with_trl(accepted))).baseline.config
    assert config["train"]["trl"] == accepted
    assert config["rollout"]["n"] == 8  # the recipe's num_generations: 16 no longer replaces it unseen


def test_a_hub_token_is_refused_and_not_repeated(write_spec, capsys):
    path = write_spec(with_trl({"hub_token": "hf_SECRETSECRET"}))
    assert main(["validate", str(path)]) == 1
    out = capsys.readouterr().out
    assert "train.trl.hub_token: not spec material: a spec does not publish" in out
    assert "hf_SECRETSECRET" not in out


@pytest.mark.parametrize(
    ("method", "field", "knob"),
    [
        ("grpo", "beta", "train.kl_beta"),
        ("grpo", "loss_type", "train.loss (grpo, dapo or gspo-token set the loss type, clip range and KL together)"),
        ("grpo", "temperature", "rollout.temperature"),
        ("grpo", "vllm_mode", "rollout.vllm"),
        ("kto", "beta", "train.kto.beta"),
        ("kto", "max_length", "train.max_context_length"),
        ("sft", "max_length", "train.sft.max_length"),
        ("sft", "packing", "train.sft.packing"),
    ],
)
def test_each_method_owns_its_own_fields(write_spec, method, field, knob):
    with pytest.raises(SpecError) as caught:
        load_experiment(write_spec(with_trl({field: 1}, method)))
    assert [p.message for p in caught.value.problems] == [f"knobsweep sets it from its own knob; use {knob} instead"]


def test_a_trl_field_no_knob_sets_passes_through(write_spec):
    kto = load_experiment(write_spec(with_trl({"loss_type": "apo_zero_unpaired"}, "kto"))).baseline.config
    assert kto["train"]["trl"] == {"loss_type": "apo_zero_unpaired"}


def test_the_train_stage_refuses_a_hand_written_config(tmp_path, capsys):
    """A --config-json written by hand (not from a spec) cannot override a knob either."""
    job = {
        "model": {"name": "tiny"},
        "train": {"trl": {"num_generations": 16}},
        "rollout": {},
        "reward": {"name": "gsm8k"},
        "seed": 0,
    }
    with pytest.raises(SystemExit) as caught:
        train_main(["--config-json", json.dumps(job), "--model", "m", "--data", "d", "--out", str(tmp_path / "out")])
    assert caught.value.code == 2
    assert (
        "--config-json: train.trl.num_generations: knobsweep sets it from its own knob; use rollout.n instead"
        in " ".join(capsys.readouterr().err.split())
    )
    assert not (tmp_path / "out").exists()

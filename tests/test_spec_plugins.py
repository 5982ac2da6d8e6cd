"""The spec's plug-in sections (`data` options checked by their converter, `reward` options by their
evaluator), the row format a method reads, named runs and warm-start chains."""

from __future__ import annotations

import pytest
from conftest import FIXTURES

from knobsweep import layout
from knobsweep.pipeline import build_pipeline
from knobsweep.spec import SpecError, load_experiment

BASE = """
baseline:
  model: {name: tiny}
  data: {source: gsm8k, path: data/gsm8k, train_size: 20, eval_size: 5}
  train: {batch_size: 2}
"""


def problems(write_spec, text):
    with pytest.raises(SpecError) as caught:
        load_experiment(write_spec(text))
    return [str(p) for p in caught.value.problems]


def test_data_and_reward_are_resolved_with_every_default(write_spec):
    run = load_experiment(write_spec(BASE)).baseline
    assert run.config["data"]["format"] == "rl"  # what GRPO reads
    assert run.config["data"]["hub_config"] == "main" and run.config["data"]["seed"] == 0
    assert run.config["reward"] == {"name": "gsm8k", "format_weight": 0.1}
    # Spelling a default out changes no key: the resolved configs are equal.
    spelled = load_experiment(
        write_spec(
            BASE.replace("eval_size: 5}", "eval_size: 5, seed: 0}") + "  reward: {name: gsm8k, format_weight: 0.1}\n",
            "b.yaml",
        )
    ).baseline
    assert spelled.keys == run.keys


def test_a_converter_option_error_names_the_field_and_the_run(write_spec):
    found = problems(write_spec, BASE.replace("eval_size: 5}", "eval_size: 5, train_sise: 3}"))
    assert any(
        "exp.yaml: baseline.data.train_sise: unknown key 'train_sise' (did you mean 'train_size'?)" in p
        and "(run 'baseline')" in p
        for p in found
    ), found


def test_an_unknown_source_or_evaluator_lists_the_registered_ones(write_spec):
    found = problems(write_spec, BASE.replace("source: gsm8k", "source: gsm9k"))
    assert any(
        "baseline.data.source: 'gsm9k' is not a known data source; allowed: " in p and "openspiel" in p for p in found
    ), found
    found = problems(write_spec, BASE + "  reward: {name: gsm9k}\n")
    assert any(
        "baseline.reward.name: 'gsm9k' is not a known evaluator (did you mean 'gsm8k'?); allowed: " in p for p in found
    ), found


def test_an_evaluator_option_is_checked_against_its_signature(write_spec):
    found = problems(write_spec, BASE + "  reward: {name: gsm8k, format_wieght: 0.2}\n")
    assert any(
        "exp.yaml: reward.format_wieght: unknown option for evaluator 'gsm8k'" in p
        and "did you mean 'format_weight'" in p
        for p in found
    ), found


def test_the_method_picks_the_row_format(write_spec):
    experiment = load_experiment(
        write_spec(
            BASE
            + """
runs:
  sft: {train.method: sft}
  kto: {train.method: kto}
"""
        )
    )
    formats = {run.name: run.config["data"]["format"] for run in experiment.runs}
    assert formats == {"baseline": "rl", "sft": "sft", "kto": "kto"}
    assert len({run.keys.data for run in experiment.runs}) == 3


def test_sft_and_kto_are_not_retrained_by_rollout_or_reward_knobs(write_spec):
    sft = BASE.replace("{batch_size: 2}", "{batch_size: 2, method: sft}")
    one = load_experiment(write_spec(sft)).baseline
    other = load_experiment(
        write_spec(
            sft.replace("{name: tiny}", "{name: tiny}\n  rollout: {n: 4}")
            + "  reward: {name: gsm8k, format_weight: 0.3}\n",
            "b.yaml",
        )
    ).baseline
    assert one.keys.train == other.keys.train
    assert one.keys.eval != other.keys.eval  # the reward scores the eval, so the eval re-runs


def test_named_runs_are_overrides_of_the_baseline(write_spec):
    experiment = load_experiment(
        write_spec(
            BASE
            + """
sweep:
  train.learning_rate: [2.0e-4]
runs:
  sft_warmup: {train.method: sft, train.learning_rate: 5.0e-5}
hypotheses:
  sft_warmup: SFT alone already teaches the format.
"""
        )
    )
    run = next(r for r in experiment.runs if r.name == "sft_warmup")
    assert run.changed == {"train.method": "sft", "train.learning_rate": 5e-5}
    assert [r.name for r in experiment.runs] == ["baseline", "learning_rate=2e-4", "sft_warmup"]


def test_named_run_problems_point_into_runs(write_spec):
    found = problems(
        write_spec,
        BASE
        + """
runs:
  big: {train.epochs: 99}
""",
    )
    assert any("runs.big.train.epochs: 99 is out of range" in p and "(run 'big')" in p for p in found), found
    found = problems(
        write_spec,
        BASE
        + """
runs:
  typo: {train.learnig_rate: 1.0e-4}
  baseline: {train.epochs: 2}
""",
    )
    assert any(
        "runs.typo.train.learnig_rate: unknown knob" in p and "did you mean 'train.learning_rate'" in p for p in found
    ), found
    assert any("runs.baseline: a run name is" in p for p in found), found


def test_warm_start_from_a_run_chains_the_jobs(write_spec):
    pipeline = build_pipeline(
        [
            write_spec(
                BASE
                + """
runs:
  sft: {train.method: sft}
  sft_then_grpo: {train.warm_start_from: sft}
"""
            )
        ]
    )
    experiment = pipeline.experiments["exp"]
    runs = {run.name: run for run in experiment.runs}
    chained, sft = runs["sft_then_grpo"], runs["sft"]
    upstream = layout.TRAIN_ADAPTER.format(key=sft.keys.train)
    assert chained.keys.warm_start == sft.keys.train and chained.warm_start == upstream
    assert chained.config["train"]["warm_start_from"] == "sft"  # as written: the report's config diff shows it
    job = pipeline.train[chained.keys.train]
    assert upstream in job.inputs  # Snakemake trains the SFT run first
    # The stage gets the weights as an argument: its config, which the key hashes, names no path.
    assert job.config["train"]["warm_start_from"] is None and f"--warm-start {upstream}" in job.args
    assert chained.keys.train != runs["baseline"].keys.train
    # It continues the SFT run's weights, so it keeps that run's tiny base model (tokenizer included),
    # although its own data (rl rows) differs.
    assert chained.keys.model == sft.keys.model != runs["baseline"].keys.model
    assert chained.keys.data == runs["baseline"].keys.data


def test_warm_start_changes_follow_the_upstream_run(write_spec):
    text = (
        BASE
        + """
runs:
  sft: {train.method: sft}
  sft_then_grpo: {train.warm_start_from: sft}
"""
    )
    first = {r.name: r for r in load_experiment(write_spec(text)).runs}
    second = {
        r.name: r
        for r in load_experiment(
            write_spec(text.replace("{train.method: sft}", "{train.method: sft, train.epochs: 2}"), "b.yaml")
        ).runs
    }
    assert first["baseline"].keys.train == second["baseline"].keys.train
    assert first["sft_then_grpo"].keys.train != second["sft_then_grpo"].keys.train


def test_warm_start_cycles_and_missing_paths_are_errors(write_spec):
    found = problems(
        write_spec,
        BASE
        + """
runs:
  a: {train.warm_start_from: b}
  b: {train.warm_start_from: a}
  c: {train.warm_start_from: no/such/adapter}
""",
    )
    assert any(
        "train.warm_start_from: " in p and "runs warm-start from each other in a cycle (a -> b -> a)" in p
        for p in found
    ), found
    assert any("'no/such/adapter' is neither a run of this experiment" in p and "(run 'c')" in p for p in found), found


def test_warm_start_from_a_path_is_keyed_on_its_files(write_spec, tmp_path):
    adapter = tmp_path / "my_adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    text = BASE + f"runs:\n  resumed: {{train.warm_start_from: {adapter}}}\n"
    before = {r.name: r for r in load_experiment(write_spec(text)).runs}["resumed"]
    assert before.config["train"]["warm_start_from"] == str(adapter) and before.keys.warm_start is None
    assert before.warm_start == str(adapter)
    (adapter / "adapter_config.json").write_text('{"r": 8}')
    after = {r.name: r for r in load_experiment(write_spec(text)).runs}["resumed"]
    assert before.keys.train != after.keys.train


def test_tracking_reaches_the_train_job_but_not_its_key(write_spec):
    plain = load_experiment(write_spec(BASE)).baseline
    text = BASE + "tracking:\n  wandb: {project: knobs, mode: offline}\n"
    pipeline = build_pipeline([write_spec(text, "b.yaml")])
    run = pipeline.experiments["b"].baseline
    assert run.keys == plain.keys
    info = pipeline.train[run.keys.train].run_info
    assert info == {
        "experiment": "b",
        "run": "baseline",
        "changed": {},
        "tracking": {"wandb": {"project": "knobs", "entity": None, "mode": "offline"}},
    }
    # the job reads it from a file of its key's, so no Snakemake param holds a name or tracking
    args = pipeline.train[run.keys.train].args
    assert f"--run-info results/train/{run.keys.train}/run_info.json" in args and "knobs" not in args


def test_a_format_the_method_cannot_read_is_an_error(write_spec):
    found = problems(write_spec, BASE.replace("eval_size: 5}", "eval_size: 5, format: sft}"))
    assert any("data.format: 'sft' rows cannot train train.method 'grpo', which reads 'rl' rows" in p for p in found), (
        found
    )


def test_grpo_must_wait_as_long_as_the_evaluator_may_take(write_spec, tmp_path):
    (tmp_path / "repos").mkdir()
    text = f"""
baseline:
  model: {{name: tiny}}
  data: {{source: swe_bench, path: {FIXTURES / "swebench" / "swebench_instances_combined.jsonl"}}}
  reward: {{name: swe_tests, repos_dir: repos, timeout_s: 300}}
"""
    found = problems(write_spec, text)
    assert any(
        "train.reward_timeout_s: 60 s is shorter than the evaluator's own reward.timeout_s (300 s)" in p for p in found
    ), found


def test_launches_that_cannot_work_fail_at_validation(write_spec):
    found = problems(write_spec, BASE + "  resources: {train: {nodes: 2}}\n")
    assert any("resources.train.nodes: 2 needs GPUs, but resources.train.gpus is 0" in p for p in found), found
    found = problems(write_spec, BASE.replace("{batch_size: 2}", "{batch_size: 2, distributed: fsdp}"))
    assert any("train.distributed: fsdp needs GPUs" in p for p in found), found
    found = problems(write_spec, BASE + "  resources: {eval: {nodes: 2}}\n")
    assert any("resources.eval.nodes: 2: only the train stage runs on several nodes" in p for p in found), found

"""Hostile and mistaken specs (issue 13): each is refused by `knobsweep validate` with a message naming the
file, the dotted field, the bad value and what is allowed; no traceback, nothing under results/. And the
good input that used to be refused or misread is accepted as written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from knobsweep.cli import main
from knobsweep.resources import SiteError, site_settings, slurm_value_problem
from knobsweep.spec import SpecError, load_experiment
from knobsweep.spec.load import MAX_RUNS
from knobsweep.spec.reading import MAX_BYTES, MAX_DEPTH, MAX_NODES

BASE = """
baseline:
  model: {name: tiny}
  data: {source: gsm8k, path: data/gsm8k, train_size: 20, eval_size: 5}
"""


def refused(write_spec, capsys, text: str, name: str = "exp.yaml") -> str:
    """`knobsweep validate` on the spec: exit 1, no traceback, nothing written; its output."""
    path = write_spec(text, name) if isinstance(text, str) else text
    assert main(["validate", str(path)]) == 1
    out = capsys.readouterr()
    assert "Traceback" not in out.out + out.err
    assert not (path.parent / "results").exists()
    return " ".join(out.out.split())  # rich may wrap a long line


def refused_with(write_spec, capsys, text: str) -> str:
    """`refused` for BASE followed by `text`."""
    return refused(write_spec, capsys, BASE + text)


def run(experiment, name):
    return next(r for r in experiment.runs if r.name == name)


# --- mappings merge, not replace ------------------------------------------------------------------


def with_lora(write_spec, text: str):
    """The experiment of BASE with a non-default LoRA section, plus `text`."""
    return load_experiment(
        write_spec(BASE.replace("{name: tiny}", "{name: tiny, lora: {rank: 8, alpha: 32, dropout: 0.1}}") + text)
    )


def test_a_partial_mapping_in_a_sweep_changes_only_what_it_names(write_spec):
    experiment = with_lora(
        write_spec,
        """
sweep:
  model.lora: [{rank: 16}]
  data: [{train_size: 10}]
""",
    )
    assert [r.name for r in experiment.runs] == ["baseline", "lora.rank=16", "data.train_size=10"]
    assert run(experiment, "lora.rank=16").changed == {"model.lora.rank": 16}
    lora = run(experiment, "lora.rank=16").config["model"]["lora"]
    assert (lora["rank"], lora["alpha"], lora["dropout"]) == (16, 32, 0.1)
    data = run(experiment, "data.train_size=10").config["data"]
    assert (data["train_size"], data["eval_size"], data["path"]) == (10, 5, "data/gsm8k")


def test_a_named_run_written_as_nested_yaml_changes_only_what_it_names(write_spec):
    experiment = with_lora(
        write_spec,
        """
runs:
  big:
    model: {lora: {rank: 16}}
    train: {sft: {max_length: 512}}
""",
    )
    big = run(experiment, "big")
    assert big.changed == {"model.lora.rank": 16, "train.sft.max_length": 512}
    assert big.config["model"]["lora"]["alpha"] == 32
    assert big.config["train"]["sft"]["packing"] is False
    assert big.config["train"]["learning_rate"] == experiment.baseline.config["train"]["learning_rate"]


def test_a_mapping_naming_another_data_source_replaces_the_section(write_spec):
    experiment = load_experiment(
        write_spec(
            BASE
            + """
runs:
  own:
    data: {source: jsonl, path: data/custom_example, prompt_key: problem, ground_truth_key: final_answer}
    reward: gsm8k
"""
        )
    )
    own = run(experiment, "own")
    assert set(own.changed) == {"data"}  # reward gsm8k is what the baseline resolves to
    data = own.config["data"]
    assert (data["source"], data["path"], data["train_size"], data["prompt_key"]) == (
        "jsonl",
        "data/custom_example",
        None,  # the jsonl default, not the gsm8k baseline's 20
        "problem",
    )


# --- duplicates --------------------------------------------------------------------------------------


def test_a_repeated_seed_is_refused(write_spec, capsys):
    out = refused(write_spec, capsys, BASE + "seeds: [0, 1, 0]\n")
    assert "exp.yaml: seeds: 0 is listed twice; each seed is one replicate, list it once" in out


def test_sweep_values_equal_once_validated_are_refused(write_spec, capsys):
    out = refused_with(
        write_spec,
        capsys,
        """
sweep:
  train.learning_rate: [0.0002, 2.0e-4]
  model.lora: [{rank: 16}, {rank: 16, alpha: 16}]
""",
    )
    assert (
        "exp.yaml: sweep.train.learning_rate[1]: 2e-4 gives the same run as sweep.train.learning_rate[0] (2e-4); "
        "list each value once" in out
    )
    assert (
        'exp.yaml: sweep.model.lora[1]: {"alpha":16,"rank":16} gives the same run as sweep.model.lora[0] '
        '({"rank":16}); list each value once' in out
    )


def test_a_named_run_with_a_sweep_arms_name_is_refused(write_spec, capsys):
    out = refused_with(
        write_spec,
        capsys,
        """
sweep: {train.learning_rate: [2.0e-4]}
runs:
  learning_rate=2e-4: {train.learning_rate: 3.0e-4}
""",
    )
    assert (
        "exp.yaml: runs.learning_rate=2e-4: 'learning_rate=2e-4' is also the name of a sweep arm; "
        "give the named run another name" in out
    )


# --- strict numbers ------------------------------------------------------------------------------------


def test_booleans_and_quoted_numbers_are_not_numbers(write_spec, capsys):
    out = refused_with(
        write_spec,
        capsys,
        """
sweep:
  train.epochs: [true]
  rollout.temperature: [false]
  rollout.n: ["4"]
""",
    )
    assert "exp.yaml: sweep.train.epochs[0]: true is a boolean; allowed: an integer, 1 <= value <= 10" in out
    assert "sweep.rollout.temperature[0]: false is a boolean; allowed: a number, 0.1 <= value <= 2.0" in out
    assert (
        "sweep.rollout.n[0]: '4' is text (write the number without quotes); allowed: an integer, "
        "2 <= value <= 256" in out
    )


def test_seeds_are_integers(write_spec, capsys):
    out = refused_with(write_spec, capsys, "seeds: [0, true]\n")
    assert "exp.yaml: seeds[1]: true is a boolean; allowed: an integer" in out


def test_an_integer_is_a_fine_float(write_spec):
    experiment = load_experiment(write_spec(BASE + "sweep: {rollout.temperature: [1]}\n"))
    assert run(experiment, "temperature=1").config["rollout"]["temperature"] == 1


@pytest.mark.parametrize("value", [".nan", ".inf", "-.Inf"])
def test_non_finite_numbers_are_refused(write_spec, capsys, value):
    out = refused(write_spec, capsys, BASE + f"sweep: {{train.learning_rate: [{value}]}}\n")
    shown = {".nan": "nan", ".inf": "inf", "-.Inf": "-inf"}[value]
    assert f"exp.yaml: sweep.train.learning_rate[0]: {shown} is not a finite number; write a finite value" in out


def test_non_finite_numbers_in_json_text_are_refused(write_spec, capsys):
    out = refused(write_spec, capsys, BASE + """  rollout: {extra_body: '{"min_p": NaN}'}\n""")
    assert """baseline.rollout.extra_body: '{"min_p": NaN}' holds NaN, which is not a finite number""" in out


# --- resources are not swept ----------------------------------------------------------------------------


def test_resources_cannot_be_swept_or_set_by_a_named_run(write_spec, capsys):
    out = refused_with(
        write_spec,
        capsys,
        """
sweep: {resources.train.cpus: [2, 4]}
runs:
  more: {resources: {eval: {mem_mb: 9000}}}
""",
    )
    why = (
        "resources do not change results, so they are not hashed (arms would share one training job); "
        "set them in the baseline or profiles/"
    )
    assert f"exp.yaml: sweep.resources.train.cpus: {why}" in out
    assert f"exp.yaml: runs.more.resources.eval.mem_mb: {why}" in out


# --- bounded reading ------------------------------------------------------------------------------------


def test_a_spec_over_the_size_limit_is_refused_unread(write_spec, capsys):
    path = write_spec(BASE + "#" * MAX_BYTES)
    out = refused(write_spec, capsys, path)
    assert f"exp.yaml: {path.stat().st_size:,} bytes is too large for a spec; at most 1,048,576 (1 MiB)" in out


def test_a_spec_that_is_not_utf8_is_refused(write_spec, capsys, tmp_path):
    utf16 = tmp_path / "utf16.yaml"
    utf16.write_text(BASE, encoding="utf-16")
    assert "utf16.yaml: is UTF-16 text; save it as UTF-8" in refused(write_spec, capsys, utf16)
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes(("# café\n" + BASE).encode("latin-1"))
    assert (
        "latin1.yaml: is not UTF-8 text (byte 0xe9 on line 1, as latin-1 or cp1252 write it); save it as UTF-8"
        in refused(write_spec, capsys, latin1)
    )


def test_yaml_1_2_booleans_and_merge_keys(write_spec, capsys):
    experiment = load_experiment(
        write_spec(
            """
baseline:
  model: &tiny {name: tiny}
  data: {source: gsm8k, path: data/gsm8k, train_size: 20, eval_size: 5}
  rollout: {vllm: off}
  train: {learning_rate: 1e-4}
runs:
  big:
    model:
      <<: *tiny
      lora: {rank: 16}
"""
        )
    )
    assert experiment.baseline.config["rollout"]["vllm"] == "off"
    assert experiment.baseline.config["train"]["learning_rate"] == 1e-4  # YAML 1.1 would read "1e-4" as text
    assert run(experiment, "big").config["model"]["lora"]["rank"] == 16
    out = refused(write_spec, capsys, BASE + "  train: {sft: {packing: yes}}\n")
    assert "exp.yaml: baseline.train.sft.packing: 'yes' is text; allowed: true or false" in out


def test_a_key_written_twice_is_refused_but_a_merged_key_may_be_overridden(write_spec, capsys):
    out = refused(write_spec, capsys, BASE + "seeds: [0]\nseeds: [1]\n")
    assert "exp.yaml: YAML syntax error: line 6, column 1: duplicate key 'seeds'" in out
    experiment = load_experiment(
        write_spec(
            """
baseline:
  model: {name: tiny}
  data: &data {source: gsm8k, path: data/gsm8k, train_size: 20, eval_size: 5}
runs:
  small:
    data: {<<: *data, train_size: 10}
"""
        )
    )
    assert run(experiment, "small").config["data"]["train_size"] == 10


def test_an_alias_bomb_is_refused_before_it_is_expanded(write_spec, capsys):
    lines = ['a: &a ["x","x","x","x","x","x","x","x","x"]']
    for prev, name in zip("abcdefgh", "bcdefghi"):
        lines.append(f"{name}: &{name} [{','.join([f'*{prev}'] * 9)}]")
    text = "\n".join(lines) + "\n"
    assert len(text.encode()) < 1024  # 9^9 values once expanded
    out = refused(write_spec, capsys, text)
    assert f"exp.yaml: expands to more than {MAX_NODES:,} values through its aliases (&name / *name)" in out


@pytest.mark.parametrize(
    "text", ["baseline: " + "[" * 5000 + "]" * 5000, "baseline: " + "{a: " * 400 + "1" + "}" * 400]
)
def test_a_spec_nested_too_deep_is_refused(write_spec, capsys, text):
    out = refused(write_spec, capsys, text)
    assert f"exp.yaml: nests more than {MAX_DEPTH} levels deep; a spec is not that deep" in out


def test_a_cycle_of_defaults_files_is_refused(write_spec, capsys):
    write_spec("defaults: [b]\n", "a.yaml")
    write_spec("defaults: [a]\n" + BASE, "b.yaml")
    out = refused(write_spec, capsys, Path("b.yaml").resolve())
    assert "b.yaml: defaults: includes itself (a cycle of defaults files)" in out


@pytest.mark.parametrize("call", ["${oc.env:HF_TOKEN}", "${oc.env:HF_TOKEN,x}", "x-${oc.decode:'1'}", "${now:%H}"])
def test_a_spec_reads_no_environment_or_resolver(write_spec, capsys, monkeypatch, call):
    monkeypatch.setenv("HF_TOKEN", "hf_SECRETSECRET")
    out = refused(write_spec, capsys, BASE + f'  eval: {{parser: "{call}"}}\n')
    assert "hf_SECRETSECRET" not in out
    assert f"exp.yaml: baseline.eval.parser: {call!r} calls the resolver" in out
    assert (
        "a spec must mean the same on every machine, so it reads no environment variable or resolver; "
        "site settings go in profiles/ or the environment of the job" in out
    )


def test_a_grid_over_the_run_limit_is_refused_before_expansion(write_spec, capsys):
    values = list(range(1, 11))
    out = refused(
        write_spec,
        capsys,
        BASE + f"mode: grid\nseeds: {values}\nsweep: {{train.epochs: {values}, eval.seed: {list(range(300))}}}\n",
    )
    assert (
        f"exp.yaml: sweep: expands to 30,010 runs (grid: 10 x 300, 0 named runs, 10 seeds); "
        f"at most {MAX_RUNS:,} runs per experiment" in out
    )


# --- Slurm fields -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("partition", "gpu; touch pwned"),
        ("account", "proj$(id)"),
        ("qos", "normal`id`"),
        ("gpu_model", "a100 --wrap=id"),
        ("constraint", "a100'&&id&&'"),
        ("constraint", "a100&"),
        ("constraint", "[a100|h100"),
    ],
)
def test_slurm_fields_take_only_what_sbatch_accepts(write_spec, capsys, field, value):
    out = refused(write_spec, capsys, BASE + f"  resources: {{train: {{{field}: {json.dumps(value)}}}}}\n")
    assert f"exp.yaml: baseline.resources.train.{field}: {slurm_value_problem(field, value)}" in out
    assert f"{value!r} is not a Slurm" in out and "allowed:" in out


@pytest.mark.parametrize("value", ["a100", "a100&ib", "a100|h100", "[rack1*2&rack2*4]", "(a100|h100)&ib", "x,y"])
def test_slurm_constraint_expressions_are_accepted(value):
    assert slurm_value_problem("constraint", value) is None


def test_partition_lists_are_accepted():
    assert slurm_value_problem("partition", "gpu,gpu-long") is None
    assert (
        slurm_value_problem("account", "a,b")
        == "'a,b' is not a Slurm account name; allowed: letters, digits and _ . - only"
    )


def test_site_settings_are_checked_too(monkeypatch, tmp_path):
    monkeypatch.setenv("KNOBSWEEP_SLURM_SITE", str(tmp_path / "none.yaml"))
    monkeypatch.setenv("KNOBSWEEP_SLURM_ACCOUNT", "proj;id")
    with pytest.raises(SiteError) as caught:
        site_settings()
    assert str(caught.value) == (
        "$KNOBSWEEP_SLURM_ACCOUNT: account: 'proj;id' is not a Slurm account name; "
        "allowed: letters, digits and _ . - only"
    )
    monkeypatch.delenv("KNOBSWEEP_SLURM_ACCOUNT")
    site = tmp_path / "site.yaml"
    site.write_text("gpu_partition: 'gpu|id'\n")
    monkeypatch.setenv("KNOBSWEEP_SLURM_SITE", str(site))
    with pytest.raises(SpecError, match=r"site.yaml: gpu_partition: 'gpu\|id' is not a Slurm partition name"):
        site_settings()


# --- warm_start_from ------------------------------------------------------------------------------------

REAL = BASE.replace("{name: tiny}", "{name: Qwen/Qwen2.5-0.5B-Instruct}")


def adapter(directory: Path, base: str) -> Path:
    directory.mkdir(parents=True)
    (directory / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": base}))
    (directory / "adapter_model.safetensors").write_bytes(b"weights")
    return directory


def test_warm_start_from_refuses_any_other_folder_without_reading_it(write_spec, capsys):
    out = refused(write_spec, capsys, REAL + "  train: {warm_start_from: /}\n")
    assert (
        "exp.yaml: train.warm_start_from: '/' is neither a run of this experiment (runs: baseline) nor a "
        "directory holding an adapter (adapter_config.json) or a model (config.json) (run 'baseline')" in out
    )


def test_warm_start_from_checks_the_adapters_base_model(write_spec, capsys, tmp_path):
    adapter(tmp_path / "other", "meta-llama/Llama-3.2-1B")
    out = refused(write_spec, capsys, REAL + "  train: {warm_start_from: other}\n")
    assert (
        "exp.yaml: train.warm_start_from: 'other' is an adapter trained on 'meta-llama/Llama-3.2-1B' (its "
        "adapter_config.json base_model_name_or_path), but this run's model.name is 'Qwen/Qwen2.5-0.5B-Instruct'; "
        "warm-start from an adapter of the same base model" in out
    )


def test_warm_start_keys_only_the_top_level_weight_and_config_files(write_spec, tmp_path):
    directory = adapter(tmp_path / "mine", "Qwen/Qwen2.5-0.5B-Instruct")
    spec = write_spec(REAL + "  train: {warm_start_from: mine}\n")
    key = load_experiment(spec).baseline.keys.train
    (directory / "logs").mkdir()
    (directory / "logs" / "events.txt").write_text("anything below the folder")
    (directory / "README.md").write_text("notes")
    assert load_experiment(spec).baseline.keys.train == key
    (directory / "adapter_model.safetensors").write_bytes(b"new weights")
    assert load_experiment(spec).baseline.keys.train != key


# --- issue 20: what validated and failed only later inside a queued job (or worse) ---------------------


def test_a_sweep_over_the_data_source_names_its_arm_by_the_switch(write_spec):
    experiment = load_experiment(
        write_spec(
            BASE
            + """
  reward: gsm8k
sweep:
  data:
    - {source: jsonl, path: data/custom_example, prompt_key: problem, ground_truth_key: final_answer}
    - {source: jsonl, path: data/custom_example, prompt_key: problem, ground_truth_key: final_answer, train_size: 4}
"""
        )
    )
    assert [run.name for run in experiment.runs] == [
        "baseline",
        "data.source=jsonl",
        "data.source=jsonl,data.train_size=4",  # a second arm of that source: what tells it from the first
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "seeds: [100000000000000000000]",
            "seeds[0]: 100000000000000000000 is out of range; allowed: 0 <= value <= 4294967295",
        ),
        ("seeds: [0, -1]", "seeds[1]: -1 is out of range; allowed: 0 <= value <= 4294967295"),
        ("name: " + "a" * 101, "name: '" + "a" * 101 + "': String should have at most 100 characters"),
        (
            "  eval: {samples: 4}",
            "baseline.eval.samples: 4 samples per prompt at temperature 0 (greedy) are 4 identical completions: "
            "set eval.temperature above 0 to sample them, or samples: 1",
        ),
        (
            "  reward: {name: gsm8k, format_weight: 1.0}",
            "reward.format_weight: must be a number in [0, 1) (the share of the score given for writing '#### N'; "
            "at 1 a wrong answer scores as much as a right one, so correctness no longer counts), got 1.0",
        ),
        (
            "  train: {batch_size: 32}",
            "train.batch_size: 32 is more than the 20 training rows (data.train_size 20): not one step would be full",
        ),
        ("sweep:\n  data.eval_size: [5000]", "data.eval_size: 5000 is more than the 200 rows of data/gsm8k/test.jsonl"),
        (
            "sweep:\n  data.train_size: [100000]",
            "data.train_size: 100000 is more than the 1000 rows of data/gsm8k/train.jsonl",
        ),
    ],
)
def test_values_that_fail_only_in_a_job_are_refused_at_validate(write_spec, capsys, text, message):
    out = refused_with(write_spec, capsys, text + "\n")
    assert message in out, out


def test_a_model_name_that_nothing_can_load_is_refused(write_spec, capsys, tmp_path):
    out = refused(write_spec, capsys, BASE.replace("{name: tiny}", "{name: 'Qwen /Qwen2.5-0.5B'}"))
    assert "baseline.model.name: 'Qwen /Qwen2.5-0.5B' is neither `tiny`, an existing local folder, nor a hub id" in out
    (tmp_path / "my model").mkdir()  # a local folder may hold a space
    assert main(["validate", str(write_spec(BASE.replace("{name: tiny}", "{name: 'my model'}")))]) == 0


def test_a_file_stem_that_is_no_experiment_name_needs_a_name(write_spec, capsys):
    out = refused(write_spec, capsys, BASE, "my exp.yaml")
    assert "name: the file's stem 'my exp' is not an experiment name" in out and "or set name:" in out
    assert main(["validate", str(write_spec("name: mine\n" + BASE, "my exp.yaml"))]) == 0


def test_a_warm_start_from_a_run_of_another_base_model_is_refused(write_spec, capsys):
    out = refused_with(
        write_spec,
        capsys,
        "runs:\n  big: {model.name: Qwen/Qwen2.5-0.5B-Instruct}\n  chained: {train.warm_start_from: big}\n",
    )
    assert (
        "train.warm_start_from: 'big' trained model.name 'Qwen/Qwen2.5-0.5B-Instruct', but this run's model.name "
        "is 'tiny'" in out
    )


def test_parent_must_be_an_experiment_file_of_this_workflow(write_spec, capsys, tmp_path):
    (tmp_path / "README.md").write_text("# notes\n")
    out = refused(write_spec, capsys, "parent: README.md\n" + BASE)
    assert "parent: 'README.md' (" in out and "README.md) is not an experiment file (.yaml or .yml" in out
    write_spec("foo: 1\n", "settings.yaml")
    out = refused(write_spec, capsys, "parent: settings.yaml\n" + BASE)
    assert "settings.yaml) is not an experiment file: " in out and "settings.yaml: baseline: is required" in out
    # inside a workflow's folder (a Snakefile), not a file outside it
    (tmp_path / "work" / "experiments").mkdir(parents=True)
    (tmp_path / "work" / "Snakefile").write_text("")
    write_spec(BASE, "outside.yaml")
    inside = write_spec("parent: ../../outside.yaml\n" + BASE, "work/experiments/inside.yaml")
    out = refused(write_spec, capsys, inside)
    assert f"is outside this workflow's folder {(tmp_path / 'work').resolve()}" in out


def test_an_evaluator_is_never_imported_from_a_name_in_the_spec(write_spec, capsys, tmp_path):
    out = refused_with(write_spec, capsys, '  reward: {name: "os:system", command: "touch pwned"}\n')
    assert "baseline.reward.name: 'os:system' is not a known evaluator" in out
    assert "registered as a `knobsweep.evaluators` entry point of an installed package" in out
    assert not (tmp_path / "pwned").exists()


def test_a_batch_that_cannot_split_over_the_training_processes_is_refused_at_validate(write_spec, capsys):
    # 3 prompts x 3 completions = 9 sequences over 2 processes: the job would fail at VALIDATING, after its queue
    out = refused_with(
        write_spec,
        capsys,
        "  train: {method: grpo, batch_size: 3}\n  rollout: {n: 3}\n  resources: {train: {processes: 2}}\n",
    )
    assert "train.batch_size" in out and "9 completions per step cannot be split evenly over 2 processes" in out
    assert "(2 processes: resources.train)" in out
    # the same batch on one process, or 4 prompts on two, validates
    assert main(["validate", str(write_spec(BASE + "  train: {batch_size: 3}\n  rollout: {n: 3}\n", "one.yaml"))]) == 0
    two = BASE + "  train: {batch_size: 4}\n  rollout: {n: 3}\n  resources: {train: {processes: 2}}\n"
    assert main(["validate", str(write_spec(two, "two.yaml"))]) == 0

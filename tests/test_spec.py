"""The spec: expansion into runs, readable names, stable hashes, and every validation message."""

from __future__ import annotations

import pytest

from knobsweep.cli import main
from knobsweep.spec import SpecError, load_experiment
from knobsweep.spec.expand import format_value

BASE = """
baseline:
  model: {name: tiny}
  data: {source: gsm8k, path: data/gsm8k, train_size: 20, eval_size: 5}
  train: {learning_rate: 1.0e-4, loss: grpo}
  rollout: {n: 8, temperature: 0.7}
"""


MINIMAL = """
baseline:
  model: {name: tiny}
  data: {source: gsm8k, path: data/gsm8k, train_size: 20, eval_size: 5}
"""


def problems(write_spec, text):
    with pytest.raises(SpecError) as caught:
        load_experiment(write_spec(text))
    return [str(p) for p in caught.value.problems]


def test_ofat_is_baseline_plus_one_run_per_value(write_spec):
    experiment = load_experiment(
        write_spec(
            BASE
            + """
sweep:
  train.learning_rate: [5.0e-5, 2.0e-4]
  train.loss: [dapo, gspo-token]
  model.lora.rank: [16, 32]
"""
        )
    )
    assert [r.name for r in experiment.runs] == [
        "baseline",
        "learning_rate=5e-5",
        "learning_rate=2e-4",
        "loss=dapo",
        "loss=gspo-token",
        "rank=16",
        "rank=32",
    ]
    assert experiment.runs[1].changed == {"train.learning_rate": 5e-5}
    assert experiment.runs[1].config["train"]["learning_rate"] == 5e-5
    assert experiment.runs[1].config["train"]["loss"] == "grpo"  # only one knob turned
    assert experiment.baseline.name == "baseline"


def test_ofat_skips_values_equal_to_the_baseline(write_spec):
    experiment = load_experiment(
        write_spec(
            BASE
            + """
sweep:
  train.learning_rate: [0.0001, 2.0e-4]   # 0.0001 is the baseline's 1.0e-4
  rollout.n: [8]
"""
        )
    )
    assert [r.name for r in experiment.runs] == ["baseline", "learning_rate=2e-4"]


def test_grid_is_the_cartesian_product(write_spec):
    experiment = load_experiment(
        write_spec(
            BASE
            + """
mode: grid
sweep:
  train.learning_rate: [5.0e-5, 2.0e-4, 3.0e-4]
  train.loss: [dapo, gspo-token]
"""
        )
    )
    assert len(experiment.runs) == 1 + 3 * 2
    assert "learning_rate=2e-4,loss=dapo" in [r.name for r in experiment.runs]


def test_grid_cell_equal_to_the_baseline_is_the_baseline(write_spec):
    experiment = load_experiment(
        write_spec(
            BASE
            + """
mode: grid
sweep:
  train.learning_rate: [1.0e-4, 2.0e-4]
  train.loss: [grpo, dapo]
"""
        )
    )
    names = [r.name for r in experiment.runs]
    assert names == ["baseline", "loss=dapo", "learning_rate=2e-4", "learning_rate=2e-4,loss=dapo"]


def test_seeds_replicate_every_run(write_spec):
    experiment = load_experiment(
        write_spec(
            BASE
            + """
seeds: [0, 1, 2]
sweep:
  train.loss: [dapo]
"""
        )
    )
    assert len(experiment.runs) == 2 * 3
    assert experiment.baseline.name == "baseline,seed=0"
    assert {r.seed for r in experiment.runs} == {0, 1, 2}
    trains = {r.keys.train for r in experiment.runs}
    assert len(trains) == 6  # the seed feeds training


def test_shared_knob_leaves_are_named_by_full_path(write_spec):
    experiment = load_experiment(
        write_spec(
            BASE
            + """
sweep:
  rollout.temperature: [1.0]
  eval.temperature: [0.5]
"""
        )
    )
    assert [r.name for r in experiment.runs] == ["baseline", "rollout.temperature=1", "eval.temperature=0.5"]


def test_an_eval_knob_shares_the_training_job(write_spec):
    experiment = load_experiment(
        write_spec(
            BASE
            + """
sweep:
  eval.max_tokens: [64]
  train.learning_rate: [2.0e-4]
"""
        )
    )
    baseline, eval_arm, lr_arm = experiment.runs
    assert eval_arm.keys.train == baseline.keys.train
    assert eval_arm.keys.eval != baseline.keys.eval
    assert eval_arm.keys.base_eval != baseline.keys.base_eval
    assert lr_arm.keys.train != baseline.keys.train
    assert lr_arm.keys.base_eval == baseline.keys.base_eval  # same base model, same eval config
    assert len({r.keys.data for r in experiment.runs}) == 1


def test_hashes_ignore_key_order_and_equivalent_spellings(write_spec):
    first = load_experiment(write_spec(BASE, "a.yaml"))
    second = load_experiment(
        write_spec(
            """
baseline:
  rollout: {temperature: 0.70, n: 8.0}
  train: {loss: grpo, learning_rate: 0.0001}
  data: {eval_size: 5, train_size: 20, path: data/gsm8k, source: gsm8k}
  model: {name: tiny}
  reward: gsm8k            # shorthand for {name: gsm8k} with default options
""",
            "b.yaml",
        )
    )
    assert first.baseline.keys == second.baseline.keys
    # and a resources change never invalidates results
    third = load_experiment(write_spec(BASE + "  resources: {train: {mem_mb: 1234}}\n", "c.yaml"))
    assert third.baseline.keys == first.baseline.keys


def test_hashes_change_with_the_data_file_contents(write_spec, tmp_path):
    (tmp_path / "mydata").mkdir()
    for split in ("train", "test"):
        (tmp_path / "mydata" / f"{split}.jsonl").write_text('{"question": "q", "answer": "#### 1"}\n' * 20)
    spec = BASE.replace("path: data/gsm8k", "path: ./mydata")
    before = load_experiment(write_spec(spec)).baseline.keys
    (tmp_path / "mydata" / "train.jsonl").write_text('{"question": "q", "answer": "#### 2"}\n' * 20)
    after = load_experiment(write_spec(spec)).baseline.keys
    assert before.data != after.data and before.train != after.train


def test_defaults_and_interpolation(write_spec):
    write_spec(
        """
baseline:
  model: {name: tiny}
  data: {source: gsm8k, path: data/gsm8k, train_size: 20}
  train: {learning_rate: 2.0e-4}
""",
        "base.yaml",
    )
    experiment = load_experiment(
        write_spec("""
defaults: [base]
baseline:
  train: {epochs: 2}
  eval: {max_tokens: "${baseline.rollout.max_tokens}"}
  rollout: {max_tokens: 64}
""")
    )
    config = experiment.baseline.config
    assert config["train"]["learning_rate"] == 2e-4 and config["train"]["epochs"] == 2
    assert config["eval"]["max_tokens"] == 64
    assert experiment.name == "exp"


@pytest.mark.parametrize(
    "text, expected",
    [
        (
            "  train: {learning_rate: 0.1}",
            "baseline.train.learning_rate: 0.1 is out of range; allowed: 1e-07 <= value <= 0.0005 (run 'baseline')",
        ),
        ("  train: {epochs: 11}", "baseline.train.epochs: 11 is out of range; allowed: 1 <= value <= 10"),
        ("  train: {epochs: 1.5}", "baseline.train.epochs: 1.5: Input should be a valid integer"),
        (
            "  rollout: {temperature: 0}",
            "baseline.rollout.temperature: 0 is out of range; allowed: 0.1 <= value <= 2.0",
        ),
        ("  rollout: {temperature: 2.5}", "baseline.rollout.temperature: 2.5 is out of range"),
        ("  rollout: {top_p: 1.5}", "baseline.rollout.top_p: 1.5 is out of range; allowed: 0.0 < value <= 1.0"),
        ("  rollout: {top_k: 101}", "baseline.rollout.top_k: 101 is out of range; allowed: 0 <= value <= 100"),
        ("  rollout: {n: 1}", "baseline.rollout.n: 1 is out of range; allowed: 2 <= value <= 256"),
        ("  rollout: {max_tokens: 8}", "baseline.rollout.max_tokens: 8 is out of range; allowed: 16 <= value <= 16384"),
        ("  rollout: {max_tokens: 20000}", "baseline.rollout.max_tokens: 20000 is out of range"),
        (
            "  rollout: {extra_body: '{bad json'}",
            "baseline.rollout.extra_body: '{bad json' must be a mapping or valid JSON text",
        ),
        ("  rollout: {extra_body: '[1, 2]'}", "baseline.rollout.extra_body: '[1, 2]' JSON text must hold a mapping"),
        (
            "  train: {loss: dapo, kl_beta: 0.01}",
            "baseline.train.kl_beta: 0.01: kl_beta must be 0/unset when loss is dapo",
        ),
        ("  train: {loss: gspo-token, kl_beta: 0.01}", "kl_beta must be 0/unset when loss is gspo-token"),
        ("  train: {loss: ppo}", "baseline.train.loss: 'ppo' is not allowed; allowed: 'grpo', 'dapo' or 'gspo-token'"),
        (
            "  train: {learnig_rate: 1.0e-4}",
            "baseline.train.learnig_rate: unknown key 'learnig_rate' (did you mean 'learning_rate'?)",
        ),
        ("  eval: {backend: vlm}", "baseline.eval.backend: 'vlm' is not allowed; allowed: 'auto', 'hf' or 'vllm'"),
    ],
)
def test_each_rule_names_path_value_and_what_is_allowed(write_spec, text, expected):
    found = problems(write_spec, MINIMAL + text)
    assert any(expected in p for p in found), found
    assert all("exp.yaml: " in p for p in found)


@pytest.mark.parametrize("rank", [2, 12, 256])
def test_lora_rank_is_a_power_of_two(write_spec, rank):
    found = problems(write_spec, MINIMAL.replace("{name: tiny}", f"{{name: tiny, lora: {{rank: {rank}}}}}"))
    assert any(f"baseline.model.lora.rank: {rank} must be a power of two in 4..128" in p for p in found), found


def test_zero_kl_beta_is_fine_with_dapo(write_spec):
    experiment = load_experiment(write_spec(MINIMAL + "  train: {loss: dapo, kl_beta: 0}"))
    assert experiment.baseline.config["train"]["kl_beta"] == 0


def test_extra_body_accepts_json_text(write_spec):
    experiment = load_experiment(
        write_spec(BASE.replace("temperature: 0.7}", """temperature: 0.7, extra_body: '{"stop": ["###"]}'}"""))
    )
    assert experiment.baseline.config["rollout"]["extra_body"] == {"stop": ["###"]}


def test_sweep_value_errors_name_the_sweep_entry_and_the_run(write_spec):
    found = problems(
        write_spec,
        BASE
        + """
sweep:
  train.learning_rate: [2.0e-4, 0.5]
  rollout.n: [4, four]
""",
    )
    assert any(
        p.endswith(
            "exp.yaml: sweep.train.learning_rate[1]: 0.5 is out of range; allowed: "
            "1e-07 <= value <= 0.0005 (run 'learning_rate=0.5')"
        )
        for p in found
    ), found
    assert any(
        "sweep.rollout.n[1]: 'four': Input should be a valid integer" in p and "(run 'n=four')" in p for p in found
    ), found


def test_unknown_sweep_knob_suggests_the_closest(write_spec):
    found = problems(
        write_spec,
        BASE
        + """
sweep:
  train.learnig_rate: [2.0e-4]
  rollout.temprature: [1.0]
""",
    )
    assert any(
        "sweep.train.learnig_rate: unknown knob 'train.learnig_rate' (did you mean 'train.learning_rate'?)" in p
        for p in found
    ), found
    assert any("did you mean 'rollout.temperature'?" in p for p in found), found


def test_free_mapping_knobs_accept_any_subkey(write_spec):
    experiment = load_experiment(
        write_spec(
            BASE
            + """
sweep:
  rollout.extra_body.repetition_penalty: [1.1]
"""
        )
    )
    assert experiment.runs[1].config["rollout"]["extra_body"] == {"repetition_penalty": 1.1}


def test_unknown_trl_field_names_the_closest_field(write_spec):
    found = problems(write_spec, MINIMAL + "  train: {trl: {max_step: 3}}")
    assert any(
        "train.trl.max_step: not a GRPOConfig field in TRL " in p and "(did you mean 'max_steps'?)" in p for p in found
    ), found


def test_yaml_syntax_error_names_the_line(write_spec):
    found = problems(write_spec, "baseline:\n  model: {name: tiny\n  data: [\n")
    assert len(found) == 1 and "exp.yaml: YAML syntax error: line 3" in found[0], found


def test_duplicate_keys_are_an_error(write_spec):
    found = problems(write_spec, BASE + "  rollout: {n: 4}\n")
    assert len(found) == 1 and "duplicate key 'rollout'" in found[0] and "line " in found[0], found


def test_missing_required_model(write_spec):
    found = problems(write_spec, "baseline:\n  data: {path: data/gsm8k}\n")
    assert any("baseline.model: is required but missing" in p for p in found), found


def test_missing_local_data_is_an_error(write_spec):
    found = problems(write_spec, BASE.replace("path: data/gsm8k", "path: ./nowhere"))
    assert any("exp.yaml: data.path: './nowhere': no such directory" in p and "(run 'baseline')" in p for p in found), (
        found
    )


def test_reserved_experiment_names(write_spec):
    found = problems(write_spec, "name: train\n" + BASE)
    assert any("name: 'train' is reserved" in p for p in found), found


@pytest.mark.parametrize(
    "value, text",
    [
        (2e-4, "2e-4"),
        (5e-5, "5e-5"),
        (0.7, "0.7"),
        (16, "16"),
        ("dapo", "dapo"),
        (True, "true"),
        (1.0, "1"),
        (["a"], '["a"]'),
    ],
)
def test_value_formatting(value, text):
    assert format_value(value) == text


def test_validate_cli_exit_codes(write_spec, capsys):
    good = write_spec(BASE, "good.yaml")
    bad = write_spec(MINIMAL + "  train: {epochs: 0}", "bad.yaml")
    assert main(["validate", str(good)]) == 0
    assert main(["validate", str(good), str(bad)]) == 1
    out = capsys.readouterr().out
    assert "ok " in out and "bad.yaml: baseline.train.epochs: 0 is out of range" in out


def test_committed_json_schema_is_current(capsys):
    from conftest import REPO

    assert main(["schema", "--out", "-"]) == 0
    assert capsys.readouterr().out == (REPO / "workflow" / "schemas" / "experiment.schema.json").read_text(), (
        "run `make schema` and commit workflow/schemas/experiment.schema.json"
    )


def test_loading_every_experiment_imports_no_heavy_library():
    # Snakemake loads the spec in every job: keying the data (input_fingerprint) must not import pyarrow,
    # and validating must not import torch or pandas (measure: python -X importtime -c 'import knobsweep.spec').
    import subprocess
    import sys

    from conftest import REPO

    script = (
        "import sys, glob; from knobsweep.spec import load_experiment; "
        "[load_experiment(f) for f in sorted(glob.glob('experiments/*.yaml'))]; "
        "print(sorted(m for m in ('pyarrow', 'pandas', 'torch', 'transformers', 'trl') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "[]"

"""`knobsweep plan --why`: why each stage runs, against what the run name last ran; arms equal to the baseline.
On a real finished sweep: tests/test_workflow.py (an edited eval knob)."""

from __future__ import annotations

import json

import pytest
import yaml

from knobsweep import layout, runlinks
from knobsweep.cli import main
from knobsweep.data import convert_to_dir
from knobsweep.spec import load_experiment
from knobsweep.spec.experiment import evaluation_config, train_config
from knobsweep.spec.schema import EvalJob, TrainJob
from knobsweep.why import changed_fields

SPEC = """
baseline:
  model: {name: tiny}
  data: {source: gsm8k, path: data/gsm8k, train_size: 8, eval_size: 4}
  train: {batch_size: 4, learning_rate: 1.0e-4}
sweep:
  eval.max_tokens: [20]
"""


def ran(run, root, stages=("data", "train", "merge", "eval", "base_eval")) -> None:
    """The stage folders `run` leaves, with the resolved configs the real stages record in them."""
    keys = run.keys
    if "data" in stages and not layout.path(layout.DATA_DIR, root, key=keys.data).exists():
        convert_to_dir(run.config["data"], layout.path(layout.DATA_DIR, root, key=keys.data))
        layout.path(layout.TINY_MODEL, root, key=keys.model).mkdir(parents=True, exist_ok=True)
    if "train" in stages:
        train = layout.path(layout.TRAIN_DIR, root, key=keys.train)
        (train / layout.ADAPTER).mkdir(parents=True, exist_ok=True)
        job = TrainJob.model_validate(train_config(run.config)).model_dump(mode="json")
        (train / layout.RUN_CONFIG).write_text(yaml.safe_dump(job, sort_keys=False))
    if "merge" in stages:
        layout.path(layout.MERGE_DIR, root, key=keys.train).mkdir(parents=True, exist_ok=True)
    config = EvalJob.model_validate(evaluation_config(run.config)).model_dump(mode="json")
    for stage, key, model in (
        ("eval", keys.eval, layout.MERGE_DIR.format(key=keys.train)),
        ("base_eval", keys.base_eval, layout.TINY_MODEL.format(key=keys.model)),
    ):
        if stage in stages:
            summary = layout.path(layout.EVAL_SUMMARY, root, key=key)
            summary.parent.mkdir(parents=True, exist_ok=True)
            summary.write_text(json.dumps({"config": config, "model": model}))
            layout.path(layout.EVAL_SAMPLES, root, key=key).write_text("")


def all_ran(write_spec, root):
    """SPEC with every stage of every run done, and the run links refreshed (which records them)."""
    experiment = load_experiment(write_spec(SPEC))
    for run in experiment.runs:
        ran(run, root)
    runlinks.refresh([experiment], root)
    return experiment


def plan_why(spec, capsys) -> list[str]:
    assert main(["plan", str(spec), "--why"]) == 0
    out = capsys.readouterr().out
    return [line.strip() for line in out.split("why each stage will run:\n", 1)[1].splitlines()]


def test_changed_fields_names_each_leaf_old_to_new():
    old = {"train": {"learning_rate": 1e-4, "kto": {"beta": 0.1}}, "seed": 1, "gone": [1]}
    new = {"train": {"learning_rate": 0.0002, "kto": {"beta": 0.1}}, "seed": 1.0, "added": {"x": None}}
    assert changed_fields(old, new) == [
        "train.learning_rate 1e-4 -> 2e-4",
        "added.x unset -> null",
        "gone [1] -> unset",
    ]
    assert changed_fields({"n": 8}, {"n": 8.0}, "rollout") == []  # the same value written differently


def test_a_job_shared_by_many_runs_names_the_first_five(write_spec, capsys):
    spec = write_spec(SPEC.replace("[20]", "[20, 24, 28, 32, 36, 40]") + "  train.epochs: [2]\n")
    assert (
        "train (shared by baseline, max_tokens=20, max_tokens=24, max_tokens=28, max_tokens=32 and 2 more): "
        in (plan_why(spec, capsys))[1]
    )


def test_a_never_run_experiment_says_no_previous_result(write_spec, capsys):
    lines = plan_why(write_spec(SPEC), capsys)
    assert lines == [
        "data (shared by all 2 runs): no previous result",
        "train (shared by all 2 runs): no previous result",
        "merge (shared by all 2 runs): follows its training",
        "eval (baseline): no previous result",
        "eval (max_tokens=20): no previous result",
        "eval of the base model (baseline): no previous result",
        "eval of the base model (max_tokens=20): no previous result",
    ]


def test_an_edited_knob_is_named_with_its_old_and_new_value(write_spec, tmp_path, capsys):
    experiment = all_ran(write_spec, tmp_path)
    assert main(["plan", str(experiment.path), "--why"]) == 0
    assert "why: every stage is cached" in capsys.readouterr().out

    # the links follow the edited spec (a workflow started, say): the record still names what ran
    edited = write_spec(SPEC.replace("learning_rate: 1.0e-4", "learning_rate: 2.0e-4, epochs: 2"))
    runlinks.refresh([load_experiment(edited)], tmp_path)
    assert plan_why(edited, capsys) == [
        "train (shared by all 2 runs): train.learning_rate 1e-4 -> 2e-4, train.epochs 1 -> 2",
        "merge (shared by all 2 runs): follows its training",
        "eval (baseline): its model is retrained",
        "eval (max_tokens=20): its model is retrained",
    ]


def test_eval_and_data_changes_name_their_fields_and_the_runs_sharing_the_job(write_spec, tmp_path, capsys):
    all_ran(write_spec, tmp_path)
    edited = write_spec(SPEC.replace("eval_size: 4", "eval_size: 3").replace("[20]", "[20, 24]"))
    assert plan_why(edited, capsys)[:3] == [
        "data (shared by all 3 runs): data.eval_size 4 -> 3 [baseline, max_tokens=20]; no previous result "
        "[max_tokens=24]",
        "train (shared by all 3 runs): its data changed [baseline, max_tokens=20]; no previous result [max_tokens=24]",
        "merge (shared by all 3 runs): follows its training",
    ]
    edited = write_spec(SPEC.replace("  train:", "  eval: {max_tokens: 24, samples: 2, temperature: 1}\n  train:"))
    assert plan_why(edited, capsys) == [
        "eval (baseline): eval.temperature 0 -> 1, eval.max_tokens 512 -> 24, eval.samples 1 -> 2",
        "eval (max_tokens=20): eval.temperature 0 -> 1, eval.samples 1 -> 2",
        "eval of the base model (baseline): eval.temperature 0 -> 1, eval.max_tokens 512 -> 24, eval.samples 1 -> 2",
        "eval of the base model (max_tokens=20): eval.temperature 0 -> 1, eval.samples 1 -> 2",
    ]


def test_a_failed_attempt_of_the_same_configuration_says_how_it_ended(write_spec, tmp_path, capsys):
    experiment = load_experiment(write_spec(SPEC))
    for run in experiment.runs:
        ran(run, tmp_path, stages=("data", "base_eval"))
    train = layout.path(layout.TRAIN_DIR, tmp_path, key=experiment.baseline.keys.train)
    train.mkdir(parents=True)
    (train / layout.RUN_CONFIG).write_text("{}")
    (train / layout.STATUS).write_text(json.dumps({"state": "FAILED", "reason": "CUDA out of memory"}))
    runlinks.refresh([experiment], tmp_path)
    assert plan_why(experiment.path, capsys)[0] == (
        "train (shared by all 2 runs): same configuration as its last attempt, which ended FAILED: CUDA out of memory"
    )


def test_without_a_record_the_run_links_name_what_ran(write_spec, tmp_path, capsys):
    # results from before runs/.last-ran.json existed: the links still point at what ran
    all_ran(write_spec, tmp_path)
    record = tmp_path / "results" / "exp" / "runs" / runlinks.LAST_RAN
    assert set(json.loads(record.read_text())["baseline"]) == {"data", "train", "eval", "base_eval"}
    record.unlink()
    edited = write_spec(SPEC.replace("learning_rate: 1.0e-4", "learning_rate: 3.0e-4"))
    assert plan_why(edited, capsys)[0] == "train (shared by all 2 runs): train.learning_rate 1e-4 -> 3e-4"


def test_an_unreadable_record_is_named_and_exits_1(write_spec, tmp_path, capsys):
    spec = write_spec(SPEC)
    record = tmp_path / "results" / "exp" / "runs" / runlinks.LAST_RAN
    record.parent.mkdir(parents=True)
    record.write_text("{not json")
    assert main(["plan", str(spec), "--why"]) == 1
    out = capsys.readouterr().out
    assert (
        "error results/exp/runs/.last-ran.json: cannot be read (Expecting property name enclosed in double quotes: "
        "line 1 column 2 (char 1))\n"
    ) in out
    assert "Traceback" not in out


@pytest.mark.parametrize(
    ("sweep", "where", "arm"),
    [
        ("train.learning_rate: [0.0001, 2.0e-4]", "sweep.train.learning_rate[0]", "learning_rate=1e-4"),
        ("train.epochs: [1]", "sweep.train.epochs[0]", "epochs=1"),  # the default, written out
    ],
)
def test_an_arm_equal_to_the_baseline_after_defaults_is_flagged(write_spec, capsys, sweep, where, arm):
    spec = write_spec(SPEC.replace("eval.max_tokens: [20]", sweep))
    warning = f"warning {spec}: {where}: arm {arm} equals the baseline after defaults: same stages, nothing new to run"
    assert main(["validate", str(spec)]) == 0
    assert warning in capsys.readouterr().out
    assert main(["plan", str(spec)]) == 0
    assert warning in capsys.readouterr().out
    assert [run.name for run in load_experiment(spec).runs][0] == "baseline"


def test_named_runs_equal_to_the_baseline_are_flagged_and_a_grids_baseline_cell_is_not(write_spec):
    # (a sweep value repeated within its knob, 2 and 2.0, is refused: tests/test_spec_hardening.py)
    spec = write_spec(SPEC + "runs:\n  same: {train.learning_rate: 0.0001}\n")
    experiment = load_experiment(spec)
    assert [str(w) for w in experiment.warnings] == [
        f"{spec}: runs.same: run same equals the baseline after defaults: it shares its stages",
    ]
    same = next(run for run in experiment.runs if run.name == "same")
    assert same.keys == experiment.baseline.keys
    # a grid crossing the baseline's own values: its baseline cell is no mistake
    grid = write_spec(SPEC.replace("[20]", "[512, 20]") + "  train.learning_rate: [0.0001, 2.0e-4]\nmode: grid\n")
    experiment = load_experiment(grid)
    assert not experiment.warnings
    assert [run.name for run in experiment.runs] == [
        "baseline",
        "learning_rate=2e-4",
        "max_tokens=20",
        "max_tokens=20,learning_rate=2e-4",
    ]

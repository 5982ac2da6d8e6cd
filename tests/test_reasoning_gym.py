"""data.source reasoning_gym (reasoning-gym's generators), its evaluator (reasoning-gym's scorers) and the tasks
exported from it for lm-eval."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from knobsweep.benchmarks.export import export_task
from knobsweep.data import convert_to_dir
from knobsweep.errors import SpecError
from knobsweep.rewards import get_evaluator
from knobsweep.spec import load_experiment
from knobsweep.spec.sources import read_options

MIXTURE = {
    "source": "reasoning_gym",
    "tasks": [
        {"name": "leg_counting", "config": {"min_animals": 1, "max_animals": 2, "max_instances": 3}},
        {"name": "basic_arithmetic", "weight": 2, "config": {"max_terms": 2, "max_digits": 1}},
    ],
    "train_size": 30,
    "eval_size": 12,
}

SPEC = """
baseline:
  model: {name: tiny}
  data: %s
  train: {batch_size: 2}
  rollout: {n: 4, max_tokens: 16}
"""


def data_error(write_spec, data: str) -> str:
    with pytest.raises(SpecError) as error:
        load_experiment(write_spec(SPEC % data))
    return str(error.value)


def test_options_name_the_bad_task_or_config(write_spec):
    assert "'leg_countin' is not a reasoning-gym dataset (did you mean 'leg_counting'" in data_error(
        write_spec, "{source: reasoning_gym, tasks: [leg_countin]}"
    )
    message = data_error(write_spec, "{source: reasoning_gym, tasks: [{name: leg_counting, config: {legs: 3}}]}")
    assert "data.tasks[0].config" in message and "leg_counting refuses" in message
    message = data_error(write_spec, "{source: reasoning_gym, tasks: [leg_counting], seed: 0, eval_seed: 100}")
    assert "data.eval_seed" in message and "overlap the train rows' 0..199" in message


def test_the_default_evaluator_is_reasoning_gyms(write_spec):
    run = load_experiment(write_spec(SPEC % "{source: reasoning_gym, tasks: [leg_counting]}")).baseline
    assert run.config["reward"] == {"name": "reasoning_gym", "tag": "answer", "format_weight": 0}
    assert run.config["data"]["eval_seed"] == 1_000_000


def test_rows_are_shared_by_weight():
    options = read_options({**MIXTURE, "format": "rl"})
    assert options.per_task(30) == [10, 20] and options.per_task(12) == [4, 8] and options.per_task(2) == [1, 1]


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("rg") / "data"
    convert_to_dir(MIXTURE, out)
    return out


def test_the_same_spec_gives_byte_identical_files(converted, tmp_path):
    convert_to_dir(MIXTURE, tmp_path / "again")
    for name in ("train.parquet", "eval.parquet", "manifest.json"):
        assert (converted / name).read_bytes() == (tmp_path / "again" / name).read_bytes(), name


def test_train_and_eval_come_from_disjoint_seeds_and_questions(converted):
    train = pq.read_table(converted / "train.parquet").to_pylist()
    evaluation = pq.read_table(converted / "eval.parquet").to_pylist()
    manifest = json.loads((converted / "manifest.json").read_text())
    assert {r["task_seed"] for r in train}.isdisjoint({r["task_seed"] for r in evaluation})
    questions = {(r["task"], r["prompt"][-1]["content"]) for r in train}
    assert not any((r["task"], r["prompt"][-1]["content"]) in questions for r in evaluation)
    # a tiny leg-counting space repeats questions: those eval rows are dropped and listed
    assert len(evaluation) + len(manifest["dropped"]) == 12 and manifest["dropped"]
    assert manifest["inputs"] == {"reasoning_gym": "reasoning-gym==0.1.25"}
    assert manifest["stats"]["tasks"]["basic_arithmetic"]["train"] == 20
    assert manifest["stats"]["tasks"]["leg_counting"]["eval_seeds"] == [1_000_000, 1_000_003]
    assert manifest["options"]["tasks"][0]["config"] == MIXTURE["tasks"][0]["config"]
    assert train[0]["prompt"][0]["role"] == "system" and "<answer>" in train[0]["prompt"][0]["content"]


def test_a_mixture_scores_each_row_with_its_own_tasks_scorer(converted):
    evaluator = get_evaluator({"name": "reasoning_gym", "format_weight": 0.5})
    rows = pq.read_table(converted / "eval.parquet").to_pylist()
    for row in rows:
        right = evaluator(row["answer"], row)  # the reference completion <answer>ANSWER</answer>
        assert right.score == 1.0 and right.metrics == {"answered": 1.0, "correct": 1.0, f"task/{row['task']}": 1.0}
        wrong = evaluator("<answer>banana</answer>", row)
        assert wrong.score == 0.5 and wrong.metrics["answered"] == 1.0 and wrong.metrics["correct"] == 0.0
        assert evaluator("no tags", row).score == 0.0
    # the same answer text is right under one row's task and wrong under another's
    legs = next(r for r in rows if r["task"] == "leg_counting")
    sums = next(r for r in rows if r["task"] == "basic_arithmetic" and r["ground_truth"] != legs["ground_truth"])
    assert evaluator(legs["answer"], sums).metrics["correct"] == 0.0
    with pytest.raises(ValueError, match="no reasoning-gym task and entry"):
        evaluator("<answer>1</answer>", {"row_id": "x", "ground_truth": "1"})


def test_an_exported_task_is_an_lm_eval_task_that_scores_like_the_reward(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    first = export_task("leg_counting", 5, 2_000_000, "tasks/rg")
    before = {p.name: p.read_bytes() for p in first.parent.iterdir()}
    export_task("leg_counting", 5, 2_000_000, "tasks/rg")
    assert {p.name: p.read_bytes() for p in first.parent.iterdir()} == before  # same arguments, same bytes
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_path="tasks", include_defaults=False)
    task = manager.load(["rg_leg_counting"])["tasks"]["rg_leg_counting"]
    docs = list(task.test_docs())
    assert len(docs) == 5
    right = task.process_results(docs[0], [f"<answer>{docs[0]['answer']}</answer>"])
    assert right == {"score": 1.0, "answered": 1.0}
    assert task.process_results(docs[0], ["no answer"]) == {"score": 0.0, "answered": 0.0}


def test_the_report_shows_each_tasks_reward_and_eval(write_spec, tmp_path):
    from knobsweep import layout
    from knobsweep.report.tasks import task_rows

    run = load_experiment(write_spec(SPEC % "{source: reasoning_gym, tasks: [leg_counting]}")).baseline
    metrics = layout.path(layout.TRAIN_METRICS, tmp_path, key=run.keys.train)
    metrics.parent.mkdir(parents=True)
    steps = [{"step": s, "reward": 0.1 * s, "reward/task/leg_counting": 0.1 * s} for s in range(1, 11)]
    metrics.write_text("".join(json.dumps(step) + "\n" for step in steps))
    for key, score in ((run.keys.eval, 0.75), (run.keys.base_eval, 0.0)):
        summary = layout.path(layout.EVAL_SUMMARY, tmp_path, key=key)
        summary.parent.mkdir(parents=True)
        summary.write_text(json.dumps({"score": score, "parts": {"answered": 1.0, "task/leg_counting": score}}))
    rows = task_rows(load_experiment(write_spec(SPEC % "{source: reasoning_gym, tasks: [leg_counting]}")), tmp_path)
    assert rows == [
        {"run": "base model", "task": "leg_counting", "final_reward": None, "eval_score": 0.0},
        {"run": "baseline", "task": "leg_counting", "final_reward": pytest.approx(1.0), "eval_score": 0.75},
    ]

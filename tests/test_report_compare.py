"""`knobsweep compare A.yaml B.yaml`: two experiments' runs in one report, against A's baseline."""

from __future__ import annotations

import json

import pytest
from test_report import write_eval, write_train

from knobsweep.cli import main
from knobsweep.dotted import config_diff
from knobsweep.report.compare import combine
from knobsweep.spec import load_experiment

FIRST = """
baseline:
  model: {name: tiny}
  data: {source: gsm8k, path: data/gsm8k, train_size: 20, eval_size: 5}
  train: {batch_size: 2}
  rollout: {n: 8, temperature: 0.7}
sweep:
  train.learning_rate: [2.0e-4]
"""
SECOND = FIRST.replace("temperature: 0.7", "temperature: 1.0").replace(
    "train.learning_rate: [2.0e-4]", "rollout.n: [4]"
)


def test_config_diff_lists_each_differing_leaf_but_never_resources():
    reference = {
        "train": {"lr": 1, "trl": {}},
        "rollout": {"n": 8, "stop": ["a"]},
        "seed": 0,
        "resources": {"train": {"gpus": 1}},
    }
    config = {
        "train": {"lr": 2, "trl": {"x": 1}},
        "rollout": {"n": 8, "stop": ["b"]},
        "seed": 0,
        "resources": {"train": {"gpus": 4}},
    }
    assert config_diff(reference, config) == {
        "train.lr": (1, 2),
        "train.trl.x": (None, 1),
        "rollout.stop": (["a"], ["b"]),
    }
    assert config_diff(reference, reference) == {}


def test_compare_puts_both_experiments_in_one_report(write_spec, tmp_path, capsys):
    first, second = write_spec(FIRST, "first.yaml"), write_spec(SECOND, "second.yaml")
    experiments = [load_experiment(first), load_experiment(second)]
    scores = iter([0.4, 0.5, 0.3, 0.6])
    for experiment in experiments:
        for run in experiment.runs:
            write_train(tmp_path, run, [0.1, 0.2, 0.3])
            write_eval(tmp_path, run.keys.eval, next(scores))
            write_eval(tmp_path, run.keys.base_eval, 0.1)
    assert main(["compare", str(first), str(second)]) == 0
    out = capsys.readouterr().out
    assert "results/first-vs-second/report.html" in out
    summary = json.loads((tmp_path / "results/first-vs-second/summary.json").read_text())
    rows = {row["run"]: row for row in summary["rows"] if not row.get("reference")}
    assert set(rows) == {"first/baseline", "first/learning_rate=2e-4", "second/baseline", "second/n=4"}
    # The second file's runs are described against the first's baseline.
    assert rows["second/baseline"]["changed"] == "rollout.temperature=1"
    assert rows["second/n=4"]["changed"] == "rollout.n=4, rollout.temperature=1"
    assert rows["first/learning_rate=2e-4"]["changed"] == "train.learning_rate=2e-4"
    assert summary["baseline"] == "first/baseline"
    # Deltas are against the first experiment's baseline (eval score 0.4).
    assert rows["second/n=4"]["delta_eval_score"] == pytest.approx(0.6 - 0.4)
    assert rows["second/baseline"]["delta_eval_score"] == pytest.approx(0.3 - 0.4)
    page = (tmp_path / "results/first-vs-second/report.html").read_text()
    assert "second/n=4" in page and "first.yaml + " in page


def test_comparing_an_experiment_with_itself_is_refused(write_spec):
    experiment = load_experiment(write_spec(FIRST, "first.yaml"))
    with pytest.raises(ValueError, match="both files are experiment 'first'"):
        combine(experiment, experiment)

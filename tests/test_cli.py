"""`knobsweep plan|status|report` read the same paths the Snakemake rules write."""

from __future__ import annotations

import json

from conftest import finish_stages

from knobsweep import layout
from knobsweep.cli import main
from knobsweep.spec import load_experiment

SPEC = """
baseline:
  model: {name: tiny}
  data: {source: gsm8k, path: data/gsm8k, train_size: 20, eval_size: 5}
sweep:
  train.learning_rate: [2.0e-4]
  eval.max_tokens: [64]
"""


def test_plan_marks_each_stage_cached_or_to_run(write_spec, tmp_path, capsys):
    spec = write_spec(SPEC)
    assert main(["plan", str(spec)]) == 0
    out = capsys.readouterr().out
    table = out.split("base model")[0]
    assert table.count("will run") == 3 * 4 and "cached" not in table
    # The baseline's training finished (its adapter is there, and the data and tiny model it read): the
    # eval-only arm shares it, so both show it cached.
    baseline = load_experiment(spec).baseline
    finish_stages(tmp_path, baseline, ("data", "tiny", "train"))
    assert main(["plan", str(spec)]) == 0
    rows = {line.split("│")[1].strip(): line for line in capsys.readouterr().out.splitlines() if line.startswith("│")}
    assert rows["baseline"].split("│")[5].strip() == "cached"
    assert rows["max_tokens=64"].split("│")[5].strip() == "cached"
    assert rows["learning_rate=2e-4"].split("│")[5].strip() == "will run"


def test_status_reads_status_and_metrics(write_spec, tmp_path, capsys):
    spec = write_spec(SPEC)
    baseline = load_experiment(spec).baseline
    train_dir = layout.path(layout.TRAIN_DIR, tmp_path, key=baseline.keys.train)
    train_dir.mkdir(parents=True)
    (train_dir / "status.json").write_text(json.dumps({"state": "RUNNING", "step": 7}))
    # the trainer is mid-write: the torn last line is not a step yet
    (train_dir / "metrics.jsonl").write_text('{"step": 7, "reward": 0.25, "elapsed_s": 12.4}\n{"step": 8, "rew')
    assert main(["status", str(spec)]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if "baseline" in line]
    assert "RUNNING" in lines[0] and "0.250" in lines[0] and "12" in lines[0]


def test_plan_of_a_bad_file_exits_1_with_the_problem(write_spec, capsys):
    spec = write_spec(SPEC + "  rollout.n: [1]\n")
    try:
        main(["plan", str(spec)])
    except SystemExit as exit_:
        assert exit_.code == 1
    assert "sweep.rollout.n[0]: 1 is out of range; allowed: 2 <= value <= 256" in capsys.readouterr().out


def test_report_command_builds_the_report_without_snakemake(write_spec, tmp_path, capsys):
    spec = write_spec(SPEC)
    assert main(["report", str(spec)]) == 0
    html = (tmp_path / "results" / "exp" / "report.html").read_text()
    assert "learning_rate=2e-4" in html and "not run" in html.lower()


def test_user_text_that_looks_like_rich_markup_is_printed_as_it_is(write_spec, tmp_path, capsys):
    # a knob value, hence a run name, and a bad path holding rich's closing-tag syntax
    spec = write_spec(SPEC + '  rollout.extra_body: [{stop: "[/INST]"}]\n')
    arm = next(run for run in load_experiment(spec).runs if "extra_body" in run.name)
    train_dir = layout.path(layout.TRAIN_DIR, tmp_path, key=arm.keys.train)
    train_dir.mkdir(parents=True)
    (train_dir / "status.json").write_text(json.dumps({"state": "FAILED", "reason": "ValueError: [bold]x[/bold] [/]"}))
    assert main(["validate", str(spec)]) == 0
    assert main(["plan", str(spec)]) == 0
    assert main(["status", str(spec)]) == 0
    out = capsys.readouterr().out
    assert out.count('extra_body={"stop":"[/INST]"}') == 2 and "ValueError: [bold]x[/bold] [/]" in out
    bad = write_spec(SPEC.replace("path: data/gsm8k", "path: 'data/[/INST]'"), name="bad.yaml")
    assert main(["validate", str(bad)]) == 1
    assert "data/[/INST]" in capsys.readouterr().out

"""One reading of a run's files (knobsweep.runfiles): status, suggest, report and next on what a crash, a
full disk or a hand edit leaves: each works with a warning naming the file and line, or stops with one
line that names it; never a traceback, never a number the file does not hold."""

from __future__ import annotations

import json
import math

import pytest
from conftest import finish_stages
from test_loop import HEALTHY, SPEC, write_results

from knobsweep import layout
from knobsweep.cli import main
from knobsweep.runfiles import read_metrics, read_status
from knobsweep.spec import load_experiment


def lines(*records) -> str:
    return "".join((record if isinstance(record, str) else json.dumps(record)) + "\n" for record in records)


def test_status_json_that_is_not_a_mapping_reads_as_unreadable(tmp_path):
    path = tmp_path / "status.json"
    for text, why in (('{"state": "COMPL', "unreadable (Unterminated string"), ("[1, 2]", "expected a JSON object")):
        path.write_text(text)
        warnings = []
        status = read_status(path, warnings, "run 'x'")
        assert status["state"] == "unreadable" and why in status["reason"] and str(path) in status["reason"]
        assert warnings == [f"run 'x': {status['reason']}"]
    assert read_status(tmp_path / "missing.json", warnings := [], "run 'x'") == {} and warnings == []


def test_metrics_skip_a_broken_line_and_keep_each_steps_last_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text(
        lines(
            *({"step": step, "reward": step / 10} for step in range(1, 6)),
            '{"step": 6, "rew',  # a line cut by a full disk, then the run went on
            *({"step": step, "reward": step / 10} for step in range(7, 11)),
            *({"step": step, "reward": 0.0} for step in (8, 9)),  # a restart that appended
        )
        + '{"step": 11, "re'  # the trainer is mid-write
    )
    warnings = []
    metrics = read_metrics(path, warnings, "run 'x'")
    assert list(metrics.frame["step"]) == [1, 2, 3, 4, 5, 7, 8, 9, 10]
    assert metrics.last_step() == {"step": 10, "reward": 1.0}
    assert list(metrics.frame["reward"])[-3:] == [0.0, 0.0, 1.0]
    assert warnings[0].startswith(f"run 'x': {path}:6: not a JSON line: ") and warnings[0].endswith(", skipped")
    assert warnings[1] == (
        f"run 'x': {path}:11: steps 8-9 logged again after step 10 (a restart that appended instead of resuming?); "
        "each step's last line is used"
    )


def test_a_reward_that_turns_nan_gets_no_final_reward_from_the_steps_before(tmp_path):
    path = tmp_path / "metrics.jsonl"
    rewards = [0.5] * 20 + [math.nan] * 10
    path.write_text(lines(*({"step": step, "reward": r} for step, r in enumerate(rewards, start=1))))
    warnings = []
    metrics = read_metrics(path, warnings, "run 'x'")
    assert warnings == [f"run 'x': {path}: reward is not a finite number at steps 21-30 (of 30 logged)"]
    assert metrics.final_reward() is None and metrics.window_mean("reward", 0.2, last=False) == 0.5
    assert math.isnan(metrics.last_step()["reward"])
    assert metrics.points("reward") == [(step, 0.5) for step in range(1, 21)]


@pytest.fixture
def broken(write_spec, tmp_path):
    """SPEC's three runs finished; the baseline's metrics have a broken line mid-file and a NaN reward for
    their last third, and `n=4`'s status.json holds a list."""
    path = write_spec(SPEC)
    runs = {run.name: run for run in load_experiment(path).runs}
    for run in runs.values():
        write_results(tmp_path, run, HEALTHY["reward"], 0.5)
        finish_stages(tmp_path, run)
    metrics = layout.path(layout.TRAIN_METRICS, ".", key=runs["baseline"].keys.train)
    rewards = HEALTHY["reward"][:20] + [math.nan] * 10
    records = [{"step": step, "reward": r} for step, r in enumerate(rewards, start=1)]
    metrics.write_text(lines(*records[:10], "not json", *records[10:]))
    layout.path(layout.TRAIN_STATUS, tmp_path, key=runs["n=4"].keys.train).write_text("[1, 2]")
    return path, runs


def test_status_suggest_and_the_report_warn_alike(broken, tmp_path, capsys):
    path, runs = broken
    metrics = layout.path(layout.TRAIN_METRICS, ".", key=runs["baseline"].keys.train)
    status = layout.path(layout.TRAIN_STATUS, ".", key=runs["n=4"].keys.train)
    line = f"run 'baseline': {metrics}:11: not a JSON line: Expecting value: line 1 column 1 (char 0), skipped"
    nan = f"run 'baseline': {metrics}: reward is not a finite number at steps 21-30 (of 30 logged)"
    listed = f"run 'n=4': {status}: expected a JSON object, got list"

    assert main(["status", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"warning {line}" in out and f"warning {nan}" in out and f"warning {listed}" in out
    row = next(text for text in out.splitlines() if text.startswith("│ baseline"))
    assert "│ 30 " in row and "nan" in row  # the last step, and its reward as logged
    assert "unreadable" in next(text for text in out.splitlines() if text.startswith("│ n=4"))

    assert main(["suggest", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"note: {line}" in out and f"note: {nan}" in out
    assert f"note: run 'n=4' has a status.json that cannot be read: {listed.split(': ', 1)[1]}: not read" in out

    assert main(["report", str(path)]) == 0
    summary = json.loads((tmp_path / "results" / "exp" / "summary.json").read_text())
    assert line in summary["warnings"] and nan in summary["warnings"] and listed in summary["warnings"]
    baseline = next(row for row in summary["rows"] if row["run"] == "baseline")
    assert baseline["final_reward"] is None and baseline["steps"] == 30
    assert next(row for row in summary["rows"] if row["run"] == "n=4")["status"] == "unreadable"


def test_an_unreadable_baseline_status_stops_suggest_and_next_in_one_line(broken, tmp_path, capsys):
    path, runs = broken
    status = layout.path(layout.TRAIN_STATUS, ".", key=runs["baseline"].keys.train)
    status.write_text('{"state": "COMPLETED", "rea')
    for command in ("suggest", "next"):
        assert main([command, str(path)]) == 1
        out = capsys.readouterr().out.strip()
        assert out.startswith(f"error {path}: run 'baseline' has a status.json that cannot be read: {status}: ")
        assert len(out.splitlines()) == 1

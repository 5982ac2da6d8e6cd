"""results/<experiment>/runs/<name>/ links (knobsweep.runlinks)."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from knobsweep import layout, runlinks
from knobsweep.spec import load_experiment

SPEC = """
baseline:
  model: {name: tiny}
  data: {source: gsm8k, path: data/gsm8k, train_size: 8, eval_size: 4}
  train: {batch_size: 4}
sweep:
  train.learning_rate: [2.0e-4]
  eval.max_tokens: [20]
"""


def stage_folders(run, root: Path) -> None:
    """What the stages of `run` would write (enough to follow the links)."""
    train = layout.path(layout.TRAIN_DIR, root, key=run.keys.train)
    (train / "adapter").mkdir(parents=True, exist_ok=True)
    (train / "status.json").write_text('{"state": "COMPLETED"}')
    (train / "metrics.jsonl").write_text('{"step": 1}\n')
    evaluation = layout.path(layout.EVAL_DIR, root, key=run.keys.eval)
    evaluation.mkdir(parents=True, exist_ok=True)
    (evaluation / "summary.json").write_text(f'{{"eval": "{run.keys.eval}"}}')


def test_each_run_folder_links_its_stage_folders(write_spec, tmp_path):
    experiment = load_experiment(write_spec(SPEC))
    for run in experiment.runs:
        stage_folders(run, tmp_path)
    runlinks.refresh([experiment], tmp_path)

    baseline = tmp_path / "results" / "exp" / "runs" / "baseline"
    assert {
        "status.json",
        "metrics.jsonl",
        "adapter",
        "eval_summary.json",
        "train",
        "merged",
        "eval",
        "train.log",
    } <= set(os.listdir(baseline))
    assert (baseline / "status.json").read_text() == '{"state": "COMPLETED"}'
    assert (baseline / "adapter").is_dir()
    assert all(not os.path.isabs(os.readlink(item)) for item in baseline.iterdir())  # relative: the tree can move
    assert (baseline / "train").resolve() == layout.path(layout.TRAIN_DIR, tmp_path, key=experiment.baseline.keys.train)
    # the eval-only arm shares the baseline's training: the same folder, linked twice, not copied
    arm = tmp_path / "results" / "exp" / "runs" / "max_tokens=20"
    assert (arm / "train").resolve() == (baseline / "train").resolve()
    assert (arm / "eval").resolve() != (baseline / "eval").resolve()


def test_a_changed_key_replaces_the_links_and_runs_that_left_the_spec_lose_their_folders(write_spec, tmp_path):
    runlinks.refresh([load_experiment(write_spec(SPEC))], tmp_path)
    runs_dir = tmp_path / "results" / "exp" / "runs"
    (runs_dir / "notes").mkdir()
    (runs_dir / "notes" / "mine.txt").write_text("a user's own file")

    changed = load_experiment(write_spec(SPEC.replace("[2.0e-4]", "[3.0e-4]").replace("eval.max_tokens: [20]\n", "")))
    runlinks.refresh([changed], tmp_path)
    assert sorted(os.listdir(runs_dir)) == ["baseline", "learning_rate=3e-4", "notes"]  # a folder not ours stays
    arm = next(run for run in changed.runs if run.changed)
    assert os.readlink(runs_dir / "learning_rate=3e-4" / "train").endswith(arm.keys.train)
    assert not list(runs_dir.rglob(".*.tmp"))

    moved = dataclasses.replace(changed.baseline, keys=dataclasses.replace(changed.baseline.keys, train="0" * 16))
    runlinks.refresh([dataclasses.replace(changed, runs=(moved, arm))], tmp_path)
    assert os.readlink(runs_dir / "baseline" / "train").endswith("0" * 16)


def test_run_names_become_one_safe_path_component():
    assert runlinks.folder_name("learning_rate=2e-4,seed=1") == "learning_rate=2e-4,seed=1"
    assert runlinks.folder_name("name=Qwen/Qwen2.5-0.5B") == "name=Qwen%2FQwen2.5-0.5B"
    assert runlinks.folder_name("a%2Fb") == "a%252Fb"  # escaping is reversible: no two names collide
    assert runlinks.folder_name(".hidden") == "%2Ehidden"
    long = runlinks.folder_name("extra_body=" + "x" * 400)
    assert len(long.encode()) <= runlinks.MAX_NAME_BYTES and long != runlinks.folder_name("extra_body=" + "x" * 401)

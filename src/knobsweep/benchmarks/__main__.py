"""CLI: `python -m knobsweep.benchmarks --config-json BENCH --model M --out OUT`."""

from __future__ import annotations

import argparse
import sys

from knobsweep.benchmarks import run_benchmarks
from knobsweep.errors import SpecError
from knobsweep.io import json_object
from knobsweep.spec.schema import BenchmarkJob
from knobsweep.spec.validate import parse


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m knobsweep.benchmarks",
        description="Run lm-evaluation-harness tasks on a model; write results.json, samples_<task>.jsonl and "
        "summary.json.",
    )
    parser.add_argument(
        "--config-json",
        required=True,
        type=json_object,
        help='{"benchmarks": {tasks, include_path, num_fewshot, limit, ...}, "backend": "auto|hf|vllm"}',
    )
    parser.add_argument("--model", required=True, help="hub id, local path or merged model dir")
    parser.add_argument("--out", required=True, help="output directory")
    args = parser.parse_args(argv)
    try:  # the spec's own models: the same defaults, ranges and messages as the experiment file
        job = parse(BenchmarkJob, args.config_json, "--config-json")
    except SpecError as error:
        parser.error(str(error))
    summary = run_benchmarks(job, args.model, args.out)
    if "not_evaluated" in summary:
        print(f"{args.model}: not evaluated: {summary['not_evaluated']} -> {args.out}")
        return 0
    for task, entry in summary["tasks"].items():
        for metric in entry["metrics"].values():
            stderr = "" if metric["stderr"] is None else f" ± {metric['stderr']:.4f}"
            print(
                f"{args.model} [{summary['backend']}] {task} ({entry['n_shot']}-shot, {entry['n']} items) "
                f"{metric['filter']} {metric['metric']}: {metric['value']:.4f}{stderr}"
            )
    print(f"lm-eval {summary['lm_eval_version']} in {summary['elapsed_s']:.1f} s -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

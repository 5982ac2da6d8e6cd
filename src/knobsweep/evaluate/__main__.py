"""CLI: `python -m knobsweep.evaluate --config-json EVAL --model M --data D --out OUT`."""

from __future__ import annotations

import argparse
import sys

from knobsweep.errors import SpecError
from knobsweep.evaluate import evaluate
from knobsweep.io import json_object
from knobsweep.spec.schema import EvalJob
from knobsweep.spec.validate import parse


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m knobsweep.evaluate",
        description="Generate completions for a data stage's eval split, score them, "
        "write summary.json and samples.jsonl.",
    )
    parser.add_argument(
        "--config-json",
        required=True,
        type=json_object,
        help='{"eval": {backend, temperature, top_p, max_tokens, samples, ...}, "reward": {...}}',
    )
    parser.add_argument("--model", required=True, help="hub id, local path or merged model dir")
    parser.add_argument("--data", required=True, help="data stage directory holding eval.parquet")
    parser.add_argument("--out", required=True, help="output directory")
    args = parser.parse_args(argv)
    try:  # the spec's own models: the same defaults, ranges and messages as the experiment file
        job = parse(EvalJob, args.config_json, "--config-json")
    except SpecError as error:
        parser.error(str(error))
    try:
        summary = evaluate(job, args.model, args.data, args.out)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if "not_evaluated" in summary:
        print(f"{args.model}: not evaluated: {summary['not_evaluated']} -> {args.out}")
        return 0
    score = "n/a" if summary["score"] is None else f"{summary['score']:.4f}"
    print(
        f"{args.model} [{summary['backend']}]: score {score}, {summary['n_correct']}/{summary['n']} "
        f"correct, {summary['n'] - summary['n_valid']} invalid, {summary['parse_failures']} parse "
        f"failures; {summary['completion_tokens']} tokens in {summary['generate_s']:.2f} s = "
        f"{summary['tokens_per_s']:.0f} tokens/s -> {args.out}"
    )
    for name, entry in summary.get("parsers", {}).items():
        low, high = entry["ci95"] or (float("nan"), float("nan"))
        print(
            f"  {name}: accuracy {entry['score']:.4f} [95% CI {low:.4f}, {high:.4f}], "
            f"parse failures {entry['parse_failures']}/{entry['n']}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""CLI of a rung eval: the rung's model of one run, scored on the rung's eval prompts.

    python -m knobsweep.early_stop.rung_eval --config-json EVAL --segment results/rungs/<key> \
        --prompts N --prompt-seed S --model BASE --data D --out results/rung_eval/<key>

The segment's adapter is merged into the base (knobsweep.merge, verified) in a scratch folder and
evaluated there with the eval stage's own code (knobsweep.evaluate) on a seeded subset of the eval
split (--prompts 0: all of it), so every run of the sweep is scored on the same prompts at the rung.
A segment that trained nothing (its arm stopped at an earlier rung, or the run had passed the rung
without keeping its checkpoint) gets a `not_evaluated` summary.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from knobsweep import layout
from knobsweep.errors import SpecError
from knobsweep.io import atomic_write_json, json_object


def rung_eval(job, segment_dir: Path, base: str, data: str, out: Path, prompts: int | None, seed: int) -> dict:
    started = time.perf_counter()
    summary = _rung_eval(job, segment_dir, base, data, out, prompts, seed)
    # the merge's seconds too: what the rung eval costs, for the report's account (report.early_stop)
    summary["rung_eval_s"] = round(time.perf_counter() - started, 3)
    atomic_write_json(out / layout.SUMMARY, summary)
    return summary


def _rung_eval(job, segment_dir: Path, base: str, data: str, out: Path, prompts: int | None, seed: int) -> dict:
    from knobsweep.evaluate import evaluate, write_not_evaluated
    from knobsweep.merge import merge_adapter_into_base

    record = json.loads((segment_dir / layout.SEGMENT).read_text())
    if "stopped" in record or "skipped" in record:
        why = record.get("skipped") or f"stopped at rung {record['stopped']['rung']}"
        return write_not_evaluated(job, str(segment_dir), out, why)
    adapter = segment_dir / layout.ADAPTER
    if not (adapter / "adapter_config.json").is_file():  # a full fine-tune's rung: the model itself
        return evaluate(job, str(adapter), data, out, prompts, seed)
    with tempfile.TemporaryDirectory(prefix="rung-merge-", dir=out.parent) as scratch:
        merged = Path(scratch) / "merged"
        merge_adapter_into_base(base, adapter, merged)
        return evaluate(job, str(merged), data, out, prompts, seed)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m knobsweep.early_stop.rung_eval", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--config-json", required=True, type=json_object, help="the run's EVAL section as JSON")
    parser.add_argument("--segment", required=True, help="the rung segment's folder results/rungs/<key>")
    parser.add_argument("--prompts", type=int, default=0, help="eval prompts to score (0: the whole eval split)")
    parser.add_argument("--prompt-seed", type=int, default=0, help="seed of the prompt subset")
    parser.add_argument("--model", required=True, help="the base model the adapter was trained on")
    parser.add_argument("--data", required=True, help="data stage directory holding eval.parquet")
    parser.add_argument("--out", required=True, help="output directory results/rung_eval/<key>")
    args = parser.parse_args(argv)
    from knobsweep.spec.schema import EvalJob
    from knobsweep.spec.validate import parse

    try:
        job = parse(EvalJob, args.config_json, "--config-json")
    except SpecError as error:
        parser.error(str(error))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        summary = rung_eval(job, Path(args.segment), args.model, args.data, out, args.prompts or None, args.prompt_seed)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:  # a MergeError too
        print(f"error: {exc}", file=sys.stderr)
        return 1
    score = summary.get("score")
    print(
        f"rung eval of {args.segment}: "
        + (summary.get("not_evaluated") or f"score {score:.4f} on {summary['n']} prompts")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Measure what eval.benchmarks adds per model (a benchmark, not a test: it prints figures, asserts nothing).

    python bench/benchmarks.py [--tasks gsm8k_local,rg_leg_counting] [--limit 50] [--max-gen-toks 64] [--repeat 2]

Builds the demo's tiny model (the demo's data: data/gsm8k, 300 train rows), then runs the benchmark stage on it
as Snakemake runs it (`python -m knobsweep.benchmarks`, one process per model, OMP_NUM_THREADS=1 as a 1-core
job), `--repeat` times, and prints the stage's wall time (process start to exit), lm-eval's own time
(summary.json elapsed_s: imports and model load included) and the scores. A merged model of the demo has the tiny
model's shape, so this is the time the stage adds per merged model (and once for the base model).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", default="gsm8k_local,rg_leg_counting")
    parser.add_argument("--limit", type=int, default=50)
    parser.add_argument("--max-gen-toks", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()

    from knobsweep.data import convert_to_dir
    from knobsweep.models.tiny import build_tiny_model, texts_from_parquet

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        convert_to_dir(
            {"source": "gsm8k", "path": str(REPO / "data/gsm8k"), "train_size": 300, "eval_size": 100}, tmp / "d"
        )
        model = build_tiny_model(texts_from_parquet(tmp / "d" / "train.parquet"), tmp / "tiny")
        config = {
            "benchmarks": {
                "tasks": args.tasks.split(","),
                "limit": args.limit,
                "batch_size": args.batch_size,
                "gen_kwargs": {"max_gen_toks": args.max_gen_toks},
            },
            "backend": "hf",
        }
        print(f"tiny model, tasks {args.tasks}, limit {args.limit}, max_gen_toks {args.max_gen_toks}, hf on CPU")
        for attempt in range(args.repeat):
            out = tmp / f"out{attempt}"
            started = time.perf_counter()
            result = subprocess.run(
                [sys.executable, "-m", "knobsweep.benchmarks", "--config-json", json.dumps(config)]
                + ["--model", str(model), "--out", str(out)],
                cwd=REPO,
                capture_output=True,
                text=True,
                env={**os.environ, "OMP_NUM_THREADS": "1"},
            )
            wall = time.perf_counter() - started
            if result.returncode != 0:
                print(result.stderr[-3000:], file=sys.stderr)
                return 1
            summary = json.loads((out / "summary.json").read_text())
            scores = ", ".join(
                f"{task} {m['filter']} {m['metric']} {m['value']:.4f}"
                for task, entry in summary["tasks"].items()
                for m in entry["metrics"].values()
            )
            print(f"run {attempt + 1}: stage {wall:.1f} s wall, lm-eval {summary['elapsed_s']:.1f} s; {scores}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

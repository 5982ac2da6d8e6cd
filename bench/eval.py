"""Measure evaluation throughput (a benchmark, not a test: it prints figures, asserts nothing).

    python bench/eval.py [--rows 50] [--max-tokens 64] [--batch-size 32] [--threads N]

Converts a slice of the demo's GSM8K data, builds the tiny model, runs the eval stage with
the hf backend (greedy) and prints generated tokens/s, wall times and the three parsers'
scores with their parse-failure rates and bootstrap 95% CIs.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=50)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args()

    import torch

    from knobsweep.data import convert_to_dir
    from knobsweep.evaluate import evaluate
    from knobsweep.models.tiny import build_tiny_model, texts_from_parquet
    from knobsweep.spec.schema import EvalJob

    if args.threads:
        torch.set_num_threads(args.threads)
    data_dir = REPO / "data" / "gsm8k"
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        convert_to_dir(
            {"source": "gsm8k", "path": str(data_dir), "train_size": 200, "eval_size": args.rows}, tmp / "data"
        )
        model = build_tiny_model(texts_from_parquet(tmp / "data" / "train.parquet"), tmp / "model")
        job = EvalJob.model_validate(
            {
                "eval": {
                    "backend": "hf",
                    "temperature": 0.0,
                    "max_tokens": args.max_tokens,
                    "batch_size": args.batch_size,
                },
                "reward": {"name": "gsm8k"},
            }
        )
        started = time.perf_counter()
        summary = evaluate(job, model, tmp / "data", tmp / "eval")
        wall = time.perf_counter() - started
    print(
        f"hf backend, tiny model, CPU ({torch.get_num_threads()} threads), {args.rows} prompts, "
        f"max_tokens {args.max_tokens}, batch {args.batch_size}"
    )
    print(
        f"generated tokens: {summary['completion_tokens']}; generation {summary['generate_s']:.2f} s; "
        f"tokens/s {summary['tokens_per_s']:.0f}; stage wall {wall:.2f} s (load + score + write included)"
    )
    for name, entry in summary.get("parsers", {}).items():
        print(
            f"  {name:12s} accuracy {entry['score']:.3f} CI95 {entry['ci95']} "
            f"parse failures {entry['parse_failures']}/{entry['n']}"
        )
    print(json.dumps({k: summary[k] for k in ("score", "score_ci95", "n")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

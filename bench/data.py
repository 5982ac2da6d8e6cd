"""How fast the data stage converts, and what a cache hit costs (a benchmark, not a test: it
prints figures, asserts nothing).

    python bench/data.py [--repeat 3] [--tasks-per-case 200]

1. GSM8K at the real splits' sizes (7,473 train + 1,319 test rows: the whole test split kept in
   tests/fixtures/gsm8k, and a train file of the train split's size made by repeating the demo's
   1,000 real rows, since the repository keeps no more of it) through
   knobsweep.data.convert_to_dir, once per format (rl, sft, kto). Target: <= 3 s.
2. OpenSpiel: 5 cases x 200 tasks = 1,000 train tasks (+ eval tasks). Target: <= 10 s.
   Skipped with a message when knobsweep.data.openspiel is not importable.
3. Custom JSONL: the GSM8K train file re-keyed as {problem, solution, final_answer} (7,473 rows)
   with eval_ratio 0.1, as rl rows.
4. The cache hit, as Snakemake sees it: a re-run with the same options has the same data stage
   key (knobsweep.spec.experiment.stage_keys, which hashes the converter version and every
   input file) and the output results/data/<key> already exists, so `snakemake -n` plans no
   data job. Computes the key twice from scratch (no shared cache: each time hashes the inputs,
   which costs what it costs) and checks it is equal and its output is there.
Times are the best of --repeat runs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures"
GSM8K_TRAIN_ROWS = 7473  # the upstream train split's size
sys.path.insert(0, str(REPO / "src"))

OPENSPIEL_CASES = ["tic_tac_toe", "connect_four", "hex(board_size=5)", "breakthrough(rows=6,columns=6)", "othello"]


def best_of(repeat: int, work) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = work()
        times.append(time.perf_counter() - start)
    return min(times), result


def describe(manifest: dict) -> str:
    rows = manifest["rows"]
    stats = "".join(f", {k} {v}" for k, v in manifest.get("stats", {}).items())
    return f"{rows['train']} train + {rows['eval']} eval rows, {len(manifest['dropped'])} dropped{stats}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--tasks-per-case", type=int, default=200)
    args = parser.parse_args()

    from knobsweep.spec import load_experiment

    os.chdir(REPO)  # the demo experiment names data/gsm8k relative to the repository
    base_config = load_experiment(REPO / "experiments" / "demo.yaml").baseline.config
    with tempfile.TemporaryDirectory(prefix="bench-data-") as tmp:
        run(Path(tmp), base_config, args)
    return 0


def full_size_gsm8k(directory: Path) -> Path:
    """A GSM8K folder with the real splits' row counts (see the module docstring)."""
    directory.mkdir()
    demo = (REPO / "data" / "gsm8k" / "train.jsonl").read_text().splitlines(keepends=True)
    (directory / "train.jsonl").write_text("".join(demo[i % len(demo)] for i in range(GSM8K_TRAIN_ROWS)))
    (directory / "test.jsonl").write_text((FIXTURES / "gsm8k" / "test.jsonl").read_text())
    return directory


def run(tmp: Path, base_config: dict, args) -> None:
    from knobsweep import layout
    from knobsweep.data import convert_to_dir
    from knobsweep.errors import FieldError
    from knobsweep.registry import converter
    from knobsweep.spec.experiment import stage_keys
    from knobsweep.spec.sources import read_options

    gsm8k = full_size_gsm8k(tmp / "gsm8k")
    cases: list[tuple[str, dict, float | None]] = []

    print(f"data stage, best of {args.repeat}; GSM8K at full size (target <= 3 s), OpenSpiel target <= 10 s")
    for fmt in ("rl", "sft", "kto"):
        cases.append((f"gsm8k {fmt}", {"source": "gsm8k", "format": fmt, "path": str(gsm8k)}, 3.0))

    custom = tmp / "custom.jsonl"
    with custom.open("w") as out:
        for line in (gsm8k / "train.jsonl").read_text().splitlines():
            record = json.loads(line)
            out.write(
                json.dumps(
                    {
                        "problem": record["question"],
                        "solution": record["answer"],
                        "final_answer": record["answer"].rsplit("#### ", 1)[1].replace(",", ""),
                    }
                )
                + "\n"
            )
    cases.append(
        (
            "custom jsonl rl",
            {
                "source": "jsonl",
                "format": "rl",
                "path": str(custom),
                "eval_ratio": 0.1,
                "prompt_key": "problem",
                "ground_truth_key": "final_answer",
            },
            None,
        )
    )

    try:
        converter("openspiel")
        cases.append(
            (
                f"openspiel {len(OPENSPIEL_CASES)} x {args.tasks_per_case}",
                {
                    "source": "openspiel",
                    "format": "rl",
                    "cases": OPENSPIEL_CASES,
                    "train_size": args.tasks_per_case * len(OPENSPIEL_CASES),
                },
                10.0,
            )
        )
    except ImportError as error:
        print(f"  (openspiel skipped: knobsweep.data.openspiel is not importable: {error})")

    for name, options, target in cases:
        options = read_options(options).model_dump(mode="json")
        config = {**base_config, "data": options}
        try:
            key = stage_keys(config, {}).data
            out = layout.path(layout.DATA_DIR, tmp, key=key)
            # Each repeat converts into a fresh directory, as a first run does.
            fresh = (out.with_name(f"{key}-{i}") for i in range(args.repeat))
            elapsed, manifest = best_of(
                args.repeat, lambda options=options, fresh=fresh: convert_to_dir(options, next(fresh))
            )
        except FieldError as error:
            print(f"  {name:28s} failed: {error}")
            continue
        convert_to_dir(options, out)
        verdict = "" if target is None else ("  (within target)" if elapsed <= target else f"  (OVER {target:.0f} s)")
        print(f"  {name:28s} convert {elapsed:6.2f} s   {describe(manifest)}{verdict}")

        # The cache hit: the key again, from scratch (a new data_identities cache each time).
        key_times, keys = [], []
        for _ in range(2):
            start = time.perf_counter()
            keys.append(stage_keys(config, {}).data)
            key_times.append(time.perf_counter() - start)
        inputs = manifest["inputs"]
        size = sum(Path(p).stat().st_size for p in inputs if Path(p).is_file())
        hit = keys[0] == keys[1] == key and (out / "manifest.json").is_file()
        print(
            f"  {'':28s} re-run: key {keys[0]} computed twice in {key_times[0] * 1000:.1f} / "
            f"{key_times[1] * 1000:.1f} ms (hashing {len(inputs)} input(s), {size / 1e6:.1f} MB); "
            f"{'equal, output exists -> cache hit, no data job' if hit else 'MISS'}"
        )


if __name__ == "__main__":
    sys.exit(main())

"""The step time of training in 2 processes against 1, on the same global batch (a benchmark, not a test).

    python bench/distributed.py [--steps 12] [--repeats 2] [--keep DIR]

Builds GSM8K data (the real data stage) and the tiny model once, then runs bench/overhead.py's GRPO
configuration (tiny model, LoRA r=8, batch_size 2 prompts x n=4, max_tokens 16, `--steps` steps) with
the pipeline's own launch command (`knobsweep.resources.launch_command`): `resources.train`
{processes: 1} and {processes: 2} (gloo), one after the other, `--repeats` times. Prints the median
wall seconds per step (the first 2 steps left out) of each and their ratio (2 processes / 1).

On a machine with 2 cores this measures what several processes cost, not what they gain: the two
processes share the cores one process had (1 thread each), and every step adds gloo's all-reduce of
the LoRA gradients, the gathers of rewards and completions, and half-size generation batches. A
ratio near 1 means the multi-process machinery is cheap; a speed-up needs devices of its own per
process (GPUs, or many cores).
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from overhead import BATCH_SIZE, MAX_TOKENS, REPO, N, environment, knobsweep_config, prepare, step_seconds

from knobsweep.io import read_jsonl
from knobsweep.resources import launch_command


def train(processes: int, data: Path, model: Path, out: Path, steps: int) -> tuple[list[float], float]:
    """(per-step wall seconds, the whole command's wall seconds) of one run."""
    stage = ["-m", "knobsweep.train", "--config-json", json.dumps(knobsweep_config())]
    stage += ["--model", str(model), "--data", str(data), "--out", str(out)]
    launch = launch_command({"gpus": 0, "processes": processes, "cpus": processes, "nodes": 1})
    env = {**environment(1), "PATH": f"{Path(sys.executable).parent}:{environment(1)['PATH']}"}
    started = time.perf_counter()
    result = subprocess.run(
        ["bash", "-c", f"{launch} {shlex.join(stage)}"], cwd=REPO, env=env, capture_output=True, text=True
    )
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"{processes} processes failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    records = read_jsonl(out / "metrics.jsonl")
    if len(records) != steps:
        raise SystemExit(f"{processes} processes: {len(records)} steps, expected {steps}")
    return step_seconds(records), wall


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--keep", type=Path, default=None, help="keep the runs' files here")
    args = parser.parse_args()
    root = Path(args.keep or tempfile.mkdtemp(prefix="knobsweep-distributed-"))
    root.mkdir(parents=True, exist_ok=True)
    data, model = prepare(root, args.steps, threads=1)
    print(
        f"GRPO tiny model, batch {BATCH_SIZE} prompts x n={N} = {BATCH_SIZE * N} completions per step, "
        f"max_tokens {MAX_TOKENS}, {args.steps} steps; {args.repeats} repeats, one run at a time"
    )
    steps: dict[int, list[float]] = {1: [], 2: []}
    walls: dict[int, list[float]] = {1: [], 2: []}
    for repeat in range(args.repeats):
        for processes in (1, 2):
            times, wall = train(processes, data, model, root / f"p{processes}-r{repeat}", args.steps)
            steps[processes] += times
            walls[processes].append(wall)
    one, two = statistics.median(steps[1]), statistics.median(steps[2])
    for processes, median in ((1, one), (2, two)):
        print(
            f"  {processes} process{'es' if processes > 1 else ''}: {median:.3f} s per step (median), "
            f"{statistics.median(walls[processes]):.1f} s per run with start-up"
        )
    print(f"  2 processes / 1: {two / one:.2f}x the step time on the same global batch")
    print("  (on a machine whose cores one process already uses, this is the multi-process overhead, not a speed-up)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

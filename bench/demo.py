"""Measure the walking skeleton's figures on a fresh clone (a benchmark, not a test).

    python bench/demo.py [--keep DIR]

Clones this repository's HEAD into a temporary directory and prints:
  - `make demo` wall time, install included (target: <= 10 min on 2 cores)
  - the baseline's mean reward over its first and last 20% of steps, and their ratio (>= 2)
  - whether `snakemake -n` afterwards has nothing to do
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run(command: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep", type=Path, help="clone into this directory and keep it")
    args = parser.parse_args()
    workdir = args.keep or Path(tempfile.mkdtemp(prefix="knobsweep-demo-"))
    clone = workdir / "knobsweep"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True)

    started = time.perf_counter()
    demo = run(["make", "demo"], clone)
    elapsed = time.perf_counter() - started
    if demo.returncode != 0:
        print(demo.stdout[-4000:], demo.stderr[-4000:], sep="\n")
        print(f"make demo FAILED after {elapsed:.0f} s")
        return 1
    print(f"make demo (fresh clone, install included): {elapsed:.0f} s  (target <= 600 s)")
    print(demo.stdout.strip().splitlines()[-1])

    summary = json.loads((clone / "results" / "demo" / "summary.json").read_text())
    rows = {row["run"]: row for row in summary["rows"] if not row["reference"]}
    baseline = rows["baseline"]
    first, last = baseline["reward_first20"], baseline["reward_last20"]
    ratio = last / first if first else float("inf")
    print(f"baseline reward: first 20% of steps {first:.4f}, last 20% {last:.4f}, ratio {ratio:.2f} (target >= 2)")
    for name, row in rows.items():
        print(f"  {name:24s} eval score {row.get('eval_score')}  final reward {row.get('final_reward')}")

    started = time.perf_counter()
    dry = run([str(clone / ".venv" / "bin" / "snakemake"), "-n", "--config", "experiments=demo"], clone)
    nothing = "Nothing to be done" in dry.stdout
    print(
        f"snakemake -n after the demo: {'nothing to do' if nothing else 'JOBS PLANNED'} "
        f"({time.perf_counter() - started:.1f} s)"
    )
    return 0 if nothing and ratio >= 2 else 1


if __name__ == "__main__":
    sys.exit(main())

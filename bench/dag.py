"""How fast Snakemake builds the DAG of a big sweep (a benchmark, not a test).

    python bench/dag.py [--runs 1000 10000] [--noop 100] [--profile]

For each size, writes a tiny-model experiment with that many runs (mode: grid over learning rate,
rollout temperature and eval max_tokens) into a temporary copy of the workflow and times
`snakemake -n` (targets on 2 cores: 1,000 runs <= 5 s, 10,000 runs <= 30 s); each timing is the median
of `--repeat` calls. Then a no-op re-run: a 100-run sweep whose outputs all exist (empty files, stamped
in order by `snakemake --touch`), timed with `snakemake -n` (target <= 3 s). Also times loading +
expanding the spec and building the job tables alone (`--profile` prints where that time goes).
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))


def spec(runs: int) -> str:
    """A grid of exactly `runs` runs: lr x temperature x eval.max_tokens (every value in range)."""
    lr = min(runs, 100)
    rest = runs // lr
    temps = min(rest, 10)
    tokens = rest // temps
    assert lr * temps * tokens == runs, runs
    lrs = [round(1e-5 + i * (4.9e-4 / max(lr - 1, 1)), 9) for i in range(lr)]
    ts = [round(0.5 + 0.1 * i, 2) for i in range(temps)]
    ks = [16 + i for i in range(tokens)]
    return f"""
baseline:
  model: {{name: tiny}}
  data: {{source: gsm8k, path: data/gsm8k, train_size: 8, eval_size: 4}}
  train: {{learning_rate: {lrs[0]}}}
  rollout: {{temperature: {ts[0]}}}
  eval: {{max_tokens: {ks[0]}}}
mode: grid
sweep:
  train.learning_rate: {lrs}
  rollout.temperature: {ts}
  eval.max_tokens: {ks}
"""


def workdir(root: Path, runs: int) -> Path:
    work = root / f"sweep{runs}"
    work.mkdir()
    for item in ("Snakefile", "rules", "workflow", "data"):
        source = REPO / item
        (shutil.copytree if source.is_dir() else shutil.copy)(source, work / item)
    (work / "experiments").mkdir()
    (work / "experiments" / "bench.yaml").write_text(spec(runs))
    return work


def snakemake(work: Path, *args: str, repeat: int = 1) -> tuple[float, str]:
    """The median wall time of `repeat` identical calls (this machine's timings move by 20%), and the output."""
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        result = subprocess.run(
            [sys.executable, "-m", "snakemake", "--cores", "2", *args],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
        )
        times.append(time.perf_counter() - start)
        if result.returncode != 0:
            raise SystemExit(f"snakemake {' '.join(args)} failed:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}")
    return statistics.median(times), result.stdout


def jobs(output: str) -> str:
    for line in output.splitlines():
        if line.startswith("total"):
            return line.split()[1]
    return "0" if "Nothing to be done" in output else "?"


def fake_outputs(work: Path) -> None:
    """Every output of the sweep as an empty file or folder, stage by stage (what `--touch` then stamps)."""
    from knobsweep import layout
    from knobsweep.pipeline import build_pipeline

    cwd = os.getcwd()
    os.chdir(work)
    try:
        pipeline = build_pipeline([work / "experiments" / "bench.yaml"])
        stages = [
            (pipeline.data, [layout.DATA_TRAIN, layout.DATA_EVAL, layout.DATA_MANIFEST], []),
            (pipeline.tiny, [], [layout.TINY_MODEL]),
            (pipeline.train, [layout.TRAIN_METRICS], [layout.TRAIN_ADAPTER, layout.MERGE_DIR]),
            (pipeline.eval, [layout.EVAL_SUMMARY, layout.EVAL_SAMPLES], []),
        ]
        for table, files, folders in stages:
            for key in table:
                for pattern in folders:
                    Path(pattern.format(key=key)).mkdir(parents=True, exist_ok=True)
                for pattern in files:
                    Path(pattern.format(key=key)).parent.mkdir(parents=True, exist_ok=True)
                    Path(pattern.format(key=key)).touch()
            time.sleep(0.01)
        for name in pipeline.experiments:
            for pattern in (layout.REPORT_HTML, layout.REPORT_CSV, layout.REPORT_JSON, layout.REPORT_DONE):
                Path(pattern.format(experiment=name)).parent.mkdir(parents=True, exist_ok=True)
                Path(pattern.format(experiment=name)).touch()
    finally:
        os.chdir(cwd)


def tables(work: Path, profile: bool) -> float:
    from knobsweep.pipeline import build_pipeline

    cwd = os.getcwd()
    os.chdir(work)
    try:
        profiler = cProfile.Profile() if profile else None
        start = time.perf_counter()
        if profiler:
            profiler.enable()
        build_pipeline([work / "experiments" / "bench.yaml"])
        if profiler:
            profiler.disable()
        elapsed = time.perf_counter() - start
    finally:
        os.chdir(cwd)
    if profiler:
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(18)
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, nargs="*", default=[1000, 10000])
    parser.add_argument("--noop", type=int, default=100, help="runs in the no-op re-run sweep (0: skip)")
    parser.add_argument("--profile", action="store_true", help="cProfile the spec + job tables")
    parser.add_argument("--repeat", type=int, default=3, help="calls per timing; the median is printed")
    args = parser.parse_args()
    targets = {1000: 5.0, 10000: 30.0}
    floor = snakemake(REPO, "--version", repeat=args.repeat)[0]
    print(f"snakemake --version: {floor:.2f} s (start-up floor, plugins included); medians of {args.repeat} calls")
    with tempfile.TemporaryDirectory(prefix="knobsweep-dag-") as tmp:
        for runs in args.runs:
            work = workdir(Path(tmp), runs)
            table_s = tables(work, args.profile)
            elapsed, out = snakemake(work, "-n", repeat=args.repeat)
            quiet, _ = snakemake(work, "-n", "--quiet", repeat=args.repeat)
            target = f" (target <= {targets[runs]:.0f} s)" if runs in targets else ""
            print(
                f"{runs:>6} runs: spec + job tables {table_s:6.2f} s; snakemake -n {elapsed:6.2f} s"
                f"{target}, -n --quiet {quiet:6.2f} s; {jobs(out)} jobs"
            )
        if args.noop:
            work = workdir(Path(tmp), args.noop)
            fake_outputs(work)
            touch_s, _ = snakemake(work, "--touch")
            elapsed, out = snakemake(work, "-n", repeat=args.repeat)
            status = "nothing to do" if "Nothing to be done" in out else f"{jobs(out)} jobs planned (!)"
            print(
                f"{args.noop:>6} runs finished (--touch {touch_s:.1f} s): no-op snakemake -n {elapsed:6.2f} s "
                f"(target <= 3 s); {status}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What Slurm costs here: per-job overhead and the effect of grouping (a benchmark, not a test).

    sudo python bench/slurm.py [--jobs 8] [--latency 5] [--train-size 20] [--skip-demo]

On the real one-node Slurm cluster of slurm/local/ (started if it is not up, and stopped again
at the end if this started it; needs root), prints:

1. latency: a trivial `sbatch --wrap true` from submission until Slurm says COMPLETED (polled
   every 50 ms), and a blocking `srun true`;
2. Snakemake's cost per job under the Slurm executor: N independent trivial jobs through the
   repo's slurm/ profile vs the same workflow with `--cores 2`; per job = (Slurm - local) / N;
3. the demo experiment through the Slurm profile as shipped (each run's merge at the end of its
   train job, data / tiny model / report as localrules) and without the localrules, against a
   local `--cores 2` run. The demo is cut to `--train-size` prompts (100 -> 10 steps) so that the
   three runs take minutes, not an hour; the Slurm-side overhead does not depend on the step count.

Every Slurm run uses the test overrides of the profile (status checks from 2 s, latency-wait 5 s,
4 jobs at once): the shipped profile waits 20 s before its first status check.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "slurm" / "local"
PARTITION = "debug"
FAST = ("--slurm-init-seconds-before-status-checks", "2", "--latency-wait", "5", "--jobs", "4")
TRIVIAL = """
rule all:
    input: expand("out/{i}.txt", i=range(int(config["count"])))

rule job:
    output: "out/{i}.txt"
    resources: runtime=5, mem_mb=200, cpus_per_task=1
    shell: "touch {output}"
"""


def env() -> dict:
    return dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")


def alive(pidfile: str) -> bool:
    try:
        os.kill(int(Path(pidfile).read_text().strip()), 0)
        return True
    except (OSError, ValueError):
        return False


def timed(cmd: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    result = subprocess.run(cmd, cwd=cwd, env=env(), capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed in {cwd}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return time.perf_counter() - start


def slurm_jobs(workdir: Path, since: str) -> list[str]:
    """States of the Slurm jobs that ran in `workdir` (sacct, by working directory)."""
    out = subprocess.run(
        ["sacct", "-X", "-P", "-n", "-S", since, "--format=State,WorkDir"], capture_output=True, text=True, check=True
    ).stdout
    return [
        line.split("|")[0]
        for line in out.splitlines()
        if line.strip() and Path(line.split("|")[1]).resolve() == workdir.resolve()
    ]


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S")


# --- 1. raw latency --------------------------------------------------------------------------


def sbatch_latency(count: int) -> list[float]:
    latencies = []
    for _ in range(count):
        start = time.perf_counter()
        job = subprocess.run(
            ["sbatch", "--parsable", "-p", PARTITION, "-t", "1", "--mem", "100", "-o", "/dev/null", "--wrap", "true"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        while True:
            state = subprocess.run(["scontrol", "show", "job", "-o", job], capture_output=True, text=True).stdout
            if "JobState=COMPLETED" in state:
                break
            if any(f"JobState={s}" in state for s in ("FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL")):
                raise SystemExit(f"sbatch job {job} did not complete: {state}")
            time.sleep(0.05)
        latencies.append(time.perf_counter() - start)
    return latencies


def srun_latency(count: int) -> list[float]:
    times = []
    for _ in range(count):
        start = time.perf_counter()
        subprocess.run(["srun", "-p", PARTITION, "-t", "1", "--mem", "100", "true"], check=True)
        times.append(time.perf_counter() - start)
    return times


# --- 2. Snakemake per-job overhead -----------------------------------------------------------


def per_job_overhead(root: Path, jobs: int) -> dict:
    walls = {}
    for mode in ("local", "slurm"):
        workdir = root / f"trivial-{mode}"
        workdir.mkdir()
        (workdir / "Snakefile").write_text(TRIVIAL)
        shutil.copytree(REPO / "slurm", workdir / "slurm")
        (workdir / "slurm" / "site.yaml").write_text(f"partition: {PARTITION}\n")
        extra = (
            ["--profile", "slurm", *FAST, "--default-resources", f"slurm_partition={PARTITION}"]
            if mode == "slurm"
            else ["--cores", "2"]
        )
        since = now()
        walls[mode] = timed([sys.executable, "-m", "snakemake", *extra, "--config", f"count={jobs}"], workdir)
        if mode == "slurm":
            states = slurm_jobs(workdir, since)
            assert states == ["COMPLETED"] * jobs, states
    return walls


# --- 3. the demo, with and without localrules -------------------------------------------------


def demo_copy(root: Path, train_size: int, localrules: bool) -> Path:
    root.mkdir(parents=True)
    for item in ("Snakefile", "rules", "workflow", "data", "slurm", "profiles"):
        source = REPO / item
        if source.exists():
            (shutil.copytree if source.is_dir() else shutil.copy)(source, root / item)
    spec = yaml.safe_load((REPO / "experiments" / "demo.yaml").read_text())
    spec["baseline"]["data"]["train_size"] = train_size
    (root / "experiments").mkdir()
    (root / "experiments" / "demo.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    (root / "slurm" / "site.yaml").write_text(f"partition: {PARTITION}\n")
    if not localrules:
        common = root / "rules" / "common.smk"
        text = common.read_text()
        start = text.index("localrules:")
        end = text.index("\n\n", start)
        common.write_text(text[:start] + text[end:])
    return root


def demo_runs(root: Path, train_size: int) -> list[tuple[str, float, int]]:
    rows = []
    variants = [
        ("local --cores 2", False, True),
        ("slurm, localrules (as shipped)", True, True),
        ("slurm, no localrules", True, False),
    ]
    for index, (label, slurm, localrules) in enumerate(variants):
        workdir = demo_copy(root / f"demo-{index}", train_size, localrules)
        since = now()
        extra = ["--profile", "slurm", *FAST] if slurm else ["--cores", "2"]
        wall = timed([sys.executable, "-m", "snakemake", *extra], workdir)
        jobs = slurm_jobs(workdir, since) if slurm else []
        assert all(state == "COMPLETED" for state in jobs), jobs
        rows.append((label, wall, len(jobs)))
        print(f"  {label:52s} {wall:7.1f} s  {len(jobs):3d} Slurm jobs", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=8, help="trivial jobs for the per-job overhead")
    parser.add_argument("--latency", type=int, default=5, help="sbatch / srun round trips to time")
    parser.add_argument("--train-size", type=int, default=20, help="demo prompts (batch 2: half as many steps)")
    parser.add_argument("--skip-demo", action="store_true")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("starting the local Slurm cluster needs root")
    lock = open("/tmp/knobsweep-slurm-test.lock", "w")  # the tests' lock: one user of the cluster at a time
    fcntl.flock(lock, fcntl.LOCK_EX)
    already_up = alive("/run/slurm/slurmctld.pid") and alive("/run/slurm/slurmd.pid")
    start = time.perf_counter()
    subprocess.run(
        ["bash", str(SCRIPTS / "start-local-slurm.sh")],
        check=True,
        capture_output=True,
        env=dict(os.environ, SLURM_PARTITION=PARTITION, SLURM_FAKE_GPUS="2"),
    )
    print(f"cluster {'already up' if already_up else 'started'} in {time.perf_counter() - start:.1f} s")
    try:
        with tempfile.TemporaryDirectory(prefix="knobsweep-bench-slurm-") as tmp:
            root = Path(tmp)
            lat = sbatch_latency(args.latency)
            srun = srun_latency(args.latency)
            print(
                f"sbatch --wrap true -> COMPLETED: median {statistics.median(lat):.2f} s "
                f"(min {min(lat):.2f}, max {max(lat):.2f}; {args.latency} jobs)"
            )
            print(
                f"srun true (blocking):           median {statistics.median(srun):.2f} s "
                f"(min {min(srun):.2f}, max {max(srun):.2f})"
            )
            walls = per_job_overhead(root, args.jobs)
            per_job = (walls["slurm"] - walls["local"]) / args.jobs
            print(
                f"{args.jobs} trivial jobs: local --cores 2 {walls['local']:.1f} s, slurm profile "
                f"{walls['slurm']:.1f} s -> {per_job:.1f} s per job under Slurm"
            )
            if not args.skip_demo:
                print(f"demo, train_size {args.train_size} ({args.train_size // 2} steps per run), 4 runs:")
                demo_runs(root, args.train_size)
    finally:
        if not already_up:
            subprocess.run(["bash", str(SCRIPTS / "stop-local-slurm.sh")], capture_output=True)
            conf = Path("/etc/slurm/slurm.conf")  # as tests/test_slurm.py: later `snakemake` calls fail fast
            if conf.is_file() and "MessageTimeout" not in conf.read_text():
                with conf.open("a") as file:
                    file.write(
                        "# added by knobsweep bench/slurm.py after stopping the cluster"
                        " (see tests/test_slurm.py)\nMessageTimeout=1\n"
                    )
            print("cluster stopped")
        lock.close()


if __name__ == "__main__":
    main()

"""A real single-node Slurm cluster on localhost: `snakemake --profile slurm` as a user types it.

Starts the cluster with ../shared/slurm/start-local-slurm.sh (root; installs slurm-wlm, munge and
MariaDB for `sacct` on first use) with two fake GPUs, runs a tiny sweep through the repo's own
slurm/ profile, checks every Slurm job's requested CPUs / memory / time from `sacct`, compares the
report with a local run's, schedules a 2-GPU training job, and stops the cluster again.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import REPO

pytestmark = [pytest.mark.slow, pytest.mark.slurm]

SLURM_SCRIPTS = REPO.parent / "shared" / "slurm"
PARTITION = "debug"
# Test-only overrides of the profile: this cluster's partition (slurm/site.yaml) and short timings.
FAST = ("--slurm-init-seconds-before-status-checks", "2", "--latency-wait", "5", "--jobs", "4")

SPEC = """
baseline:
  model: {name: tiny}
  data: {source: gsm8k, path: data/gsm8k, train_size: 8, eval_size: 4}
  train: {learning_rate: 5.0e-4, batch_size: 4}
  rollout: {n: 4, temperature: 1.0, top_k: 0, max_tokens: 16}
  reward: {name: gsm8k, format_weight: 0.5}
  eval: {max_tokens: 16}
  resources:
    train: {cpus: 1, mem_mb: 3000, runtime_min: 20}
    merge: {mem_mb: 2000, runtime_min: 10}
    eval: {mem_mb: 2500, runtime_min: 15}
sweep:
  train.learning_rate: [2.0e-4]
"""
TIMING = re.compile(r"time|elapsed|_s$|per_s|hours")


def env() -> dict:
    return dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")


def run(cmd: list[str], cwd: Path, timeout: int = 400) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, cwd=cwd, env=env(), capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        logs = "".join(f"\n== {p}\n{p.read_text()[-2000:]}" for p in cwd.rglob("*.log") if "logs" in p.parts or "slurm_logs" in p.parts)
        raise AssertionError(f"{' '.join(cmd)} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}{logs}")
    return result


@pytest.fixture(scope="module")
def cluster():
    start, stop = SLURM_SCRIPTS / "start-local-slurm.sh", SLURM_SCRIPTS / "stop-local-slurm.sh"
    if not start.is_file() or not stop.is_file():
        pytest.skip(f"no local Slurm scripts at {SLURM_SCRIPTS}")
    if os.geteuid() != 0:
        pytest.skip("starting a local Slurm cluster needs root")
    # one session at a time drives the machine's cluster (others wait here rather than stop it under us)
    lock = open("/tmp/knobsweep-slurm-test.lock", "w")
    fcntl.flock(lock, fcntl.LOCK_EX)
    # a cluster that was already up belongs to someone else (another test session): leave it running
    already_up = all(_alive(Path(f"/run/slurm/{d}.pid")) for d in ("slurmctld", "slurmd"))
    result = subprocess.run(["bash", str(start)], env=dict(os.environ, SLURM_FAKE_GPUS="2", SLURM_PARTITION=PARTITION),
                            capture_output=True, text=True, timeout=600)
    try:
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        yield
    finally:
        if not already_up:
            subprocess.run(["bash", str(stop)], capture_output=True, text=True, timeout=300)
            fail_fast_without_controller()
        lock.close()


def fail_fast_without_controller(conf: Path = Path("/etc/slurm/slurm.conf")) -> None:
    """With slurm-client installed and no slurmctld, the executor plugin's `scontrol show config`
    probe retries for MessageTimeout (10 s) in every later `snakemake` call, local runs included.
    MessageTimeout=1 makes it fail at once; start-local-slurm.sh rewrites the file on its next start."""
    if conf.is_file() and "MessageTimeout" not in conf.read_text():
        with conf.open("a") as file:
            file.write("# added by knobsweep tests/test_slurm.py after stopping the cluster (see there)\nMessageTimeout=1\n")


def _alive(pidfile: Path) -> bool:
    try:
        os.kill(int(pidfile.read_text().strip()), 0)
        return True
    except (OSError, ValueError):
        return False


def workflow_copy(root: Path, spec: str = SPEC) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for item in ("Snakefile", "rules", "workflow", "data", "slurm", "profiles"):
        source = REPO / item
        (shutil.copytree if source.is_dir() else shutil.copy)(source, root / item)
    (root / "experiments").mkdir()
    (root / "experiments" / "tiny.yaml").write_text(spec)
    (root / "slurm" / "site.yaml").write_text(f"partition: {PARTITION}\n")
    return root


def sacct(since: str, workdir: Path) -> list[dict]:
    """This workflow's Slurm jobs (by working directory: other sessions may share the cluster)."""
    fields = "JobID,State,ReqCPUS,ReqMem,Timelimit,Partition,AllocTRES,WorkDir,Comment"
    out = subprocess.run(["sacct", "-X", "-P", "-n", "-S", since, f"--format={fields}"],
                         capture_output=True, text=True, check=True).stdout
    jobs = [dict(zip(fields.split(","), line.split("|"))) for line in out.splitlines() if line.strip()]
    return [job for job in jobs if Path(job["WorkDir"]).resolve() == workdir.resolve()]


def rows(workdir: Path) -> list[dict]:
    summary = json.loads((workdir / "results" / "tiny" / "summary.json").read_text())
    return sorted(({k: v for k, v in row.items() if not TIMING.search(k)} for row in summary["rows"]),
                  key=lambda row: (row["run"], row["reference"]))


@pytest.fixture(scope="module")
def slurm_run(cluster, tmp_path_factory):
    since = subprocess.run(["date", "+%Y-%m-%dT%H:%M:%S"], capture_output=True, text=True).stdout.strip()
    workdir = workflow_copy(tmp_path_factory.mktemp("slurm"))
    result = run([sys.executable, "-m", "snakemake", "--profile", "slurm", *FAST], workdir)
    return workdir, result, since


def test_every_cluster_stage_ran_as_a_slurm_job_with_the_requested_resources(slurm_run):
    workdir, result, since = slurm_run
    log = result.stdout + result.stderr
    assert "Using profile" in log and "slurm" in log
    jobs = sacct(since, workdir)
    by_rule: dict[str, list[dict]] = {}
    for job in jobs:
        by_rule.setdefault(job["Comment"].split("_wildcards")[0], []).append(job)
    assert all(job["State"] == "COMPLETED" for job in jobs), jobs
    assert all(job["Partition"] == PARTITION for job in jobs), jobs
    # two trainings (baseline, learning-rate arm), each its own job: 1 CPU, 3000 MB, 20 min
    trains = by_rule.pop("rule_train")
    assert [(j["ReqCPUS"], j["ReqMem"], j["Timelimit"]) for j in trains] == [("1", "3000M", "00:20:00")] * 2
    # merge + evaluation of each trained model share one allocation (profile `groups:`): CPUs and
    # memory are the larger of the two, the time limit their sum; the base model's eval runs alone
    merged = by_rule.pop("rule_merged_eval_evaluate_merge")
    assert [(j["ReqCPUS"], j["ReqMem"], j["Timelimit"]) for j in merged] == [("1", "2500M", "00:25:00")] * 2
    assert [(j["ReqCPUS"], j["ReqMem"], j["Timelimit"]) for j in by_rule.pop("rule_merged_eval_evaluate")] == [
        ("1", "2500M", "00:15:00")]
    assert by_rule == {}, by_rule  # data, tiny model and report are localrules: no Slurm round trip
    assert "localrule report" in log and "localrule convert_data" in log
    # preemption: every job was submitted with --requeue
    for job in trains:
        detail = subprocess.run(["scontrol", "show", "job", job["JobID"]], capture_output=True, text=True).stdout
        assert not detail or "Requeue=1" in detail


def test_slurm_report_equals_a_local_runs(slurm_run, tmp_path):
    workdir, _, _ = slurm_run
    local = workflow_copy(tmp_path / "local")
    run([sys.executable, "-m", "snakemake", "--cores", "2"], local)
    assert rows(workdir) == rows(local)
    assert len(rows(workdir)) >= 3


def test_two_gpu_training_job_gets_both_gpus_and_two_processes(cluster, tmp_path):
    """The train rule's resources and accelerate arguments for gpus: 2, scheduled on 2 fake GPUs.

    Fake GPUs cannot run NCCL, so the job records what it was given instead of training."""
    workdir = workflow_copy(tmp_path)
    (workdir / "Snakefile").write_text(textwrap.dedent("""
        from knobsweep.resources import gpu_shell, launch_args, scheduler_resources, stage_resources
        CONFIG = {"model": {"name": "Qwen/Qwen2.5-0.5B-Instruct"},
                  "resources": {"train": {"gpus": 2, "cpus": 2, "mem_mb": 1000, "runtime_min": 5}}}
        RES = stage_resources(CONFIG, "train")

        rule train:
            output: "gpu.txt"
            params: launch=launch_args(RES["gpus"])
            resources: **scheduler_resources(RES, "train"), shell_exec=gpu_shell(RES["gpus"])
            shell: "echo $CUDA_VISIBLE_DEVICES > {output}; echo accelerate launch {params.launch} >> {output}"
    """))
    since = subprocess.run(["date", "+%Y-%m-%dT%H:%M:%S"], capture_output=True, text=True).stdout.strip()
    run([sys.executable, "-m", "snakemake", "--profile", "slurm", *FAST], workdir)
    devices, command = (workdir / "gpu.txt").read_text().splitlines()
    assert devices == "0,1"
    assert "--num_processes 2" in command and "--multi_gpu" in command
    (job,) = [j for j in sacct(since, workdir) if j["Comment"].startswith("rule_train")]
    # --gpus=2 --cpus-per-gpu=1: sacct's ReqCPUS shows the per-task minimum; the allocation has both
    assert {"cpu=2", "gres/gpu=2", "mem=1000M"} <= set(job["AllocTRES"].split(",")), job
    assert job["ReqMem"] == "1000M" and job["Timelimit"] == "00:05:00", job

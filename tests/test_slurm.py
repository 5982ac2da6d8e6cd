"""A real single-node Slurm cluster on localhost: `snakemake --profile slurm` as a user types it.

Starts the cluster with the repo's slurm/local/start-local-slurm.sh (root; installs Debian's
slurm-wlm, munge and MariaDB for `sacct` on first use) with two fake GPUs, runs a tiny sweep through the repo's own
slurm/ profile, checks every Slurm job's requested CPUs / memory / time from `sacct`, compares the
report with a local run's, runs the multi-node launcher (srun, one accelerate per node, 2 fake
GPUs) for real, preempts a training job with `scancel --signal=TERM` and resumes it by running the
workflow again, and stops the cluster again.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import textwrap
import time
from pathlib import Path

import pytest
from conftest import REPO, snakemake_command, user_shell
from test_train_distributed import TWO, assert_same_run, config_of, inputs, train  # noqa: F401 (inputs: a fixture)
from test_train_lifecycle import status_of

from knobsweep.io import read_jsonl
from knobsweep.resources import launch_command, scheduler_resources

pytestmark = [pytest.mark.slow, pytest.mark.slurm]

SLURM_SCRIPTS = REPO / "slurm" / "local"
SLURM_PACKAGES = ("munge", "slurmctld", "slurmd", "slurm-client", "slurmdbd", "mariadb-server")
PARTITION = "debug"
# Test-only overrides of the profile: this cluster's partition (slurm/site.yaml) and short timings.
FAST = ("--slurm-init-seconds-before-status-checks", "2", "--latency-wait", "5", "--jobs", "4")

SPEC = """
baseline:
  model: {name: tiny}
  data: {source: gsm8k, path: data/gsm8k, train_size: 16, eval_size: 4}
  train: {learning_rate: 5.0e-4, batch_size: 4}
  rollout: {n: 8, temperature: 1.0, top_k: 0, max_tokens: 16}
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


def run(cmd: list[str], cwd: Path, timeout: int = 400, activated: bool = True) -> subprocess.CompletedProcess:
    """`cmd` in `cwd`, from a user's shell with the venv activated or not (conftest.user_shell)."""
    env = user_shell(activated, cwd.parent / f"{cwd.name}-decoys")
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        logs = "".join(
            f"\n== {p}\n{p.read_text()[-2000:]}"
            for p in cwd.rglob("*.log")
            if "logs" in p.parts or "slurm_logs" in p.parts
        )
        raise AssertionError(f"{' '.join(cmd)} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}{logs}")
    return result


@pytest.fixture(scope="module")
def cluster():
    start, stop = SLURM_SCRIPTS / "start-local-slurm.sh", SLURM_SCRIPTS / "stop-local-slurm.sh"
    reason = cannot_start_a_cluster()
    if reason:
        pytest.skip(reason)
    # one session at a time drives the machine's cluster (others wait here rather than stop it under us)
    lock = open("/tmp/knobsweep-slurm-test.lock", "w")
    fcntl.flock(lock, fcntl.LOCK_EX)
    # a cluster that was already up belongs to someone else (another test session): leave it running
    already_up = all(_alive(Path(f"/run/slurm/{d}.pid")) for d in ("slurmctld", "slurmd"))
    result = subprocess.run(
        ["bash", str(start)],
        env=dict(os.environ, SLURM_FAKE_GPUS="2", SLURM_PARTITION=PARTITION),
        capture_output=True,
        text=True,
        timeout=600,
    )
    try:
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        yield
    finally:
        if not already_up:
            subprocess.run(["bash", str(stop)], capture_output=True, text=True, timeout=300)
            fail_fast_without_controller()
        lock.close()


def cannot_start_a_cluster() -> str | None:
    """Why slurm/local/start-local-slurm.sh cannot run here, with the command that fixes it."""
    if os.geteuid() != 0:
        return (
            "the real Slurm tests start a local cluster (slurm/local/start-local-slurm.sh), which needs root: "
            "run them as root, e.g. `sudo .venv/bin/pytest -m slurm`"
        )
    if shutil.which("apt-get") is None:
        installed = (
            subprocess.run(["dpkg-query", "-W", "-f=${Status}\\n", *SLURM_PACKAGES], capture_output=True, text=True)
            if shutil.which("dpkg-query")
            else None
        )
        if installed is None or installed.stdout.count("install ok installed") < len(SLURM_PACKAGES):
            return (
                "the local Slurm cluster needs Debian's packages and this system has no apt-get: install "
                f"{' '.join(SLURM_PACKAGES)} (Debian/Ubuntu: `apt-get install {' '.join(SLURM_PACKAGES)}`)"
            )
    return None


def fail_fast_without_controller(conf: Path = Path("/etc/slurm/slurm.conf")) -> None:
    """With slurm-client installed and no slurmctld, the executor plugin's `scontrol show config`
    probe retries for MessageTimeout (10 s) in every later `snakemake` call, local runs included.
    MessageTimeout=1 makes it fail at once; start-local-slurm.sh rewrites the file on its next start."""
    if conf.is_file() and "MessageTimeout" not in conf.read_text():
        with conf.open("a") as file:
            file.write(
                "# added by knobsweep tests/test_slurm.py after stopping the cluster (see there)\nMessageTimeout=1\n"
            )


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
    out = subprocess.run(
        ["sacct", "-X", "-P", "-n", "-S", since, f"--format={fields}"], capture_output=True, text=True, check=True
    ).stdout
    jobs = [dict(zip(fields.split(","), line.split("|"))) for line in out.splitlines() if line.strip()]
    return [job for job in jobs if Path(job["WorkDir"]).resolve() == workdir.resolve()]


def rows(workdir: Path) -> list[dict]:
    summary = json.loads((workdir / "results" / "tiny" / "summary.json").read_text())
    return sorted(
        ({k: v for k, v in row.items() if not TIMING.search(k)} for row in summary["rows"]),
        key=lambda row: (row["run"], row["reference"]),
    )


@pytest.fixture(scope="module")
def slurm_run(cluster, tmp_path_factory):
    since = subprocess.run(["date", "+%Y-%m-%dT%H:%M:%S"], capture_output=True, text=True).stdout.strip()
    workdir = workflow_copy(tmp_path_factory.mktemp("slurm"))
    # `.venv/bin/snakemake --profile slurm` from a shell without the venv: the jobs must still use it
    result = run([*snakemake_command(activated=False), "--profile", "slurm", *FAST], workdir, activated=False)
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
    # two trainings (baseline, learning-rate arm), each its own job that merges its adapter at the
    # end: CPUs and memory the larger of train's and merge's (1, 3000 MB), the time limit their sum
    trains = by_rule.pop("rule_train")
    assert [(j["ReqCPUS"], j["ReqMem"], j["Timelimit"]) for j in trains] == [("1", "3000M", "00:30:00")] * 2
    # three evaluations (both runs' merged models and the base model), each alone
    assert [(j["ReqCPUS"], j["ReqMem"], j["Timelimit"]) for j in by_rule.pop("rule_evaluate")] == [
        ("1", "2500M", "00:15:00")
    ] * 3
    assert by_rule == {}, by_rule  # data, tiny model and report are localrules: no Slurm round trip
    assert "localrule report" in log and "localrule convert_data" in log
    # preemption: every job was submitted with --requeue
    for job in trains:
        detail = subprocess.run(["scontrol", "show", "job", job["JobID"]], capture_output=True, text=True).stdout
        assert not detail or "Requeue=1" in detail


def test_slurm_report_equals_a_local_runs(slurm_run, tmp_path):
    workdir, _, _ = slurm_run
    local = workflow_copy(tmp_path / "local")
    run([*snakemake_command(activated=True), "--cores", "2"], local)
    assert rows(workdir) == rows(local)
    assert len(rows(workdir)) >= 3


def test_per_node_launcher_runs_under_srun_with_its_rank_head_node_and_port(cluster, tmp_path):
    """The multi-node training command, squeezed onto this one-node cluster: the sbatch request of a
    two-node job (gres per node, one task per node, `mpi`: no job step of Snakemake's own), the
    shell's `srun ... bash -c 'accelerate launch ...'`, and `accelerate launch --multi_gpu` starting
    one process per (fake) GPU. Fake GPUs cannot run NCCL, so each process records what it was
    given instead of training."""
    workdir = workflow_copy(tmp_path)
    (workdir / "ranks.py").write_text(
        textwrap.dedent("""
        import json, os, sys
        keys = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_PORT", "SLURM_NODEID", "SLURM_JOB_ID",
                "CUDA_VISIBLE_DEVICES")
        # the parent is accelerate's launcher (torch elastic runs inside it): the arguments it got
        launcher = open(f"/proc/{os.getppid()}/cmdline").read().split(chr(0))
        grace = [v for v in open(f"/proc/{os.getppid()}/environ").read().split(chr(0))
                 if v.startswith("TORCH_ELASTIC_SHUTDOWN_TIMEOUT=")]
        with open(sys.argv[1], "a") as out:
            out.write(json.dumps({**{k: os.environ.get(k) for k in keys}, "launcher": launcher, "grace": grace})
                      + chr(10))
    """)
    )
    (workdir / "Snakefile").write_text(
        textwrap.dedent("""
        from knobsweep.resources import launch_command, scheduler_resources, stage_resources
        CONFIG = {"model": {"name": "Qwen/Qwen2.5-0.5B-Instruct"},
                  "resources": {"train": {"gpus": 2, "cpus": 2, "mem_mb": 1000, "runtime_min": 5, "nodes": 2}}}
        TWO_NODES = stage_resources(CONFIG, "train")
        # one node here: the two-node request with nodes=1 (still 2 tasks: the plugin's `mpi` needs > 1)
        SLURM = {**scheduler_resources(TWO_NODES, "train"), "nodes": 1}

        rule train:
            output: "ranks.jsonl"
            params: launch=launch_command({**TWO_NODES, "nodes": 1}, srun=True)
            resources: **{k: v for k, v in SLURM.items() if v is not None}
            shell: "{params.launch} ranks.py {output}"
    """)
    )
    since = subprocess.run(["date", "+%Y-%m-%dT%H:%M:%S"], capture_output=True, text=True).stdout.strip()
    run([*snakemake_command(activated=True), "--profile", "slurm", *FAST], workdir)
    ranks = sorted(
        (json.loads(line) for line in (workdir / "ranks.jsonl").read_text().splitlines()), key=lambda r: r["RANK"]
    )
    (job,) = [j for j in sacct(since, workdir) if j["Comment"].startswith("rule_train")]
    host = subprocess.run(["hostname", "-s"], capture_output=True, text=True).stdout.strip()
    port = str(29500 + int(job["JobID"]) % 10000)  # the job's own port, read on the node
    assert [(r["RANK"], r["LOCAL_RANK"], r["WORLD_SIZE"]) for r in ranks] == [("0", "0", "2"), ("1", "1", "2")]
    assert {(r["MASTER_PORT"], r["SLURM_NODEID"], r["SLURM_JOB_ID"]) for r in ranks} == {(port, "0", job["JobID"])}
    # the per-node shell expanded the rank, the head node (scontrol) and the port on the node
    launcher = " ".join(ranks[0]["launcher"])
    for part in (
        "--machine_rank 0",
        f"--main_process_ip {host}",
        f"--main_process_port {port}",
        "--multi_gpu",
        "--num_processes 2",
    ):
        assert part in launcher, launcher
    assert ranks[0]["grace"] == ["TORCH_ELASTIC_SHUTDOWN_TIMEOUT=120"]  # workers get 120 s after SIGTERM, not 30
    assert ranks[0]["CUDA_VISIBLE_DEVICES"] == "0,1"  # the step got the job's two GPUs
    # sbatch --gres=gpu:2 --cpus-per-gpu=1 --ntasks=2: sacct's ReqCPUS shows the per-task minimum
    assert {"cpu=2", "gres/gpu=2", "mem=1000M"} <= set(job["AllocTRES"].split(",")), job
    assert job["ReqMem"] == "1000M" and job["Timelimit"] == "00:05:00", job


def test_two_cpu_processes_train_as_one_slurm_job_through_the_per_node_launcher(cluster, tmp_path, inputs):
    """`resources.train.processes: 2` as a job of 2 tasks on this cluster: the rule's `srun` starts the
    per-node launcher, which reads its rank, the head node and the port on the node and starts 2
    training processes (gloo) that train for real; the run equals the same 2-process run made locally."""
    config = config_of("sft")
    request = {"gpus": 0, "processes": 2, "cpus": 2, "mem_mb": 3000, "runtime_min": 10, "nodes": 1}
    # the multi-node job's shape on one node: `mpi` (the shell's srun gets the allocation), 2 tasks of 1 CPU
    slurm = {**scheduler_resources(request, "train"), "mpi": "srun", "tasks": 2, "cpus_per_task": 1}
    stage = ["-m", "knobsweep.train", "--config-json", json.dumps(config), "--model", str(inputs["model"])]
    stage += ["--data", str(inputs["sft"]), "--out", "train"]
    command = f"{launch_command(request, srun=True)} {shlex.join(stage)}"
    workdir = workflow_copy(tmp_path / "slurm")
    (workdir / "Snakefile").write_text(
        textwrap.dedent(f"""
        rule train:
            output: directory("train/adapter")
            resources: **{ {k: v for k, v in slurm.items() if v is not None}!r}
            params: command={command!r}
            shell: "{{params.command}}"
    """)
    )
    since = subprocess.run(["date", "+%Y-%m-%dT%H:%M:%S"], capture_output=True, text=True).stdout.strip()
    run([*snakemake_command(activated=True), "--profile", "slurm", *FAST], workdir, timeout=900)
    (job,) = [j for j in sacct(since, workdir) if j["Comment"].startswith("rule_train")]
    assert job["State"] == "COMPLETED" and "cpu=2" in job["AllocTRES"].split(","), job
    # the launcher ran as a job step of its own: srun's `bash -c 'accelerate launch ...'`
    steps = subprocess.run(
        ["sacct", "-j", job["JobID"], "-n", "-P", "--format=JobID,JobName,State"], capture_output=True, text=True
    ).stdout.splitlines()
    assert f"{job['JobID']}.0|bash|COMPLETED" in steps, steps
    on_slurm = status_of(workdir / "train"), read_jsonl(workdir / "train" / "metrics.jsonl"), ""
    assert on_slurm[0]["processes"] == 2 and on_slurm[0]["state"] == "COMPLETED", on_slurm[0]
    local = train(config, inputs, tmp_path / "local", TWO)
    assert_same_run(local, on_slurm, ("loss", "grad_norm", "mean_token_accuracy", "num_tokens"))


PREEMPT_SPEC = """
baseline:
  model: {name: tiny}
  data: {source: gsm8k, path: data/gsm8k, train_size: 80, eval_size: 4}
  train: {learning_rate: 5.0e-4, batch_size: 1, save_every: 2, keep_checkpoints: 2}
  rollout: {n: 4, temperature: 1.0, top_k: 0, max_tokens: 16}
  reward: {name: gsm8k, format_weight: 0.5}
  eval: {max_tokens: 16}
  resources:
    train: {cpus: 1, mem_mb: 3000, runtime_min: 20}
"""
PREEMPT_STEPS = 80  # 80 prompts, 1 per step, 1 epoch: ~0.2 s a step here


def steps_in(path: Path) -> list[int]:
    try:
        return [json.loads(line)["step"] for line in path.read_text().splitlines() if line.strip()]
    except (OSError, ValueError):  # not written yet, or a line half-written
        return []


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def running_train_job(workdir: Path) -> str | None:
    out = subprocess.run(["squeue", "-h", "-t", "RUNNING", "-o", "%i|%k|%Z"], capture_output=True, text=True).stdout
    for line in out.splitlines():
        job, comment, directory = line.split("|")
        if comment.startswith("rule_train") and Path(directory).resolve() == workdir.resolve():
            return job
    return None


def test_a_preempted_training_job_resumes_from_its_checkpoint_when_the_workflow_runs_again(
    cluster, tmp_path, monkeypatch
):
    """`scancel --signal=TERM` (what `--signal=TERM@120` sends before the time limit, and what
    preemption sends) reaches the trainer under sbatch -> srun step -> snakemake -> accelerate:
    it finishes its step, saves a checkpoint and exits CANCELLED; the same command again resumes."""
    from knobsweep.pipeline import build_pipeline, experiment_files

    workdir = workflow_copy(tmp_path, PREEMPT_SPEC)
    monkeypatch.chdir(workdir)
    (key,) = build_pipeline(experiment_files(None)).train
    out = workdir / "results" / "train" / key
    # the whole workflow, twice, as a user types it: the report onerror builds after the preemption
    # must not make the second run find nothing to do
    command = [*snakemake_command(activated=True), "--profile", "slurm", *FAST]
    since = subprocess.run(["date", "+%Y-%m-%dT%H:%M:%S"], capture_output=True, text=True).stdout.strip()
    first = subprocess.Popen(
        command,
        cwd=workdir,
        env=user_shell(True, tmp_path / "decoys"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_for(lambda: first.poll() is not None or len(steps_in(out / "metrics.jsonl")) >= 6, 300, "6 training steps")
        assert first.poll() is None, first.communicate()[0][-4000:]
        job = running_train_job(workdir)
        assert job, "no running train job in squeue"
        subprocess.run(["scancel", "--signal=TERM", job], check=True)
        output, _ = first.communicate(timeout=300)
    finally:
        if first.poll() is None:
            first.send_signal(signal.SIGINT)  # Snakemake's executor stops on SIGINT, not on SIGTERM
            first.wait(60)
    assert first.returncode != 0, output[-3000:]
    cancelled = json.loads((out / "status.json").read_text())
    assert cancelled["state"] == "CANCELLED" and cancelled["reason"].startswith("SIGTERM at step "), cancelled
    stopped = cancelled["step"]
    assert 6 <= stopped < PREEMPT_STEPS, cancelled
    assert (out / "checkpoints" / f"checkpoint-{stopped}" / "trainer_state.json").is_file()  # survived the failure
    assert not (out / "adapter").exists()

    assert json.loads((workdir / "results" / "tiny" / "summary.json").read_text())["rows"][0]["status"] == "CANCELLED"
    second = run(command, workdir)  # the same command: the train job is submitted again and resumes
    assert "Nothing to be done" not in second.stdout + second.stderr
    status = json.loads((out / "status.json").read_text())
    assert (status["state"], status["step"], status["attempt"]) == ("COMPLETED", PREEMPT_STEPS, 2), status
    assert status["resumed_from"].endswith(f"checkpoint-{stopped}")
    assert steps_in(out / "metrics.jsonl") == list(range(1, PREEMPT_STEPS + 1))  # every step exactly once
    assert (out / "adapter" / "adapter_config.json").is_file()
    trains = [j for j in sacct(since, workdir) if j["Comment"].startswith("rule_train")]
    assert [j["State"] for j in trains] == ["FAILED", "COMPLETED"], trains

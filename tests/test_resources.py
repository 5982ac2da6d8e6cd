"""Stage resources -> Snakemake / Slurm keywords, accelerate launch commands, and local GPU assignment."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from knobsweep.devices import available_devices, claim
from knobsweep.resources import (PREEMPT_SIGNAL, gpu_shell, launch_args, launch_command, scheduler_resources,
                                 site_settings, stage_resources)
from knobsweep.spec import load_experiment

SPEC = """
baseline:
  model: {name: Qwen/Qwen2.5-0.5B-Instruct}
  data: {source: gsm8k, path: data/gsm8k, train_size: 8, eval_size: 4}
  resources:
    train: {gpus: 4, gpu_model: a100, cpus: 16, mem_mb: 120000, runtime_min: 600, nodes: 2,
            partition: gpu, account: proj, qos: high, constraint: ib}
sweep:
  train.learning_rate: [2.0e-4]
"""


@pytest.fixture(autouse=True)
def no_site(monkeypatch, tmp_path):
    for key in list(os.environ):
        if key.startswith("KNOBSWEEP_SLURM_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("KNOBSWEEP_SLURM_SITE", str(tmp_path / "no-site.yaml"))


def config(name="tiny", **stages):
    return {"model": {"name": name}, "resources": {s: stages.get(s, {}) for s in
                                                   ("data", "train", "merge", "eval", "report")}}


def test_stage_defaults_cpu_for_tiny_gpu_for_real_models():
    assert stage_resources(config("tiny"), "train")["gpus"] == 0
    assert stage_resources(config("tiny"), "eval")["gpus"] == 0
    real = config("Qwen/Qwen2.5-0.5B-Instruct")
    assert {s: stage_resources(real, s)["gpus"] for s in ("data", "train", "merge", "eval", "report")} == {
        "data": 0, "train": 1, "merge": 0, "eval": 1, "report": 0}
    train = stage_resources(real, "train")
    assert (train["cpus"], train["mem_mb"], train["runtime_min"], train["nodes"]) == (8, 64000, 240, 1)
    assert train["partition"] is None and train["account"] is None and train["qos"] is None


def test_spec_resources_map_onto_the_slurm_plugin_keywords(write_spec):
    experiment = load_experiment(write_spec(SPEC))
    train = stage_resources(experiment.baseline.config, "train")
    assert scheduler_resources(train, "train") == {
        "mem_mb": 120000, "runtime": 600, "gpu": 4, "gpu_model": "a100", "cpus_per_gpu": 4,
        "cpus_per_task": None, "slurm_partition": "gpu", "slurm_account": "proj", "qos": "high",
        "constraint": "ib", "nodes": 2, "slurm_extra": PREEMPT_SIGNAL}
    data = scheduler_resources(stage_resources(experiment.baseline.config, "data"), "data")
    assert data["gpu"] == 0 and data["cpus_per_task"] == 2 and data["cpus_per_gpu"] is None
    assert data["slurm_extra"] is None and data["nodes"] is None and data["slurm_partition"] is None


def test_site_settings_come_from_the_environment_or_a_site_file(monkeypatch, tmp_path):
    site = tmp_path / "site.yaml"
    site.write_text("partition: cpu\ngpu_partition: gpu\naccount: proj42\n")
    monkeypatch.setenv("KNOBSWEEP_SLURM_SITE", str(site))
    monkeypatch.setenv("KNOBSWEEP_SLURM_QOS", "normal")
    assert site_settings() == {"partition": "cpu", "gpu_partition": "gpu", "account": "proj42", "qos": "normal"}
    real = config("Qwen/Qwen2.5-0.5B-Instruct", merge={"account": "other"})
    train, merge = stage_resources(real, "train"), stage_resources(real, "merge")
    assert (train["partition"], train["account"], train["qos"]) == ("gpu", "proj42", "normal")
    assert (merge["partition"], merge["account"]) == ("cpu", "other")  # the spec wins over the site
    monkeypatch.setenv("KNOBSWEEP_SLURM_PARTITION", "short")
    assert stage_resources(real, "data")["partition"] == "short"  # the environment wins over the file
    site.write_text("partiton: cpu\n")
    with pytest.raises(ValueError, match="partiton"):
        site_settings()


def test_launch_args_cpu_single_and_multi_gpu():
    assert launch_args(0).startswith("--cpu --num_processes 1")
    assert launch_args(1) == "--num_processes 1 --num_machines 1 --mixed_precision bf16 --dynamo_backend no"
    assert "--num_processes 2 --num_machines 1" in launch_args(2) and "--multi_gpu" in launch_args(2)
    assert launch_args({"gpus": 2, "nodes": 1}) == launch_args(2)


def test_two_node_command_starts_one_launcher_per_node_with_slurm_ranks():
    command = launch_command({"gpus": 4, "nodes": 2}, "-m knobsweep.train RUN")
    assert command.startswith("srun --nodes=2 --ntasks=2 --ntasks-per-node=1 ")
    for part in ("--num_processes 8", "--num_machines 2", "--multi_gpu", "--machine_rank $SLURM_NODEID",
                 "--main_process_port 29500", "--rdzv_backend c10d", "-m knobsweep.train RUN"):
        assert part in command
    # the rank and head node are read on each node at run time, not in the batch shell
    assert "'accelerate launch" in command
    assert launch_command({"gpus": 2, "nodes": 1}, "-m x") == f"accelerate launch {launch_args(2)} -m x"


def test_available_devices(monkeypatch):
    assert available_devices({"KNOBSWEEP_GPUS": "3"}) == ["0", "1", "2"]
    assert available_devices({"KNOBSWEEP_GPUS": "1,3"}) == ["1", "3"]
    assert available_devices({"CUDA_VISIBLE_DEVICES": "2,5"}) == ["2", "5"]
    assert available_devices({"CUDA_VISIBLE_DEVICES": ""}) == []


def test_claims_never_share_a_device_and_are_all_or_nothing(tmp_path):
    first, fds1 = claim(2, ["0", "1", "2"], tmp_path)
    second, fds2 = claim(1, ["0", "1", "2"], tmp_path)
    assert first == ["0", "1"] and second == ["2"]
    with pytest.raises(TimeoutError):
        claim(1, ["0", "1", "2"], tmp_path, timeout=0.3, poll=0.05)
    for fd in fds1:
        os.close(fd)
    assert claim(2, ["0", "1", "2"], tmp_path, timeout=1)[0] == ["0", "1"]
    with pytest.raises(RuntimeError, match="asks for 4 GPUs but only 3"):
        claim(4, ["0", "1", "2"], tmp_path)


def test_a_claim_is_held_by_the_command_until_it_exits(tmp_path):
    env = dict(os.environ, KNOBSWEEP_GPUS="1", KNOBSWEEP_GPU_LOCK_DIR=str(tmp_path))
    env.pop("SLURM_JOB_ID", None)
    holder = subprocess.Popen([sys.executable, "-m", "knobsweep.devices", "--gpus", "1", "--",
                               "sh", "-c", "echo $CUDA_VISIBLE_DEVICES; sleep 2"],
                              env=env, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "0"
    with pytest.raises(TimeoutError):  # the exec'd command holds the lock
        claim(1, ["0"], tmp_path, timeout=0.3, poll=0.05)
    holder.wait(10)
    assert claim(1, ["0"], tmp_path, timeout=2)[0] == ["0"]  # released when it exited


def test_inside_slurm_the_allocation_decides(tmp_path):
    env = dict(os.environ, SLURM_JOB_ID="7", CUDA_VISIBLE_DEVICES="0,1", KNOBSWEEP_GPU_LOCK_DIR=str(tmp_path))
    out = subprocess.run([sys.executable, "-m", "knobsweep.devices", "--gpus", "2", "--", "sh", "-c",
                          "echo $CUDA_VISIBLE_DEVICES"], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "0,1" and not list(tmp_path.iterdir())


@pytest.mark.slow
def test_local_snakemake_gives_each_gpu_job_its_own_devices(tmp_path):
    """Real Snakemake, `--resources gpu=2` and 2 (pretend) GPUs: overlapping jobs never share a device."""
    (tmp_path / "Snakefile").write_text(textwrap.dedent(f"""
        from knobsweep.resources import gpu_shell
        GPUS = {{"a": 1, "b": 1, "c": 1, "d": 1, "e": 2, "f": 1}}
        rule all:
            input: expand("out/{{name}}.txt", name=GPUS)
        rule job:
            output: "out/{{name}}.txt"
            resources:
                gpu=lambda wc: GPUS[wc.name],
                shell_exec=lambda wc: gpu_shell(GPUS[wc.name]),
            shell: "s=$(date +%s.%N); sleep 1; echo $s $(date +%s.%N) $CUDA_VISIBLE_DEVICES > {{output}}"
    """))
    env = dict(os.environ, KNOBSWEEP_GPUS="2", KNOBSWEEP_GPU_LOCK_DIR=str(tmp_path / "locks"),
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    env.pop("SLURM_JOB_ID", None)
    subprocess.run([sys.executable, "-m", "snakemake", "--cores", "4", "--resources", "gpu=2"],
                   cwd=tmp_path, env=env, check=True, capture_output=True, timeout=300)
    jobs = {}
    for path in (tmp_path / "out").iterdir():
        start, end, devices = path.read_text().split()
        jobs[path.stem] = (float(start), float(end), set(devices.split(",")))
    assert jobs["e"][2] == {"0", "1"}
    assert all(len(j[2]) == 1 for name, j in jobs.items() if name != "e")
    for a in jobs:
        for b in jobs:
            if a < b and jobs[a][0] < jobs[b][1] and jobs[b][0] < jobs[a][1]:  # ran at the same time
                assert not jobs[a][2] & jobs[b][2], (a, b, jobs)
    overlapping = sum(1 for a in jobs for b in jobs if a < b and jobs[a][0] < jobs[b][1] and jobs[b][0] < jobs[a][1])
    assert overlapping >= 1  # two 1-GPU jobs did run side by side


def test_gpu_shell_only_for_gpu_jobs(tmp_path):
    assert gpu_shell(0, tmp_path) is None
    path = Path(gpu_shell(2, tmp_path))
    assert os.access(path, os.X_OK) and "--gpus 2" in path.read_text()
    mtime = path.stat().st_mtime_ns
    time.sleep(0.01)
    assert gpu_shell(2, tmp_path) == str(path) and path.stat().st_mtime_ns == mtime  # not rewritten

"""Stage resources -> Snakemake / Slurm keywords, accelerate launch commands, and local GPU assignment."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import REPO

from knobsweep.devices import available_devices, claim
from knobsweep.resources import (
    GRACE_ENV,
    PREEMPT_SIGNAL,
    gpu_shell,
    launch_args,
    launch_command,
    scheduler_resources,
    site_settings,
    stage_resources,
    train_job_resources,
)
from knobsweep.spec import SpecError, load_experiment

CONFIGS = REPO / "workflow" / "accelerate"

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
    return {
        "model": {"name": name},
        "resources": {s: stages.get(s, {}) for s in ("data", "train", "merge", "eval", "report")},
    }


def test_stage_defaults_cpu_for_tiny_gpu_for_real_models():
    assert stage_resources(config("tiny"), "train")["gpus"] == 0
    assert stage_resources(config("tiny"), "eval")["gpus"] == 0
    real = config("Qwen/Qwen2.5-0.5B-Instruct")
    assert {s: stage_resources(real, s)["gpus"] for s in ("data", "train", "merge", "eval", "report")} == {
        "data": 0,
        "train": 1,
        "merge": 0,
        "eval": 1,
        "report": 0,
    }
    train = stage_resources(real, "train")
    assert (train["cpus"], train["mem_mb"], train["runtime_min"], train["nodes"]) == (8, 64000, 240, 1)
    assert train["partition"] is None and train["account"] is None and train["qos"] is None


def test_the_train_job_also_holds_its_merge(write_spec):
    # tiny: training on 1 CPU, 8000 MB, 240 min; the merge adds 30 min and needs less memory
    tiny = train_job_resources(config("tiny"))
    assert (tiny["gpus"], tiny["cpus"], tiny["mem_mb"], tiny["runtime_min"]) == (0, 1, 8000, 270)
    # a real model: the merge's default (4 CPUs, 32000 MB, 60 min) fits in training's request
    experiment = load_experiment(write_spec(SPEC))
    job = train_job_resources(experiment.baseline.config)
    assert {k: job[k] for k in ("gpus", "nodes", "cpus", "mem_mb", "runtime_min", "partition", "gpu_model")} == {
        "gpus": 4,
        "nodes": 2,
        "cpus": 16,
        "mem_mb": 120000,
        "runtime_min": 660,
        "partition": "gpu",
        "gpu_model": "a100",
    }
    # a merge that needs more than training gets it: the larger CPUs and memory, the summed time
    big = train_job_resources(
        config("Qwen/Qwen2.5-0.5B-Instruct", merge={"cpus": 32, "mem_mb": 200000, "runtime_min": 5})
    )
    assert (big["gpus"], big["cpus"], big["mem_mb"], big["runtime_min"]) == (1, 32, 200000, 245)


def test_the_merge_takes_only_cpus_memory_and_time(write_spec):
    with pytest.raises(SpecError) as error:
        load_experiment(write_spec(SPEC.replace("sweep:", "    merge: {mem_mb: 64000, partition: cpu}\nsweep:")))
    assert (
        "baseline.resources.merge.partition: 'cpu': the merge runs on the CPU at the end of the train job, "
        "on the train job's placement; merge takes only cpus, mem_mb, runtime_min"
    ) in str(error.value)
    load_experiment(write_spec(SPEC.replace("sweep:", "    merge: {mem_mb: 64000, gpus: 0}\nsweep:")))


def test_spec_resources_map_onto_the_slurm_plugin_keywords(write_spec):
    experiment = load_experiment(write_spec(SPEC))
    train = stage_resources(experiment.baseline.config, "train")
    # two nodes: GPUs per node as gres (the plugin's `gpu` would be --gpus, GPUs of the whole job),
    # one launcher task per node, and `mpi` so the rule's shell runs outside a job step of its own
    assert scheduler_resources(train, "train") == {
        "mem_mb": 120000,
        "runtime": 600,
        "gpu": None,
        "gpu_model": None,
        "cpus_per_gpu": 4,
        "cpus_per_task": None,
        "slurm_partition": "gpu",
        "slurm_account": "proj",
        "qos": "high",
        "constraint": "ib",
        "nodes": 2,
        "gres": "gpu:a100:4",
        "mpi": "srun",
        "tasks": 2,
        "tasks_per_gpu": 0,
        "slurm_extra": PREEMPT_SIGNAL,
    }
    one_node = scheduler_resources({**train, "nodes": 1}, "train")
    assert (one_node["gpu"], one_node["gpu_model"], one_node["nodes"]) == (4, "a100", None)
    assert one_node["gres"] is one_node["mpi"] is one_node["tasks"] is one_node["tasks_per_gpu"] is None
    data = scheduler_resources(stage_resources(experiment.baseline.config, "data"), "data")
    assert data["gpu"] is None and data["cpus_per_task"] == 2 and data["cpus_per_gpu"] is None
    assert data["slurm_extra"] is None and data["nodes"] is None and data["slurm_partition"] is None
    # every job step gets the preemption signal, not only the batch shell (B:), which ignores it
    assert PREEMPT_SIGNAL == "--signal=TERM@120"


class PluginJob:
    """What snakemake-executor-plugin-slurm reads from a job: `resources` (attributes and .get), threads."""

    def __init__(self, resources: dict, threads: int):
        self.resources = type("Resources", (dict,), {"__getattr__": dict.__getitem__})(
            {k: v for k, v in resources.items() if v is not None}
        )  # Snakemake drops None resources
        self.threads = threads


def sbatch_line(resources: dict, threads: int) -> str:
    """The sbatch command the Slurm executor plugin itself builds for these resources."""
    from snakemake_executor_plugin_slurm.submit_string import get_submit_command
    from snakemake_executor_plugin_slurm.utils import set_gres_string

    job = PluginJob(resources, threads)
    params = {
        "run_uuid": "u",
        "slurm_logfile": "l",
        "comment_str": "rule_train",
        "account": "",
        "partition": "",
        "workdir": "/w",
    }
    return get_submit_command(job, params) + set_gres_string(job)


def test_the_plugin_turns_a_two_node_request_into_one_task_per_node_with_gpus_per_node(write_spec):
    experiment = load_experiment(write_spec(SPEC))
    train = stage_resources(experiment.baseline.config, "train")
    flags = sbatch_line(scheduler_resources(train, "train"), threads=16).split()
    for flag in (
        "--nodes=2",
        "--ntasks=2",
        "--cpus-per-gpu=4",
        "--gres=gpu:a100:4",
        "--mem",
        "120000",
        "--signal=TERM@120",
    ):
        assert flag in flags, (flag, flags)
    assert not [f for f in flags if f.startswith(("--gpus", "--ntasks-per-gpu"))], flags
    single = sbatch_line(scheduler_resources({**train, "nodes": 1}, "train"), threads=16).split()
    assert "--gpus=a100:4" in single and not [f for f in single if f.startswith(("--nodes", "--gres"))]


def test_site_settings_come_from_the_environment_or_a_site_file(monkeypatch, tmp_path):
    site = tmp_path / "site.yaml"
    site.write_text("partition: cpu\ngpu_partition: gpu\naccount: proj42\n")
    monkeypatch.setenv("KNOBSWEEP_SLURM_SITE", str(site))
    monkeypatch.setenv("KNOBSWEEP_SLURM_QOS", "normal")
    assert site_settings() == {"partition": "cpu", "gpu_partition": "gpu", "account": "proj42", "qos": "normal"}
    real = config("Qwen/Qwen2.5-0.5B-Instruct", report={"account": "other"})
    train, report = stage_resources(real, "train"), stage_resources(real, "report")
    assert (train["partition"], train["account"], train["qos"]) == ("gpu", "proj42", "normal")
    assert (report["partition"], report["account"]) == ("cpu", "other")  # the spec wins over the site
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


def accelerate_view(command: str, entry: tuple[str, ...] = ("-m", "knobsweep.train")):
    """accelerate's own reading of `command ENTRY`: its parser, then its config-file merge."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser

    words = shlex.split(command)
    while "=" in words[0]:  # the launcher's environment (GRACE_ENV, ...), in front of the command
        words = words[1:]
    assert words[:2] == ["accelerate", "launch"], words
    args = launch_command_parser().parse_args(words[2:] + list(entry))
    _validate_launch_command(args)
    return args


def test_one_node_on_cpu():
    command = launch_command({"gpus": 0, "nodes": 1, "cpus": 1})
    assert command == (
        "accelerate launch --cpu --num_processes 1 --num_machines 1 --mixed_precision no --dynamo_backend no"
    )  # no torch elastic, no grace period to set
    args = accelerate_view(command)
    assert args.cpu and args.num_processes == 1 and not args.multi_gpu
    assert (args.module, args.training_script) == (True, "knobsweep.train")


def test_one_node_two_gpus_is_plain_data_parallel():
    command = launch_command({"gpus": 2, "nodes": 1, "cpus": 8})
    assert not command.startswith("srun") and "$" not in command
    # torch elastic gives its workers the whole preemption window after SIGTERM, not 30 s
    assert command.startswith("TORCH_ELASTIC_SHUTDOWN_TIMEOUT=120 accelerate launch ")
    args = accelerate_view(command)
    assert (args.multi_gpu, args.num_processes, args.num_machines, args.mixed_precision) == (True, 2, 1, "bf16")
    assert not args.use_fsdp and not args.use_deepspeed


def test_cpu_processes_take_the_multi_gpu_launcher_on_gloo():
    command = launch_command({"gpus": 0, "processes": 2, "nodes": 1, "cpus": 4})
    # no GPU seen (gloo, even on a GPU machine), the job's cores shared out, torch elastic's grace period
    assert command.startswith(f"CUDA_VISIBLE_DEVICES= OMP_NUM_THREADS=2 {GRACE_ENV} accelerate launch ")
    args = accelerate_view(command)
    # --multi_gpu: torchrun starts the processes (accelerate's --cpu starts one, or several only via mpirun)
    assert (args.multi_gpu, args.cpu, args.num_processes, args.num_machines) == (True, False, 2, 1)
    assert (args.mixed_precision, args.main_process_port) == ("no", 0)  # a free port: jobs may start together
    assert launch_command({"gpus": 0, "processes": 1, "nodes": 1, "cpus": 1}) == launch_command(
        {"gpus": 0, "nodes": 1, "cpus": 1}
    )
    # the per-node launcher (srun) reads its rank, head node and port on the node, as for GPUs
    per_node = launch_command({"gpus": 0, "processes": 2, "nodes": 1, "cpus": 2}, srun=True)
    assert per_node.startswith("srun --nodes=1 --ntasks=1 ") and "--gres" not in per_node
    assert '--machine_rank "$SLURM_NODEID"' in per_node and "--num_processes 2" in per_node


def test_processes_resolve_to_a_cpu_request(write_spec):
    real = {"model": {"name": "Qwen/Qwen2.5-0.5B-Instruct"}, "resources": {"train": {"processes": 4}}}
    train = stage_resources(real, "train", site={})
    assert (train["gpus"], train["processes"], train["cpus"]) == (0, 4, 4)  # CPU, a core per process at least
    plain = stage_resources({**real, "resources": {"train": {}}}, "train", site={})
    assert (plain["gpus"], plain["processes"]) == (1, 1)
    with pytest.raises(SpecError, match=r"resources.train.processes: 2 CPU processes with gpus 4"):
        load_experiment(write_spec(SPEC.replace("nodes: 2", "nodes: 1, processes: 2")))
    with pytest.raises(SpecError, match=r"resources.eval.processes: 2: only the train stage runs several processes"):
        load_experiment(write_spec(SPEC.replace("sweep:", "    eval: {processes: 2}\nsweep:")))


def test_fsdp_and_deepspeed_come_from_the_config_files():
    fsdp = launch_command({"gpus": 2, "nodes": 1, "cpus": 8}, "fsdp", config_dir=CONFIGS)
    assert f"--config_file {CONFIGS}/fsdp.yaml " in fsdp
    args = accelerate_view(fsdp)
    assert args.use_fsdp and not args.multi_gpu and args.num_processes == 2  # the file decides the type
    assert (args.fsdp_version, args.fsdp_auto_wrap_policy, args.fsdp_reshard_after_forward) == (
        2,
        "TRANSFORMER_BASED_WRAP",
        True,
    )
    assert args.mixed_precision == "bf16"
    deepspeed = accelerate_view(launch_command({"gpus": 2, "nodes": 1, "cpus": 8}, "deepspeed", config_dir=CONFIGS))
    assert deepspeed.use_deepspeed and not deepspeed.use_fsdp and not deepspeed.multi_gpu
    assert (deepspeed.zero_stage, deepspeed.deepspeed_multinode_launcher) == (2, "standard")  # srun, not pdsh
    assert deepspeed.mixed_precision == "bf16"


def test_bad_distributed_settings_are_named():
    with pytest.raises(ValueError, match=r"train.distributed: 'zero' is not one of none, fsdp, deepspeed"):
        launch_command({"gpus": 2, "nodes": 1, "cpus": 8}, "zero")
    with pytest.raises(ValueError, match=r"needs the accelerate config .*fsdp.yaml"):
        launch_command({"gpus": 2, "nodes": 1, "cpus": 8}, "fsdp", config_dir="/nonexistent")
    with pytest.raises(ValueError, match=r"resources.train.nodes: 2 needs GPUs, but resources.train.gpus is 0"):
        launch_command({"gpus": 0, "nodes": 2, "cpus": 8})
    with pytest.raises(ValueError, match="train.distributed: deepspeed needs GPUs"):
        launch_command({"gpus": 0, "nodes": 1, "cpus": 8}, "deepspeed", config_dir=CONFIGS)
    with pytest.raises(ValueError, match=r"need GPUs \(resources.train.gpus >= 1\)"):
        launch_args(0, nodes=2)


FAKE_SRUN = """#!/bin/sh
# Stands in for srun: runs the command once per node, as node N of a two-node job would see it.
while [ "${1#-}" != "$1" ]; do shift; done  # srun's own options
for node in 0 1; do SLURM_NODEID=$node SLURM_JOB_NODELIST='gpu[07-08]' SLURM_JOB_ID=123456 "$@" || exit; done
"""
FAKE_SCONTROL = """#!/bin/sh
[ "$1 $2 $3" = "show hostnames gpu[07-08]" ] && printf 'gpu07\ngpu08\n'
"""
# Stands in for accelerate: prints the arguments it got and its grace period, one JSON line per node.
FAKE_ACCELERATE = f"""#!{sys.executable}
import json, os, sys
print(json.dumps([os.environ.get("TORCH_ELASTIC_SHUTDOWN_TIMEOUT"), *sys.argv[1:]]))
"""


def test_two_nodes_x_four_gpus_one_launcher_per_node_with_its_own_rank(tmp_path):
    resources = {"gpus": 4, "nodes": 2, "cpus": 16}
    command = launch_command(resources)
    assert command.startswith(
        "srun --nodes=2 --ntasks=2 --ntasks-per-node=1 --cpus-per-task=16 --mem=0 "
        "--kill-on-bad-exit=1 --gres=gpu:4 bash -c "
        "'TORCH_ELASTIC_SHUTDOWN_TIMEOUT=120 exec accelerate launch "
    )
    for name, text in (("srun", FAKE_SRUN), ("scontrol", FAKE_SCONTROL), ("accelerate", FAKE_ACCELERATE)):
        (tmp_path / name).write_text(text)
        (tmp_path / name).chmod(0o755)
    # the rule appends the module and its arguments (JSON with quotes and spaces) to the command
    config = '{"train": {"learning_rate": 0.0002}, "note": "it\'s $HOME"}'
    shell = f"{command} -m knobsweep.train --config-json {shlex.quote(config)} --out results/train/x"
    env = dict(os.environ, PATH=f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    out = subprocess.run(["bash", "-c", shell], env=env, capture_output=True, text=True, check=True).stdout
    from accelerate.commands.launch import launch_command_parser

    parser = launch_command_parser()  # accelerate's own reading of what each node got
    lines = [json.loads(line) for line in out.splitlines()]
    assert [line[0] for line in lines] == ["120", "120"]  # the grace period reached each launcher
    ranks = [vars(parser.parse_args(line[2:])) for line in lines]
    assert [r["machine_rank"] for r in ranks] == [0, 1]  # $SLURM_NODEID expanded on each node
    port = 29500 + 123456 % 10000
    for rank in ranks:
        assert (rank["num_processes"], rank["num_machines"], rank["multi_gpu"]) == (8, 2, True)
        assert (rank["main_process_ip"], rank["main_process_port"], rank["rdzv_backend"]) == ("gpu07", port, "c10d")
        assert rank["module"] and rank["training_script"] == "knobsweep.train"
        assert rank["training_script_args"] == ["--config-json", config, "--out", "results/train/x"]  # unchanged
    fsdp = launch_command(resources, "fsdp", port=12345, config_dir=CONFIGS)
    assert "--config_file " in fsdp and "--multi_gpu" not in fsdp and "--main_process_port 12345" in fsdp


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
    holder = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "knobsweep.devices",
            "--gpus",
            "1",
            "--",
            "sh",
            "-c",
            "echo $CUDA_VISIBLE_DEVICES; sleep 2",
        ],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "0"
    with pytest.raises(TimeoutError):  # the exec'd command holds the lock
        claim(1, ["0"], tmp_path, timeout=0.3, poll=0.05)
    holder.wait(10)
    assert claim(1, ["0"], tmp_path, timeout=2)[0] == ["0"]  # released when it exited


def test_inside_slurm_the_allocation_decides(tmp_path):
    env = dict(os.environ, SLURM_JOB_ID="7", CUDA_VISIBLE_DEVICES="0,1", KNOBSWEEP_GPU_LOCK_DIR=str(tmp_path))
    out = subprocess.run(
        [sys.executable, "-m", "knobsweep.devices", "--gpus", "2", "--", "sh", "-c", "echo $CUDA_VISIBLE_DEVICES"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "0,1" and not list(tmp_path.iterdir())


@pytest.mark.slow
def test_local_snakemake_gives_each_gpu_job_its_own_devices(tmp_path):
    """Real Snakemake, `--resources gpu=2` and 2 (pretend) GPUs: overlapping jobs never share a device."""
    (tmp_path / "Snakefile").write_text(
        textwrap.dedent("""
        from knobsweep.resources import gpu_shell
        GPUS = {"a": 1, "b": 1, "c": 1, "d": 1, "e": 2, "f": 1}
        rule all:
            input: expand("out/{name}.txt", name=GPUS)
        rule job:
            output: "out/{name}.txt"
            resources:
                gpu=lambda wc: GPUS[wc.name],
                shell_exec=lambda wc: gpu_shell(GPUS[wc.name]),
            shell: "s=$(date +%s.%N); sleep 1; echo $s $(date +%s.%N) $CUDA_VISIBLE_DEVICES > {output}"
    """)
    )
    env = dict(
        os.environ,
        KNOBSWEEP_GPUS="2",
        KNOBSWEEP_GPU_LOCK_DIR=str(tmp_path / "locks"),
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    )
    env.pop("SLURM_JOB_ID", None)
    subprocess.run(
        [sys.executable, "-m", "snakemake", "--cores", "4", "--resources", "gpu=2"],
        cwd=tmp_path,
        env=env,
        check=True,
        capture_output=True,
        timeout=300,
    )
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

"""Per-stage resources: the spec's `resources:` section -> what Snakemake and its Slurm executor get.

`stage_resources(config, stage)` resolves one stage's request (spec values, else the stage's
defaults, else the site settings); `train_job_resources` adds the merge, which runs in the train
job. `scheduler_resources(resolved, stage)` maps a request onto the keywords
snakemake-executor-plugin-slurm reads (gpu, gpu_model, cpus_per_gpu, cpus_per_task,
slurm_partition, slurm_account, qos, constraint, nodes, runtime, mem_mb; multi-node jobs also
gres, mpi, tasks). Locally the same `gpu` / `mem_mb` / `runtime` count against `--resources`, and
GPU jobs run under `knobsweep.devices`, which gives each job its own devices (CUDA_VISIBLE_DEVICES).

`launch_command(resolved, distributed)` is the training command's launcher: `accelerate launch`
with one process per GPU, an FSDP / DeepSpeed config from workflow/accelerate/ when
`train.distributed` asks for one, and on several nodes one launcher per node through `srun`.
`resources.train.processes: N` (gpus 0) runs N CPU processes through the same multi-GPU launcher
(torchrun), which find no GPU and join over gloo: the multi-GPU code path, for tests and development.

Site settings (partition, account, qos) never live in the code or the spec's defaults: they come
from the environment (KNOBSWEEP_SLURM_PARTITION, KNOBSWEEP_SLURM_ACCOUNT, KNOBSWEEP_SLURM_QOS,
KNOBSWEEP_SLURM_GPU_PARTITION) or from a small YAML file, `slurm/site.yaml` (or the file named by
KNOBSWEEP_SLURM_SITE): `{partition: cpu, gpu_partition: gpu, account: proj42, qos: normal}`.
Unset everywhere means sbatch's own defaults (which honour SBATCH_PARTITION, SBATCH_ACCOUNT, ...).
"""

from __future__ import annotations

import os
import re
import shlex
import sys
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

from knobsweep.errors import FieldError, Problem, SpecError
from knobsweep.registry import TINY

STAGES = ("data", "train", "merge", "eval", "report")
GPU_STAGES = ("train", "eval")
SITE_FILE = "slurm/site.yaml"
SITE_KEYS = ("partition", "gpu_partition", "account", "qos")
_SITE_ENV = tuple(f"KNOBSWEEP_SLURM_{key.upper()}" for key in SITE_KEYS)
# SIGTERM this many seconds before the time limit, so the trainer checkpoints (Slurm --signal).
# Not `B:` (the batch shell only: it neither forwards the signal nor waits for the trainer): without
# it Slurm signals every process of the job steps, as `scancel --signal=TERM` does.
PREEMPT_SECONDS = 120
PREEMPT_SIGNAL = f"--signal=TERM@{PREEMPT_SECONDS}"
# accelerate's multi-process launcher (torch elastic) answers SIGTERM by passing it on and SIGKILLing
# its workers 30 s later (measured), mid-checkpoint for a slow step: give them the whole window.
GRACE_ENV = f"TORCH_ELASTIC_SHUTDOWN_TIMEOUT={PREEMPT_SECONDS}"
# train.distributed -> workflow/accelerate/<name>.yaml ("none": plain DDP, no file)
DISTRIBUTED = ("none", "fsdp", "deepspeed")
ACCELERATE_CONFIG_DIR = "workflow/accelerate"
# Multi-node rendezvous port: PORT_BASE + job id % PORT_SPAN, so jobs sharing a head node differ.
PORT_BASE, PORT_SPAN = 29500, 10000

# Stage defaults: (cpus, mem_mb, runtime_min), on a GPU / on CPU only.
_DEFAULTS = {
    "data": {"cpu": (2, 8000, 60)},
    "train": {"gpu": (8, 64000, 240), "cpu": (1, 8000, 240)},
    "merge": {"cpu": (4, 32000, 60)},
    "eval": {"gpu": (8, 32000, 120), "cpu": (1, 8000, 60)},
    "report": {"cpu": (1, 4000, 30)},
}
_TINY_MERGE = (1, 4000, 30)


class SiteError(SpecError, ValueError):
    """A bad site setting: reported like a spec problem (file or variable, key, value, what is allowed)."""


# What sbatch accepts, and nothing a shell would read (the Slurm executor plugin runs sbatch through one).
_NAME = re.compile(r"[A-Za-z0-9_.-]+")
_FEATURE = r"[A-Za-z0-9_.-]+(\*[0-9]+)?"
_CONSTRAINT_TOKEN = re.compile(rf"{_FEATURE}|[&|,\[\]()]")
NAME_RULE = "letters, digits and _ . - only"
CONSTRAINT_RULE = "node features (letters, digits, _ . -, optionally *COUNT) joined by & | , with [ ] or ( ) groups"


def slurm_value_problem(field: str, value: str) -> str | None:
    """Why `value` is not what sbatch takes for `field` (a name; a comma list for partition; a
    feature expression for constraint), or None."""
    if field == "constraint":
        return None if _is_constraint(value) else f"{value!r} is not a Slurm constraint; allowed: {CONSTRAINT_RULE}"
    names = value.split(",") if field == "partition" else [value]
    if all(_NAME.fullmatch(name) for name in names):
        return None
    listed = " (or a comma-separated list of them)" if field == "partition" else ""
    return f"{value!r} is not a Slurm {field} name; allowed: {NAME_RULE}{listed}"


def _is_constraint(text: str) -> bool:
    """`a&b`, `a|b`, `[a|b]`, `[a*2&b*4]`, `(a|b)&c`: features joined by operators, balanced groups."""
    tokens = [match.group(0) for match in _CONSTRAINT_TOKEN.finditer(text)]
    if "".join(tokens) != text or not tokens:
        return False
    depth, expect_feature = [], True
    for token in tokens:
        if token in "[(":
            if not expect_feature:
                return False
            depth.append("])"["[(".index(token)])
        elif token in "])":
            if expect_feature or not depth or depth.pop() != token:
                return False
        elif token in "&|,":
            if expect_feature:
                return False
            expect_feature = True
        else:
            if not expect_feature:
                return False
            expect_feature = False
    return not depth and not expect_feature


@lru_cache(maxsize=8)
def _site_settings(env_key: tuple, path: str, stamp: tuple | None) -> dict[str, str]:
    from knobsweep.spec.reading import read_yaml  # here: knobsweep.spec imports this module

    env = dict(env_key)
    settings: dict[str, str] = {}
    where: dict[str, str] = {}  # setting -> the file or variable it came from
    if stamp is not None:
        data = read_yaml(Path(path)) or {}
        if not isinstance(data, dict) or set(data) - set(SITE_KEYS):
            raise SiteError(
                [Problem(path, "", f"expected a mapping with keys {', '.join(SITE_KEYS)}; got {str(data)[:200]!r}")]
            )
        settings.update({k: str(v) for k, v in data.items() if v not in (None, "")})
        where.update(dict.fromkeys(settings, path))
    for key in SITE_KEYS:
        value = env.get(f"KNOBSWEEP_SLURM_{key.upper()}")
        if value:
            settings[key] = value
            where[key] = f"${f'KNOBSWEEP_SLURM_{key.upper()}'}"
    problems = [
        Problem(where[key], key, problem)
        for key, value in settings.items()
        if (problem := slurm_value_problem("partition" if key == "gpu_partition" else key, value))
    ]
    if problems:
        raise SiteError(problems)
    return settings


def site_settings() -> dict[str, str]:
    """partition / gpu_partition / account / qos from the environment, else slurm/site.yaml."""
    # called once per job-table entry: read the few known variables, never scan os.environ
    env = tuple((name, os.environ.get(name)) for name in _SITE_ENV if os.environ.get(name) is not None)
    path = os.environ.get("KNOBSWEEP_SLURM_SITE") or SITE_FILE
    try:
        stat = os.stat(path)
        stamp: tuple | None = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
    except OSError:
        stamp = None
    return dict(_site_settings(env, path, stamp))


def stage_resources(config: Mapping[str, Any], stage: str, site: Mapping[str, str] | None = None) -> dict:
    """One stage's resolved request: every StageResources field filled in (None = not asked for).
    `site`: the site settings, when the caller has read them once for many runs."""
    spec = dict(config["resources"][stage])
    tiny = config["model"]["name"] == TINY
    processes = spec.get("processes") or 1  # CPU processes (the spec refuses them beside GPUs)
    if spec.get("gpus") is None:
        spec["gpus"] = 1 if stage in GPU_STAGES and not tiny and processes == 1 else 0
    spec["processes"] = processes
    on_gpu = spec["gpus"] > 0
    if stage == "merge" and tiny:
        defaults = _TINY_MERGE
    else:
        table = _DEFAULTS[stage]
        defaults = table["gpu"] if on_gpu and "gpu" in table else table["cpu"]
    # a CPU process per core at least
    defaults = (max(defaults[0], processes), *defaults[1:])
    for name, default in zip(("cpus", "mem_mb", "runtime_min"), defaults):
        if spec.get(name) is None:
            spec[name] = default
    spec.setdefault("nodes", 1)
    site = site_settings() if site is None else site
    if spec.get("partition") is None:
        spec["partition"] = site.get("gpu_partition") if on_gpu and site.get("gpu_partition") else site.get("partition")
    for name in ("account", "qos"):
        if spec.get(name) is None:
            spec[name] = site.get(name)
    for name in ("gpu_model", "constraint"):
        spec.setdefault(name, None)
    return spec


def train_job_resources(config: Mapping[str, Any], site: Mapping[str, str] | None = None) -> dict:
    """The train job's request: training, then the merge of its adapter in the same job.

    A merge depends on nothing but its run's adapter, so a job of its own would cache nothing
    more and cost a scheduler round trip, a queue wait and (in Snakemake) a third of a sweep's
    jobs. `resources.merge` says what the merge adds: CPUs and memory are the larger of the two
    requests, the time limit their sum; GPUs, nodes and the Slurm placement are training's.
    """
    train, merge = stage_resources(config, "train", site), stage_resources(config, "merge", site)
    return {
        **train,
        "cpus": max(train["cpus"], merge["cpus"]),
        "mem_mb": max(train["mem_mb"], merge["mem_mb"]),
        "runtime_min": train["runtime_min"] + merge["runtime_min"],
    }


def scheduler_resources(resources: Mapping[str, Any], stage: str) -> dict:
    """A stage's request as Snakemake resources (the Slurm executor plugin's keywords).

    Values that are not asked for are None, which Snakemake drops, so sbatch gets no flag.
    Nothing the plugin manages goes through slurm_extra.

    Several nodes: the plugin's `gpu` becomes `--gpus=N`, GPUs of the whole job, so GPUs per
    node go as `gres` (`--gres=gpu[:model]:N` is per node). `mpi` makes the job step run the
    rule's shell itself instead of inside an `srun` step of its own, so the shell's `srun`
    (`launch_command`) gets every node; `tasks` = nodes (`--ntasks`, one launcher per node),
    and `tasks_per_gpu` 0 keeps the plugin from turning `tasks` into `--ntasks-per-gpu`.
    """
    gpus = int(resources["gpus"])
    nodes = int(resources.get("nodes") or 1)
    multi = nodes > 1
    model = resources.get("gpu_model") if gpus else None
    out: dict[str, Any] = {
        "mem_mb": resources["mem_mb"],  # per node
        "runtime": resources["runtime_min"],
        "gpu": gpus if gpus and not multi else None,
        "gpu_model": model if not multi else None,
        # sbatch gets --cpus-per-gpu on GPU jobs, --cpus-per-task otherwise
        "cpus_per_gpu": max(1, -(-int(resources["cpus"]) // gpus)) if gpus else None,
        "cpus_per_task": None if gpus else resources["cpus"],
        "slurm_partition": resources.get("partition"),
        "slurm_account": resources.get("account"),
        "qos": resources.get("qos"),
        "constraint": resources.get("constraint"),
        "nodes": nodes if multi else None,
        "gres": (f"gpu:{model}:{gpus}" if model else f"gpu:{gpus}") if multi and gpus else None,
        "mpi": "srun" if multi else None,
        "tasks": nodes if multi else None,
        "tasks_per_gpu": 0 if multi and gpus else None,
        # preemption: TERM two minutes before the limit so the trainer checkpoints (with --requeue)
        "slurm_extra": PREEMPT_SIGNAL if stage == "train" else None,
    }
    return out


def launch_args(
    gpus: int | Mapping[str, Any],
    nodes: int = 1,
    port: int | None = None,
    config_file: str | None = None,
    per_node: bool | None = None,
    processes: int = 1,
) -> str:
    """`accelerate launch` arguments: one CPU process, one process per GPU (bf16), on `nodes` nodes,
    or (gpus 0) `processes` CPU processes.

    `gpus` is GPUs per node (or a resolved resources mapping). `per_node` (default: nodes > 1):
    the launcher is started once per node (`launch_command`) and each copy reads its rank, the
    head node and the port from Slurm's environment when it starts, so the text holds
    `$SLURM_...` references that only the per-node shell may expand. A `config_file` (FSDP /
    DeepSpeed) decides the distributed type itself, so `--multi_gpu` is left out then
    (accelerate ignores the file's type when it is given).

    Several CPU processes take `--multi_gpu`, not `--cpu`: accelerate's `--cpu` launcher starts one
    process (several only through mpirun), its multi-GPU one starts them through torchrun, and
    processes that find no GPU join over gloo (accelerate's MULTI_CPU).
    """
    if isinstance(gpus, Mapping):
        gpus, nodes, processes = int(gpus["gpus"]), int(gpus.get("nodes", 1)), int(gpus.get("processes") or 1)
    if gpus == 0:
        if nodes > 1 or config_file:
            raise ValueError("multi-node, FSDP and DeepSpeed training need GPUs (resources.train.gpus >= 1)")
        if processes == 1:
            return "--cpu --num_processes 1 --num_machines 1 --mixed_precision no --dynamo_backend no"
    total = (gpus or processes) * nodes
    precision = "bf16" if gpus else "no"
    args = f"--num_processes {total} --num_machines {nodes} --mixed_precision {precision} --dynamo_backend no"
    if config_file:
        args = f"--config_file {shlex.quote(config_file)} {args}"
    elif total > 1:
        args += " --multi_gpu"
    if not (nodes > 1 if per_node is None else per_node):
        # A free port (accelerate picks it): jobs starting together on one machine never race for 29500.
        return args + " --main_process_port 0" if total > 1 else args
    # one port per job (two jobs may share a head node), the same on every node
    port_text = str(port) if port is not None else f"$(({PORT_BASE} + SLURM_JOB_ID % {PORT_SPAN}))"
    args += (
        ' --machine_rank "$SLURM_NODEID"'
        ' --main_process_ip "$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n1)"'
        f" --main_process_port {port_text}"
    )
    if nodes > 1:
        args += " --rdzv_backend c10d"
    return args


def accelerate_config(distributed: str, config_dir: str | Path = ACCELERATE_CONFIG_DIR) -> str | None:
    """The accelerate config file of `train.distributed` (None for plain data parallelism)."""
    if distributed not in DISTRIBUTED:
        raise FieldError("train.distributed", f"{distributed!r} is not one of {', '.join(DISTRIBUTED)}")
    if distributed == "none":
        return None
    path = Path(config_dir) / f"{distributed}.yaml"
    if not path.is_file():
        raise FieldError(
            "train.distributed", f"{distributed!r} needs the accelerate config {path}, which does not exist"
        )
    return str(path)


def launch_command(
    resources: Mapping[str, Any],
    distributed: str = "none",
    port: int | None = None,
    config_dir: str | Path = ACCELERATE_CONFIG_DIR,
    srun: bool | None = None,
) -> str:
    """The training command up to the module: `<this> -m knobsweep.train --config-json ...`.

    One node: `accelerate launch ARGS`. Several nodes (or `srun=True`): one launcher per node
    through `srun` inside the job's allocation (the rule runs with the `mpi` resource, so no
    step holds the allocation already), each in `bash -c '...'` so that `$SLURM_NODEID` and the
    head node expand on its own node; what the rule appends reaches it as "$@", unquoted once.
    """
    gpus, nodes = int(resources["gpus"]), int(resources.get("nodes", 1))
    processes = int(resources.get("processes") or 1)
    if not gpus and (nodes > 1 or distributed != "none"):
        path, asked = ("resources.train.nodes", nodes) if nodes > 1 else ("train.distributed", distributed)
        raise FieldError(path, f"{asked} needs GPUs, but resources.train.gpus is 0 (CPU training runs on one node)")
    srun = nodes > 1 if srun is None else srun
    args = launch_args(
        gpus, nodes, port, accelerate_config(distributed, config_dir), per_node=srun, processes=processes
    )
    grace = f"{GRACE_ENV} " if gpus or processes > 1 else ""
    if not gpus and processes > 1:
        # CPU processes: no GPU seen even on a GPU machine (so gloo, not NCCL), and the job's cores
        # shared out instead of each process taking all of them (Snakemake sets OMP_NUM_THREADS = cpus).
        threads = max(1, int(resources["cpus"]) // processes)
        grace = f"CUDA_VISIBLE_DEVICES= OMP_NUM_THREADS={threads} {grace}"
    if not srun:
        return f"{grace}accelerate launch {args}"
    per_node = f'{grace}exec accelerate launch {args} "$@"'
    step = (
        f"srun --nodes={nodes} --ntasks={nodes} --ntasks-per-node=1 --cpus-per-task={int(resources['cpus'])}"
        " --mem=0 --kill-on-bad-exit=1"
    )
    if gpus:
        step += f" --gres=gpu:{gpus}"
    # "knobsweep-train" is $0 of the per-node shell (its name in error messages)
    return f"{step} bash -c {shlex.quote(per_node)} knobsweep-train"


def gpu_shell(gpus: int, directory: str | Path = ".snakemake/knobsweep") -> str | None:
    """Path of a shell (Snakemake's `shell_exec` resource) that runs a job's command on `gpus`
    devices of its own: it claims them with `knobsweep.devices` and sets CUDA_VISIBLE_DEVICES.
    None for CPU jobs. Under Slurm the wrapper leaves the allocation's devices alone."""
    if not gpus:
        return None
    path = Path(directory).resolve() / f"gpu-shell-{gpus}"
    script = (
        "#!/bin/sh\n# generated by knobsweep.resources.gpu_shell: Snakemake runs `$0 -c CMD`\n"
        f"exec {shlex.quote(sys.executable)} -m knobsweep.devices --gpus {gpus} -- "
        'bash -o pipefail -eu "$@"\n'
    )
    if not path.is_file() or path.read_text() != script:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(script)
        tmp.chmod(0o755)
        tmp.replace(path)
    return str(path)

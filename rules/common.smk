import inspect

from snakemake.common import overwrite_function_params


# Shared wildcard constraints: stage keys are 16 hex digits, so stage folders never collide.
wildcard_constraints:
    key="[0-9a-f]{16}",
    experiment="[A-Za-z0-9][A-Za-z0-9_.-]*",


def log_path(stage):
    return layout.LOGS.format(stage=stage, key="{key}")


def per_job(function):
    """`function(wildcards)` as a rule item whose signature Snakemake reads once, not once per
    job: it inspects every item function on every call, about a tenth of `snakemake -n` on a
    sweep of thousands of runs. `overwrite_function_params` is how Snakemake's own ioutils
    declare a function's parameters."""
    overwrite_function_params(function, inspect.signature(function).parameters)
    return function


def per_key(table, item):
    """item(table[key]) for the job's `{key}` wildcard, as a rule item (see per_job)."""
    return per_job(lambda wildcards: item(table[wildcards.key]))


def stage_inputs(table):
    """A stage rule's `input:`, the upstream stage outputs of the job's key, as `ancient`: each is named by
    its content key, so one that exists is the right one. Its timestamp (new when a deleted stage folder
    is rebuilt under the same key, skewed between a cluster's nodes) must not rerun what it feeds, which
    `knobsweep plan` calls cached; one that is missing or will be built still runs it."""
    return per_key(table, lambda job: ancient(job.inputs))


def from_resources(table, item):
    """item(table[key]) as a param that follows the job's resources (the launch command: processes per
    GPU, srun over nodes). Resources are not hashed, so neither they nor such a param may be a rerun
    trigger: Snakemake takes a param function with a `resources` argument for derived from them and
    leaves it out of its params trigger, as it leaves resources out."""
    return per_job(lambda wildcards, resources: item(table[wildcards.key]))


def cpus(table):
    return per_key(table, lambda job: job.resources["cpus"])


# Resources: each stage's request from the spec (knobsweep.resources), under the Slurm executor
# plugin's keywords (gpu, cpus_per_task/cpus_per_gpu, mem_mb, runtime, slurm_partition, ...), plus
# `shell_exec` for GPU jobs: a wrapper that gives each local job devices of its own.
from knobsweep.resources import gpu_shell, scheduler_resources


# Short CPU stages run in the Snakemake process itself under an executor (`--profile slurm`):
# a Slurm round trip costs more than they do. Locally this changes nothing.
localrules:
    convert_data,
    tiny_model,
    rung_decision,
    report,


SCHEDULER_KEYS = (
    "mem_mb",
    "runtime",
    "gpu",
    "gpu_model",
    "cpus_per_gpu",
    "cpus_per_task",
    "slurm_partition",
    "slurm_account",
    "qos",
    "constraint",
    "nodes",
    "slurm_extra",
    "gres",
    "mpi",
    "tasks",
    "tasks_per_gpu",
)


def _resource_dict(values):
    """{key: {resource: value}} -> a rule's resources. A resource that is the same for every job
    is a plain value (None: left out); only those that differ are functions of the wildcard,
    since Snakemake calls every resource function once per job (10,000 runs: seconds)."""
    resources = {}
    for name in (*SCHEDULER_KEYS, "shell_exec"):
        distinct = {job[name] for job in values.values()}
        if len(distinct) == 1:
            value = distinct.pop()
            if value is not None:
                resources[name] = value
        else:
            resources[name] = per_job((lambda name: lambda wc: values[wc.get("key", wc.get("experiment"))][name])(name))
    return resources


def job_resources(table, stage):
    """A stage rule's `resources:`, from the job table's resolved requests."""
    values = {
        key: {**scheduler_resources(job.resources, stage), "shell_exec": gpu_shell(job.resources["gpus"])}
        for key, job in table.items()
    }
    return _resource_dict(values)


def job_threads(table):
    """A stage rule's `threads:` (CPUs): a plain number when every job asks for the same."""
    distinct = {job.resources["cpus"] for job in table.values()}
    return distinct.pop() if len(distinct) == 1 else cpus(table)


def report_resources():
    """The report is one job per experiment, with its baseline's report resources."""
    values = {}
    for name in pipeline.experiments:
        request = pipeline.report_resources(name)
        values[name] = {**scheduler_resources(request, "report"), "shell_exec": gpu_shell(request["gpus"])}
    return _resource_dict(values)


@per_job
def report_threads(wildcards):
    return pipeline.report_resources(wildcards.experiment)["cpus"]

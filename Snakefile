# knobsweep: one experiment YAML -> data -> train (+ merge) -> eval (+ benchmarks) -> report.
#   snakemake --cores all                               # every experiments/*.yaml
#   snakemake --cores all --config experiments=demo     # by file stem, comma-separated
# The rules only hold paths, params and resources; the logic is in src/knobsweep/.

import os

from knobsweep import layout
from knobsweep.gc_tuning import spare_long_lived_objects
from knobsweep.jobenv import use_this_environment
from knobsweep.pipeline import build_pipeline, experiment_files
from knobsweep.resources import launch_command

ACCELERATE_CONFIGS = os.path.join(workflow.basedir, "workflow", "accelerate")
use_this_environment()  # jobs call `python` / `accelerate` of this Snakemake's environment, activated or not


configfile: "workflow/config.yaml"


pipeline = build_pipeline(experiment_files(config.get("experiments")))
spare_long_lived_objects()  # a big sweep's DAG is long-lived: no collector scans over it (knobsweep.gc_tuning)


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/train.smk"
include: "rules/rungs.smk"
include: "rules/evaluate.smk"
include: "rules/benchmark.smk"
include: "rules/report.smk"


rule all:
    default_target: True
    input:
        pipeline.reports(),


# Before the first job (never in a dry run): results/<experiment>/runs/<run>/, links to each run's stage
# folders for people (knobsweep.runlinks), and each training's run_info.json (knobsweep.runinfo).
onstart:
    from knobsweep.runinfo import write_run_info
    from knobsweep.runlinks import refresh

    refresh(pipeline.experiments.values())
    write_run_info(pipeline.train)


# With keep-going (both profiles), the other runs finish when one fails; the reports are then
# built from what exists, so a failed sweep still ends with reports that list the failed runs.
onerror:
    from knobsweep.report.build import build_reports_despite_failures

    build_reports_despite_failures(pipeline.experiments.values())

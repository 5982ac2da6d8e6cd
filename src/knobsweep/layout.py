"""Where each stage's outputs live, keyed by the hash of the config that feeds it.

The Snakemake rules and the CLI (`knobsweep plan`, `knobsweep report`) both read these
patterns, so a path is spelled in exactly one place.
"""

from __future__ import annotations

from pathlib import Path

RESULTS = "results"

# Patterns with Snakemake-style wildcards, relative to the working directory.
TINY_MODEL = "results/models/tiny-{key}"
DATA_DIR = "results/data/{key}"
DATA_TRAIN = DATA_DIR + "/train.parquet"
DATA_EVAL = DATA_DIR + "/eval.parquet"
DATA_MANIFEST = DATA_DIR + "/manifest.json"
TRAIN_DIR = "results/train/{key}"
TRAIN_ADAPTER = TRAIN_DIR + "/adapter"
TRAIN_METRICS = TRAIN_DIR + "/metrics.jsonl"
TRAIN_STATUS = TRAIN_DIR + "/status.json"
TRAIN_ROLLOUTS = TRAIN_DIR + "/rollouts.jsonl"
TRAIN_CHECKPOINTS = TRAIN_DIR + "/checkpoints"
MERGE_DIR = "results/merge/{key}"
# In a merge folder instead of a model when the run never learned (EARLY_STOPPED, no signal).
NOT_MERGED = "not_merged.json"
EVAL_DIR = "results/eval/{key}"
EVAL_SUMMARY = EVAL_DIR + "/summary.json"
EVAL_SAMPLES = EVAL_DIR + "/samples.jsonl"
REPORT_DIR = "results/{experiment}"
REPORT_HTML = REPORT_DIR + "/report.html"
REPORT_CSV = REPORT_DIR + "/summary.csv"
REPORT_JSON = REPORT_DIR + "/summary.json"
# Written by the report job alone, which runs once every run's stages are done: a report that
# Snakemake's `onerror` built from a failed sweep lacks it, so the next run resumes the sweep.
REPORT_DONE = REPORT_DIR + "/.sweep-complete"
# One folder per run of an experiment, named for people, of links into the stage folders above
# (knobsweep.runlinks); `{run}` is the run's name made safe as a file name (runlinks.folder_name).
RUN_LINKS = REPORT_DIR + "/runs/{run}"
LOGS = "results/logs/{stage}/{key}.log"

# Names an experiment may not take, because they are stage folders under results/.
RESERVED_NAMES = frozenset({"models", "data", "train", "merge", "eval", "logs"})


def path(pattern: str, root: str | Path = ".", **wildcards: str) -> Path:
    return Path(root) / pattern.format(**wildcards)

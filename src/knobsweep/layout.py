"""Where each stage's outputs live, keyed by the hash of the config that feeds it.

Every file a stage writes is named here once: a stage writes its files into the folder it is given
(--out) under these names, and the Snakemake rules, the CLI (`knobsweep plan`, `status`, `report`) and
the report find them through the patterns below.
"""

from __future__ import annotations

from pathlib import Path

RESULTS = "results"

# The files of each stage's folder.
TRAIN_ROWS, EVAL_ROWS, MANIFEST = "train.parquet", "eval.parquet", "manifest.json"  # data
RUN_CONFIG, STATUS, METRICS, ROLLOUTS = "run.yaml", "status.json", "metrics.jsonl", "rollouts.jsonl"  # train
CHECKPOINTS, ADAPTER, WANDB_RUN_ID = "checkpoints", "adapter", "wandb_run_id"  # train
RUN_INFO = "run_info.json"  # train: who it runs for (W&B names; knobsweep.runinfo), written when a workflow starts
CHECKPOINT_LOGS = "knobsweep-logs"  # in each checkpoint: copies of the logs, restored on resume
VERIFICATION = "verification.json"  # merge
NOT_MERGED = "not_merged.json"  # merge, instead of a model: the run never learned (EARLY_STOPPED, no signal)
SUMMARY, SAMPLES = "summary.json", "samples.jsonl"  # eval
BENCHMARK_RESULTS, BENCHMARK_SAMPLES = "results.json", "samples_{task}.jsonl"  # benchmark (and its summary.json)

# Patterns with Snakemake-style wildcards, relative to the working directory.
TINY_MODEL = "results/models/tiny-{key}"
DATA_DIR = "results/data/{key}"
DATA_TRAIN = f"{DATA_DIR}/{TRAIN_ROWS}"
DATA_EVAL = f"{DATA_DIR}/{EVAL_ROWS}"
DATA_MANIFEST = f"{DATA_DIR}/{MANIFEST}"
TRAIN_DIR = "results/train/{key}"
TRAIN_ADAPTER = f"{TRAIN_DIR}/{ADAPTER}"
TRAIN_METRICS = f"{TRAIN_DIR}/{METRICS}"
TRAIN_ROLLOUTS = f"{TRAIN_DIR}/{ROLLOUTS}"
TRAIN_STATUS = f"{TRAIN_DIR}/{STATUS}"
TRAIN_CHECKPOINTS = f"{TRAIN_DIR}/{CHECKPOINTS}"
TRAIN_RUN_INFO = f"{TRAIN_DIR}/{RUN_INFO}"
MERGE_DIR = "results/merge/{key}"
EVAL_DIR = "results/eval/{key}"
EVAL_SUMMARY = f"{EVAL_DIR}/{SUMMARY}"
EVAL_SAMPLES = f"{EVAL_DIR}/{SAMPLES}"
BENCHMARK_DIR = "results/benchmarks/{key}"
BENCHMARK_SUMMARY = f"{BENCHMARK_DIR}/{SUMMARY}"
# Rung evaluations (early_stop): a training segment's rung (its adapter at the rung step), the rung's eval,
# and an experiment's decision at a rung; the segment trains in its run's TRAIN_DIR.
SEGMENT, DECISION = "segment.json", "decision.json"
RUNG_DIR = "results/rungs/{key}"
RUNG_SEGMENT = f"{RUNG_DIR}/{SEGMENT}"
RUNG_ADAPTER = f"{RUNG_DIR}/{ADAPTER}"
RUNG_EVAL_DIR = "results/rung_eval/{key}"
RUNG_EVAL_SUMMARY = f"{RUNG_EVAL_DIR}/{SUMMARY}"
RUNG_EVAL_SAMPLES = f"{RUNG_EVAL_DIR}/{SAMPLES}"
RUNG_DECISION_DIR = "results/rung_decisions/{key}"
RUNG_DECISION = f"{RUNG_DECISION_DIR}/{DECISION}"
REPORT_DIR = "results/{experiment}"
REPORT_HTML = REPORT_DIR + "/report.html"
REPORT_CSV = REPORT_DIR + "/summary.csv"
REPORT_JSON = REPORT_DIR + "/summary.json"
REPORT_CURVES = REPORT_DIR + "/curves.csv"
# Written by the report job alone, which runs once every run's stages are done: a report that
# Snakemake's `onerror` built from a failed sweep lacks it, so the next run resumes the sweep.
REPORT_DONE = REPORT_DIR + "/.sweep-complete"
# One folder per run of an experiment, named for people, of links into the stage folders above
# (knobsweep.runlinks); `{run}` is the run's name made safe as a file name (runlinks.folder_name).
RUN_LINKS = REPORT_DIR + "/runs/{run}"
LOGS = "results/logs/{stage}/{key}.log"
REPORT_LOG = "results/logs/report/{experiment}.log"

# Names an experiment may not take, because they are stage folders under results/.
RESERVED_NAMES = frozenset(
    {"models", "data", "train", "merge", "eval", "benchmarks", "logs", "rungs", "rung_eval", "rung_decisions"}
)


def path(pattern: str, root: str | Path = ".", **wildcards: str) -> Path:
    return Path(root) / pattern.format(**wildcards)

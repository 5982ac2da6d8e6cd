"""CLI of the training stage (run under `accelerate launch`).

    accelerate launch --cpu --num_processes 1 --num_machines 1 --mixed_precision no \
        --dynamo_backend no -m knobsweep.train --config-json TRAIN --model M --data D --out OUT \
        [--run-info RUN_INFO.json] [--warm-start DIR] [--rung FRACTION --rung-out DIR] [--decision FILE]

TRAIN = {model, train, rollout, reward, seed} of the resolved run config (docs/contracts.md);
train.method picks grpo, sft or kto. RUN_INFO.json = {experiment, run, changed, tracking} names the
run for experiment tracking (W&B); it is not part of the run's identity, so the workflow writes it
beside the job (knobsweep.runinfo) instead of passing it on the command line.
Rungs (early_stop): --rung trains one segment, up to that fraction of the run's steps, and records
the rung in --rung-out; --decision is the last rung decision, which may have stopped the run.
Exit status: 0 COMPLETED or EARLY_STOPPED, 1 FAILED, 128 + signal CANCELLED (143 SIGTERM,
130 SIGINT; a checkpoint was saved: the same command again resumes from it).
"""

from __future__ import annotations

import argparse
import sys

from knobsweep.errors import SpecError
from knobsweep.io import json_object


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m knobsweep.train", description=__doc__.split("\n")[0])
    parser.add_argument("--config-json", required=True, type=json_object, help="TRAIN section as JSON")
    parser.add_argument("--model", required=True, help="hub id, local path or tiny model directory")
    parser.add_argument("--data", required=True, help="data stage directory holding train.parquet")
    parser.add_argument("--out", required=True, help="output directory results/train/<key>")
    parser.add_argument(
        "--run-info",
        default=None,
        metavar="FILE",
        help="a JSON file of {experiment, run, changed, tracking} (W&B naming; not hashed)",
    )
    parser.add_argument(
        "--warm-start",
        default=None,
        help="a PEFT adapter or model directory to start from (train.warm_start_from, resolved)",
    )
    parser.add_argument("--rung", type=float, default=None, help="train up to this fraction of the run (a segment)")
    parser.add_argument("--rung-out", default=None, help="the segment's rung folder results/rungs/<key>")
    parser.add_argument("--decision", default=None, help="the last rung decision.json before this job")
    args = parser.parse_args(argv)
    if (args.rung is None) != (args.rung_out is None):
        parser.error("--rung and --rung-out go together")
    if args.rung is not None and not 0 < args.rung < 1:
        parser.error(f"--rung {args.rung}: a fraction of training strictly between 0 and 1")

    from knobsweep.runinfo import read_run_info
    from knobsweep.spec.schema import TrainJob
    from knobsweep.spec.validate import parse

    try:  # the spec's own models: the same defaults, ranges and messages as the experiment file
        job = parse(TrainJob, args.config_json, "--config-json")
        run_info = read_run_info(args.run_info) if args.run_info is not None else None
    except SpecError as error:
        parser.error(str(error))

    from knobsweep.train.lifecycle import Cancelled, run_training

    try:
        run_training(
            job,
            args.model,
            args.data,
            args.out,
            run_info=run_info,
            warm_start=args.warm_start,
            rung=(args.rung, args.rung_out) if args.rung is not None else None,
            decision=args.decision,
        )
    except Cancelled as exc:  # SIGTERM / SIGINT: status.json says CANCELLED; the shell's 128 + signal
        print(f"knobsweep.train: cancelled: {exc}", file=sys.stderr)
        return 128 + exc.signum
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""CLI of the training stage (run under `accelerate launch`).

    accelerate launch --cpu --num_processes 1 --num_machines 1 --mixed_precision no \
        --dynamo_backend no -m knobsweep.train --config-json TRAIN --model M --data D --out OUT

TRAIN = {model, train, rollout, reward, seed} of the resolved run config (docs/contracts.md).
"""

from __future__ import annotations

import argparse
import signal
import sys

from knobsweep.io import json_object

METHODS = ("grpo",)


def _terminate(signum, frame):
    # Slurm preemption / scancel: unwind through train() so status.json says FAILED with why.
    raise SystemExit(f"terminated by signal {signal.Signals(signum).name}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m knobsweep.train", description=__doc__.split("\n")[0])
    parser.add_argument("--config-json", required=True, type=json_object, help="TRAIN section as JSON")
    parser.add_argument("--model", required=True, help="hub id, local path or tiny model directory")
    parser.add_argument("--data", required=True, help="data stage directory holding train.parquet")
    parser.add_argument("--out", required=True, help="output directory results/train/<key>")
    args = parser.parse_args(argv)
    config = args.config_json
    method = config.get("train", {}).get("method", "grpo")
    if method not in METHODS:
        parser.error(f"train.method={method!r}: this stage implements {', '.join(METHODS)}")
    signal.signal(signal.SIGTERM, _terminate)

    from knobsweep.train.grpo import train

    train(config, args.model, args.data, args.out)


if __name__ == "__main__":
    sys.exit(main())

"""python -m knobsweep.data --config-json '<data section>' --out results/data/<key>"""

from __future__ import annotations

import argparse
import sys

from knobsweep.data import DataError, convert_to_dir
from knobsweep.io import json_object

SHOWN_DROPPED = 5


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m knobsweep.data",
        description="Convert a dataset into train.parquet, eval.parquet and manifest.json.",
    )
    parser.add_argument("--config-json", required=True, type=json_object, help="the run config's `data` section, as JSON")
    parser.add_argument("--out", required=True, help="output directory, e.g. results/data/<key>")
    args = parser.parse_args(argv)
    options = args.config_json
    try:
        manifest = convert_to_dir(options, args.out)
    except DataError as error:
        print(f"knobsweep.data: error: {error}", file=sys.stderr)
        return 1

    dropped = manifest["dropped"]
    if dropped:
        print(f"knobsweep.data: dropped {len(dropped)} unusable rows:", file=sys.stderr)
        for item in dropped[:SHOWN_DROPPED]:
            print(f"  {item['split']} line {item['line']}: {item['reason']}", file=sys.stderr)
        if len(dropped) > SHOWN_DROPPED:
            print(f"  ... and {len(dropped) - SHOWN_DROPPED} more (see manifest.json)", file=sys.stderr)
    rows = manifest["rows"]
    print(f"knobsweep.data: {manifest['source']}: {rows['train']} train + {rows['eval']} eval rows -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""python -m knobsweep.data --config-json '<data section>' --out results/data/<key>"""

from __future__ import annotations

import argparse
import sys

from knobsweep.data import convert_to_dir
from knobsweep.errors import FieldError, SpecError
from knobsweep.io import json_object

SHOWN_DROPPED = 5


def summary(manifest: dict, out: str) -> str:
    """One line: source, format, rows per split, dropped count, stats (e.g. KTO labels)."""
    rows, dropped = manifest["rows"], manifest["dropped"]
    fmt = manifest["options"].get("format", "rl")
    line = f"knobsweep.data: {manifest['source']} ({fmt}): {rows['train']} train + {rows['eval']} eval rows"
    if dropped:
        per_split = ", ".join(
            f"{sum(d['split'] == split for d in dropped)} {split}"
            for split in dict.fromkeys(d["split"] for d in dropped)
        )
        line += f", {len(dropped)} dropped ({per_split})"
    if manifest.get("stats"):
        line += ", " + ", ".join(f"{key} {value}" for key, value in manifest["stats"].items())
    return f"{line} -> {out}"


def dropped_report(dropped: list[dict]) -> str:
    """The first few dropped rows (split, file, line, reason), then how many more."""
    lines = [f"knobsweep.data: dropped {len(dropped)} unusable rows:"]
    for item in dropped[:SHOWN_DROPPED]:
        where = f"{item['split']} {item['file']} line" if item.get("file") else f"{item['split']} line"
        lines.append(f"  {where} {item['line']}: {item['reason']}")
    if len(dropped) > SHOWN_DROPPED:
        lines.append(f"  ... and {len(dropped) - SHOWN_DROPPED} more (see manifest.json)")
    return "\n".join(lines)


def overlap_warning(overlap: dict) -> str:
    """A warning when eval rows share their prompt with train rows (manifest["prompt_overlap"]), else ""."""
    count = overlap["eval_rows"]
    if not count:
        return ""
    shown = "; ".join(f"eval {pair['eval']} = train {pair['train']}" for pair in overlap["pairs"][:SHOWN_DROPPED])
    more = f"; ... and {count - SHOWN_DROPPED} more" if count > SHOWN_DROPPED else ""
    return (
        f"knobsweep.data: warning: {count} of {overlap['of']} eval rows share their prompt with a train row "
        f"({shown}{more}): their eval scores measure prompts the model trained on; remove the repeats from "
        f"the inputs (manifest.json prompt_overlap lists them)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m knobsweep.data",
        description="Convert a dataset into train.parquet, eval.parquet and manifest.json.",
    )
    parser.add_argument(
        "--config-json",
        required=True,
        type=json_object,
        help="the run config's `data` section, as JSON (read by the spec's models)",
    )
    parser.add_argument("--out", required=True, help="output directory, e.g. results/data/<key>")
    args = parser.parse_args(argv)
    options = args.config_json
    try:
        manifest = convert_to_dir(options, args.out)
    except (FieldError, SpecError) as error:  # bad options (named by the spec's models) or unusable inputs
        print(f"knobsweep.data: error: {error}", file=sys.stderr)
        return 1

    print(summary(manifest, args.out))
    if manifest["dropped"]:
        print(dropped_report(manifest["dropped"]), file=sys.stderr)
    warning = overlap_warning(manifest["prompt_overlap"])
    if warning:
        print(warning, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

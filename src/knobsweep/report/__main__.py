"""python -m knobsweep.report SPEC.yaml [--results-root .]"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def parser() -> argparse.ArgumentParser:
    result = argparse.ArgumentParser(
        prog="python -m knobsweep.report",
        description="Write results/<experiment>/{report.html,summary.csv,summary.json} for an experiment.",
    )
    result.add_argument("spec", type=Path, help="experiment spec file (YAML)")
    result.add_argument(
        "--results-root",
        type=Path,
        default=Path("."),
        help="directory holding results/ (default: the working directory)",
    )
    result.add_argument(
        "--samples",
        type=int,
        default=3,
        help="eval samples shown per run (default: 3)",
    )
    return result


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from knobsweep.report.build import build_report
    from knobsweep.spec import SpecError, load_experiment

    try:
        experiment = load_experiment(args.spec)
    except (SpecError, OSError) as error:  # SpecError lists every problem, one per line
        print(f"error: {error}", file=sys.stderr)
        return 2
    if not args.results_root.is_dir():
        print(f"error: --results-root {args.results_root}: not a directory", file=sys.stderr)
        return 2
    paths = build_report(experiment, args.results_root, samples_per_run=max(0, args.samples))
    for kind in ("html", "csv", "json"):
        print(paths[kind])
    return 0


if __name__ == "__main__":
    sys.exit(main())

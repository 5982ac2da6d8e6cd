"""`knobsweep validate|plan|status|report|suggest|next`: the spec's language on the command line."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from knobsweep import layout, runlinks
from knobsweep.spec import Experiment, SpecError, load_experiment
from knobsweep.spec.expand import format_value
from knobsweep.why import WhyError, why_lines

# Piped output (CI logs, files) is not cut to 80 columns.
console = Console(width=None if sys.stdout.isatty() else 160)
SCHEMA_PATH = "workflow/schemas/experiment.schema.json"


def _load_or_exit(file: str) -> Experiment:
    try:
        return load_experiment(file)
    except SpecError as error:
        for problem in error.problems:
            console.print(f"[red]error[/red] {escape(str(problem))}", highlight=False, soft_wrap=True)
        sys.exit(1)


def validate(args: argparse.Namespace) -> int:
    failed = 0
    for file in args.files:
        try:
            experiment = load_experiment(file)
        except SpecError as error:
            failed += 1
            for problem in error.problems:
                console.print(f"[red]error[/red] {escape(str(problem))}", highlight=False, soft_wrap=True)
            continue
        console.print(
            f"[green]ok[/green] {escape(file)}: experiment '{escape(experiment.name)}', {len(experiment.runs)} runs",
            highlight=False,
        )
        print_warnings(experiment)
    return 1 if failed else 0


def print_warnings(experiment: Experiment) -> None:
    for problem in experiment.warnings:
        console.print(f"[yellow]warning[/yellow] {escape(str(problem))}", highlight=False, soft_wrap=True)


def plan(args: argparse.Namespace) -> int:
    experiment = _load_or_exit(args.file)
    root = Path(args.root)
    from knobsweep.early_stop.cost import rung_cost_lines
    from knobsweep.estimate import estimate_plan, run_cells, summary_lines
    from knobsweep.planned import RUNG_RULES
    from knobsweep.planned import plan as plan_jobs
    from knobsweep.report.power import power_lines

    planned = plan_jobs([experiment], root)  # as Snakemake will decide it (knobsweep.planned)
    pending = [
        (run.name, stage) for run in experiment.runs for stage, key in _stage_keys(run) if planned.will_run(stage, key)
    ]
    estimate = estimate_plan(experiment, root, pending)
    table = Table(title=Text(f"{experiment.name}: {len(experiment.runs)} runs ({experiment.mode})"))
    benchmarks = ("benchmarks",) if any(run.keys.benchmark for run in experiment.runs) else ()
    for column in (
        "run",
        "knob changed",
        "value",
        "data",
        "train",
        "merge",
        "eval",
        *benchmarks,
        "est. time",
        "est. cost",
    ):
        table.add_column(column)
    for run in experiment.runs:
        cells = [
            "[yellow]will run[/yellow]" if planned.will_run(stage, key) else "[green]cached[/green]"
            for stage, key in _stage_keys(run)
            if stage in STAGE_COLUMNS
        ]
        knobs = ", ".join(run.changed) or "-"
        values = ", ".join(format_value(v) for v in run.changed.values()) or "-"
        table.add_row(Text(run.name), Text(knobs), Text(values), *cells, *run_cells(estimate.runs[run.name]))
    console.print(table)
    jobs = {job: why for job, why in planned.jobs().items() if job[0] != "report"}
    base_keys = experiment.baseline.keys
    base_runs = planned.will_run("base_eval", base_keys.base_eval)
    reference = f"base model reference eval: {'will run' if base_runs else 'cached'}"
    if base_keys.base_benchmark:
        done = not planned.will_run("base_benchmark", base_keys.base_benchmark)
        reference += f", its benchmarks: {'cached' if done else 'will run'}"
    console.print(f"{reference}; {len(jobs)} stage jobs to run (shared jobs counted once)", highlight=False)
    report_why = planned.reasons.get(("report", experiment.name))
    console.print(Text(f"report: {'rebuilt (' + report_why + ')' if report_why else 'up to date'}"), highlight=False)
    # the rung jobs' cost depends on where arms stop: priced on the early-stop lines, both ways
    rung_jobs = sum(1 for job in jobs if job[0] in RUNG_RULES)
    left_out = f"{rung_jobs} rung job(s), priced on the early-stop lines below" if rung_jobs else ""
    lines = summary_lines(estimate, left_out) + rung_cost_lines(experiment, root) + power_lines(experiment, root)
    for line in lines:
        console.print(Text(line), highlight=False, soft_wrap=True)
    print_warnings(experiment)
    if args.why:
        try:
            lines = why_lines(experiment, root)
        except WhyError as error:
            return _error(error)
        console.print("why each stage will run:" if lines else "why: every stage is cached", highlight=False)
        for line in lines:
            console.print(Text("  " + line), highlight=False, soft_wrap=True)
    return 0


# plan's table; the tiny model and the base model's eval and benchmarks are shared
STAGE_COLUMNS = ("data", "train", "merge", "eval", "benchmark")


def _stage_keys(run) -> list[tuple[str, str]]:
    keys = run.keys
    benchmarks = [("benchmark", keys.benchmark), ("base_benchmark", keys.base_benchmark)] if keys.benchmark else []
    return [
        ("data", keys.data),
        ("train", keys.train),
        ("merge", keys.train),
        ("eval", keys.eval),
        ("base_eval", keys.base_eval),
        *benchmarks,
    ]


def status(args: argparse.Namespace) -> int:
    from knobsweep.runfiles import read_metrics, read_status

    experiment = _load_or_exit(args.file)
    root = Path(args.root)
    table = Table(title=Text(f"{experiment.name}: training status"))
    for column in ("run", "state", "step", "reward (last step)", "elapsed s", "reason", "files"):
        table.add_column(column)
    runlinks.refresh([experiment], root)
    warnings: list[str] = []
    for run in experiment.runs:
        label = f"run '{run.name}'"
        state = read_status(layout.path(layout.TRAIN_STATUS, root, key=run.keys.train), warnings, label)
        # the same reading as the report's: a torn last line (a run being written) skipped, each step once
        last = read_metrics(layout.path(layout.TRAIN_METRICS, root, key=run.keys.train), warnings, label).last_step()
        reward, elapsed = last.get("reward"), last.get("elapsed_s")
        table.add_row(
            Text(run.name),
            Text(str(state.get("state", "PENDING"))),
            Text(str(last.get("step", state.get("step", "-")))),
            f"{reward:.3f}" if isinstance(reward, float) else "-",
            f"{elapsed:.0f}" if isinstance(elapsed, float) and math.isfinite(elapsed) else "-",
            Text(str(state.get("reason") or "")),
            Text(str(runlinks.run_folder(experiment.name, run.name, args.root))),
        )
    console.print(table)
    for warning in dict.fromkeys(warnings):
        console.print(Text(f"warning {warning}"), highlight=False, soft_wrap=True)
    return 0


def report(args: argparse.Namespace) -> int:
    from knobsweep.report.build import build_report  # heavy imports (plotly, pandas) only when needed

    experiment = _load_or_exit(args.file)
    written = build_report(experiment, Path(args.root))
    for path in written.values():
        console.print(Text(str(path)), highlight=False)
    return 0


def compare(args: argparse.Namespace) -> int:
    from knobsweep.report.build import build_report
    from knobsweep.report.compare import combine

    first, second = _load_or_exit(args.first), _load_or_exit(args.second)
    try:
        combined = combine(first, second)
    except ValueError as error:
        console.print(f"[red]error[/red] {escape(str(error))}", highlight=False, soft_wrap=True)
        return 2
    written = build_report(combined, Path(args.root))
    for path in written.values():
        console.print(Text(str(path)), highlight=False)
    return 0


def _error(error: Exception) -> int:
    console.print(f"[red]error[/red] {escape(str(error))}", highlight=False, soft_wrap=True)
    return 1


def suggest(args: argparse.Namespace) -> int:
    from knobsweep.loop.suggest import HEALTHY, LoopError, table_rows
    from knobsweep.loop.suggest import suggest as find

    experiment = _load_or_exit(args.file)
    try:
        found, skipped = find(experiment, Path(args.root))
    except LoopError as error:
        return _error(error)
    for note in skipped:
        console.print(Text(f"note: {note}"), highlight=False, soft_wrap=True)
    if not found:
        console.print(Text(HEALTHY), highlight=False)
        return 0
    table = Table(title=Text(f"{experiment.name}: symptoms and the knob changes that address them"))
    for column in ("run", "symptom", "evidence (metric, steps, values)", "knob change", "suggested values", "rule"):
        table.add_column(column)
    for row in table_rows(found):
        table.add_row(*(Text(cell) for cell in row))
    console.print(table)
    console.print(Text(f"the rules and their sources: docs/loop.md; `knobsweep next {args.file}` writes the follow-up"))
    return 0


def follow_up(args: argparse.Namespace) -> int:
    from knobsweep.loop.follow_up import write_follow_up
    from knobsweep.loop.suggest import LoopError

    experiment = _load_or_exit(args.file)
    try:
        result = write_follow_up(
            experiment, Path(args.root), adopt=args.adopt, sweep=args.sweep, out=args.out, force=args.force
        )
    except LoopError as error:
        return _error(error)
    for note in result.notes:
        console.print(Text(f"note: {note}"), highlight=False, soft_wrap=True)
    console.print(Text(f"wrote {result.path}"), highlight=False)
    for arm, why in result.adopted:
        console.print(Text(f"adopted {arm.name}: {why}"), highlight=False, soft_wrap=True)
    if not result.adopted:
        console.print(Text(f"adopted nothing: {result.nothing_adopted}"), highlight=False)
    for knob, values in result.sweep.items():
        console.print(Text(f"sweep {knob}: {', '.join(format_value(v) for v in values)}"), highlight=False)
    for new, old in result.reused.items():
        console.print(Text(f"run '{new}' reuses the finished training of '{old}' (cached in `knobsweep plan`)"))
    return 0


def schema(args: argparse.Namespace) -> int:
    """Write the spec's JSON Schema, for editor completion and checking of experiment files."""
    from knobsweep.io import atomic_write_text
    from knobsweep.spec import ExperimentSpec

    text = json.dumps(ExperimentSpec.model_json_schema(), indent=2, sort_keys=True) + "\n"
    if args.out == "-":
        sys.stdout.write(text)
    else:
        atomic_write_text(args.out, text)
        console.print(Text(args.out), highlight=False)
    return 0


def parser() -> argparse.ArgumentParser:
    main_parser = argparse.ArgumentParser(prog="knobsweep", description=__doc__)
    commands = main_parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("validate", help="check experiment files; exit 1 on any problem")
    check.add_argument("files", nargs="+", metavar="FILE")
    check.set_defaults(handler=validate)
    for name, handler, text in (
        ("plan", plan, "runs, the knob each changes, and which stages are cached or will run"),
        ("status", status, "training state, step, reward and elapsed time per run"),
        ("report", report, "rebuild results/<experiment>/report.html without Snakemake"),
        ("suggest", suggest, "symptoms in the finished runs' curves and the knob changes that address them"),
    ):
        command = commands.add_parser(name, help=text)
        command.add_argument("file", metavar="FILE")
        command.add_argument("--root", default=".", help="directory holding results/ (default: .)")
        command.set_defaults(handler=handler)
        if name == "plan":
            command.add_argument(
                "--why",
                action="store_true",
                help="why each stage will run: the fields changed since its last result, and the runs sharing it",
            )
    both = commands.add_parser(
        "compare",
        help="one report with the runs of two experiments (results/<A>-vs-<B>/report.html), against A's baseline",
    )
    both.add_argument("first", metavar="A.yaml")
    both.add_argument("second", metavar="B.yaml")
    both.add_argument("--root", default=".", help="directory holding results/ (default: .)")
    both.set_defaults(handler=compare)
    after = commands.add_parser(
        "next", help="write the follow-up experiment: winners adopted into the baseline, suggestions swept"
    )
    after.add_argument("file", metavar="FILE")
    after.add_argument(
        "--adopt",
        default="auto",
        metavar="auto|none|ARM,...",
        help="arms whose changes go into the new baseline; auto (default): per knob, the arm better than the "
        "baseline beyond noise",
    )
    after.add_argument(
        "--sweep",
        action="append",
        metavar="KNOB=V1,V2",
        help="knob values to sweep instead of the suggestions (repeatable)",
    )
    after.add_argument("--out", help="the file to write (default: FILE's folder, <stem>_next.yaml)")
    after.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    after.add_argument("--root", default=".", help="directory holding results/ (default: .)")
    after.set_defaults(handler=follow_up)
    write_schema = commands.add_parser("schema", help="write the spec's JSON Schema")
    write_schema.add_argument("--out", default=SCHEMA_PATH, help=f"default: {SCHEMA_PATH}; - for stdout")
    write_schema.set_defaults(handler=schema)
    return main_parser


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())

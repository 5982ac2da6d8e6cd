"""Rung evaluations on a demo-sized sweep: the sweep with rungs beside the same sweep without (a
benchmark, not a test).

    python bench/rungs.py [--spec experiments/demo_rungs.yaml] [--work DIR] [--cores 1]

Copies the workflow twice (with the spec as written, and without its `early_stop:` section), runs
both sweeps at once (each with --cores), then prints:
  - where each run stopped and why, and each arm's final verdict with and without rungs (they must be
    equal for the arms that went on);
  - the sweep's compute with rungs (training, restarts, rung evals, final evals, each on its own
    line, as the report accounts it: knobsweep.report.early_stop) and without (training, final
    evals), in CPU-hours here, and what the rungs saved or cost;
  - the same sweep projected to a GPU-sized run (Qwen2.5-0.5B, 1,000 steps, 200 eval prompts, one
    GPU per job) by `knobsweep plan`'s estimator on its GPU rules of thumb, with the runs stopped
    where they stopped here: the saving there (target: >= 20%).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from knobsweep import layout  # noqa: E402
from knobsweep.cost import Cost, stage_cost, stage_devices  # noqa: E402
from knobsweep.early_stop.cost import rung_costs  # noqa: E402
from knobsweep.report.early_stop import rung_account  # noqa: E402
from knobsweep.spec import load_experiment  # noqa: E402

PROJECTED = {
    "model": {"name": "Qwen/Qwen2.5-0.5B-Instruct"},
    "data": {"train_size": 1000, "eval_size": 200},  # 1,000 prompts, 2 per step, 2 epochs: 1,000 steps
    "train": {"epochs": 2, "batch_size": 2},
    "rollout": {"max_tokens": 256},
    "eval": {"max_tokens": 256},
    "resources": {"train": {"gpus": 1}, "eval": {"gpus": 1}},
}


def copy_workflow(workdir: Path, spec: dict, name: str) -> None:
    for item in ("Snakefile", "rules", "workflow", "profiles", "data"):
        source = REPO / item
        (shutil.copytree if source.is_dir() else shutil.copy)(source, workdir / item)
    (workdir / "experiments").mkdir()
    (workdir / "experiments" / name).write_text(yaml.safe_dump(spec, sort_keys=False))


def hours(cost: Cost) -> str:
    return cost.text() or "0"


def measured_without(experiment, root: Path) -> dict[str, Cost]:
    """A sweep without rungs: each run's training stage (runtime_s) and final eval, at its devices."""
    lines = {"training": Cost(), "final evals": Cost()}
    for run in experiment.runs:
        status = json.loads(layout.path(layout.TRAIN_STATUS, root, key=run.keys.train).read_text())
        summary = json.loads(layout.path(layout.EVAL_SUMMARY, root, key=run.keys.eval).read_text())
        lines["training"] += stage_cost(stage_devices(run.config, "train"), float(status.get("runtime_s") or 0))
        lines["final evals"] += stage_cost(stage_devices(run.config, "eval"), float(summary.get("elapsed_s") or 0))
    return lines


def verdicts(root: Path, name: str) -> dict[str, str]:
    summary = json.loads((root / "results" / name / "summary.json").read_text())
    return {row["arm"]: f"{row['verdict']} ({row.get('delta')})" for row in summary["verdicts"]}


def projected(spec: dict, stops: dict[str, int], workdir: Path):
    """The sweep at GPU size, priced by the plan's estimator with the measured stops."""
    config = json.loads(json.dumps(spec))
    baseline = config["baseline"]
    for section, values in PROJECTED.items():
        baseline.setdefault(section, {})
        baseline[section] = {**baseline[section], **values}
    baseline["model"].pop("lora", None)  # the default LoRA (rank 8, alpha 16) of a real model
    baseline["train"].pop("health", None)
    # the rung evals score the same share of the eval split as the spec's (demo: 50 of 100)
    eval_size = spec["baseline"]["data"]["eval_size"]
    share = (config["early_stop"].get("eval_prompts") or eval_size) / eval_size
    config["early_stop"] = {**config["early_stop"], "eval_prompts": round(share * PROJECTED["data"]["eval_size"])}
    config["name"] = "projected"
    path = workdir / "projected.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    experiment = load_experiment(path)  # its data path is relative to the repository
    return rung_costs(experiment, REPO, stops)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spec", type=Path, default=REPO / "experiments" / "demo_rungs.yaml")
    parser.add_argument("--work", type=Path, help="work in this directory and keep it")
    parser.add_argument("--cores", type=int, default=1, help="--cores of each of the two sweeps")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="knobsweep-rungs-"))
    spec = yaml.safe_load(args.spec.read_text())
    plain = {key: value for key, value in spec.items() if key != "early_stop"}
    name = args.spec.name
    roots = {"with rungs": work / "with", "without": work / "without"}
    for root, content in zip(roots.values(), (spec, plain)):
        root.mkdir(parents=True, exist_ok=True)
        if not (root / "Snakefile").exists():
            copy_workflow(root, content, name)
    snakemake = str(Path(sys.executable).parent / "snakemake")
    started = time.perf_counter()
    jobs = {
        label: subprocess.Popen(
            [snakemake, "--cores", str(args.cores), "--config", f"experiments={Path(name).stem}"],
            cwd=root,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for label, root in roots.items()
    }
    for label, job in jobs.items():
        output, _ = job.communicate()
        print(f"{label}: snakemake exit {job.returncode} after {time.perf_counter() - started:.0f} s")
        if job.returncode != 0:
            print(output[-4000:])
            return 1

    experiments = {label: load_experiment(root / "experiments" / name) for label, root in roots.items()}
    account = rung_account(experiments["with rungs"], roots["with rungs"])
    print("\nwhere each run stopped (with rungs):")
    for row in account["runs"]:
        print(
            f"  {row['run']}: {row['state']}, {row['steps']} of {row['planned_steps']} steps"
            + (f", stopped at {row['stopped_at']}: {row['reason']}" if row["stopped_at"] else ", ran to the end")
        )
    exp_name = experiments["with rungs"].name
    print("\nfinal verdicts (arm: with rungs | without):")
    with_rungs, without = verdicts(roots["with rungs"], exp_name), verdicts(roots["without"], exp_name)
    for arm in without:
        print(f"  {arm}: {with_rungs.get(arm)} | {without[arm]}")

    print("\ncompute with rungs (measured here):")
    for line, cost in account["spent"].items():
        print(f"  {line}: {hours(cost)}")
    print(f"  total: {hours(account['total_spent'])}")
    plain_lines = measured_without(experiments["without"], roots["without"])
    print("compute without rungs (measured here):")
    for line, cost in plain_lines.items():
        print(f"  {line}: {hours(cost)}")
    total_without = sum(plain_lines.values(), Cost())
    print(f"  total: {hours(total_without)}")
    steps = sum(row["steps"] for row in account["runs"])
    planned = sum(row["planned_steps"] for row in account["runs"])
    print(f"steps trained: {steps} with rungs, {planned} without ({1 - steps / planned:.0%} fewer)")
    # the two sweeps ran at once on shared cores: the report's own projection of the same runs to the
    # end, at each run's measured seconds per step, is the steadier comparison
    print(f"the report's account of the sweep with rungs run to the end: {hours(account['total_without'])}")
    difference = total_without.cpu_hours - account["total_spent"].cpu_hours
    share = difference / total_without.cpu_hours if total_without.cpu_hours else 0.0
    print(f"rungs {'saved' if difference >= 0 else 'cost'} {abs(difference):.4g} CPU-h ({abs(share):.0%} of the sweep)")

    stops = {}
    for run in experiments["with rungs"].runs:
        status = json.loads(layout.path(layout.TRAIN_STATUS, roots["with rungs"], key=run.keys.train).read_text())
        if status.get("stopped_at_rung"):
            stops[run.name] = status["stopped_at_rung"]["rung"]
    os.chdir(REPO)
    costs = projected(spec, stops, work)
    saving = 1 - costs.stopping.gpu_hours / costs.without.gpu_hours
    print(
        "\nprojected to a GPU-sized run (Qwen2.5-0.5B, 1,000 steps, 200 eval prompts, 1 GPU per job; plan's estimator,"
    )
    print(f"GPU rules of thumb), the runs stopped where they stopped here ({len(stops)} of {len(account['runs'])}):")
    print(f"  without rungs: {hours(costs.without)}")
    print(f"  with rungs, nothing stops (the bound): {hours(costs.nothing_stops)}")
    for line, cost in costs.lines.items():
        print(f"  with rungs, {line}: {hours(cost)}")
    print(f"  with rungs, total: {hours(costs.stopping)}")
    print(f"  saving: {saving:.0%} of the sweep (target >= 20%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Rungs (early_stop) in the real workflow: `knobsweep plan` lists the rung jobs `snakemake -n` runs,
before, part-way (a run cut after the first rung resumes there) and after; the final trainings go on
from the rung checkpoints. And the decision stage on hand-written rung evals (the real decide_rung)."""

from __future__ import annotations

import json
from contextlib import chdir
from pathlib import Path

import pytest
from test_workflow import copy_workflow, dry_run_jobs, planned_jobs, snakemake

from knobsweep import layout, planned
from knobsweep.cli import main
from knobsweep.early_stop.cost import rung_cost_lines, rung_costs
from knobsweep.early_stop.plan import rung_plan
from knobsweep.early_stop.rung_decision import decide
from knobsweep.io import atomic_write_json
from knobsweep.spec import load_experiment

SPEC = """
baseline:
  model: {name: tiny}
  data: {source: gsm8k, path: data/gsm8k, train_size: 16, eval_size: 6}
  train: {learning_rate: 5.0e-4, batch_size: 4}
  rollout: {n: 4, temperature: 1.0, top_k: 0, max_tokens: 16}
  reward: {name: gsm8k, format_weight: 0.5}
  eval: {max_tokens: 16}
sweep:
  train.learning_rate: [1.0e-5]
early_stop:
  rungs: [0.25, 0.5]
  eval_prompts: 4
"""


@pytest.mark.slow
def test_rung_jobs_run_as_planned_and_resume_at_the_right_rung(tmp_path):
    workdir = tmp_path / "workflow"
    workdir.mkdir()
    copy_workflow(workdir)
    (workdir / "experiments" / "stops.yaml").write_text(SPEC)
    # 16 prompts / 4 per step = 4 steps: rungs after steps 1 and 2; per run a segment and a rung eval per
    # rung, per experiment a decision per rung, then the final trainings.
    assert planned_jobs(workdir) == {
        "convert_data": 1,
        "tiny_model": 1,
        "rung_train": 4,
        "rung_eval": 4,
        "rung_decision": 2,
        "train": 2,
        "evaluate": 3,
        "report": 1,
    }
    # Cut after the first rung (as a cancel would): the rerun starts at the second rung.
    snakemake(workdir, first_decision(workdir), "--config", "experiments=stops")
    assert planned_jobs(workdir) == {
        "rung_train": 2,
        "rung_eval": 2,
        "rung_decision": 1,
        "train": 2,
        "evaluate": 3,  # the base model's eval too: no rung waits for it
        "report": 1,
    }
    snakemake(workdir, "--config", "experiments=stops")
    assert planned_jobs(workdir) == {}
    experiment = load_experiment(workdir / "experiments" / "stops.yaml")
    for run in experiment.runs:
        status = json.loads(layout.path(layout.TRAIN_STATUS, workdir, key=run.keys.train).read_text())
        states = [h["state"] for h in status["history"]]
        # Two segments paused at their rungs, then the final job resumed from the second rung's checkpoint.
        assert states.count("PAUSED") == 2 and status["state"] in ("COMPLETED", "EARLY_STOPPED"), states
        assert status["resumed_from"].endswith("checkpoint-2"), status
    # The report accounts for the rungs: every run's stop (none here) and the compute per line.
    account = json.loads((workdir / "results" / "stops" / "summary.json").read_text())["early_stop"]
    assert [row["run"] for row in account["runs"]] == [run.name for run in experiment.runs]
    assert all(row["steps"] == row["planned_steps"] == 4 and not row["stopped_at"] for row in account["runs"])
    assert all(account["spent"][line]["cpu_hours"] > 0 for line in ("training", "rung evals", "final evals"))
    assert "Early stopping at rungs" in (workdir / "results" / "stops" / "report.html").read_text()
    # The same sweep without rungs shares every run's keys, but its trainings list no rung among their
    # inputs: Snakemake runs them again (they resume from their last checkpoint), as plan says. (That
    # dry run leaves out the new experiment's report, which plan lists and a real run builds.)
    (workdir / "experiments" / "plain.yaml").write_text(SPEC.split("early_stop:")[0])
    trains = {("train", run.keys.train) for run in load_experiment(workdir / "experiments" / "stops.yaml").runs}
    assert {job for job in dry_run_jobs(workdir, "plain") if job[0] == "train"} == trains
    with chdir(workdir):
        plain = planned.plan([load_experiment(workdir / "experiments" / "plain.yaml")], workdir).jobs()
    assert {job for job in plain if job[0] == "train"} == trains
    decision = json.loads(
        layout.path(layout.RUNG_DECISION, workdir, key=rung_plan(experiment).decisions[-1].key).read_text()
    )
    assert set(decision["decisions"]) == {"learning_rate=1e-5"}


def first_decision(workdir: Path) -> str:
    """The first rung's decision file, as a Snakemake target."""
    return rung_plan(load_experiment(workdir / "experiments" / "stops.yaml")).decisions[0].file


def test_an_arm_worse_at_a_rung_stops_with_its_rung_step_delta_and_adapter(tmp_path):
    runs = {}
    for arm, score in (("baseline", 1.0), ("lr=low", 0.0), ("neutral", 1.0)):
        for seed in (0, 1):
            name = f"{arm},seed={seed}"
            entry = {
                "arm": arm,
                "seed": seed,
                "baseline": arm == "baseline",
                "train": f"train-{arm}-{seed}",
                "segment": f"seg-{arm}-{seed}",
                "eval": f"eval-{arm}-{seed}",
            }
            runs[name] = entry
            samples = layout.path(layout.RUNG_EVAL_SAMPLES, tmp_path, key=entry["eval"])
            samples.parent.mkdir(parents=True)
            # 30 prompts: the baseline and the neutral arm answer 90% of them, the bad arm 10% (seed-to-seed spread)
            right = [(i + seed) % 10 != 0 for i in range(30)]
            rows = [
                {"row_id": str(i), "ground_truth": str(i), "score": float(r == bool(score))}
                for i, r in enumerate(right)
            ]
            samples.write_text("".join(json.dumps(r) + "\n" for r in rows))
            atomic_write_json(
                layout.path(layout.RUNG_SEGMENT, tmp_path, key=entry["segment"]), {"step": 37, "max_steps": 150}
            )
    config = {"experiment": "x", "rung": 1, "rungs": [0.25, 0.5], "alpha": 0.05, "runs": runs, "previous": None}
    result = decide(config, tmp_path)
    assert result["decisions"]["lr=low"]["stop"] and not result["decisions"]["neutral"]["stop"]
    assert set(result["stopped"]) == {"train-lr=low-0", "train-lr=low-1"}
    stop = result["stopped"]["train-lr=low-0"]
    assert (stop["rung"], stop["rungs"], stop["step"], stop["max_steps"]) == (1, 2, 37, 150)
    assert stop["delta"] < -0.5 and stop["ci_high"] < 0
    assert stop["adapter"] == "results/rungs/seg-lr=low-0/adapter"
    assert stop["reason"].startswith("worse than the baseline at rung 1 of 2 (25% of training)")
    # At the next rung, the stopped arm is carried, not compared again.
    previous = tmp_path / "previous.json"
    previous.write_text(json.dumps(result))
    later = decide({**config, "rung": 2, "previous": str(previous.relative_to(tmp_path))}, tmp_path)
    assert set(later["decisions"]) == {"neutral"} and later["stopped"] == result["stopped"]


def test_plan_prices_the_sweep_with_and_without_stopping(write_spec, tmp_path, capsys):
    experiment = load_experiment(write_spec(SPEC))
    costs = rung_costs(experiment, tmp_path)
    # Nothing stopping costs more than no rungs (a rung eval and a restart per run per rung); the arm
    # stopped at the first rung saves three quarters of its training and its final eval.
    assert costs.without.cpu_hours < costs.nothing_stops.cpu_hours
    assert costs.stopping.cpu_hours < costs.nothing_stops.cpu_hours
    assert sum(cost.cpu_hours for cost in costs.lines.values()) == pytest.approx(costs.stopping.cpu_hours)
    lines = rung_cost_lines(experiment, tmp_path)
    assert lines[0] == "early stop (rungs at 25%, 50% of training), the whole sweep:"
    assert lines[1] == f"  without rungs: {costs.without.text()}"
    assert lines[3].startswith(f"  with rungs, every arm stopped at the first rung: {costs.stopping.text()} = training")
    plain = load_experiment(write_spec(SPEC.split("early_stop:")[0], "plain.yaml"))
    assert rung_costs(plain, tmp_path) is None and rung_cost_lines(plain, tmp_path) == []
    # plan's total of what will run says that the rung jobs are priced on those lines, not in it
    assert main(["plan", "exp.yaml"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "rung job(s), priced on the early-stop lines below)" in out
    assert "early stop (rungs at 25%, 50% of training)" in out


def test_early_stop_settings_are_checked_like_every_knob(write_spec):
    from knobsweep.errors import SpecError

    for bad, message in (
        ("{rungs: [0.5, 0.25]}", "must be strictly increasing"),
        ("{rungs: [0.25, 1.0]}", "holds 1.0: each rung is a fraction of training strictly between 0 and 1"),
        ("{rungs: []}", "at least 1"),
        ("{rungs: [0.5], alpha: 0.5}", "alpha"),
        ("{rungs: [0.5], eval_promts: 10}", "eval_promts"),
    ):
        text = SPEC.split("early_stop:")[0] + f"early_stop: {bad}\n"
        with pytest.raises(SpecError, match="early_stop") as caught:
            load_experiment(write_spec(text))
        assert message in str(caught.value), (bad, str(caught.value))


def test_an_arm_a_rung_stopped_is_never_adopted(write_spec, tmp_path):
    from knobsweep.loop.follow_up import adopted_arms
    from knobsweep.loop.suggest import LoopError

    experiment = load_experiment(write_spec(SPEC))
    stop = {"rung": 1, "rungs": 2, "step": 1, "max_steps": 4, "reason": "worse than the baseline at rung 1 of 2"}
    for run in experiment.runs:
        status = {"state": "EARLY_STOPPED", "reason": "early stop at rung 1 of 2", "stopped_at_rung": stop}
        status = status if not run.is_baseline else {"state": "COMPLETED"}
        atomic_write_json(layout.path(layout.TRAIN_STATUS, tmp_path, key=run.keys.train), status)
    with pytest.raises(LoopError, match=r"--adopt 'learning_rate=1e-5': run .* was stopped at a rung \(early stop"):
        adopted_arms(experiment, tmp_path, "learning_rate=1e-5", [])
    assert adopted_arms(experiment, tmp_path, "auto", [])[0] == []  # not comparable: never adopted by itself

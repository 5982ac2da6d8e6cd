"""Real Snakemake on a temporary copy of the workflow: a tiny sweep end to end, then what re-runs and
why (`plan --why`), and the tuning loop on its curves (`suggest`, `next`, the follow-up's lineage)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from conftest import REPO, VENV_BIN, snakemake_command, user_shell

from knobsweep import planned
from knobsweep.pipeline import experiment_files
from knobsweep.spec import load_experiment

pytestmark = pytest.mark.slow

SPEC = """
baseline:
  model: {name: tiny}
  data: {source: gsm8k, path: data/gsm8k, train_size: 24, eval_size: 4}
  train: {learning_rate: 5.0e-4, batch_size: 4}
  rollout: {n: 8, temperature: 1.0, top_k: 0, max_tokens: 16}   # the random tiny model never stops by itself
  reward: {name: gsm8k, format_weight: 0.5}
  eval: {max_tokens: 16}
sweep:
  train.learning_rate: [2.0e-4]
  eval.max_tokens: [20]
tracking:
  wandb: {project: knobsweep-tests, mode: offline}
"""
# The same experiment written differently: keys reordered, comments added, another W&B project, other
# resources. None of it is part of a stage's key, so no stage may run again.
REWRITTEN = """
# the shared sweep, rewritten
sweep:
  eval.max_tokens: [20]
  train.learning_rate: [2.0e-4]   # the arm that trains
tracking:
  wandb: {mode: offline, project: another-project}
baseline:
  resources:
    train: {gpus: 1, cpus: 2, mem_mb: 9000, runtime_min: 30}
    eval: {mem_mb: 5000}
  eval: {max_tokens: 16}
  reward: {format_weight: 0.5, name: gsm8k}
  rollout: {max_tokens: 16, top_k: 0, temperature: 1.0, n: 8}
  train: {batch_size: 4, learning_rate: 5.0e-4}
  data: {eval_size: 4, train_size: 24, path: data/gsm8k, source: gsm8k}
  model: {name: tiny}
"""


def snakemake(workdir: Path, *args: str, check: bool = True, activated: bool = True) -> subprocess.CompletedProcess:
    """`snakemake --cores 2 ARGS` in `workdir`, typed in a shell with the venv activated or not
    (`.venv/bin/snakemake`, no venv on PATH: conftest.user_shell)."""
    env = user_shell(activated, workdir.parent / f"{workdir.name}-decoys")
    result = subprocess.run(
        [*snakemake_command(activated), "--cores", "2", *args],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    if check and result.returncode != 0:
        logs = "".join(f"\n== {p}\n{p.read_text()[-3000:]}" for p in (workdir / "results" / "logs").rglob("*.log"))
        raise AssertionError(
            f"snakemake {' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}{logs}"
        )
    return result


def test_the_workflow_passes_snakemakes_linter():
    # `make lint`; the linter also reads comments and docstrings (`rule ...:` on one line of a
    # file with functions counts as mixing rules and functions)
    result = snakemake(REPO, "--lint", check=False)
    assert result.returncode == 0 and "your workflow is in a good condition" in result.stdout + result.stderr, (
        result.stdout[-3000:] + result.stderr[-3000:]
    )


def dry_run_jobs(workdir: Path, experiments: str | None = None) -> dict[tuple[str, str], str]:
    """(rule, wildcard value) -> Snakemake's reason, for each job `snakemake -n` plans (but `all`)."""
    output = snakemake(workdir, "-n", *(["--config", f"experiments={experiments}"] if experiments else ())).stdout
    jobs = {}
    for block in re.split(r"^\[.*\]\n(?=(?:local)?rule )", output, flags=re.M)[1:]:
        rule = re.match(r"(?:local)?rule (\w+):", block).group(1)
        if rule == "all":
            continue
        wildcard = re.search(r"^\s+wildcards: \w+=(\S+)$", block, flags=re.M).group(1)
        jobs[(rule, wildcard)] = re.search(r"^\s+reason: (.*)$", block, flags=re.M).group(1)
    return jobs


def planned_jobs(workdir: Path, experiments: str | None = None) -> dict[str, int]:
    """Rule -> job count of what `snakemake -n` plans (empty when there is nothing to do), once it is
    checked job for job against what `knobsweep plan` says will run (knobsweep.planned): every test
    that plans meets the invariant, whatever a change to the rules does."""
    jobs = dry_run_jobs(workdir, experiments)
    here = Path.cwd()
    try:
        os.chdir(workdir)  # experiment files name their data relative to the workflow
        files = experiment_files(experiments, workdir / "experiments")
        promised = planned.plan([load_experiment(file) for file in files], workdir).jobs()
    finally:
        os.chdir(here)
    assert set(jobs) == set(promised), (
        "knobsweep plan and snakemake -n disagree:\n"
        + "".join(f"  only snakemake: {job}: {why}\n" for job, why in jobs.items() if job not in promised)
        + "".join(f"  only plan: {job}: {why}\n" for job, why in promised.items() if job not in jobs)
    )
    counts: dict[str, int] = {}
    for rule, _ in jobs:
        counts[rule] = counts.get(rule, 0) + 1
    return counts


@pytest.fixture(scope="module")
def workflow_copy(tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("workflow")
    copy_workflow(workdir)
    (workdir / "experiments" / "tiny.yaml").write_text(SPEC)
    return workdir


def copy_workflow(workdir: Path) -> None:
    """The workflow as a user's checkout has it (the workflow profile included), with no experiments."""
    for item in ("Snakefile", "rules", "workflow", "profiles", "data"):
        source = REPO / item
        (shutil.copytree if source.is_dir() else shutil.copy)(source, workdir / item)
    (workdir / "experiments").mkdir()


@pytest.fixture(scope="module")
def finished(workflow_copy) -> Path:
    # as README says a user may: `.venv/bin/snakemake ...` from a shell without the venv on PATH
    snakemake(workflow_copy, "--config", "experiments=tiny", activated=False)
    return workflow_copy


def test_sweep_builds_the_report(finished):
    report = finished / "results" / "tiny" / "report.html"
    summary = json.loads((finished / "results" / "tiny" / "summary.json").read_text())
    assert report.stat().st_size > 10_000
    names = {row["run"] for row in summary["rows"] if not row["reference"]}
    assert {"baseline", "learning_rate=2e-4", "max_tokens=20"} <= names
    # the eval-only arm shares the baseline's training job: two trainings, not three
    assert len(list((finished / "results" / "train").iterdir())) == 2
    assert (finished / "results" / "tiny" / "summary.csv").exists()
    # each run's files by its name (results/<experiment>/runs/<name>/ links into the stage folders)
    baseline = finished / "results" / "tiny" / "runs" / "baseline"
    assert json.loads((baseline / "status.json").read_text())["state"] == "COMPLETED"
    assert (baseline / "metrics.jsonl").read_text().count("\n") >= 1
    assert (baseline / "adapter" / "adapter_config.json").is_file()
    assert json.loads((baseline / "eval_summary.json").read_text())["n"] == 4
    # beside them, runs/.last-ran.json: the keys each run's stages last ran with (for plan --why)
    assert sorted(p.name for p in (baseline.parent).iterdir()) == sorted([*names, ".last-ran.json"])


def test_finished_sweep_has_nothing_to_do(finished):
    assert planned_jobs(finished) == {}


def test_what_no_key_holds_reruns_no_stage(finished):
    """Names, tracking, resources, comments and the order of keys are no part of a stage's key: Snakemake
    reruns nothing for them (only the report, which reads the edited file), as `knobsweep plan` says;
    and a second experiment with the same runs reuses every stage of the first."""
    spec = finished / "experiments" / "tiny.yaml"
    original, stamp = spec.read_text(), spec.stat()
    twin = finished / "experiments" / "tiny_twin.yaml"
    try:
        spec.write_text(REWRITTEN)
        assert planned_jobs(finished, "tiny") == {"report": 1}
        twin.write_text(original)
        assert planned_jobs(finished, "tiny_twin") == {"report": 1}  # results/tiny_twin/ has no report yet
    finally:
        twin.unlink(missing_ok=True)
        spec.write_text(original)
        os.utime(spec, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
    assert planned_jobs(finished, "tiny") == {}


def knobsweep(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(VENV_BIN / "knobsweep"), *args], cwd=workdir, capture_output=True, text=True, timeout=600
    )


def test_changing_an_eval_knob_reruns_only_eval_and_report_and_plan_why_says_so(finished, tmp_path):
    spec = finished / "experiments" / "tiny.yaml"
    original = spec.read_text()
    try:
        spec.write_text(original.replace("eval: {max_tokens: 16}", "eval: {max_tokens: 18}"))
        # baseline + learning-rate arm + base model under the new eval config; the eval arm is unchanged
        assert planned_jobs(finished) == {"evaluate": 3, "report": 1}
        # `status` moves the run links to the edited spec; what ran stays recorded for plan --why
        assert knobsweep(finished, "status", "experiments/tiny.yaml").returncode == 0
        why = knobsweep(finished, "plan", "experiments/tiny.yaml", "--why")
        assert why.returncode == 0, why.stdout + why.stderr
        lines = [line.strip() for line in why.stdout.split("why each stage will run:\n", 1)[1].splitlines()]
        assert "eval (baseline): eval.max_tokens 16 -> 18" in lines, why.stdout
        assert "eval (learning_rate=2e-4): eval.max_tokens 16 -> 18" in lines, why.stdout
        assert not any(line.startswith(("train", "merge", "data")) for line in lines), why.stdout
    finally:
        spec.write_text(original)


def test_changing_one_arms_learning_rate_reruns_only_that_arm(finished):
    spec = finished / "experiments" / "tiny.yaml"
    original = spec.read_text()
    try:
        spec.write_text(original.replace("train.learning_rate: [2.0e-4]", "train.learning_rate: [3.0e-4]"))
        assert planned_jobs(finished) == {"train": 1, "evaluate": 1, "report": 1}  # train merges too
    finally:
        spec.write_text(original)


def test_suggest_reads_the_real_curves(finished):
    result = knobsweep(finished, "suggest", "experiments/tiny.yaml")
    assert result.returncode == 0, result.stdout + result.stderr
    # 16 tokens cut every completion of the random model: TRL's completions/clipped_ratio says so
    assert "tiny: symptoms and the knob changes that address them" in result.stdout
    assert "clipped_completions" in result.stdout and "max_tokens 16" in result.stdout
    assert "32, 64" in result.stdout


def test_next_writes_a_valid_follow_up_whose_plan_reuses_the_adopted_arm(finished):
    written = finished / "experiments" / "tiny_next.yaml"
    try:
        result = knobsweep(finished, "next", "experiments/tiny.yaml", "--adopt", "learning_rate=2e-4")
        assert result.returncode == 0, result.stdout + result.stderr
        assert "run 'baseline' reuses the finished training of 'learning_rate=2e-4'" in result.stdout
        text = written.read_text()
        assert "# the random tiny model never stops by itself" in text  # the parent's comments are kept
        follow_up = yaml.safe_load(text)
        assert follow_up["parent"] == "tiny.yaml"
        assert follow_up["baseline"]["train"]["learning_rate"] == 2e-4
        assert follow_up["sweep"]["rollout.max_tokens"] == [32, 64]
        assert knobsweep(finished, "validate", "experiments/tiny_next.yaml").returncode == 0
        plan = knobsweep(finished, "plan", "experiments/tiny_next.yaml").stdout
        row = next(line for line in plan.splitlines() if line.startswith("│ baseline"))
        stages = dict(zip(("data", "train", "merge", "eval"), [cell.strip() for cell in row.split("│")[4:8]]))
        assert stages == {"data": "cached", "train": "cached", "merge": "cached", "eval": "cached"}
        # The README's loop goes on with `snakemake --config experiments=tiny_next`: it must not run again
        # what plan calls cached (under other run and experiment names): only the new arms (rollout knobs:
        # each trains anew) and the report.
        arms = sum(len(values) for values in follow_up["sweep"].values())
        assert planned_jobs(finished, "tiny_next") == {"train": arms, "evaluate": arms, "report": 1}
        # the follow-up's report shows the chain of baselines, each with its eval score
        assert knobsweep(finished, "report", "experiments/tiny_next.yaml").returncode == 0
        summary = json.loads((finished / "results" / "tiny_next" / "summary.json").read_text())
        # the reused training keeps the W&B run that logged it, its name and id, and the report names it
        reused = next(row for row in summary["rows"] if row["run"] == "baseline")
        train_dir = finished / "results" / "train" / reused["train_key"]
        run_id = (train_dir / "wandb_run_id").read_text().strip()
        assert reused["wandb_run"] == f"knobsweep-tests/learning_rate=2e-4 ({run_id}) offline"
        info = json.loads((train_dir / "run_info.json").read_text())
        assert (info["experiment"], info["run"]) == ("tiny", "learning_rate=2e-4")
        chain = summary["lineage"]
        assert [(link["experiment"], link["status"]) for link in chain] == [
            ("tiny", "evaluated"),
            ("tiny_next", "evaluated"),
        ]
        assert chain[1]["changes"] == [{"knob": "train.learning_rate", "from": 5e-4, "to": 2e-4}]
        page = (finished / "results" / "tiny_next" / "report.html").read_text()
        assert "Lineage: the baselines this experiment follows up" in page
        assert reused["wandb_run"] in page
    finally:
        written.unlink(missing_ok=True)  # the tests below plan every experiments/*.yaml


@pytest.mark.parametrize(
    "bad, message",
    [
        (
            ("learning_rate: [2.0e-4]", "learning_rate: [2.0e-4, 0.5]"),
            "tiny.yaml: sweep.train.learning_rate[1]: 0.5 is out of range; allowed: 1e-07 <= value <= 0.0005",
        ),
        (
            ("eval.max_tokens: [20]", "eval.max_tokens: [twenty]"),
            "tiny.yaml: sweep.eval.max_tokens[0]: 'twenty': Input should be a valid integer",
        ),
        (
            ("eval.max_tokens: [20]", "eval.max_tokns: [20]"),
            "tiny.yaml: sweep.eval.max_tokns: unknown knob 'eval.max_tokns' (did you mean 'eval.max_tokens'?)",
        ),
        (("eval: {max_tokens: 16}", "eval: {max_tokens: 16"), "tiny.yaml: YAML syntax error: line"),
    ],
)
def test_bad_spec_fails_before_any_job_and_writes_nothing(workflow_copy, tmp_path, bad, message):
    copy = tmp_path / "bad"
    shutil.copytree(workflow_copy, copy, ignore=shutil.ignore_patterns("results", ".snakemake"))
    (copy / "experiments" / "tiny.yaml").write_text(SPEC.replace(*bad))
    result = snakemake(copy, "--config", "experiments=tiny", check=False)
    assert result.returncode != 0
    assert message in result.stdout + result.stderr
    assert not (copy / "results").exists()


FAILING = """
baseline:
  model: {name: tiny}
  data: {source: gsm8k, path: data/gsm8k, train_size: 16, eval_size: 4}
  train: {learning_rate: 5.0e-4, batch_size: 4, save_every: 1}
  rollout: {n: 4, temperature: 1.0, top_k: 0, max_tokens: 16}
  reward: {name: gsm8k, format_weight: 0.5}
  eval: {max_tokens: 16}
sweep:
  train.learning_rate: [2.0e-4]   # the run whose loss turns NaN at step 2 (the test hook)
"""


def test_a_failed_run_leaves_the_others_and_the_report_complete(tmp_path, monkeypatch):
    copy_workflow(tmp_path)
    (tmp_path / "experiments" / "failing.yaml").write_text(FAILING)
    monkeypatch.chdir(tmp_path)
    diverges = next(run for run in load_experiment(tmp_path / "experiments" / "failing.yaml").runs if run.changed)
    monkeypatch.setenv("KNOBSWEEP_TEST_NAN_AT_STEP", "2")
    monkeypatch.setenv("KNOBSWEEP_TEST_NAN_ONLY_IN", diverges.keys.train)
    result = snakemake(tmp_path, "--config", "experiments=failing", check=False)
    assert result.returncode != 0  # the sweep had a failure, and says so
    summary = json.loads((tmp_path / "results" / "failing" / "summary.json").read_text())
    rows = {row["run"]: row for row in summary["rows"] if not row["reference"]}
    assert rows["baseline"]["status"] == "COMPLETED" and rows["baseline"]["eval_score"] is not None
    failed = rows["learning_rate=2e-4"]
    assert failed["status"] == "FAILED" and "NonFiniteError: loss is nan at step 2" in failed["reason"], failed
    assert "lists them" in result.stderr  # the onerror hook built the report
    report = (tmp_path / "results" / "failing" / "report.html").read_text()
    assert "learning_rate=2e-4" in report and "FAILED" in report
    # The failed run's logs and status stay for the report and a later resume; its adapter does not exist.
    train_dir = tmp_path / "results" / "train" / diverges.keys.train
    assert (train_dir / "metrics.jsonl").read_text().count("\n") == 1 and not (train_dir / "adapter").exists()

    # The cause fixed, the same command finishes the sweep: the failed run's stages (not the report
    # onerror built) are what Snakemake plans, as `knobsweep plan` says.
    assert planned_jobs(tmp_path) == {"train": 1, "evaluate": 1, "report": 1}
    monkeypatch.delenv("KNOBSWEEP_TEST_NAN_AT_STEP")
    snakemake(tmp_path, "--config", "experiments=failing")
    summary = json.loads((tmp_path / "results" / "failing" / "summary.json").read_text())
    assert {row["status"] for row in summary["rows"] if not row["reference"]} == {"COMPLETED"}
    assert json.loads((train_dir / "status.json").read_text())["resumed_from"].endswith("checkpoint-1")


RESUMABLE = """
baseline:
  model: {name: tiny}
  data: {source: gsm8k, path: data/gsm8k, train_size: 48, eval_size: 4}
  train: {learning_rate: 5.0e-4, batch_size: 1, save_every: 2, keep_checkpoints: 2}
  rollout: {n: 4, temperature: 1.0, top_k: 0, max_tokens: 16}
  reward: {name: gsm8k, format_weight: 0.5}
  eval: {max_tokens: 16}
tracking:
  wandb: {project: knobsweep-tests, mode: offline}
"""
RESUMABLE_STEPS = 48  # 48 prompts, one per step, one epoch


def trainer_pids(out_dir: Path) -> list[int]:
    """The training processes writing `out_dir` (`python -m knobsweep.train ... --out OUT`), not their
    accelerate launcher or the job's shell."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            argv = (proc / "cmdline").read_bytes().decode().split("\0")
        except (OSError, ValueError):
            continue
        if argv[1:3] == ["-m", "knobsweep.train"] and any(arg.endswith(str(out_dir)) for arg in argv):
            pids.append(int(proc.name))
    return pids


def logged_steps(metrics: Path) -> list[int]:
    try:
        return [json.loads(line)["step"] for line in metrics.read_text().splitlines() if line.strip()]
    except (OSError, ValueError):  # not there yet, or a line being written
        return []


def test_a_cancelled_run_resumes_when_the_same_command_runs_again(tmp_path, monkeypatch):
    """SIGTERM to the trainer mid-run: the run is CANCELLED with a checkpoint and the sweep's report lists
    it; the same command again plans and runs the rest (not "Nothing to be done"), resuming from the
    checkpoint into the same W&B run, every step logged once."""
    copy_workflow(tmp_path)
    (tmp_path / "experiments" / "resumable.yaml").write_text(RESUMABLE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_SILENT", "true")
    run = load_experiment(tmp_path / "experiments" / "resumable.yaml").baseline
    out = Path("results") / "train" / run.keys.train
    command = [*snakemake_command(True), "--cores", "2", "--config", "experiments=resumable"]
    env = user_shell(True, tmp_path.parent / f"{tmp_path.name}-decoys")
    first = subprocess.Popen(
        command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        deadline = time.monotonic() + 600
        while len(logged_steps(tmp_path / out / "metrics.jsonl")) < 6 and first.poll() is None:
            assert time.monotonic() < deadline, "no 6 training steps within 600 s"
            time.sleep(0.2)
        pids = trainer_pids(out)
        assert first.poll() is None and pids, "the trainer finished before it could be signalled"
        for pid in pids:
            os.kill(pid, signal.SIGTERM)
        output = first.communicate(timeout=600)[0]
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode != 0, output[-3000:]
    cancelled = json.loads((tmp_path / out / "status.json").read_text())
    assert cancelled["state"] == "CANCELLED", cancelled
    stopped = cancelled["step"]
    assert 6 <= stopped < RESUMABLE_STEPS and cancelled["reason"].startswith(f"SIGTERM at step {stopped}")
    run_id = (tmp_path / out / "wandb_run_id").read_text().strip()
    summary = json.loads((tmp_path / "results" / "resumable" / "summary.json").read_text())  # built by onerror
    assert [row["status"] for row in summary["rows"] if not row["reference"]] == ["CANCELLED"]

    # what will run, as Snakemake and `knobsweep plan` see it: the run's training (+ merge), eval and report
    assert planned_jobs(tmp_path) == {"train": 1, "evaluate": 1, "report": 1}
    plan = subprocess.run(
        [str(VENV_BIN / "knobsweep"), "plan", "experiments/resumable.yaml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    row = next(line for line in plan.splitlines() if "baseline" in line)
    assert row.count("will run") == 3 and "cached" in row, plan  # data cached; train, merge, eval will run

    second = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "Nothing to be done" not in second.stdout + second.stderr
    status = json.loads((tmp_path / out / "status.json").read_text())
    assert (status["state"], status["step"], status["attempt"]) == ("COMPLETED", RESUMABLE_STEPS, 2), status
    assert status["resumed_from"].endswith(f"checkpoint-{stopped}")
    assert logged_steps(tmp_path / out / "metrics.jsonl") == list(range(1, RESUMABLE_STEPS + 1))
    assert (tmp_path / out / "wandb_run_id").read_text().strip() == run_id
    attempts = sorted((tmp_path / out / "wandb").glob("offline-run-*"))  # one W&B run, logged in two attempts
    assert len(attempts) == 2 and {d.name.rsplit("-", 1)[-1] for d in attempts} == {run_id}
    summary = json.loads((tmp_path / "results" / "resumable" / "summary.json").read_text())
    assert [row["status"] for row in summary["rows"] if not row["reference"]] == ["COMPLETED"]
    assert planned_jobs(tmp_path) == {}


NO_SIGNAL = """
baseline:
  model: {name: tiny}
  data: {source: gsm8k, path: data/gsm8k, train_size: 16, eval_size: 4}
  train: {learning_rate: 5.0e-4, batch_size: 4}
  rollout: {n: 8, temperature: 1.0, top_k: 0, max_tokens: 16}
  reward: {name: gsm8k, format_weight: 0.5}
  eval: {max_tokens: 16}
sweep:
  reward.format_weight: [0.0]   # strict correctness only: the random tiny model scores 0 on every sample
"""


def test_a_run_without_learning_signal_is_early_stopped_and_the_sweep_still_completes(tmp_path, monkeypatch):
    copy_workflow(tmp_path)
    (tmp_path / "experiments" / "nosignal.yaml").write_text(NO_SIGNAL)
    monkeypatch.chdir(tmp_path)
    silent = next(run for run in load_experiment(tmp_path / "experiments" / "nosignal.yaml").runs if run.changed)
    snakemake(tmp_path, "--config", "experiments=nosignal")  # exit 0: an EARLY_STOPPED run is a result
    summary = json.loads((tmp_path / "results" / "nosignal" / "summary.json").read_text())
    rows = {row["run"]: row for row in summary["rows"] if not row["reference"]}
    assert rows["baseline"]["status"] == "COMPLETED" and rows["baseline"]["eval_score"] is not None
    arm = rows["format_weight=0"]
    assert arm["status"] == "EARLY_STOPPED" and arm["eval_score"] is None, arm
    assert arm["reason"].startswith("no learning signal: every group of all 4 steps had zero score variance")
    assert "rollout.temperature" in arm["reason"] and "rollout.n" in arm["reason"]
    # no merge was attempted: the merge folder says why instead of holding a model
    merged = tmp_path / "results" / "merge" / silent.keys.train
    assert [p.name for p in merged.iterdir() if p.name != ".snakemake_timestamp"] == ["not_merged.json"]
    assert "EARLY_STOPPED: no learning signal" in json.loads((merged / "not_merged.json").read_text())["reason"]
    evaluation = json.loads((tmp_path / "results" / "eval" / silent.keys.eval / "summary.json").read_text())
    assert evaluation["score"] is None and "not merged" in evaluation["not_evaluated"]
    assert "EARLY_STOPPED" in (tmp_path / "results" / "nosignal" / "report.html").read_text()
    assert planned_jobs(tmp_path) == {}

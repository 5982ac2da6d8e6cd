"""The tuning loop: each rule on constructed curves (fires on its symptom, not on a healthy run), the
suggested values within the schema, and `suggest` / `next` / the report's lineage on constructed results."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml
from conftest import finish_stages

from knobsweep import layout
from knobsweep.cli import main
from knobsweep.dotted import set_dotted
from knobsweep.loop.curves import read_curves
from knobsweep.loop.follow_up import parse_value
from knobsweep.loop.rules import RULES, RunData
from knobsweep.loop.suggest import diagnose, table_rows
from knobsweep.loop.values import allowed_values, bounds
from knobsweep.spec import RunConfig, load_experiment

RULE = {rule.name: rule for rule in RULES}


def config_with(**knobs) -> dict:
    """A default run config with dotted knobs set (`train__loss="dapo"` sets train.loss)."""
    config = RunConfig.model_validate({"model": {"name": "tiny"}}).model_dump(mode="json")
    for knob, value in knobs.items():
        set_dotted(config, knob.replace("__", "."), value)
    return RunConfig.model_validate(config).model_dump(mode="json")


def run(curves: dict[str, list[float]], config: dict | None = None, rollouts: Path = Path("none.jsonl")) -> RunData:
    return RunData(
        "baseline",
        config or config_with(),
        {name: list(enumerate(values, start=1)) for name, values in curves.items()},
        rollouts,
    )


# Learns for 12 steps, then holds: no rule may fire on it.
HEALTHY = {
    "reward": [0.1 + 0.5 * min(1.0, i / 12) for i in range(30)],
    "kl": [0.01] * 30,
    "completions/clipped_ratio": [0.05] * 30,
    "entropy": [1.0] * 30,
    "identical_rollouts": [0.0] * 30,
    "invalid_rate": [0.0] * 30,
    "frac_reward_zero_std": [0.25] * 30,
    "rewards/margins": [0.2] * 30,
}


@pytest.mark.parametrize("method", ["grpo", "kto"])
@pytest.mark.parametrize("rule", RULES, ids=lambda rule: rule.name)
def test_no_rule_fires_on_a_healthy_run(rule, method):
    assert rule.test(run(HEALTHY, config_with(train__method=method))) is None


def proposals(found) -> dict[str, list]:
    return {p.change.knob: list(p.values) for s in found for p in s.proposals}


def test_reward_crash_halves_the_learning_rate():
    evidence = RULE["reward_crash"].test(run({"reward": [0.0] * 5 + [0.8] * 5 + [0.1] * 10}))
    assert (evidence.metric, evidence.steps, evidence.values) == (
        "reward (5-step mean)",
        "5 -> 10 -> 15",
        "0 -> peak 0.8 -> 0.1",
    )
    # a fall of less than half of the gain (train.health.reward_collapse_drop) is no crash
    assert RULE["reward_crash"].test(run({"reward": [0.0] * 5 + [0.8] * 5 + [0.5] * 10})) is None
    found = diagnose(run({"reward": [0.0] * 5 + [0.8] * 5 + [0.1] * 10}))
    assert [s.rule.name for s in found] == ["reward_crash"]
    assert proposals(found) == {"train.learning_rate": [5e-05]}


def test_reward_still_rising_adds_an_epoch_or_raises_the_rate_within_twice():
    rising = {"reward": [i / 20 for i in range(1, 21)]}
    evidence = RULE["reward_rising"].test(run(rising))
    assert (evidence.steps, evidence.values) == ("13-16 -> 17-20", "0.725 -> 0.925 (slope 0.05/step at the end)")
    assert proposals(diagnose(run(rising))) == {"train.epochs": [2], "train.learning_rate": [0.00015, 0.0002]}
    # the schema's range (learning_rate <= 5e-4, epochs <= 10), read from the pydantic fields, caps them
    capped = diagnose(run(rising, config_with(train__learning_rate=4e-4, train__epochs=10)))
    assert proposals(capped) == {"train.epochs": [], "train.learning_rate": [0.0005]}


def test_flat_reward_with_most_groups_filtered_raises_temperature_or_n():
    flat = {"reward": [0.0] * 10, "frac_reward_zero_std": [0.9] * 10}
    evidence = RULE["reward_flat_filtered"].test(run(flat))
    assert (evidence.metric, evidence.steps, evidence.values) == (
        "frac_reward_zero_std",
        "1-10",
        "mean 0.9; reward 0-0",
    )
    assert proposals(diagnose(run(flat))) == {"rollout.temperature": [0.8, 1.0], "rollout.n": [16]}
    assert "check that the evaluator gives varied scores" in RULE["reward_flat_filtered"].reason
    # the trainer's own filtered share counts where TRL's is not logged
    assert RULE["reward_flat_filtered"].test(run({"reward": [0.0] * 10, "filtered_group_rate": [1.0] * 10}))


def test_kl_growing_raises_kl_beta_only_where_the_spec_allows_it():
    growing = {"kl": [0.1] * 12 + [0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]}
    evidence = RULE["kl_growing"].test(run(growing))
    assert (evidence.metric, evidence.steps, evidence.values) == ("kl", "9-12 -> 17-20", "0.1 -> 0.75")
    assert RULE["kl_growing"].test(run({"kl": [2.0] * 10}))  # above train.health.kl_max
    assert RULE["kl_growing"].test(run(growing, config_with(train__method="sft"))) is None
    assert proposals(diagnose(run(growing))) == {"train.kl_beta": [0.01, 0.04]}
    assert proposals(diagnose(run(growing, config_with(train__kl_beta=0.05)))) == {"train.kl_beta": [0.1, 0.2]}
    (dapo,) = diagnose(run(growing, config_with(train__loss="dapo")))
    assert dapo.proposals[0].values == ()
    assert dapo.proposals[0].dropped[0] == (
        "train.kl_beta: 0.01: kl_beta must be 0/unset when loss is dapo; a KL term is only part of loss grpo"
    )


def test_clipped_completions_raise_max_tokens_within_the_schema():
    clipped = {"completions/clipped_ratio": [0.5] * 10}
    evidence = RULE["clipped_completions"].test(run(clipped))
    assert (evidence.steps, evidence.values) == ("9-10", "mean 0.5 at max_tokens 2048")
    assert proposals(diagnose(run(clipped))) == {"rollout.max_tokens": [4096, 8192]}
    assert proposals(diagnose(run(clipped, config_with(rollout__max_tokens=8192)))) == {"rollout.max_tokens": [16384]}


def test_identical_rollouts_or_entropy_collapse_raise_temperature():
    evidence = RULE["entropy_collapse"].test(run({"identical_rollouts": [1.0] * 10}))
    assert (evidence.metric, evidence.steps, evidence.values) == ("identical_rollouts", "9-10", "100% of steps")
    collapsed = {"entropy": [1.0] * 5 + [0.1] * 5}
    evidence = RULE["entropy_collapse"].test(run(collapsed))
    assert (evidence.metric, evidence.steps, evidence.values) == ("entropy", "1-2 -> 9-10", "1 -> 0.1")
    assert proposals(diagnose(run(collapsed))) == {"rollout.temperature": [0.9, 1.1]}
    assert proposals(diagnose(run(collapsed, config_with(rollout__temperature=1.9)))) == {"rollout.temperature": [2.0]}


def test_invalid_samples_name_the_rows_not_a_knob(tmp_path):
    rollouts = tmp_path / "rollouts.jsonl"
    lines = [{"row_id": "r1", "valid": False, "reason": "evaluator raised ValueError: bad"}] * 3
    lines += [{"row_id": "r2", "valid": False, "reason": "evaluator timed out: 60 s"}]
    lines += [{"row_id": "r3", "valid": True, "reason": "ok"}]
    rollouts.write_text("".join(json.dumps(line) + "\n" for line in lines))
    (found,) = diagnose(run({"invalid_rate": [0.5] * 10}, rollouts=rollouts))
    assert found.proposals == ()
    assert found.evidence.note == (
        "not a knob: the evaluator or the data; rows r1, r2 (most often: evaluator raised ValueError: bad)"
    )
    assert RULE["invalid_samples"].test(run({"invalid_rate": [0.1] * 10})) is None  # <= invalid_rate_max 0.2


def test_kto_margins_negative_after_warmup():
    negative = {"rewards/margins": [0.3] * 10 + [-0.5] * 10}
    kto = config_with(train__method="kto")
    evidence = RULE["kto_margin_negative"].test(run(negative, kto))
    assert (evidence.steps, evidence.values) == ("11-20", "mean -0.5 after step 10")
    assert proposals(diagnose(run(negative, kto))) == {"train.learning_rate": [5e-05], "train.kto.beta": [0.2]}
    assert RULE["kto_margin_negative"].test(run({"rewards/margins": [-0.5] * 10}, kto)) is None  # warm-up only


def test_every_rule_is_documented_with_its_sources():
    text = (Path(__file__).resolve().parents[1] / "docs" / "loop.md").read_text()
    for rule in RULES:
        assert f"`{rule.name}`" in text
        for source in rule.sources:
            assert source in text


def test_bounds_come_from_the_schema():
    assert bounds("train.learning_rate") == (1e-7, 5e-4)
    assert bounds("rollout.top_p") == (-math.inf, 1.0)  # gt 0: an exclusive bound is left to validation
    assert allowed_values(config_with(), "rollout.n", [1, 8, 300]) == ([2, 256], [])


def test_read_curves_keeps_a_steps_last_finite_value(tmp_path):
    path = tmp_path / "metrics.jsonl"
    lines = [{"step": 1, "reward": 0.1}, {"step": 1, "reward": 0.2, "kl": float("nan")}, {"step": 2, "reward": 0.3}]
    lines.append({"step": 2, "train_runtime": 5.0, "reward": 9.0})  # TRL's end-of-training summary
    path.write_text("".join(json.dumps(line) + "\n" for line in lines) + '{"step": 3, "rew')
    warnings = []
    assert read_curves(path, warnings, "run 'x'") == {"reward": [(1, 0.2), (2, 0.3)]}
    assert warnings == [
        f"run 'x': {path}:2: step 1 logged again after step 1 (a restart that appended instead of resuming?); "
        "each step's last line is used",
        f"run 'x': {path}: kl is not a finite number at step 1 (of 1 logged)",
    ]


# ---------------------------------------------------------------- suggest / next on constructed results

SPEC = """\
# The loop's test experiment.
baseline:
  model: {name: tiny}
  data: {source: gsm8k, path: data/gsm8k, train_size: 8, eval_size: 4}
  rollout:
    max_tokens: 16   # short answers
sweep:
  train.learning_rate: [2.0e-4]
  rollout.n: [4]
hypotheses:
  rollout.n: Half the group learns later.
"""
PROMPTS = 30


def write_results(root: Path, run, rewards: list[float], score: float, state: str = "COMPLETED") -> None:
    """A run's status, curve, adapter folder and eval (samples and summary), where the layout puts them."""
    status = layout.path(layout.TRAIN_STATUS, root, key=run.keys.train)
    status.parent.mkdir(parents=True, exist_ok=True)
    status.write_text(json.dumps({"state": state, "reason": "", "step": len(rewards)}))
    lines = [{"step": step, "reward": value} for step, value in enumerate(rewards, start=1)]
    layout.path(layout.TRAIN_METRICS, root, key=run.keys.train).write_text(
        "".join(json.dumps(line) + "\n" for line in lines)
    )
    finish_stages(root, run, ("data", "tiny", "train", "merge"))  # the rest, as placeholders
    samples = layout.path(layout.EVAL_SAMPLES, root, key=run.keys.eval)
    samples.parent.mkdir(parents=True, exist_ok=True)
    rows = [{"row_id": str(i), "ground_truth": str(i), "score": score} for i in range(PROMPTS)]
    samples.write_text("".join(json.dumps(row) + "\n" for row in rows))
    summary = {"score": score, "score_ci95": [max(0.0, score - 0.1), min(1.0, score + 0.1)], "n": PROMPTS}
    layout.path(layout.EVAL_SUMMARY, root, key=run.keys.eval).write_text(json.dumps(summary))


RISING = [i / 20 for i in range(1, 21)]


@pytest.fixture
def swept(write_spec, tmp_path):
    """exp.yaml with its baseline (reward still rising), a better learning-rate arm and an n arm within noise."""
    path = write_spec(SPEC)
    experiment = load_experiment(path)
    runs = {run.name: run for run in experiment.runs}
    write_results(tmp_path, runs["baseline"], RISING, 0.0)
    write_results(tmp_path, runs["learning_rate=2e-4"], HEALTHY["reward"], 1.0)
    write_results(tmp_path, runs["n=4"], HEALTHY["reward"], 0.0)
    return path


def test_suggest_prints_each_symptom_with_its_evidence_and_values(swept, capsys):
    assert main(["suggest", str(swept)]) == 0
    out = capsys.readouterr().out
    assert "symptoms and the knob changes that address them" in out
    assert "reward still rising at the end" in out
    assert "train.epochs +1" in out and "reward_rising" in out
    assert "1.5e-4, 2e-4" in out
    assert out.count("reward_rising") == 2  # one row per knob change; the healthy arms have none


def test_suggest_on_a_healthy_baseline_says_so(write_spec, tmp_path, capsys):
    path = write_spec(SPEC)
    for run in load_experiment(path).runs:
        write_results(tmp_path, run, HEALTHY["reward"], 0.5)
    assert main(["suggest", str(path)]) == 0
    assert capsys.readouterr().out.strip() == "no symptom found; the baseline looks healthy"


def test_suggest_and_next_need_a_finished_baseline(write_spec, tmp_path, capsys):
    path = write_spec(SPEC)
    experiment = load_experiment(path)
    write_results(tmp_path, experiment.baseline, RISING, 0.0, state="RUNNING")
    for command in (["suggest", str(path)], ["next", str(path)]):
        assert main(command) == 1
        assert capsys.readouterr().out.strip() == (
            f"error {path}: run 'baseline' is RUNNING; suggest and next need a finished baseline "
            "(state COMPLETED or EARLY_STOPPED): run the sweep first"
        )
    assert not (tmp_path / "exp_next.yaml").exists()


def test_next_adopts_no_one_seed_arm_and_says_more_seeds_could_decide(swept, tmp_path, capsys):
    # +1 on every prompt is beyond eval noise, but with one training run per side a lucky seed could do it.
    assert main(["next", str(swept)]) == 0
    assert (
        "adopted nothing: no arm is better than the baseline beyond noise; seed-limited (one seed per side, so "
        "more seeds could decide): learning_rate=2e-4"
    ) in capsys.readouterr().out


def test_next_adopts_the_better_arm_after_the_correction_over_arms(write_spec, tmp_path, capsys):
    path = write_spec(SPEC + "seeds: [0, 1]\n")
    scores = {"baseline": (0.0, 0.1), "learning_rate=2e-4": (0.9, 1.0), "n=4": (0.1, 0.0)}
    for run in load_experiment(path).runs:
        arm, seed = run.name.split(",seed=")
        write_results(tmp_path, run, RISING if arm == "baseline" else HEALTHY["reward"], scores[arm][int(seed)])
    assert main(["next", str(path), "--sweep", "train.epochs=2"]) == 0
    header = (tmp_path / "exp_next.yaml").read_text().splitlines()[1]
    # Pooled run-to-run SD 0.0707 (3 d.f.), SE 0.0707; Dunnett's bound for 2 arms at 3 d.f. is 3.8.
    assert header.startswith(
        "# Adopted into the baseline: learning_rate=2e-4 (better than the baseline beyond noise: eval score delta "
        "+0.9 [95% CI +0.627, +1], p = "
    ) and header.endswith(" adjusted over the sweep's arms).")


def test_next_adopts_an_arm_as_asked_sweeps_the_suggestions_and_keeps_comments(swept, tmp_path, capsys):
    assert main(["next", str(swept), "--adopt", "learning_rate=2e-4"]) == 0
    out = capsys.readouterr().out
    written = tmp_path / "exp_next.yaml"
    assert f"wrote {written}" in out
    assert "run 'baseline' reuses the finished training of 'learning_rate=2e-4'" in out
    text = written.read_text()
    assert text.startswith(
        "# Follow-up of exp.yaml, written by `knobsweep next`.\n"
        "# Adopted into the baseline: learning_rate=2e-4 (adopted as asked; seed-limited: eval score delta "
        "+1 [95% CI +0.769, +1] from eval sampling alone (one seed per side)).\n"
        "# Sweep from the suggestions of `knobsweep suggest` on the baseline's curves: "
        "train.epochs: 2; train.learning_rate: 3e-4, 4e-4\n\n"
        "# The loop's test experiment.\nparent: exp.yaml\n"
    )
    assert "# The loop's test experiment." in text and "max_tokens: 16   # short answers" in text
    spec = yaml.safe_load(text)
    assert spec["parent"] == "exp.yaml"
    assert spec["baseline"]["train"] == {"learning_rate": 0.0002}
    assert spec["sweep"] == {"train.epochs": [2], "train.learning_rate": [0.0003, 0.0004]}
    assert set(spec["hypotheses"]) == {"train.epochs", "train.learning_rate"}
    assert main(["validate", str(written)]) == 0
    capsys.readouterr()
    assert main(["plan", str(written)]) == 0
    plan = capsys.readouterr().out
    row = next(line for line in plan.splitlines() if line.startswith("│ baseline"))
    stages = dict(zip(("data", "train", "merge", "eval"), [cell.strip() for cell in row.split("│")[4:8]]))
    assert stages == {"data": "cached", "train": "cached", "merge": "cached", "eval": "cached"}  # the arm's


def test_next_never_overwrites_without_force(swept, tmp_path, capsys):
    written = tmp_path / "exp_next.yaml"
    written.write_text("mine\n")
    assert main(["next", str(swept)]) == 1
    assert (
        capsys.readouterr().out.strip()
        == f"error {written} exists; pass --force to overwrite it, or --out another file"
    )
    assert written.read_text() == "mine\n"
    assert main(["next", str(swept), "--force", "--adopt", "none", "--sweep", "rollout.temperature=0.9,1.0"]) == 0
    text = written.read_text()
    assert (
        "# Adopted into the baseline: nothing (--adopt none).\n# Sweep from --sweep: rollout.temperature: 0.9, 1\n"
        in text
    )
    spec = yaml.safe_load(text)
    assert spec["sweep"] == {"rollout.temperature": [0.9, 1.0]} and "train" not in spec["baseline"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--adopt", "learning_rate=3e-4"],
            "--adopt 'learning_rate=3e-4': no such arm in exp.yaml (did you mean 'learning_rate=2e-4'?); "
            "arms: learning_rate=2e-4, n=4 (or auto, none)",
        ),
        (
            ["--sweep", "train.learning_rate=1"],
            "--sweep train.learning_rate=1: train.learning_rate: 1 is out of range; allowed: 1e-07 <= value <= 0.0005",
        ),
        (
            ["--sweep", "train.learnig_rate=1e-4"],
            "--sweep train.learnig_rate: unknown knob 'train.learnig_rate' (did you mean 'train.learning_rate'?)",
        ),
        (
            ["--sweep", "train.learning_rate"],
            "--sweep 'train.learning_rate': expected KNOB=V1,V2 (e.g. train.learning_rate=5e-5,2e-4)",
        ),
        (
            ["--sweep", "rollout.temperature=[0.9"],
            "--sweep rollout.temperature=[0.9: YAML syntax error: line 1, column 5: "
            "expected ',' or ']', but got '<stream end>'",
        ),
    ],
)
def test_next_bad_input_names_the_arm_or_knob_and_writes_nothing(swept, tmp_path, capsys, args, message):
    assert main(["next", "exp.yaml", *args]) == 1
    assert capsys.readouterr().out.strip() == f"error {message}"
    assert not (tmp_path / "exp_next.yaml").exists()


def test_sweep_values_are_read_as_a_spec_reads_them():
    # YAML 1.2, as spec files: 2e-4 a number, `off` the string rollout.vllm takes (YAML 1.1 made it false)
    assert [parse_value(text) for text in ("off", "2e-4", "1.0", "16", "true")] == ["off", 2e-4, 1.0, 16, True]


def test_next_refuses_an_unfinished_arm(swept, tmp_path, capsys):
    arm = next(run for run in load_experiment(swept).runs if run.name == "n=4")
    layout.path(layout.TRAIN_STATUS, tmp_path, key=arm.keys.train).write_text(
        json.dumps({"state": "FAILED", "reason": "OOM"})
    )
    assert main(["next", str(swept), "--adopt", "n=4"]) == 1
    assert (
        capsys.readouterr().out.strip()
        == "error --adopt 'n=4': run 'n=4' FAILED: OOM; only a finished arm can be adopted"
    )
    assert not (tmp_path / "exp_next.yaml").exists()


def test_the_follow_ups_report_shows_the_lineage(swept, tmp_path, capsys):
    assert main(["next", str(swept), "--adopt", "learning_rate=2e-4"]) == 0
    assert main(["report", "exp_next.yaml"]) == 0
    summary = json.loads((tmp_path / "results" / "exp_next" / "summary.json").read_text())
    assert [(link["experiment"], link["eval_score"], link["status"]) for link in summary["lineage"]] == [
        ("exp", 0.0, "evaluated"),
        ("exp_next", 1.0, "evaluated"),
    ]
    assert summary["lineage"][1]["changes"] == [{"knob": "train.learning_rate", "from": 0.0001, "to": 0.0002}]
    page = (tmp_path / "results" / "exp_next" / "report.html").read_text()
    assert "Lineage: the baselines this experiment follows up" in page
    assert "train.learning_rate: 1e-4 -&gt; 2e-4" in page
    # an experiment without a parent has no lineage section
    assert main(["report", "exp.yaml"]) == 0
    assert "Lineage:" not in (tmp_path / "results" / "exp" / "report.html").read_text()


def test_a_cycle_of_parents_ends_the_chain_and_a_missing_parent_is_an_error(write_spec, tmp_path, capsys):
    write_spec(SPEC.replace("baseline:", "parent: b.yaml\nbaseline:", 1), "a.yaml")
    write_spec(SPEC.replace("baseline:", "parent: a.yaml\nbaseline:", 1), "b.yaml")
    from knobsweep.report.lineage import lineage

    chain = lineage(load_experiment("a.yaml"), tmp_path)
    assert [(link["experiment"], link["file"], link["problem"], link["status"]) for link in chain] == [
        ("", "a.yaml", "a cycle: named again here", ""),
        ("b", "b.yaml", "", "not run"),
        ("a", "a.yaml", "", "not run"),
    ]
    write_spec(SPEC.replace("baseline:", "parent: gone.yaml\nbaseline:", 1), "c.yaml")
    assert main(["validate", "c.yaml"]) == 1
    assert capsys.readouterr().out.strip().startswith("error c.yaml: parent: 'gone.yaml': no such file")


def test_the_table_says_why_a_change_has_no_value():
    growing = {"kl": [2.0] * 10}
    flat = {"reward": [0.0] * 10, "frac_reward_zero_std": [0.9] * 10}
    found = diagnose(run(growing, config_with(train__loss="dapo")))
    found += diagnose(run(flat, config_with(rollout__temperature=1.0, rollout__n=16)))
    assert [row[3:5] for row in table_rows(found)] == [
        (
            "train.kl_beta raise",
            "none the spec allows (train.kl_beta: 0.01: kl_beta must be 0/unset when loss is dapo; "
            "a KL term is only part of loss grpo)",
        ),
        (
            "rollout.temperature raise to 0.8-1.0",
            "none: the current value is already at the guide's values or the schema's bound",
        ),
        ("rollout.n raise to 8-16", "none: the current value is already at the guide's values or the schema's bound"),
    ]
    assert table_rows(found)[0][:3] == ("baseline", "KL growing without bound", "kl, steps 5-6 -> 9-10: 2 -> 2")


def test_arm_names_holding_commas_are_matched_whole():
    from knobsweep.loop.follow_up import split_arms

    names = ["lr=2e-4", "lr=2e-4,n=4", "n=4"]
    assert split_arms("lr=2e-4,n=4", names) == ["lr=2e-4,n=4"]
    assert split_arms("n=4,lr=2e-4", names) == ["n=4", "lr=2e-4"]
    assert split_arms("x,n=4", names) == ["x", "n=4"]


def test_next_elsewhere_keeps_the_defaults_files_and_a_name_of_its_own(write_spec, tmp_path, capsys):
    write_spec(
        "baseline:\n  model: {name: tiny}\n  data: {source: gsm8k, path: data/gsm8k, train_size: 8, eval_size: 4}\n",
        "base.yaml",
    )
    path = write_spec("name: first\ndefaults: base\nsweep:\n  rollout.n: [4]\n", "first.yaml")
    for run in load_experiment(path).runs:
        write_results(tmp_path, run, HEALTHY["reward"], 0.5)
    assert main(["next", "first.yaml", "--out", "later/first.yaml"]) == 1
    assert capsys.readouterr().out.strip() == (
        "error --out later/first.yaml: the follow-up would be experiment 'first' too (its name is the file's stem) "
        "and share results/first/ with first.yaml; choose another file name"
    )
    assert main(["next", "first.yaml", "--out", "later/second.yaml"]) == 0
    text = (tmp_path / "later" / "second.yaml").read_text()
    spec = yaml.safe_load(text)
    assert (spec["name"], spec["parent"], spec["defaults"]) == ("second", "../first.yaml", ["../base"])
    assert "sweep" not in spec and "hypotheses" not in spec
    assert "# Adopted into the baseline: nothing (no arm is better than the baseline beyond noise).\n" in text
    assert "# Sweep: none (no symptom found; the baseline looks healthy).\n" in text
    assert load_experiment("later/second.yaml").baseline.keys == load_experiment(path).baseline.keys


def test_suggest_names_the_arms_it_could_not_read(swept, tmp_path, capsys):
    arm = next(run for run in load_experiment(swept).runs if run.name == "n=4")
    layout.path(layout.TRAIN_STATUS, tmp_path, key=arm.keys.train).unlink()
    assert main(["suggest", str(swept)]) == 0
    assert capsys.readouterr().out.startswith("note: run 'n=4' has not run: not read\n")


def test_next_leaves_the_loaded_experiment_as_it_was(swept, tmp_path):
    from knobsweep.loop.follow_up import write_follow_up

    experiment = load_experiment(swept)
    before = json.dumps([run.config for run in experiment.runs], sort_keys=True)
    result = write_follow_up(experiment, tmp_path, adopt="learning_rate=2e-4")
    assert [arm.name for arm, _ in result.adopted] == ["learning_rate=2e-4"]
    assert json.dumps([run.config for run in experiment.runs], sort_keys=True) == before


def test_next_into_a_folder_writes_a_shared_file_and_refuses_an_arm_with_nothing_to_run(swept, tmp_path, capsys):
    folder = tmp_path / "later"
    folder.mkdir()
    for force in ([], ["--force"]):  # a folder is where the file goes (as `cp FILE DIR`), --force or not
        assert main(["next", str(swept), "--out", "later", *force, "--adopt", "none"]) == 0
    assert "wrote later/exp_next.yaml" in capsys.readouterr().out
    assert (folder / "exp_next.yaml").stat().st_mode & 0o777 == 0o666 & ~current_umask()  # not mkstemp's 600
    # the baseline's own value (after defaults: 1e-4 is the default learning rate) is no arm
    assert main(["next", str(swept), "--force", "--adopt", "none", "--sweep", "train.learning_rate=1e-4,2e-4"]) == 1
    out = capsys.readouterr().out
    assert f"error the follow-up {tmp_path / 'exp_next.yaml'} was not written: its sweep has nothing new to run" in out
    assert "sweep.train.learning_rate[0]: arm learning_rate=1e-4 equals the baseline after defaults" in out
    assert not (tmp_path / "exp_next.yaml").exists()


def current_umask() -> int:
    import os

    mask = os.umask(0)
    os.umask(mask)
    return mask

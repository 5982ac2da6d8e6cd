"""The report's depth: parsers side by side, CIs and seed noise, health warnings, rollouts,
parameter diffs, curve exports and display downsampling."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest
from test_report import (
    ESCAPED_XSS,
    IMG_XSS,
    XSS,
    cells,
    config_with,
    figure_data,
    make_run,
    rich_sweep,
    summary_rows,
    write_eval,
    write_full_eval,
    write_train,
)

from knobsweep.report.build import build_report, collect_experiment
from knobsweep.report.html import MAX_POINTS, downsample
from knobsweep.spec import Experiment


def test_parsers_cis_health_rollouts_diffs(tmp_path: Path) -> None:
    experiment = rich_sweep(tmp_path)
    paths = build_report(experiment, tmp_path)
    page = paths["html"].read_text(encoding="utf-8")
    rows, _ = summary_rows(tmp_path, "rich")
    by_name = {row["run"]: row for row in rows}
    base, lr = by_name["baseline"], by_name["lr=3e-4"]

    # Three parsers, each with a score, a CI and a parse-failure rate.
    assert base["eval_strict"] == pytest.approx(0.40) and base["eval_flexible"] == pytest.approx(0.60)
    assert base["eval_math_verify"] == pytest.approx(0.60)
    assert base["eval_strict_ci_low"] < 0.40 < base["eval_strict_ci_high"]
    assert base["eval_strict_parse_fail_rate"] == pytest.approx(0.60)
    assert base["eval_score_ci_low"] < base["eval_score"] < base["eval_score_ci_high"]
    for parser in ("strict", "flexible", "math_verify"):
        assert f'data-column="eval_{parser}"' in page and f"{parser} parse failures" in page
    parsers = figure_data(page, "fig-parsers")
    assert [t["x"] for t in parsers["data"]][0] == ["strict", "flexible", "math_verify"]
    assert len(parsers["data"]) == 3  # one trace per evaluated run
    # The XSS run was scored with a different eval parser than the training reward's.
    assert "parses answers with the &#39;strict&#39; parser but the eval accuracy uses &#39;flexible&#39;" in page

    # A 0.05 difference on 40 prompts is noise; the flag says so.
    assert lr["delta_eval_score"] == pytest.approx(0.05) and lr["delta_eval_noise"] is True
    assert "noise" in cells(page, "delta_eval_score")[1] and "within noise" in page
    evaluation = figure_data(page, "fig-eval")
    assert all("error_y" in trace for trace in evaluation["data"])

    # FAILED and CANCELLED runs are listed with their reasons.
    assert by_name["crashed"]["status"] == "FAILED" and by_name["cancelled"]["status"] == "CANCELLED"
    assert "cancelled by the user" in page and "status-cancelled" in page

    # Health warnings from status.json, counted per run and listed (escaped).
    assert lr["health_warnings"] == 2 and base["health_warnings"] == 0
    assert "kl_spike" in page and f"all groups equal {ESCAPED_XSS}" in page

    # Rollouts: best, worst, early, mid, late per run, escaped.
    collected = collect_experiment(experiment, tmp_path)
    picks = [r["pick"] for r in collected.rollouts if r["run"] == "baseline"]
    assert picks == ["best", "worst", "early", "mid", "late"]
    baseline_rollouts = {r["pick"]: r for r in collected.rollouts if r["run"] == "baseline"}
    assert baseline_rollouts["early"]["step"] == 1 and baseline_rollouts["late"]["step"] == 30
    assert baseline_rollouts["mid"]["step"] == 15
    assert baseline_rollouts["best"]["score"] == pytest.approx(0.9)
    assert XSS not in page and IMG_XSS not in page

    # Parameter diff against the baseline: the swept knob highlighted.
    assert collected.diffs["lr=3e-4"] == {"train.learning_rate": (1e-4, 3e-4)}
    assert re.search(r'<td class="swept">3e-4</td>', page)

    # Curves: every logged metric drawn, one trace per run; all of them in curves.csv.
    for figure_id in ("fig-reward", "fig-loss", "fig-kl", "fig-grad-norm"):
        assert len(figure_data(page, figure_id)["data"]) == 5  # 3 trained + the failed and the cancelled run
    with paths["curves"].open(newline="") as handle:
        curves = list(csv.DictReader(handle))
    assert len(curves) == 30 * 3 + 2 + 1
    assert {"run", "seed", "step", "reward", "loss", "kl", "grad_norm"} <= set(curves[0])

    # Header: package versions; sortable tables.
    assert "transformers" in page and 'class="sortable"' in page and "data-sort=" in page
    summary = json.loads(paths["json"].read_text())
    assert "transformers" in summary["versions"] and summary["health"][0]["kind"] == "kl_spike"


def test_seed_spread_and_noise(tmp_path: Path) -> None:
    runs = []
    scores = {"baseline": [0.40, 0.42, 0.41], "lr=3e-4": [0.60, 0.61, 0.59], "temp=1": [0.30, 0.55, 0.45]}
    for arm, values in scores.items():
        changed = (
            {}
            if arm == "baseline"
            else ({"train.learning_rate": 3e-4} if arm.startswith("lr") else {"rollout.temperature": 1.0})
        )
        for seed, score in enumerate(values):
            run = make_run(f"{arm},seed={seed}", changed, f"{arm}-{seed}")
            run = type(run)(run.name, run.changed, seed, run.config, run.keys)
            runs.append(run)
            write_train(tmp_path, run, [0.1, 0.2])
            write_eval(tmp_path, run.keys.eval, score)
    experiment = Experiment(name="seeds", path=tmp_path / "s.yaml", runs=tuple(runs))
    page = build_report(experiment, tmp_path)["html"].read_text(encoding="utf-8")
    rows, _ = summary_rows(tmp_path, "seeds")
    by_name = {row["run"]: row for row in rows}
    assert by_name["baseline,seed=1"]["arm_eval_mean"] == pytest.approx(0.41)
    assert by_name["baseline,seed=1"]["arm_eval_std"] == pytest.approx(0.01)
    assert by_name["baseline,seed=0"]["arm_seeds"] == 3
    assert by_name["lr=3e-4,seed=0"]["delta_eval_noise"] is False  # +0.19, tight seeds
    assert by_name["temp=1,seed=0"]["delta_eval_noise"] is True  # -0.02 on average, wide spread
    assert "mean ± std over seeds" in page and "± 0.0100 (n=3)" in page


def test_long_curves_are_downsampled_for_display(tmp_path: Path) -> None:
    run = make_run("baseline", {}, "a")
    write_train(tmp_path, run, [s / 3000 for s in range(1, 3001)])
    experiment = Experiment(name="long", path=tmp_path / "l.yaml", runs=(run,))
    paths = build_report(experiment, tmp_path)
    trace = figure_data(paths["html"].read_text(encoding="utf-8"), "fig-reward")["data"][0]
    assert len(trace["x"]) == MAX_POINTS and trace["x"][0] == pytest.approx(6.5)
    assert len(paths["curves"].read_text().splitlines()) == 3001  # full resolution in the export
    x, y = downsample([1, 2, 3, 4], [1.0, 2.0, 3.0, 4.0], limit=2)
    assert x == [1.5, 3.5] and y == [1.5, 3.5]


def test_old_summaries_without_parsers_still_render(tmp_path: Path) -> None:
    run = make_run("baseline", {}, "a")
    write_train(tmp_path, run, [0.1, 0.2])
    write_eval(tmp_path, "eval-a", 0.4)  # the older summary format: no parsers, no CI
    write_full_eval(tmp_path, "base0", 0.1, 0.2)
    experiment = Experiment(name="old", path=tmp_path / "o.yaml", runs=(run,))
    page = build_report(experiment, tmp_path)["html"].read_text(encoding="utf-8")
    rows, _ = summary_rows(tmp_path, "old")
    assert rows[0]["eval_strict"] is None and rows[0]["eval_score_ci_low"] is None
    assert rows[1]["eval_strict"] == pytest.approx(0.1)
    assert "fig-eval" in page and config_with  # renders without error


def test_a_metric_not_computed_on_a_step_is_a_gap_not_a_zero(tmp_path: Path) -> None:
    """Steps 2-4 had every group filtered: training logged no entropy, loss or grad norm there."""
    run = make_run("baseline", {}, "a")
    metrics = tmp_path / "results" / "train" / run.keys.train / "metrics.jsonl"
    metrics.parent.mkdir(parents=True)
    lines = []
    for step in range(1, 7):
        line = {"step": step, "elapsed_s": float(step), "reward": 0.1 * step, "frac_reward_zero_std": 0.5}
        if step in (2, 3, 4):
            line["frac_reward_zero_std"] = 1.0
        else:
            line.update(entropy=6.0 + step / 10, loss=0.1, grad_norm=1.0)
        lines.append(line)
    metrics.write_text("".join(json.dumps(line) + "\n" for line in lines))
    experiment = Experiment(name="gaps", path=tmp_path / "g.yaml", runs=(run,))
    paths = build_report(experiment, tmp_path)
    page = paths["html"].read_text(encoding="utf-8")
    entropy = figure_data(page, "fig-entropy")["data"][0]
    assert entropy["x"] == [1, 2, 3, 4, 5, 6]
    assert entropy["y"] == [6.1, None, None, None, 6.5, 6.6]  # a gap, not a sawtooth down to 0
    assert "markers" in entropy["mode"]
    assert figure_data(page, "fig-reward")["data"][0]["y"] == pytest.approx([0.1 * s for s in range(1, 7)])
    with paths["curves"].open(newline="") as handle:
        assert [row["entropy"] for row in csv.DictReader(handle)] == ["6.1", "", "", "", "6.5", "6.6"]
    # Downsampled: a bucket with no value stays a gap; others average only what was computed.
    assert downsample([1, 2, 3, 4, 5, 6], [1.0, float("nan"), float("nan"), float("nan"), 5.0, 7.0], limit=3) == (
        [1.5, 3.5, 5.5],
        [1.0, None, 6.0],
    )


def test_verdicts_in_the_page_and_the_exports(tmp_path: Path) -> None:
    experiment = rich_sweep(tmp_path)
    paths = build_report(experiment, tmp_path)
    page = paths["html"].read_text(encoding="utf-8")
    verdicts = {row["arm"]: row for row in json.loads(paths["json"].read_text())["verdicts"]}
    assert list(verdicts) == ["baseline", "lr=3e-4", XSS + IMG_XSS, "crashed", "cancelled"]
    base, lr, xss, crashed, cancelled = verdicts.values()
    # One seed per side: beyond eval noise is seed-limited (its interval eval-only), never better.
    assert base["versus"] == "base model" and base["verdict"] == "seed-limited" and base["ci_low"] > 0
    assert lr["knob"] == "train.learning_rate" and lr["value"] == "3e-4" and lr["verdict"] == "within noise"
    assert lr["ci_low"] < 0 < lr["ci_high"] and lr["delta"] == pytest.approx(0.05) and lr["prompts"] == 40
    assert lr["delta_final_reward"] == pytest.approx(0.1) and lr["health_warnings"] == 2
    assert lr["health_kinds"] == "kl_spike, zero_variance"
    assert xss["verdict"] == "seed-limited" and "run 2 seeds of each arm, or 3 of the baseline" in xss["reason"]
    assert json.loads(paths["json"].read_text())["decision"] == {
        "noise": None,
        "correction": "none: with one seed per side no better/worse verdict is given",
        "arms": 4,
    }
    assert crashed["verdict"] == cancelled["verdict"] == "not comparable"
    assert crashed["reason"].startswith("failed run: crashed FAILED (CUDA out of memory")
    assert cancelled["reason"] == "failed run: cancelled CANCELLED (cancelled by the user)"
    assert all(row["cpu_hours"] > 0 for row in verdicts.values())
    # The verdict table comes before everything else; the forest plot has the comparable arms only.
    assert page.index('<table class="verdict">') < page.index('id="warnings"') < page.index('<table class="runs">')
    forest = figure_data(page, "fig-forest")
    assert [(trace["name"], trace["y"]) for trace in forest["data"]] == [
        ("order", [["learning_rate", "temperature"], ["3e-4", "1"]]),  # the arms' order, top to bottom
        ("within noise", [["learning_rate"], ["3e-4"]]),
        ("seed-limited", [["temperature"], ["1"]]),
    ]
    assert forest["layout"]["shapes"][0]["x0"] == 0  # the zero line
    assert "Dunnett" in page and "McNemar" in page  # the footnote says how the CIs are made
    assert "One seed per side: how much two trainings of one config differ is not measured here" in page


def test_unreadable_results_make_an_arm_not_comparable_and_say_so_once(tmp_path: Path) -> None:
    experiment = rich_sweep(tmp_path)
    (tmp_path / "results" / "eval" / "eval-b" / "samples.jsonl").write_text('{"row_id": "test-0"}\nnot json\n')
    (tmp_path / "results" / "train" / "train-x" / "status.json").write_text("{torn")
    paths = build_report(experiment, tmp_path)
    summary = json.loads(paths["json"].read_text())
    verdicts = {row["arm"]: row for row in summary["verdicts"]}
    assert verdicts["lr=3e-4"]["verdict"] == "not comparable"
    assert verdicts["lr=3e-4"]["reason"].startswith("lr=3e-4: unreadable eval samples (")
    assert "samples.jsonl:2: not a JSON line" in verdicts["lr=3e-4"]["reason"]
    torn = [w for w in summary["warnings"] if "train-x/status.json: unreadable" in w]
    assert len(torn) == 1, summary["warnings"]

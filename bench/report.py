"""Measure the report at scale (a benchmark, not a test: it prints figures, asserts nothing).

    python bench/report.py [--runs 100] [--steps 2000] [--keep DIR] [--no-browser]

Writes synthetic result files (metrics.jsonl with the usual TRL metrics, status.json,
rollouts.jsonl, eval summaries with parsers and CIs) for RUNS runs x STEPS steps, then prints:
  - build time of report.html + exports (target: <= 10 s)
  - report.html size (target: <= 5 MB) and curves.csv size
  - time until the page has drawn every chart in headless Chromium (target: <= 2 s)
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from knobsweep import layout  # noqa: E402
from knobsweep.io import atomic_write_json  # noqa: E402
from knobsweep.report.build import build_report  # noqa: E402
from knobsweep.spec import Experiment, Run, StageKeys  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]


def write_results(root: Path, runs: int, steps: int) -> Experiment:
    rng = random.Random(0)
    base = {
        "model": {"name": "tiny"},
        "train": {"learning_rate": 1e-4},
        "reward": {"name": "gsm8k"},
        "eval": {"parser": "strict"},
        "seed": 0,
    }
    experiment_runs = []
    for index in range(runs):
        changed = {} if index == 0 else {"train.learning_rate": 1e-4 * (1 + index)}
        config = json.loads(json.dumps(base))
        if changed:
            config["train"]["learning_rate"] = changed["train.learning_rate"]
        keys = StageKeys("d", "m", f"t{index:04d}", f"e{index:04d}", "base")
        run = Run(
            name="baseline" if index == 0 else f"learning_rate={changed['train.learning_rate']:.1e}",
            changed=changed,
            seed=0,
            config=config,
            keys=keys,
        )
        experiment_runs.append(run)
        directory = layout.path(layout.TRAIN_DIR, root, key=keys.train)
        directory.mkdir(parents=True)
        rate = rng.uniform(0.5, 2.0)
        with open(directory / "metrics.jsonl", "w") as handle:
            for step in range(1, steps + 1):
                reward = 1 - math.exp(-rate * step / steps * 3) + rng.gauss(0, 0.05)
                handle.write(
                    json.dumps(
                        {
                            "step": step,
                            "elapsed_s": step * 1.5,
                            "reward": reward,
                            "loss": rng.gauss(0, 0.1),
                            "kl": step / steps * 0.1 * rate,
                            "entropy": 2 - reward,
                            "grad_norm": abs(rng.gauss(1, 0.3)),
                            "completions/mean_length": 200 + rng.gauss(0, 20),
                            "invalid_rate": 0.0,
                            "frac_reward_zero_std": rng.random() * 0.3,
                            "learning_rate": 1e-4,
                        }
                    )
                    + "\n"
                )
        with open(directory / "rollouts.jsonl", "w") as handle:
            for step in range(1, steps + 1, max(1, steps // 50)):
                for j in range(4):
                    handle.write(
                        json.dumps(
                            {
                                "step": step,
                                "row_id": f"train-{j}",
                                "prompt": [{"role": "user", "content": "How many apples? " * 5}],
                                "completion": "#### 4 " * 20,
                                "score": rng.random(),
                                "reason": "",
                                "valid": True,
                                "metrics": {},
                            }
                        )
                        + "\n"
                    )
        atomic_write_json(
            directory / "status.json",
            {"state": "COMPLETED", "reason": "", "step": steps, "runtime_s": steps * 1.5, "warnings": []},
        )
        write_eval(root, keys.eval, rng)
    write_eval(root, "base", rng)
    return Experiment(name="bench", path=root / "bench.yaml", runs=tuple(experiment_runs))


def write_eval(root: Path, key: str, rng: random.Random) -> None:
    def entry(score: float) -> dict:
        return {
            "score": score,
            "ci95": [score - 0.03, score + 0.03],
            "parse_failures": 10,
            "parse_failure_rate": 0.05,
            "n": 200,
        }

    score = rng.uniform(0.2, 0.6)
    summary = {
        "score": score,
        "score_ci95": [score - 0.03, score + 0.03],
        "parts": {"correct": score, "format": 1},
        "n": 200,
        "n_valid": 200,
        "n_correct": int(200 * score),
        "parse_failures": 10,
        "parsers": {"strict": entry(score), "flexible": entry(score + 0.1), "math_verify": entry(score + 0.1)},
        "eval_parser": "strict",
        "reward_parser": "strict",
    }
    atomic_write_json(layout.path(layout.EVAL_SUMMARY, root, key=key), summary)
    samples = "".join(
        json.dumps(
            {
                "row_id": f"test-{i}",
                "prompt": [{"role": "user", "content": "q"}],
                "completion": "#### 1",
                "ground_truth": "1",
                "score": 1.0,
                "reason": "",
                "valid": True,
                "parts": {},
            }
        )
        + "\n"
        for i in range(3)
    )
    layout.path(layout.EVAL_SAMPLES, root, key=key).write_text(samples)


def open_in_chromium(path: Path) -> float | None:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        print("chromium: the playwright package is not installed (pip install -e '.[dev]')")
        return None
    if not Path(CHROMIUM).exists():
        print(f"chromium: not found at {CHROMIUM}")
        return None
    with tempfile.TemporaryDirectory() as profile, sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        times, complete, in_page = [], [], []
        for _ in range(3):
            page = context.new_page()
            started = time.perf_counter()
            page.goto(path.as_uri(), wait_until="load")
            page.wait_for_selector("body[data-ready]", timeout=60_000)
            times.append(time.perf_counter() - started)
            page.wait_for_selector("body[data-complete]", timeout=120_000)
            complete.append(time.perf_counter() - started)
            marks = dict(page.evaluate("performance.getEntriesByType('mark').map(m => [m.name, m.startTime / 1000])"))
            in_page.append(
                (marks.get("knobsweep:plotly"), marks.get("knobsweep:first-charts"), marks.get("knobsweep:all-charts"))
            )
            charts = page.evaluate("document.querySelectorAll('.js-plotly-plot').length")
            page.close()
        context.close()
    print("chromium, in-page clock from navigation start (3 loads):")
    for plotly_s, first_s, all_s in in_page:
        print(
            f"  plotly.js ready {plotly_s:.2f} s, page usable (charts in view drawn) {first_s:.2f} s "
            f"(target <= 2 s), all {charts} charts drawn {all_s:.2f} s"
        )
    print(
        f"chromium, as Playwright sees it: data-ready {', '.join(f'{t:.2f}' for t in times)} s; "
        f"data-complete {', '.join(f'{t:.2f}' for t in complete)} s"
    )
    return min(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--keep", type=Path, help="write into this directory and keep it")
    parser.add_argument("--no-browser", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        experiment = write_results(root, args.runs, args.steps)
        print(f"wrote {args.runs} runs x {args.steps} steps of results in {time.perf_counter() - started:.1f} s")
        started = time.perf_counter()
        paths = build_report(experiment, root)
        build_s = time.perf_counter() - started
        size = paths["html"].stat().st_size
        print(f"build: {build_s:.2f} s (target <= 10 s)")
        print(
            f"report.html: {size / 1e6:.2f} MB (target <= 5 MB); curves.csv: "
            f"{paths['curves'].stat().st_size / 1e6:.1f} MB; summary.json: {paths['json'].stat().st_size / 1e3:.0f} kB"
        )
        if not args.no_browser:
            open_in_chromium(paths["html"])
        if args.keep:
            print(f"kept: {paths['html']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

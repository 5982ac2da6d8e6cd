"""Measure the demo's figures on a fresh clone (a benchmark, not a test).

    python bench/demo.py [--keep DIR]

Clones this repository's HEAD into a temporary directory, runs `make demo` there and prints:
  - `make demo` wall time, install included (target: <= 10 min on 2 cores)
  - the baseline's mean reward over its first and last 20% of steps (it must rise)
  - the report's verdict table: per arm, Δ eval score with its 95% CI (simultaneous over the arms) and the verdict;
    the demo's evaluation must move: the baseline better than the base model beyond noise, at
    least one arm separated from the baseline and at least one within noise, and the baseline's
    eval parse-failure rate (the headline score's parser) below 50%
  - whether the verdict table and the forest plot are on the first screen in headless Chromium
    (1400 x 1000 px, no sideways scroll), when Playwright and /usr/bin/chromium are here
  - whether `snakemake -n` afterwards has nothing to do
Exit status 0 when every target holds.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
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


def run(command: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep", type=Path, help="clone into this directory and keep it")
    args = parser.parse_args()
    workdir = args.keep or Path(tempfile.mkdtemp(prefix="knobsweep-demo-"))
    clone = workdir / "knobsweep"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True)

    started = time.perf_counter()
    demo = run(["make", "demo"], clone)
    elapsed = time.perf_counter() - started
    if demo.returncode != 0:
        print(demo.stdout[-4000:], demo.stderr[-4000:], sep="\n")
        print(f"make demo FAILED after {elapsed:.0f} s")
        return 1
    print(f"make demo (fresh clone, install included): {elapsed:.0f} s  (target <= 600 s)")
    print(demo.stdout.strip().splitlines()[-1])

    summary = json.loads((clone / "results" / "demo" / "summary.json").read_text())
    rows = {row["run"]: row for row in summary["rows"] if not row["reference"]}
    baselines = [row for row in rows.values() if not row["changed"]]  # its seeds
    first = sum(row["reward_first20"] for row in baselines) / len(baselines)
    last = sum(row["reward_last20"] for row in baselines) / len(baselines)
    ratio = last / first if first else float("inf")
    rose = last >= first + 0.1
    print(
        f"baseline reward (mean over {len(baselines)} seed(s)): first 20% of steps {first:.4f}, last 20% {last:.4f}, "
        f"ratio {ratio:.2f} (target: up by >= 0.1, {'ok' if rose else 'NOT MET'})"
    )
    for name, row in rows.items():
        failures = row.get("eval_parse_failures")
        print(
            f"  {name:26s} eval score {row.get('eval_score')}  parse failures {failures}/{row.get('eval_n')}"
            f"  final reward {row.get('final_reward')}"
        )
    moves = verdicts_move(summary)
    first_screen = first_screen_ok(clone / "results" / "demo" / "report.html")

    started = time.perf_counter()
    dry = run([str(clone / ".venv" / "bin" / "snakemake"), "-n", "--config", "experiments=demo"], clone)
    nothing = "Nothing to be done" in dry.stdout
    print(
        f"snakemake -n after the demo: {'nothing to do' if nothing else 'JOBS PLANNED'} "
        f"({time.perf_counter() - started:.1f} s)"
    )
    return 0 if nothing and rose and moves and first_screen is not False and elapsed <= 600 else 1


def verdicts_move(summary: dict) -> bool:
    """Print the verdict table; True when the demo's evaluation shows a decision worth making."""
    print("verdicts (Δ eval score vs the baseline, 95% CI over the arms; the baseline: vs the base model):")
    for row in summary["verdicts"]:
        ci = f"[{row['ci_low']:+.3f}, {row['ci_high']:+.3f}]" if row["ci_low"] is not None else ""
        delta = f"{row['delta']:+.3f}" if row["delta"] is not None else "-"
        reward = f"{row['delta_final_reward']:+.3f}" if row["delta_final_reward"] is not None else "-"
        print(
            f"  {row['arm']:24s} vs {row['versus']:10s} Δ {delta} {ci:18s} {row['verdict']:14s} "
            f"Δ reward {reward}  {row['method']}"
        )
        if row["reason"]:
            print(f"  {'':24s} {row['reason']}")
    baseline = next(row for row in summary["verdicts"] if row["baseline"])
    arms = [row["verdict"] for row in summary["verdicts"] if not row["baseline"]]
    base_rows = [row for row in summary["rows"] if not row["reference"] and not row["changed"]]
    failures = sum(row["eval_parse_failures"] or 0 for row in base_rows)
    samples = sum(row["eval_n"] or 0 for row in base_rows)
    rate = failures / samples if samples else 1.0
    checks = {
        "the baseline beats the base model beyond noise": baseline["verdict"] == "better",
        "an arm is separated from the baseline": any(v in ("better", "worse") for v in arms),
        "an arm is within noise": "within noise" in arms,
        f"the baseline's parse-failure rate {rate:.1%} < 50%": rate < 0.5,
    }
    for text, ok in checks.items():
        print(f"  {'ok' if ok else 'NOT MET'}: {text}")
    return all(checks.values())


def first_screen_ok(report: Path) -> bool | None:
    """The verdict table and forest plot within the first 1000 px at 1400 px, no sideways scroll;
    None when there is no browser to look with."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        print("first screen: not checked (no playwright: pip install -e '.[dev]')")
        return None
    if not Path(CHROMIUM).exists():
        print(f"first screen: not checked (no Chromium at {CHROMIUM})")
        return None
    with tempfile.TemporaryDirectory() as profile, sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            profile,
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 1000},
        )
        page = context.new_page()
        page.goto(report.as_uri(), wait_until="load")
        page.wait_for_selector("body[data-complete]", timeout=60_000)
        boxes = [page.locator(selector).first.bounding_box() for selector in ("table.verdict", "#fig-forest .main-svg")]
        wide = page.evaluate("document.documentElement.scrollWidth")
        context.close()
    ok = (
        all(box and box["y"] + box["height"] <= 1000 and box["x"] + box["width"] <= 1400 for box in boxes)
        and wide <= 1400
    )
    print(
        f"first screen at 1400 x 1000 px: verdict table bottom {boxes[0]['y'] + boxes[0]['height']:.0f} px, "
        f"forest plot bottom {boxes[1]['y'] + boxes[1]['height']:.0f} px, page width {wide} px: "
        f"{'ok' if ok else 'NOT MET'}"
    )
    return ok


if __name__ == "__main__":
    sys.exit(main())

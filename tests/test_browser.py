"""The report in a real headless Chromium: no console errors, no request leaves the file,
one trace per run in every chart, changed knobs highlighted, user text inert, a screenshot.

Needs Debian's chromium at /usr/bin/chromium (CI: `apt-get install chromium`) and the
Playwright Python package (the `dev` extra); Playwright's own browser download is never used.
Screenshots go to $KNOBSWEEP_ARTIFACTS (default: the test's temp dir).
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest
from test_report import IMG_XSS, XSS, rich_sweep

from knobsweep.report.build import build_report

CHROMIUM = os.environ.get("KNOBSWEEP_CHROMIUM", "/usr/bin/chromium")
# Without these a sandboxless container on a closed network makes Chromium hang or fail.
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

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not Path(CHROMIUM).exists(),
        reason=f"no Chromium at {CHROMIUM}: install Debian's (`apt-get install chromium`), or set KNOBSWEEP_CHROMIUM "
        "to another Chromium binary (e.g. Playwright's: `.venv/bin/playwright install chromium` where the network "
        "allows it, then KNOBSWEEP_CHROMIUM=$(ls ~/.cache/ms-playwright/chromium-*/chrome-linux/chrome))",
    ),
]
if Path(CHROMIUM).exists():
    # Not skipped when missing: with Chromium there, a missing `dev` extra is an error to see.
    from playwright import sync_api


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    profile = tmp_path_factory.mktemp("chromium-profile")  # a fresh --user-data-dir
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile), executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS, timeout=60_000
        )
        try:
            yield context
        finally:
            context.close()


def open_report(context, path: Path):
    """Open a report; return (page, requests, console errors, dialogs, seconds until drawn)."""
    page = context.new_page()
    requests: list[str] = []
    errors: list[str] = []
    dialogs: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    page.on("console", lambda message: errors.append(message.text) if message.type in ("error", "warning") else None)
    page.on("pageerror", lambda error: errors.append(f"page error: {error}"))

    def on_dialog(dialog) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", on_dialog)
    started = time.perf_counter()
    page.goto(path.as_uri(), wait_until="load")
    page.wait_for_selector("body[data-complete]", timeout=30_000)  # every chart drawn
    seconds = time.perf_counter() - started
    assert page.evaluate("[document.body.dataset.ready, document.body.dataset.complete]") == ["1", "1"]
    return page, requests, errors, dialogs, seconds


def artifacts_dir(tmp_path: Path) -> Path:
    directory = Path(os.environ.get("KNOBSWEEP_ARTIFACTS") or tmp_path)
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def test_report_in_chromium(browser, tmp_path: Path) -> None:
    experiment = rich_sweep(tmp_path)
    paths = build_report(experiment, tmp_path)
    page, requests, errors, dialogs, seconds = open_report(browser, paths["html"])
    print(f"\nreport drawn in Chromium in {seconds:.2f} s")
    run_names = [run.name for run in experiment.runs]

    assert errors == []
    assert requests and all(url.startswith(("file://", "data:")) for url in requests), requests
    assert dialogs == []

    # Every chart is drawn; curve charts and the eval chart have one trace per run that has data.
    charts = page.evaluate(
        """() => Array.from(document.querySelectorAll('.js-plotly-plot')).map(d => ({
               id: d.id, names: d.data.map(t => t.name)}))"""
    )
    by_id = {chart["id"]: chart["names"] for chart in charts}
    assert {"fig-forest", "fig-reward", "fig-loss", "fig-kl", "fig-grad-norm", "fig-eval", "fig-parsers"} <= set(by_id)
    import html

    for chart_id, names in by_id.items():
        names = [html.unescape(name) for name in names]
        assert len(names) == len(set(names)), chart_id
        if chart_id == "fig-forest":
            assert names == ["order", "within noise", "seed-limited"], names  # one per verdict: colour = verdict
        elif chart_id in ("fig-eval", "fig-parsers"):
            assert names == run_names[:3], chart_id  # the runs with an eval
        else:
            assert names == run_names, chart_id  # every run logged metrics
    drawn = page.evaluate("document.querySelectorAll('#fig-reward .scatterlayer .trace').length")
    assert drawn == len(run_names)

    # Changed-knob cells are highlighted; the rest are not.
    backgrounds = page.evaluate(
        """() => Array.from(document.querySelectorAll('table.runs tbody tr')).map(tr =>
               Array.from(tr.querySelectorAll(
                   'td[data-column="train.learning_rate"], td[data-column="rollout.temperature"]'))
                    .map(td => getComputedStyle(td).backgroundColor))"""
    )
    plain = backgrounds[0][0]
    assert backgrounds[1][0] != plain and backgrounds[1][1] == plain  # lr=3e-4 changed the LR
    assert backgrounds[2][1] != plain and backgrounds[2][0] == plain  # the XSS run changed temperature

    # User text shows as text: nothing injected, no dialog.
    body = page.inner_text("body")
    assert XSS + IMG_XSS in body and f"{IMG_XSS} {XSS}" in page.evaluate(
        "Array.from(document.querySelectorAll('pre.completion')).map(p => p.textContent).join('\\n')"
    )
    assert page.evaluate("document.querySelectorAll('img').length") == 0
    # Executable scripts: ours and the inflated plotly.js only; none carries the injected text.
    assert page.evaluate("document.querySelectorAll('script:not([type])').length") == 2
    assert (
        page.evaluate(
            "Array.from(document.querySelectorAll('script:not([type])'))"
            ".filter(s => s.textContent.includes('alert(1)')).length"
        )
        == 0
    )
    legend = page.evaluate("Array.from(document.querySelectorAll('#fig-reward .legendtext')).map(t => t.textContent)")
    assert XSS + IMG_XSS in legend

    # FAILED and CANCELLED runs are in the table with their states.
    states = page.evaluate(
        """() => Object.fromEntries(Array.from(document.querySelectorAll('table.runs tbody tr')).map(tr =>
               [tr.querySelector('td[data-column="run"]').textContent.trim(),
                tr.querySelector('td[data-column="status"]').textContent.trim()]))"""
    )
    assert states["crashed"].startswith("FAILED") and states["cancelled"].startswith("CANCELLED")

    # Sorting: a click on "Final train reward" orders the rows by it.
    page.click('table.runs th[data-column="final_reward"]')
    order = page.evaluate(
        """() => Array.from(document.querySelectorAll('table.runs tbody td[data-column="final_reward"]'))
                 .map(td => td.getAttribute('data-sort'))"""
    )
    filled = [v for v in order if v]
    assert order == filled + [""] * (len(order) - len(filled))  # blanks last
    assert [float(v) for v in filled] == sorted(float(v) for v in filled)

    # Smoothing changes the drawn curves, and back.
    before = page.evaluate("document.getElementById('fig-reward').data[0].y.slice(0, 5)")
    page.fill("#smoothing", "0.9")
    page.dispatch_event("#smoothing", "input")
    after = page.evaluate("document.getElementById('fig-reward').data[0].y.slice(0, 5)")
    assert after[0] == pytest.approx(before[0]) and after[4] < before[4]
    assert errors == [] and dialogs == []

    check_first_screen(
        page,
        {
            "baseline": "seed-limited",  # one seed per side: no better/worse without the run-to-run spread
            "learning_rate=3e-4": "within noise",
            "temperature=1": "seed-limited",
            "batch_size=32": "not comparable",
            "batch_size=4": "not comparable",
        },
    )
    forest = page.evaluate("document.getElementById('fig-forest').data.map(t => [t.name, t.y[1], t.x])")
    assert [(name, values) for name, values, _ in forest] == [
        ("order", ["3e-4", "1"]),
        ("within noise", ["3e-4"]),
        ("seed-limited", ["1"]),
    ]
    # The arms top to bottom in the table's order: learning_rate above temperature.
    ticks = page.evaluate("""Array.from(document.querySelectorAll('#fig-forest .ytick text, #fig-forest .ytick2 text'))
                             .map(t => [t.textContent, t.getBoundingClientRect().top])""")
    tops = {text: top for text, top in ticks}
    assert tops["learning_rate"] < tops["temperature"], ticks

    shot = artifacts_dir(tmp_path) / "report.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    page.close()


def check_first_screen(page, verdicts: dict[str, str]) -> None:
    """At 1400 x 1000 px, the verdict table (whole, not scrolled inside its box) and the forest plot
    lie in the first screen, nothing scrolls sideways, and each arm has the verdict expected."""
    page.set_viewport_size({"width": 1400, "height": 1000})
    page.evaluate("window.scrollTo(0, 0)")
    page.wait_for_timeout(300)  # plotly's responsive relayout
    for selector in ("table.verdict", "#fig-forest .main-svg"):
        box = page.locator(selector).first.bounding_box()
        assert box and box["y"] >= 0 and box["y"] + box["height"] <= 1000, (selector, box)
        assert box["x"] >= 0 and box["x"] + box["width"] <= 1400, (selector, box)
    assert page.evaluate("document.documentElement.scrollWidth") <= 1400
    assert page.evaluate(
        "(() => { const t = document.querySelector('table.verdict');"
        " return t.scrollWidth <= t.parentElement.clientWidth; })()"
    )
    shown = page.evaluate(
        """() => Object.fromEntries(Array.from(document.querySelectorAll('table.verdict tbody tr')).map(tr =>
               [tr.getAttribute('data-arm'),
                [tr.querySelector('td[data-column="verdict"]').childNodes[0].textContent.trim(),
                 tr.querySelector('td[data-column="delta"]').textContent.trim()]]))"""
    )
    assert {arm: verdict for arm, (verdict, _) in shown.items()} == verdicts
    for arm, (verdict, delta) in shown.items():
        if verdict != "not comparable":  # Δ with its 95% CI, then what the interval holds or can detect
            interval = r"[+-]\d\.\d{3} \[[+-]\d\.\d{3}, [+-]\d\.\d{3}\]"
            note = r"(eval sampling only|detects ±\d\.\d{3} \(80% power\))"
            assert re.fullmatch(interval + note, delta), (arm, delta)


def test_failed_and_cancelled_only(browser, tmp_path: Path) -> None:
    """A sweep where nothing finished still yields a report listing every run."""
    from test_report import config_with, make_run, write_train

    from knobsweep.spec import Experiment

    failed = make_run("baseline", {}, "f")
    cancelled = make_run("cancelled", {"train.batch_size": 4}, "c", config_with(train__batch_size=4))
    write_train(tmp_path, failed, [0.1], state="FAILED", reason="out of memory")
    write_train(tmp_path, cancelled, [0.1, 0.2], state="CANCELLED", reason="cancelled")
    experiment = Experiment(name="dead", path=tmp_path / "d.yaml", runs=(failed, cancelled))
    paths = build_report(experiment, tmp_path)
    page, requests, errors, dialogs, _ = open_report(browser, paths["html"])
    assert errors == [] and dialogs == []
    assert all(url.startswith(("file://", "data:")) for url in requests)
    text = page.inner_text("table.runs")
    assert "FAILED" in text and "CANCELLED" in text and "out of memory" in text
    page.close()

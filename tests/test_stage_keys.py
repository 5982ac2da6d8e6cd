"""Every stage key of every run of experiments/*.yaml and of bench/dag.py's 1,000-run sweep, against a
committed fixture: a refactor of the spec must not re-key a cached result by accident.

A change of meaning that must re-key some runs updates the fixture in the same commit, saying why:

    .venv/bin/python tests/test_stage_keys.py --write
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO / "tests" / "fixtures" / "stage_keys.json"
BENCH_RUNS = 1000
KEY_FIELDS = ("data", "model", "train", "eval", "base_eval", "warm_start")


def bench_spec(runs: int) -> str:
    """bench/dag.py's sweep of `runs` runs (the DAG benchmark's spec)."""
    module_spec = importlib.util.spec_from_file_location("bench_dag", REPO / "bench" / "dag.py")
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.spec(runs)


def run_keys(path: Path) -> dict[str, str]:
    """{run name: its stage keys, space-separated in KEY_FIELDS order ("-" for none)}."""
    from knobsweep.spec import load_experiment

    experiment = load_experiment(path)
    return {run.name: " ".join(getattr(run.keys, name) or "-" for name in KEY_FIELDS) for run in experiment.runs}


def all_keys(tmp: Path) -> dict[str, dict[str, str]]:
    """Keys of every experiment, computed in the repository root (the specs' data paths are relative)."""
    bench = tmp / "bench-1000.yaml"
    bench.write_text(bench_spec(BENCH_RUNS))
    cwd = os.getcwd()
    os.chdir(REPO)
    try:
        keys = {path.name: run_keys(path) for path in sorted((REPO / "experiments").glob("*.yaml"))}
        keys[f"bench/dag.py spec({BENCH_RUNS})"] = run_keys(bench)
    finally:
        os.chdir(cwd)
    return keys


def test_stage_keys_equal_the_committed_fixture(tmp_path):
    expected = json.loads(FIXTURE.read_text())
    found = all_keys(tmp_path)
    assert sorted(found) == sorted(expected)
    for experiment, runs in expected.items():
        changed = {
            name: (keys, found[experiment].get(name))
            for name, keys in runs.items()
            if found[experiment].get(name) != keys
        }
        added = sorted(set(found[experiment]) - set(runs))
        assert not changed and not added, (
            f"{experiment}: stage keys differ from {FIXTURE.name} (fields {' '.join(KEY_FIELDS)}; "
            f"expected, found): {dict(list(changed.items())[:5])}; runs not in the fixture: {added[:5]}"
        )


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit(__doc__)
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        keys = all_keys(Path(tmp))
    FIXTURE.parent.mkdir(parents=True, exist_ok=True)
    FIXTURE.write_text(json.dumps(keys, indent=1, sort_keys=True) + "\n")
    print(f"{FIXTURE}: {sum(len(runs) for runs in keys.values())} runs of {len(keys)} experiments")

"""Shared fixtures: paths to the repo, the real data in tests/fixtures (see its README), and spec writers."""

from __future__ import annotations

import os
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures"
VENV_BIN = Path(sys.executable).parent  # the tests' own environment: .venv/bin after `make test`
DECOY = """#!/bin/sh
echo "$0: a job ran this instead of the environment Snakemake runs in" >&2
exit 97
"""


def user_shell(activated: bool, decoys: Path) -> dict[str, str]:
    """The environment of a user's shell. Activated: the venv's bin first on PATH and VIRTUAL_ENV set
    (`snakemake ...` as typed). Not activated: no venv on PATH (`.venv/bin/snakemake ...`), and a
    `python` and an `accelerate` that fail first on PATH, as a system Python without knobsweep
    would: a job that does not use the Snakemake process's environment fails with their message."""
    rest = [entry for entry in os.environ.get("PATH", "").split(os.pathsep) if entry and Path(entry) != VENV_BIN]
    env = {name: value for name, value in os.environ.items() if name != "VIRTUAL_ENV"}
    if activated:
        return {**env, "PATH": os.pathsep.join([str(VENV_BIN), *rest]), "VIRTUAL_ENV": sys.prefix}
    decoys.mkdir(parents=True, exist_ok=True)
    for name in ("python", "python3", "accelerate"):
        (decoys / name).write_text(DECOY)
        (decoys / name).chmod(0o755)
    return {**env, "PATH": os.pathsep.join([str(decoys), *rest])}


def snakemake_command(activated: bool) -> list[str]:
    """`snakemake` as a user types it in that shell."""
    return ["snakemake"] if activated else [str(VENV_BIN / "snakemake")]


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """One intra-op thread for models run inside the test process: on a shared 2-core machine,
    two OpenMP threads competing with other jobs spin-wait and make the tiny model ~100x slower.
    (Subprocesses get OMP_NUM_THREADS from Snakemake's `threads:` or from the test.)"""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def write_spec(tmp_path, monkeypatch):
    """Write a YAML experiment into tmp_path (the working directory, holding the demo data)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").symlink_to(REPO / "data")

    def write(text: str, name: str = "exp.yaml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text))
        return path

    return write


def pytest_collection_modifyitems(config, items):
    """Real-Slurm tests last: once slurm-client is installed and the cluster stopped again, every
    `snakemake` call pays ~9 s in the executor plugin's `scontrol` probe (see notes/slurm.md)."""
    items.sort(key=lambda item: item.get_closest_marker("slurm") is not None)


def finish_stages(root: Path, run, stages=("data", "tiny", "train", "merge", "eval")) -> None:
    """Placeholders for the outputs of a run's stages (those not written already), so `knobsweep plan`
    and Snakemake take them for finished: a test's own status, metrics and eval files stay as written."""
    from knobsweep.planned import OUTPUTS, run_nodes

    for stage, (key, _) in run_nodes(run).items():
        if stage not in stages:
            continue
        for pattern in OUTPUTS[stage]:
            path = Path(root) / pattern.format(key=key)
            if path.exists():
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            if stage in ("tiny", "train", "merge"):  # folders
                path.mkdir()
            else:
                path.write_text("")

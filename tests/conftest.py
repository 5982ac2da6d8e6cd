"""Shared fixtures: paths to the repo, the real data in ../shared, and spec writers."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


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

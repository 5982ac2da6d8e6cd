"""The code base stays formatted and lint-clean: ruff (format + lint) on the Python code, snakefmt on the rules.

`make format` applies all three."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

FIX = "make format  (ruff format . && ruff check --fix . && snakefmt Snakefile rules)"


@pytest.mark.parametrize(
    "command",
    [
        ("ruff", "format", "--check", "."),
        ("ruff", "check", "."),
        ("snakefmt", "--check", "Snakefile", "rules"),
    ],
    ids=["ruff-format", "ruff-check", "snakefmt"],
)
def test_the_code_is_formatted_and_lint_clean(command):
    tool = Path(sys.executable).parent / command[0]
    if not tool.is_file():
        pytest.skip(f"{command[0]} is not installed: pip install -e '.[dev]'")
    result = subprocess.run([str(tool), *command[1:]], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, (
        f"{' '.join(command)} failed; run {FIX}\n{result.stdout[-3000:]}{result.stderr[-3000:]}"
    )

"""Jobs run in the environment Snakemake runs in (knobsweep.jobenv); tests/test_workflow.py and
tests/test_slurm.py run `.venv/bin/snakemake` for real from a shell without the venv."""

from __future__ import annotations

import os

from knobsweep.jobenv import use_this_environment


def test_jobs_get_this_interpreters_bin_directory_first_on_path(tmp_path):
    environ = {"PATH": os.pathsep.join(["/usr/bin", str(tmp_path / "venv" / "bin"), "/bin"])}
    use_this_environment(environ, str(tmp_path / "venv" / "bin" / "python"))
    assert environ["PATH"].split(os.pathsep) == [str(tmp_path / "venv" / "bin"), "/usr/bin", "/bin"]
    use_this_environment(environ, str(tmp_path / "venv" / "bin" / "python"))  # parsed again: PATH unchanged
    assert environ["PATH"].split(os.pathsep) == [str(tmp_path / "venv" / "bin"), "/usr/bin", "/bin"]

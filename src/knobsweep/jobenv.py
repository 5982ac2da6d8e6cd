"""Every job runs in the environment Snakemake runs in, activated or not.

A user may type `.venv/bin/snakemake ...` without activating the venv. The rules' shell lines call
`python -m knobsweep...` and `accelerate launch`, which PATH would then resolve to another Python
(the system's, without knobsweep). Putting this interpreter's bin directory first on PATH, as
activation does, gives every job the same environment: locally (jobs inherit Snakemake's
environment) and on Slurm (sbatch exports it, and the job's own Snakemake, started with this
interpreter, parses the Snakefile and does the same). A job that activates another environment
itself (`--software-deployment-method conda`) puts that one first, as it should.
"""

from __future__ import annotations

import os
import sys
from collections.abc import MutableMapping


def use_this_environment(environ: MutableMapping[str, str] = os.environ, executable: str = sys.executable) -> None:
    """Put `executable`'s directory first on PATH (and name the venv in VIRTUAL_ENV, as activation does)."""
    if not executable:
        return
    # not resolved: a venv's python is a symlink to the base interpreter, whose bin has no knobsweep
    bin_dir = os.path.dirname(os.path.abspath(executable))
    rest = [entry for entry in environ.get("PATH", "").split(os.pathsep) if entry and entry != bin_dir]
    environ["PATH"] = os.pathsep.join([bin_dir, *rest])
    if sys.prefix != sys.base_prefix and executable == sys.executable:
        environ["VIRTUAL_ENV"] = sys.prefix

"""Garbage-collector settings for the Snakemake process that reads the Snakefile.

For a sweep of thousands of runs Snakemake holds hundreds of thousands of objects (its DAG, our job
tables) until it exits. CPython's collector scans every tracked object on each full collection, and
once more while the interpreter shuts down: measured, about 0.9 s of a 5 s `snakemake -n` over
1,000 runs, spent looking for garbage among objects that live to the end anyway.
"""

from __future__ import annotations

import atexit
import gc


def spare_long_lived_objects() -> None:
    """Keep what exists now (modules, the job tables) out of every later collection, and everything
    out of the one at exit. Cyclic garbage made later is still collected while the process runs."""
    gc.collect()  # today's garbage is freed, not frozen
    gc.freeze()
    # At exit, frozen objects are left to the operating system; atexit hooks (logging's flush,
    # weakref.finalize) still run, since freezing stops only the collector's scan.
    atexit.register(gc.freeze)

"""The Snakemake process's collector settings: long-lived objects frozen, later garbage still freed."""

from __future__ import annotations

import subprocess
import sys
import textwrap

PROBE = textwrap.dedent("""
    import atexit, gc, weakref
    from knobsweep.gc_tuning import spare_long_lived_objects

    class Node:
        pass

    def cycle():
        a, b = Node(), Node()
        a.other, b.other = b, a
        return weakref.ref(a)

    gc.disable()  # no collection by chance before the call
    before = cycle()  # garbage from before: freed by the call, not frozen
    spare_long_lived_objects()
    assert before() is None
    assert gc.get_freeze_count() > 1000, gc.get_freeze_count()
    after = cycle()  # garbage made afterwards is still collected
    assert gc.collect() >= 2 and after() is None
    kept = [Node() for _ in range(100)]
    atexit._run_exitfuncs()  # at exit everything alive is frozen: the shutdown collection skips it
    assert not gc.get_objects(), len(gc.get_objects())
    print("ok")
""")


def test_long_lived_objects_are_frozen_and_new_garbage_is_collected():
    result = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"

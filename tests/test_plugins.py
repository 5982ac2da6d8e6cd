"""Sources and evaluators from other installed packages, through entry points, reach every process."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from conftest import REPO

PLUGIN = '''
"""A third-party source: echoes GSM8K rows, scored by a third-party evaluator."""
from knobsweep.data import gsm8k
from knobsweep.rewards import Evaluation
from knobsweep.spec.sources import Gsm8kOptions

CONVERTER_VERSION = "1"
FORMATS = ("rl",)


def as_gsm8k(options):
    return Gsm8kOptions(**{**options, "source": "gsm8k"})


def resolve_options(options):
    return as_gsm8k(options).model_dump() | {"source": "echo"}


def input_fingerprint(options):
    return gsm8k.input_fingerprint(as_gsm8k(options))


def convert(options):
    return gsm8k.convert(as_gsm8k(options))


class Length:
    name = "length"

    def __init__(self, target: int = 10):
        self.target = target

    def __call__(self, completion, row):
        return Evaluation(score=min(1.0, len(completion) / self.target))
'''


def test_an_installed_package_adds_a_source_and_an_evaluator(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "echo_plugin.py").write_text(textwrap.dedent(PLUGIN))
    info = site / "echo_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: echo-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[knobsweep.sources]\necho = echo_plugin\n\n[knobsweep.evaluators]\nlength = echo_plugin:Length\n"
    )
    spec = tmp_path / "plugged.yaml"
    spec.write_text(
        textwrap.dedent(f"""
        baseline:
          model: {{name: tiny}}
          data: {{source: echo, path: {REPO / "data/gsm8k"}, train_size: 8, eval_size: 4}}
          reward: {{name: length, target: 20}}
        """)
    )
    env = dict(os.environ, PYTHONPATH=f"{site}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    script = textwrap.dedent(f"""
        from knobsweep.data import convert_to_dir
        from knobsweep.rewards import get_evaluator
        from knobsweep.spec import load_experiment
        run = load_experiment({str(spec)!r}).baseline
        assert run.config["data"]["source"] == "echo", run.config["data"]
        assert run.config["reward"] == {{"name": "length", "target": 20}}, run.config["reward"]
        manifest = convert_to_dir(run.config["data"], {str(tmp_path / "out")!r})
        assert manifest["source"] == "echo" and manifest["rows"] == {{"train": 8, "eval": 4}}, manifest
        assert get_evaluator(run.config["reward"])("x" * 10, {{}}).score == 0.5
        print("ok")
        """)
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-3000:]

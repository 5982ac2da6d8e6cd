"""vLLM against transformers on this machine (a benchmark, not a test: it prints figures and ratios, one run).

    python bench/vllm_vs_hf.py [--rows 128] [--max-tokens 128] [--grpo-steps 12] [--grpo-max-tokens 32]
                               [--threads 1] [--skip-eval] [--skip-grpo]

Builds GSM8K data (the real data stage, from data/gsm8k) and the tiny model once, then:

1. Eval: the eval stage (`python -m knobsweep.evaluate`, as the workflow runs it) on the same prompts,
   greedy, with eval.backend hf and vllm: generated tokens/s of each and the ratio, vLLM's engine
   start-up (its log line), each stage's whole wall time, greedy agreement (same completion), and the
   break-even: how many generated tokens an eval needs before vLLM's faster generation pays for its
   larger fixed cost (stage wall minus generation) over hf's.
2. GRPO: the train stage (`accelerate launch -m knobsweep.train`) with rollout.vllm off and colocate,
   otherwise the same config: median step time (differences of metrics.jsonl's elapsed_s, the first two
   steps skipped), the ratio, and the time before the first step (VALIDATING: with vLLM, its start-up).

Every stage runs with OMP_NUM_THREADS=--threads (vLLM's CPU worker binds one core and keeps one for its
scheduler on a 2-core machine, so 1 is the like-for-like default). vLLM caches its compiled graphs under
~/.cache/vllm: the first run on a machine pays the compilation too (VLLM_CACHE_ROOT=<new folder> measures
a cold start). bench/gpu_check.py runs the same measurements at a real model's size on a GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
LORA = {
    "rank": 8,
    "alpha": 16,
    "dropout": 0.05,
    "target_modules": "all-linear",
    "exclude_modules": ["lm_head", "embed_tokens"],
}


def run(command: list[str], env: dict) -> tuple[float, str]:
    """(wall seconds, stderr) of a stage command; exits with its log if it fails."""
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, *command], capture_output=True, text=True, env=env, cwd=REPO)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"failed: {' '.join(command[:4])} ...\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return wall, proc.stderr


def compare_eval(model: Path, data: Path, root: Path, max_tokens: int, env: dict) -> None:
    """The eval stage on hf and on vllm (greedy); prints tokens/s, start-up, walls, agreement, break-even."""
    from knobsweep.io import read_jsonl

    results = {}
    for backend in ("hf", "vllm"):
        config = {
            "eval": {"backend": backend, "temperature": 0.0, "max_tokens": max_tokens, "batch_size": 32},
            "reward": {"name": "gsm8k"},
        }
        out = root / f"eval-{backend}"
        wall, log = run(
            [
                "-m",
                "knobsweep.evaluate",
                "--config-json",
                json.dumps(config),
                "--model",
                str(model),
                "--data",
                str(data),
                "--out",
                str(out),
            ],
            env,
        )
        started = re.search(r"engine started in ([0-9.]+) s", log)
        results[backend] = {
            "wall": wall,
            "summary": json.loads((out / "summary.json").read_text()),
            "startup": float(started[1]) if started else None,
            "completions": [r["completion"] for r in read_jsonl(out / "samples.jsonl")],
        }
    hf, vllm = results["hf"], results["vllm"]
    prompts = len(hf["completions"])
    print(
        f"\n== eval: {model.name}, {prompts} GSM8K prompts, greedy, max_tokens {max_tokens}, "
        f"OMP_NUM_THREADS={env.get('OMP_NUM_THREADS', 'unset')}"
    )
    for name, result in results.items():
        s = result["summary"]
        print(
            f"{name:5s} {s['completion_tokens']:7d} tokens in {s['generate_s']:7.2f} s = "
            f"{s['tokens_per_s']:8.0f} tokens/s; stage wall {result['wall']:6.1f} s"
            + (f"; engine start-up {result['startup']:.1f} s" if result["startup"] is not None else "")
        )
    ratio = vllm["summary"]["tokens_per_s"] / hf["summary"]["tokens_per_s"]
    print(f"generation tokens/s, vLLM / transformers: {ratio:.1f}x")
    same = sum(a == b for a, b in zip(hf["completions"], vllm["completions"]))
    print(f"greedy agreement: {same}/{prompts} prompts ({same / prompts:.1%})")
    fixed_hf = hf["wall"] - hf["summary"]["generate_s"]
    fixed_vllm = vllm["wall"] - vllm["summary"]["generate_s"]
    saving = 1 / hf["summary"]["tokens_per_s"] - 1 / vllm["summary"]["tokens_per_s"]
    print(
        f"fixed cost per eval job (stage wall - generation): hf {fixed_hf:.1f} s, vLLM {fixed_vllm:.1f} s"
        + (
            f"; vLLM is faster overall above ~{(fixed_vllm - fixed_hf) / saving:,.0f} generated tokens per eval "
            "(prompts x samples x completion length)"
            if saving > 0
            else ""
        )
    )


class LengthReward:
    """`reward: {name: vllm_vs_hf:LengthReward}` (bench/ on PYTHONPATH): scores a completion by its length
    mod 5, so every group has variance and no step is filtered away: each mode trains on every row."""

    name = "length"

    def __call__(self, completion: str, row: dict):
        from knobsweep.rewards import Evaluation

        return Evaluation(score=(len(completion) % 5) / 4, reason="length mod 5")


LENGTH_REWARD = {"name": "vllm_vs_hf:LengthReward"}


def train_config(vllm: str, batch_size: int, max_tokens: int, reward: dict) -> dict:
    """A GRPO TRAIN section (docs/contracts.md): LoRA r=8, loss dapo, `batch_size` prompts x n=4 per step."""
    return {
        "model": {"name": "tiny", "lora": LORA},
        "train": {
            "method": "grpo",
            "loss": "dapo",
            "learning_rate": 5e-4,
            "epochs": 1,
            "batch_size": batch_size,
            "kl_beta": None,
            "log_every": 1000,
            "trl": {},
        },
        "rollout": {
            "n": 4,
            "temperature": 1.0,
            "top_p": 1.0,
            "top_k": 0,
            "max_tokens": max_tokens,
            "extra_body": {},
            "vllm": vllm,
        },
        "reward": reward,
        "seed": 0,
    }


def compare_grpo(
    model: Path,
    data: Path,
    root: Path,
    modes: tuple[str, ...],
    batch_size: int,
    max_tokens: int,
    launcher: list[str],
    env: dict,
) -> None:
    """The train stage with each rollout.vllm mode; prints median step time, set-up time, the ratio."""
    from knobsweep.io import read_jsonl

    results = {}
    for vllm in modes:
        out = root / f"train-{vllm}"
        config = train_config(vllm, batch_size, max_tokens, LENGTH_REWARD)
        wall, _ = run(
            [
                *launcher,
                "-m",
                "knobsweep.train",
                "--config-json",
                json.dumps(config),
                "--model",
                str(model),
                "--data",
                str(data),
                "--out",
                str(out),
            ],
            {**env, "PYTHONPATH": str(Path(__file__).parent)},
        )  # the reward's module
        elapsed = [m["elapsed_s"] for m in read_jsonl(out / "metrics.jsonl")]
        steps = [b - a for a, b in zip(elapsed, elapsed[1:])][1:]  # steps 1 and 2 skipped (warm-up)
        at = {h["state"]: h["at"] for h in json.loads((out / "status.json").read_text())["history"]}
        setup = (datetime.fromisoformat(at["RUNNING"]) - datetime.fromisoformat(at["VALIDATING"])).total_seconds()
        results[vllm] = {"step": statistics.median(steps), "steps": len(elapsed), "setup": setup, "wall": wall}
    print(
        f"\n== GRPO: {model.name}, {batch_size} prompts x n=4 per step, max_tokens {max_tokens}, "
        f"OMP_NUM_THREADS={env.get('OMP_NUM_THREADS', 'unset')}"
    )
    for name, result in results.items():
        print(
            f"rollout.vllm {name:8s}: median step {result['step']:.3f} s over {result['steps']} steps; "
            f"before the first step {result['setup']:.0f} s; stage wall {result['wall']:.0f} s"
        )
    if {"off", "colocate"} <= set(results):
        print(
            f"GRPO step time, vLLM colocate / transformers generation: "
            f"{results['colocate']['step'] / results['off']['step']:.2f}x"
        )


CPU_LAUNCHER = [
    "-m",
    "accelerate.commands.launch",
    "--cpu",
    "--num_processes",
    "1",
    "--num_machines",
    "1",
    "--mixed_precision",
    "no",
    "--dynamo_backend",
    "no",
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=128, help="eval prompts")
    parser.add_argument("--max-tokens", type=int, default=128, help="eval max_tokens")
    parser.add_argument("--grpo-steps", type=int, default=12)
    parser.add_argument("--grpo-max-tokens", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of every stage")
    parser.add_argument("--skip-eval", action="store_true")
    parser.add_argument("--skip-grpo", action="store_true")
    args = parser.parse_args()

    from knobsweep.data import convert_to_dir
    from knobsweep.models.tiny import build_tiny_model, texts_from_parquet
    from knobsweep.vllm_env import installed_version

    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    print(f"{installed_version() or 'vLLM not installed'}; {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        convert_to_dir(
            {
                "source": "gsm8k",
                "path": str(REPO / "data" / "gsm8k"),
                "train_size": 2 * args.grpo_steps,
                "eval_size": args.rows,
            },
            root / "data",
        )
        model = build_tiny_model(texts_from_parquet(root / "data" / "train.parquet"), root / "tiny")
        if not args.skip_eval:
            compare_eval(model, root / "data", root, args.max_tokens, env)
        if not args.skip_grpo:
            compare_grpo(model, root / "data", root, ("off", "colocate"), 2, args.grpo_max_tokens, CPU_LAUNCHER, env)
    return 0


if __name__ == "__main__":
    sys.exit(main())

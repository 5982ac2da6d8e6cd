"""What knobsweep's training stage costs per step over plain TRL (a benchmark, not a test).

    python bench/overhead.py [--steps 30] [--repeats 3] [--threads 1] [--apart] [--keep DIR] [--profile]

Builds GSM8K data (the real data stage, from data/gsm8k) and the tiny model once, then runs the
same GRPO configuration (tiny model, LoRA r=8, batch_size 2 prompts x n=4, max_tokens 16,
`--steps` optimizer steps) `--repeats` times in three ways:

  (a)  knobsweep: `accelerate launch ... -m knobsweep.train --config-json ...`, exactly the
       pipeline's command; per-step wall time from the differences of metrics.jsonl's elapsed_s.
  (a') knobsweep with zero-variance group filtering off (this file's `knobsweep` subcommand: the
       same CLI with KnobsweepGRPOTrainer(filter_groups=False)): the same work per step as (b), so
       the difference is knobsweep's own overhead. Filtering drops rows from the loss, so (a) does
       *less* work than TRL whenever groups score alike (most groups of a random tiny model).
  (b)  plain TRL (the `plain` subcommand, same launcher): a GRPOTrainer with the GRPOConfig fields
       knobsweep derives (written out here, not imported), a plain reward function calling the
       GSM8K evaluator; no knobsweep callbacks.
  (a'') (a') with train.reward_timeout_s null: the evaluator called directly instead of on a new
       thread per sample (grpo.call_with_timeout), to isolate that thread's cost.

(a'), (a'') and (b) are timed by the same TrainerCallback at each step's log: wall seconds and CPU
seconds (every thread of the process; far less disturbed by other load on a shared machine).
All run with OMP_NUM_THREADS = --threads; the kinds of a repeat run at the same time (they share
whatever else the machine is doing; --apart runs them one after the other instead). Prints the
median per-step times (first 2 steps skipped) and the ratios to plain TRL (target <= 1.10).
`--profile` then cProfiles one (a') run and prints what each knobsweep part costs per step
(the reward wrapper and its timeout threads, the trainer overrides, the callbacks).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LAUNCH = [
    sys.executable,
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
BATCH_SIZE, N, MAX_TOKENS, LR, FORMAT_WEIGHT = 2, 4, 16, 5e-4, 0.5
LORA = {
    "rank": 8,
    "alpha": 16,
    "dropout": 0.05,
    "target_modules": "all-linear",
    "exclude_modules": ["lm_head", "embed_tokens"],
}
SKIP = 2  # warm-up steps left out of the median


def knobsweep_config(**train) -> dict:
    """The resolved TRAIN section (docs/contracts.md) of the benchmark run."""
    return {
        "model": {"name": "tiny", "lora": LORA},
        "train": {
            "method": "grpo",
            "loss": "grpo",
            "learning_rate": LR,
            "epochs": 1,
            "batch_size": BATCH_SIZE,
            "kl_beta": None,
            "log_every": 1,
            "trl": {},
            **train,
        },
        "rollout": {"n": N, "temperature": 1.0, "top_p": 1.0, "top_k": 0, "max_tokens": MAX_TOKENS, "extra_body": {}},
        "reward": {"name": "gsm8k", "format_weight": FORMAT_WEIGHT},
        "seed": 0,
    }


def plain_grpo_config_kwargs(out_dir: Path) -> dict:
    """The GRPOConfig fields knobsweep derives for knobsweep_config() (grpo loss, 1 process, CPU)."""
    return dict(
        output_dir=str(out_dir / "checkpoints"),
        loss_type="dapo",
        epsilon=0.2,
        epsilon_high=0.2,
        beta=0.001,
        importance_sampling_level="token",
        learning_rate=LR,
        num_train_epochs=1,
        per_device_train_batch_size=BATCH_SIZE * N,
        gradient_accumulation_steps=1,
        num_generations=N,
        temperature=1.0,
        top_p=1.0,
        top_k=0,
        max_completion_length=MAX_TOKENS,
        generation_kwargs=None,
        seed=0,
        logging_steps=1,
        save_strategy="steps",
        save_steps=50,
        save_total_limit=2,
        report_to="none",
        disable_tqdm=True,
        mask_truncated_completions=False,
        use_cpu=True,
        bf16=False,
        gradient_checkpointing=False,
    )


def step_timer(out: Path):
    """A TrainerCallback that writes out/step_times.json: wall (elapsed_s) and CPU (cpu_s, every thread of the
    process) seconds since train begin at each step's log, the same moment MetricsLogger stamps elapsed_s."""
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.wall0 = self.cpu0 = 0.0
            self.times: list[dict] = []

        def on_train_begin(self, args, state, control, **kwargs):
            self.wall0, self.cpu0 = time.monotonic(), time.process_time()

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "train_runtime" not in logs:
                self.times.append(
                    {
                        "step": state.global_step,
                        "elapsed_s": time.monotonic() - self.wall0,
                        "cpu_s": time.process_time() - self.cpu0,
                    }
                )

        def on_train_end(self, args, state, control, **kwargs):
            out.mkdir(parents=True, exist_ok=True)
            (out / "step_times.json").write_text(json.dumps(self.times))

    return StepTimer()


# --- (b) plain TRL, run as `overhead.py plain ...` in a subprocess ------------------------


def plain_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="overhead.py plain")
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)

    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    sys.path.insert(0, str(REPO / "src"))
    from knobsweep.rewards import get_evaluator

    out = Path(args.out)
    evaluator = get_evaluator({"name": "gsm8k", "format_weight": FORMAT_WEIGHT})
    dataset = Dataset.from_parquet(str(Path(args.data) / "train.parquet"))
    columns = [c for c in dataset.column_names if c != "prompt"]

    def gsm8k(prompts, completions, **kwargs):
        scores = []
        for i, completion in enumerate(completions):
            text = completion if isinstance(completion, str) else "".join(m["content"] for m in completion)
            scores.append(evaluator(text, {c: kwargs[c][i] for c in columns}).score)
        return scores

    timer = step_timer(out)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    trainer = GRPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32),
        reward_funcs=[gsm8k],
        args=GRPOConfig(**plain_grpo_config_kwargs(out)),
        train_dataset=dataset,
        processing_class=tokenizer,
        callbacks=[timer],
        peft_config=LoraConfig(
            r=LORA["rank"],
            lora_alpha=LORA["alpha"],
            lora_dropout=LORA["dropout"],
            target_modules=LORA["target_modules"],
            exclude_modules=LORA["exclude_modules"],
            task_type="CAUSAL_LM",
        ),
    )
    trainer.train()
    return 0


# --- (a') knobsweep with group filtering off, optionally profiled: `overhead.py knobsweep ...` ---


def knobsweep_main(argv: list[str]) -> int:
    """knobsweep.train's CLI with KnobsweepGRPOTrainer(filter_groups=False): the same work per step as
    plain TRL, so the difference is knobsweep's own overhead. `--profile FILE` dumps cProfile stats."""
    parser = argparse.ArgumentParser(prog="overhead.py knobsweep")
    parser.add_argument("--profile", type=Path)
    args, train_argv = parser.parse_known_args(argv)
    sys.path.insert(0, str(REPO / "src"))
    from knobsweep.train import trainer
    from knobsweep.train.__main__ import main as train_main

    original = trainer.KnobsweepGRPOTrainer.__init__

    out = Path(train_argv[train_argv.index("--out") + 1])

    def no_filter(self, *a, **kw):
        original(self, *a, **{**kw, "filter_groups": False})
        self.add_callback(step_timer(out))  # last: after knobsweep's own callbacks, as in plain TRL

    trainer.KnobsweepGRPOTrainer.__init__ = no_filter
    if args.profile is None:
        return train_main(train_argv)
    import cProfile

    profiler = cProfile.Profile()
    try:
        return profiler.runcall(train_main, train_argv)
    finally:
        profiler.dump_stats(str(args.profile))


# --- the driver ---------------------------------------------------------------------------


def environment(threads: int) -> dict:
    return {
        **os.environ,
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        "PYTHONPATH": str(REPO / "src"),
    }


def run(command: list[str], threads: int) -> float:
    started = time.perf_counter()
    result = subprocess.run(command, cwd=REPO, env=environment(threads), capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"failed: {' '.join(command[:12])} ...\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return time.perf_counter() - started


def run_together(commands: dict[str, list[str]], threads: int, root: Path) -> dict[str, float]:
    """Start every command at once; process wall seconds of each (output in root/<name>.log)."""
    started, processes, walls = time.perf_counter(), {}, {}
    for name, command in commands.items():
        log = open(root / f"{name.replace(' ', '_')}.log", "w")
        processes[name] = (
            subprocess.Popen(command, cwd=REPO, env=environment(threads), stdout=log, stderr=subprocess.STDOUT),
            log,
        )
    for name, (process, log) in processes.items():
        code = process.wait()
        walls[name] = time.perf_counter() - started
        log.close()
        if code != 0:
            raise SystemExit(f"{name} failed (exit {code}):\n{Path(log.name).read_text()[-4000:]}")
    return walls


def step_seconds(records: list[dict], key: str = "elapsed_s") -> list[float]:
    """Per-step durations from a cumulative clock (elapsed_s: wall, cpu_s: CPU), warm-up steps skipped."""
    elapsed = [0.0] + [float(r[key]) for r in records]
    return [b - a for a, b in zip(elapsed, elapsed[1:])][SKIP:]


def prepare(root: Path, steps: int, threads: int) -> tuple[Path, Path]:
    data, model = root / "data", root / "tiny"
    section = {
        "source": "gsm8k",
        "format": "rl",
        "path": str(REPO / "data" / "gsm8k"),
        "train_size": steps * BATCH_SIZE,
        "eval_size": 4,
        "seed": 0,
    }
    run([sys.executable, "-m", "knobsweep.data", "--config-json", json.dumps(section), "--out", str(data)], threads)
    run([sys.executable, "-m", "knobsweep.models.tiny", "--data", str(data), "--out", str(model)], threads)
    return data, model


KINDS = ("knobsweep", "knobsweep no-filter", "knobsweep no-timeout", "plain TRL")


def command(kind: str, data: Path, model: Path, out: Path, profile: Path | None = None) -> list[str]:
    # "knobsweep no-timeout": (a') with train.reward_timeout_s null, so the evaluator is called directly
    # instead of on a new thread per sample (grpo.call_with_timeout): that thread's cost, isolated.
    config = knobsweep_config(**({"reward_timeout_s": None} if kind == "knobsweep no-timeout" else {}))
    stage = ["--config-json", json.dumps(config), "--model", str(model), "--data", str(data), "--out", str(out)]
    if kind == "knobsweep":  # exactly the pipeline's command
        return LAUNCH + ["-m", "knobsweep.train", *stage]
    if kind in ("knobsweep no-filter", "knobsweep no-timeout"):
        return LAUNCH + [
            str(Path(__file__).resolve()),
            "knobsweep",
            *(["--profile", str(profile)] if profile else []),
            *stage,
        ]
    return LAUNCH + [
        str(Path(__file__).resolve()),
        "plain",
        "--model",
        str(model),
        "--data",
        str(data),
        "--out",
        str(out),
    ]


def read_result(kind: str, out: Path) -> dict:
    result: dict = {}
    if kind.startswith("knobsweep"):
        metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
        zero = [r["filtered_group_rate"] for r in metrics if isinstance(r.get("filtered_group_rate"), (int, float))]
        result.update(
            steps=len(metrics), wall=step_seconds(metrics), zero_variance=statistics.mean(zero) if zero else None
        )
    if kind != "knobsweep":  # the StepTimer's wall and CPU clocks
        timed = json.loads((out / "step_times.json").read_text())
        result.update(steps=len(timed), wall=step_seconds(timed), cpu=step_seconds(timed, "cpu_s"))
    return result


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "plain":
        return plain_main(sys.argv[2:])
    if len(sys.argv) > 1 and sys.argv[1] == "knobsweep":
        return knobsweep_main(sys.argv[2:])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30, help="optimizer steps per run (train_size = 2 x steps)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each kind")
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of every trainer")
    parser.add_argument("--apart", action="store_true", help="run the kinds one after the other, not together")
    parser.add_argument("--keep", type=Path, help="work in this directory and keep it")
    parser.add_argument("--profile", action="store_true", help="then profile one (a') run: where knobsweep's time goes")
    args = parser.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="knobsweep-overhead-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        return measure(args, root)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


def measure(args: argparse.Namespace, root: Path) -> int:
    data, model = prepare(root, args.steps, args.threads)
    print(
        f"GRPO tiny model, batch {BATCH_SIZE} x n={N}, max_tokens {MAX_TOKENS}, {args.steps} steps, "
        f"{args.threads} thread(s), kinds run {'apart' if args.apart else 'together'}; medians over steps "
        f"{SKIP + 1}..{args.steps}; cpu = CPU seconds of every thread of the trainer process"
    )
    ratios: dict[str, list[float]] = {
        "knobsweep wall": [],
        "no-filter wall": [],
        "no-filter cpu": [],
        "no-timeout wall": [],
        "no-timeout cpu": [],
    }
    for repeat in range(args.repeats):
        names = KINDS[repeat % len(KINDS) :] + KINDS[: repeat % len(KINDS)]  # rotate who starts first
        outs = {name: root / f"{name.replace(' ', '_')}-{repeat}" for name in names}
        commands = {name: command(name, data, model, outs[name]) for name in names}
        if args.apart:
            walls = {name: run(cmd, args.threads) for name, cmd in commands.items()}
        else:
            walls = run_together(commands, args.threads, root)
        results = {name: read_result(name, outs[name]) for name in KINDS}
        print(f"repeat {repeat + 1}:")
        for name, result in results.items():
            line = f"  {name:20s} wall {statistics.median(result['wall']) * 1000:7.1f} ms/step"
            line += f"  cpu {statistics.median(result['cpu']) * 1000:7.1f} ms/step" if "cpu" in result else " " * 22
            line += f"  ({result['steps']} steps, process {walls[name]:.1f} s"
            if result.get("zero_variance") is not None:
                line += f", {result['zero_variance']:.0%} of groups zero-variance"
            print(line + ")")
        plain = results["plain TRL"]
        for key in ratios:
            name = {"knobsweep": "knobsweep", "no-filter": "knobsweep no-filter", "no-timeout": "knobsweep no-timeout"}[
                key.split()[0]
            ]
            clock = key.split()[1]
            ratios[key].append(statistics.median(results[name][clock]) / statistics.median(plain[clock]))
        print("  / plain TRL: " + ", ".join(f"{key} {values[-1]:.3f}" for key, values in ratios.items()))
    print(
        "median ratio to plain TRL over the repeats (target <= 1.10): "
        + ", ".join(f"{key} {statistics.median(values):.3f}" for key, values in ratios.items())
    )
    if args.profile:
        profile(root, data, model, args.threads)
    return 0


def profile(root: Path, data: Path, model: Path, threads: int) -> None:
    """What each knobsweep part costs per step, from a cProfile of one (a') run, and the per-sample
    cost of the evaluator's timeout thread (grpo.call_with_timeout) next to a direct call."""
    import pstats

    stats_path, out = root / "knobsweep.prof", root / "profile"
    run(command("knobsweep no-filter", data, model, out, profile=stats_path), threads)
    steps = read_result("knobsweep no-filter", out)["steps"]
    stats = pstats.Stats(str(stats_path)).stats  # {(file, line, function): (cc, calls, tottime, cumtime, callers)}

    def find(file_end: str, function: str) -> list:
        return [key for key in stats if key[0].endswith(file_end) and key[2] == function]

    def cumulative(file_end: str, function: str) -> float:
        return sum(stats[key][3] for key in find(file_end, function))

    def own(file_end: str, function: str) -> float:
        """cumtime of a knobsweep override minus what it spends in TRL / transformers (its super() call,
        reached through TRL's profiling decorator)."""
        keys = find(file_end, function)
        library = sum(
            entry[3]
            for key, stat in stats.items()
            if "/trl/" in key[0] or "/transformers/" in key[0]
            for who, entry in stat[4].items()
            if who in keys
        )
        return sum(stats[key][3] for key in keys) - library

    def in_loop_share(steps: int) -> float:
        """The share of call_with_timeout's calls made in the loop (the rest: the evaluator smoke test)."""
        calls = sum(stats[key][1] for key in find("train/grpo.py", "call_with_timeout"))
        return min(1.0, steps * BATCH_SIZE * N / calls) if calls else 0.0

    def called_from(file_end: str, function: str, caller_end: str, caller: str) -> float:
        """cumtime of `function` spent in calls from `caller`."""
        callers = find(caller_end, caller)
        return sum(
            entry[3] for key in find(file_end, function) for who, entry in stats[key][4].items() if who in callers
        )

    loop = cumulative("transformers/trainer.py", "_inner_training_loop")
    parts = [
        ("reward wrapper: EvaluatorReward.__call__ (all of it)", cumulative("train/grpo.py", "__call__")),
        (
            "  of which call_with_timeout (evaluator + a thread each)",
            in_loop_share(steps) * cumulative("train/grpo.py", "call_with_timeout"),
        ),
        (
            "  of which rollouts.jsonl appends",
            called_from("knobsweep/io.py", "append_jsonl", "train/grpo.py", "__call__"),
        ),
        ("  of which reward/* metrics (_log_parts)", cumulative("train/grpo.py", "_log_parts")),
        (
            "trainer override _generate_and_score_completions (own: group filter stats)",
            own("train/trainer.py", "_generate_and_score_completions"),
        ),
        (
            "trainer override _calculate_rewards (own: reward matrix kept)",
            own("train/trainer.py", "_calculate_rewards"),
        ),
        ("trainer override compute_loss (own: the finite check)", own("train/trainer.py", "compute_loss")),
    ]
    callbacks = [
        (f"callback callbacks.py:{key[1]} {key[2]}", stats[key][3])
        for key in stats
        if key[0].endswith("train/callbacks.py") and key[2].startswith("on_") and stats[key][3] / steps >= 1e-5
    ]  # hooks that cost something
    parts += sorted(callbacks, key=lambda item: -item[1])
    parts += [
        (
            "  of which status.json writes (RunStatus.write)",
            called_from("train/status.py", "write", "train/callbacks.py", "on_log"),
        ),
        ("  of which console rows", cumulative("train/callbacks.py", "_print_row")),
    ]
    own = sum(value for name, value in parts if not name.startswith(" ") and "(all of it)" not in name)
    own += cumulative("train/grpo.py", "__call__")
    print(f"\nprofile of one (a') run, {steps} steps (cProfile slows every Python call; read the shares):")
    print(f"  training loop                       {loop / steps * 1000:8.2f} ms/step")
    for name, value in parts:
        print(f"  {name:58s} {value / steps * 1000:8.2f} ms/step  {value / loop:6.1%}")
    print(f"  knobsweep's own code in the loop, total: {own / steps * 1000:.2f} ms/step = {own / loop:.1%} of the loop")

    sys.path.insert(0, str(REPO / "src"))
    from knobsweep.rewards import get_evaluator
    from knobsweep.train.grpo import call_with_timeout

    evaluator = get_evaluator({"name": "gsm8k", "format_weight": FORMAT_WEIGHT})
    row, text, calls = {"ground_truth": "72"}, "so the answer is #### 72", 2000
    for label, call in (
        ("direct", lambda: evaluator(text, row)),
        ("call_with_timeout (a thread each)", lambda: call_with_timeout(evaluator, 60.0, text, row)),
    ):
        started = time.perf_counter()
        for _ in range(calls):
            call()
        per_call = (time.perf_counter() - started) / calls
        print(
            f"gsm8k evaluator, {label}: {per_call * 1e6:.0f} us per sample = "
            f"{per_call * BATCH_SIZE * N * 1000:.2f} ms per step of {BATCH_SIZE * N} samples"
        )


if __name__ == "__main__":
    sys.exit(main())

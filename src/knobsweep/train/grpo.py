"""GRPO training with TRL's GRPOTrainer and a PEFT LoRA adapter.

The knobs we name (loss method, rollout sampling, batch size, ...) map onto GRPOConfig
here; `train.trl` is then applied on top unchanged, so any GRPOConfig field a user sets
reaches TRL as written (`model_init_kwargs` goes to our own `from_pretrained`, where it
acts). Outputs (see docs/contracts.md): run.yaml, status.json,
metrics.jsonl, rollouts.jsonl, adapter/, checkpoints/.

Lifecycle (status.json): PENDING -> VALIDATING (dataset rows, an evaluator smoke test) ->
RUNNING -> COMPLETED | FAILED (an exception, a NaN/Inf loss) | CANCELLED (SIGTERM / SIGINT:
a checkpoint is saved, exit 128 + signal) | EARLY_STOPPED (an epoch with no learning signal;
the adapter is saved, exit 0). Running the same command again resumes from the latest
checkpoint in OUT/checkpoints (metrics.jsonl / rollouts.jsonl are cut back to its step).
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import numbers
import shutil
import signal
import threading
import time
from pathlib import Path
from typing import Any, Callable

import yaml
from rich.console import Console

from knobsweep.io import append_jsonl, atomic_dir, atomic_write_text, read_jsonl
from knobsweep.train.callbacks import (LOGS_IN_CHECKPOINT, HealthCallback, LifecycleCallback, MetricsLogger,
                                       StopRequest)
from knobsweep.train.health import HealthMonitor, NonFiniteError
from knobsweep.train.status import (CANCELLED, COMPLETED, EARLY_STOPPED, FAILED, PENDING, RUNNING, VALIDATING,
                                    RunStatus)

# Defaults of the lifecycle knobs, for TRAIN sections written before they existed (spec/schema.py).
ROLLOUTS_PER_STEP = 4  # rollouts written to rollouts.jsonl per generation batch
SAVE_EVERY, KEEP_CHECKPOINTS, REWARD_TIMEOUT_S = 50, 2, 60.0


# Keys of the TRAIN config this stage reads (the spec fills every one in; see docs/contracts.md).
REQUIRED_KEYS = (
    "model.lora", "train.loss", "train.learning_rate", "train.epochs", "train.batch_size", "train.log_every",
    "rollout.n", "rollout.temperature", "rollout.top_p", "rollout.top_k", "rollout.max_tokens", "reward", "seed",
)


def check_config(config: dict) -> None:
    """Name the first missing key, rather than fail later with a bare KeyError."""
    for dotted in REQUIRED_KEYS:
        node = config
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                raise ValueError(f"--config-json: missing {dotted} (expected the resolved TRAIN section "
                                 "{model, train, rollout, reward, seed})")
            node = node[part]


def loss_fields(loss: str, kl_beta: float | None) -> dict[str, Any]:
    """GRPOConfig fields of a loss method (the table in notes/ml-stack.md).

    TRL's own loss_type="grpo" is sequence-mean-token-mean, so our token-mean `grpo` and
    `dapo` use TRL's "dapo" aggregation and differ in clip range and KL.
    """
    if loss != "grpo" and kl_beta:
        raise ValueError(f"train.kl_beta={kl_beta}: a non-zero KL beta needs train.loss 'grpo', not {loss!r}")
    if loss == "grpo":
        beta = 0.001 if kl_beta is None else float(kl_beta)
        return dict(loss_type="dapo", epsilon=0.2, epsilon_high=0.2, beta=beta, importance_sampling_level="token")
    if loss == "dapo":
        return dict(loss_type="dapo", epsilon=0.2, epsilon_high=0.28, beta=0.0, importance_sampling_level="token")
    if loss == "gspo-token":
        return dict(loss_type="grpo", epsilon=3e-4, epsilon_high=4e-4, beta=0.0, importance_sampling_level="sequence")
    raise ValueError(f"train.loss={loss!r}: allowed are 'grpo', 'dapo', 'gspo-token'")


def grpo_config_kwargs(config: dict, out_dir: Path, num_processes: int, use_cuda: bool) -> dict[str, Any]:
    """GRPOConfig keyword arguments for a TRAIN config ({model, train, rollout, reward, seed})."""
    train, rollout = config["train"], config["rollout"]
    # train.batch_size counts prompts per optimizer step; TRL counts completions per device.
    # With gradient_accumulation_steps=1 (so steps_per_generation=1), one step generates
    #   per_device_train_batch_size * num_processes = batch_size * n completions,
    # i.e. batch_size groups of n completions each.
    completions = train["batch_size"] * rollout["n"]
    if completions % num_processes:
        raise ValueError(
            f"train.batch_size * rollout.n = {train['batch_size']} * {rollout['n']} = {completions} completions "
            f"per step cannot be split evenly over {num_processes} processes"
        )
    kwargs: dict[str, Any] = dict(
        output_dir=str(out_dir / "checkpoints"),
        **loss_fields(train["loss"], train.get("kl_beta")),
        learning_rate=train["learning_rate"],
        num_train_epochs=train["epochs"],
        per_device_train_batch_size=completions // num_processes,
        gradient_accumulation_steps=1,
        num_generations=rollout["n"],
        temperature=rollout["temperature"],
        top_p=rollout["top_p"],
        top_k=rollout["top_k"],  # 0 disables top-k in TRL too
        max_completion_length=rollout["max_tokens"],
        generation_kwargs=rollout.get("extra_body") or None,
        seed=config["seed"],
        logging_steps=1,  # metrics.jsonl gets every step; log_every paces the console table
        save_strategy="steps",
        save_steps=train.get("save_every", SAVE_EVERY),
        save_total_limit=train.get("keep_checkpoints", KEEP_CHECKPOINTS),
        report_to="none",
        disable_tqdm=True,  # MetricsLogger prints the progress table instead
        # A model that never emits EOS would have every completion masked (loss 0).
        mask_truncated_completions=False,
    )
    if use_cuda:
        kwargs.update(bf16=True)
    else:  # TRL defaults to bf16 + gradient checkpointing, both slow or unsupported on CPU
        kwargs.update(use_cpu=True, bf16=False, gradient_checkpointing=False)
    kwargs.update(train.get("trl") or {})
    return kwargs


def build_grpo_config(kwargs: dict[str, Any]):
    """GRPOConfig(**kwargs), naming an unknown field (and the closest real one) instead of a TypeError."""
    import trl
    from trl import GRPOConfig

    known = {field.name for field in dataclasses.fields(GRPOConfig) if field.init}
    for name in kwargs:
        if name not in known:
            close = difflib.get_close_matches(name, sorted(known), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"train.trl.{name}: not a GRPOConfig field in TRL {trl.__version__}{hint}")
    return GRPOConfig(**kwargs)


def completion_text(completion: Any) -> str:
    """The text of a TRL completion: a string, or a list of messages (conversational data)."""
    if isinstance(completion, str):
        return completion
    return "".join(str(message.get("content") or "") for message in completion)


class Cancelled(BaseException):
    """The run was stopped by a signal (SIGTERM / SIGINT); exit status 128 + signal."""

    def __init__(self, signum: int, message: str):
        super().__init__(message)
        self.signum = signum


class EvaluatorTimeout(Exception):
    pass


def call_with_timeout(fn: Callable, timeout: float | None, *args):
    """fn(*args), or EvaluatorTimeout after `timeout` seconds (None = wait forever).

    The call runs in a daemon thread; one that never returns is abandoned, not killed (Python
    cannot kill a thread), so a hung evaluator costs a thread and its sample, not the run.
    """
    if not timeout:
        return fn(*args)
    box: dict[str, Any] = {}

    def target():
        try:
            box["value"] = fn(*args)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True, name="evaluator")
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise EvaluatorTimeout(f"no result within train.reward_timeout_s={timeout:g} s")
    if "error" in box:
        raise box["error"]
    return box["value"]


class EvaluatorReward:
    """A TRL reward function around a knobsweep evaluator.

    Returns the evaluator's score per completion, or None (TRL: no reward) when the evaluator
    raised, timed out (`timeout` s) or returned junk (not a finite score in [0, 1], or
    valid=False); such samples are counted in `invalid_rate` and removed from the loss
    (`trainer.KnobsweepGRPOTrainer`). The means of the evaluator's named metrics over valid
    samples are logged as `reward/<name>` through TRL's `log_metric`, so they land in the same
    log (and metrics.jsonl line) as TRL's own `reward`; so is `identical_rollouts` (1.0 when
    every completion of the batch is the same text).
    """

    def __init__(self, evaluator: Callable, columns: list[str], rollouts_path: Path | None = None,
                 timeout: float | None = None, rollouts_per_step: int = ROLLOUTS_PER_STEP):
        self.evaluator = evaluator
        self.columns = columns  # dataset columns besides `prompt`, passed to the evaluator as the row
        self.rollouts_path = rollouts_path  # None on non-main processes
        self.timeout = timeout
        self.rollouts_per_step = rollouts_per_step
        self.__name__ = getattr(evaluator, "name", "reward")  # TRL logs rewards/<__name__>/mean

    def evaluate(self, text: str, row: dict) -> tuple[float | None, dict]:
        """(score or None, the parts recorded in rollouts.jsonl)."""
        try:
            evaluation = call_with_timeout(self.evaluator, self.timeout, text, row)
            score, reason = evaluation.score, evaluation.reason
            valid, metrics = bool(evaluation.valid), dict(evaluation.metrics or {})
        except EvaluatorTimeout as exc:
            return None, {"score": None, "reason": f"evaluator timed out: {exc}", "valid": False, "metrics": {}}
        except Exception as exc:  # an evaluator bug must cost one sample, not the run
            return None, {"score": None, "reason": f"evaluator raised {type(exc).__name__}: {exc}",
                          "valid": False, "metrics": {}}
        if not (isinstance(score, numbers.Real) and math.isfinite(score) and 0.0 <= score <= 1.0):
            return None, {"score": None, "reason": f"evaluator returned score {score!r}, not in [0, 1]",
                          "valid": False, "metrics": metrics}
        record = {"score": float(score), "reason": reason, "valid": valid, "metrics": metrics}
        return (float(score) if valid else None), record

    def __call__(self, prompts, completions, trainer_state=None, log_metric=None, **kwargs):
        rows = [{column: kwargs[column][i] for column in self.columns if column in kwargs}
                for i in range(len(completions))]
        texts = [completion_text(c) for c in completions]
        results = [self.evaluate(text, row) for text, row in zip(texts, rows)]
        scores = [score for score, _ in results]
        if log_metric is not None:
            self._log_parts(results, log_metric)
            log_metric("identical_rollouts", 1.0 if len(texts) > 1 and len(set(texts)) == 1 else 0.0)
        if self.rollouts_path is not None and self.rollouts_per_step > 0:
            step = trainer_state.global_step + 1 if trainer_state is not None else 0  # the step these train
            stride = max(1, len(results) // self.rollouts_per_step)
            for i in range(0, len(results), stride)[:self.rollouts_per_step]:
                append_jsonl(self.rollouts_path, {"step": step, "row_id": rows[i].get("row_id"),
                                                  "prompt": prompts[i], "completion": texts[i], **results[i][1]})
        return scores

    @staticmethod
    def _log_parts(results: list[tuple[float | None, dict]], log_metric: Callable[[str, float], None]) -> None:
        valid = [record["metrics"] for score, record in results if score is not None]
        log_metric("invalid_rate", (len(results) - len(valid)) / len(results))
        for name in sorted({name for metrics in valid for name in metrics}):
            values = [float(m[name]) for m in valid if isinstance(m.get(name), numbers.Real)]
            if values:
                log_metric(f"reward/{name}", sum(values) / len(values))


# --- VALIDATING: before any training step --------------------------------------------------

# Columns that may hold a row's reference answer, scored in the evaluator smoke test.
REFERENCE_COLUMNS = ("answer", "ground_truth", "reference", "solution", "target", "chosen")
JUNK_COMPLETIONS = ("", "I don't know.", "lorem ipsum dolor sit amet", "#### banana")
SMOKE_ROWS = 3


def _prompt_problem(prompt: Any) -> str | None:
    if isinstance(prompt, str):
        return None if prompt.strip() else "empty prompt"
    if hasattr(prompt, "tolist"):  # numpy arrays from parquet
        prompt = prompt.tolist()
    if isinstance(prompt, (list, tuple)):
        if not prompt:
            return "no messages"
        for message in prompt:
            if not isinstance(message, dict) or "content" not in message:
                return f"a message without 'content': {message!r:.80}"
        if not any(str(message.get("content") or "").strip() for message in prompt):
            return "every message is empty"
        return None
    return f"prompt of type {type(prompt).__name__}, expected text or a list of messages"


def validate_rows(dataset) -> None:
    """Every row has a non-empty prompt (text, or messages with content); names the bad rows."""
    if len(dataset) == 0:
        raise ValueError("train.parquet has no rows")
    if "prompt" not in dataset.column_names:
        raise ValueError(f"train.parquet: no 'prompt' column (columns: {', '.join(dataset.column_names)})")
    ids = dataset["row_id"] if "row_id" in dataset.column_names else list(range(len(dataset)))
    bad = [(row_id, problem) for row_id, prompt in zip(ids, dataset["prompt"])
           if (problem := _prompt_problem(prompt)) is not None]
    if bad:
        listed = "; ".join(f"row {row_id}: {problem}" for row_id, problem in bad[:5])
        raise ValueError(f"train.parquet: {len(bad)} of {len(dataset)} rows have an unusable prompt ({listed})")


def smoke_test_evaluator(reward: EvaluatorReward, rows: list[dict]) -> dict:
    """Score the first rows' reference answers and a few junk strings before training.

    Fails when the evaluator raises (or is invalid) on every candidate, or gives every one the
    same score: it cannot tell a good completion from a bad one, so training would learn
    nothing. Returns a summary for status.json.
    """
    candidates = []
    for row in rows[:SMOKE_ROWS]:
        references = [str(row[c]) for c in REFERENCE_COLUMNS if isinstance(row.get(c), str) and row[c].strip()]
        candidates += [(text, row) for text in (*references, *JUNK_COMPLETIONS)]
    results = [reward.evaluate(text, row) for text, row in candidates]
    scores = [score for score, _ in results if score is not None]
    summary = {"samples": len(results), "invalid": len(results) - len(scores),
               "distinct_scores": sorted(set(scores))[:10]}
    if not scores:
        raise ValueError(f"evaluator {reward.__name__!r} could not score any of {len(results)} smoke-test "
                         f"candidates (reference answers and junk); first: {results[0][1]['reason']}")
    if len(set(scores)) == 1:
        raise ValueError(f"evaluator {reward.__name__!r} gave all {len(scores)} smoke-test candidates (reference "
                         f"answers and junk) the same score {scores[0]}: it cannot tell good from bad")
    return summary


# --- resume -------------------------------------------------------------------------------

def latest_checkpoint(checkpoints: Path) -> Path | None:
    """The checkpoint-N with the largest N that holds a trainer_state.json (a finished save)."""
    if not checkpoints.is_dir():
        return None
    done = [p for p in checkpoints.glob("checkpoint-*") if (p / "trainer_state.json").is_file()
            and p.name.split("-")[-1].isdigit()]
    return max(done, key=lambda p: int(p.name.split("-")[-1]), default=None)


def restore_logs(checkpoint: Path, logs: tuple[Path, ...]) -> int:
    """Cut metrics.jsonl / rollouts.jsonl back to the checkpoint's step; return that step.

    The copies saved inside the checkpoint win (they survive a workflow manager deleting a
    failed job's outputs); otherwise lines past the step are dropped from the live file.
    """
    step = int(json.loads((checkpoint / "trainer_state.json").read_text())["global_step"])
    for path in logs:
        saved = checkpoint / LOGS_IN_CHECKPOINT / path.name
        source = saved if saved.is_file() else path
        records = read_jsonl(source) if source.is_file() else []
        kept = [r for r in records if int(r.get("step", 0)) <= step]
        atomic_write_text(path, "".join(json.dumps(r, allow_nan=True) + "\n" for r in kept))
    return step


def load_dataset(data_dir: str | Path):
    """train.parquet of a data stage directory as a datasets.Dataset (needs a `prompt` column)."""
    import pandas as pd
    from datasets import Dataset

    path = Path(data_dir) / "train.parquet"
    if not path.is_file():
        raise FileNotFoundError(f"--data {data_dir}: no train.parquet there (run the data stage first)")
    frame = pd.read_parquet(path)
    if "prompt" not in frame.columns:
        raise ValueError(f"{path}: no 'prompt' column (columns: {', '.join(frame.columns)})")
    return Dataset.from_pandas(frame, preserve_index=False)


def peft_config(lora: dict | None):
    """A PEFT LoraConfig from `model.lora`; None (full fine-tune) when lora is null."""
    if lora is None:
        return None
    from peft import LoraConfig

    return LoraConfig(
        r=lora["rank"],
        lora_alpha=lora["alpha"],
        lora_dropout=lora["dropout"],
        target_modules=lora["target_modules"],
        exclude_modules=lora.get("exclude_modules"),
        task_type="CAUSAL_LM",
    )


def train(config: dict, model_path: str, data_dir: str | Path, out_dir: str | Path) -> Path:
    """Run GRPO for a TRAIN config; write the contract's outputs into out_dir; return it.

    Resumes from the latest checkpoint in out_dir/checkpoints when run.yaml there equals
    `config`. Raises `Cancelled` after SIGTERM / SIGINT (a checkpoint saved first); on any
    other exception status.json says FAILED with the reason, and the exception propagates.
    """
    import torch
    from accelerate import PartialState

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    state = PartialState()
    is_main = state.is_main_process
    status = RunStatus(out_dir / "status.json", write=is_main)
    console = Console(highlight=False, soft_wrap=True)  # log files: one line per row, never wrapped
    logs = (out_dir / "metrics.jsonl", out_dir / "rollouts.jsonl")
    checkpoints = out_dir / "checkpoints"
    run_yaml = out_dir / "run.yaml"
    same_run = run_yaml.is_file() and yaml.safe_load(run_yaml.read_text()) == config
    checkpoint = latest_checkpoint(checkpoints) if same_run else None
    state.wait_for_everyone()  # every process has looked before the main one changes anything
    if is_main:
        if checkpoint is None:
            # Another config's checkpoints, or only unfinished saves: start afresh.
            shutil.rmtree(checkpoints, ignore_errors=True)
            for path in logs:
                atomic_write_text(path, "")
        else:
            status.resume(restore_logs(checkpoint, logs), str(checkpoint))
        atomic_write_text(run_yaml, yaml.safe_dump(config, sort_keys=False))
    status.write(PENDING)
    state.wait_for_everyone()
    stop = StopRequest()
    _install_signal_handlers(stop, console)
    started = time.monotonic()
    lifecycle = None
    try:
        status.write(VALIDATING)
        check_config(config)
        dataset, reward = _prepare(config, data_dir, out_dir, is_main)
        status.write(validation=smoke_test_evaluator(reward, [_row(dataset, i, reward.columns)
                                                              for i in range(min(SMOKE_ROWS, len(dataset)))]))
        trainer, tokenizer, lifecycle = _build_trainer(config, model_path, dataset, reward, out_dir, state,
                                                       status, console, stop)
        status.write(RUNNING, reason=f"resumed from {checkpoint.name}" if checkpoint else "")
        trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
        trainer.accelerator.wait_for_everyone()
        step = trainer.state.global_step
        if stop.signum is not None:
            last = latest_checkpoint(checkpoints)
            raise Cancelled(stop.signum, f"{stop.name} at step {step}: "
                                         f"{last.name + ' saved' if last else 'no checkpoint saved'}; "
                                         "run the same command again to resume")
        if is_main:
            with atomic_dir(out_dir / "adapter") as tmp:
                trainer.accelerator.unwrap_model(trainer.model).save_pretrained(tmp)
                tokenizer.save_pretrained(tmp)
    except Cancelled as exc:
        status.write(CANCELLED, reason=str(exc))
        console.print(f"[bold yellow]CANCELLED[/]: {exc}")
        raise
    except NonFiniteError as exc:
        last = latest_checkpoint(checkpoints)
        status.warn(exc.step or status.step, "non_finite", str(exc))
        status.write(FAILED, reason=f"NonFiniteError: {exc}; stopped before the weights or a checkpoint took it; "
                                    f"last good checkpoint: {last if last else 'none'}")
        console.print(f"[bold red]FAILED[/]: {exc}")
        raise
    except BaseException as exc:
        status.write(FAILED, reason=f"{type(exc).__name__}: {exc}")
        raise
    finally:
        stop.in_loop = False
    final, reason = (EARLY_STOPPED, lifecycle.early_stop_reason) if lifecycle.early_stop_reason else (COMPLETED, "")
    status.write(final, reason=reason, step=step, runtime_s=round(time.monotonic() - started, 2),
                 summary=run_summary(logs[0]))
    if is_main:
        console.print(f"[bold]GRPO {final.lower().replace('_', ' ')}[/]: {step} steps in "
                      f"{time.monotonic() - started:.1f} s (torch threads {torch.get_num_threads()}) -> {out_dir}"
                      + (f"\n{reason}" if reason else ""))
    return out_dir


SUMMARY_KEYS = ("reward", "invalid_rate", "filtered_group_rate", "tokens_per_s")


def run_summary(metrics_path: Path) -> dict:
    """Means over every step in metrics.jsonl of the keys a reader asks about first."""
    records = read_jsonl(metrics_path) if metrics_path.is_file() else []
    summary: dict[str, Any] = {"steps": len(records)}
    for key in SUMMARY_KEYS:
        values = [r[key] for r in records if isinstance(r.get(key), (int, float)) and math.isfinite(r[key])]
        summary[key] = round(sum(values) / len(values), 6) if values else None
    return summary


def _install_signal_handlers(stop: StopRequest, console: Console) -> None:
    """SIGTERM (Slurm preemption, scancel) / SIGINT (Ctrl-C): inside the training loop, finish the
    step, save a checkpoint and stop; outside it, or on a second signal, stop at once."""
    if threading.current_thread() is not threading.main_thread():
        return

    def handler(signum, frame):
        if stop.signum is None and stop.in_loop:
            stop.signum = signum
            console.print(f"[yellow]{signal.Signals(signum).name}[/]: finishing this step, saving a checkpoint")
            return
        raise Cancelled(signum, f"{signal.Signals(signum).name} "
                                f"{'again' if stop.signum else 'outside the training loop'}: stopped at once")

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, handler)


def _row(dataset, index: int, columns: list[str]) -> dict:
    return {column: dataset[index][column] for column in columns}


def _prepare(config: dict, data_dir: str | Path, out_dir: Path, is_main: bool):
    """VALIDATING: the dataset rows and the reward function (smoke-tested by the caller)."""
    from knobsweep.rewards import get_evaluator

    train_cfg = config["train"]
    dataset = load_dataset(data_dir)
    validate_rows(dataset)
    reward = EvaluatorReward(
        get_evaluator(config["reward"]),
        columns=[c for c in dataset.column_names if c != "prompt"],
        rollouts_path=out_dir / "rollouts.jsonl" if is_main else None,
        timeout=train_cfg.get("reward_timeout_s", REWARD_TIMEOUT_S),
        rollouts_per_step=train_cfg.get("rollouts_per_step", ROLLOUTS_PER_STEP),
    )
    return dataset, reward


def _build_trainer(config, model_path, dataset, reward, out_dir, state, status, console, stop):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, PrinterCallback

    from knobsweep.train.trainer import KnobsweepGRPOTrainer

    use_cuda = torch.cuda.is_available()
    trl_fields = dict(config["train"].get("trl") or {})
    # model_init_kwargs only acts when TRL loads the model itself; we load it, so apply it here.
    model_kwargs = {"dtype": torch.bfloat16 if use_cuda else torch.float32,
                    **(trl_fields.pop("model_init_kwargs", None) or {})}
    args = build_grpo_config(
        grpo_config_kwargs({**config, "train": {**config["train"], "trl": trl_fields}},
                           out_dir, state.num_processes, use_cuda)
    )
    metrics_path = out_dir / "metrics.jsonl"
    previous = read_jsonl(metrics_path) if metrics_path.is_file() else []
    last = previous[-1] if previous else None
    health = HealthCallback(HealthMonitor(**(config["train"].get("health") or {})), status, console)
    lifecycle = LifecycleCallback(stop, status, console, health, logs=(metrics_path, out_dir / "rollouts.jsonl"))
    logger = MetricsLogger(metrics_path, status, console, log_every=config["train"]["log_every"],
                           elapsed_offset=float(last["elapsed_s"]) if last else 0.0, last=last)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path, **model_kwargs)
    trainer = KnobsweepGRPOTrainer(
        model=model,
        reward_funcs=[reward],
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=peft_config(config["model"].get("lora")),
        callbacks=[logger, health, lifecycle],  # in this order: a step is logged before it is judged
    )
    lifecycle.trainer = trainer
    trainer.remove_callback(PrinterCallback)  # it prints every log as a dict; MetricsLogger prints a table
    if state.is_main_process:
        train_cfg, rollout = config["train"], config["rollout"]
        console.print(
            f"[bold]GRPO[/] {model_path} on {len(dataset)} prompts: loss {train_cfg['loss']}, "
            f"lr {train_cfg['learning_rate']}, {train_cfg['batch_size']} prompts x n={rollout['n']} per step, "
            f"max_tokens {rollout['max_tokens']}, reward {reward.__name__}, "
            f"{'LoRA r=' + str(config['model']['lora']['rank']) if config['model'].get('lora') else 'full fine-tune'}"
        )
    return trainer, tokenizer, lifecycle

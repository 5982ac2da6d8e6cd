"""GRPO training with TRL's GRPOTrainer and a PEFT LoRA adapter.

The knobs we name (loss method, rollout sampling, batch size, ...) map onto GRPOConfig
here; `train.trl` is then applied on top unchanged, so any GRPOConfig field a user sets
reaches TRL as written (`model_init_kwargs` goes to our own `from_pretrained`, where it
acts). Outputs (see docs/contracts.md): run.yaml, status.json,
metrics.jsonl, rollouts.jsonl, adapter/.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import numbers
import time
from pathlib import Path
from typing import Any, Callable

import yaml
from rich.console import Console

from knobsweep.io import append_jsonl, atomic_dir, atomic_write_text
from knobsweep.train.callbacks import MetricsLogger
from knobsweep.train.status import COMPLETED, FAILED, RUNNING, RunStatus

# Rollouts written to rollouts.jsonl per generation batch: enough to read, small on disk.
ROLLOUTS_PER_STEP = 4


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
        logging_steps=train["log_every"],
        save_strategy="no",
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


class EvaluatorReward:
    """A TRL reward function around a knobsweep evaluator.

    Returns the evaluator's score per completion, or None (TRL: no reward) when the evaluator
    raised or returned junk (not a finite score in [0, 1], or valid=False); such samples are
    counted in `invalid_rate`. The means of the evaluator's named metrics over valid samples
    are logged as `reward/<name>` through TRL's `log_metric`, so they land in the same log
    (and metrics.jsonl line) as TRL's own `reward`.
    """

    def __init__(self, evaluator: Callable, columns: list[str], rollouts_path: Path | None = None):
        self.evaluator = evaluator
        self.columns = columns  # dataset columns besides `prompt`, passed to the evaluator as the row
        self.rollouts_path = rollouts_path  # None on non-main processes
        self.__name__ = getattr(evaluator, "name", "reward")  # TRL logs rewards/<__name__>/mean

    def evaluate(self, text: str, row: dict) -> tuple[float | None, dict]:
        """(score or None, the parts recorded in rollouts.jsonl)."""
        try:
            evaluation = self.evaluator(text, row)
            score, reason = evaluation.score, evaluation.reason
            valid, metrics = bool(evaluation.valid), dict(evaluation.metrics or {})
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
        results = [self.evaluate(completion_text(c), row) for c, row in zip(completions, rows)]
        scores = [score for score, _ in results]
        if log_metric is not None:
            self._log_parts(results, log_metric)
        if self.rollouts_path is not None:
            step = trainer_state.global_step + 1 if trainer_state is not None else 0  # the step these train
            stride = max(1, len(results) // ROLLOUTS_PER_STEP)
            for i in range(0, len(results), stride)[:ROLLOUTS_PER_STEP]:
                append_jsonl(self.rollouts_path, {"step": step, "row_id": rows[i].get("row_id"),
                                                  "prompt": prompts[i], "completion": completion_text(completions[i]),
                                                  **results[i][1]})
        return scores

    @staticmethod
    def _log_parts(results: list[tuple[float | None, dict]], log_metric: Callable[[str, float], None]) -> None:
        valid = [record["metrics"] for score, record in results if score is not None]
        log_metric("invalid_rate", (len(results) - len(valid)) / len(results))
        for name in sorted({name for metrics in valid for name in metrics}):
            values = [float(m[name]) for m in valid if isinstance(m.get(name), numbers.Real)]
            if values:
                log_metric(f"reward/{name}", sum(values) / len(values))


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

    On any exception status.json says FAILED with the reason, and the exception propagates.
    """
    import torch
    from accelerate import PartialState

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    state = PartialState()
    is_main = state.is_main_process
    status = RunStatus(out_dir / "status.json")
    console = Console(highlight=False, soft_wrap=True)  # log files: one line per row, never wrapped
    if is_main:
        atomic_write_text(out_dir / "run.yaml", yaml.safe_dump(config, sort_keys=False))
        # A re-run starts its logs afresh rather than appending to a failed run's.
        atomic_write_text(out_dir / "metrics.jsonl", "")
        atomic_write_text(out_dir / "rollouts.jsonl", "")
        status.write(RUNNING)
    started = time.monotonic()
    try:
        check_config(config)
        trainer, tokenizer = _build_trainer(config, model_path, data_dir, out_dir, state, status, console)
        trainer.train()
        trainer.accelerator.wait_for_everyone()
        if is_main:
            with atomic_dir(out_dir / "adapter") as tmp:
                trainer.accelerator.unwrap_model(trainer.model).save_pretrained(tmp)
                tokenizer.save_pretrained(tmp)
    except BaseException as exc:
        if is_main:
            status.write(FAILED, reason=f"{type(exc).__name__}: {exc}")
        raise
    if is_main:
        status.write(COMPLETED, step=trainer.state.global_step, runtime_s=round(time.monotonic() - started, 2))
        console.print(f"[bold]GRPO done[/]: {trainer.state.global_step} steps in "
                      f"{time.monotonic() - started:.1f} s (torch threads {torch.get_num_threads()}) -> {out_dir}")
    return out_dir


def _build_trainer(config, model_path, data_dir, out_dir, state, status, console):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, PrinterCallback
    from trl import GRPOTrainer

    from knobsweep.rewards import get_evaluator

    use_cuda = torch.cuda.is_available()
    trl_fields = dict(config["train"].get("trl") or {})
    # model_init_kwargs only acts when TRL loads the model itself; we load it, so apply it here.
    model_kwargs = {"dtype": torch.bfloat16 if use_cuda else torch.float32,
                    **(trl_fields.pop("model_init_kwargs", None) or {})}
    args = build_grpo_config(
        grpo_config_kwargs({**config, "train": {**config["train"], "trl": trl_fields}},
                           out_dir, state.num_processes, use_cuda)
    )
    dataset = load_dataset(data_dir)
    evaluator = get_evaluator(config["reward"])
    reward = EvaluatorReward(
        evaluator,
        columns=[c for c in dataset.column_names if c != "prompt"],
        rollouts_path=out_dir / "rollouts.jsonl" if state.is_main_process else None,
    )
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path, **model_kwargs)
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=[reward],
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=peft_config(config["model"].get("lora")),
        callbacks=[MetricsLogger(out_dir / "metrics.jsonl", status, console)],
    )
    trainer.remove_callback(PrinterCallback)  # it prints every log as a dict; MetricsLogger prints a table
    if state.is_main_process:
        train_cfg, rollout = config["train"], config["rollout"]
        console.print(
            f"[bold]GRPO[/] {model_path} on {len(dataset)} prompts: loss {train_cfg['loss']}, "
            f"lr {train_cfg['learning_rate']}, {train_cfg['batch_size']} prompts x n={rollout['n']} per step, "
            f"max_tokens {rollout['max_tokens']}, reward {evaluator.name}, "
            f"{'LoRA r=' + str(config['model']['lora']['rank']) if config['model'].get('lora') else 'full fine-tune'}"
        )
    return trainer, tokenizer

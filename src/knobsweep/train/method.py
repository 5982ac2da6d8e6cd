"""What differs between the training methods (grpo, sft, kto), behind one interface.

`lifecycle.run_training` drives a `Method`: it checks the config (`required_keys`), validates
the rows (`validate_rows`) and, with the tokenizer loaded, the parts that need it
(`validate_with_tokenizer`: GRPO's evaluator smoke test, SFT's assistant mask), builds the TRL
config (`trl_kwargs`: the shared fields of `common_kwargs`, the method's own, then `train.trl`
on top unchanged) and the trainer (`build_trainer`). Nothing heavy is imported at module level.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
from pathlib import Path
from typing import Any

# Defaults of knobs that older TRAIN sections lack (the spec fills every one in for new ones).
SAVE_EVERY, KEEP_CHECKPOINTS = 50, 2
BATCH_TOKENS, MAX_CONTEXT_LENGTH = 32768, 4096

# method -> "module:class" of its Method; imported only for the method a run uses.
METHODS = {"grpo": "knobsweep.train.grpo:GRPOMethod", "sft": "knobsweep.train.sft:SFTMethod",
           "kto": "knobsweep.train.kto:KTOMethod"}


def get_method(name: str) -> "Method":
    if name not in METHODS:
        raise ValueError(f"train.method={name!r}: allowed are {', '.join(repr(m) for m in METHODS)}")
    module, _, attribute = METHODS[name].partition(":")
    return getattr(importlib.import_module(module), attribute)()


# Keys every method reads (the spec fills them in; see docs/contracts.md).
COMMON_KEYS = ("model.lora", "train.learning_rate", "train.epochs", "train.batch_size", "train.log_every", "seed")


def check_keys(config: dict, keys: tuple[str, ...]) -> None:
    """Name the first missing key, rather than fail later with a bare KeyError."""
    for dotted in keys:
        node = config
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                raise ValueError(f"--config-json: missing {dotted} (expected the resolved TRAIN section "
                                 "{model, train, rollout, reward, seed})")
            node = node[part]


def message_problem(messages: Any) -> str | None:
    """Why `messages` is not a usable list of {role, content} (plain text is accepted too), or None."""
    if isinstance(messages, str):
        return None if messages.strip() else "empty text"
    if hasattr(messages, "tolist"):  # numpy arrays from parquet
        messages = messages.tolist()
    if isinstance(messages, (list, tuple)):
        if not messages:
            return "no messages"
        for message in messages:
            if not isinstance(message, dict) or "content" not in message:
                return f"a message without 'content': {message!r:.80}"
        if not any(str(message.get("content") or "").strip() for message in messages):
            return "every message is empty"
        return None
    if messages is None:
        return "missing (null)"
    return f"of type {type(messages).__name__}, expected text or a list of messages"


def row_ids(dataset) -> list:
    return dataset["row_id"] if "row_id" in dataset.column_names else list(range(len(dataset)))


def raise_bad_rows(bad: list[tuple[Any, str]], total: int, what: str) -> None:
    """One error naming the first few bad rows and why, when there are any."""
    if bad:
        listed = "; ".join(f"row {row_id}: {problem}" for row_id, problem in bad[:5])
        raise ValueError(f"train.parquet: {len(bad)} of {total} rows have {what} ({listed})")


def batch_plan(method: str, config: dict, num_processes: int):
    """The batch arithmetic (`batching.batch_plan`) for this run's train / rollout sections."""
    from knobsweep.train.batching import batch_plan as plan

    rollout = config.get("rollout") if method == "grpo" else None
    return plan(method, config["train"], rollout, num_processes)


def common_kwargs(config: dict, out_dir: Path, plan, use_cuda: bool, report_to: str = "none") -> dict[str, Any]:
    """The TRL config fields every method shares: schedule, batch plan, checkpoints, logging, device."""
    train = config["train"]
    kwargs: dict[str, Any] = dict(
        output_dir=str(out_dir / "checkpoints"),
        learning_rate=train["learning_rate"],
        num_train_epochs=train["epochs"],
        per_device_train_batch_size=plan.per_device_batch_size,
        gradient_accumulation_steps=plan.gradient_accumulation_steps,
        seed=config["seed"],
        logging_steps=1,  # metrics.jsonl gets every step; log_every paces the console table
        save_strategy="steps",
        save_steps=train.get("save_every", SAVE_EVERY),
        save_total_limit=train.get("keep_checkpoints", KEEP_CHECKPOINTS),
        report_to=report_to,
        disable_tqdm=True,  # MetricsLogger prints the progress table instead
    )
    if use_cuda:
        kwargs.update(bf16=True)
    else:  # TRL defaults to bf16 + gradient checkpointing, both slow or unsupported on CPU
        # (transformers 5.23 renames it activation_checkpointing; vLLM 0.32 pins transformers < 5.20)
        kwargs.update(use_cpu=True, bf16=False, gradient_checkpointing=False)
    return kwargs


def build_trl_config(config_class, kwargs: dict[str, Any]):
    """config_class(**kwargs), naming an unknown field (and the closest real one) instead of a TypeError."""
    import trl

    known = {field.name for field in dataclasses.fields(config_class) if field.init}
    for name in kwargs:
        if name not in known:
            close = difflib.get_close_matches(name, sorted(known), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"train.trl.{name}: not a {config_class.__name__} field in TRL {trl.__version__}{hint}")
    return config_class(**kwargs)


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


class Method:
    """One training method. Subclasses set the class attributes and implement the hooks."""

    name = ""  # train.method
    title = ""  # console / status wording
    data_format = ""  # the train.parquet rows it needs (the data contract's format)
    required_keys: tuple[str, ...] = COMMON_KEYS
    columns: tuple = ()  # console table (callbacks.*_COLUMNS)
    summary_keys: tuple[str, ...] = ()  # status.json summary: means over metrics.jsonl
    config_class_name = ""  # trl.<name>

    @property
    def config_class(self):
        import trl

        return getattr(trl, self.config_class_name)

    def check_config(self, config: dict) -> None:
        check_keys(config, self.required_keys)

    def validate_rows(self, config: dict, dataset):
        """VALIDATING, before the model loads: raise ValueError naming the bad rows; return the
        dataset to train on (columns selected / order fixed as the method needs)."""
        raise NotImplementedError

    def validate_with_tokenizer(self, config: dict, dataset, tokenizer, out_dir: Path, is_main: bool) -> dict:
        """VALIDATING, with the tokenizer: the checks that need it; returns status.json's `validation`."""
        return {"rows": len(dataset)}

    def method_kwargs(self, config: dict, plan, use_cuda: bool) -> dict[str, Any]:
        """The method's own TRL config fields (after the common ones, before train.trl)."""
        return {}

    def trl_kwargs(self, config: dict, out_dir: Path, plan, use_cuda: bool, report_to: str = "none") -> dict[str, Any]:
        kwargs = common_kwargs(config, out_dir, plan, use_cuda, report_to)
        kwargs.update(self.method_kwargs(config, plan, use_cuda))
        trl_fields = config["train"].get("trl") or {}
        kwargs.update(trl_fields)
        return kwargs

    def build_trainer(self, *, model, args, dataset, tokenizer, peft_config, callbacks):
        raise NotImplementedError

    def dropped_rows(self, config: dict, rows: int, train_rows: int) -> str | None:
        """A warning when the trainer's own preparation left fewer rows than the file had, or None."""
        return None

    def describe(self, config: dict, dataset) -> str:
        """One console line saying what this run trains."""
        return f"{len(dataset)} rows"

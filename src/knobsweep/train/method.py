"""What differs between the training methods (grpo, sft, kto), behind one interface.

`lifecycle.run_training` drives a `Method` with the run's `TrainJob` (the --config-json, parsed by
the spec's models): it validates the rows (`validate_rows`) and, with the tokenizer loaded, the parts that need it
(`validate_with_tokenizer`: GRPO's evaluator smoke test, SFT's assistant mask), builds the TRL
config (`trl_kwargs`: the shared fields of `common_kwargs`, the method's own, then `train.trl`
on top unchanged) and the trainer (`build_trainer`). Nothing heavy is imported at module level.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from knobsweep import layout
from knobsweep.errors import FieldError, did_you_mean
from knobsweep.registry import load, method
from knobsweep.spec.schema import LoraConfig, TrainJob


def get_method(name: str) -> Method:
    """The Method of `train.method` (its module is imported only for the method a run uses)."""
    return load(method(name).implementation)()


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


def common_kwargs(job: TrainJob, out_dir: Path, plan, use_cuda: bool, report_to: str = "none") -> dict[str, Any]:
    """The TRL config fields every method shares: schedule, batch plan, checkpoints, logging, device."""
    train = job.train
    kwargs: dict[str, Any] = dict(
        output_dir=str(out_dir / layout.CHECKPOINTS),
        learning_rate=train.learning_rate,
        num_train_epochs=train.epochs,
        per_device_train_batch_size=plan.per_device_batch_size,
        gradient_accumulation_steps=plan.gradient_accumulation_steps,
        seed=job.seed,
        logging_steps=1,  # metrics.jsonl gets every step; log_every paces the console table
        save_strategy="steps",
        save_steps=train.save_every,
        save_total_limit=train.keep_checkpoints,
        report_to=report_to,
        disable_tqdm=True,  # MetricsLogger prints the progress table instead
    )
    if use_cuda:
        kwargs.update(bf16=True)
    else:  # TRL defaults to bf16 + gradient checkpointing, both slow or unsupported on CPU
        # (transformers 5.23 renames it activation_checkpointing; vLLM 0.32 pins transformers < 5.20)
        kwargs.update(use_cpu=True, bf16=False, gradient_checkpointing=False)
    return kwargs


def unknown_trl_field(config_class, name: str) -> str | None:
    """Why `name` cannot be set on TRL's `config_class` (it is not one of its fields), or None."""
    import trl

    known = {field.name for field in dataclasses.fields(config_class) if field.init}
    if name in known:
        return None
    return f"not a {config_class.__name__} field in TRL {trl.__version__}{did_you_mean(name, known)}"


def build_trl_config(config_class, kwargs: dict[str, Any]):
    """config_class(**kwargs), naming an unknown field (and the closest real one) instead of a TypeError."""
    for name in kwargs:
        problem = unknown_trl_field(config_class, name)
        if problem:
            raise FieldError(f"train.trl.{name}", problem)
    return config_class(**kwargs)


def peft_config(lora: LoraConfig | None):
    """A PEFT LoraConfig from `model.lora`; None (full fine-tune) when lora is null."""
    if lora is None:
        return None
    import peft

    return peft.LoraConfig(
        r=lora.rank,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
        exclude_modules=lora.exclude_modules,
        task_type="CAUSAL_LM",
    )


class Method:
    """One training method. Subclasses set the class attributes and implement the hooks."""

    name = ""  # train.method (knobsweep.registry.METHODS: its row format and TRL config class)
    title = ""  # console / status wording
    columns: tuple = ()  # console table (callbacks.*_COLUMNS)
    summary_keys: tuple[str, ...] = ()  # status.json summary: means over metrics.jsonl

    @property
    def config_class(self):
        import trl

        return getattr(trl, method(self.name).trl_config)

    def validate_rows(self, job: TrainJob, dataset):
        """VALIDATING, before the model loads: raise ValueError naming the bad rows; return the
        dataset to train on (columns selected / order fixed as the method needs)."""
        raise NotImplementedError

    def validate_with_tokenizer(self, job: TrainJob, dataset, tokenizer, out_dir: Path, is_main: bool) -> dict:
        """VALIDATING, with the tokenizer: the checks that need it; returns status.json's `validation`."""
        return {"rows": len(dataset)}

    def method_kwargs(self, job: TrainJob, plan, use_cuda: bool) -> dict[str, Any]:
        """The method's own TRL config fields (after the common ones, before train.trl)."""
        return {}

    def trl_kwargs(self, job: TrainJob, out_dir: Path, plan, use_cuda: bool, report_to: str = "none") -> dict[str, Any]:
        kwargs = common_kwargs(job, out_dir, plan, use_cuda, report_to)
        kwargs.update(self.method_kwargs(job, plan, use_cuda))
        # model_init_kwargs acts where the model is loaded: our own from_pretrained (warmstart.load_policy)
        trl_fields = {name: value for name, value in job.train.trl.items() if name != "model_init_kwargs"}
        kwargs.update(trl_fields)
        return kwargs

    def trainer_kwargs(self) -> dict[str, Any]:
        """The method's own arguments of its trainer (GRPO: the reward function)."""
        return {}

    def build_trainer(self, *, model, args, dataset, tokenizer, peft_config, callbacks):
        """The method's trainer (knobsweep.registry.METHODS) on the run's model, TRL config and rows."""
        trainer = load(method(self.name).trainer)
        return trainer(
            model=model,
            args=args,
            train_dataset=dataset,
            processing_class=tokenizer,
            peft_config=peft_config,
            callbacks=callbacks,
            **self.trainer_kwargs(),
        )

    def dropped_rows(self, job: TrainJob, rows: int, train_rows: int) -> str | None:
        """A warning when the trainer's own preparation left fewer rows than the file had, or None."""
        return None

    def describe(self, job: TrainJob, dataset) -> str:
        """One console line saying what this run trains."""
        return f"{len(dataset)} rows"

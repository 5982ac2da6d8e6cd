"""SFT: TRL's SFTTrainer on sft rows (method "sft").

Rows (the data contract's sft format): `messages` (a whole multi-turn conversation), or
`prompt` + `completion` (messages; the completion is the assistant turn(s)). One form per file.

Which tokens carry the loss:
- prompt/completion rows: the completion only (`train.sft.completion_only_loss: true`, the
  default), or every token (false);
- messages rows: every token; `completion_only_loss` does not apply to them (TRL defines it for
  prompt/completion rows only);
- `assistant_only_loss: true` (either form): the assistant turns only. It needs a chat template
  whose assistant content sits inside `{% generation %}` markers (the tiny model's does), or one
  TRL can patch; VALIDATING rejects it otherwise, naming the reason.
`max_length` truncates each sequence; `packing` packs rows into max_length blocks (TRL's "bfd").
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from knobsweep.spec.schema import SftConfig, TrainJob
from knobsweep.train.callbacks import SFT_COLUMNS
from knobsweep.train.method import Method, message_problem, raise_bad_rows, row_ids

MESSAGES, PROMPT_COMPLETION = "messages", "prompt/completion"


def row_form(row: dict) -> str | None:
    if row.get("messages") is not None:
        return MESSAGES
    if row.get("prompt") is not None or row.get("completion") is not None:
        return PROMPT_COMPLETION
    return None


def _as_list(messages: Any) -> Any:
    return messages.tolist() if hasattr(messages, "tolist") else messages


def row_problem(row: dict, form: str, needs_assistant: bool) -> str | None:
    """Why one sft row cannot be trained on, or None."""
    if form == MESSAGES:
        messages = _as_list(row["messages"])
        if isinstance(messages, str):
            return "messages: text, expected a list of {role, content}"
        problem = message_problem(messages)
        if problem:
            return f"messages: {problem}"
        if any(not isinstance(m.get("role"), str) or not m["role"] for m in messages):
            return "messages: a message without a 'role'"
        if needs_assistant and not any(m["role"] == "assistant" for m in messages):
            return "messages: no assistant message (assistant_only_loss would train on nothing)"
        return None
    for column in ("prompt", "completion"):
        problem = message_problem(_as_list(row.get(column)))
        if problem:
            return f"{column}: {problem}"
    if isinstance(row["prompt"], str) != isinstance(row["completion"], str):
        return "prompt and completion must both be messages (or both text)"
    return None


class SFTMethod(Method):
    name, title = "sft", "SFT"
    columns = SFT_COLUMNS
    summary_keys = ("loss", "mean_token_accuracy", "entropy", "tokens_per_s")

    def __init__(self):
        self.form = ""

    def validate_rows(self, job: TrainJob, dataset):
        options = job.train.sft
        columns = dataset.column_names
        if "messages" not in columns and not {"prompt", "completion"} <= set(columns):
            raise ValueError(
                f"train.parquet: SFT needs a 'messages' column or 'prompt' + 'completion' columns "
                f"(columns: {', '.join(columns)}); set data.format: sft in the experiment"
            )
        wanted = [c for c in ("messages", "prompt", "completion") if c in columns]
        ids = row_ids(dataset)
        forms, bad = {}, []
        for row_id, row in zip(ids, dataset.select_columns(wanted)):
            form = row_form(row)
            problem = (
                row_problem(row, form, options.assistant_only_loss)
                if form
                else "neither messages nor prompt + completion"
            )
            if problem:
                bad.append((row_id, problem))
            else:
                forms.setdefault(form, row_id)
        raise_bad_rows(bad, len(dataset), "no usable sft conversation")
        if len(forms) > 1:
            raise ValueError(
                f"train.parquet: rows mix the sft forms (row {forms[MESSAGES]} has messages, row "
                f"{forms[PROMPT_COMPLETION]} has prompt + completion); use one form per file"
            )
        self.form = next(iter(forms))
        return dataset.select_columns(["messages"] if self.form == MESSAGES else ["prompt", "completion"])

    def conversation(self, row: dict) -> list[dict] | None:
        if self.form == MESSAGES:
            return _as_list(row["messages"])
        prompt, completion = _as_list(row["prompt"]), _as_list(row["completion"])
        return None if isinstance(prompt, str) else prompt + completion

    def validate_with_tokenizer(self, job: TrainJob, dataset, tokenizer, out_dir: Path, is_main: bool) -> dict:
        options = job.train.sft
        first = self.conversation(dataset[0])
        if first is not None and not tokenizer.chat_template:
            raise ValueError(
                "the model's tokenizer has no chat template, so conversational sft rows cannot be "
                "rendered (use a chat model, or text rows)"
            )
        if options.assistant_only_loss:
            self._check_assistant_mask(tokenizer, first)
        return {
            "rows": len(dataset),
            "form": self.form,
            "loss_on": self.loss_on(options),
            "max_length": options.max_length,
            "packing": options.packing,
        }

    def loss_on(self, options: SftConfig) -> str:
        if options.assistant_only_loss:
            return "assistant tokens"
        if self.form == PROMPT_COMPLETION and options.completion_only_loss:
            return "completion tokens"
        return "all tokens"

    @staticmethod
    def _check_assistant_mask(tokenizer, conversation: list[dict] | None) -> None:
        """assistant_only_loss works only if the template marks assistant tokens; reject it here otherwise."""
        from trl.chat_template_utils import get_training_chat_template, has_generation_markers

        prefix = "train.sft.assistant_only_loss: "
        if conversation is None:
            raise ValueError(prefix + "needs conversational rows (messages), but the rows are plain text")
        template = tokenizer.chat_template
        if not has_generation_markers(template):
            try:
                template = get_training_chat_template(tokenizer)
            except Exception as error:  # noqa: BLE001 - TRL knows a fixed list of templates
                template = None
                reason = f"{type(error).__name__}: {error}"
            else:
                reason = "TRL has no training template for it"
            if not template:
                raise ValueError(
                    prefix + "the model's chat template has no {% generation %} markers around "
                    f"assistant content and {reason}; set assistant_only_loss: false"
                )
        rendered = tokenizer.apply_chat_template(
            conversation, chat_template=template, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
        )
        if 1 not in list(rendered.get("assistant_masks") or []):
            raise ValueError(
                prefix + "the chat template marks no assistant token in the first row's conversation "
                "(its {% generation %} markers do not enclose assistant content); "
                "set assistant_only_loss: false"
            )

    def method_kwargs(self, job: TrainJob, plan, use_cuda: bool) -> dict[str, Any]:
        return job.train.sft.model_dump()  # TRL's SFTConfig fields of the same names

    def dropped_rows(self, job: TrainJob, rows: int, train_rows: int) -> str | None:
        options = job.train.sft
        if options.packing or train_rows >= rows:  # packing merges rows: fewer is expected
            return None
        return (
            f"{rows - train_rows} of {rows} rows have no {self.loss_on(options)} left within "
            f"train.sft.max_length={options.max_length} and were dropped; raise max_length to keep them"
        )

    def describe(self, job: TrainJob, dataset) -> str:
        options = job.train.sft
        return (
            f"{len(dataset)} {self.form} rows, loss on {self.loss_on(options)}, "
            f"max_length {options.max_length}, packing {'on' if options.packing else 'off'}"
        )

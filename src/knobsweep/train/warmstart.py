"""Loading the policy a run starts from: the base model, or `train.warm_start_from`.

The training stage gets a directory as --warm-start (the spec resolves a run named in
train.warm_start_from to its results/train/<key>/adapter):
- a PEFT adapter (adapter_config.json + adapter weights): the base is loaded, then
  `PeftModel.from_pretrained(base, adapter, is_trainable=True)`, and training continues that
  adapter (no new LoRA; the adapter's own rank / targets win over model.lora). With
  model.lora null the adapter is merged into the base first, and the merged model is fully
  fine-tuned.
- a full model (config.json + weights): it replaces the base as the starting weights; a new
  LoRA (model.lora) or a full fine-tune trains on top.
A path that is neither fails VALIDATING with the path in the message.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from knobsweep.spec.schema import LoraConfig

ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
MODEL_WEIGHTS = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


def inspect_warm_start(path: str | None) -> str | None:
    """ "adapter", "model", or None (no warm start); ValueError naming the path otherwise."""
    if not path:
        return None
    where = Path(path)
    prefix = f"train.warm_start_from={path}"
    if not where.exists():
        raise ValueError(f"{prefix}: no such file or directory (train that run first, or fix the path)")
    if not where.is_dir():
        raise ValueError(f"{prefix}: not a directory (expected a PEFT adapter or a save_pretrained model directory)")
    if (where / "adapter_config.json").is_file():
        try:
            json.loads((where / "adapter_config.json").read_text())
        except ValueError as error:
            raise ValueError(f"{prefix}: adapter_config.json is not valid JSON ({error})") from None
        if not any((where / name).is_file() for name in ADAPTER_WEIGHTS):
            raise ValueError(f"{prefix}: adapter_config.json but no adapter weights ({' / '.join(ADAPTER_WEIGHTS)})")
        return "adapter"
    if (where / "config.json").is_file():
        if not any((where / name).is_file() for name in MODEL_WEIGHTS):
            raise ValueError(f"{prefix}: config.json but no model weights ({' / '.join(MODEL_WEIGHTS)})")
        return "model"
    found = ", ".join(sorted(p.name for p in where.iterdir())[:8]) or "nothing"
    raise ValueError(
        f"{prefix}: neither a PEFT adapter (adapter_config.json + weights) nor a full model "
        f"(config.json + weights); it holds: {found}"
    )


def load_policy(
    model_path: str, lora: LoraConfig | None, warm_start: str | None, kind: str | None, model_kwargs: dict[str, Any]
):
    """(model, peft_config for the trainer or None, a description for status.json / the console)."""
    from transformers import AutoModelForCausalLM

    from knobsweep.train.method import peft_config

    if kind == "model":
        try:
            model = AutoModelForCausalLM.from_pretrained(warm_start, **model_kwargs)
        except Exception as error:  # noqa: BLE001 - the path belongs in the message
            raise ValueError(
                f"train.warm_start_from={warm_start}: cannot load the model: {type(error).__name__}: {error}"
            ) from error
        return model, peft_config(lora), f"full model {warm_start}"
    model = AutoModelForCausalLM.from_pretrained(model_path, **model_kwargs)
    if kind != "adapter":
        return model, peft_config(lora), ""
    from peft import PeftModel

    try:
        model = PeftModel.from_pretrained(model, warm_start, is_trainable=True)
    except Exception as error:  # noqa: BLE001 - e.g. an adapter trained on another base model
        raise ValueError(
            f"train.warm_start_from={warm_start}: cannot load the adapter onto {model_path}: "
            f"{type(error).__name__}: {error}"
        ) from error
    if lora is None:  # full fine-tune of base + adapter
        return model.merge_and_unload(), None, f"adapter {warm_start}, merged (model.lora is null: full fine-tune)"
    config = model.peft_config["default"]
    return model, None, f"adapter {warm_start} (r={config.r}, alpha={config.lora_alpha}), trained further"


def check_vocabulary(model, tokenizer, warm_start: str | None) -> None:
    """A warm-start model must cover the run's tokenizer (same family / vocabulary)."""
    rows = model.get_input_embeddings().num_embeddings
    if rows < len(tokenizer):
        where = f"train.warm_start_from={warm_start}: " if warm_start else ""
        raise ValueError(
            f"{where}the model has {rows} embedding rows but the tokenizer has {len(tokenizer)} tokens: "
            "not the same model family"
        )


def trainable_fingerprint(model) -> dict:
    """Count and L2 norm of the trainable parameters: status.json's `initial_weights`, so a reader (or a
    test) can see that a warm start began from the adapter it names."""
    import torch

    count, squares = 0, 0.0
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.requires_grad:
                count += parameter.numel()
                squares += float(parameter.detach().float().pow(2).sum())
    return {"trainable_params": count, "l2": squares**0.5}

"""Merge a LoRA adapter into its base model, and prove the merge before writing it.

`python -m knobsweep.merge --base M --adapter A --out OUT [--status STATUS]`

A merged model is what evaluation (and the user) will load, so a silently broken merge
would corrupt every score downstream. The merge is therefore checked on fixed prompts
against the unmerged base+adapter, and against the base itself (an adapter that changes
nothing is a failed training run, not a result). Nothing is written unless every check
passes; verification.json keeps the numbers next to the model.

One exception: a GRPO run that never got a learning signal ends EARLY_STOPPED with `learned: false`
in its status.json (`--status`); its adapter is the untouched initial LoRA, so no merge is attempted:
OUT holds only `not_merged.json` with the run's reason, and evaluation reports the run as not
evaluated. An adapter that changes nothing for any other reason still fails the merge.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

from knobsweep import layout
from knobsweep.io import atomic_dir, atomic_write_json

# Merged and unmerged differ only by float32 rounding (~3e-7 measured); 1e-4 leaves room
# for bigger models while still catching a wrong scale or a missing layer.
LOGIT_ATOL = 1e-4

# Fixed so two merges of the same adapter record comparable numbers.
VERIFY_PROMPTS = (
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many "
    "clips in May. How many clips did Natalia sell altogether?",
    "Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of babysitting. How much did she earn?",
    "#### 42",
)


def skip_reason(status_path: str | Path | None) -> str | None:
    """The run's reason when its status says it never learned, or a rung stopped it (nothing to merge:
    its eval would be spent on an arm already judged worse), else None."""
    if status_path is None:
        return None
    status = json.loads(Path(status_path).read_text())
    if status.get("learned") is False or status.get("stopped_at_rung"):
        return f"{status['state']}: {status.get('reason') or 'the run never updated its weights'}"
    return None


def write_not_merged(out_dir: str | Path, reason: str) -> None:
    with atomic_dir(out_dir) as tmp:
        atomic_write_json(tmp / layout.NOT_MERGED, {"reason": reason})


class MergeError(RuntimeError):
    """The adapter could not be merged, or the merged model failed verification."""


def _load_model(name_or_path: str | Path) -> torch.nn.Module:
    # float32 on CPU: the merge adds small LoRA deltas, which bf16 would round away.
    model = AutoModelForCausalLM.from_pretrained(str(name_or_path), dtype=torch.float32)
    return model.to("cpu").eval()


def _load_tokenizer(adapter_path: str | Path, base_path: str | Path):
    # Training saves its tokenizer next to the adapter (it may add a chat template or pad
    # token); a bare adapter dir falls back to the base's tokenizer.
    try:
        return AutoTokenizer.from_pretrained(str(adapter_path))
    except (OSError, ValueError):
        return AutoTokenizer.from_pretrained(str(base_path))


@torch.no_grad()
def _logits(model: torch.nn.Module, encoded: list[torch.Tensor]) -> list[torch.Tensor]:
    # One prompt at a time: no padding, so every position is a real token to compare.
    return [model(input_ids=ids).logits.float() for ids in encoded]


def _max_abs_diff(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    # NaN propagates (torch.max keeps it), so a NaN model can never pass a `<=` check.
    return max(float((x - y).abs().max()) for x, y in zip(a, b))


def _shapes(model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {name: tuple(p.shape) for name, p in model.named_parameters()}


def merge_adapter_into_base(base_path: str | Path, adapter_path: str | Path, out_dir: str | Path) -> dict:
    """Merge `adapter_path` into `base_path`, verify, save to `out_dir`; return the numbers.

    Raises MergeError (and writes nothing) when the adapter does not load or a check fails.
    """
    tokenizer = _load_tokenizer(adapter_path, base_path)
    encoded = [tokenizer(text, return_tensors="pt", add_special_tokens=False).input_ids for text in VERIFY_PROMPTS]

    # PeftModel wraps (and merge_and_unload rewrites) the base in place, so everything
    # about the pristine base is measured before the adapter touches it.
    model = _load_model(base_path)
    base_shapes = _shapes(model)
    base_count = sum(p.numel() for p in model.parameters())
    base_logits = _logits(model, encoded)

    try:
        peft_model = PeftModel.from_pretrained(model, str(adapter_path))
    except Exception as exc:  # PEFT raises many types (size mismatch, missing modules...)
        raise MergeError(
            f"adapter {adapter_path} does not load onto base {base_path}: {type(exc).__name__}: {exc}"
        ) from exc
    adapter_logits = _logits(peft_model.eval(), encoded)
    merged = peft_model.merge_and_unload()
    merged_logits = _logits(merged, encoded)

    merged_shapes = _shapes(merged)
    merged_count = sum(p.numel() for p in merged.parameters())
    lora_keys = [key for key in merged.state_dict() if "lora_" in key]
    numbers = {
        "max_abs_logit_diff_merged_vs_adapter": _max_abs_diff(merged_logits, adapter_logits),
        "max_abs_logit_diff_merged_vs_base": _max_abs_diff(merged_logits, base_logits),
        "param_count_base": base_count,
        "param_count_merged": merged_count,
        "shapes_equal": merged_shapes == base_shapes,
    }

    problems = []
    if not numbers["max_abs_logit_diff_merged_vs_adapter"] <= LOGIT_ATOL:
        problems.append(
            "merged logits differ from base+adapter by "
            f"{numbers['max_abs_logit_diff_merged_vs_adapter']:.3g} (allowed <= {LOGIT_ATOL})"
        )
    if not all(torch.isfinite(x).all() for x in merged_logits):
        problems.append("merged logits contain NaN or Inf")
    if merged_count != base_count:
        problems.append(f"parameter count {merged_count} != base's {base_count}")
    if not numbers["shapes_equal"]:
        changed = sorted(set(base_shapes.items()) ^ set(merged_shapes.items()))[:5]
        problems.append(f"parameter names/shapes differ from the base's, e.g. {changed}")
    if lora_keys:
        problems.append(f"{len(lora_keys)} LoRA keys left after merging, e.g. {lora_keys[0]}")
    if not numbers["max_abs_logit_diff_merged_vs_base"] > 0:
        problems.append(
            "merged logits equal the base's (max abs diff "
            f"{numbers['max_abs_logit_diff_merged_vs_base']}): the adapter changes nothing"
        )
    if problems:
        raise MergeError(f"merging {adapter_path} into {base_path} failed verification: " + "; ".join(problems))

    numbers.update(
        base=str(base_path),
        adapter=str(adapter_path),
        logit_atol=LOGIT_ATOL,
        prompts=len(VERIFY_PROMPTS),
    )
    with atomic_dir(out_dir) as tmp:
        merged.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        # What evaluation will load is the saved copy, so check it round-trips too.
        reloaded = _logits(_load_model(tmp), encoded)
        numbers["max_abs_logit_diff_reloaded_vs_merged"] = _max_abs_diff(reloaded, merged_logits)
        if not numbers["max_abs_logit_diff_reloaded_vs_merged"] <= LOGIT_ATOL:
            raise MergeError(
                f"the saved merged model does not reload identically: logits differ by "
                f"{numbers['max_abs_logit_diff_reloaded_vs_merged']:.3g}"
            )
        atomic_write_json(tmp / layout.VERIFICATION, numbers)
    return numbers


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m knobsweep.merge", description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="base model: hub id or local path")
    parser.add_argument("--adapter", required=True, help="PEFT adapter directory")
    parser.add_argument("--out", required=True, help="output directory for the merged model")
    parser.add_argument("--status", help="the training run's status.json: a run that never learned is not merged")
    args = parser.parse_args(argv)
    skipped = skip_reason(args.status)
    if skipped:
        write_not_merged(args.out, skipped)
        print(f"not merged: {skipped} -> {Path(args.out) / layout.NOT_MERGED}")
        return 0
    try:
        numbers = merge_adapter_into_base(args.base, args.adapter, args.out)
    except MergeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(
        f"merged {args.adapter} into {args.base} -> {args.out}: "
        f"|merged - adapter| = {numbers['max_abs_logit_diff_merged_vs_adapter']:.2g}, "
        f"|merged - base| = {numbers['max_abs_logit_diff_merged_vs_base']:.3g}, "
        f"{numbers['param_count_merged']} parameters"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

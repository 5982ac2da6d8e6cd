"""The vLLM paths at a real model's size on one CUDA GPU (a check that prints figures; `bench/gpu_check.sh`
installs first, then runs this).

    python bench/gpu_check.py [--rows 200] [--max-tokens 256] [--grpo-steps 20] [--grpo-batch 4]
                              [--grpo-max-tokens 256] [--skip-grpo-off] [--keep DIR] [--smoke]

No hub download: the model is Qwen2.5-0.5B-Instruct's architecture (QWEN2_5_0_5B below: 24 layers, hidden
896, 14 heads of 64, 2 KV heads, vocab 151,936, tied embeddings) with random weights in bf16, and its
tokenizer is the tiny model's byte-level BPE (trained on the GSM8K slice in data/gsm8k) padded with
byte-string tokens to the full vocabulary, so the logits, the embedding and every id the random model
samples are real-sized and decodable. Then, with bench/vllm_vs_hf.py's measurements:

1. the eval stage on hf and on vllm (greedy, bf16 on both): tokens/s and their ratio, vLLM's engine
   start-up, each stage's wall time, greedy agreement, the break-even eval size;
2. --grpo-steps GRPO steps through the train stage (accelerate launch, bf16, LoRA r=8) with vLLM colocate,
   and the same with transformers generation (unless --skip-grpo-off): median step time and ratio, and
   the time before the first step.

--smoke checks this script where there is no GPU: a 2-layer model with an 8,192-token vocabulary, 8 eval
prompts and 4 GRPO steps, on whatever device the stages find (the CPU: float32, vLLM's CPU build).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(BENCH))

# Qwen/Qwen2.5-0.5B-Instruct's config.json (the shape; the weights here are random).
QWEN2_5_0_5B = dict(
    hidden_size=896,
    intermediate_size=4864,
    num_hidden_layers=24,
    num_attention_heads=14,
    num_key_value_heads=2,
    vocab_size=151936,
    max_position_embeddings=32768,
    rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
    rms_norm_eps=1e-6,
    tie_word_embeddings=True,
    use_sliding_window=False,
)
SMOKE = dict(num_hidden_layers=2, vocab_size=8192)


def padded_tokenizer(texts: list[str], vocab_size: int):
    """The tiny model's tokenizer (trained on `texts`) with byte-string tokens added up to `vocab_size` ids.

    The added tokens are never produced by encoding (no merge makes them) but decode to bytes, like the
    rare tokens of a real vocabulary, so every id a random model samples has a text.
    """
    from tokenizers import Tokenizer, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from knobsweep.models.tiny import train_tokenizer

    tokenizer = train_tokenizer(texts)
    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    vocab = spec["model"]["vocab"]
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    code = 0
    while len(vocab) < vocab_size:
        token = "".join(alphabet[(code >> shift) % 256] for shift in (16, 8, 0))
        vocab.setdefault(token, len(vocab))
        code += 1
    return PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(json.dumps(spec)),
        eos_token=tokenizer.eos_token,
        pad_token=tokenizer.pad_token,
        padding_side="left",
        chat_template=tokenizer.chat_template,
        model_max_length=QWEN2_5_0_5B["max_position_embeddings"],
    )


def build_model(texts: list[str], out: Path, shape: dict) -> Path:
    """A random Qwen2 causal LM of `shape` in bf16 with its padded tokenizer, saved as a hub model would be."""
    import torch
    from transformers import AutoModelForCausalLM, Qwen2Config

    from knobsweep.models.tiny import IM_START

    tokenizer = padded_tokenizer(texts, shape["vocab_size"])
    config = Qwen2Config(
        **shape,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.convert_tokens_to_ids(IM_START),
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    tokenizer.save_pretrained(out)
    model.save_pretrained(out)
    params = sum(p.numel() for p in model.parameters())
    print(f"model: {out.name}, {params / 1e6:.0f}M parameters (bf16), vocab {len(tokenizer):,}")
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=200, help="eval prompts")
    parser.add_argument("--max-tokens", type=int, default=256, help="eval max_tokens")
    parser.add_argument("--grpo-steps", type=int, default=20)
    parser.add_argument("--grpo-batch", type=int, default=4, help="prompts per GRPO step (n=4 completions each)")
    parser.add_argument("--grpo-max-tokens", type=int, default=256)
    parser.add_argument("--skip-grpo-off", action="store_true", help="GRPO with vLLM colocate only")
    parser.add_argument("--keep", type=Path, help="keep the model, data and stage outputs in this folder")
    parser.add_argument("--smoke", action="store_true", help="a 2-layer version that runs anywhere (checks the script)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.rows, args.max_tokens, args.grpo_steps, args.grpo_batch, args.grpo_max_tokens = 8, 16, 4, 2, 16
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch
    from vllm_vs_hf import compare_eval, compare_grpo

    from knobsweep.data import convert_to_dir
    from knobsweep.models.tiny import texts_from_parquet
    from knobsweep.resources import launch_args
    from knobsweep.vllm_env import installed_version

    cuda = torch.cuda.is_available()
    if not cuda and not args.smoke:
        print("bench/gpu_check.py needs a CUDA GPU (--smoke checks the script itself on a CPU)", file=sys.stderr)
        return 2
    device = torch.cuda.get_device_name(0) if cuda else f"CPU ({os.cpu_count()} cores)"
    print(f"{device}; torch {torch.__version__}; {installed_version() or 'vLLM not installed'}")
    launcher = ["-m", "accelerate.commands.launch", *shlex.split(launch_args(1 if cuda else 0))]
    env = dict(os.environ)
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        convert_to_dir(
            {
                "source": "gsm8k",
                "path": str(REPO / "data" / "gsm8k"),
                "train_size": args.grpo_batch * args.grpo_steps,
                "eval_size": args.rows,
            },
            root / "data",
        )
        shape = {**QWEN2_5_0_5B, **(SMOKE if args.smoke else {})}
        model = build_model(
            texts_from_parquet(root / "data" / "train.parquet"),
            root / ("qwen2.5-0.5b-shape-smoke" if args.smoke else "qwen2.5-0.5b-shape"),
            shape,
        )
        compare_eval(model, root / "data", root, args.max_tokens, env)
        modes = ("colocate",) if args.skip_grpo_off else ("off", "colocate")
        compare_grpo(model, root / "data", root, modes, args.grpo_batch, args.grpo_max_tokens, launcher, env)
        print(f"\ngpu_check finished in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

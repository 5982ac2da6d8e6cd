"""The tiny offline model: a BPE tokenizer trained on the data plus a random Qwen3.

The hub is unreachable in tests and in the demo, so they build this model locally and load
it through the same `from_pretrained` path a real hub model takes. Same texts and seed give
the same tokenizer and the same weights, so its output directory can be cached by key.

    python -m knobsweep.models.tiny --data results/data/<dkey> --out results/models/tiny-<mkey>
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from pathlib import Path

from knobsweep import layout
from knobsweep.io import atomic_dir

VOCAB_SIZE = 1024
PAD, IM_START, EOS = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
SPECIAL_TOKENS = [PAD, IM_START, EOS]

# ChatML. `{% generation %}` marks assistant content so TRL's assistant_only_loss works.
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- if message['role'] == 'assistant' %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- generation %}{{- message['content'] + '<|im_end|>' }}{%- endgeneration %}"
    "{{- '\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

# 230k parameters: big enough to learn a format in a few hundred CPU steps, small enough
# that a GRPO step takes well under a second on one core.
MODEL_SHAPE = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=32,  # vLLM's CPU attention has no kernel for head_dim 16
    max_position_embeddings=2048,
    tie_word_embeddings=False,
)


def train_tokenizer(texts: Iterable[str]):
    """A byte-level BPE tokenizer (vocab 1024) with ChatML specials, as a fast HF tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        eos_token=EOS,
        pad_token=PAD,
        padding_side="left",  # batched generation continues from the right edge
        chat_template=CHAT_TEMPLATE,
        model_max_length=MODEL_SHAPE["max_position_embeddings"],
    )


def build_model(tokenizer, seed: int = 0):
    """A Qwen3 causal LM with the tiny shape and seeded random weights."""
    import torch
    from transformers import AutoModelForCausalLM, Qwen3Config

    config = Qwen3Config(
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.convert_tokens_to_ids(IM_START),
        eos_token_id=tokenizer.eos_token_id,
        **MODEL_SHAPE,
    )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    with torch.no_grad():
        # The default init (std 0.02, sized for hidden ~1000) leaves this model unlearnable by
        # LoRA, which cannot touch lm_head or the embeddings: logits stay within about +-1.3 and
        # hidden states have no shared component to act as a bias, so no adapter can raise one
        # token's probability in every context. Trained LMs have both large logits and a shared
        # embedding direction; give the random model the same, so GRPO has something to move.
        hidden = config.hidden_size
        model.lm_head.weight.normal_(0.0, hidden**-0.5)
        embed = model.get_input_embeddings().weight
        embed += torch.randn(hidden) * embed.std()
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def build_tiny_model(texts: Iterable[str], out_dir: str | Path, seed: int = 0) -> Path:
    """Train the tokenizer on `texts`, build the model, save both into `out_dir` atomically."""
    tokenizer = train_tokenizer(texts)
    model = build_model(tokenizer, seed)
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        tokenizer.save_pretrained(tmp)
        model.save_pretrained(tmp)
    return out_dir


# Columns whose text the tiny tokenizer learns from, in every row format (docs/contracts.md).
MESSAGE_COLUMNS = ("prompt", "messages", "completion")
TEXT_COLUMNS = ("answer", "completion")


def texts_from_parquet(path: str | Path) -> list[str]:
    """All text of a train data file: every message's content (prompt, messages, completion) and
    the reference answer, in whichever of those columns the row format has."""
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    texts = []
    for row in table.select(
        [c for c in dict.fromkeys((*MESSAGE_COLUMNS, *TEXT_COLUMNS)) if c in table.column_names]
    ).to_pylist():
        for value in row.values():
            if isinstance(value, str):
                texts.append(value)
            elif isinstance(value, list):
                texts.extend(str(message.get("content") or "") for message in value if isinstance(message, dict))
    if not texts:
        raise ValueError(
            f"{path}: no text to train the tiny tokenizer on (columns: {', '.join(table.column_names)}; "
            f"expected some of {', '.join(dict.fromkeys((*MESSAGE_COLUMNS, *TEXT_COLUMNS)))})"
        )
    return texts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m knobsweep.models.tiny", description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True, help="data stage directory holding train.parquet")
    parser.add_argument("--out", required=True, help="output directory (save_pretrained format)")
    parser.add_argument("--seed", type=int, default=0, help="seed for the random weights")
    args = parser.parse_args(argv)
    train_file = Path(args.data) / layout.TRAIN_ROWS
    if not train_file.is_file():
        parser.error(f"--data {args.data}: no train.parquet there (run the data stage first)")
    out = build_tiny_model(texts_from_parquet(train_file), args.out, seed=args.seed)
    print(f"tiny model written to {out}")


if __name__ == "__main__":
    main()

"""The transformers backend: batched `generate`, left padded, on CPU or one GPU."""

from __future__ import annotations

import time

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

from knobsweep.evaluate import Generations


def _eos_ids(tokenizer, model) -> set[int]:
    # Chat models often end a turn with a token other than the tokenizer's eos
    # (Qwen2.5: <|im_end|> and <|endoftext|>); stop at any of them.
    ids = model.generation_config.eos_token_id
    ids = set(ids if isinstance(ids, list) else [ids] if ids is not None else [])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    if not ids:
        raise ValueError("the tokenizer and the model's generation config name no eos token")
    return ids


def generate(
    model_name: str,
    conversations: list[list[dict]],
    *,
    temperature: float,
    top_p: float,
    max_tokens: int,
    samples: int,
    batch_size: int,
    seed: int,
) -> Generations:
    """`samples` completions per conversation; `batch_size` prompts per generate call."""
    cuda = torch.cuda.is_available()
    tokenizer = AutoTokenizer.from_pretrained(model_name)
    # float32 on CPU (the precision the merge was verified in); the checkpoint's dtype on a GPU.
    model = (
        AutoModelForCausalLM.from_pretrained(model_name, dtype="auto" if cuda else torch.float32)
        .to("cuda" if cuda else "cpu")
        .eval()
    )

    eos_ids = _eos_ids(tokenizer, model)
    pad_id = tokenizer.pad_token_id
    if pad_id is None:  # e.g. Llama tokenizers: pad positions are masked, any id will do
        pad_id = min(eos_ids)
    sampling = temperature > 0
    # A fresh config replaces the checkpoint's own defaults (Qwen ships top_k=20 and a
    # repetition penalty), so the eval knobs alone decide decoding, as with vLLM.
    model.generation_config = GenerationConfig(
        max_new_tokens=max_tokens,
        do_sample=sampling,
        num_return_sequences=samples,
        eos_token_id=sorted(eos_ids),
        pad_token_id=pad_id,
        **({"temperature": temperature, "top_p": top_p, "top_k": 0} if sampling else {}),
    )

    encoded = [
        tokenizer.apply_chat_template(conversation, add_generation_prompt=True, tokenize=True, return_dict=False)
        for conversation in conversations
    ]
    # Similar lengths share a batch (less padding); results go back to prompt order.
    # Padding is on the left, so every row's generation continues from its last prompt token.
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    completions: list[list[str]] = [[] for _ in encoded]
    tokens = 0

    torch.manual_seed(seed)
    started = time.perf_counter()
    for start in range(0, len(order), batch_size):
        batch = order[start : start + batch_size]
        width = max(len(encoded[i]) for i in batch)
        input_ids = torch.tensor([[pad_id] * (width - len(encoded[i])) + list(encoded[i]) for i in batch])
        attention_mask = torch.tensor([[0] * (width - len(encoded[i])) + [1] * len(encoded[i]) for i in batch])
        with torch.no_grad():
            output = model.generate(
                input_ids=input_ids.to(model.device), attention_mask=attention_mask.to(model.device)
            )
        # Rows come back as prompt 0's samples, then prompt 1's, ...
        for row, sequence in enumerate(output[:, width:].tolist()):
            stop = next((j for j, t in enumerate(sequence) if t in eos_ids), None)
            tokens += len(sequence) if stop is None else stop + 1
            text = tokenizer.decode(sequence[:stop], skip_special_tokens=True)
            completions[batch[row // samples]].append(text)
    return Generations(completions, tokens, time.perf_counter() - started)

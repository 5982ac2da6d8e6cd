"""The vLLM backend (GPU, `gpu` extra). vllm is imported only when this backend runs, so
the package installs and imports without it (it pins its own torch, see notes/ml-stack.md)."""

from __future__ import annotations

import time

from knobsweep.evaluate import Generations

MISSING = "backend vllm needs the gpu extra: pip install knobsweep[gpu]"


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
    """`samples` completions per conversation. `batch_size` is not used: vLLM schedules
    its own continuous batches, which is faster than any fixed size."""
    try:
        from vllm import LLM, SamplingParams
    except ImportError as exc:
        raise RuntimeError(MISSING) from exc

    llm = LLM(model=model_name, seed=seed)
    # Explicit params (not llm.get_default_sampling_params()), so the checkpoint's
    # generation_config.json cannot add top_k or a repetition penalty, as with the hf backend.
    params = SamplingParams(n=samples, temperature=temperature, top_p=top_p, max_tokens=max_tokens)
    started = time.perf_counter()
    outputs = llm.chat(conversations, sampling_params=params, add_generation_prompt=True, use_tqdm=False)
    generate_s = time.perf_counter() - started
    return Generations(
        completions=[[choice.text for choice in out.outputs] for out in outputs],
        completion_tokens=sum(len(choice.token_ids) for out in outputs for choice in out.outputs),
        generate_s=generate_s,
    )

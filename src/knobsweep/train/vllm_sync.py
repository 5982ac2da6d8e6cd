"""GRPO with colocated vLLM on a CPU: the weight sync goes through vLLM's in-place reload.

TRL 1.16 pushes the training weights into its colocated engine one tensor at a time with the vLLM
model's `load_weights`. vLLM's CPU build cannot take that. After loading a checkpoint, its unquantized
linear layers hand their weights to a packed CPU kernel (oneDNN, or the SGL kernel for small ones) and
replace `layer.weight` with an empty Parameter that has no `weight_loader`
(`UnquantizedLinearMethod.process_weights_after_loading` -> `dispatch_cpu_unquantized_gemm(layer,
remove_weight=True)`, on `current_platform.is_cpu()` only). So the first sync fails with
"'Parameter' object has no attribute 'weight_loader'"; and a loader alone would not help, since the
kernels read the packed copy. A GPU keeps its weights and loaders, and TRL's sync works there.

vLLM's model runner has the operation a sync needs: `reload_weights(weights_iterator=...)` puts each
layer back in its checkpoint form, loads the new weights and packs them again. On a CPU we sync through
it, with the same weights (LoRA merged, PEFT names mapped to the base model's) that TRL would send.
"""

from __future__ import annotations

import types


def sync_through_reload_on_cpu(generation) -> None:
    """Make a colocated TRL `VLLMGeneration` on a CPU sync its weights with vLLM's reload."""
    from vllm.platforms import current_platform

    if generation.mode == "colocate" and current_platform.is_cpu():
        generation.sync_weights = types.MethodType(_reload_weights, generation)


def _reload_weights(generation) -> None:
    """TRL's `sync_weights` (colocate), loading through the model runner's in-place reload."""
    runner = generation.llm.llm_engine.model_executor.driver_worker.model_runner
    # Copies: TRL merges the LoRA into the base weights in place while it yields them and unmerges after
    # the last one, and vLLM may finish a layer (reading its buffered tensors) only after that.
    weights = ((name, tensor.detach().clone()) for name, tensor in generation._iter_named_params())
    runner.reload_weights(weights_iterator=weights)
    generation.llm.reset_prefix_cache()

"""TRL's trainers with knobsweep's filtering and safety hooks (imports TRL: load lazily).

Every method's trainer stops the run on a non-finite loss before backward
(`FiniteLossMixin.compute_loss`), so no NaN reaches the weights or a checkpoint. GRPO also hooks
into TRL 1.16, all through methods GRPOTrainer already has:
- `_calculate_rewards` keeps the gathered (all processes) reward matrix of the generation batch;
- `_generate_and_score_completions` (called once per generation batch, before TRL shuffles and
  splits it into steps) drops the rows of zero-variance groups and invalid samples
  (`filtering.filter_batch`) and logs `filtered_group_rate` / `filtered_sample_rate`;
"""

from __future__ import annotations

import os

import torch
from trl import GRPOTrainer, KTOTrainer, SFTTrainer

from knobsweep.train.filtering import filter_batch, group_keep_mask
from knobsweep.train.callbacks import any_process
from knobsweep.train.health import NonFiniteError

# Test hook: make the loss NaN at this optimizer step (1-based), to exercise the FAILED path; with
# NAN_ONLY_IN_ENV set, only in runs whose output directory contains that text (one run of a sweep).
NAN_AT_STEP_ENV = "KNOBSWEEP_TEST_NAN_AT_STEP"
NAN_ONLY_IN_ENV = "KNOBSWEEP_TEST_NAN_ONLY_IN"
NAN_RANK_ENV = "KNOBSWEEP_TEST_NAN_RANK"  # and with this set, only on that process


class FiniteLossMixin:
    """Raises NonFiniteError on a NaN / Inf loss, before backward (and before any checkpoint takes it)."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        result = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        loss = result[0] if isinstance(result, tuple) else result
        nan_at = os.environ.get(NAN_AT_STEP_ENV)
        if (nan_at and self.model.training and self.state.global_step + 1 == int(nan_at)
                and os.environ.get(NAN_ONLY_IN_ENV, "") in str(self.args.output_dir)
                and os.environ.get(NAN_RANK_ENV, str(self.args.process_index)) == str(self.args.process_index)):
            loss = loss * torch.nan
            result = (loss, *result[1:]) if isinstance(result, tuple) else loss
        finite = bool(torch.isfinite(loss.detach()).all())
        if any_process(not finite, loss.device):
            step = self.state.global_step + 1
            where = f"loss is {loss.detach().float().mean().item()}" if not finite else "another process's loss is not finite"
            raise NonFiniteError(f"{where} at step {step}", step)
        return result


class KnobsweepSFTTrainer(FiniteLossMixin, SFTTrainer):
    pass


class KnobsweepKTOTrainer(FiniteLossMixin, KTOTrainer):
    pass


class KnobsweepGRPOTrainer(FiniteLossMixin, GRPOTrainer):
    def __init__(self, *args, filter_groups: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        if self.use_vllm:  # vLLM's CPU build cannot take TRL's weight sync (train/vllm_sync.py)
            from knobsweep.train.vllm_sync import sync_through_reload_on_cpu

            sync_through_reload_on_cpu(self.vllm_generation)
        self.filter_groups = filter_groups
        self._batch_rewards: torch.Tensor | None = None
        self.epoch_groups = 0  # groups generated / filtered in the current epoch (reset by the callback)
        self.epoch_filtered = 0

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        weights = self.reward_weights.to(rewards_per_func.device).unsqueeze(0)
        rewards = (rewards_per_func * weights).nansum(dim=1)
        rewards[torch.isnan(rewards_per_func).all(dim=1)] = torch.nan  # unscorable = invalid
        self._batch_rewards = rewards
        return rewards_per_func

    def _generate_and_score_completions(self, inputs):
        output = super()._generate_and_score_completions(inputs)
        rewards, self._batch_rewards = self._batch_rewards, None
        if not self.model.training or rewards is None:  # evaluation batches are scored, not trained on
            return output
        keep_all, filtered, groups = group_keep_mask(rewards, self.num_generations)
        mode = "train"
        self._metrics[mode]["filtered_group_rate"].append(filtered / groups)
        self._metrics[mode]["filtered_sample_rate"].append(1.0 - keep_all.float().mean().item())
        self.epoch_groups += groups
        self.epoch_filtered += filtered
        if not self.filter_groups:
            return output
        local = output["completion_mask"].size(0)
        start = self.accelerator.process_index * local
        keep = keep_all[start:start + local]
        # Dropping rows changes the batch size; TRL splits a generation batch into
        # steps_per_generation equal slices afterwards, so then mask the rows instead.
        drop_rows = self.args.steps_per_generation == 1 and "pixel_values" not in output
        return filter_batch(output, keep, drop_rows,
                            total_items=lambda n: self.accelerator.gather(n.reshape(1)).sum())

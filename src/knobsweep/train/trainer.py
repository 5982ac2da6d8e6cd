"""TRL's trainers with knobsweep's filtering and safety hooks (imports TRL: load lazily).

Every method's trainer stops the run on a non-finite loss before backward
(`FiniteLossMixin.compute_loss`), so no NaN reaches the weights or a checkpoint. GRPO also hooks
into TRL 1.16, all through methods GRPOTrainer already has:
- `_calculate_rewards` keeps the gathered (all processes) reward matrix of the generation batch;
- `_generate_and_score_completions` (called once per generation batch, before TRL shuffles and
  splits it into steps) drops the rows of zero-variance groups and invalid samples
  (`filtering.filter_batch`) and logs `filtered_group_rate` / `filtered_sample_rate`;
- `_get_train_sampler` returns TRL's RepeatSampler with the epoch's order made a function of
  (seed, epoch) (`EpochRepeatSampler`), so a run resumed in epoch 2 or later sees the order an
  uninterrupted run sees;
- `_compute_loss` and `log` leave out what was not computed: on a micro-batch with no token left
  (every group filtered) TRL would log entropy, KL and clip ratios as 0, and on a step with no
  token trained the loss and grad norm are 0 by construction; they are absent from that step's
  metrics instead (a gap in the curves, never a reading of 0 in the health checks).
"""

from __future__ import annotations

import math
import os

import torch
from trl import GRPOTrainer, KTOTrainer, SFTTrainer
from trl.trainer.utils import RepeatSampler

from knobsweep.train.callbacks import any_process
from knobsweep.train.filtering import filter_batch, group_keep_mask
from knobsweep.train.health import NonFiniteError

# Test hook: make the loss NaN at this optimizer step (1-based), to exercise the FAILED path; with
# NAN_ONLY_IN_ENV set, only in runs whose output directory contains that text (one run of a sweep).
NAN_AT_STEP_ENV = "KNOBSWEEP_TEST_NAN_AT_STEP"
NAN_ONLY_IN_ENV = "KNOBSWEEP_TEST_NAN_ONLY_IN"
NAN_RANK_ENV = "KNOBSWEEP_TEST_NAN_RANK"  # and with this set, only on that process
# What TRL's _compute_loss logs that is a setting, not a measurement of the batch: kept on empty batches.
SETTINGS_LOGGED = ("entropy_coef",)
# Step-level values of the Trainer that are 0 by construction when no token was trained on.
STEP_VALUES_OF_THE_LOSS = ("loss", "grad_norm")


class FiniteLossMixin:
    """Raises NonFiniteError on a NaN / Inf loss, before backward (and before any checkpoint takes it)."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        result = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        loss = result[0] if isinstance(result, tuple) else result
        nan_at = os.environ.get(NAN_AT_STEP_ENV)
        if (
            nan_at
            and self.model.training
            and self.state.global_step + 1 == int(nan_at)
            and os.environ.get(NAN_ONLY_IN_ENV, "") in str(self.args.output_dir)
            and os.environ.get(NAN_RANK_ENV, str(self.args.process_index)) == str(self.args.process_index)
        ):
            loss = loss * torch.nan
            result = (loss, *result[1:]) if isinstance(result, tuple) else loss
        finite = bool(torch.isfinite(loss.detach()).all())
        if any_process(not finite, loss.device):
            step = self.state.global_step + 1
            where = (
                f"loss is {loss.detach().float().mean().item()}"
                if not finite
                else "another process's loss is not finite"
            )
            raise NonFiniteError(f"{where} at step {step}", step)
        return result


class KnobsweepSFTTrainer(FiniteLossMixin, SFTTrainer):
    pass


class KnobsweepKTOTrainer(FiniteLossMixin, KTOTrainer):
    pass


class EpochRepeatSampler(RepeatSampler):
    """TRL's RepeatSampler, whose generator is seeded once and advanced by each epoch's shuffle: a
    resumed run builds a fresh one, so without this its epochs 2, 3, ... repeated epoch 1's order.

    Here epoch e draws the (e+1)-th permutation of a generator seeded with `seed`, the order an
    uninterrupted TRL run sees; the trainer names the epoch (`set_epoch`) before each one."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        if self.shuffle and self.seed is not None:
            self.generator.manual_seed(self.seed)
            for _ in range(self.epoch):
                torch.randperm(self.num_samples, generator=self.generator)
        self.epoch += 1  # an epoch nobody names follows this one
        yield from super().__iter__()


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
        self._tokens_since_log = 0.0  # completion tokens trained on (all processes) since the last log
        self._batches_since_log = 0

    def _get_train_sampler(self, dataset=None):
        sampler = super()._get_train_sampler(dataset)
        self._train_sampler = EpochRepeatSampler(
            data_source=sampler.data_source,
            mini_repeat_count=sampler.mini_repeat_count,
            batch_size=sampler.batch_size,
            repeat_count=sampler.repeat_count,
            shuffle=sampler.shuffle,
            seed=sampler.seed,
        )
        return self._train_sampler

    def _run_epoch(self, *args, epoch: int, **kwargs):
        # accelerate's set_epoch does not reach a sampler under a skipped-and-sharded loader (a
        # multi-process resume mid-epoch), so name the epoch here, before the loader is iterated.
        self._train_sampler.set_epoch(epoch)
        return super()._run_epoch(*args, epoch=epoch, **kwargs)

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
        keep = keep_all[start : start + local]
        # Dropping rows changes the batch size; TRL splits a generation batch into
        # steps_per_generation equal slices afterwards, so then mask the rows instead.
        drop_rows = self.args.steps_per_generation == 1 and "pixel_values" not in output
        # Several processes: TRL gathers per-row values (clip ratios), which needs the same row count on
        # every process, so each keeps as many rows as the process keeping most (the rest inert rows).
        rows = int(keep_all.view(-1, local).sum(dim=1).max()) if self.accelerator.num_processes > 1 else None
        return filter_batch(
            output, keep, drop_rows, total_items=lambda n: self.accelerator.gather(n.reshape(1)).sum(), rows=rows
        )

    def _compute_loss(self, model, inputs):
        mode = "train" if self.model.training else "eval"
        before = {name: len(values) for name, values in self._metrics[mode].items()}
        loss = super()._compute_loss(model, inputs)
        mask = (
            inputs["completion_mask"] if "tool_mask" not in inputs else inputs["completion_mask"] * inputs["tool_mask"]
        )
        # Every process takes part in the reduce, so the decision is the same on all of them.
        tokens = self.accelerator.reduce(mask.sum().float().detach().reshape(1), reduction="sum").item()
        if mode == "train":
            self._tokens_since_log += tokens
            self._batches_since_log += 1
        if tokens == 0:  # nothing measured: NaN, which TRL's log() leaves out of the step's mean
            for name, values in self._metrics[mode].items():
                if name not in SETTINGS_LOGGED and len(values) > before.get(name, 0):
                    values[-1] = math.nan
        return loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if self.model.training and "train_runtime" not in logs:
            if self._batches_since_log and self._tokens_since_log == 0:
                for name in STEP_VALUES_OF_THE_LOSS:
                    logs.pop(name, None)
            self._tokens_since_log, self._batches_since_log = 0.0, 0
        super().log(logs, start_time)

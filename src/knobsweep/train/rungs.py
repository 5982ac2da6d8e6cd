"""Training in segments that end at a rung (early_stop), and the end of a run a rung stopped.

A segment trains with the whole run's schedule (the Trainer plans every step of the run: its
learning-rate schedule, epochs and data order are the uninterrupted run's) and stops after the
rung's step, saving a checkpoint there; the next segment, or the run's final training job, resumes
from it as it would after a preemption (knobsweep.train.lifecycle). The rung's adapter is copied
beside the segment's record (results/rungs/<key>/), so the rung eval reads it after later
checkpoints have rotated it out.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

from transformers import TrainerCallback

from knobsweep import layout
from knobsweep.io import atomic_dir, atomic_write_json

# What a checkpoint holds of the policy (PEFT adapter or full model) and its tokenizer: the rung's model.
MODEL_FILES = ("adapter_model.safetensors", "adapter_config.json", "model.safetensors", "config.json")


class RungStop(TrainerCallback):
    """Ends the training loop after optimizer step `step`, with a checkpoint of that step."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= self.step:
            control.should_save = True
            control.should_training_stop = True


def planned_steps(trainer) -> int:
    """The optimizer steps the Trainer plans for the whole run (max_steps, as train() computes it)."""
    return int(trainer.set_initial_training_values(trainer.args, trainer.get_train_dataloader())[-1])


def generation_period(args) -> int:
    """Optimizer steps between two GRPO generations: a segment must end where one starts, since a
    resumed trainer generates anew on its first step (its buffer of generated batches is not saved).
    1 for methods that do not generate."""
    per_generation = getattr(args, "steps_per_generation", None)
    if not per_generation:
        return 1
    micro = per_generation * getattr(args, "num_iterations", 1)
    accumulation = args.gradient_accumulation_steps
    return math.lcm(micro, accumulation) // accumulation


def rung_step(fraction: float, total: int, period: int = 1) -> int:
    """The step a rung at `fraction` of `total` steps ends at: rounded down to a generation boundary,
    at least one period in, and before the last step (a rung at the end would save nothing)."""
    step = max(period, int(fraction * total) // period * period)
    return min(step, max(total - 1, 1))


def read_stop(decision_file: str | Path | None, train_key: str) -> dict | None:
    """This run's stop in a rung decision (decision.json's `stopped` entry for its train key), or None."""
    if decision_file is None:
        return None
    decision = json.loads(Path(decision_file).read_text())
    return decision.get("stopped", {}).get(train_key)


def copy_rung_model(checkpoint: Path, directory: Path, tokenizer) -> None:
    """The rung checkpoint's policy (adapter or model files) and the tokenizer, as a model folder."""
    with atomic_dir(directory) as tmp:
        for name in MODEL_FILES:
            if (checkpoint / name).is_file():
                shutil.copyfile(checkpoint / name, tmp / name)
        tokenizer.save_pretrained(tmp)


def write_segment(rung_dir: Path, record: dict) -> None:
    atomic_write_json(rung_dir / layout.SEGMENT, record)


def stop_reason(stop: dict) -> str:
    """status.json's reason of a run a rung stopped: the rung, the delta and its bound."""
    where = f"rung {stop['rung']} of {stop['rungs']} (step {stop['step']} of {stop['max_steps']})"
    return f"early stop at {where}: {stop['reason']}"

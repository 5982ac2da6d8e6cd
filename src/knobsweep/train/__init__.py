"""Training stage: `accelerate launch ... -m knobsweep.train --config-json TRAIN ...`.

`grpo` holds the GRPO entry (TRL's GRPOTrainer + PEFT LoRA, validation, resume), `trainer` our
GRPOTrainer subclass (zero-variance / invalid sample filtering, NaN stop), `filtering` the batch
filter it applies, `callbacks` the TrainerCallbacks every method shares (metrics.jsonl, console
table, health warnings, signals, early stop), `health` the checks, `status` the run's status.json.
Nothing heavy is imported here, so `python -m knobsweep.train --help` stays fast.
"""

"""Training stage: `accelerate launch ... -m knobsweep.train --config-json TRAIN ...`.

`grpo` holds the GRPO entry (TRL's GRPOTrainer + PEFT LoRA), `callbacks` the TrainerCallbacks
every method shares (metrics.jsonl, console table), `status` the run's status.json.
Nothing heavy is imported here, so `python -m knobsweep.train --help` stays fast.
"""

"""`early_stop:` of an experiment: rung evaluations that stop arms worse than the baseline.

An experiment-level section, not a run knob: it says how the sweep compares its arms with its
baseline while they train, and changes no run's training. So it is hashed into no run's stage key
(train, eval): a run that goes on trains exactly as it would without rungs (tests/test_rungs.py),
and only the rung stages (segments, rung evals, decisions) have keys that name it.
"""

from __future__ import annotations

from pydantic import ConfigDict, Field, field_validator

from knobsweep.spec.validate import SEED_MAX, StrictScalars

MAX_RUNGS = 5


class EarlyStopConfig(StrictScalars):
    model_config = ConfigDict(extra="forbid", validate_default=True)

    rungs: list[float] = Field(
        ...,
        min_length=1,
        max_length=MAX_RUNGS,
        description="fractions of training at which every arm and the baseline are evaluated on the same prompts, "
        "strictly increasing, each in (0, 1), e.g. [0.25, 0.5]",
    )
    eval_prompts: int | None = Field(
        None,
        ge=2,
        le=100_000,
        description="prompts of the eval split each rung scores: a fixed subset drawn with eval_seed (the same for "
        "every run); null = the whole eval split",
    )
    eval_seed: int = Field(0, ge=0, le=SEED_MAX, description="seed of the eval_prompts subset")
    alpha: float = Field(
        0.05,
        gt=0.0,
        le=0.2,
        description="one-sided chance, over all rungs, that an arm no worse than the baseline is stopped "
        "(split evenly over the rungs)",
    )

    @field_validator("rungs")
    @classmethod
    def _increasing_fractions(cls, rungs: list[float]) -> list[float]:
        outside = [f for f in rungs if not 0.0 < f < 1.0]
        if outside:
            raise ValueError(f"holds {outside[0]}: each rung is a fraction of training strictly between 0 and 1")
        if any(b <= a for a, b in zip(rungs, rungs[1:])):
            raise ValueError("must be strictly increasing (each rung later in training than the one before)")
        return rungs

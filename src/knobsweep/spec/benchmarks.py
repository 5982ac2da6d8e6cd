"""`eval.benchmarks`: standard benchmarks run by lm-evaluation-harness on every merged model and the base model.

    eval:
      benchmarks:
        tasks: [gsm8k_local, rg_leg_counting]   # lm-eval task (or group) names
        limit: 50             # items per task (null: all)
        num_fewshot: null     # null: each task's own (gsm8k: 5)

Every setting applies to every task, as on lm-eval's command line: `lm_eval --tasks ... --limit 50` runs the
same evaluation (tests/test_benchmarks_lm_eval.py checks it, digit for digit).

A task is one of the local task YAMLs in `include_path` (lm_eval_tasks/ in this repository: GSM8K from
data/gsm8k/, tasks exported from reasoning-gym), or any task lm-eval ships, by its name (that one reads its
dataset from the Hugging Face hub: `knobsweep.benchmarks.tasks` checks at validation that it can). The
benchmarks have their own stage and key (knobsweep.benchmarks): changing them re-runs only the benchmarks.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import ConfigDict, Field, field_validator, model_validator

from knobsweep.errors import FieldError
from knobsweep.spec.validate import StrictScalars


class BenchmarksConfig(StrictScalars):
    """lm-evaluation-harness on every merged model and on the base model (lm_eval.simple_evaluate)."""

    model_config = ConfigDict(extra="forbid", validate_default=True)

    tasks: list[Annotated[str, Field(min_length=1)]] = Field(
        ..., min_length=1, description="lm-eval task or group names: local YAMLs (include_path) or lm-eval's own"
    )
    include_path: str = Field(
        "lm_eval_tasks",
        min_length=1,
        description="a folder of local lm-eval task YAMLs, relative to the working directory (lm_eval --include_path)",
    )
    num_fewshot: int | None = Field(None, ge=0, le=100, description="few-shot examples; null: each task's own")
    limit: int | None = Field(None, ge=1, description="items per task, the first ones (lm_eval --limit); null: all")
    batch_size: int = Field(16, ge=1, le=4096, description="lm_eval --batch_size")
    gen_kwargs: dict[str, Any] = Field(
        default_factory=dict,
        description="generation settings over each task's own (lm_eval --gen_kwargs), e.g. {max_gen_toks: 64}",
    )
    apply_chat_template: bool = Field(
        False, description="format prompts with the model's chat template (lm_eval --apply_chat_template)"
    )

    @field_validator("gen_kwargs")
    @classmethod
    def _scalars(cls, values: dict[str, Any]) -> dict[str, Any]:
        for name, value in values.items():
            if not isinstance(value, (str, int, float, bool)) and not (
                isinstance(value, list) and all(isinstance(item, str) for item in value)
            ):
                raise FieldError(name, f"{value!r}: a generation setting is a number, a string or a list of strings")
        return values

    @model_validator(mode="after")
    def _each_task_once(self) -> BenchmarksConfig:
        seen: dict[str, int] = {}
        for index, task in enumerate(self.tasks):
            if task in seen:
                raise FieldError(f"tasks[{index}]", f"{task!r} is listed twice (also tasks[{seen[task]}])")
            seen[task] = index
        return self

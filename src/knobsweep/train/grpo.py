"""GRPO: TRL's GRPOTrainer with a knobsweep evaluator as the reward (method "grpo").

The knobs we name (loss method, rollout sampling, vLLM mode, batch plan, ...) map onto
GRPOConfig here; `train.trl` is then applied on top unchanged, so any other GRPOConfig field a user
sets reaches TRL as written (those a knob sets are refused: spec/trl_fields.py). VALIDATING checks
every row's prompt and smoke-tests the evaluator on the rows' reference answers and junk. The run
lifecycle itself is `lifecycle.run_training`.
"""

from __future__ import annotations

import math
import numbers
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from knobsweep import layout
from knobsweep.io import append_jsonl
from knobsweep.spec.schema import RolloutConfig, TrainJob
from knobsweep.train.batching import batch_plan
from knobsweep.train.callbacks import GRPO_COLUMNS
from knobsweep.train.method import Method, build_trl_config, message_problem, raise_bad_rows, row_ids


def loss_fields(loss: str, kl_beta: float | None) -> dict[str, Any]:
    """GRPOConfig fields of a loss method (the table in docs/training.md; a KL beta only with loss grpo).

    TRL's own loss_type="grpo" is sequence-mean-token-mean, so our token-mean `grpo` and
    `dapo` use TRL's "dapo" aggregation and differ in clip range and KL.
    """
    if loss == "grpo":
        beta = 0.001 if kl_beta is None else float(kl_beta)
        return dict(loss_type="dapo", epsilon=0.2, epsilon_high=0.2, beta=beta, importance_sampling_level="token")
    if loss == "dapo":
        return dict(loss_type="dapo", epsilon=0.2, epsilon_high=0.28, beta=0.0, importance_sampling_level="token")
    return dict(loss_type="grpo", epsilon=3e-4, epsilon_high=4e-4, beta=0.0, importance_sampling_level="sequence")


def vllm_fields(rollout: RolloutConfig, max_context_length: int) -> dict[str, Any]:
    """GRPOConfig fields of `rollout.vllm` (off | colocate | server) and `rollout.vllm_server`.

    colocate: vLLM runs inside each training process and shares its GPU (or, with vLLM's CPU build, its
    CPU). server: generation goes to a separately started `trl vllm-serve` at vllm_server "host:port";
    it needs CUDA (`vllm_problem`).
    """
    if rollout.vllm == "off":
        return {"use_vllm": False}
    fields: dict[str, Any] = {"use_vllm": True, "vllm_mode": rollout.vllm, "vllm_max_model_length": max_context_length}
    if rollout.vllm == "colocate":
        return fields
    host, _, port = rollout.vllm_server.rpartition(":")
    return {**fields, "vllm_server_host": host, "vllm_server_port": int(port)}


def grpo_config_kwargs(
    job: TrainJob, out_dir: Path, num_processes: int, use_cuda: bool, report_to: str = "none"
) -> dict[str, Any]:
    """GRPOConfig keyword arguments for a training job ({model, train, rollout, reward, seed})."""
    plan = batch_plan(job.train, job.rollout, num_processes)
    return GRPOMethod().trl_kwargs(job, out_dir, plan, use_cuda, report_to)


def build_grpo_config(kwargs: dict[str, Any]):
    """GRPOConfig(**kwargs), naming an unknown field (and the closest real one) instead of a TypeError."""
    from trl import GRPOConfig

    return build_trl_config(GRPOConfig, kwargs)


def completion_text(completion: Any) -> str:
    """The text of a TRL completion: a string, or a list of messages (conversational data)."""
    if isinstance(completion, str):
        return completion
    return "".join(str(message.get("content") or "") for message in completion)


class EvaluatorTimeout(Exception):
    pass


def call_with_timeout(fn: Callable, timeout: float | None, *args):
    """fn(*args), or EvaluatorTimeout after `timeout` seconds (None = wait forever).

    The call runs in a daemon thread; one that never returns is abandoned, not killed (Python
    cannot kill a thread), so a hung evaluator costs a thread and its sample, not the run.
    """
    if not timeout:
        return fn(*args)
    box: dict[str, Any] = {}

    def target():
        try:
            box["value"] = fn(*args)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True, name="evaluator")
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise EvaluatorTimeout(f"no result within train.reward_timeout_s={timeout:g} s")
    if "error" in box:
        raise box["error"]
    return box["value"]


class EvaluatorReward:
    """A TRL reward function around a knobsweep evaluator.

    Returns the evaluator's score per completion, or None (TRL: no reward) when the evaluator
    raised, timed out (`timeout` s) or returned junk (not a finite score in [0, 1], or
    valid=False); such samples are counted in `invalid_rate` and removed from the loss
    (`trainer.KnobsweepGRPOTrainer`). The means of the evaluator's named metrics over valid
    samples are logged as `reward/<name>` through TRL's `log_metric`, so they land in the same
    log (and metrics.jsonl line) as TRL's own `reward`; so is `identical_rollouts` (1.0 when
    every completion of the batch is the same text).
    """

    def __init__(
        self,
        evaluator: Callable,
        columns: list[str],
        rollouts_path: Path | None = None,
        timeout: float | None = None,
        rollouts_per_step: int = 0,
    ):
        self.evaluator = evaluator
        self.columns = columns  # dataset columns besides `prompt`, passed to the evaluator as the row
        self.rollouts_path = rollouts_path  # None on non-main processes
        self.timeout = timeout  # seconds (None: no limit)
        self.rollouts_per_step = rollouts_per_step  # written to rollouts_path per call
        self.__name__ = getattr(evaluator, "name", "reward")  # TRL logs rewards/<__name__>/mean

    def evaluate(self, text: str, row: dict) -> tuple[float | None, dict]:
        """(score or None, the parts recorded in rollouts.jsonl)."""
        try:
            evaluation = call_with_timeout(self.evaluator, self.timeout, text, row)
            score, reason = evaluation.score, evaluation.reason
            valid, metrics = bool(evaluation.valid), dict(evaluation.metrics or {})
        except EvaluatorTimeout as exc:
            return None, {"score": None, "reason": f"evaluator timed out: {exc}", "valid": False, "metrics": {}}
        except Exception as exc:  # an evaluator bug must cost one sample, not the run
            return None, {
                "score": None,
                "reason": f"evaluator raised {type(exc).__name__}: {exc}",
                "valid": False,
                "metrics": {},
            }
        if not (isinstance(score, numbers.Real) and math.isfinite(score) and 0.0 <= score <= 1.0):
            return None, {
                "score": None,
                "reason": f"evaluator returned score {score!r}, not in [0, 1]",
                "valid": False,
                "metrics": metrics,
            }
        record = {"score": float(score), "reason": reason, "valid": valid, "metrics": metrics}
        return (float(score) if valid else None), record

    def __call__(self, prompts, completions, trainer_state=None, log_metric=None, **kwargs):
        rows = [
            {column: kwargs[column][i] for column in self.columns if column in kwargs} for i in range(len(completions))
        ]
        texts = [completion_text(c) for c in completions]
        results = [self.evaluate(text, row) for text, row in zip(texts, rows)]
        scores = [score for score, _ in results]
        if log_metric is not None:
            self._log_parts(results, log_metric)
            log_metric("identical_rollouts", 1.0 if len(texts) > 1 and len(set(texts)) == 1 else 0.0)
        if self.rollouts_per_step > 0:
            step = trainer_state.global_step + 1 if trainer_state is not None else 0  # the step these train
            picked = [
                {"step": step, "row_id": rows[i].get("row_id"), "prompt": prompts[i], "completion": texts[i]}
                | results[i][1]
                for i in self._picked(len(results))
            ]
            for record in _gather_records(picked):
                if self.rollouts_path is not None:  # the main process writes
                    append_jsonl(self.rollouts_path, record)
        return scores

    def _picked(self, local: int) -> list[int]:
        """This process's share of the `rollouts_per_step` rollouts, evenly spaced over the whole
        generation batch: each process scores a contiguous slice of it (rank r: r * local ...), so
        the main process alone would record rollouts of its own prompts only."""
        from accelerate import PartialState

        state = PartialState()
        total, start = local * state.num_processes, local * state.process_index
        stride = max(1, total // self.rollouts_per_step)
        return [i - start for i in range(0, total, stride)[: self.rollouts_per_step] if start <= i < start + local]

    @staticmethod
    def _log_parts(results: list[tuple[float | None, dict]], log_metric: Callable[[str, float], None]) -> None:
        valid = [record["metrics"] for score, record in results if score is not None]
        log_metric("invalid_rate", (len(results) - len(valid)) / len(results))
        for name in sorted({name for metrics in valid for name in metrics}):
            values = [float(m[name]) for m in valid if isinstance(m.get(name), numbers.Real)]
            if values:
                log_metric(f"reward/{name}", sum(values) / len(values))


def _gather_records(records: list[dict]) -> list[dict]:
    """Every process's records, in process order (a collective: every process calls it)."""
    from accelerate import PartialState
    from accelerate.utils import gather_object

    return gather_object(records) if PartialState().num_processes > 1 else records


# --- VALIDATING: before any training step --------------------------------------------------

# Columns that may hold a row's reference answer, scored in the evaluator smoke test.
REFERENCE_COLUMNS = ("answer", "ground_truth", "reference", "solution", "target", "chosen")
JUNK_COMPLETIONS = ("", "I don't know.", "lorem ipsum dolor sit amet", "#### banana")
SMOKE_ROWS = 3


def validate_rows(dataset) -> None:
    """Every row has a non-empty prompt (text, or messages with content); names the bad rows."""
    if len(dataset) == 0:
        raise ValueError("train.parquet has no rows")
    if "prompt" not in dataset.column_names:
        raise ValueError(
            f"train.parquet: no 'prompt' column (columns: {', '.join(dataset.column_names)}); "
            "GRPO trains on rl rows (row_id, prompt, ground_truth, ...)"
        )
    bad = [
        (row_id, problem)
        for row_id, prompt in zip(row_ids(dataset), dataset["prompt"])
        if (problem := message_problem(prompt)) is not None
    ]
    raise_bad_rows(bad, len(dataset), "an unusable prompt")


def smoke_test_evaluator(reward: EvaluatorReward, rows: list[dict]) -> dict:
    """Score the first rows' reference answers and a few junk strings before training.

    Fails when the evaluator raises (or is invalid) on every candidate, or gives every one the
    same score: it cannot tell a good completion from a bad one, so training would learn
    nothing. Returns a summary for status.json.
    """
    candidates = []
    for row in rows[:SMOKE_ROWS]:
        references = [str(row[c]) for c in REFERENCE_COLUMNS if isinstance(row.get(c), str) and row[c].strip()]
        candidates += [(text, row) for text in (*references, *JUNK_COMPLETIONS)]
    results = [reward.evaluate(text, row) for text, row in candidates]
    scores = [score for score, _ in results if score is not None]
    summary = {
        "samples": len(results),
        "invalid": len(results) - len(scores),
        "distinct_scores": sorted(set(scores))[:10],
    }
    if not scores:
        raise ValueError(
            f"evaluator {reward.__name__!r} could not score any of {len(results)} smoke-test "
            f"candidates (reference answers and junk); first: {results[0][1]['reason']}"
        )
    if len(set(scores)) == 1:
        raise ValueError(
            f"evaluator {reward.__name__!r} gave all {len(scores)} smoke-test candidates (reference "
            f"answers and junk) the same score {scores[0]}: it cannot tell good from bad"
        )
    return summary


def vllm_problem(fields: dict[str, Any], model: str) -> str | None:
    """Why vLLM generation of `model` cannot run here, or None (knobsweep.vllm_env's checks).

    Colocate runs on a GPU or on vLLM's CPU build. Server mode needs CUDA: the trainer pushes its
    weights to the server through vLLM's NCCL weight-transfer engine (TRL's VLLMClient refuses any
    other device, and vLLM has no CPU weight-transfer backend).
    """
    if not fields.get("use_vllm"):
        return None
    from knobsweep.vllm_env import VLLMUnavailable, check_can_run, cuda_available

    mode = fields["vllm_mode"]
    if mode == "server" and not cuda_available():
        return (
            "rollout.vllm='server' needs a CUDA GPU: weights reach the server through vLLM's NCCL weight "
            "transfer, which has no CPU backend; on a CPU use rollout.vllm: colocate (vLLM's CPU build) or off"
        )
    try:
        check_can_run(model)
    except VLLMUnavailable as exc:
        return f"rollout.vllm={mode!r}: {exc}"
    return None


class GRPOMethod(Method):
    name, title = "grpo", "GRPO"
    columns = GRPO_COLUMNS
    summary_keys = ("reward", "invalid_rate", "filtered_group_rate", "tokens_per_s")

    def __init__(self):
        self.reward: EvaluatorReward | None = None
        self.model_positions: int | None = None  # the model's position limit, read in VALIDATING for vLLM

    def validate_rows(self, job: TrainJob, dataset):
        validate_rows(dataset)
        return dataset

    def validate_with_tokenizer(self, job: TrainJob, dataset, tokenizer, out_dir: Path, is_main: bool) -> dict:
        from knobsweep.rewards import get_evaluator

        fields = vllm_fields(job.rollout, job.train.max_context_length)
        problem = vllm_problem(fields, tokenizer.name_or_path)
        if problem:
            raise ValueError(problem)
        if fields["use_vllm"]:
            from knobsweep.vllm_env import max_positions

            self.model_positions = max_positions(tokenizer.name_or_path)
        self.reward = EvaluatorReward(
            get_evaluator(job.reward.model_dump()),
            columns=[c for c in dataset.column_names if c != "prompt"],
            rollouts_path=out_dir / layout.ROLLOUTS if is_main else None,
            timeout=job.train.reward_timeout_s,
            rollouts_per_step=job.train.rollouts_per_step,
        )
        rows = [
            {column: dataset[i][column] for column in self.reward.columns} for i in range(min(SMOKE_ROWS, len(dataset)))
        ]
        return smoke_test_evaluator(self.reward, rows)

    def method_kwargs(self, job: TrainJob, plan, use_cuda: bool) -> dict[str, Any]:
        train, rollout = job.train, job.rollout
        kwargs: dict[str, Any] = dict(
            **loss_fields(train.loss, train.kl_beta),
            num_generations=rollout.n,
            num_iterations=train.num_iterations,
            temperature=rollout.temperature,
            top_p=rollout.top_p,
            top_k=rollout.top_k,  # 0 disables top-k in TRL too
            max_completion_length=rollout.max_tokens,
            generation_kwargs=rollout.extra_body or None,
            # A model that never emits EOS would have every completion masked (loss 0).
            mask_truncated_completions=False,
            # vLLM refuses a max_model_len past the model's positions: a shorter model gets its own limit.
            **vllm_fields(rollout, min(train.max_context_length, self.model_positions or train.max_context_length)),
        )
        if plan.steps_per_generation is not None:
            kwargs["steps_per_generation"] = plan.steps_per_generation
        return kwargs

    def trl_kwargs(self, job: TrainJob, out_dir: Path, plan, use_cuda: bool, report_to: str = "none") -> dict[str, Any]:
        kwargs = super().trl_kwargs(job, out_dir, plan, use_cuda, report_to)
        # TRL takes one of the two; a generation_batch_size the user set in train.trl wins.
        if "generation_batch_size" in job.train.trl:  # (train.trl cannot set steps_per_generation)
            kwargs.pop("steps_per_generation", None)
        return kwargs

    def trainer_kwargs(self) -> dict[str, Any]:
        return {"reward_funcs": [self.reward]}

    def describe(self, job: TrainJob, dataset) -> str:
        train, rollout = job.train, job.rollout
        return (
            f"{len(dataset)} prompts, loss {train.loss}, n={rollout.n} completions per prompt, "
            f"max_tokens {rollout.max_tokens}, reward {self.reward.__name__ if self.reward else '?'}, "
            f"vLLM {rollout.vllm}"
        )

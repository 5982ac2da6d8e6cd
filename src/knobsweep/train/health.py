"""Training health checks on each step's metrics: warnings, never silence.

`HealthMonitor.check(step, metrics)` returns the new warnings [(kind, message)]. A condition
warns once when it starts and again only after it has cleared, so a long bad stretch is one
warning, not one per step. Non-finite loss or grad norm is not a warning but the end of the
run: `NonFiniteError` (status FAILED, the last good checkpoint kept).
"""

from __future__ import annotations

import math
from collections import deque

from knobsweep.spec.schema import HealthConfig

REWARD_WINDOW = 5  # steps in the reward's moving mean (collapse check)
MARGIN_WINDOW = 5  # steps in the KTO margin's moving mean: one noisy batch is not a trend
MIN_RISE = 0.05  # a reward must first have risen this much before it can "collapse"
KL_CLEARS = 0.5  # a KL blow-up ends when the KL falls to this share of train.health.kl_max


class NonFiniteError(RuntimeError):
    """The loss or the gradient norm became NaN / Inf (at optimizer step `step`)."""

    def __init__(self, message: str, step: int = 0):
        super().__init__(message)
        self.step = step


def _number(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


class HealthMonitor:
    """`method` picks the checks that mean something for it: GRPO's `kl` is a per-token KL to the
    reference (kl_max applies); KTO's `kl` is its batch-level KL estimate, on another scale.
    `thresholds`: train.health."""

    def __init__(self, method: str, thresholds: HealthConfig):
        self.t = thresholds
        self.method = method
        self.active: set[str] = set()
        self.high_grad_steps = 0
        self.flat_steps = 0
        self.rewards: deque[float] = deque(maxlen=REWARD_WINDOW)
        self.first_mean: float | None = None
        self.peak_mean: float | None = None
        self.margins: deque[float] = deque(maxlen=MARGIN_WINDOW)

    def check_finite(self, step: int, metrics: dict) -> None:
        for key in ("loss", "grad_norm"):
            value = _number(metrics.get(key))
            if value is not None and not math.isfinite(value):
                raise NonFiniteError(f"{key} is {value} at step {step}", step)

    def check(self, step: int, metrics: dict) -> list[tuple[str, str]]:
        t, found = self.t, {}
        # A value absent from the step (not computed: every group filtered) is no reading at all:
        # it neither counts as a recovery nor resets a streak.
        for kind, key in (("grad_norm_spike", "grad_norm"), ("kl_blowup", "kl")):
            if kind in self.active and _number(metrics.get(key)) is None:
                found[kind] = ""
        grad = _number(metrics.get("grad_norm"))
        if grad is not None:
            self.high_grad_steps = self.high_grad_steps + 1 if grad > t.grad_norm_max else 0
            if self.high_grad_steps >= t.grad_norm_patience:
                found["grad_norm_spike"] = (
                    f"grad_norm {grad:.3g} > {t.grad_norm_max} for {self.high_grad_steps} steps in a row"
                )
        kl = _number(metrics.get("kl")) if self.method == "grpo" else None
        # Once above kl_max, the episode lasts until the KL falls back to half of it: a KL hovering
        # around the threshold is one far excursion, not a warning every other step.
        ongoing = "kl_blowup" in self.active and kl is not None and kl > KL_CLEARS * t.kl_max
        if kl is not None and (kl > t.kl_max or ongoing):
            found["kl_blowup"] = f"KL {kl:.3g} > {t.kl_max}: the policy is far from the reference"
        invalid = _number(metrics.get("invalid_rate"))
        if invalid is not None and invalid > t.invalid_rate_max:
            found["invalid_rate"] = (
                f"{invalid:.0%} of samples could not be scored (> {t.invalid_rate_max:.0%}): "
                "see `reason` in rollouts.jsonl"
            )
        if _number(metrics.get("identical_rollouts")) == 1.0:
            found["identical_rollouts"] = "every rollout of the step is the same text: the policy has collapsed"
        reward_std = _number(metrics.get("reward_std"))
        if reward_std is not None:
            self.flat_steps = self.flat_steps + 1 if reward_std == 0.0 else 0
            if self.flat_steps >= t.flat_patience:
                found["reward_flat"] = (
                    f"reward {metrics.get('reward')} with zero variance for {self.flat_steps} "
                    "steps: no group carries a learning signal"
                )
        reward = _number(metrics.get("reward"))
        if reward is not None and math.isfinite(reward):
            self.rewards.append(reward)
            if len(self.rewards) == self.rewards.maxlen:
                mean = sum(self.rewards) / len(self.rewards)
                self.first_mean = mean if self.first_mean is None else self.first_mean
                self.peak_mean = mean if self.peak_mean is None else max(self.peak_mean, mean)
                gain = self.peak_mean - self.first_mean
                if gain >= MIN_RISE and mean < self.peak_mean - t.reward_collapse_drop * gain:
                    found["reward_collapse"] = (
                        f"reward ({REWARD_WINDOW}-step mean) fell to {mean:.3g} from a peak "
                        f"of {self.peak_mean:.3g} (started at {self.first_mean:.3g})"
                    )
        margin = _number(metrics.get("rewards/margins"))  # KTO: chosen minus rejected implicit reward
        if margin is None and "kto_margin_negative" in self.active:
            found["kto_margin_negative"] = ""  # a batch without both labels logs no margin: not a recovery
        elif margin is not None and math.isfinite(margin):
            self.margins.append(margin)
            mean = sum(self.margins) / len(self.margins)
            if step > t.kto_margin_warmup and mean < 0:
                found["kto_margin_negative"] = (
                    f"KTO reward margin ({len(self.margins)}-step mean) is {mean:.3g} < 0 after "
                    f"{t.kto_margin_warmup} warm-up steps: undesirable completions gain on desirable ones "
                    "(check the labels, desirable_weight / undesirable_weight, or lower the learning rate)"
                )
        new = [(kind, message) for kind, message in found.items() if kind not in self.active]
        self.active = set(found)
        return new

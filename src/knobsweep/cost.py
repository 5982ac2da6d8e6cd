"""What a run costs, in device-hours: GPU-hours for a stage on GPUs, CPU-hours (cores x hours) otherwise.

`measured_cost` prices a finished run from the seconds its stages took (the report);
`knobsweep.estimate` prices a planned one (`knobsweep plan`) from what finished runs measured.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

GPU, CPU = "GPU", "CPU"


@dataclass(frozen=True)
class Devices:
    kind: str  # GPU | CPU
    count: int  # GPUs (or CPU cores) over all nodes of the stage's job


def stage_devices(config: Mapping[str, Any], stage: str) -> Devices:
    """What a stage of this run holds while it runs: its GPUs, else its CPU cores (per the spec's
    resources and their defaults; site settings play no part)."""
    from knobsweep.resources import stage_resources

    resources = config.get("resources") if isinstance(config.get("resources"), Mapping) else {}
    model = config.get("model") if isinstance(config.get("model"), Mapping) else {}
    request = stage_resources(
        {"resources": {stage: dict(resources.get(stage) or {})}, "model": {"name": model.get("name", "")}},
        stage,
        site={},
    )
    nodes = int(request.get("nodes") or 1)
    if request["gpus"]:
        return Devices(GPU, int(request["gpus"]) * nodes)
    return Devices(CPU, int(request["cpus"]) * nodes)


@dataclass(frozen=True)
class Cost:
    gpu_hours: float = 0.0
    cpu_hours: float = 0.0

    def __add__(self, other: Cost) -> Cost:
        return Cost(self.gpu_hours + other.gpu_hours, self.cpu_hours + other.cpu_hours)

    @property
    def empty(self) -> bool:
        return not (self.gpu_hours or self.cpu_hours)

    def text(self) -> str:
        """'0.42 GPU-h', '0.031 CPU-h', or both joined with '+'."""
        parts = [f"{_short(hours)} {kind}-h" for kind, hours in ((GPU, self.gpu_hours), (CPU, self.cpu_hours)) if hours]
        return " + ".join(parts)


def _short(hours: float) -> str:
    return f"{hours:.3g}" if hours < 100 else f"{hours:,.0f}"


def stage_cost(devices: Devices, seconds: float | None) -> Cost:
    if not seconds or seconds < 0:
        return Cost()
    hours = seconds * devices.count / 3600
    return Cost(gpu_hours=hours) if devices.kind == GPU else Cost(cpu_hours=hours)


def measured_cost(config: Mapping[str, Any], train_s: float | None, eval_s: float | None) -> Cost:
    """A run's training (and merge) plus its evaluation, at the devices each stage held."""
    return stage_cost(stage_devices(config, "train"), train_s) + stage_cost(stage_devices(config, "eval"), eval_s)

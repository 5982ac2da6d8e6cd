"""knobsweep: declarative one-knob-at-a-time sweeps for LLM post-training."""

__version__ = "0.1.0"

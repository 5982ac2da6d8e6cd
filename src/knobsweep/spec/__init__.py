"""The experiment spec: load, validate, expand into runs, and key each stage."""

from knobsweep.errors import Problem, SpecError
from knobsweep.spec.experiment import Experiment, Run, StageKeys, load_experiment
from knobsweep.spec.schema import ExperimentSpec, RunConfig

__all__ = ["Experiment", "ExperimentSpec", "Problem", "Run", "RunConfig", "SpecError", "StageKeys", "load_experiment"]

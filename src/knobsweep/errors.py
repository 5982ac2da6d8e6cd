"""Errors that carry where they are: a config's dotted field path, and the file and run a spec problem is in.

A path is data (`FieldError.path`, `Problem.path`), never recovered from a message's text, so every
layer that adds context (the file, the run, a sweep value) adds it to the path.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass


class FieldError(ValueError):
    """A bad value at a dotted path ("train.sft.max_length", "data.cases[2]"; "" = no one field).

    Raised inside a pydantic validator, the path is relative to the model being validated
    (knobsweep.spec.validate joins it to the model's location)."""

    def __init__(self, path: str, message: str):
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path
        self.message = message


@dataclass(frozen=True)
class Problem:
    file: str
    path: str  # dotted path in the file, e.g. "sweep.train.learning_rate[1]"
    message: str  # what is wrong and what is allowed
    run: str | None = None  # the run the bad value came from

    def __str__(self) -> str:
        where = f"{self.file}: {self.path}" if self.path else self.file
        run = f" (run '{self.run}')" if self.run else ""
        return f"{where}: {self.message}{run}"


class SpecError(Exception):
    """One or more problems in experiment files; str() lists each on its own line."""

    def __init__(self, problems: list[Problem]):
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class DataError(FieldError):
    """Unusable input data (a file, a hub dataset, its rows): the message names the file and line. (A bad
    option is a FieldError at its path, "data.path".)"""

    def __init__(self, message: str):
        super().__init__("", message)


def did_you_mean(word: str, choices: Iterable[str], most: int = 1) -> str:
    """ " (did you mean 'x'?)" naming the closest of `choices` to a misspelt `word` (up to `most`), or ""."""
    close = difflib.get_close_matches(str(word), sorted(set(choices)), n=most)
    return f" (did you mean {', '.join(map(repr, close))}?)" if close else ""

"""Spec problems, collected so that one `validate` call reports all of them."""

from __future__ import annotations

from dataclasses import dataclass


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

"""One reading of a run's result files, shared by every command that reads a sweep's results.

`knobsweep status`, `suggest`, `next`, `report` and `compare` (with the verdict and the lineage) and
`plan --why` read status.json, metrics.jsonl, rollouts.jsonl and the eval files through these functions,
so one file gives the same numbers and the same warnings everywhere. Each warning names the run, the
file and (for a JSON-lines file) the line; nothing here raises on a file's content:

- a missing file is a stage that has not got that far: no warning;
- a JSON file that is not JSON, or not a JSON object: a warning; status.json then reads as the state
  `unreadable` with the reason, so no command takes the run for finished (or for never started);
- a JSON-lines file: a line that is not JSON, or not an object, is skipped with a warning (its line, and
  a count when there are more); a torn last line (a writer killed mid-line, or a run being written) is
  skipped silently;
- metrics.jsonl: a line without an integer step is skipped with a warning (TRL's end-of-training summary,
  `train_runtime`, is no step: skipped silently); a step logged again after a
  later one (a restart that appended instead of resuming) keeps its last line, the steps are read in
  order, and a warning names them; a metric that is NaN or infinite at some steps keeps those values
  (the curves show them) with a warning naming the steps, and a figure over a window that holds one
  (the final train reward) is left empty rather than computed from the steps before.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from knobsweep.io import json_lines

UNREADABLE = "unreadable"  # status.json exists but cannot be read: the run's state as every command shows it
SUMMARY = "train_runtime"  # in the Trainer's end-of-training summary line, which is no step
FINAL_WINDOW = 0.10  # the final train reward: the mean over the last 10% of logged steps


def read_json_object(path: Path, warnings: list[str], label: str) -> dict | None:
    """A JSON object file (status.json, an eval summary, a manifest), or None when it is missing or
    unreadable (then a warning names it)."""
    data, problem = _json_object(Path(path))
    if problem:
        warnings.append(f"{label}: {path}: {problem}")
    return data


def _json_object(path: Path) -> tuple[dict | None, str | None]:
    if not path.is_file():
        return None, None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as error:
        return None, f"unreadable ({error})"
    if not isinstance(data, dict):
        return None, f"expected a JSON object, got {type(data).__name__}"
    return data, None


def read_status(path: Path, warnings: list[str], label: str) -> dict:
    """status.json: {} when the run has not started; {"state": "unreadable", "reason": why} (and a
    warning) when the file is not a JSON object, so every command shows the run the same way."""
    data, problem = _json_object(Path(path))
    if problem:
        warnings.append(f"{label}: {path}: {problem}")
        return {"state": UNREADABLE, "reason": f"{path}: {problem}"}
    return data or {}


def iter_json_lines(path: Path, warnings: list[str], label: str) -> Iterator[tuple[int, dict]]:
    """(1-based line number, object) for each object line of a JSON-lines file; bad lines skipped and
    warned about, a torn last line skipped silently."""
    path = Path(path)
    if not path.is_file():
        return
    try:
        handle = open(path, encoding="utf-8", errors="replace")
    except OSError as error:
        warnings.append(f"{label}: {path}: unreadable ({error})")
        return
    with handle:
        bad = 0
        for line in json_lines(handle):
            if line.torn:
                continue
            problem = line.error or (None if isinstance(line.value, dict) else "not a JSON object")
            if problem:
                bad += 1
                if bad == 1:
                    warnings.append(f"{label}: {path}:{line.index + 1}: {_short(problem)}, skipped")
                continue
            yield line.index + 1, line.value
        if bad > 1:
            warnings.append(f"{label}: {path}: {bad} bad lines skipped in all")


def _short(problem: str) -> str:
    return problem if len(problem) <= 120 else problem[:117] + "..."


# ---------------------------------------------------------------- metrics.jsonl


@dataclass
class Metrics:
    """metrics.jsonl, one row per logged step in step order: `step` (int), then every number (as a
    float) or text the lines hold. A metric a step did not log is NaN in `frame`; one it logged as NaN
    or infinite is named in `non_finite` (a NaN cell alone cannot tell the two apart)."""

    frame: pd.DataFrame
    non_finite: dict[str, set[int]] = field(default_factory=dict)  # metric -> steps where it was NaN / inf

    @property
    def empty(self) -> bool:
        return self.frame.empty

    def window_mean(self, metric: str, fraction: float, last: bool) -> float | None:
        """Mean over the first / last `fraction` of the steps that logged `metric` (at least one); None
        when that window holds a NaN or infinite value (read_metrics warned about it): never a mean of
        the steps before."""
        if metric not in self.frame.columns:
            return None
        logged = self.frame.loc[
            self.frame[metric].notna() | self.frame["step"].isin(self.non_finite.get(metric, ())), ["step", metric]
        ]
        if logged.empty:
            return None
        count = max(1, math.ceil(len(logged) * fraction))
        window = logged.iloc[-count:] if last else logged.iloc[:count]
        if window["step"].isin(self.non_finite.get(metric, ())).any():
            return None
        return float(f"{float(window[metric].mean()):.12g}")  # without float noise (0.15000000000000002)

    def final_reward(self) -> float | None:
        """The final train reward: the mean over the last 10% of logged steps."""
        return self.window_mean("reward", FINAL_WINDOW, last=True)

    def last_step(self) -> dict:
        """The last logged step's values ({} before the first); a metric it did not log is left out."""
        if self.frame.empty:
            return {}
        row = self.frame.iloc[-1]
        step = int(row["step"])
        return {
            name: step if name == "step" else value
            for name, value in row.items()
            if not _missing(value) or step in self.non_finite.get(name, ())
        }

    def points(self, metric: str) -> list[tuple[int, float]]:
        """(step, value) of the finite values of a numeric metric, in step order."""
        if metric not in self.frame.columns or self.frame[metric].dtype != float:
            return []
        values = self.frame[["step", metric]].dropna()
        values = values.loc[values[metric].map(math.isfinite).astype(bool)]
        return [(int(step), float(value)) for step, value in zip(values["step"], values[metric])]


def read_metrics(path: Path, warnings: list[str], label: str) -> Metrics:
    """metrics.jsonl as `Metrics`; see the module for what is warned about. A clean file goes through
    pyarrow's reader (~10x faster than a json.loads per line)."""
    path = Path(path)
    where = f"{label}: {path}"
    nan_cells: set[tuple[int, str]] = set()  # (line, metric) logged as NaN
    frame = _fast_frame(path, nan_cells) if path.is_file() else None
    if frame is None:
        frame = _tolerant_frame(path, warnings, label, nan_cells)
    if frame.empty or "step" not in frame.columns:
        return Metrics(pd.DataFrame({"step": pd.Series([], dtype=int)}))
    frame = _by_step(frame, warnings, where)
    non_finite: dict[str, set[int]] = {}
    for line, column in nan_cells:
        kept = frame.index[frame["_line"] == line]
        if len(kept):
            non_finite.setdefault(column, set()).add(int(frame.at[kept[0], "step"]))
    for column in frame.columns:
        if column not in ("step", "_line") and frame[column].dtype == float:
            infinite = frame.loc[frame[column].map(math.isinf).astype(bool), "step"]
            if not infinite.empty:
                non_finite.setdefault(column, set()).update(int(step) for step in infinite)
    for column, steps in non_finite.items():
        logged = int(frame[column].notna().sum()) + sum(1 for line, name in nan_cells if name == column)
        warnings.append(
            f"{where}: {column} is not a finite number at step{'s' if len(steps) > 1 else ''} "
            f"{_ranges(sorted(steps))} (of {logged} logged)"
        )
    return Metrics(frame.drop(columns="_line").reset_index(drop=True), non_finite)


def _fast_frame(path: Path, nan_cells: set[tuple[int, str]]) -> pd.DataFrame | None:
    """None when pyarrow rejects the file (a torn or bad line, mixed types, a step that is not an
    integer): the tolerant reader then says which line."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.json as pa_json
    import pyarrow.types as t

    try:
        table = pa_json.read_json(path)
    except pa.ArrowException:
        return None
    if "step" not in table.column_names or not t.is_integer(table.schema.field("step").type):
        return None
    if table.column("step").null_count:
        return None
    keep = [name for name, kind in zip(table.column_names, table.schema.types) if _scalar_type(kind)]
    for name in keep:
        if t.is_floating(table.schema.field(name).type):  # arrow keeps a logged NaN apart from a missing value
            logged_nan = pc.fill_null(pc.is_nan(table.column(name)), False).to_numpy(zero_copy_only=False)
            nan_cells.update((int(index) + 1, name) for index in logged_nan.nonzero()[0])
    frame = table.select(keep).to_pandas()
    frame["_line"] = range(1, len(frame) + 1)
    if SUMMARY in frame.columns:
        frame = frame[frame[SUMMARY].isna()].drop(columns=SUMMARY)
    for column in frame.columns:
        if (
            column not in ("step", "_line")
            and pd.api.types.is_numeric_dtype(frame[column])
            and not pd.api.types.is_bool_dtype(frame[column])
        ):
            frame[column] = frame[column].astype(float)
    return frame


def _scalar_type(kind) -> bool:
    import pyarrow.types as t

    return t.is_integer(kind) or t.is_floating(kind) or t.is_boolean(kind) or t.is_string(kind) or t.is_null(kind)


def _tolerant_frame(path: Path, warnings: list[str], label: str, nan_cells: set[tuple[int, str]]) -> pd.DataFrame:
    records = []
    no_step = []
    for number, record in iter_json_lines(path, warnings, label):
        if SUMMARY in record:
            continue
        step = record.get("step")
        if not isinstance(step, int) or isinstance(step, bool):
            no_step.append(number)
            continue
        records.append({**{k: v for k, v in record.items() if _scalar(v)}, "_line": number})
        nan_cells.update((number, k) for k, v in record.items() if isinstance(v, float) and math.isnan(v))
    if no_step:
        more = f" (and {len(no_step) - 1} more)" if len(no_step) > 1 else ""
        warnings.append(f"{label}: {path}:{no_step[0]}: a line without an integer step{more}, skipped")
    frame = pd.DataFrame.from_records(records)
    for column in frame.columns:
        if column in ("step", "_line"):
            continue
        if pd.api.types.is_numeric_dtype(frame[column]) and not pd.api.types.is_bool_dtype(frame[column]):
            frame[column] = frame[column].astype(float)
        elif frame[column].map(_number).any():  # numbers with a stray text: that text is no number
            numbers = pd.to_numeric(frame[column].where(frame[column].map(_number)), errors="coerce")
            stray = frame[column].notna() & ~frame[column].map(_number)
            first = int(frame.loc[stray, "_line"].iloc[0])
            warnings.append(
                f"{label}: {path}:{first}: {column} is not a number on {int(stray.sum())} line(s), left empty there"
            )
            frame[column] = numbers.astype(float)
    return frame


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, (int, float, str, bool))


def _by_step(frame: pd.DataFrame, warnings: list[str], where: str) -> pd.DataFrame:
    """One row per step, its last logged line, in step order; a warning for steps logged again after a
    later one. Keeps `_line`."""
    frame = frame.astype({"step": int})
    highest = frame["step"].cummax().shift(fill_value=int(frame["step"].iloc[0]) - 1)
    again = frame[frame["step"] <= highest]
    if not again.empty:
        steps = sorted(set(int(step) for step in again["step"]))
        first = again.index[0]
        warnings.append(
            f"{where}:{int(again.at[first, '_line'])}: step{'s' if len(steps) > 1 else ''} {_ranges(steps)} "
            f"logged again after step {int(highest.at[first])} (a restart that appended instead of resuming?); "
            "each step's last line is used"
        )
    return frame.drop_duplicates(subset="step", keep="last").sort_values("step", kind="stable").reset_index(drop=True)


def _ranges(steps: list[int]) -> str:
    """[1, 2, 3, 7] -> '1-3, 7' (at most 5 ranges shown)."""
    ranges: list[list[int]] = []
    for step in steps:
        if ranges and step == ranges[-1][1] + 1:
            ranges[-1][1] = step
        else:
            ranges.append([step, step])
    shown = [f"{a}-{b}" if a != b else str(a) for a, b in ranges[:5]]
    return ", ".join(shown) + (f" and {len(ranges) - 5} more ranges" if len(ranges) > 5 else "")


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))

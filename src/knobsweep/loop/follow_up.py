"""`knobsweep next`: the follow-up experiment file.

Its baseline is this experiment's baseline plus the adopted arms' changes (`auto`: per knob, the arm the
report's paired statistics call better than the baseline beyond noise), its sweep the suggestions of the
baseline's curves (or the user's `--sweep`), its hypotheses the suggestions' reasons, and `parent:` names
this experiment. The original is edited round-trip (ruamel.yaml), so its comments stay where they can;
the file is validated as `knobsweep validate` would before it replaces anything.
"""

from __future__ import annotations

import copy
import io
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq

from knobsweep.dotted import set_dotted
from knobsweep.errors import SpecError, did_you_mean
from knobsweep.io import new_file_mode
from knobsweep.loop.suggest import LoopError, Suggestion, diagnose, finished_baseline, run_data, rung_stop, unfinished
from knobsweep.loop.values import rejection, run_config
from knobsweep.planned import plan
from knobsweep.report.decision import Arm, compare_arms, group_arms
from knobsweep.report.stats import BETTER, SEED_LIMITED
from knobsweep.spec import load_experiment
from knobsweep.spec.expand import format_value
from knobsweep.spec.load import knob_problem
from knobsweep.spec.reading import check_values, parse_yaml


@dataclass
class FollowUp:
    path: Path
    adopted: list[tuple[Arm, str]]  # (arm, why)
    sweep: dict[str, list]
    suggestions: list[Suggestion]
    nothing_adopted: str  # why no arm was adopted ("" when one was)
    reused: dict[str, str] = field(default_factory=dict)  # new run -> the finished run whose training it reuses
    notes: list[str] = field(default_factory=list)  # what reading the results skipped or distrusted (runfiles)


def default_out(experiment: Any) -> Path:
    return experiment.path.with_name(f"{experiment.path.stem}_next.yaml")


# ---------------------------------------------------------------- what to adopt


def split_arms(text: str, names: list[str]) -> list[str]:
    """ARM,ARM,... where an arm's own name may hold commas (a grid cell "lr=2e-4,n=4"): the longest
    known name wins at each position; an unknown part is one name."""
    parts, out, i = text.split(","), [], 0
    while i < len(parts):
        end = next((j for j in range(len(parts), i, -1) if ",".join(parts[i:j]) in names), i + 1)
        out.append(",".join(parts[i:end]).strip())
        i = end
    return [name for name in out if name]


def _ci(comparison: Any) -> str:
    if comparison.delta is None:
        return comparison.verdict + (f" ({comparison.reason})" if comparison.reason else "")
    text = f"eval score delta {comparison.delta:+.3g} [95% CI {comparison.ci_low:+.3g}, {comparison.ci_high:+.3g}]"
    if comparison.p_value is not None:
        return text + f", p = {comparison.p_value:.2g} adjusted over the sweep's arms"
    return text + (" from eval sampling alone (one seed per side)" if comparison.verdict == SEED_LIMITED else "")


def adopted_arms(experiment: Any, root: Path, adopt: str, warnings: list[str]) -> tuple[list[tuple[Arm, str]], str]:
    """The arms whose changes go into the new baseline, each with why; and why none was, if none was.
    `warnings` gets what reading their results skipped."""
    if adopt == "none":
        return [], "--adopt none"
    arms = {arm.name: arm for arm in group_arms(experiment) if arm.changed}
    comparisons = compare_arms(experiment, root, warnings)
    if adopt == "auto":
        better = [arm for arm in comparisons.order if comparisons.arms[arm.name].verdict == BETTER]
        chosen, knobs = [], set()
        # per knob the arm that gained most; an arm that turns an already adopted knob is left out
        for arm in sorted(better, key=lambda a: -comparisons.arms[a.name].delta):
            if not knobs & set(arm.changed):
                chosen.append((arm, "better than the baseline beyond noise: " + _ci(comparisons.arms[arm.name])))
                knobs |= set(arm.changed)
        return chosen, "" if chosen else _why_nothing(comparisons)
    chosen, knobs = [], {}
    for name in split_arms(adopt, list(arms)):
        if name not in arms:
            raise LoopError(
                f"--adopt '{name}': no such arm in {experiment.path}{did_you_mean(name, arms)}; "
                f"arms: {', '.join(arms) or 'none'} (or auto, none)"
            )
        arm = arms[name]
        for run in arm.runs:
            why = unfinished(run, root) or rung_stop(run, root)
            if why:
                raise LoopError(f"--adopt '{name}': run '{run.name}' {why}; only a finished arm can be adopted")
        for knob in arm.changed:
            if knob in knobs:
                raise LoopError(f"--adopt '{name}': {knob} is already set by the adopted arm '{knobs[knob]}'")
            knobs[knob] = name
        comparison = comparisons.arms[name]
        measured = f"{comparison.verdict}: {_ci(comparison)}" if comparison.delta is not None else _ci(comparison)
        chosen.append((arm, f"adopted as asked; {measured}"))
    return chosen, ""


# ---------------------------------------------------------------- the sweep


def parse_value(text: str) -> Any:
    """A --sweep value as a spec file reads it (spec.reading: YAML 1.2, so 2e-4 is a number and `off` the
    string rollout.vllm takes; no NaN, no resolver); a SpecError says what is wrong with it."""
    value = parse_yaml(text, "--sweep")
    problems = check_values(value, "--sweep")
    if problems:
        raise SpecError(problems)
    return value


def parse_sweep(items: list[str], config: dict) -> dict[str, list]:
    """--sweep KNOB=V1,V2 ... checked against the schema on the new baseline `config`."""
    sweep: dict[str, list] = {}
    for item in items:
        knob, equals, text = item.partition("=")
        knob = knob.strip()
        if not equals or not knob or not text.strip():
            raise LoopError(f"--sweep {item!r}: expected KNOB=V1,V2 (e.g. train.learning_rate=5e-5,2e-4)")
        problem = knob_problem(knob, knob, "--sweep")
        if problem:
            raise LoopError(f"--sweep {knob}: {problem.message}")
        for part in text.split(","):
            try:
                value = parse_value(part.strip())
            except SpecError as error:
                raise LoopError(f"--sweep {knob}={part.strip()}: {error.problems[0].message}") from None
            why = rejection(config, knob, value)
            if why:
                raise LoopError(f"--sweep {knob}={part.strip()}: {why}")
            sweep.setdefault(knob, []).append(value)
    return sweep


def suggested_sweep(suggestions: list[Suggestion]) -> tuple[dict[str, list], dict[str, str]]:
    """(knob -> the suggested values, knob -> the reasons of the rules that suggested it)."""
    sweep: dict[str, list] = {}
    reasons: dict[str, list[str]] = {}
    for suggestion in suggestions:
        for proposal in suggestion.proposals:
            knob = proposal.change.knob
            for value in proposal.values:
                if value not in sweep.setdefault(knob, []):
                    sweep[knob].append(value)
            if suggestion.rule.reason not in reasons.setdefault(knob, []):
                reasons[knob].append(suggestion.rule.reason)
    sweep = {knob: values for knob, values in sweep.items() if values}
    return sweep, {knob: "; ".join(texts) for knob, texts in reasons.items() if knob in sweep}


# ---------------------------------------------------------------- the file


def _flow(values: list) -> CommentedSeq:
    seq = CommentedSeq(values)
    seq.fa.set_flow_style()
    return seq


def _set(node: CommentedMap, knob: str, value: Any) -> None:
    *parents, leaf = knob.split(".")
    for part in parents:
        if not isinstance(node.get(part), dict):
            node[part] = CommentedMap()
        node = node[part]
    node[leaf] = value


def _why_nothing(comparisons: Any) -> str:
    """No arm is better beyond noise: say so, with the correction, and name the arms only more seeds
    could decide."""
    why = "no arm is better than the baseline beyond noise"
    if comparisons.correction.startswith("Dunnett"):
        why += f" ({comparisons.correction})"
    limited = [arm.name for arm in comparisons.order if comparisons.arms[arm.name].verdict == SEED_LIMITED]
    if limited:
        why += f"; seed-limited (one seed per side, so more seeds could decide): {', '.join(limited)}"
    return why


def _header(experiment: Any, out: Path, adopted: list, nothing: str, sweep: dict, symptoms: bool | None) -> str:
    """What the file is, what was adopted and why, where its sweep comes from (`symptoms`: whether the
    baseline showed any; None when the sweep was given with --sweep)."""
    lines = [f"Follow-up of {os.path.relpath(experiment.path, out.parent)}, written by `knobsweep next`."]
    if adopted:
        lines += [f"Adopted into the baseline: {arm.name} ({why})." for arm, why in adopted]
    else:
        lines.append(f"Adopted into the baseline: nothing ({nothing}).")
    if not sweep:
        why = "no symptom found; the baseline looks healthy" if not symptoms else "no suggested value the spec allows"
        lines.append(f"Sweep: none ({why}).")
    else:
        where = "the suggestions of `knobsweep suggest` on the baseline's curves" if symptoms is not None else "--sweep"
        shown = "; ".join(f"{knob}: {', '.join(format_value(v) for v in values)}" for knob, values in sweep.items())
        lines.append(f"Sweep from {where}: {shown}")
    return "".join(f"# {line}\n" for line in lines) + "\n"


def follow_up_text(
    experiment: Any, out: Path, adopted: list, nothing: str, sweep: dict, hypotheses: dict, symptoms: bool | None
) -> str:
    """The original file with the new baseline, sweep, hypotheses and parent (comments kept)."""
    rt = YAML()
    rt.preserve_quotes = True
    rt.width = 4096  # never wrap a long hypothesis
    data = rt.load(experiment.path.read_text(encoding="utf-8")) or CommentedMap()
    here, there = experiment.path.parent, out.parent
    if "name" in data:
        data["name"] = out.stem
    if "defaults" in data and here.resolve() != there.resolve():  # base files relative to the new file
        bases = [data["defaults"]] if isinstance(data["defaults"], str) else list(data["defaults"])
        data["defaults"] = [os.path.relpath(here / str(base), there) for base in bases]
    data.pop("parent", None)  # this experiment's own parent is one link further up the chain
    data.insert(1 if "name" in data else 0, "parent", os.path.relpath(experiment.path, there))
    if not isinstance(data.get("baseline"), dict):
        data["baseline"] = CommentedMap()
    names = {arm.name for arm, _ in adopted}
    for arm, _ in adopted:
        for knob, value in arm.changed.items():
            _set(data["baseline"], knob, value)
    runs = {name: value for name, value in (data.get("runs") or {}).items() if name not in names}
    kept = {k: v for k, v in (data.get("hypotheses") or {}).items() if k in runs}
    for key, value in (("sweep", {k: _flow(v) for k, v in sweep.items()}), ("hypotheses", {**kept, **hypotheses})):
        data.pop(key, None)
        if value:
            data[key] = CommentedMap(value)
    if "runs" in data:
        for name in names:
            data["runs"].pop(name, None)
        if not data["runs"]:
            del data["runs"]
    text = _dump(rt, data)
    return _header(experiment, out, adopted, nothing, sweep, symptoms) + text


def _dump(rt: YAML, data: Any) -> str:
    stream = io.StringIO()
    rt.dump(data, stream)
    return stream.getvalue()


def write_validated(text: str, out: Path) -> None:
    """Write `text` to `out` only if it is a valid experiment file (checked in a temporary file beside it,
    so relative paths resolve alike); a SpecError names the problems as in `out`."""
    out.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=out.parent, prefix=f".{out.stem}-", suffix=".yaml")
    try:
        os.chmod(temporary, new_file_mode())  # an experiment file like any other (mkstemp makes 600)
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(text)
        try:
            written = load_experiment(temporary, stem=out.stem)
        except SpecError as error:
            raise LoopError(
                f"the follow-up {out} would not validate, so it was not written:\n"
                + "\n".join(str(problem).replace(temporary, str(out)) for problem in error.problems)
            ) from None
        # a swept value equal to the new baseline (after defaults) is an arm with nothing to run
        idle = [problem for problem in written.warnings if problem.path.startswith("sweep.")]
        if idle:
            raise LoopError(
                f"the follow-up {out} was not written: its sweep has nothing new to run:\n"
                + "\n".join(str(problem).replace(temporary, str(out)) for problem in idle)
            )
        os.replace(temporary, out)
    finally:
        Path(temporary).unlink(missing_ok=True)


def reused_runs(new: Any, old: Any, root: Path) -> dict[str, str]:
    """New run -> the finished old run whose training (same train key) it reuses, as `knobsweep plan` (and
    so Snakemake) will: its train job does not run."""
    trained = {run.keys.train: run.name for run in old.runs}
    planned = plan([new], root)
    return {
        run.name: trained[run.keys.train]
        for run in new.runs
        if run.keys.train in trained and not planned.will_run("train", run.keys.train)
    }


def write_follow_up(
    experiment: Any,
    root: str | Path = ".",
    *,
    adopt: str = "auto",
    sweep: list[str] | None = None,
    out: str | Path | None = None,
    force: bool = False,
) -> FollowUp:
    root = Path(root)
    out = Path(out) if out else default_out(experiment)
    if out.is_dir():  # as `cp FILE DIR`: the default file name, in that folder
        out = out / default_out(experiment).name
    if out.exists() and not out.is_file():
        raise LoopError(f"--out {out}: exists and is not a file; name a file to write")
    if out.exists() and not force:
        raise LoopError(f"{out} exists; pass --force to overwrite it, or --out another file")
    if out.stem == experiment.name:
        raise LoopError(
            f"--out {out}: the follow-up would be experiment '{out.stem}' too (its name is the file's stem) "
            f"and share results/{experiment.name}/ with {experiment.path}; choose another file name"
        )
    baseline = finished_baseline(experiment, root)
    notes: list[str] = []
    adopted, nothing = adopted_arms(experiment, root, adopt, notes)
    config = copy.deepcopy(run_config(baseline[0].config))  # adoption below must not touch the run
    for arm, _ in adopted:
        for knob, value in arm.changed.items():
            set_dotted(config, knob, value)
    read = [run_data(run, root) for run in baseline]
    suggestions = [s for data in read for s in diagnose(data, config)]
    notes += [warning for data in read for warning in data.warnings]
    suggested, reasons = suggested_sweep(suggestions)
    chosen = parse_sweep(sweep, config) if sweep else suggested
    hypotheses = {knob: reason for knob, reason in reasons.items() if knob in chosen}
    symptoms = None if sweep else bool(suggestions)
    write_validated(follow_up_text(experiment, out, adopted, nothing, chosen, hypotheses, symptoms), out)
    result = FollowUp(out, adopted, chosen, suggestions, nothing, notes=list(dict.fromkeys(notes)))
    result.reused = reused_runs(load_experiment(out), experiment, root)
    return result

"""SWE tasks: score a generated patch against the gold patch (swe_patch) or by running tests (swe_tests).

Both take the patch from the completion the same way (`extract_patch`): the ```diff / ```patch
fenced blocks if there are any (joined, so one block per file works too), else a fenced block
that holds a diff, else the text from the first `diff --git` / `--- ` header on. The patch must
then parse as a unified diff (the `unidiff` library; hunk line counts must match their `@@`
headers, as `git apply` requires).

swe_patch (no repository needed, cheap enough for a training reward):
    score = file_weight * file_overlap + (1 - file_weight) * line_similarity, 0 if not a diff
    file_overlap    = |files touched by both| / |files touched by either|   (Jaccard)
    line_similarity = 2 * matched / (gold changed lines + predicted changed lines), where the
                      changed lines are each file's `-` / `+` lines (trailing whitespace
                      ignored, indentation kept) and `matched` sums difflib's matching blocks
                      per file. The gold patch itself scores exactly 1.

swe_tests: apply the patch to a clean checkout at base_commit, add the row's test_patch, run
FAIL_TO_PASS and PASS_TO_PASS. score = f2p * p2p, the fractions of each list that pass (an
empty list counts as 1): 1 exactly when the issue is resolved, 0 when no failing test was fixed,
in between for a fix that breaks other tests. A patch that is not a diff or does not apply
scores 0 with that reason. A problem of the setup (no clone, unknown commit, a test_patch that
does not apply) raises, so the caller marks the sample invalid instead of scoring it 0.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import math
import os
import re
import shlex
import shutil
import subprocess
import tempfile
from difflib import SequenceMatcher
from pathlib import Path

from knobsweep.errors import FieldError
from knobsweep.rewards import Evaluation

NO_DIFF = "not a unified diff (no ```diff block or '--- a/' header)"
_DIFF_START = re.compile(r"^(diff --git |--- )", re.M)
_DIFF_LANGS = {"diff", "patch", "udiff"}


# ------------------------------------------------------------------------------ patches


def _fenced_blocks(text: str) -> list[tuple[str, str]]:
    """(language tag, body) of each ``` fenced block; an unclosed last block runs to the end
    (a generation cut at max_tokens)."""
    blocks, lang, body = [], None, []
    for line in text.splitlines(keepends=True):
        if lang is None and line.startswith("```"):
            lang, body = line[3:].strip().lower(), []
        elif lang is not None and line.rstrip() == "```":
            blocks.append((lang, "".join(body)))
            lang = None
        elif lang is not None:
            body.append(line)
    if lang is not None:
        blocks.append((lang, "".join(body)))
    return blocks


def _looks_like_diff(text: str) -> bool:
    return bool(re.match(r"\s*(diff --git |--- )", text))


def extract_patch(completion: str) -> str | None:
    """The unified diff a completion answers with, or None when it has none."""
    blocks = _fenced_blocks(completion)
    tagged = [body for lang, body in blocks if (lang.split() or [""])[0] in _DIFF_LANGS]
    chosen = tagged or [body for _, body in blocks if _looks_like_diff(body)]
    if chosen:
        text = "".join(body if body.endswith("\n") else body + "\n" for body in chosen)
    else:
        match = _DIFF_START.search(completion)
        if match is None:
            return None
        text = completion[match.start() :]
    text = text.lstrip("\n")
    if not text.strip():
        return None
    return text if text.endswith("\n") else text + "\n"


def parse_patch(text: str) -> dict[str, list[str]]:
    """{file path: its changed lines ("-old" / "+new", trailing whitespace removed)}.

    Raises ValueError naming the problem when `text` is not a well-formed unified diff.
    """
    try:
        from unidiff import PatchSet
        from unidiff.errors import UnidiffParseError
    except ImportError as error:  # a dependency of knobsweep; a broken install should say so
        raise RuntimeError("parsing patches needs the unidiff package: pip install unidiff") from error

    try:
        patch = PatchSet(text)
    except UnidiffParseError as error:
        raise ValueError(f"not a well-formed unified diff: {error}") from None
    if not len(patch):
        raise ValueError("not a unified diff (no '--- a/<path>' / '+++ b/<path>' file headers)")
    files: dict[str, list[str]] = {}
    for patched in patch:
        lines = files.setdefault(patched.path, [])
        for hunk in patched:
            lines.extend(f"{line.line_type}{line.value.rstrip()}" for line in hunk if line.is_added or line.is_removed)
    if not any(files.values()) and not any(p.is_added_file or p.is_removed_file for p in patch):
        raise ValueError("not a unified diff with changes (no added or removed lines)")
    return files


@functools.lru_cache(maxsize=512)
def _gold(text: str) -> dict[str, list[str]]:
    # Every completion of a prompt is scored against the same gold patch: parse it once.
    return parse_patch(text)


def line_similarity(gold: dict[str, list[str]], predicted: dict[str, list[str]]) -> float:
    total = sum(map(len, gold.values())) + sum(map(len, predicted.values()))
    if total == 0:
        return 1.0
    matched = sum(
        block.size
        for path in gold.keys() & predicted.keys()
        for block in SequenceMatcher(None, gold[path], predicted[path], autojunk=False).get_matching_blocks()
    )
    return 2 * matched / total


def _gold_patch(row: dict) -> dict[str, list[str]]:
    # A bad row is a data error, not a bad completion: raise, and the caller marks it invalid.
    text = row.get("ground_truth")
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"row {row.get('row_id', '?')}: no gold patch (ground_truth is empty)")
    try:
        return _gold(text)
    except ValueError as error:
        raise ValueError(f"row {row.get('row_id', '?')}: gold patch: {error}") from None


def _weight(value, name: str) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or not 0 <= value <= 1
    ):
        raise FieldError(f"reward.{name}", f"must be a number in [0, 1], got {value!r}")
    return float(value)


class SwePatchEvaluator:
    """Shaped similarity of a generated patch to the gold patch (see the module docstring)."""

    name = "swe_patch"

    def __init__(self, file_weight: float = 0.5):
        self.file_weight = _weight(file_weight, "file_weight")

    def __call__(self, completion: str, row: dict) -> Evaluation:
        gold = _gold_patch(row)
        text = extract_patch(completion)
        if text is None:
            return _not_a_diff(NO_DIFF)
        try:
            predicted = parse_patch(text)
        except ValueError as error:
            return _not_a_diff(str(error))
        shared = gold.keys() & predicted.keys()
        overlap = len(shared) / len(gold.keys() | predicted.keys())
        similarity = line_similarity(gold, predicted)
        exact = overlap == 1.0 and similarity == 1.0
        score = 1.0 if exact else self.file_weight * overlap + (1 - self.file_weight) * similarity
        others = len(predicted.keys() - gold.keys())
        reason = (
            f"touches {len(shared)} of {len(gold)} gold file{'s' if len(gold) != 1 else ''}"
            + (f" (+{others} other{'s' if others != 1 else ''})" if others else "")
            + f"; line similarity {similarity:.2f}"
        )
        return Evaluation(
            score=min(1.0, score),
            reason=reason,
            metrics={"well_formed": 1.0, "file_overlap": overlap, "line_similarity": similarity},
        )

    def __repr__(self) -> str:
        return f"SwePatchEvaluator(file_weight={self.file_weight})"


def _not_a_diff(reason: str) -> Evaluation:
    return Evaluation(
        score=0.0, reason=reason, metrics={"well_formed": 0.0, "file_overlap": 0.0, "line_similarity": 0.0}
    )


# ------------------------------------------------------------------------------ tests


def parse_test_list(value, field: str) -> list[str]:
    """FAIL_TO_PASS / PASS_TO_PASS as a list of test ids: a list, or a JSON string of one (the hub's form)."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as error:
            raise ValueError(f"{field} is a string but not a JSON list: {error}") from None
    if hasattr(value, "tolist"):  # a numpy array from parquet
        value = value.tolist()
    if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
        raise ValueError(f"{field} must be a list of test ids (or a JSON string of one), got {type(value).__name__}")
    return value


def repo_dir_name(repo: str) -> str:
    """The clone's directory under repos_dir: "owner/name" -> "owner__name" (SWE-bench's own naming)."""
    return repo.replace("/", "__")


def _tests(row: dict) -> tuple[list[str], list[str]]:
    try:
        return (
            parse_test_list(row.get("FAIL_TO_PASS"), "FAIL_TO_PASS"),
            parse_test_list(row.get("PASS_TO_PASS"), "PASS_TO_PASS"),
        )
    except ValueError as error:
        raise ValueError(f"row {row.get('row_id', '?')}: {error}") from None


def _score(f2p: list[bool], p2p: list[bool]) -> tuple[float, dict[str, float]]:
    f2p_rate = sum(f2p) / len(f2p) if f2p else 1.0
    p2p_rate = sum(p2p) / len(p2p) if p2p else 1.0
    resolved = all(f2p) and all(p2p)
    score = 1.0 if resolved else f2p_rate * p2p_rate
    return score, {"applied": 1.0, "resolved": float(resolved), "fail_to_pass": f2p_rate, "pass_to_pass": p2p_rate}


def _tests_reason(f2p: list[bool], p2p: list[bool]) -> str:
    return f"FAIL_TO_PASS {sum(f2p)}/{len(f2p)} pass, PASS_TO_PASS {sum(p2p)}/{len(p2p)} pass"


_NOT_APPLIED = {"applied": 0.0, "resolved": 0.0, "fail_to_pass": 0.0, "pass_to_pass": 0.0}
BACKENDS = ("local", "swebench")


class SweTestsEvaluator:
    """Run the task's tests on the patched repository (see the module docstring).

    backend "local": `repos_dir/<owner>__<name>` is a git clone of each row's `repo` holding its
    base_commit (e.g. `git clone https://github.com/django/django repos/django__django`). Each
    call clones it into a temporary directory (`git clone --shared`: no copy of the objects, the
    source clone is never written), checks out base_commit, `git apply`s the patch, restores the
    files test_patch touches and applies it, then runs `test_cmd` + the test ids with `timeout_s`
    per run, in the environment this process runs in (install each repo's dependencies there).
    All tests in one run first; when that fails and `shaped` is true, each test alone, to score
    the fractions (false: 0). The test ids go to `test_cmd` as the row has them: pytest node ids
    for most SWE-bench repos; Django's "test_x (module.Class)" ids need its own runner or the
    swebench backend.
    backend "swebench": the official harness in Docker (`python -m swebench.harness.run_evaluation`
    on an instance file written from the row); needs a Docker engine and `pip install swebench`.
    """

    name = "swe_tests"

    def __init__(
        self,
        backend: str = "local",
        repos_dir: str | None = None,
        test_cmd: str = "python -m pytest -x -q",
        timeout_s: float = 900,
        shaped: bool = True,
    ):
        if backend not in BACKENDS:
            raise FieldError("reward.backend", f"must be one of {', '.join(BACKENDS)}, got {backend!r}")
        if isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float)) or not timeout_s > 0:
            raise FieldError("reward.timeout_s", f"must be a positive number of seconds, got {timeout_s!r}")
        if not isinstance(shaped, bool):
            raise FieldError("reward.shaped", f"must be true or false, got {shaped!r}")
        if not isinstance(test_cmd, str) or not shlex.split(test_cmd):
            raise FieldError(
                "reward.test_cmd", f"must be a command line, e.g. 'python -m pytest -x -q', got {test_cmd!r}"
            )
        self.backend, self.test_cmd, self.timeout_s, self.shaped = backend, test_cmd, float(timeout_s), shaped
        self.repos_dir = None
        if backend == "local":
            if not isinstance(repos_dir, str) or not repos_dir:
                raise FieldError(
                    "reward.repos_dir",
                    "backend 'local' needs a directory of git clones named <owner>__<name> (e.g. repos/django__django)",
                )
            self.repos_dir = Path(repos_dir).expanduser()
            if not self.repos_dir.is_dir():
                raise ValueError(f"reward.repos_dir {repos_dir!r}: no such directory ({self.repos_dir.absolute()})")
            if shutil.which("git") is None:
                raise ValueError("reward.backend 'local': no `git` command on PATH")
        else:
            problem = docker_problem()
            if problem:
                raise ValueError(
                    f"reward.backend 'swebench' runs the official harness in Docker, but {problem}; "
                    "start a Docker engine, or use backend 'local'"
                )
            if importlib.util.find_spec("swebench") is None:
                raise ValueError(
                    "reward.backend 'swebench': the swebench package is not installed: pip install swebench"
                )

    def __call__(self, completion: str, row: dict) -> Evaluation:
        for key in ("repo", "base_commit"):
            if not isinstance(row.get(key), str) or not row[key]:
                raise ValueError(f"row {row.get('row_id', '?')}: no {key!r} (a SWE-bench row is needed)")
        f2p, p2p = _tests(row)
        if not f2p and not p2p:
            raise ValueError(f"row {row.get('row_id', '?')}: FAIL_TO_PASS and PASS_TO_PASS are both empty")
        text = extract_patch(completion)
        if text is None:
            return Evaluation(0.0, NO_DIFF, metrics=dict(_NOT_APPLIED))
        try:
            parse_patch(text)
        except ValueError as error:
            return Evaluation(0.0, str(error), metrics=dict(_NOT_APPLIED))
        if self.backend == "local":
            return self._local(text, row, f2p, p2p)
        return self._swebench(text, row)

    # -- local ---------------------------------------------------------------------------

    def _local(self, patch: str, row: dict, f2p: list[str], p2p: list[str]) -> Evaluation:
        clone = self.repos_dir / repo_dir_name(row["repo"])
        if not (clone / ".git").exists() and not (clone / "HEAD").is_file():
            raise FieldError(
                "reward.repos_dir",
                f"no git clone of {row['repo']} at {clone} "
                f"(expected layout <repos_dir>/<owner>__<name>; e.g. "
                f"git clone https://github.com/{row['repo']} {clone})",
            )
        with tempfile.TemporaryDirectory(prefix="knobsweep-swe-") as tmp:
            work = Path(tmp) / "repo"
            _git(Path(tmp), "clone", "--quiet", "--shared", "--no-checkout", str(clone.absolute()), str(work))
            checkout = _git(work, "checkout", "--quiet", "--detach", row["base_commit"], check=False)
            if checkout.returncode != 0:
                raise ValueError(
                    f"row {row.get('row_id', '?')}: base_commit {row['base_commit']} is not in {clone} "
                    f"(git: {_last_line(checkout.stderr)}); fetch it there"
                )
            patch_file = Path(tmp) / "model.patch"
            patch_file.write_text(patch)
            applied = _git(work, "apply", "--whitespace=nowarn", str(patch_file), check=False)
            if applied.returncode != 0:
                return Evaluation(
                    0.0, f"patch does not apply: {_last_line(applied.stderr)}", metrics=dict(_NOT_APPLIED)
                )
            self._apply_test_patch(work, Path(tmp), row)
            every = list(dict.fromkeys(f2p + p2p))
            if self._passes(work, every):
                f2p_ok, p2p_ok = [True] * len(f2p), [True] * len(p2p)
                score, metrics = _score(f2p_ok, p2p_ok)
                return Evaluation(score, "resolved: " + _tests_reason(f2p_ok, p2p_ok), metrics=metrics)
            if not self.shaped:
                return Evaluation(
                    0.0,
                    f"tests fail ({len(every)} run together; shaped: false)",
                    metrics={"applied": 1.0, "resolved": 0.0},
                )
            f2p_ok = [self._passes(work, [test]) for test in f2p]
            p2p_ok = [self._passes(work, [test]) for test in p2p]
            score, metrics = _score(f2p_ok, p2p_ok)
            note = "; every test passes alone but not together" if metrics["resolved"] else ""
            return Evaluation(score, _tests_reason(f2p_ok, p2p_ok) + note, metrics=metrics)

    def _apply_test_patch(self, work: Path, tmp: Path, row: dict) -> None:
        test_patch = row.get("test_patch")
        if not isinstance(test_patch, str) or not test_patch.strip():
            return
        # As the official harness does: the test files as at base_commit, whatever the model did to them.
        for path in parse_patch(test_patch):
            restored = _git(work, "checkout", row["base_commit"], "--", path, check=False)
            if restored.returncode != 0 and (work / path).exists():
                (work / path).unlink()  # a file the model created that the test patch adds
        file = tmp / "test.patch"
        file.write_text(test_patch if test_patch.endswith("\n") else test_patch + "\n")
        applied = _git(work, "apply", "--whitespace=nowarn", str(file), check=False)
        if applied.returncode != 0:
            raise ValueError(
                f"row {row.get('row_id', '?')}: test_patch does not apply at base_commit "
                f"{row['base_commit']}: {_last_line(applied.stderr)}"
            )

    def _passes(self, work: Path, tests: list[str]) -> bool:
        env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
        try:
            result = subprocess.run(
                shlex.split(self.test_cmd) + tests, cwd=work, env=env, capture_output=True, timeout=self.timeout_s
            )
        except subprocess.TimeoutExpired:
            return False  # a hang is a failing test
        return result.returncode == 0

    # -- swebench ------------------------------------------------------------------------

    def _swebench(self, patch: str, row: dict) -> Evaluation:
        import sys

        instance_id = row.get("instance_id") or row.get("row_id")
        instance = {
            "instance_id": instance_id,
            "repo": row["repo"],
            "base_commit": row["base_commit"],
            "patch": row.get("ground_truth", ""),
            "test_patch": row.get("test_patch") or "",
            "FAIL_TO_PASS": json.dumps(_tests(row)[0]),
            "PASS_TO_PASS": json.dumps(_tests(row)[1]),
            "version": row.get("version") or "",
            "environment_setup_commit": row.get("environment_setup_commit") or "",
            "problem_statement": "",
            "hints_text": "",
            "created_at": "",
        }
        with tempfile.TemporaryDirectory(prefix="knobsweep-swebench-") as tmp:
            work = Path(tmp)
            (work / "instances.json").write_text(json.dumps([instance]))
            prediction = {"instance_id": instance_id, "model_name_or_path": "knobsweep", "model_patch": patch}
            (work / "predictions.jsonl").write_text(json.dumps(prediction) + "\n")
            command = [
                sys.executable,
                "-m",
                "swebench.harness.run_evaluation",
                "--dataset_name",
                str(work / "instances.json"),
                "--predictions_path",
                str(work / "predictions.jsonl"),
                "--instance_ids",
                instance_id,
                "--max_workers",
                "1",
                "--timeout",
                str(int(self.timeout_s)),
                "--run_id",
                "knobsweep",
            ]
            # Image builds come on top of the tests' own timeout.
            result = subprocess.run(command, cwd=work, capture_output=True, text=True, timeout=self.timeout_s + 3600)
            reports = list((work / "logs" / "run_evaluation").glob(f"knobsweep/*/{instance_id}/report.json"))
            if not reports:
                logs = "".join(p.read_text(errors="replace") for p in (work / "logs").rglob("run_instance.log"))
                if "Patch Apply Failed" in logs:
                    return Evaluation(0.0, "patch does not apply (swebench harness)", metrics=dict(_NOT_APPLIED))
                raise RuntimeError(
                    f"swebench harness wrote no report for {instance_id} (exit {result.returncode}): "
                    f"{(result.stderr or result.stdout)[-500:]}"
                )
            report = json.loads(reports[0].read_text())[instance_id]
        if not report.get("patch_successfully_applied", True):
            return Evaluation(0.0, "patch does not apply (swebench harness)", metrics=dict(_NOT_APPLIED))
        status = report.get("tests_status", {})
        f2p = [True] * len(status.get("FAIL_TO_PASS", {}).get("success", [])) + [False] * len(
            status.get("FAIL_TO_PASS", {}).get("failure", [])
        )
        p2p = [True] * len(status.get("PASS_TO_PASS", {}).get("success", [])) + [False] * len(
            status.get("PASS_TO_PASS", {}).get("failure", [])
        )
        score, metrics = _score(f2p, p2p)
        if report.get("resolved"):
            score, metrics["resolved"] = 1.0, 1.0
        reason = ("resolved: " if metrics["resolved"] else "") + _tests_reason(f2p, p2p)
        return Evaluation(score, reason, metrics=metrics)

    def __repr__(self) -> str:
        repos_dir = str(self.repos_dir) if self.repos_dir else None
        return (
            f"SweTestsEvaluator(backend={self.backend!r}, repos_dir={repos_dir!r}, "
            f"test_cmd={self.test_cmd!r}, timeout_s={self.timeout_s}, shaped={self.shaped})"
        )


def docker_problem() -> str | None:
    """Why no Docker engine can be used here, or None when `docker info` answers."""
    docker = shutil.which("docker")
    if docker is None:
        return "there is no `docker` command on PATH"
    try:
        result = subprocess.run(
            [docker, "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True, timeout=30
        )
    except subprocess.TimeoutExpired:
        return "`docker info` did not answer within 30 s"
    if result.returncode != 0:
        return f"the Docker engine is not reachable (`docker info`: {_last_line(result.stderr or result.stdout)})"
    return None


def _git(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_CONFIG_NOSYSTEM": "1"}
    result = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed in {cwd}: {_last_line(result.stderr)}")
    return result


def _last_line(text: str) -> str:
    lines = [line for line in (text or "").strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else "(no message)"

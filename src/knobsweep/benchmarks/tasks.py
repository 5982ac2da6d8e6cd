"""Which lm-eval tasks a benchmarks section names, what they read, and whether they can run on this machine.

A name is looked up first among the local task YAMLs of `include_path` (lm-eval's own index of that folder,
fast), then among the tasks lm-eval ships (its full index: about 20 s, paid only when a name is not local).
The fingerprint of a task is what its results depend on: the bytes of its YAML (and the YAMLs it includes),
the Python files beside it (its `!function`s), the local data files it reads, and lm-eval's version; it goes
into the benchmark stage's key. A task that reads a hub dataset needs the hub or a copy in the local
Hugging Face cache: without either, it fails here, at validation, naming the task, the dataset and why.
"""

from __future__ import annotations

import functools
import importlib.metadata
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import yaml

from knobsweep.errors import FieldError, did_you_mean
from knobsweep.io import file_sha256

# datasets' packaged loaders: their data_files are local files (or URLs) named in the task YAML
FILE_LOADERS = ("json", "csv", "parquet", "arrow", "text")
FIELD = "eval.benchmarks"
HUB_TIMEOUT_S = 10


def lm_eval_version() -> str:
    return importlib.metadata.version("lm-eval")


@dataclass
class LocalEntry:
    """A local task YAML as lm-eval's index sees it (lm_eval.tasks._index.Entry's fields that matter here)."""

    name: str
    kind: SimpleNamespace  # .name: TASK, PY_TASK, GROUP or TAG, as lm-eval's Kind
    yaml_path: Path | None
    cfg: dict | None = None
    tags: set[str] = field(default_factory=set)


def _kind(name: str) -> SimpleNamespace:
    return SimpleNamespace(name=name)


class _TaskLoader(yaml.SafeLoader):
    """YAML as lm-eval's index reads it: `!function utils.f` is left as text (nothing is imported)."""


_TaskLoader.add_constructor("!function", lambda loader, node: loader.construct_scalar(node))


def _task_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    """A task YAML with the files it `include`s merged underneath (its own keys win), as lm-eval loads it."""
    if path in seen:
        raise ValueError(f"include cycle at {path}")
    with path.open("rb") as handle:
        cfg = yaml.load(handle, Loader=_TaskLoader)  # noqa: S506 - a SafeLoader with one tag added
    if not isinstance(cfg, dict):
        raise ValueError(f"{path}: not a mapping")
    included = cfg.pop("include", None) or []
    merged: dict = {}
    for name in included if isinstance(included, list) else [included]:
        merged.update(_task_yaml((path.parent / name).resolve(), (*seen, path)))
    return {**merged, **cfg}


def local_index(include_path: str) -> dict[str, LocalEntry]:
    """name -> entry of the task YAMLs under `include_path` (tasks, groups and tags). The YAMLs are read here,
    as lm-eval's index reads them, because importing lm-eval's task index imports datasets, pandas and pyarrow
    (seconds), which validating a spec must not pay."""
    folder = Path(include_path)
    if not folder.is_dir():
        raise FieldError(
            f"{FIELD}.include_path",
            f"{include_path!r}: no such folder ({folder.absolute()}); it holds local lm-eval task YAMLs "
            "(this repository's: lm_eval_tasks)",
        )
    index: dict[str, LocalEntry] = {}
    for path in sorted(folder.glob("**/*.yaml"), key=lambda p: p.as_posix()):
        try:
            cfg = _task_yaml(path.resolve())
        except (OSError, ValueError, yaml.YAMLError):
            continue  # lm-eval skips what it cannot read, too
        if "group" in cfg and "class" not in cfg:
            index.setdefault(str(cfg["group"]), LocalEntry(str(cfg["group"]), _kind("GROUP"), path, cfg))
        elif isinstance(cfg.get("task"), str):
            name = cfg["task"]
            index.setdefault(name, LocalEntry(name, _kind("PY_TASK" if "class" in cfg else "TASK"), path, cfg))
            tags = cfg.get("tag") or []
            for tag in tags if isinstance(tags, list) else [tags]:
                index.setdefault(str(tag), LocalEntry(str(tag), _kind("TAG"), None)).tags.add(name)
    return index


@functools.cache
def builtin_index() -> dict[str, Any]:
    """name -> Entry of every task lm-eval ships (read once per process: indexing takes seconds)."""
    from lm_eval.tasks import TaskManager

    return TaskManager().task_index


def tasks_fingerprint(section: dict) -> dict[str, dict[str, str]]:
    """{task name: {what it reads: sha256 or version}} for every task of a benchmarks section; a FieldError
    naming the task when it is unknown or needs what this machine lacks."""
    local = local_index(section["include_path"])
    out = {}
    for index, name in enumerate(section["tasks"]):
        where = f"{FIELD}.tasks[{index}]"
        out[name] = {"lm_eval": lm_eval_version(), **_entry_files(name, local, where, set())}
    return out


def _entry(name: str, local: dict[str, Any], where: str) -> Any:
    if name in local:
        return local[name]
    index = builtin_index()
    if name in index:
        return index[name]
    raise FieldError(
        where,
        f"{name!r} is neither a task of the local folder ({', '.join(sorted(local)) or 'none'}) nor one lm-eval "
        f"{lm_eval_version()} knows{did_you_mean(name, [*local, *index], most=3)}; `lm_eval ls tasks` lists them",
    )


def _entry_files(name: str, local: dict[str, Any], where: str, seen: set[str]) -> dict[str, str]:
    """What one task (or every member of a group or tag) reads, each file with its sha256."""
    if name in seen:
        return {}
    seen.add(name)
    entry = _entry(name, local, where)
    kind = entry.kind.name
    if kind == "TAG":
        members = sorted(entry.tags)
    elif kind == "GROUP":
        members = [m if isinstance(m, str) else m.get("task", "") for m in (entry.cfg or {}).get("task", [])]
    else:
        members = []
    files = _definition_files(entry, name in local)
    for member in members:
        if isinstance(member, str) and member:
            files.update(_entry_files(member, local, where, seen))
    if kind in ("TASK", "PY_TASK"):
        files.update(_data_files(name, entry.cfg or {}, where))
    return files


def _definition_files(entry: Any, is_local: bool) -> dict[str, str]:
    """A local task's YAML, the YAMLs it includes and the Python files beside it; an lm-eval task is
    identified by lm-eval's version (its YAMLs ship inside the package)."""
    if not is_local or entry.yaml_path is None:
        return {}
    path = Path(entry.yaml_path)
    files = {path, *path.parent.glob("*.py")}
    files.update(_includes(path, set()))
    return {_shown(file): file_sha256(file) for file in sorted(files)}


def _includes(path: Path, seen: set[Path]) -> set[Path]:
    if path in seen:
        return set()
    seen.add(path)
    with path.open("rb") as handle:
        raw = yaml.load(handle, Loader=_TaskLoader)  # noqa: S506 - a SafeLoader with one tag added
    found = set()
    included = (raw or {}).get("include") or [] if isinstance(raw, dict) else []
    for name in included if isinstance(included, list) else [included]:
        child = (path.parent / name).resolve()
        if child.is_file():
            found |= {child, *_includes(child, seen)}
    return found


def _data_files(name: str, cfg: dict, where: str) -> dict[str, str]:
    """The local data a task reads, hashed; for a hub dataset, a check that it can be read here."""
    dataset = cfg.get("dataset_path")
    if cfg.get("custom_dataset") is not None or not isinstance(dataset, str):
        return {}  # its own loader (a `!function` beside the YAML, hashed with it)
    if dataset in FILE_LOADERS:
        return {_shown(file): file_sha256(file) for file in _named_files(name, cfg, where)}
    local = Path(dataset).expanduser()
    if local.exists():
        files = sorted(p for p in local.rglob("*") if p.is_file()) if local.is_dir() else [local]
        return {_shown(file): file_sha256(file) for file in files}
    revision = (cfg.get("dataset_kwargs") or {}).get("revision")
    problem = hub_problem(dataset, cfg.get("dataset_name"), revision)
    if problem:
        raise FieldError(where, f"task {name!r} reads the Hugging Face hub dataset {dataset!r}, and {problem}")
    return {dataset: f"hub:{dataset}@{cfg.get('dataset_name')}" + (f"@{revision}" if revision else "")}


def _named_files(name: str, cfg: dict, where: str) -> list[Path]:
    files = (cfg.get("dataset_kwargs") or {}).get("data_files")
    if isinstance(files, dict):
        names = [f for value in files.values() for f in (value if isinstance(value, list) else [value])]
    else:
        names = files if isinstance(files, list) else [files] if files else []
    if not names:
        raise FieldError(
            where, f"task {name!r} loads {cfg['dataset_path']!r} files but names none (dataset_kwargs.data_files)"
        )
    paths = []
    for file in names:
        if "://" in str(file):
            raise FieldError(where, f"task {name!r} reads {file!r} over the network; name a local file")
        path = Path(str(file)).expanduser()
        if not path.is_file():
            raise FieldError(
                where,
                f"task {name!r} reads {file!r}, which is not a file ({path.absolute()}); its paths are relative to "
                "the working directory (the repository root)",
            )
        paths.append(path)
    return paths


@functools.cache
def hub_problem(dataset: str, config: str | None, revision: str | None) -> str | None:
    """Why a hub dataset cannot be read here (None: it is in the local cache, or the hub answers)."""
    import huggingface_hub
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        huggingface_hub.snapshot_download(dataset, repo_type="dataset", revision=revision, local_files_only=True)
        return None
    except (LocalEntryNotFoundError, OSError, ValueError):
        pass
    try:
        huggingface_hub.HfApi().dataset_info(dataset, revision=revision, timeout=HUB_TIMEOUT_S)
    except HfHubHTTPError as error:
        return f"the hub refuses it ({error.response.status_code if error.response is not None else error})"
    except Exception as error:  # no network, DNS, proxy, offline mode: all mean "not from here"
        return (
            f"it is not in the local Hugging Face cache and the hub cannot be reached from this machine "
            f"({type(error).__name__}: {str(error)[:160]}); run where the hub is reachable, or use a local task "
            "(a YAML with dataset_path: json in eval.benchmarks.include_path)"
        )
    return None


def _shown(path: Path) -> str:
    """A path as the fingerprint names it: relative to the working directory where it is under it."""
    resolved = path.resolve()
    try:
        return resolved.relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return resolved.as_posix()

"""The `data:` options of each built-in source: one model per converter, told apart by `source`.

They join the run config's schema (editor completion for `data:` options, the same error wording as
every other knob) and are what the converters read. A cross-field rule raises FieldError naming the
field it is about. A third-party source (an entry point of `knobsweep.sources`) has no model here: its
section is `PluginOptions`, every key allowed, and its converter's own `resolve_options` checks it.
"""

from __future__ import annotations

import functools
import operator
import typing
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator, model_validator

from knobsweep.errors import FieldError, did_you_mean
from knobsweep.hub import looks_like_hub_id
from knobsweep.registry import BUILTIN_SOURCES, FORMATS, SOURCES, converter
from knobsweep.spec.validate import SEED_MAX, StrictScalars, parse

NonEmpty = Annotated[str, Field(min_length=1)]


class SourceOptions(StrictScalars):
    """What every source has, under one name each: the row format, how many train / eval rows (each split is
    shuffled with the seed, then cut to its size) and the seed. An option of the previous release that has
    a new name (RENAMED) is an unknown key whose message gives the new one (spec.validate)."""

    model_config = ConfigDict(extra="forbid", validate_default=True)

    RENAMED: ClassVar[dict[str, str]] = {}  # an option of the previous release -> what to write instead

    format: Literal[FORMATS] | None = Field(
        None, description="row format to produce; null = the one train.method reads (grpo: rl, sft: sft, kto: kto)"
    )
    train_size: int | None = Field(None, ge=1, description="train rows, after a seeded shuffle; null = all")
    eval_size: int | None = Field(None, ge=1, description="eval rows, after a seeded shuffle; null = all")
    seed: int = Field(0, ge=0, le=SEED_MAX, description="seed of the shuffles and splits")

    @classmethod
    def formats(cls) -> tuple[str, ...]:
        """The row formats it can produce (the values of its `format` field), its default first."""
        literal = next(arg for arg in typing.get_args(cls.model_fields["format"].annotation) if arg is not type(None))
        return typing.get_args(literal)


class Gsm8kOptions(SourceOptions):
    """GSM8K: a folder of <split>.jsonl files or a hub dataset (docs/datasets.md)."""

    source: Literal["gsm8k"] = "gsm8k"
    path: NonEmpty = Field("openai/gsm8k", description="a folder holding <split>.jsonl, or a hub dataset id")
    hub_config: str | None = Field("main", description="the hub dataset's config")
    train_split: NonEmpty = "train"
    eval_split: NonEmpty = "test"


class CustomOptions(SourceOptions):
    """Your own rows: JSON lines (`jsonl`), Parquet (`parquet`) or a Hugging Face dataset (`hf`)."""

    source: Literal["jsonl", "parquet", "hf"]
    path: NonEmpty | None = Field(None, description="a file, a folder of <split>.<ext> files, or (hf) a hub id")
    train_files: list[NonEmpty] | None = Field(None, min_length=1, description="train files, concatenated")
    eval_files: list[NonEmpty] | None = Field(None, min_length=1, description="eval files, concatenated")
    hub_config: NonEmpty | None = Field(None, description="hf only: the dataset's config")
    revision: NonEmpty | None = Field(None, description="hf only: the dataset's revision (pin it to be sure)")
    train_split: NonEmpty = "train"
    eval_split: NonEmpty | None = Field("test", description="null when eval rows come from eval_files / eval_ratio")
    eval_ratio: float | None = Field(None, gt=0, lt=1, description="share of the train rows held out for eval")
    prompt_key: NonEmpty = "prompt"
    response_key: NonEmpty = "response"
    label_key: NonEmpty = "label"
    messages_key: NonEmpty = "messages"
    ground_truth_key: NonEmpty = "ground_truth"
    system_prompt: str | None = Field(None, description="put in front of every prompt as a system message")
    extra_keys: list[NonEmpty] = Field(default_factory=list, description="more columns passed to the evaluator")

    RESERVED: ClassVar[tuple[str, ...]] = ("row_id", "prompt", "ground_truth", "completion", "messages", "label")

    @field_validator("train_files", "eval_files", mode="before")
    @classmethod
    def _one_file(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("system_prompt")
    @classmethod
    def _not_blank(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("must be a non-empty string or null")
        return value

    @field_validator("extra_keys")
    @classmethod
    def _extra_columns(cls, keys: list[str]) -> list[str]:
        if len(set(keys)) != len(keys):
            raise ValueError("lists a column twice")
        clash = [key for key in keys if key in cls.RESERVED]
        if clash:
            raise ValueError(
                f"{clash[0]!r} is an output column of its own ({', '.join(cls.RESERVED)}); map it with "
                "data.prompt_key / ground_truth_key / ... instead"
            )
        return keys

    @model_validator(mode="after")
    def _where_rows_come_from(self) -> CustomOptions:
        if self.source == "hf":
            if self.path is None:
                raise FieldError(
                    "path",
                    "source 'hf' needs a hub dataset id (e.g. 'openai/gsm8k'), a directory "
                    "written by Dataset.save_to_disk, or a loader name with data.train_files (e.g. 'json')",
                )
        elif (self.path is None) == (self.train_files is None):
            raise FieldError(
                "path",
                f"source {self.source!r} needs exactly one of data.path (a file or a directory) "
                f"and data.train_files (a list of files), got {'both' if self.path else 'neither'}",
            )
        else:
            for key in ("hub_config", "revision"):
                if getattr(self, key) is not None:
                    raise FieldError(key, f"only for source 'hf' (got source {self.source!r})")
        # Eval rows come from one place: eval_ratio (held out), eval_files, or the eval_split. What is not
        # read is recorded as null, so that resolving twice gives the same options.
        split_given = "eval_split" in self.model_fields_set and self.eval_split is not None
        if self.eval_ratio is not None:
            for key, given in (("eval_files", self.eval_files is not None), ("eval_split", split_given)):
                if given:
                    raise FieldError("eval_ratio", f"eval rows come from data.{key} or from data.eval_ratio, not both")
            self.eval_split = None
        elif self.eval_files is not None and self.source != "hf":  # hf names the eval_files' split
            if split_given:
                raise FieldError("eval_split", "eval rows come from data.eval_files or data.eval_split, not both")
            self.eval_split = None
        elif self.eval_split is None:
            raise FieldError("eval_split", "must be a split name (or set data.eval_files or data.eval_ratio)")
        return self


class OpenSpielOptions(SourceOptions):
    """Positions of OpenSpiel games (`cases`, or `games` x `game_configs`), drawn with seeded random moves."""

    MAX_TASKS: ClassVar[int] = 1_000_000  # keeps the train and eval seed ranges apart
    RENAMED: ClassVar[dict[str, str]] = {
        "num_tasks_per_case": "data.train_size (the train positions of all cases together: 100 per case x 3 = 300)",
        "eval_tasks_per_case": "data.eval_size (the eval positions of all cases together: 20 per case x 3 = 60)",
    }

    source: Literal["openspiel"]
    format: Literal["rl"] | None = None
    cases: list[str] | None = Field(None, min_length=1, description="OpenSpiel load strings, e.g. hex(board_size=5)")
    games: list[str] | None = Field(None, min_length=1, description="game names, each played with every game_config")
    game_configs: list[dict[str, Any]] | None = Field(None, min_length=1, description="game parameter mappings")
    train_size: int = Field(
        100, ge=1, le=MAX_TASKS, description="train positions of all cases together, spread evenly over them"
    )
    eval_size: int = Field(
        20,
        ge=1,
        le=MAX_TASKS,
        description="eval positions of all cases together (before repeats of train positions are dropped)",
    )
    min_random_steps: int = Field(0, ge=0, le=100_000, description="random moves played before a position, at least")
    max_random_steps: int = Field(10, ge=0, le=100_000, description="... and at most")
    seed: int = Field(0, ge=0, le=2**31 - 1, description="task i of a split uses seed + i (eval: + 1,000,000)")
    eval_overlap: Literal["drop", "keep"] = Field("drop", description="eval positions that are also train positions")

    @model_validator(mode="after")
    def _cases(self) -> OpenSpielOptions:
        """games x game_configs expanded into `cases` (both set to null), every case loaded by OpenSpiel."""
        if self.min_random_steps > self.max_random_steps:
            raise FieldError(
                "min_random_steps",
                f"{self.min_random_steps} is more than data.max_random_steps ({self.max_random_steps})",
            )
        seen: dict[str, str] = {}
        for path, config, load_string in self._labelled_cases():
            if load_string in seen:
                raise FieldError(path, f"{config}{load_string!r} is listed twice (also data.{seen[load_string]})")
            seen[load_string] = path
            _check_game(path, config, load_string)
        for option in ("train_size", "eval_size"):
            if getattr(self, option) < len(seen):
                raise FieldError(option, f"{getattr(self, option)} positions for {len(seen)} cases: at least one each")
        self.cases, self.games, self.game_configs = list(seen), None, None
        return self

    def per_case(self, size: int) -> list[int]:
        """`size` positions spread over the cases: the first ones get one more while the remainder lasts."""
        share, extra = divmod(size, len(self.cases))
        return [share + (index < extra) for index in range(len(self.cases))]

    def _labelled_cases(self) -> list[tuple[str, str, str]]:
        """[(the path of the option that names it, "with data.game_configs[j]: " or "", load string)] from
        `cases` or from games x game_configs."""
        if self.cases is not None and self.games is not None:
            raise FieldError(
                "cases",
                "give data.cases or data.games, not both (games x game_configs is another "
                "way to write a list of cases)",
            )
        if self.game_configs is not None and self.games is None:
            raise FieldError("game_configs", "needs data.games (the games to apply each config to)")
        if self.cases is None and self.games is None:
            raise FieldError(
                "cases",
                "required: a list of OpenSpiel load strings such as "
                "['tic_tac_toe', 'hex(board_size=5)'] (or data.games with data.game_configs)",
            )
        if self.cases is not None:
            for i, case in enumerate(self.cases):
                if not case.strip() or case != case.strip():
                    raise FieldError(f"cases[{i}]", f"must be a load string without surrounding spaces, got {case!r}")
            return [(f"cases[{i}]", "", case) for i, case in enumerate(self.cases)]
        for i, game in enumerate(self.games):
            if not game or any(c in game for c in "()=, "):
                raise FieldError(
                    f"games[{i}]",
                    f"must be a game name without parameters, got {game!r}; put "
                    "parameters in data.game_configs, or list whole load strings in data.cases",
                )
        configs = [{}] if self.game_configs is None else self.game_configs
        params = [_parameters(j, config) for j, config in enumerate(configs)]
        return [
            (
                f"games[{i}]",
                f"with data.game_configs[{j}]: " if self.game_configs is not None else "",
                f"{game}({param})" if param else game,
            )
            for i, game in enumerate(self.games)
            for j, param in enumerate(params)
        ]


def _parameters(index: int, config: dict) -> str:
    """A game_configs mapping as OpenSpiel parameter text: "a=1,b=True" (keys in order)."""
    parts = []
    for key in sorted(config, key=str):
        value = config[key]
        if not key.isidentifier():
            raise FieldError(f"game_configs[{index}]", f"parameter names must be identifiers, got {key!r}")
        if isinstance(value, (bool, int)):
            text = str(value)
        elif isinstance(value, float):
            text = repr(value)
        elif isinstance(value, str) and value and not any(c in value for c in "()=,"):
            text = value
        else:
            raise FieldError(
                f"game_configs[{index}].{key}",
                f"must be a number, a boolean or a string without "
                f"( ) = , , got {value!r}; write nested games as whole load strings in data.cases",
            )
        parts.append(f"{key}={text}")
    return ",".join(parts)


def _check_game(path: str, config: str, load_string: str) -> None:
    """OpenSpiel loads `load_string`, and it is a game the converter can draw one-move tasks from."""
    try:
        import pyspiel
    except ImportError as error:
        raise FieldError(
            "source", f"openspiel needs the open_spiel package: pip install 'knobsweep[openspiel]' ({error})"
        ) from None

    from knobsweep.rewards.openspiel import load_game, unsupported_reason

    try:
        game = load_game(load_string)
    except pyspiel.SpielError as error:
        message = str(error).splitlines()[0]
        if message.startswith("Unknown game"):  # OpenSpiel lists all ~130 games: name the closest
            name = load_string.split("(")[0]
            message = f"unknown game {name!r}{did_you_mean(name, pyspiel.registered_names(), most=3)}"
        raise FieldError(path, f"{config}OpenSpiel cannot load {load_string!r}: {message}") from error
    reason = unsupported_reason(game)
    if reason is not None:
        raise FieldError(path, f"{config}{load_string!r} {reason}")


class SweInputs(SourceOptions):
    """Where SWE task files come from: one path (a hub id, a file or a folder) or several local paths."""

    HUB_DEFAULT: ClassVar[str]  # the hub dataset read when neither path nor paths is given
    RENAMED: ClassVar[dict[str, str]] = {"hub_split": "data.train_split"}

    path: NonEmpty | None = Field(None, description="a hub dataset id, or a local file or folder")
    paths: list[NonEmpty] | None = Field(None, min_length=1, description="several local files or folders, in order")
    hub_config: str | None = Field(None, description="the hub dataset's config")

    @model_validator(mode="after")
    def _one_input(self) -> SweInputs:
        if self.path is not None and self.paths is not None:
            raise FieldError("paths", "give data.path or data.paths, not both (paths for several local files)")
        return self

    @property
    def is_hub(self) -> bool:
        return self.paths is None and self.path is not None and looks_like_hub_id(self.path)


class SweBenchOptions(SweInputs):
    """SWE-bench task instances -> rl rows (docs/datasets.md)."""

    HUB_DEFAULT: ClassVar[str] = "princeton-nlp/SWE-bench_Lite"

    source: Literal["swe_bench"]
    format: Literal["rl"] | None = None
    train_split: NonEmpty = Field("test", description="the hub split read; eval_ratio holds out the eval rows")
    cache_dir: NonEmpty | None = Field(None, description="a folder of task_{i}.json files (written from the hub)")
    use_cache_only: bool = Field(False, description="read only cache_dir, no network")
    task_ids: list[NonEmpty] | None = Field(None, min_length=1, description="keep these instance ids")
    task_id_range: tuple[Annotated[int, Field(ge=0)], Annotated[int, Field(ge=0)]] | None = Field(
        None, description="[start, end): keep the tasks whose 0-based index is in this range"
    )
    eval_ratio: float = Field(0.2, gt=0, lt=1, description="share of the tasks for the eval split")

    @model_validator(mode="after")
    def _cache(self) -> SweBenchOptions:
        if self.task_id_range is not None and self.task_id_range[0] >= self.task_id_range[1]:
            raise FieldError("task_id_range", f"{list(self.task_id_range)}: must be [start, end) with start < end")
        if self.use_cache_only:
            if self.cache_dir is None:
                raise FieldError("use_cache_only", "true needs data.cache_dir (a directory of task_{i}.json files)")
            if self.path is not None or self.paths is not None:
                raise FieldError("use_cache_only", "true reads only data.cache_dir; remove data.path / data.paths")
        elif self.path is None and self.paths is None:
            self.path = self.HUB_DEFAULT
        if self.cache_dir is not None and not self.use_cache_only and not self.is_hub:
            raise FieldError(
                "cache_dir",
                "caches a hub dataset's tasks; with a local data.path / data.paths leave it "
                "out (or set use_cache_only: true and drop the path)",
            )
        return self


class SweSynthOptions(SweInputs):
    """SWE agent trajectories -> sft rows (docs/datasets.md)."""

    HUB_DEFAULT: ClassVar[str] = "swesynth/SWE-Synth_Moatless-SFT-Trajectories"

    source: Literal["swe_synth"]
    format: Literal["sft"] | None = None
    train_split: NonEmpty = Field("train", description="the hub split read; eval_ratio holds out the eval rows")
    mode: Literal["trajectory", "patch"] = Field("trajectory", description="whole conversations, or issue -> patch")
    prompt_from: Literal["messages", "problem_statement"] = Field(
        "messages", description="patch mode / eval prompts: the turns before the first assistant turn, or the issue"
    )
    tool_role: Literal["user", "tool"] = Field("user", description="the role tool outputs become")
    max_length: int | None = Field(
        None, ge=16, description="tokens per row (a character budget with chars_per_token); null = no truncation"
    )
    chars_per_token: float = Field(3.5, ge=0.5, le=20, description="characters per token of the budget")
    eval_ratio: float = Field(0.1, gt=0, lt=1, description="share of the rows for the eval split")

    @model_validator(mode="after")
    def _hub_default(self) -> SweSynthOptions:
        if self.path is None and self.paths is None:
            self.path = self.HUB_DEFAULT
        return self


class ReasoningGymTask(StrictScalars):
    """One reasoning-gym generator of a mixture: its name, its share of the rows and its options."""

    model_config = ConfigDict(extra="forbid", validate_default=True)

    name: NonEmpty = Field(..., description="a reasoning-gym dataset name, e.g. leg_counting, basic_arithmetic")
    weight: float = Field(1.0, gt=0, le=1_000_000, description="its share of each split's rows, against the others'")
    config: dict[str, Any] = Field(
        default_factory=dict, description="the generator's options (its config dataclass's fields, less seed and size)"
    )


class ReasoningGymOptions(SourceOptions):
    """Procedurally generated reasoning tasks (reasoning-gym's create_dataset), scored by its own score_answer."""

    MAX_SIZE: ClassVar[int] = 1_000_000  # rows of a task per split: keeps the train and eval seed ranges apart
    SYSTEM_PROMPTS: ClassVar[tuple[str, ...]] = ("default", "DeepSeekZero", "simple", "direct", "chain_of_draft")

    source: Literal["reasoning_gym"]
    format: Literal["rl", "sft"] | None = Field(
        None, description="rl (prompts scored by the evaluator) or sft (the answer in <answer> tags as the completion)"
    )
    tasks: list[ReasoningGymTask] = Field(
        ..., min_length=1, description="generators: names, or {name, weight, config}; several make a mixture"
    )
    train_size: int = Field(200, ge=1, le=MAX_SIZE, description="train rows of all tasks together, split by weight")
    eval_size: int = Field(50, ge=1, le=MAX_SIZE, description="eval rows of all tasks together, split by weight")
    seed: int = Field(0, ge=0, le=2**31 - 1, description="train row i of a task is generated with seed + i")
    eval_seed: int | None = Field(
        None,
        ge=0,
        le=2**31 - 1,
        description="eval row j of a task is generated with eval_seed + j; null: seed + 1,000,000",
    )
    system_prompt: str | None = Field(
        "default",
        description="the system message: a reasoning-gym prompt name (" + ", ".join(SYSTEM_PROMPTS) + "), your own "
        "text, or null for none",
    )
    eval_overlap: Literal["drop", "keep"] = Field("drop", description="eval rows whose question is also a train row's")

    @field_validator("tasks", mode="before")
    @classmethod
    def _names(cls, tasks: Any) -> Any:
        # `tasks: [leg_counting]` is shorthand for `tasks: [{name: leg_counting}]`
        if isinstance(tasks, list):
            return [{"name": task} if isinstance(task, str) else task for task in tasks]
        return tasks

    @model_validator(mode="after")
    def _generators(self) -> ReasoningGymOptions:
        """Every task is a reasoning-gym generator that accepts its config; the seed ranges are disjoint."""
        if self.eval_seed is None:
            self.eval_seed = self.seed + self.MAX_SIZE
        train, evaluation = (self.seed, self.seed + self.train_size), (self.eval_seed, self.eval_seed + self.eval_size)
        if train[0] < evaluation[1] and evaluation[0] < train[1]:
            raise FieldError(
                "eval_seed",
                f"{self.eval_seed}: eval rows would be generated with seeds {evaluation[0]}..{evaluation[1] - 1}, "
                f"which overlap the train rows' {train[0]}..{train[1] - 1} (row i uses seed + i); leave it null",
            )
        seen: dict[str, int] = {}
        for index, task in enumerate(self.tasks):
            if task.name in seen:
                raise FieldError(
                    f"tasks[{index}]", f"{task.name!r} is listed twice (also data.tasks[{seen[task.name]}])"
                )
            seen[task.name] = index
            _check_generator(f"tasks[{index}]", task)
        for option, size in (("train_size", self.train_size), ("eval_size", self.eval_size)):
            if size < len(self.tasks):
                raise FieldError(option, f"{size} rows for {len(self.tasks)} tasks: at least one each")
        return self

    def per_task(self, size: int) -> list[int]:
        """`size` rows shared by weight (largest remainders first, then task order): they add up to `size`."""
        total = sum(task.weight for task in self.tasks)
        exact = [size * task.weight / total for task in self.tasks]
        counts = [max(1, int(share)) for share in exact]
        by_remainder = sorted(range(len(exact)), key=lambda i: (-(exact[i] - int(exact[i])), i))
        for index in by_remainder[: max(0, size - sum(counts))]:
            counts[index] += 1
        while sum(counts) > size:  # the minimum of one per task took rows from the largest
            counts[counts.index(max(counts))] -= 1
        return counts


def _check_generator(path: str, task: ReasoningGymTask) -> None:
    """reasoning-gym knows the task and builds it with its config (one row, to check the options)."""
    try:
        import reasoning_gym
        from reasoning_gym.factory import DATASETS
    except ImportError as error:
        raise FieldError(
            "source", f"reasoning_gym needs the reasoning-gym package: pip install -e . ({error})"
        ) from None
    if task.name not in DATASETS:
        raise FieldError(
            f"{path}.name",
            f"{task.name!r} is not a reasoning-gym dataset{did_you_mean(task.name, DATASETS, most=3)} "
            f"({len(DATASETS)} datasets: reasoning_gym.factory.DATASETS)",
        )
    for reserved in ("seed", "size"):
        if reserved in task.config:
            raise FieldError(
                f"{path}.config.{reserved}",
                f"is set from data.{reserved if reserved == 'seed' else 'train_size / eval_size'}",
            )
    try:
        reasoning_gym.create_dataset(task.name, seed=0, size=1, **task.config)
    except (TypeError, ValueError, AssertionError) as error:
        raise FieldError(
            f"{path}.config", f"{task.name} refuses {task.config}: {type(error).__name__}: {error}"
        ) from None


class PluginOptions(BaseModel):
    """A third-party source's options: every key is allowed here; its converter's resolve_options checks them."""

    model_config = ConfigDict(extra="allow", validate_default=True)

    source: str = Field(
        ...,
        json_schema_extra={"not": {"enum": sorted(BUILTIN_SOURCES)}},
        description="a source registered through the knobsweep.sources entry point",
    )
    format: Literal[FORMATS] | None = None

    @field_validator("source")
    @classmethod
    def _registered(cls, source: str) -> str:
        if source not in SOURCES:
            raise ValueError(f"is not a known data source; allowed: {', '.join(sorted(SOURCES))}")
        return source


BUILTIN_OPTIONS: dict[str, type[SourceOptions]] = {
    "gsm8k": Gsm8kOptions,
    "openspiel": OpenSpielOptions,
    "swe_bench": SweBenchOptions,
    "swe_synth": SweSynthOptions,
    "jsonl": CustomOptions,
    "parquet": CustomOptions,
    "hf": CustomOptions,
    "reasoning_gym": ReasoningGymOptions,
}
assert set(BUILTIN_OPTIONS) == BUILTIN_SOURCES, "every built-in source has its options model"
_TAGS = {source: model.__name__ for source, model in BUILTIN_OPTIONS.items()}


def _tag(section: Any) -> str:
    """The union member of a `data` section: its source's model, PluginOptions for any other source."""
    source = section.get("source", "gsm8k") if isinstance(section, dict) else getattr(section, "source", None)
    return _TAGS.get(source, PluginOptions.__name__) if isinstance(source, str) else PluginOptions.__name__


# The union of the built-in models and PluginOptions, each tagged by its name (the tag _tag returns). Built
# with `|` from the models themselves: a Union[...] of a computed tuple is what ruff's UP007 fix mangles.
DataOptions = Annotated[
    functools.reduce(
        operator.or_,
        (Annotated[model, Tag(model.__name__)] for model in (*dict.fromkeys(BUILTIN_OPTIONS.values()), PluginOptions)),
    ),
    Discriminator(_tag),
]


class DataJob(BaseModel):
    """The data stage's config: the `data` section (a built-in source's format: its default when null)."""

    model_config = ConfigDict(extra="forbid")

    data: DataOptions

    @model_validator(mode="after")
    def _a_format(self) -> DataJob:
        if isinstance(self.data, SourceOptions) and self.data.format is None:
            self.data.format = self.data.formats()[0]
        return self


def read_options(section: dict) -> SourceOptions | dict:
    """A `data` section as its converter reads it: a built-in source's options model, or the dict a
    third-party converter's own resolve_options returns. Bad options: a SpecError naming each."""
    options = parse(DataJob, {"data": section}, "--config-json").data
    if isinstance(options, SourceOptions):
        return options
    return converter(options.source).resolve_options(options.model_dump(mode="json"))

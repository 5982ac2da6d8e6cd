"""W&B tracking: the environment, tags and persistent run id of `wandb_setup`, and (slow) a real
offline W&B run from a transformers Trainer, read back from the run's own record file."""

from __future__ import annotations

import json
import os
import struct
import time
from multiprocessing import Pool
from pathlib import Path

import pytest

from knobsweep.errors import SpecError
from knobsweep.layout import WANDB_RUN_ID as RUN_ID_FILE
from knobsweep.spec.schema import RunInfo
from knobsweep.spec.validate import parse
from knobsweep.train.tracking import WandbRunCallback, persistent_run_id, run_tags


def wandb_setup(tracking, run_info: dict, out_dir, config):
    """knobsweep.train.tracking.wandb_setup of a run info with this `tracking` section."""
    from knobsweep.train import tracking as module

    return module.wandb_setup(RunInfo(**run_info, tracking=tracking or {}), out_dir, config)


REPO = Path(__file__).resolve().parents[1]
GSM8K_TRAIN = REPO / "data" / "gsm8k" / "train.jsonl"
TRACKING = {"wandb": {"project": "knobsweep-tests", "entity": None, "mode": "offline"}}
RUN_INFO = {"experiment": "lr_sweep", "run": "lr-0.0005", "changed": {"train.learning_rate": 0.0005}}
CONFIG = {"model": {"name": "tiny"}, "train": {"method": "grpo", "learning_rate": 0.0005}, "seed": 0}


# --- off ----------------------------------------------------------------------------------


@pytest.mark.parametrize("tracking", [None, {}, {"wandb": None}])
def test_no_tracking_reports_to_none_and_writes_nothing(tracking, tmp_path):
    setup = wandb_setup(tracking, RUN_INFO, tmp_path / "out", CONFIG)
    assert (setup.report_to, setup.env, setup.callbacks) == ("none", {}, [])
    assert not (tmp_path / "out").exists()


# --- the environment wandb.init reads -----------------------------------------------------


def test_env_groups_names_tags_and_places_the_run(tmp_path):
    out = tmp_path / "results" / "train" / "abc"
    setup = wandb_setup(TRACKING, RUN_INFO, out, CONFIG)
    run_id = (out / RUN_ID_FILE).read_text().strip()
    assert setup.report_to == "wandb"
    assert setup.env == {
        "WANDB_PROJECT": "knobsweep-tests",
        "WANDB_MODE": "offline",
        "WANDB_DIR": str(out.resolve()),
        "WANDB_RUN_GROUP": "lr_sweep",
        "WANDB_NAME": "lr-0.0005",
        "WANDB_TAGS": "knob:train.learning_rate,train.learning_rate=0.0005",
        "WANDB_RUN_ID": run_id,
        "WANDB_RESUME": "allow",
        "WANDB_LOG_MODEL": "false",
        "WANDB_WATCH": "false",
    }
    [callback] = setup.callbacks
    assert isinstance(callback, WandbRunCallback)
    assert (callback.config, callback.name, callback.run_id) == (CONFIG, "lr-0.0005", run_id)


def test_entity_and_online_mode(tmp_path):
    setup = wandb_setup({"wandb": {"project": "p", "entity": "my-team"}}, RUN_INFO, tmp_path, CONFIG)
    assert (setup.env["WANDB_ENTITY"], setup.env["WANDB_MODE"]) == ("my-team", "online")


def test_apply_sets_the_process_environment(tmp_path, monkeypatch):
    setup = wandb_setup(TRACKING, RUN_INFO, tmp_path, CONFIG)
    for name in setup.env:
        monkeypatch.delenv(name, raising=False)  # restored after the test
    setup.apply()
    assert {name: os.environ[name] for name in setup.env} == setup.env


def test_tags_name_the_changed_knobs():
    assert run_tags({}) == ["baseline"]
    assert run_tags({"rollout.temperature": 1.0, "train.loss": "dapo"}) == [
        "knob:rollout.temperature",
        "rollout.temperature=1.0",
        "knob:train.loss",
        "train.loss=dapo",
    ]
    assert run_tags({"train.kl_beta": None, "train.trl": {"b": [1, 2], "a": True}}) == [
        "knob:train.kl_beta",
        "train.kl_beta=null",
        "knob:train.trl",
        'train.trl={"a":true;"b":[1;2]}',
    ]
    [_, long] = run_tags({"x": "y" * 100})
    assert len(long) == 64 and long.endswith("...")


# --- the run id survives a resume ---------------------------------------------------------


def test_run_id_is_made_once_and_reused(tmp_path):
    first = wandb_setup(TRACKING, RUN_INFO, tmp_path, CONFIG).env["WANDB_RUN_ID"]
    again = wandb_setup(TRACKING, RUN_INFO, tmp_path, CONFIG).env["WANDB_RUN_ID"]
    assert first == again and len(first) == 8 and first.isalnum()
    assert [p.name for p in tmp_path.iterdir()] == [RUN_ID_FILE]  # no temp files left
    assert wandb_setup(TRACKING, RUN_INFO, tmp_path / "other", CONFIG).env["WANDB_RUN_ID"] != first


def _claim(out_dir: str) -> str:
    return persistent_run_id(Path(out_dir))


def test_processes_racing_for_the_id_agree(tmp_path):
    with Pool(4) as pool:
        ids = pool.map(_claim, [str(tmp_path)] * 16)
    assert len(set(ids)) == 1
    assert [p.name for p in tmp_path.iterdir()] == [RUN_ID_FILE]


def test_a_corrupt_id_file_is_named(tmp_path):
    (tmp_path / RUN_ID_FILE).write_text("Not An Id!\n")
    with pytest.raises(ValueError, match=r"wandb_run_id: 'Not An Id!' is not a W&B run id.*delete the file"):
        wandb_setup(TRACKING, RUN_INFO, tmp_path, CONFIG)


# --- bad tracking sections: the training stage reads --run-info-json with the spec's models ---


@pytest.mark.parametrize(
    "tracking, message",
    [
        ({"mlflow": {}}, r"tracking.mlflow: unknown key 'mlflow'; valid keys: wandb"),
        ({"wandb": {"mode": "offline"}}, r"tracking.wandb.project: is required but missing"),
        ({"wandb": {"project": ""}}, r"tracking.wandb.project: '': String should have at least 1 character"),
        (
            {"wandb": {"project": "p", "mode": "disabled"}},
            r"tracking.wandb.mode: 'disabled' is not allowed; "
            r"allowed: 'online' or 'offline'",
        ),
        (
            {"wandb": {"project": "p", "entitiy": "x"}},
            r"tracking.wandb.entitiy: unknown key 'entitiy' \(did you mean "
            r"'entity'\?",
        ),
        ({"wandb": {"project": "p", "entity": 3}}, r"tracking.wandb.entity: 3: Input should be a valid string"),
        ({"wandb": "p"}, r"tracking.wandb: 'p': Input should be a valid dictionary"),
        ("wandb", r"tracking: 'wandb': Input should be a valid dictionary"),
    ],
)
def test_bad_tracking_sections_are_named(tracking, message):
    with pytest.raises(SpecError, match=rf"--run-info-json: {message}"):
        parse(RunInfo, {**RUN_INFO, "tracking": tracking}, "--run-info-json")


def test_bad_run_info_is_named():
    with pytest.raises(SpecError, match=r"--run-info-json: run: is required but missing"):
        parse(RunInfo, {"experiment": "e"}, "--run-info-json")
    with pytest.raises(SpecError, match=r"--run-info-json: changed: \['lr'\]: Input should be a valid dictionary"):
        parse(RunInfo, {"experiment": "e", "run": "r", "changed": ["lr"]}, "--run-info-json")


# --- a real offline W&B run ---------------------------------------------------------------


def wandb_records(path: Path):
    """The protobuf records of a run-<id>.wandb file (W&B's LevelDB-style log: a 7-byte header, then
    32 KiB blocks of chunks, each with a 7-byte header: crc32, length, type FULL/FIRST/MIDDLE/LAST)."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B", data[:7]
    block, pos, pending = 32768, 7, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0 or pos + 7 + length > len(data):  # the end, or a chunk still being written
            break
        pending += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL or LAST: a whole record
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def run_summary(run_dir: Path, timeout: float = 30.0) -> dict:
    """Id, group, name, tags and config of an offline run, as its last run record + config updates left them.

    wandb.finish() can return before W&B's service process has written the file out, so this
    waits for the run's exit record.
    """
    [record_file] = run_dir.glob("run-*.wandb")
    deadline = time.monotonic() + timeout
    while True:
        records = list(wandb_records(record_file))
        if any(record.WhichOneof("record_type") == "exit" for record in records):
            break
        assert time.monotonic() < deadline, f"{record_file}: no exit record after {timeout} s"
        time.sleep(0.1)
    summary: dict = {"config": {}}
    for record in records:
        kind = record.WhichOneof("record_type")
        if kind == "run":
            summary.update(
                id=record.run.run_id,
                project=record.run.project,
                group=record.run.run_group,
                name=record.run.display_name,
                tags=list(record.run.tags),
            )
            summary["config"].update({item.key: json.loads(item.value_json) for item in record.run.config.update})
        elif kind == "config":
            summary["config"].update({item.key: json.loads(item.value_json) for item in record.config.update})
    return summary


def train_steps(model_dir: Path, out: Path, setup, steps: int, run_name: str | None = None) -> None:
    import wandb
    from datasets import Dataset
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        DataCollatorForLanguageModeling,
        Trainer,
        TrainingArguments,
    )

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    texts = [json.loads(line)["question"] for line in GSM8K_TRAIN.read_text().splitlines()[:8]]
    dataset = Dataset.from_dict(dict(tokenizer(texts, truncation=True, max_length=64)))
    args = TrainingArguments(
        output_dir=str(out / "checkpoints"),
        max_steps=steps,
        per_device_train_batch_size=4,
        use_cpu=True,
        report_to=setup.report_to,
        logging_steps=1,
        save_strategy="no",
        disable_tqdm=True,
        run_name=run_name,
    )
    trainer = Trainer(
        model=AutoModelForCausalLM.from_pretrained(model_dir),
        args=args,
        train_dataset=dataset,
        data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False),
        callbacks=setup.callbacks,
    )
    try:
        trainer.train()
    finally:
        wandb.finish()


@pytest.mark.slow
def test_a_trainer_logs_an_offline_run_and_a_resume_continues_it(tmp_path, monkeypatch):
    from knobsweep.models.tiny import build_tiny_model

    texts = [json.loads(line)["question"] for line in GSM8K_TRAIN.read_text().splitlines()[:200]]
    model_dir = build_tiny_model(texts, tmp_path / "tiny")
    out = tmp_path / "train"
    setup = wandb_setup(TRACKING, RUN_INFO, out, CONFIG)
    for name, value in setup.env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("WANDB_SILENT", "true")
    # wandb names its in-process service in os.environ; gone after this test, so later tests' training
    # subprocesses do not inherit (and share) it
    monkeypatch.delenv("WANDB_SERVICE", raising=False)
    train_steps(model_dir, out, setup, steps=2)

    run_id = (out / RUN_ID_FILE).read_text().strip()
    [run_dir] = (out / "wandb").glob("offline-run-*")
    assert run_dir.name.endswith(f"-{run_id}")
    run = run_summary(run_dir)
    assert (run["id"], run["project"], run["group"], run["name"]) == (
        run_id,
        "knobsweep-tests",
        "lr_sweep",
        "lr-0.0005",
    )
    assert run["tags"] == ["knob:train.learning_rate", "train.learning_rate=0.0005"]
    for key, value in CONFIG.items():  # the resolved config, next to the Trainer's own arguments
        assert run["config"][key] == value
    assert run["config"]["max_steps"] == 2

    # A resumed training run (the same output directory) continues the same W&B run.
    resumed = wandb_setup(TRACKING, RUN_INFO, out, CONFIG)
    assert resumed.env["WANDB_RUN_ID"] == run_id
    # A run_name in the TrainingArguments names the W&B run at init; the callback names it back.
    train_steps(model_dir, out, resumed, steps=1, run_name="checkpoints")
    run_dirs = sorted((out / "wandb").glob("offline-run-*"))
    assert len(run_dirs) == 2 and all(d.name.endswith(f"-{run_id}") for d in run_dirs)
    second = run_summary(run_dirs[-1])
    assert (second["id"], second["name"], second["group"]) == (run_id, "lr-0.0005", "lr_sweep")


def test_a_tracked_run_starts_a_wandb_service_of_its_own(tmp_path, monkeypatch):
    # an inherited service would keep a run that a signal stopped open, and its resume would fail
    # ("run ID ... is in use")
    monkeypatch.setenv("WANDB_SERVICE", "inherited-from-a-parent")
    wandb_setup(TRACKING, RUN_INFO, tmp_path / "train", CONFIG).apply()
    assert "WANDB_SERVICE" not in os.environ
    monkeypatch.setenv("WANDB_SERVICE", "inherited-from-a-parent")
    wandb_setup({}, RUN_INFO, tmp_path / "untracked", CONFIG).apply()
    assert os.environ["WANDB_SERVICE"] == "inherited-from-a-parent"  # not tracking: left alone


# --- who a training runs for: a file beside the job, written when a workflow starts (knobsweep.runinfo) -----


def test_run_info_is_written_once_a_training_starts_and_never_for_a_finished_one(tmp_path):
    from types import SimpleNamespace

    from knobsweep import layout
    from knobsweep.runinfo import read_run_info, write_run_info

    def jobs(experiment: str, project: str) -> dict:
        info = {**RUN_INFO, "experiment": experiment, "tracking": {"wandb": {"project": project, "mode": "offline"}}}
        return {"k" * 16: SimpleNamespace(run_info=info)}

    path = layout.path(layout.TRAIN_RUN_INFO, tmp_path, key="k" * 16)
    assert write_run_info(jobs("first", "p1"), tmp_path) == 1
    assert read_run_info(path).experiment == "first"
    assert write_run_info(jobs("first", "p1"), tmp_path) == 0  # unchanged: not written again
    assert write_run_info(jobs("second", "p1"), tmp_path) == 1  # not started yet: the workflow running it now
    assert read_run_info(path).experiment == "second"
    layout.path(layout.TRAIN_STATUS, tmp_path, key="k" * 16).write_text("{}")  # started: its W&B run may exist
    write_run_info(jobs("third", "p2"), tmp_path)
    started = read_run_info(path)
    assert (started.experiment, started.run, started.tracking.wandb.project) == ("second", "lr-0.0005", "p2")
    layout.path(layout.TRAIN_ADAPTER, tmp_path, key="k" * 16).mkdir()  # finished: reused as it is
    assert write_run_info(jobs("fourth", "p3"), tmp_path) == 0 and read_run_info(path).experiment == "second"


def test_a_missing_or_bad_run_info_file_is_named(tmp_path):
    from knobsweep.runinfo import read_run_info

    with pytest.raises(SpecError, match=r"run_info.json: no such file: the workflow writes it when it starts"):
        read_run_info(tmp_path / "run_info.json")
    (tmp_path / "bad.json").write_text('{"experiment": ')
    with pytest.raises(SpecError, match=r"bad.json: cannot be read as JSON"):
        read_run_info(tmp_path / "bad.json")
    (tmp_path / "wrong.json").write_text('{"experiment": "e"}')
    with pytest.raises(SpecError, match=r"wrong.json: run: is required but missing"):
        read_run_info(tmp_path / "wrong.json")

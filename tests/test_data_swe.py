"""SWE sources and evaluators: swe_bench (tasks -> rl rows), swe_synth (trajectories -> sft rows),
swe_patch (patch similarity) and swe_tests (tests run on a real git checkout), on the real
fixtures in tests/fixtures/{swebench,trajectories}; slow: a few GRPO / SFT steps on the tiny model."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import FIXTURES

from knobsweep.data import convert_to_dir, input_fingerprint, swe_bench, swe_synth
from knobsweep.data._files import Record
from knobsweep.errors import DataError, FieldError, SpecError
from knobsweep.io import file_sha256
from knobsweep.rewards import get_evaluator
from knobsweep.rewards.swe import (
    SwePatchEvaluator,
    SweTestsEvaluator,
    docker_problem,
    extract_patch,
    parse_patch,
)
from knobsweep.spec.sources import SweSynthOptions, read_options

REPO = Path(__file__).resolve().parents[1]
SWEBENCH = FIXTURES / "swebench"
TRAJECTORIES = FIXTURES / "trajectories"
COMBINED = SWEBENCH / "swebench_instances_combined.jsonl"


def combined_instances() -> list[dict]:
    return [json.loads(line) for line in COMBINED.read_text().splitlines()]


def convert_bench(section: dict):
    """What the swe_bench converter makes of a `data` section, read as the data stage reads it."""
    return swe_bench.convert(read_options(section))


def convert_synth(section: dict):
    """What the swe_synth converter makes of a `data` section, read as the data stage reads it."""
    return swe_synth.convert(read_options(section))


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return path


def read_rows(path: Path) -> list[dict]:
    return pq.read_table(path).to_pylist()


# ================================================================== swe_bench: tasks -> rl rows


def test_swe_bench_reads_every_fixture_layout_and_drops_duplicates(tmp_path):
    manifest = convert_to_dir({"source": "swe_bench", "path": str(SWEBENCH)}, tmp_path / "out")
    train, evals = read_rows(tmp_path / "out/train.parquet"), read_rows(tmp_path / "out/eval.parquet")
    # 14 SWE-bench instances (JSON lists + the JSONL that repeats them) + 1 SWE-smith instance (one object)
    ids = [row["instance_id"] for row in train + evals]
    assert len(ids) == len(set(ids)) == 15
    assert (len(train), len(evals)) == (12, 3)  # eval_ratio 0.2
    assert "pandas-dev__pandas.95280573.pr_53652" in ids
    duplicates = [d for d in manifest["dropped"] if d["reason"].startswith("duplicate instance_id")]
    assert len(duplicates) == len(manifest["dropped"]) == 15  # 14 in the JSONL, 1 inside dev-easy itself
    first = next(d for d in duplicates if d["file"].endswith("combined.jsonl") and d["line"] == 1)
    assert "'django__django-16255' (first read at " in first["reason"]
    assert first["reason"].endswith("sweagent__swe-bench-lite-test.json:1)")
    assert manifest["inputs"] == {
        p.as_posix(): file_sha256(p) for p in sorted(SWEBENCH.iterdir()) if p.suffix in (".json", ".jsonl")
    }


def test_swe_bench_rows_carry_the_prompt_gold_patch_and_test_lists(tmp_path):
    by_id = {record["instance_id"]: record for record in combined_instances()}
    convert_to_dir({"source": "swe_bench", "path": str(COMBINED), "eval_ratio": 0.5}, tmp_path / "out")
    rows = read_rows(tmp_path / "out/train.parquet") + read_rows(tmp_path / "out/eval.parquet")
    assert pq.read_schema(tmp_path / "out/train.parquet").equals(swe_bench.row_schema())
    assert sorted(row["row_id"] for row in rows) == sorted(by_id)
    for row in rows:
        source = by_id[row["row_id"]]
        (message,) = row["prompt"]
        assert message["role"] == "user"
        assert message["content"].startswith(f"Repository: {source['repo']}\n\n<issue>\n")
        assert source["problem_statement"].strip() in message["content"]
        assert message["content"].endswith(swe_bench.PATCH_INSTRUCTION)
        assert row["ground_truth"] == source["patch"]
        assert json.loads(row["FAIL_TO_PASS"]) == source["FAIL_TO_PASS"]
        assert json.loads(row["PASS_TO_PASS"]) == source["PASS_TO_PASS"]
        for key in ("repo", "base_commit", "test_patch", "version", "environment_setup_commit"):
            assert row[key] == source[key]


def test_hub_form_json_string_test_lists_give_the_same_rows(tmp_path):
    hub_form = [
        {**r, "FAIL_TO_PASS": json.dumps(r["FAIL_TO_PASS"]), "PASS_TO_PASS": json.dumps(r["PASS_TO_PASS"])}
        for r in combined_instances()
    ]
    as_lists = convert_bench({"source": "swe_bench", "path": str(COMBINED)})
    as_strings = convert_bench({"source": "swe_bench", "path": str(write_jsonl(tmp_path / "hub.jsonl", hub_form))})
    assert (as_strings.train, as_strings.eval) == (as_lists.train, as_lists.eval)


def test_task_ids_and_task_id_range_select(tmp_path):
    ids = [r["instance_id"] for r in combined_instances()]
    picked = convert_bench({"source": "swe_bench", "path": str(COMBINED), "task_ids": ids[2:6]})
    assert sorted(r["row_id"] for r in picked.train + picked.eval) == sorted(ids[2:6])
    ranged = convert_bench({"source": "swe_bench", "path": str(COMBINED), "task_id_range": [10, 14]})
    assert sorted(r["row_id"] for r in ranged.train + ranged.eval) == sorted(ids[10:14])
    with pytest.raises(FieldError, match=r"data.task_ids: not found in .*combined.jsonl: nope__nope-1"):
        convert_bench({"source": "swe_bench", "path": str(COMBINED), "task_ids": [ids[0], ids[1], "nope__nope-1"]})
    with pytest.raises(FieldError, match=r"within data.task_id_range: " + ids[0]):
        convert_bench({"source": "swe_bench", "path": str(COMBINED), "task_ids": ids[:3], "task_id_range": [1, 5]})


def test_cache_dir_of_task_files_reads_offline(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    hub_form = combined_instances()
    for index, record in enumerate(hub_form):
        record = {**record, "FAIL_TO_PASS": json.dumps(record["FAIL_TO_PASS"])}
        (cache / f"task_{index}.json").write_text(json.dumps(record))
    (cache / "notes.txt").write_text("not a task")
    options = {"source": "swe_bench", "cache_dir": str(cache), "use_cache_only": True, "task_id_range": [3, 9]}
    result = convert_bench(options)
    assert sorted(r["row_id"] for r in result.train + result.eval) == sorted(r["instance_id"] for r in hub_form[3:9])
    assert result.options["path"] is None
    # only the tasks in range are read, and only they key the conversion
    assert (
        set(result.inputs)
        == set(input_fingerprint(options))
        == {(cache / f"task_{i}.json").as_posix() for i in range(3, 9)}
    )
    with pytest.raises(FieldError, match=r"data.cache_dir: .*: no task_\{i\}.json files there"):
        convert_bench({**options, "cache_dir": str(tmp_path)})


def test_hub_split_fills_the_cache_that_a_later_offline_run_reads(tmp_path, monkeypatch):
    """The hub is unreachable here: a real datasets.Dataset in the hub's form (test lists as JSON
    text) stands in for what load_dataset returns."""
    from datasets import Dataset

    from knobsweep.data import _files

    hub_form = [
        {**r, "FAIL_TO_PASS": json.dumps(r["FAIL_TO_PASS"]), "PASS_TO_PASS": json.dumps(r["PASS_TO_PASS"])}
        for r in combined_instances()
    ]
    loaded = []
    monkeypatch.setattr(
        _files, "load_hub_split", lambda *args, **kw: loaded.append(args) or Dataset.from_list(hub_form)
    )
    monkeypatch.chdir(tmp_path)
    online = convert_bench({"source": "swe_bench", "cache_dir": "cache", "task_id_range": [0, 10]})
    assert loaded == [("princeton-nlp/SWE-bench_Lite", None, "test")]
    assert online.inputs == {"princeton-nlp/SWE-bench_Lite": "hub:princeton-nlp/SWE-bench_Lite@None/test"}
    assert len(list((tmp_path / "cache").glob("task_*.json"))) == len(hub_form)  # the whole split is cached
    assert json.loads((tmp_path / "cache/task_3.json").read_text()) == hub_form[3]
    offline = convert_bench(
        {"source": "swe_bench", "cache_dir": "cache", "use_cache_only": True, "task_id_range": [0, 10]}
    )
    assert (offline.train, offline.eval) == (online.train, online.eval)
    assert len(loaded) == 1


def test_swe_synth_reads_the_hub_layout(monkeypatch):
    from datasets import Dataset

    from knobsweep.data import _files

    rows = [json.loads(line) for line in (TRAJECTORIES / "swesmith__ft_xml_example.jsonl").read_text().splitlines()]
    hub = Dataset.from_list([{**r, "model_patch": "", "run_name": "run-1"} for r in rows])
    monkeypatch.setattr(_files, "load_hub_split", lambda path, config, split, option="path": hub)
    result = convert_synth({"source": "swe_synth", "eval_ratio": 0.34})
    assert sorted(r["row_id"] for r in result.train + result.eval) == sorted(r["instance_id"] for r in rows)
    assert result.eval[0]["origin"].startswith(f"hub:{SweSynthOptions.HUB_DEFAULT}/train:")
    assert result.stats["eval_without_patch"] == 1  # "" is no patch: swe_patch marks such rows invalid


def test_unusable_tasks_are_dropped_with_file_and_line(tmp_path):
    good = combined_instances()[:3]
    bad = [
        {**good[0], "instance_id": "no-patch", "patch": ""},
        {**good[0], "instance_id": "bad-tests", "FAIL_TO_PASS": "[not json"},
        {**good[0], "instance_id": "bad-diff", "patch": "--- a/x.py\n+++ b/x.py\n@@ -1,3 +1,3 @@\n-a\n+b\n"},
        ["not", "an", "object"],
    ]
    path = write_jsonl(tmp_path / "tasks.jsonl", good + bad)
    with path.open("a") as handle:
        handle.write("{torn line\n")
    result = convert_bench({"source": "swe_bench", "path": str(path)})
    assert len(result.train + result.eval) == 3
    reasons = {d["line"]: d["reason"] for d in result.dropped}
    assert reasons[4] == "missing or empty 'patch'"
    assert reasons[5].startswith("FAIL_TO_PASS is a string but not a JSON list")
    assert reasons[6].startswith("gold patch: not a well-formed unified diff")
    assert reasons[7] == "not a JSON object: list"
    assert reasons[8].startswith("not a JSON line")
    assert {d["file"] for d in result.dropped} == {path.as_posix()}
    with pytest.raises(DataError, match=r"no usable SWE-bench tasks, all 2 were dropped .*bad.jsonl:1: missing"):
        convert_bench({"source": "swe_bench", "path": str(write_jsonl(tmp_path / "bad.jsonl", bad[:2]))})


def test_split_is_seeded_and_deterministic():
    def split(seed):
        result = convert_bench({"source": "swe_bench", "path": str(COMBINED), "seed": seed})
        return [r["row_id"] for r in result.train], [r["row_id"] for r in result.eval]

    assert split(0) == split(0)
    assert split(0) != split(1)
    train, evals = split(0)
    assert not set(train) & set(evals) and len(train + evals) == 14
    sized = convert_bench({"source": "swe_bench", "path": str(COMBINED), "train_size": 4, "eval_size": 2})
    assert ([r["row_id"] for r in sized.train], [r["row_id"] for r in sized.eval]) == (train[:4], evals[:2])


@pytest.mark.parametrize(
    "options, message",
    [
        ({"task_idz": ["a"]}, r"data.task_idz: unknown key 'task_idz' \(did you mean 'task_ids'\?\)"),
        ({"hub_split": "dev"}, r"data.hub_split: renamed to data.train_split, as every source calls it"),
        ({"format": "sft"}, r"data.format: 'sft' is not allowed; allowed: 'rl'"),
        ({"use_cache_only": True}, r"data.use_cache_only: true needs data.cache_dir"),
        (
            {"use_cache_only": True, "cache_dir": "c", "path": "x.json"},
            r"data.use_cache_only: true reads only data.cache",
        ),
        ({"path": "a.json", "paths": ["b.json"]}, r"data.paths: give data.path or data.paths, not both"),
        ({"eval_ratio": 0}, r"data.eval_ratio: 0 is out of range; allowed: 0 < value < 1"),
        ({"task_id_range": [5, 2]}, r"data.task_id_range: \[5, 2\]: must be \[start, end\) with start < end"),
        ({"task_id_range": [-1, 2]}, r"data.task_id_range\[0\]: -1 is out of range"),
        ({"task_ids": "django__django-1"}, r"data.task_ids: 'django__django-1': Input should be a valid list"),
        ({"paths": ["data/missing.jsonl"], "cache_dir": "c"}, r"data.cache_dir: caches a hub dataset"),
    ],
)
def test_swe_bench_bad_options_name_the_field(options, message):
    with pytest.raises(SpecError, match="--config-json: " + message):
        read_options({"source": "swe_bench", **options})


def test_swe_bench_inputs_are_named(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert input_fingerprint({"source": "swe_bench"}) == {
        "princeton-nlp/SWE-bench_Lite": "hub:princeton-nlp/SWE-bench_Lite@None/test"
    }
    with pytest.raises(FieldError, match=r"data.paths: 'missing.jsonl': no such file or directory"):
        input_fingerprint({"source": "swe_bench", "paths": ["missing.jsonl"]})
    with pytest.raises(FieldError, match=r"data.path: .* unsupported file type '.patch'"):
        input_fingerprint({"source": "swe_bench", "path": str(TRAJECTORIES / "sweagent__pydicom__pydicom-1458.patch")})


# ================================================================== swe_synth: trajectories -> sft rows


def test_every_fixture_trajectory_layout_converts(tmp_path):
    manifest = convert_to_dir({"source": "swe_synth", "path": str(TRAJECTORIES), "eval_ratio": 0.2}, tmp_path / "out")
    train, evals = read_rows(tmp_path / "out/train.parquet"), read_rows(tmp_path / "out/eval.parquet")
    assert pq.read_schema(tmp_path / "out/train.parquet").equals(swe_synth.schemas()["trajectory"])
    assert pq.read_schema(tmp_path / "out/eval.parquet").equals(swe_synth.schemas()["eval"])
    ids = {row["row_id"] for row in train + evals}
    # 3 SWE-smith rows, 1 SWE-agent .traj (named after its file), 2 mini-swe-agent message lists
    assert ids == {
        "pandas-dev__pandas.95280573.pr_53652",
        "getmoto__moto.694ce1f4.pr_7331",
        "pydantic__pydantic.acb0f10f.pr_8316",
        "sweagent__pydicom__pydicom-1458",
        "minisweagent__github_issue",
        "minisweagent__local",
    }
    assert len(evals) == 1
    for row in train:
        roles = [m["role"] for m in row["messages"]]
        assert set(roles) <= {"system", "user", "assistant"}
        assert roles[-1] == "assistant"  # trailing observations are cut
        assert all(a != b for a, b in zip(roles, roles[1:]))  # consecutive same-role turns joined
    # predictions with no trajectory of their id are listed, not silently lost
    assert sorted(d["reason"] for d in manifest["dropped"]) == [
        f"prediction for {name!r}: no trajectory with that instance_id in the inputs"
        for name in ("pandas-dev__pandas.95280573.pr_53856", "pydicom__pydicom-1458", "swe-agent__test-repo-1")
    ]
    assert manifest["stats"] == {"truncated_train": 0, "truncated_eval": 0, "eval_without_patch": 0}


def test_swe_agent_traj_history_and_submission(tmp_path):
    path = TRAJECTORIES / "sweagent__pydicom__pydicom-1458.traj"
    traj = json.loads(path.read_text())
    entry, problem = swe_synth._entry(Record(path.as_posix(), 1, traj, document=True), traj, tool_role="user")
    assert problem is None and entry.model_patch == traj["info"]["submission"]
    assert entry.instance_id == "sweagent__pydicom__pydicom-1458"  # the file name, as SWE-agent names them
    history = traj["history"]
    # system, then the demonstration and the issue (two user turns) joined into one
    assert [m["role"] for m in entry.messages][:3] == ["system", "user", "assistant"]
    assert entry.messages[1]["content"] == history[1]["content"] + "\n\n" + history[2]["content"]
    assert len(entry.messages) == len(history) - 1


def test_predictions_attach_to_trajectories_by_instance_id(tmp_path):
    # SWE-agent names a trajectory <instance_id>.traj; all_preds.jsonl holds the same prediction
    shutil.copy(TRAJECTORIES / "sweagent__pydicom__pydicom-1458.traj", tmp_path / "pydicom__pydicom-1458.traj")
    files = [
        str(TRAJECTORIES / "swesmith__ft_xml_example.jsonl"),
        str(TRAJECTORIES / "swesmith__preds_from_traj.jsonl"),
        str(tmp_path / "pydicom__pydicom-1458.traj"),
        str(TRAJECTORIES / "sweagent__all_preds.jsonl"),
    ]
    result = convert_synth({"source": "swe_synth", "paths": files, "mode": "patch", "eval_ratio": 0.25})
    preds = {
        json.loads(line)["instance_id"]: json.loads(line)["model_patch"]
        for line in (TRAJECTORIES / "swesmith__preds_from_traj.jsonl").read_text().splitlines()
    }
    rows = {row["row_id"]: row for row in result.train}
    assert sorted(d["reason"] for d in result.dropped) == [
        "no model_patch (data.mode: patch needs one)",  # getmoto: no prediction for it
        "prediction for 'pandas-dev__pandas.95280573.pr_53856': no trajectory with that instance_id in the inputs",
    ]
    assert len(rows) + len(result.eval) == 3
    submission = json.loads((tmp_path / "pydicom__pydicom-1458.traj").read_text())["info"]["submission"]
    for row_id, row in rows.items():
        (completion,) = row["completion"]
        assert completion["role"] == "assistant"
        patch = preds.get(row_id) or submission
        assert completion["content"] == "```diff\n" + patch.strip("\n") + "\n```"
        assert extract_patch(completion["content"]).strip("\n") == patch.strip("\n")
        assert row["prompt"][-1]["content"].endswith(swe_bench.PATCH_INSTRUCTION)
        assert "assistant" not in {m["role"] for m in row["prompt"]}
    (evaluated,) = result.eval
    assert evaluated["ground_truth"].strip() and evaluated["origin"].split(":")[-1] == "1"


def test_patch_mode_from_problem_statements(tmp_path):
    records = [
        {
            "instance_id": r["instance_id"],
            "repo": r["repo"],
            "problem_statement": r["problem_statement"],
            "model_patch": r["patch"],
            "run_name": "gold",
        }
        for r in combined_instances()
    ]
    result = convert_synth(
        {
            "source": "swe_synth",
            "path": str(write_jsonl(tmp_path / "p.jsonl", records)),
            "mode": "patch",
            "prompt_from": "problem_statement",
        }
    )
    assert (len(result.train), len(result.eval)) == (13, 1) and not result.dropped
    by_id = {r["instance_id"]: r for r in records}
    for row in result.train:
        source = by_id[row["row_id"]]
        assert row["prompt"] == swe_bench.build_prompt(source["problem_statement"], source["repo"])
        answer = row["completion"][0]["content"]
        assert SwePatchEvaluator()(answer, {"ground_truth": source["model_patch"]}).score == 1.0


def test_parquet_in_the_hub_layout_and_truncation(tmp_path):
    """The SWE-Synth hub layout (instance_id, messages, model_patch, run_name) as a parquet file."""
    import pyarrow as pa

    preds = {
        json.loads(line)["instance_id"]: json.loads(line)["model_patch"]
        for line in (TRAJECTORIES / "swesmith__preds_from_traj.jsonl").read_text().splitlines()
    }
    rows = [json.loads(line) for line in (TRAJECTORIES / "swesmith__ft_xml_example.jsonl").read_text().splitlines()]
    table = pa.Table.from_pylist(
        [
            {
                "instance_id": r["instance_id"],
                "messages": r["messages"],
                "model_patch": preds.get(r["instance_id"]),
                "run_name": "r1",
            }
            for r in rows
        ]
    )
    pq.write_table(table, tmp_path / "train-00000.parquet")
    options = {"source": "swe_synth", "path": str(tmp_path), "max_length": 1024, "eval_ratio": 0.34}
    manifest = convert_to_dir(options, tmp_path / "out")
    budget = int(1024 * 3.5)
    train = read_rows(tmp_path / "out/train.parquet")
    evals = read_rows(tmp_path / "out/eval.parquet")
    assert (len(train), len(evals)) == (2, 1)
    for row in train:
        assert swe_synth._size(row["messages"]) <= budget
        assert row["messages"][-1]["role"] == "assistant"
    for row in evals:
        assert swe_synth._size(row["prompt"]) <= budget
        assert row["prompt"][-1]["content"].endswith(swe_bench.PATCH_INSTRUCTION)  # the instruction survives the cut
    assert manifest["stats"]["char_budget"] == budget
    assert manifest["stats"]["truncated_train"] == 2 and manifest["stats"]["truncated_eval"] == 1


def test_truncation_keeps_whole_turns_then_cuts_the_longest_context():
    messages = [
        {"role": "system", "content": "s" * 100},
        {"role": "user", "content": "u" * 1000},
        {"role": "assistant", "content": "a" * 50},
        {"role": "user", "content": "o" * 40},
        {"role": "assistant", "content": "b" * 30},
    ]
    whole = swe_synth._size(messages)
    assert swe_synth.fit_trajectory(messages, whole - 1) == messages[:3]  # the last exchange goes first
    cut = swe_synth.fit_trajectory(messages, 400)
    assert [m["role"] for m in cut] == ["system", "user", "assistant"] and swe_synth._size(cut) <= 400
    assert cut[0]["content"] == "s" * 100  # short messages are kept whole
    assert cut[1]["content"].startswith("u" * 100) and cut[1]["content"].endswith("characters cut ...]")
    assert cut[2]["content"] == "a" * 50  # the assistant turn is never cut
    assert swe_synth.fit_trajectory(messages, 60) is None


def test_message_normalisation():
    raw = [
        {"role": "system", "content": [{"type": "text", "text": "be brief"}]},
        {"from": "human", "value": "fix it"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"type": "function", "function": {"name": "bash", "arguments": '{"cmd": "ls"}'}}],
        },
        {"role": "tool", "content": "a.py"},
        {"role": "function", "content": "b.py"},
        {"role": "gpt", "content": [{"type": "text", "text": "done"}, "!"]},
    ]
    messages, problem = swe_synth.normalise_messages(raw)
    assert problem is None
    assert messages == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "fix it"},
        {
            "role": "assistant",
            "content": "\n<tool_call>\n"
            + json.dumps({"name": "bash", "arguments": '{"cmd": "ls"}'})
            + "\n</tool_call>",
        },
        {"role": "user", "content": "a.py\n\nb.py"},
        {"role": "assistant", "content": "done\n!"},
    ]
    kept, _ = swe_synth.normalise_messages(raw, tool_role="tool")
    assert [m["role"] for m in kept] == ["system", "user", "assistant", "tool", "assistant"]
    assert swe_synth.normalise_messages([{"role": "critic", "content": "x"}])[1].startswith(
        "message 1: unknown role 'critic' (allowed: system, user, human"
    )
    assert swe_synth.normalise_messages([{"role": "user", "content": [{"type": "image_url"}]}])[1] == (
        "message 1: a content part of type 'image_url' has no text"
    )


def test_unusable_trajectories_are_dropped(tmp_path):
    good = json.loads((TRAJECTORIES / "swesmith__ft_xml_example.jsonl").read_text().splitlines()[0])
    records = [
        good,
        {**good, "instance_id": "other"},
        {"instance_id": "x", "messages": []},
        {"instance_id": "y", "messages": [{"role": "user", "content": "only a question"}]},
        {"instance_id": "z"},
        {"model_patch": "--- a/x\n+++ b/x\n"},
    ]
    result = convert_synth({"source": "swe_synth", "path": str(write_jsonl(tmp_path / "t.jsonl", records))})
    assert {d["line"]: d["reason"] for d in result.dropped} == {
        3: "messages: expected a non-empty list of messages, got list",
        4: "no assistant message in the trajectory",
        5: "no trajectory: none of messages / history / conversations, and no model_patch",
        6: "a prediction (model_patch) without an instance_id",
    }
    with pytest.raises(DataError, match=r"needs at least 2 tasks"):
        convert_synth({"source": "swe_synth", "path": str(write_jsonl(tmp_path / "one.jsonl", [good]))})


def test_repeated_instance_ids_get_numbered_row_ids_and_stay_on_one_side(tmp_path):
    rows = [json.loads(line) for line in (TRAJECTORIES / "swesmith__ft_xml_example.jsonl").read_text().splitlines()]
    result = convert_synth(
        {"source": "swe_synth", "path": str(write_jsonl(tmp_path / "t.jsonl", rows + rows)), "eval_ratio": 0.3}
    )
    train_ids = {r["row_id"] for r in result.train}
    eval_ids = {r["row_id"] for r in result.eval}
    assert len(train_ids | eval_ids) == 6 and any(i.endswith("#2") for i in train_ids | eval_ids)
    assert not {i.split("#")[0] for i in train_ids} & {i.split("#")[0] for i in eval_ids}


@pytest.mark.parametrize(
    "options, message",
    [
        ({"format": "rl"}, r"data.format: 'rl' is not allowed; allowed: 'sft'"),
        ({"mode": "diff"}, r"data.mode: 'diff' is not allowed; allowed: 'trajectory' or 'patch'"),
        (
            {"prompt_from": "issue"},
            r"data.prompt_from: 'issue' is not allowed; allowed: 'messages' or 'problem_statement'",
        ),
        ({"tool_role": "function"}, r"data.tool_role: 'function' is not allowed; allowed: 'user' or 'tool'"),
        ({"max_length": 0}, r"data.max_length: 0 is out of range; allowed: 16 <= value"),
        ({"chars_per_token": "three"}, r"data.chars_per_token: 'three': Input should be a valid number"),
        ({"chars_per_token": 30}, r"data.chars_per_token: 30 is out of range; allowed: 0.5 <= value <= 20"),
        ({"paths": []}, r"data.paths: \[\]: List should have at least 1 item"),
        ({"max_lenght": 10}, r"data.max_lenght: unknown key 'max_lenght' \(did you mean 'max_length'\?\)"),
    ],
)
def test_swe_synth_bad_options_name_the_field(options, message):
    with pytest.raises(SpecError, match="--config-json: " + message):
        read_options({"source": "swe_synth", **options})


def test_swe_synth_defaults_to_the_hub_dataset(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    options = read_options({"source": "swe_synth"})
    assert (options.path, options.format, options.mode) == (SweSynthOptions.HUB_DEFAULT, "sft", "trajectory")
    assert input_fingerprint({"source": "swe_synth"}) == {
        SweSynthOptions.HUB_DEFAULT: f"hub:{SweSynthOptions.HUB_DEFAULT}@None/train"
    }


# ================================================================== swe_patch


GOLD_TWO_FILES = """diff --git a/pkg/a.py b/pkg/a.py
--- a/pkg/a.py
+++ b/pkg/a.py
@@ -1,3 +1,3 @@
 def f(x):
-    return x + 1
+    return x + 2
 
diff --git a/pkg/b.py b/pkg/b.py
--- a/pkg/b.py
+++ b/pkg/b.py
@@ -10,2 +10,3 @@ def g():
     y = 1
+    y += 1
     return y
"""  # noqa: W293 - a blank context line of a diff is one space


def test_gold_patches_of_every_fixture_instance_score_one():
    evaluator = SwePatchEvaluator()
    for record in combined_instances():
        row = {"row_id": record["instance_id"], "ground_truth": record["patch"]}
        for completion in (
            record["patch"],
            f"Here is the fix:\n```diff\n{record['patch']}```\nDone.",
            f"```\n{record['patch']}```",
        ):
            result = evaluator(completion, row)
            assert (result.score, result.metrics) == (
                1.0,
                {"well_formed": 1.0, "file_overlap": 1.0, "line_similarity": 1.0},
            ), record["instance_id"]
        # the test patch touches other files: a well-formed diff, but no overlap
        other = evaluator(f"```diff\n{record['test_patch']}```", row)
        assert other.metrics["well_formed"] == 1.0 and other.metrics["file_overlap"] == 0.0 and other.score < 0.5


def test_partial_patches_get_a_shaped_score_and_a_reason():
    evaluator = get_evaluator({"name": "swe_patch", "file_weight": 0.5})
    row = {"row_id": "r", "ground_truth": GOLD_TWO_FILES}
    first_file_only = GOLD_TWO_FILES.split("diff --git a/pkg/b.py")[0]
    result = evaluator(f"```diff\n{first_file_only}```", row)
    # 2 of the gold's 3 changed lines: 2 * 2 / (3 + 2)
    assert result.reason == "touches 1 of 2 gold files; line similarity 0.80"
    assert result.metrics == {"well_formed": 1.0, "file_overlap": 0.5, "line_similarity": pytest.approx(0.8)}
    assert result.score == pytest.approx(0.5 * 0.5 + 0.5 * 0.8)
    wrong_line = first_file_only.replace("x + 2", "x + 3") + "--- a/pkg/c.py\n+++ b/pkg/c.py\n@@ -1 +1 @@\n-a\n+b\n"
    worse = evaluator(wrong_line, row)
    assert worse.reason.startswith("touches 1 of 2 gold files (+1 other); line similarity")
    assert worse.score < result.score


@pytest.mark.parametrize(
    "completion, reason",
    [
        ("I would change the return value.", "not a unified diff (no ```diff block or '--- a/' header)"),
        (
            "```diff\n--- a/pkg/a.py\n+++ b/pkg/a.py\n@@ -1,3 +1,3 @@\n-    return x + 1\n+    return x + 2\n```",
            "not a well-formed unified diff: Hunk is shorter than expected",
        ),
        ("```diff\n```", "not a unified diff (no ```diff block or '--- a/' header)"),
    ],
)
def test_malformed_answers_score_zero(completion, reason):
    result = SwePatchEvaluator()(completion, {"ground_truth": GOLD_TWO_FILES})
    assert (result.score, result.valid, result.reason) == (0.0, True, reason)
    assert result.metrics["well_formed"] == 0.0


def test_a_row_without_gold_patch_raises_and_bad_options_are_named():
    with pytest.raises(ValueError, match=r"row eval-3: no gold patch"):
        SwePatchEvaluator()("x", {"row_id": "eval-3", "ground_truth": ""})
    with pytest.raises(ValueError, match=r"reward.file_weight: must be a number in \[0, 1\], got 2"):
        get_evaluator({"name": "swe_patch", "file_weight": 2})


def test_extract_patch_joins_diff_blocks_and_survives_a_cut_generation():
    two = (
        "a\n```diff\n--- a/x\n+++ b/x\n@@ -1 +1 @@\n-a\n+b\n```\ntext\n"
        "```patch\n--- a/y\n+++ b/y\n@@ -1 +1 @@\n-c\n+d\n```"
    )
    assert set(parse_patch(extract_patch(two))) == {"x", "y"}
    cut = "```diff\n--- a/x\n+++ b/x\n@@ -1 +1 @@\n-a\n+b"  # no closing fence: max_tokens ran out
    assert parse_patch(extract_patch(cut)) == {"x": ["-a", "+b"]}
    assert extract_patch("```python\nprint(1)\n```") is None


# ================================================================== swe_tests (a real git repository)


BUGGY = "def add(a, b):\n    return a - b\n\n\ndef sub(a, b):\n    return a - b\n\n\ndef mul(a, b):\n    return a * b\n"
TESTS = (
    "from calc import mul, sub\n\n\ndef test_sub():\n    assert sub(5, 3) == 2\n\n\n"
    "def test_mul():\n    assert mul(2, 3) == 6\n"
)


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout


@pytest.fixture(scope="module")
def calc_task(tmp_path_factory) -> tuple[Path, dict, callable]:
    """repos/acme__calc at a buggy base commit, a row in the swe_bench schema, and a diff maker."""
    root = tmp_path_factory.mktemp("swe")
    clone = root / "repos" / "acme__calc"
    clone.mkdir(parents=True)
    (clone / "calc.py").write_text(BUGGY)
    (clone / "test_calc.py").write_text(TESTS)
    git(clone, "init", "-q")
    git(clone, "add", ".")
    git(clone, "commit", "-q", "-m", "base")
    base = git(clone, "rev-parse", "HEAD").strip()

    def diff(**files: str) -> str:
        """The `git diff` of writing these files (name with '.' as '_'), then undone."""
        for name, text in files.items():
            (clone / name.replace("_py", ".py")).write_text(text)
        out = git(clone, "diff")
        git(clone, "checkout", "-q", "--", ".")
        return out

    test_patch = diff(
        test_calc_py=TESTS.replace("import mul, sub", "import add, mul, sub")
        + "\n\ndef test_add():\n    assert add(2, 3) == 5\n"
    )
    row = {
        "row_id": "acme__calc-1",
        "instance_id": "acme__calc-1",
        "repo": "acme/calc",
        "base_commit": base,
        "ground_truth": diff(calc_py=BUGGY.replace("return a - b", "return a + b", 1)),
        "test_patch": test_patch,
        "FAIL_TO_PASS": json.dumps(["test_calc.py::test_add"]),
        "PASS_TO_PASS": json.dumps(["test_calc.py::test_sub", "test_calc.py::test_mul"]),
    }
    return root / "repos", row, diff


def local_evaluator(repos: Path, **options) -> SweTestsEvaluator:
    return get_evaluator(
        {
            "name": "swe_tests",
            "backend": "local",
            "repos_dir": str(repos),
            "test_cmd": f"{sys.executable} -m pytest -x -q -p no:cacheprovider",
            "timeout_s": 60,
            **options,
        }
    )


@pytest.fixture(autouse=True)
def quick_pytest(monkeypatch):
    """The evaluated test runs inherit this: pytest starts in half the time without plugin autoload."""
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")


def test_local_backend_resolves_with_the_gold_patch(calc_task):
    repos, row, _ = calc_task
    fixed = local_evaluator(repos)(f"```diff\n{row['ground_truth']}```", row)
    assert (fixed.score, fixed.reason) == (1.0, "resolved: FAIL_TO_PASS 1/1 pass, PASS_TO_PASS 2/2 pass")
    assert fixed.metrics == {"applied": 1.0, "resolved": 1.0, "fail_to_pass": 1.0, "pass_to_pass": 1.0}


def test_local_backend_a_fix_that_breaks_another_test_scores_lower(calc_task):
    repos, row, diff = calc_task
    breaking = diff(calc_py=BUGGY.replace("return a - b", "return a + b"))  # fixes add, breaks sub
    broken = local_evaluator(repos)(breaking, row)
    assert (broken.score, broken.reason) == (0.5, "FAIL_TO_PASS 1/1 pass, PASS_TO_PASS 1/2 pass")
    assert broken.metrics == {"applied": 1.0, "resolved": 0.0, "fail_to_pass": 1.0, "pass_to_pass": 0.5}
    assert local_evaluator(repos, shaped=False)(breaking, row).score == 0.0


def test_local_backend_a_patch_that_fixes_nothing_scores_zero(calc_task):
    repos, row, diff = calc_task
    noop = local_evaluator(repos)(diff(calc_py="# calculator\n" + BUGGY), row)
    assert (noop.score, noop.reason) == (0.0, "FAIL_TO_PASS 0/1 pass, PASS_TO_PASS 2/2 pass")


def test_local_backend_malformed_or_stale_patches_score_zero(calc_task):
    repos, row, _ = calc_task
    evaluator = local_evaluator(repos)
    malformed = evaluator("```diff\n--- a/calc.py\n+++ b/calc.py\n@@ -1,5 +1,5 @@\n-    return a - b\n```", row)
    assert (malformed.score, malformed.metrics["applied"]) == (0.0, 0.0)
    assert malformed.reason.startswith("not a well-formed unified diff")
    assert evaluator("Just add the numbers.", row).reason.startswith("not a unified diff")
    stale = row["ground_truth"].replace("-    return a - b", "-    return a - b  # old")
    not_applied = evaluator(stale, row)
    assert not_applied.score == 0.0 and not_applied.reason.startswith("patch does not apply: ")


def test_local_backend_restores_test_files_the_patch_touched(calc_task):
    repos, row, diff = calc_task
    # the fix plus deleting the tests it would fail: the test files are reset before test_patch
    cheat = diff(calc_py=BUGGY.replace("return a - b", "return a + b", 1), test_calc_py="")
    result = local_evaluator(repos)(cheat, row)
    assert result.score == 1.0 and result.reason.startswith("resolved")


def test_local_backend_setup_problems_raise(calc_task, tmp_path):
    repos, row, _ = calc_task
    evaluator = local_evaluator(repos)
    with pytest.raises(
        ValueError,
        match=r"no git clone of acme/other at .*acme__other \(expected layout "
        r"<repos_dir>/<owner>__<name>",
    ):
        evaluator(row["ground_truth"], {**row, "repo": "acme/other"})
    with pytest.raises(ValueError, match=r"base_commit 0{40} is not in"):
        evaluator(row["ground_truth"], {**row, "base_commit": "0" * 40})
    with pytest.raises(ValueError, match=r"reward.repos_dir: backend 'local' needs a directory"):
        get_evaluator({"name": "swe_tests"})
    with pytest.raises(ValueError, match=r"reward.repos_dir '.*nowhere': no such directory"):
        get_evaluator({"name": "swe_tests", "repos_dir": str(tmp_path / "nowhere")})
    with pytest.raises(ValueError, match=r"reward.backend: must be one of local, swebench, got 'docker'"):
        get_evaluator({"name": "swe_tests", "backend": "docker"})


def test_swebench_backend_never_scores_without_its_harness():
    problem = docker_problem()
    if problem is not None:
        with pytest.raises(ValueError, match=r"reward.backend 'swebench' runs the official harness in Docker, but "):
            SweTestsEvaluator(backend="swebench")
    else:  # a Docker engine answers here: then only the package can be missing
        try:
            import swebench  # noqa: F401
        except ImportError:
            with pytest.raises(ValueError, match=r"pip install swebench"):
                SweTestsEvaluator(backend="swebench")
        else:
            assert SweTestsEvaluator(backend="swebench").backend == "swebench"


# ================================================================== slow: the tiny model trains on both sources

ACCELERATE = [
    sys.executable,
    "-m",
    "accelerate.commands.launch",
    "--cpu",
    "--num_processes",
    "1",
    "--num_machines",
    "1",
    "--mixed_precision",
    "no",
    "--dynamo_backend",
    "no",
]
LORA = {
    "rank": 8,
    "alpha": 16,
    "dropout": 0.05,
    "target_modules": "all-linear",
    "exclude_modules": ["lm_head", "embed_tokens"],
}


def launch(config: dict, model: Path, data: Path, out: Path) -> subprocess.CompletedProcess:
    command = ACCELERATE + [
        "-m",
        "knobsweep.train",
        "--config-json",
        json.dumps(config),
        "--model",
        str(model),
        "--data",
        str(data),
        "--out",
        str(out),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, cwd=REPO)


def message_texts(rows: list[dict], *columns: str) -> list[str]:
    return [m["content"] for row in rows for column in columns for m in row[column]]


@pytest.mark.slow
def test_grpo_trains_on_swe_bench_with_the_swe_patch_reward(tmp_path):
    from knobsweep.io import read_jsonl
    from knobsweep.models.tiny import build_tiny_model

    short = [
        "scikit-learn__scikit-learn-11574",
        "django__django-15136",
        "scikit-learn__scikit-learn-13584",
        "django__django-13251",
        "sympy__sympy-13031",
        "django__django-17029",
    ]
    data = tmp_path / "data"
    convert_to_dir({"source": "swe_bench", "path": str(COMBINED), "task_ids": short, "train_size": 4}, data)
    train = read_rows(data / "train.parquet")
    model = build_tiny_model(message_texts(train, "prompt") + [r["ground_truth"] for r in train], tmp_path / "tiny")
    config = {
        "model": {"name": "tiny", "lora": LORA},
        "train": {
            "method": "grpo",
            "loss": "grpo",
            "learning_rate": 5e-4,
            "epochs": 1,
            "batch_size": 2,
            "kl_beta": None,
            "log_every": 1,
            "trl": {},
        },
        "rollout": {"n": 4, "temperature": 1.0, "top_p": 1.0, "top_k": 0, "max_tokens": 16, "extra_body": {}},
        "reward": {"name": "swe_patch", "file_weight": 0.5},
        "seed": 0,
    }
    result = launch(config, model, data, tmp_path / "train")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    status = json.loads((tmp_path / "train/status.json").read_text())
    # the random tiny model writes no diff, so every sample scores 0 and no group has a spread: the run is
    # EARLY_STOPPED without a learning signal, its rollouts scored by swe_patch all the same
    assert (status["state"], status["step"], status["learned"]) == ("EARLY_STOPPED", 2, False), status
    rollouts = read_jsonl(tmp_path / "train/rollouts.jsonl")
    assert {r["step"] for r in rollouts} == {1, 2} and {r["row_id"] for r in rollouts} <= {r["row_id"] for r in train}
    # 16 random tokens are no diff: every completion is judged, and says why it scored 0
    assert all(r["valid"] and 0.0 <= r["score"] <= 1.0 for r in rollouts)
    assert all(set(r["metrics"]) == {"well_formed", "file_overlap", "line_similarity"} for r in rollouts)
    assert (tmp_path / "train/adapter").is_dir()


@pytest.mark.slow
def test_sft_trains_on_swe_synth_trajectories(tmp_path):
    pytest.importorskip("knobsweep.train.sft")
    from knobsweep.io import read_jsonl
    from knobsweep.models.tiny import build_tiny_model

    data = tmp_path / "data"
    options = {"source": "swe_synth", "path": str(TRAJECTORIES), "max_length": 512, "eval_ratio": 0.2}
    manifest = convert_to_dir(options, data)
    assert manifest["stats"]["char_budget"] == 1792
    train = read_rows(data / "train.parquet")
    assert len(train) == 5
    model = build_tiny_model(message_texts(train, "messages"), tmp_path / "tiny")
    config = {
        "model": {"name": "tiny", "lora": LORA},
        "train": {
            "method": "sft",
            "learning_rate": 5e-4,
            "epochs": 1,
            "batch_size": 2,
            "log_every": 1,
            "trl": {},
            "sft": {"max_length": 1024},
        },
        "seed": 0,
    }
    result = launch(config, model, data, tmp_path / "train")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    status = json.loads((tmp_path / "train/status.json").read_text())
    assert (status["state"], status["step"]) == ("COMPLETED", 3)  # 5 conversations, 2 per step
    metrics = read_jsonl(tmp_path / "train/metrics.jsonl")
    assert [m["step"] for m in metrics] == [1, 2, 3] and all("loss" in m for m in metrics)
    assert (tmp_path / "train/adapter").is_dir()

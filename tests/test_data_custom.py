"""Custom data (jsonl / parquet / hf sources, rl / sft / kto rows) and the `match` evaluator,
on real GSM8K rows (data/custom_example) and SWE-smith trajectories (tests/fixtures); (slow) GRPO on converted jsonl."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import FIXTURES

from knobsweep.data import MESSAGES, convert_to_dir, custom, input_fingerprint
from knobsweep.errors import DataError, FieldError, SpecError
from knobsweep.io import file_sha256, read_jsonl
from knobsweep.rewards import get_evaluator
from knobsweep.rewards.match import MatchEvaluator
from knobsweep.spec.sources import CustomOptions, read_options

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "data" / "custom_example"
GSM8K = ROOT / "data" / "gsm8k"


def example_records(split: str = "train") -> list[dict]:
    return [json.loads(line) for line in (EXAMPLE / f"{split}.jsonl").read_text().splitlines()]


def write_jsonl(path: Path, records: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


def read_rows(path: Path) -> list[dict]:
    return pq.read_table(path).to_pylist()


def converted(section: dict):
    """What the converter makes of a `data` section, read by the spec's models as the data stage reads it."""
    return custom.convert(read_options(section))


def resolved(section: dict) -> dict:
    """A `data` section as the spec resolves it (every default filled in)."""
    return read_options(section).model_dump(mode="json")


def example(**overrides) -> dict:
    """The shipped example, mapped onto rl rows."""
    return {
        "source": "jsonl",
        "path": str(EXAMPLE),
        "prompt_key": "problem",
        "ground_truth_key": "final_answer",
        **overrides,
    }


# --- jsonl: where the rows come from ------------------------------------------------------


def test_directory_splits_map_columns_onto_rl_rows(tmp_path):
    manifest = convert_to_dir(example(extra_keys=["id"], system_prompt="Be brief."), tmp_path / "out")
    assert manifest["rows"] == {"train": 64, "eval": 16} and manifest["dropped"] == []
    assert manifest["inputs"] == {
        (EXAMPLE / f).as_posix(): file_sha256(EXAMPLE / f) for f in ("train.jsonl", "test.jsonl")
    }
    assert manifest["converter_version"] == custom.CONVERTER_VERSION
    schema = pa.schema(
        [("row_id", pa.string()), ("prompt", MESSAGES), ("ground_truth", pa.string()), ("id", pa.string())]
    )
    for split, name in (("train", "train"), ("eval", "test")):
        assert pq.read_schema(tmp_path / "out" / f"{split}.parquet").equals(schema)
        records = example_records(name)
        for row in read_rows(tmp_path / "out" / f"{split}.parquet"):
            prefix, index = row["row_id"].rsplit("-", 1)
            record = records[int(index)]
            assert prefix == name
            assert row["prompt"] == [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": record["problem"]},
            ]
            assert (row["ground_truth"], row["id"]) == (record["final_answer"], record["id"])


def test_one_file_with_eval_ratio_holds_out_a_seeded_share():
    options = {
        "source": "jsonl",
        "path": str(EXAMPLE / "train.jsonl"),
        "eval_ratio": 0.25,
        "prompt_key": "problem",
        "ground_truth_key": "final_answer",
    }
    result = converted(options)
    train, evals = {r["row_id"] for r in result.train}, {r["row_id"] for r in result.eval}
    assert (len(train), len(evals)) == (48, 16) and not train & evals
    assert train | evals == {f"train-{i}" for i in range(64)}
    assert result.options["eval_split"] is None  # nothing was read from an eval split
    again = converted(options)
    assert [r["row_id"] for r in again.eval] == [r["row_id"] for r in result.eval]
    reseeded = {r["row_id"] for r in converted({**options, "seed": 1}).eval}
    assert reseeded != evals
    # Sizes cut after the holdout, so the eval rows stay the same rows.
    small = converted({**options, "train_size": 10, "eval_size": 5})
    assert [r["row_id"] for r in small.eval] == [r["row_id"] for r in result.eval][:5]


def test_train_and_eval_files_name_rows_by_file(tmp_path):
    records = example_records()
    a = write_jsonl(tmp_path / "a.jsonl", records[:10])
    b = write_jsonl(tmp_path / "more" / "b.jsonl", records[10:25])
    c = write_jsonl(tmp_path / "c.jsonl", records[25:30])
    options = {
        "source": "jsonl",
        "train_files": [str(a), str(b)],
        "eval_files": str(c),
        "prompt_key": "problem",
        "ground_truth_key": "final_answer",
    }
    result = converted(options)
    assert sorted(r["row_id"] for r in result.train) == sorted(
        [f"a-{i}" for i in range(10)] + [f"b-{i}" for i in range(15)]
    )
    assert sorted(r["row_id"] for r in result.eval) == [f"c-{i}" for i in range(5)]
    assert result.options["train_files"] == [str(a), str(b)] and result.options["eval_files"] == [str(c)]
    assert set(input_fingerprint(options)) == {a.as_posix(), b.as_posix(), c.as_posix()}
    # Two files with one stem keep their rows apart by path.
    twin = write_jsonl(tmp_path / "other" / "a.jsonl", records[30:32])
    ids = {r["row_id"] for r in converted({**options, "train_files": [str(a), str(twin)]}).train}
    assert f"{(tmp_path / 'a').as_posix()}-0" in ids and f"{(tmp_path / 'other' / 'a').as_posix()}-1" in ids


def test_prompts_may_be_message_lists_and_ground_truths_any_json(tmp_path):
    file = write_jsonl(
        tmp_path / "rows.jsonl",
        [
            {
                "prompt": [{"role": "system", "content": "S"}, {"role": "user", "content": "2+2?"}],
                "ground_truth": 4,
                "meta": {"level": 1},
            },
            {"prompt": "Name a colour.", "ground_truth": ["red", "blue"], "meta": 3},
            {"prompt": "Yes?", "ground_truth": True, "meta": None},
        ],
    )
    result = converted(
        {"source": "jsonl", "path": str(file), "eval_files": str(file), "extra_keys": ["meta"], "system_prompt": "Sys."}
    )
    rows = {r["row_id"]: r for r in result.eval}
    assert rows["rows-0"]["prompt"][0] == {"role": "system", "content": "S"}  # its own system turn kept
    assert rows["rows-1"]["prompt"] == [
        {"role": "system", "content": "Sys."},
        {"role": "user", "content": "Name a colour."},
    ]
    assert [rows[f"rows-{i}"]["ground_truth"] for i in range(3)] == ["4", '["red", "blue"]', "true"]
    # Mixed extra values become JSON text; nulls stay null.
    assert result.eval_schema.field("meta").type == pa.string()
    assert [rows[f"rows-{i}"]["meta"] for i in range(3)] == ['{"level": 1}', "3", None]


def test_extra_columns_keep_their_type(tmp_path):
    file = write_jsonl(
        tmp_path / "rows.jsonl",
        [
            {"prompt": f"q{i}", "ground_truth": str(i), "n": i, "w": i / 2, "ok": i % 2 == 0, "tag": f"t{i}"}
            for i in range(4)
        ],
    )
    result = converted({"source": "jsonl", "path": str(file), "eval_ratio": 0.5, "extra_keys": ["n", "w", "ok", "tag"]})
    types = {name: result.schema.field(name).type for name in ("n", "w", "ok", "tag")}
    assert types == {"n": pa.int64(), "w": pa.float64(), "ok": pa.bool_(), "tag": pa.string()}
    assert result.eval_schema.equals(result.schema)


# --- bad input --------------------------------------------------------------------------


def bad_lines() -> list:
    good = example_records()[:4]
    return [
        good[0],
        '{"problem": "broken", ',  # line 2: not JSON
        {"question": "Q", "final_answer": "1"},  # line 3: no problem column
        good[1],
        {"problem": 7, "final_answer": "1"},  # line 5: wrong type
        "",  # line 6: blank, skipped
        ["problem", "final_answer"],  # line 7: not an object
        {"problem": "Q", "final_answer": "  "},  # line 8: empty ground truth
        {"problem": [{"role": "user"}], "final_answer": "1"},  # line 9: a message without content
        good[2],
        good[3],
    ]


def test_bad_rows_are_dropped_and_listed_with_their_lines(tmp_path):
    file = write_jsonl(tmp_path / "rows.jsonl", bad_lines())
    options = {
        "source": "jsonl",
        "path": str(file),
        "eval_files": str(EXAMPLE / "test.jsonl"),
        "prompt_key": "problem",
        "ground_truth_key": "final_answer",
    }
    manifest = convert_to_dir(options, tmp_path / "out")
    assert manifest["rows"] == {"train": 4, "eval": 16}
    dropped = {d["line"]: d for d in manifest["dropped"]}
    assert set(dropped) == {2, 3, 5, 7, 8, 9}
    assert {d["split"] for d in dropped.values()} == {"train"} and {d["file"] for d in dropped.values()} == {str(file)}
    assert dropped[2]["reason"].startswith("not a JSON line")
    assert dropped[3]["reason"] == "missing 'problem' (data.prompt_key); the row has: question, final_answer"
    assert dropped[5]["reason"] == (
        "'problem' (data.prompt_key) must be a string or a list of {role, content} messages, got int"
    )
    assert dropped[7]["reason"] == "not a JSON object: list"
    assert dropped[8]["reason"] == "'final_answer' (data.ground_truth_key) is empty"
    assert dropped[9]["reason"] == "'problem' (data.prompt_key) message 1 is not a {role, content} pair of strings"
    assert sorted(r["row_id"] for r in read_rows(tmp_path / "out" / "train.parquet")) == [
        "rows-0",
        "rows-10",
        "rows-3",
        "rows-9",
    ]  # 0-based line index: traceable


def test_every_row_bad_fails_naming_the_first_lines_and_leaves_nothing(tmp_path):
    file = write_jsonl(tmp_path / "rows.jsonl", ["not json", {"prompt": "q"}, {"prompt": "q", "ground_truth": None}])
    out = tmp_path / "results" / "data" / "k"
    with pytest.raises(DataError) as error:
        convert_to_dir({"source": "jsonl", "path": str(file), "eval_files": str(file)}, out)
    message = str(error.value)
    assert message.startswith(f"{file} (train rows): no usable rows for format 'rl', all 3 were dropped (")
    assert f"{file} line 1: not a JSON line" in message
    assert f"{file} line 2: missing 'ground_truth' (data.ground_truth_key); the row has: prompt" in message
    assert f"{file} line 3: 'ground_truth' (data.ground_truth_key) is null" in message
    assert not out.exists()
    assert not out.parent.exists() or list(out.parent.iterdir()) == []  # no temp directory left behind


def test_empty_input_fails(tmp_path):
    empty = write_jsonl(tmp_path / "empty.jsonl", [])
    with pytest.raises(DataError, match=r"empty.jsonl \(eval rows\): no rows \(the input is empty\)"):
        converted(
            {
                "source": "jsonl",
                "path": str(EXAMPLE / "train.jsonl"),
                "eval_files": str(empty),
                "prompt_key": "problem",
                "ground_truth_key": "final_answer",
            }
        )


def test_failure_keeps_a_previous_output(tmp_path):
    out = tmp_path / "out"
    convert_to_dir(example(train_size=4, eval_size=2), out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(FieldError, match=r"data.train_size: .* asks for 65 rows but only 64 are usable"):
        convert_to_dir(example(train_size=65), out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "knobsweep.data", *args], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def test_cli_prints_rows_per_split_and_the_first_dropped_lines(tmp_path):
    file = write_jsonl(tmp_path / "rows.jsonl", bad_lines() + ["{oops"] * 3)
    config = {
        "source": "jsonl",
        "path": str(file),
        "eval_files": str(EXAMPLE / "test.jsonl"),
        "prompt_key": "problem",
        "ground_truth_key": "final_answer",
    }
    result = run_cli("--config-json", json.dumps(config), "--out", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    assert "jsonl (rl): 4 train + 16 eval rows, 9 dropped (9 train)" in result.stdout
    assert "dropped 9 unusable rows:" in result.stderr
    assert f"train {file} line 3: missing 'problem' (data.prompt_key)" in result.stderr
    assert "... and 4 more (see manifest.json)" in result.stderr


def test_cli_error_exits_non_zero_and_writes_nothing(tmp_path):
    config = {"source": "jsonl", "path": str(tmp_path / "missing.jsonl"), "eval_ratio": 0.1}
    result = run_cli("--config-json", json.dumps(config), "--out", str(tmp_path / "out"))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "missing.jsonl': no such file or directory" in result.stderr
    assert not (tmp_path / "out").exists()


# --- options ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options, message",
    [
        ({"source": "csv"}, r"data.source: 'csv' is not a known data source"),
        ({"prompt_kye": "q"}, r"data.prompt_kye: unknown key 'prompt_kye' \(did you mean 'prompt_key'\?\)"),
        ({"format": "dpo"}, r"data.format: 'dpo' is not allowed; allowed: 'rl', 'sft' or 'kto'"),
        ({"path": None}, r"data.path: source 'jsonl' needs exactly one of data.path .* got neither"),
        ({"train_files": ["a.jsonl"]}, r"needs exactly one of data.path .* got both"),
        ({"train_files": []}, r"data.train_files: \[\]: List should have at least 1 item"),
        ({"eval_ratio": 1.0}, r"data.eval_ratio: 1.0 is out of range; allowed: 0 < value < 1"),
        ({"eval_ratio": 0.1, "eval_files": ["x"]}, r"data.eval_ratio: eval rows come from data.eval_files or"),
        ({"eval_ratio": 0.1, "eval_split": "test"}, r"data.eval_ratio: eval rows come from data.eval_split or"),
        ({"eval_files": "x", "eval_split": "dev"}, r"data.eval_split: eval rows come from data.eval_files or"),
        ({"eval_split": ""}, r"data.eval_split: '': String should have at least 1 character"),
        ({"eval_split": None}, r"data.eval_split: must be a split name \(or set data.eval_files or data.eval_ratio\)"),
        ({"hub_config": "main"}, r"data.hub_config: only for source 'hf'"),
        ({"prompt_key": ""}, r"data.prompt_key: '': String should have at least 1 character"),
        ({"system_prompt": " "}, r"data.system_prompt: ' ' must be a non-empty string or null"),
        ({"extra_keys": "id"}, r"data.extra_keys: 'id': Input should be a valid list"),
        ({"extra_keys": ["id", "id"]}, r"data.extra_keys: \['id', 'id'\] lists a column twice"),
        ({"extra_keys": ["label"]}, r"data.extra_keys: \['label'\] 'label' is an output column of its own"),
        ({"train_size": 0}, r"data.train_size: 0 is out of range; allowed: 1 <= value"),
        ({"seed": 1.5}, r"data.seed: 1.5: Input should be a valid integer"),
    ],
)
def test_bad_options_name_the_field(options, message):
    with pytest.raises(SpecError, match=message):
        read_options({"source": "jsonl", "path": "rows.jsonl", **options})


def test_hf_needs_a_path():
    with pytest.raises(SpecError, match=r"data.path: source 'hf' needs a hub dataset id"):
        read_options({"source": "hf"})


@pytest.mark.parametrize(
    "options",
    [
        {"source": "jsonl", "path": "x.jsonl", "eval_ratio": 0.2},
        {"source": "jsonl", "train_files": "a.jsonl", "eval_files": ["b.jsonl"], "format": "kto"},
        {"source": "parquet", "path": "dir", "eval_split": "validation", "format": "sft"},
        {"source": "hf", "path": "owner/name", "hub_config": "main", "train_files": "a.jsonl", "eval_files": "b.jsonl"},
    ],
)
def test_resolving_twice_changes_nothing(options):
    # The spec stores resolved options in the run config; the data stage resolves them again.
    once = resolved(options)
    assert resolved(once) == once
    assert set(once) == set(CustomOptions.model_fields)


def test_missing_inputs_are_named(tmp_path):
    (tmp_path / "dir").mkdir()
    write_jsonl(tmp_path / "dir" / "train.jsonl", example_records()[:3])
    with pytest.raises(
        FieldError,
        match=r"data.eval_split: .*dir has no 'test' file; it has: train.jsonl; "
        r"set data.eval_split, data.eval_files, or data.eval_ratio",
    ):
        converted({"source": "jsonl", "path": str(tmp_path / "dir")})
    with pytest.raises(FieldError, match=r"data.train_split: .*dir has no 'dev' file"):
        converted({"source": "jsonl", "path": str(tmp_path / "dir"), "train_split": "dev"})
    with pytest.raises(FieldError, match=r"data.eval_ratio: .*train.jsonl holds no eval split"):
        converted({"source": "jsonl", "path": str(tmp_path / "dir" / "train.jsonl")})
    with pytest.raises(FieldError, match=r"data.eval_files: 'nope.jsonl' is no such file"):
        input_fingerprint({"source": "jsonl", "path": str(tmp_path / "dir"), "eval_files": "nope.jsonl"})


# --- sft and kto rows -------------------------------------------------------------------


def test_sft_prompt_response_rows_and_reference_eval_rows(tmp_path):
    manifest = convert_to_dir(
        example(format="sft", response_key="solution", ground_truth_key="missing"), tmp_path / "out"
    )
    assert manifest["rows"] == {"train": 64, "eval": 16}
    train = read_rows(tmp_path / "out" / "train.parquet")
    assert pq.read_schema(tmp_path / "out" / "train.parquet").names == ["row_id", "prompt", "completion"]
    records = example_records()
    for row in train:
        record = records[int(row["row_id"].rsplit("-", 1)[1])]
        assert row["prompt"] == [{"role": "user", "content": record["problem"]}]
        assert row["completion"] == [{"role": "assistant", "content": record["solution"]}]
    # No ground-truth column: eval rows are scored against the reference response.
    evals = read_rows(tmp_path / "out" / "eval.parquet")
    tests = example_records("test")
    assert {r["ground_truth"] for r in evals} == {t["solution"] for t in tests}


def test_sft_conversations_and_mixed_rows(tmp_path):
    # Real multi-turn SFT rows (SWE-smith trajectories) next to a prompt/response row.
    trajectories = FIXTURES / "trajectories" / "swesmith__ft_xml_example.jsonl"
    conversations = [json.loads(line) for line in trajectories.read_text().splitlines()]
    file = write_jsonl(tmp_path / "sft.jsonl", conversations)
    result = converted(
        {"source": "jsonl", "format": "sft", "path": str(file), "eval_files": str(file), "extra_keys": ["instance_id"]}
    )
    assert result.schema.names == ["row_id", "messages"]
    by_id = {r["row_id"]: r for r in result.train}
    assert by_id["sft-0"]["messages"] == [
        {"role": m["role"], "content": m["content"]} for m in conversations[0]["messages"]
    ]
    # eval: the conversation up to its last assistant turn is the prompt, that turn the reference.
    first = next(r for r in result.eval if r["row_id"] == "sft-0")
    last = max(i for i, m in enumerate(conversations[0]["messages"]) if m["role"] == "assistant")
    assert len(first["prompt"]) == last and first["ground_truth"] == conversations[0]["messages"][last]["content"]
    assert first["instance_id"] == conversations[0]["instance_id"]

    mixed = write_jsonl(tmp_path / "mixed.jsonl", conversations[:1] + [{"prompt": "Hi", "response": "Hello"}])
    result = converted({"source": "jsonl", "format": "sft", "path": str(mixed), "eval_files": str(mixed)})
    rows = {r["row_id"]: r for r in result.train}
    assert rows["mixed-1"] == {
        "row_id": "mixed-1",
        "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}],
    }
    assert result.stats == {"prompt_completion_as_messages": 1}


def test_kto_labels_parse_and_bad_labels_are_dropped(tmp_path):
    records = example_records()[:8]
    labels = [True, False, 1, 0, "true", "False", 2, "yes"]
    file = write_jsonl(
        tmp_path / "kto.jsonl",
        [{"q": r["problem"], "a": r["solution"], "ok": label} for r, label in zip(records, labels)],
    )
    manifest = convert_to_dir(
        {
            "source": "jsonl",
            "format": "kto",
            "path": str(file),
            "eval_files": str(file),
            "prompt_key": "q",
            "response_key": "a",
            "label_key": "ok",
        },
        tmp_path / "out",
    )
    train = {r["row_id"]: r for r in read_rows(tmp_path / "out" / "train.parquet")}
    assert {rid: r["label"] for rid, r in train.items()} == {
        "kto-0": True,
        "kto-1": False,
        "kto-2": True,
        "kto-3": False,
        "kto-4": True,
        "kto-5": False,
    }
    assert manifest["stats"] == {"label_true": 3, "label_false": 3}
    assert train["kto-0"]["completion"] == [{"role": "assistant", "content": records[0]["solution"]}]
    reasons = {(d["split"], d["line"]): d["reason"] for d in manifest["dropped"]}
    assert reasons[("train", 7)] == '\'ok\' (data.label_key) must be a bool, 0/1 or "true"/"false", got 2'
    assert reasons[("train", 8)].endswith("got 'yes'")
    # eval rows: a desirable response is the reference; an undesirable one is no reference at all.
    evals = {r["row_id"] for r in read_rows(tmp_path / "out" / "eval.parquet")}
    assert evals == {"kto-0", "kto-2", "kto-4"}
    assert reasons[("eval", 2)].startswith("labelled false and no 'ground_truth' (data.ground_truth_key)")


def test_kto_response_must_be_one_assistant_turn(tmp_path):
    two = [{"role": "assistant", "content": "a"}, {"role": "assistant", "content": "b"}]
    file = write_jsonl(
        tmp_path / "kto.jsonl",
        [
            {"prompt": "p", "response": two, "label": True},
            {"prompt": "p", "response": [{"role": "user", "content": "x"}], "label": True},
            {"prompt": "p", "response": "fine", "label": False, "ground_truth": "fine"},
        ],
    )
    result = converted({"source": "jsonl", "format": "kto", "path": str(file), "eval_files": str(file)})
    assert [r["row_id"] for r in result.train] == ["kto-2"]
    reasons = [d["reason"] for d in result.dropped if d["split"] == "train"]
    assert reasons == [
        "'response' (data.response_key) must be one assistant message for kto, got 2 messages",
        "'response' (data.response_key) has no assistant message",
    ]


# --- parquet and hf: the same rows ------------------------------------------------------


def rl_rows(result) -> tuple[list, list]:
    def strip(rows):
        return sorted((r["row_id"].rsplit("-", 1)[1], r["prompt"][-1]["content"], r["ground_truth"]) for r in rows)

    return strip(result.train), strip(result.eval)


@pytest.fixture(scope="module")
def jsonl_rows():
    return rl_rows(converted(example()))


def test_parquet_files_give_the_same_rows(tmp_path, jsonl_rows):
    (tmp_path / "pq").mkdir()
    for split in ("train", "test"):
        pq.write_table(pa.Table.from_pylist(example_records(split)), tmp_path / "pq" / f"{split}.parquet")
    options = example(source="parquet", path=str(tmp_path / "pq"))
    result = converted(options)
    assert rl_rows(result) == jsonl_rows
    assert result.inputs == input_fingerprint(options)
    assert {r["row_id"].rsplit("-", 1)[0] for r in result.train} == {"train"}


def test_parquet_shards_and_bad_rows(tmp_path):
    records = example_records()
    (tmp_path / "pq").mkdir()
    pq.write_table(pa.Table.from_pylist(records[:30]), tmp_path / "pq" / "train-00000-of-00002.parquet")
    broken = records[30:34] + [{**records[34], "problem": None}]
    pq.write_table(pa.Table.from_pylist(broken), tmp_path / "pq" / "train-00001-of-00002.parquet")
    result = converted(example(source="parquet", path=str(tmp_path / "pq"), eval_ratio=0.1))
    assert len(result.train) + len(result.eval) == 34
    assert result.dropped == [
        {
            "split": "train",
            "file": str(tmp_path / "pq" / "train-00001-of-00002.parquet"),
            "line": 5,
            "reason": "'problem' (data.prompt_key) is null",
        }
    ]


def test_unreadable_parquet_is_named(tmp_path):
    bad = tmp_path / "rows.parquet"
    bad.write_text("not parquet")
    with pytest.raises(DataError, match=r"rows.parquet: not a readable Parquet file"):
        converted({"source": "parquet", "path": str(bad), "eval_ratio": 0.5})


def test_hf_saved_dataset_gives_the_same_rows(tmp_path, jsonl_rows):
    import datasets

    saved = tmp_path / "saved"
    datasets.DatasetDict(
        {split: datasets.Dataset.from_list(example_records(split)) for split in ("train", "test")}
    ).save_to_disk(str(saved))
    options = example(source="hf", path=str(saved))
    result = converted(options)
    assert rl_rows(result) == jsonl_rows
    assert result.inputs == input_fingerprint(options)
    assert any(name.endswith(".arrow") for name in result.inputs)
    with pytest.raises(FieldError, match=r"data.eval_split: dataset .* has no split 'validation'; it has: train, test"):
        converted({**options, "eval_split": "validation"})
    # One saved split is the train split; eval rows are held out.
    datasets.Dataset.from_list(example_records()).save_to_disk(str(tmp_path / "one"))
    held = converted(example(source="hf", path=str(tmp_path / "one"), eval_ratio=0.25))
    assert (len(held.train), len(held.eval)) == (48, 16)


def test_hf_data_files_go_through_load_dataset(tmp_path, jsonl_rows):
    # load_dataset(path, name, data_files=...): the call a hub id takes, here with the json loader.
    options = example(
        source="hf", path="json", train_files=[str(EXAMPLE / "train.jsonl")], eval_files=[str(EXAMPLE / "test.jsonl")]
    )
    result = converted(options)
    assert rl_rows(result) == jsonl_rows
    assert result.inputs == {(EXAMPLE / f).as_posix(): file_sha256(EXAMPLE / f) for f in ("train.jsonl", "test.jsonl")}
    # A local data directory: load_dataset(dir) finds its train / test files by name.
    assert rl_rows(converted(example(source="hf"))) == jsonl_rows


def test_hf_missing_local_directory_is_not_looked_up_on_the_hub(tmp_path, monkeypatch):
    import datasets

    def no_hub(*args, **kwargs):
        raise AssertionError(f"tried the hub: {args}")

    monkeypatch.setattr(datasets, "load_dataset", no_hub)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    with pytest.raises(FieldError, match=r"data.path: 'data/mine': no such directory .* and not a hub dataset id"):
        converted({"source": "hf", "path": "data/mine"})
    assert input_fingerprint({"source": "hf", "path": "owner/name", "revision": "abc123"}) == {
        "owner/name": "hub:owner/name config=default revision=abc123"
    }


# --- the match evaluator ----------------------------------------------------------------


@pytest.mark.parametrize(
    "options, completion, truth, score",
    [
        ({}, "  Paris ", "paris", 1.0),
        ({"case_sensitive": True}, "Paris", "paris", 0.0),
        ({"strip": False}, "paris ", "paris", 0.0),
        ({"mode": "contains"}, "I think it is PARIS.", "paris", 1.0),
        ({"mode": "contains"}, "Lyon", "paris", 0.0),
        ({"mode": "numeric"}, "so the total is $1,000.", "1000", 1.0),
        ({"mode": "numeric"}, "48 + 24 = 72.00", "72", 1.0),
        ({"mode": "numeric"}, "first 72, then 73", "72", 0.0),
        ({"mode": "numeric"}, "no idea", "72", 0.0),
        ({"mode": "numeric", "pattern": r"#### (.+)"}, "72 apples\n#### 18", "18", 1.0),
        ({"mode": "regex", "pattern": r"answer: (\w+)"}, "answer: B (because...)", "b", 1.0),
        ({"mode": "regex", "pattern": r"answer: (\w+)"}, "answer: A, no, answer: C", "C", 1.0),
        ({"mode": "regex", "pattern": r"answer: (\w+)"}, "I pick B", "b", 0.0),
    ],
)
def test_match_modes(options, completion, truth, score):
    evaluation = MatchEvaluator(**options)(completion, {"row_id": "r", "ground_truth": truth})
    assert evaluation.score == score and evaluation.valid
    assert evaluation.metrics["matched"] == score
    assert evaluation.reason


@pytest.mark.parametrize(
    "options, completion, score, answered",
    [
        ({"mode": "numeric"}, "the answer is 72", 1.0, 1.0),
        ({"mode": "numeric"}, "the answer is 71", 0.25, 1.0),
        ({"mode": "numeric"}, "no idea", 0.0, 0.0),
        ({"mode": "regex", "pattern": r"answer: (\w+)"}, "answer: 71", 0.25, 1.0),
        ({"mode": "regex", "pattern": r"answer: (\w+)"}, "71", 0.0, 0.0),
        ({"mode": "exact"}, "71", 0.25, 1.0),
        ({"mode": "exact"}, "   ", 0.0, 0.0),
    ],
)
def test_format_weight_pays_a_readable_wrong_answer(options, completion, score, answered):
    evaluation = MatchEvaluator(format_weight=0.25, **options)(completion, {"ground_truth": "72"})
    assert evaluation.score == score
    assert evaluation.metrics == {"matched": float(score == 1.0), "answered": answered}


def test_match_reasons_say_what_was_compared():
    evaluate = MatchEvaluator(mode="numeric")
    assert evaluate("it is 71", {"ground_truth": "72"}).reason == "wrong: got 71, expected 72"
    assert evaluate("it is 72", {"ground_truth": "72"}).reason == "correct: 72"
    assert evaluate("none", {"ground_truth": "72"}).reason == "no number in the answer"
    regex = MatchEvaluator(mode="regex", pattern=r"answer: (\w+)")
    assert regex("nothing", {"ground_truth": "b"}).reason == "no match for pattern 'answer: (\\\\w+)'"
    assert MatchEvaluator()("Rome", {"ground_truth": "Paris"}).reason == "got 'Rome', expected 'Paris'"


def test_match_rows_without_a_usable_ground_truth_raise():
    with pytest.raises(ValueError, match=r"row r1: no ground_truth"):
        MatchEvaluator()("x", {"row_id": "r1"})
    with pytest.raises(ValueError, match=r"row r2: ground_truth 'Paris' is not a number \(mode numeric\)"):
        MatchEvaluator(mode="numeric")("x", {"row_id": "r2", "ground_truth": "Paris"})


@pytest.mark.parametrize(
    "section, message",
    [
        ({"mode": "fuzzy"}, r"reward.mode: must be one of exact, contains, numeric, regex, got 'fuzzy'"),
        ({"mode": "regex"}, r"reward.pattern: mode 'regex' needs a pattern"),
        ({"pattern": "(a"}, r"reward.pattern: '\(a' is not a valid regular expression"),
        ({"pattern": "(a)(b)"}, r"reward.pattern: '\(a\)\(b\)' must have exactly one capture group .* it has 2"),
        ({"strip": "yes"}, r"reward.strip: must be true or false"),
        ({"format_weight": 1.0}, r"reward.format_weight: must be a number in \[0, 1\)"),
        ({"tolerance": 0.1}, r"reward.tolerance: unknown option for evaluator 'match'"),
    ],
)
def test_match_bad_options(section, message):
    with pytest.raises(ValueError, match=message):
        get_evaluator({"name": "match", **section})


def test_match_scores_the_converted_example_rows():
    evaluate = get_evaluator({"name": "match", "mode": "numeric"})
    for row in converted(example()).eval:
        solution = next(r["solution"] for r in example_records("test") if r["final_answer"] == row["ground_truth"])
        assert evaluate(solution, row).score == 1.0  # the reference solution ends in its number
        assert evaluate("I don't know", row).score == 0.0


# --- the shipped example trains ---------------------------------------------------------


@pytest.mark.slow
def test_grpo_trains_on_custom_jsonl_with_the_match_reward(tmp_path):
    from knobsweep.models.tiny import build_tiny_model, texts_from_parquet

    data = tmp_path / "data"
    convert_to_dir(example(train_size=6, eval_size=2, extra_keys=["id"]), data)
    model = build_tiny_model(texts_from_parquet(data / "train.parquet"), tmp_path / "tiny")
    config = {
        "model": {
            "name": "tiny",
            "lora": {
                "rank": 8,
                "alpha": 16,
                "dropout": 0.05,
                "target_modules": "all-linear",
                "exclude_modules": ["lm_head", "embed_tokens"],
            },
        },
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
        "reward": {
            "name": "match",
            "mode": "numeric",
            "pattern": None,
            "case_sensitive": False,
            "strip": True,
            "format_weight": 0.5,
        },
        "seed": 0,
    }
    command = [
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
        "-m",
        "knobsweep.train",
        "--config-json",
        json.dumps(config),
        "--model",
        str(model),
        "--data",
        str(data),
        "--out",
        str(tmp_path / "train"),
    ]
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=300, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    status = json.loads((tmp_path / "train" / "status.json").read_text())
    assert (status["state"], status["step"]) == ("COMPLETED", 3)
    rollouts = read_jsonl(tmp_path / "train" / "rollouts.jsonl")
    assert {r["step"] for r in rollouts} == {1, 2, 3}
    # The evaluator saw the custom rows: every rollout was judged, against a GSM8K number.
    assert all(r["valid"] and set(r["metrics"]) == {"matched", "answered"} for r in rollouts)
    assert all(r["reason"].startswith(("correct:", "wrong:", "no number")) for r in rollouts)
    assert {r["row_id"].rsplit("-", 1)[0] for r in rollouts} == {"train"}
    assert (tmp_path / "train" / "adapter" / "adapter_config.json").is_file()

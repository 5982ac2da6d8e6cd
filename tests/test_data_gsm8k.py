"""The GSM8K converter and `python -m knobsweep.data`, on the demo slice and the real files."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import FIXTURES

from knobsweep.data import convert_to_dir, gsm8k, input_fingerprint
from knobsweep.errors import DataError, FieldError, SpecError
from knobsweep.io import file_sha256
from knobsweep.rewards.gsm8k import extract_ground_truth
from knobsweep.spec.sources import Gsm8kOptions, read_options

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "data" / "gsm8k"
REAL_TEST = FIXTURES / "gsm8k" / "test.jsonl"  # the whole upstream test split (tests/fixtures/README.md)

GOOD_LINES = [
    json.dumps({"question": "What is 2 + 3?", "answer": "2 + 3 = <<2+3=5>>5\n#### 5"}),
    json.dumps({"question": "What is 600 + 400?", "answer": "600 + 400 = 1000\n#### 1,000"}),
    json.dumps({"question": "What is 2 - 5?", "answer": "2 - 5 = -3\n#### -3"}),
]


def demo_options(**overrides) -> dict:
    return {"source": "gsm8k", "path": str(DEMO), **overrides}


def converted(section: dict):
    """What the converter makes of a `data` section, read by the spec's models as the data stage reads it."""
    return gsm8k.convert(read_options(section))


def read_rows(path: Path) -> list[dict]:
    return pq.read_table(path).to_pylist()


def write_split_dir(directory: Path, train_lines: list[str], test_lines: list[str] = GOOD_LINES) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "train.jsonl").write_text("".join(line + "\n" for line in train_lines))
    (directory / "test.jsonl").write_text("".join(line + "\n" for line in test_lines))
    return directory


def test_demo_slices_are_the_ones_their_readme_describes():
    # test.jsonl: the head of the whole test split kept as a fixture; train.jsonl (the full split is
    # not kept): the checksum data/gsm8k/README.md records for the first 1000 upstream lines
    real = REAL_TEST.read_bytes().splitlines(keepends=True)
    assert (DEMO / "test.jsonl").read_bytes() == b"".join(real[:200])
    readme = (DEMO / "README.md").read_text()
    for name, lines in (("train.jsonl", 1000), ("test.jsonl", 200)):
        assert f"`{name}` {file_sha256(DEMO / name)}" in readme
        assert len((DEMO / name).read_text().splitlines()) == lines
    assert (DEMO / "LICENSE").read_bytes() == (FIXTURES / "gsm8k" / "LICENSE").read_bytes()


def test_demo_converts_to_rl_rows(tmp_path):
    manifest = convert_to_dir(demo_options(train_size=100, eval_size=20), tmp_path / "out")
    train = read_rows(tmp_path / "out" / "train.parquet")
    evals = read_rows(tmp_path / "out" / "eval.parquet")
    assert (len(train), len(evals)) == (100, 20)
    assert manifest["rows"] == {"train": 100, "eval": 20}
    assert pq.read_schema(tmp_path / "out" / "train.parquet").equals(gsm8k.schemas()["rl"])

    source = {
        split: [json.loads(line) for line in (DEMO / f"{split}.jsonl").read_text().splitlines()]
        for split in ("train", "test")
    }
    for split, rows in (("train", train), ("test", evals)):
        assert len({row["row_id"] for row in rows}) == len(rows)
        for row in rows:
            prefix, index = row["row_id"].split("-")
            assert prefix == split
            original = source[split][int(index)]
            assert row["answer"] == original["answer"]
            assert row["prompt"] == [{"role": "user", "content": original["question"] + "\n" + gsm8k.INSTRUCTION}]
            assert row["ground_truth"] == extract_ground_truth(original["answer"])
            assert "," not in row["ground_truth"]
    assert gsm8k.INSTRUCTION == 'Let\'s think step by step and output the final answer after "####".'


def test_null_sizes_take_every_row(tmp_path):
    manifest = convert_to_dir(demo_options(), tmp_path / "out")
    assert manifest["rows"] == {"train": 1000, "eval": 200}
    train = read_rows(tmp_path / "out" / "train.parquet")
    assert {row["row_id"] for row in train} == {f"train-{i}" for i in range(1000)}


def test_manifest(tmp_path):
    options = {"source": "gsm8k", "path": "data/gsm8k", "train_size": 10, "eval_size": 5, "seed": 3}
    manifest = convert_to_dir({**options, "path": str(DEMO)}, tmp_path / "out")
    assert json.loads((tmp_path / "out" / "manifest.json").read_text()) == manifest
    assert manifest == {
        "source": "gsm8k",
        "options": {
            **options,
            "path": str(DEMO),
            "format": "rl",
            "hub_config": "main",
            "train_split": "train",
            "eval_split": "test",
        },
        "converter_version": gsm8k.CONVERTER_VERSION,
        "inputs": {
            (DEMO / "train.jsonl").as_posix(): file_sha256(DEMO / "train.jsonl"),
            (DEMO / "test.jsonl").as_posix(): file_sha256(DEMO / "test.jsonl"),
        },
        "rows": {"train": 10, "eval": 5},
        "dropped": [],
        "prompt_overlap": {"eval_rows": 0, "of": 5, "pairs": []},
    }
    assert input_fingerprint(options | {"path": str(DEMO)}) == manifest["inputs"]


def test_relative_path_keys_inputs_without_the_checkout_location(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    assert set(input_fingerprint({"source": "gsm8k", "path": "data/gsm8k"})) == {
        "data/gsm8k/train.jsonl",
        "data/gsm8k/test.jsonl",
    }


def test_hub_id_fingerprint_names_the_dataset(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert input_fingerprint({"source": "gsm8k"}) == {"openai/gsm8k": "hub:openai/gsm8k@main"}
    assert input_fingerprint({"source": "gsm8k", "path": "gsm8k", "hub_config": "socratic"}) == {
        "gsm8k": "hub:gsm8k@socratic"
    }


def test_shuffle_is_deterministic_and_seeded():
    def ids(**options):
        result = converted(demo_options(**options))
        return [row["row_id"] for row in result.train], [row["row_id"] for row in result.eval]

    seed0 = ids(seed=0)
    assert ids(seed=0) == seed0
    seed1 = ids(seed=1)
    assert seed1[0] != seed0[0] and seed1[1] != seed0[1]
    assert sorted(seed1[0]) == sorted(seed0[0])
    assert seed0[0] != sorted(seed0[0], key=lambda r: int(r.split("-")[1]))  # really shuffled
    # A smaller size is a prefix of a larger one with the same seed.
    assert ids(seed=1, train_size=50, eval_size=7) == (seed1[0][:50], seed1[1][:7])


def test_bad_lines_are_dropped_and_listed(tmp_path, capsys):
    lines = [
        GOOD_LINES[0],
        '{"question": "broken", "answer": ',  # line 2: not JSON
        json.dumps({"answer": "#### 4"}),  # line 3: no question
        GOOD_LINES[1],
        json.dumps({"question": "Why?", "answer": "Because 4."}),  # line 5: no #### N
        "",  # line 6: blank, skipped silently
        json.dumps(["question", "answer"]),  # line 7: not an object
        json.dumps({"question": "  ", "answer": "#### 4"}),  # line 8: empty question
        GOOD_LINES[2],
        json.dumps({"question": "Q", "answer": "####"}),  # line 10: #### without a number
    ]
    directory = write_split_dir(tmp_path / "gsm", lines)
    manifest = convert_to_dir({"source": "gsm8k", "path": str(directory)}, tmp_path / "out")
    assert manifest["rows"] == {"train": 3, "eval": 3}
    dropped = {(d["split"], d["line"]): d["reason"] for d in manifest["dropped"]}
    assert set(dropped) == {("train", n) for n in (2, 5, 3, 7, 8, 10)}
    assert dropped[("train", 2)].startswith("not a JSON line")
    assert dropped[("train", 3)] == "missing or empty 'question'"
    assert dropped[("train", 5)] == "reference answer has no '#### N' final number"
    assert dropped[("train", 7)] == "not a JSON object: list"
    assert dropped[("train", 8)] == "missing or empty 'question'"
    assert dropped[("train", 10)] == "reference answer has no '#### N' final number"

    rows = {row["row_id"]: row for row in read_rows(tmp_path / "out" / "train.parquet")}
    # row_id keeps the 0-based line index, so a row traces back to its line.
    assert {rid: row["ground_truth"] for rid, row in rows.items()} == {
        "train-0": "5",
        "train-3": "1000",
        "train-8": "-3",
    }


def test_every_line_bad_fails_and_leaves_nothing(tmp_path):
    lines = ["not json", json.dumps({"question": "Q", "answer": "no number"})]
    directory = write_split_dir(tmp_path / "gsm", lines)
    out = tmp_path / "results" / "data" / "k"
    with pytest.raises(DataError) as error:
        convert_to_dir({"source": "gsm8k", "path": str(directory)}, out)
    message = str(error.value)
    assert str(directory / "train.jsonl") in message
    assert "all 2 were dropped" in message and "line 1: not a JSON line" in message
    assert not out.exists()
    assert not out.parent.exists() or list(out.parent.iterdir()) == []


def test_empty_split_fails_naming_the_file(tmp_path):
    directory = write_split_dir(tmp_path / "gsm", GOOD_LINES, test_lines=[])
    with pytest.raises(DataError, match=r"gsm/test.jsonl: no GSM8K rows \(the split is empty\)"):
        converted({"source": "gsm8k", "path": str(directory)})


def test_failure_keeps_a_previous_output(tmp_path):
    out = tmp_path / "out"
    convert_to_dir(demo_options(train_size=5, eval_size=5), out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(FieldError, match="data.train_size: .*asked for 5000 rows"):
        convert_to_dir(demo_options(train_size=5000), out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_missing_local_directory_is_not_looked_up_on_the_hub(tmp_path, monkeypatch):
    def no_hub(options):
        raise AssertionError(f"tried the hub for {options['path']!r}")

    monkeypatch.setattr(gsm8k, "_load_hub", no_hub)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    for path in [str(tmp_path / "nope"), "data/gsm8k", "./gsm8k", "~/no/such/dir", "a/b/c"]:
        with pytest.raises(FieldError, match=rf"data.path: {re.escape(repr(path))}: no such directory"):
            converted({"source": "gsm8k", "path": path})
        with pytest.raises(FieldError, match="no such directory"):
            input_fingerprint({"source": "gsm8k", "path": path})
    (tmp_path / "file").write_text("")
    with pytest.raises(FieldError, match="data.path: 'file' is a file"):
        converted({"source": "gsm8k", "path": "file"})


def test_missing_split_file_lists_what_is_there(tmp_path):
    directory = write_split_dir(tmp_path / "gsm", GOOD_LINES)
    with pytest.raises(DataError, match=r"validation.jsonl: no such file .* has: test.jsonl, train.jsonl"):
        converted({"source": "gsm8k", "path": str(directory), "eval_split": "validation"})


@pytest.mark.parametrize(
    "options, message",
    [
        (
            {"train_sise": 3},
            r"data.train_sise: unknown key 'train_sise' \(did you mean 'train_size'\?\); valid keys: "
            r"eval_size, eval_split, format",
        ),
        ({"train_size": 0}, r"data.train_size: 0 is out of range; allowed: 1 <= value"),
        ({"eval_size": 2.5}, r"data.eval_size: 2.5: Input should be a valid integer"),
        ({"seed": "zero"}, r"data.seed: 'zero': Input should be a valid integer"),
        ({"path": ""}, r"data.path: '': String should have at least 1 character"),
        ({"hub_config": 3}, r"data.hub_config: 3: Input should be a valid string"),
        ({"format": "dpo"}, r"data.format: 'dpo' is not allowed; allowed: 'rl', 'sft' or 'kto'"),
    ],
)
def test_bad_options(options, message):
    with pytest.raises(SpecError, match="--config-json: " + message):
        converted(demo_options(**options))


def test_more_rows_than_there_are():
    with pytest.raises(FieldError, match=r"data.eval_size: .*test.jsonl: asked for 201 rows but only 200 are usable"):
        converted(demo_options(eval_size=201))


def test_unknown_source():
    with pytest.raises(SpecError, match="data.source: 'squad' is not a known data source; allowed: gsm8k, hf, jsonl"):
        convert_to_dir({"source": "squad"}, "unused")
    with pytest.raises(SpecError, match=r"data: 3: Input should be a valid dictionary"):
        input_fingerprint(3)


def test_the_whole_real_test_split_converts_without_dropping_a_row(tmp_path):
    # the conversion's speed is bench/data.py's figure, not a test's
    source = write_split_dir(
        tmp_path / "gsm8k", (DEMO / "train.jsonl").read_text().splitlines(), REAL_TEST.read_text().splitlines()
    )
    manifest = convert_to_dir({"source": "gsm8k", "path": str(source)}, tmp_path / "out")
    assert manifest["rows"] == {"train": 1000, "eval": 1319}
    assert manifest["dropped"] == []


# --- sft and kto rows -------------------------------------------------------------------


def test_sft_rows_are_the_rl_prompt_and_the_reference_solution(tmp_path):
    manifest = convert_to_dir(demo_options(format="sft", train_size=40, eval_size=10), tmp_path / "sft")
    rl = {row["row_id"]: row for row in converted(demo_options(train_size=40, eval_size=10)).train}
    train = read_rows(tmp_path / "sft" / "train.parquet")
    assert pq.read_schema(tmp_path / "sft" / "train.parquet").equals(gsm8k.schemas()["sft"])
    assert [row["row_id"] for row in train] == list(rl)  # the same rows in the same order
    for row in train:
        assert row["prompt"] == rl[row["row_id"]]["prompt"]
        assert row["completion"] == [{"role": "assistant", "content": rl[row["row_id"]]["answer"]}]
        assert "#### " + rl[row["row_id"]]["ground_truth"] in row["completion"][0]["content"].replace(",", "")
    # eval rows stay rl rows: the eval stage generates from `prompt` and scores `ground_truth`.
    assert pq.read_schema(tmp_path / "sft" / "eval.parquet").equals(gsm8k.schemas()["rl"])
    assert manifest["options"]["format"] == "sft" and "stats" not in manifest


def test_kto_labels_come_from_a_seeded_coin_and_wrong_answers_are_wrong(tmp_path):
    manifest = convert_to_dir(demo_options(format="kto", train_size=200, eval_size=10), tmp_path / "kto")
    train = read_rows(tmp_path / "kto" / "train.parquet")
    assert pq.read_schema(tmp_path / "kto" / "train.parquet").equals(gsm8k.schemas()["kto"])
    assert pq.read_schema(tmp_path / "kto" / "eval.parquet").equals(gsm8k.schemas()["rl"])
    rl = {row["row_id"]: row for row in converted(demo_options(train_size=200)).train}
    true = [row for row in train if row["label"]]
    false = [row for row in train if not row["label"]]
    assert manifest["stats"] == {"label_true": len(true), "label_false": len(false)}
    assert 70 <= len(true) <= 130  # a fair coin over 200 rows
    for row in true:
        assert row["completion"] == [{"role": "assistant", "content": rl[row["row_id"]]["answer"]}]
    for row in false:
        reference, changed = rl[row["row_id"]], row["completion"][0]["content"]
        # Only the final number differs, and it is another number.
        assert changed.rsplit("####", 1)[0] == reference["answer"].rsplit("####", 1)[0]
        assert extract_ground_truth(changed) != reference["ground_truth"]
        assert abs(float(extract_ground_truth(changed)) - float(reference["ground_truth"])) <= 10
    # The coin is per row: a smaller size keeps each row's label; another seed changes them.
    again = {r["row_id"]: r["label"] for r in converted(demo_options(format="kto", train_size=20)).train}
    assert again == {r["row_id"]: r["label"] for r in train if r["row_id"] in again}
    reseeded = converted(demo_options(format="kto", seed=1)).train
    ids = {r["row_id"]: r["label"] for r in converted(demo_options(format="kto")).train}
    assert any(ids[r["row_id"]] != r["label"] for r in reseeded)


@pytest.mark.parametrize(
    "solution, seed",
    [
        ("2 + 3 = 5\n#### 5", 0),
        ("600 + 400\n#### 1,000", 1),
        ("2 - 5\n#### -3", 2),
        ("x\n#### 0", 3),
        ("#### 12 and #### 18.", 4),
    ],
)
def test_wrong_final_answer_changes_only_the_final_number(solution, seed):
    for row in range(20):
        wrong = gsm8k.wrong_final_answer(solution, seed, f"train-{row}")
        assert extract_ground_truth(wrong) != extract_ground_truth(solution)
        assert wrong.rsplit("####", 1)[0] == solution.rsplit("####", 1)[0]
        if not extract_ground_truth(solution).startswith("-"):
            assert not extract_ground_truth(wrong).startswith("-")
        if "," in solution:  # written in the reference's style: thousands separated
            number = wrong.rsplit("####", 1)[1].strip()
            assert number == f"{int(number.replace(',', '')):,}"


def test_format_is_part_of_the_converter_version_and_options():
    assert Gsm8kOptions.formats() == ("rl", "sft", "kto")
    assert gsm8k.CONVERTER_VERSION != "1"  # rows of version 1 had no format option
    assert read_options({"source": "gsm8k"}).format == "rl"  # the data stage's default


def run_cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "knobsweep.data", *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )


def test_cli_converts_the_demo(tmp_path):
    out = tmp_path / "results" / "data" / "abc"
    config = {"source": "gsm8k", "path": "data/gsm8k", "train_size": 30, "eval_size": 10}
    result = run_cli("--config-json", json.dumps(config), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "30 train + 10 eval rows" in result.stdout
    assert sorted(p.name for p in out.iterdir()) == ["eval.parquet", "manifest.json", "train.parquet"]
    assert json.loads((out / "manifest.json").read_text())["rows"] == {"train": 30, "eval": 10}
    assert len(read_rows(out / "train.parquet")) == 30


def test_cli_summary_counts_kto_labels(tmp_path):
    config = {"source": "gsm8k", "path": "data/gsm8k", "format": "kto", "train_size": 30, "eval_size": 5}
    result = run_cli("--config-json", json.dumps(config), "--out", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    stats = json.loads((tmp_path / "out" / "manifest.json").read_text())["stats"]
    assert (
        f"gsm8k (kto): 30 train + 5 eval rows, label_true {stats['label_true']}, label_false {stats['label_false']}"
    ) in result.stdout


def test_cli_prints_the_first_dropped_lines(tmp_path):
    lines = GOOD_LINES + [f'{{"broken {i}' for i in range(7)]
    directory = write_split_dir(tmp_path / "gsm", lines)
    config = {"source": "gsm8k", "path": str(directory)}
    result = run_cli("--config-json", json.dumps(config), "--out", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    assert "3 train + 3 eval rows, 7 dropped (7 train)" in result.stdout
    assert "dropped 7 unusable rows" in result.stderr
    assert "train line 4: not a JSON line" in result.stderr
    assert "... and 2 more (see manifest.json)" in result.stderr
    assert len(json.loads((tmp_path / "out" / "manifest.json").read_text())["dropped"]) == 7


@pytest.mark.parametrize(
    "config, message",
    [
        ('{"source": "gsm8k", "path": "data/missing"}', "data.path: 'data/missing': no such directory"),
        ('{"source": "squad"}', "'squad' is not a known data source"),
        ("{not json", "argument --config-json: not valid JSON"),
    ],
)
def test_cli_failures_exit_non_zero_and_write_nothing(tmp_path, config, message):
    out = tmp_path / "out"
    result = run_cli("--config-json", config, "--out", str(out))
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists()

"""Hostile and mistaken data inputs (issue 13): devices, FIFOs and sockets as data, JSON nested too
deep, a held-out split with nothing to hold out, unknown chat roles, and prompts shared by train and eval."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from knobsweep.data import convert_to_dir, custom, gsm8k, input_fingerprint, prompt_overlap, swe_bench
from knobsweep.errors import DataError, FieldError
from knobsweep.io import NotRegularFileError, file_sha256, json_lines, read_jsonl, read_regular
from knobsweep.spec.sources import read_options

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "data" / "custom_example"
KNOBSWEEP = Path(sys.executable).with_name("knobsweep")
DEEP = "[" * 100_000 + "]" * 100_000  # json.loads raises RecursionError past ~1000 levels
NESTED = "not a usable JSON line: nested too deep (more than about 1000 levels of arrays / objects)"


def write_jsonl(path: Path, records: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


def rows(count: int, start: int = 0) -> list[dict]:
    return [{"prompt": f"What is {i} + 1?", "ground_truth": str(i + 1)} for i in range(start, start + count)]


def run_converter(config: dict, out: Path) -> subprocess.CompletedProcess:
    """The data stage as the rule runs it; a hang fails the test at the timeout instead of blocking it."""
    return subprocess.run(
        [sys.executable, "-m", "knobsweep.data", "--config-json", json.dumps(config), "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def converted_ok(config: dict, out: Path) -> tuple[subprocess.CompletedProcess, dict]:
    """(the converter's run, the manifest it wrote) of a conversion that must succeed."""
    result = run_converter(config, out)
    assert result.returncode == 0, result.stderr
    return result, json.loads((out / "manifest.json").read_text())


def run_validate(spec: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(KNOBSWEEP), "validate", str(spec)], cwd=spec.parent, capture_output=True, text=True, timeout=120
    )


def spec_with_data(tmp_path: Path, data: str) -> Path:
    spec = tmp_path / "exp.yaml"
    spec.write_text(
        "baseline:\n"
        "  model: {name: tiny}\n"
        f"  data: {data}\n"
        "  reward: {name: match}\n"
        "sweep:\n"
        "  train.learning_rate: [2.0e-4]\n"
    )
    return spec


@pytest.fixture
def fifo(tmp_path) -> Path:
    path = tmp_path / "pipe.jsonl"
    os.mkfifo(path)
    return path


@pytest.fixture
def unix_socket():
    # A socket path must fit in ~108 bytes: pytest's tmp_path may not.
    folder = Path(tempfile.mkdtemp(prefix="ks-", dir="/tmp"))
    path = folder / "s.jsonl"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    yield path
    server.close()
    shutil.rmtree(folder)


# --- 1. only regular files and directories --------------------------------------------------


@pytest.mark.parametrize("kind", ["fifo", "socket", "device"])
def test_file_sha256_and_read_regular_refuse_what_is_not_a_regular_file(kind, fifo, unix_socket):
    path, what = {
        "fifo": (fifo, "a FIFO (named pipe)"),
        "socket": (unix_socket, "a socket"),
        "device": (Path("/dev/zero"), "a character device"),
    }[kind]
    message = f"{path} is {what}, not a regular file; data is read only from regular files and directories"
    for read in (file_sha256, read_regular):
        with pytest.raises(NotRegularFileError) as error:
            read(path)
        assert str(error.value) == message


def test_file_sha256_follows_a_link_to_a_regular_file_but_not_to_a_device(tmp_path):
    (tmp_path / "real.jsonl").write_text("{}\n")
    (tmp_path / "link.jsonl").symlink_to(tmp_path / "real.jsonl")
    assert file_sha256(tmp_path / "link.jsonl") == file_sha256(tmp_path / "real.jsonl")
    (tmp_path / "zero.jsonl").symlink_to("/dev/zero")
    with pytest.raises(NotRegularFileError, match=r"zero.jsonl is a character device, not a regular file"):
        file_sha256(tmp_path / "zero.jsonl")


def test_a_device_as_data_path_fails_validate_naming_the_field(tmp_path):
    spec = spec_with_data(tmp_path, "{source: jsonl, path: /dev/zero, eval_ratio: 0.1}")
    result = run_validate(spec)
    assert result.returncode == 1 and "Traceback" not in result.stdout + result.stderr
    assert (
        f"{spec}: data.path: '/dev/zero' is a character device (/dev/zero); expected a regular data file or a "
        "directory (run 'baseline')"
    ) in result.stdout
    assert not (tmp_path / "results").exists()


def test_a_fifo_as_data_path_fails_validate_and_the_converter(tmp_path, fifo):
    spec = spec_with_data(tmp_path, f"{{source: jsonl, path: {fifo}, eval_ratio: 0.1}}")
    result = run_validate(spec)
    assert result.returncode == 1 and "Traceback" not in result.stdout + result.stderr
    assert f"data.path: '{fifo}' is a FIFO (named pipe) ({fifo}); expected a regular data file" in result.stdout

    converted = run_converter({"source": "jsonl", "path": str(fifo), "eval_ratio": 0.1}, tmp_path / "out")
    assert converted.returncode == 1 and "Traceback" not in converted.stderr
    assert converted.stderr == (
        f"knobsweep.data: error: data.path: '{fifo}' is a FIFO (named pipe) ({fifo}); "
        "expected a regular data file or a directory\n"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp.yaml", "pipe.jsonl"]  # no output, no temp dir


@pytest.mark.parametrize("key", ["train_files", "eval_files"])
def test_a_socket_in_train_or_eval_files_is_refused(tmp_path, unix_socket, key):
    good = write_jsonl(tmp_path / "good.jsonl", rows(4))
    section = {"source": "jsonl", "train_files": [str(good)], "eval_files": [str(good)]}
    section[key] = [str(unix_socket)]
    with pytest.raises(FieldError) as error:
        input_fingerprint(section)
    assert str(error.value) == (f"data.{key}: '{unix_socket}' is a socket ({unix_socket}); expected a data file")


def test_a_fifo_named_as_a_split_in_a_data_directory_is_refused(tmp_path):
    write_jsonl(tmp_path / "data" / "test.jsonl", rows(2))
    os.mkfifo(tmp_path / "data" / "train.jsonl")
    with pytest.raises(FieldError) as error:
        input_fingerprint({"source": "jsonl", "path": str(tmp_path / "data")})
    fifo = (tmp_path / "data" / "train.jsonl").as_posix()
    assert str(error.value) == (
        f"data.path: '{fifo}' is a FIFO (named pipe) ({fifo}); expected a regular data file or a directory"
    )


def test_hf_train_files_that_are_a_device_are_refused_before_datasets_reads_them(tmp_path):
    section = {"source": "hf", "path": "json", "train_files": ["/dev/zero"], "eval_ratio": 0.1}
    with pytest.raises(FieldError) as error:
        input_fingerprint(section)
    assert str(error.value) == (
        "data.train_files: '/dev/zero' is a character device (/dev/zero); expected a regular data file or a directory"
    )


def test_a_saved_hf_directory_is_keyed_by_its_regular_files_only(tmp_path, fifo):
    (tmp_path / "state.json").write_text("{}")
    (tmp_path / "zero").symlink_to("/dev/zero")
    keys = input_fingerprint({"source": "hf", "path": str(tmp_path), "eval_ratio": 0.1})
    assert keys == {(tmp_path / "state.json").as_posix(): file_sha256(tmp_path / "state.json")}


def test_gsm8k_and_swe_sources_refuse_special_files(tmp_path):
    folder = tmp_path / "gsm"
    folder.mkdir()
    write_jsonl(folder / "test.jsonl", [{"question": "q", "answer": "#### 1"}])
    os.mkfifo(folder / "train.jsonl")
    with pytest.raises(DataError) as error:
        input_fingerprint({"source": "gsm8k", "path": str(folder)})
    assert (
        str(error.value)
        == f"{folder}/train.jsonl is a FIFO (named pipe) (split 'train'); expected a regular .jsonl file"
    )
    with pytest.raises(FieldError) as error:
        input_fingerprint({"source": "gsm8k", "path": "/dev/zero"})
    assert str(error.value).startswith("data.path: '/dev/zero' is a character device; expected a directory holding")
    for source in ("swe_bench", "swe_synth"):
        with pytest.raises(FieldError) as error:
            input_fingerprint({"source": source, "paths": ["/dev/null"]})
        assert str(error.value) == (
            "data.paths: '/dev/null' is a character device (/dev/null); expected a regular data file or a directory"
        )


# --- 2. JSON nested too deep: that row is dropped, the conversion goes on ---------------------


def test_json_lines_reports_a_line_nested_too_deep_and_reads_on():
    lines = list(json_lines([DEEP + "\n", '{"a": 1}\n']))
    assert [(line.index, line.value, line.error) for line in lines] == [(0, None, NESTED), (1, {"a": 1}, None)]


def test_read_jsonl_names_the_line_nested_too_deep(tmp_path):
    path = write_jsonl(tmp_path / "x.jsonl", [{"a": 1}, DEEP])
    with pytest.raises(ValueError) as error:
        read_jsonl(path)
    assert str(error.value) == f"{path}:2: {NESTED}"


def test_custom_conversion_drops_a_row_nested_too_deep(tmp_path):
    file = write_jsonl(tmp_path / "rows.jsonl", [*rows(3), DEEP, *rows(3, start=3)])
    result, manifest = converted_ok({"source": "jsonl", "path": str(file), "eval_ratio": 0.3}, tmp_path / "out")
    assert "jsonl (rl): 4 train + 2 eval rows, 1 dropped (1 train)" in result.stdout
    assert f"train {file} line 4: {NESTED}" in result.stderr
    assert manifest["dropped"] == [{"split": "train", "file": str(file), "line": 4, "reason": NESTED}]


def test_gsm8k_and_swe_conversions_drop_a_record_nested_too_deep(tmp_path):
    folder = tmp_path / "gsm"
    good = [{"question": f"{i} + 1?", "answer": f"so #### {i + 1}"} for i in range(3)]
    write_jsonl(folder / "train.jsonl", [*good, DEEP])
    write_jsonl(folder / "test.jsonl", good)
    result = gsm8k.convert(read_options({"source": "gsm8k", "path": str(folder)}))
    assert result.dropped == [{"split": "train", "line": 4, "reason": NESTED}]

    # The SWE sources share one reader (data/_files.py).
    tasks = ROOT / "tests" / "fixtures" / "swebench" / "swebench_instances_combined.jsonl"
    (tmp_path / "deep.json").write_text(DEEP)
    result = swe_bench.convert(
        read_options({"source": "swe_bench", "paths": [str(tasks), str(tmp_path / "deep.json")]})
    )
    assert {
        "split": "input",
        "file": (tmp_path / "deep.json").as_posix(),
        "line": 1,
        "reason": "not a usable JSON file: nested too deep (more than about 1000 levels of arrays / objects)",
    } in result.dropped
    assert result.train and result.eval


# --- 3. a held-out split with fewer than 2 readable rows names the file and the cause ----------


def hold_out_error(path: Path) -> str:
    with pytest.raises(FieldError) as error:
        custom.convert(read_options({"source": "jsonl", "path": str(path), "eval_ratio": 0.2}))
    return str(error.value)


def test_hold_out_from_an_empty_file_says_it_is_empty(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text("\n")
    assert hold_out_error(path) == (
        f"data.eval_ratio: holding out eval rows needs at least 2 readable train rows, got 0 from {path}: "
        "the input is empty"
    )


def test_hold_out_from_an_all_broken_file_gives_the_first_reasons(tmp_path):
    path = write_jsonl(tmp_path / "broken.jsonl", ["{oops", "[1, 2]", "{oops"])
    assert hold_out_error(path) == (
        f"data.eval_ratio: holding out eval rows needs at least 2 readable train rows, got 0 from {path}: "
        f"all 3 rows were dropped as unreadable ({path} line 1: not a JSON line: Expecting property name "
        f"enclosed in double quotes: line 1 column 2 (char 1); {path} line 2: not a JSON object: list; "
        f"{path} line 3: not a JSON line: Expecting property name enclosed in double quotes: line 1 column 2 (char 1))"
    )


def test_hold_out_from_one_readable_row_says_so(tmp_path):
    path = write_jsonl(tmp_path / "one.jsonl", rows(1))
    assert hold_out_error(path) == (
        f"data.eval_ratio: holding out eval rows needs at least 2 readable train rows, got 1 from {path}: "
        "the input holds only that row"
    )


@pytest.mark.parametrize(
    ("encoding", "name", "sign"),
    [
        ("utf-16", "UTF-16", "a UTF-16 byte-order mark"),
        ("utf-16-le", "UTF-16LE", "a NUL byte beside every character"),
        ("utf-16-be", "UTF-16BE", "a NUL byte beside every character"),
        ("utf-32", "UTF-32", "a UTF-32 byte-order mark"),
    ],
)
def test_a_utf16_or_utf32_file_is_named_with_the_iconv_fix_that_works(tmp_path, encoding, name, sign):
    path = tmp_path / "rows.jsonl"
    path.write_bytes("".join(json.dumps(r) + "\n" for r in rows(5)).encode(encoding))
    config = {"source": "jsonl", "path": str(path), "eval_ratio": 0.2}
    result = run_converter(config, tmp_path / "out")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    command = f"iconv -f {name} -t UTF-8 {path} > {tmp_path}/rows.utf8.jsonl"
    assert result.stderr == (
        f"knobsweep.data: error: {path}: not UTF-8: looks like {name} ({sign}); convert it with `{command}`\n"
    )
    assert not (tmp_path / "out").exists()
    if shutil.which("iconv"):  # the advice, followed, gives a file that converts
        subprocess.run(command, shell=True, check=True)
        _, manifest = converted_ok({**config, "path": f"{tmp_path}/rows.utf8.jsonl"}, tmp_path / "out")
        assert manifest["rows"] == {"train": 4, "eval": 1} and manifest["dropped"] == []


def test_gsm8k_reports_a_utf16_split_file(tmp_path):
    write_jsonl(tmp_path / "test.jsonl", [{"question": "q", "answer": "#### 1"}])
    (tmp_path / "train.jsonl").write_bytes('{"question": "q", "answer": "#### 1"}\n'.encode("utf-16"))
    with pytest.raises(DataError, match=r"train.jsonl: not UTF-8: looks like UTF-16 \(a UTF-16 byte-order mark\)"):
        gsm8k.convert(read_options({"source": "gsm8k", "path": str(tmp_path)}))


# --- 4. chat rows: only the roles a chat template knows ----------------------------------------


def test_messages_with_unknown_roles_are_dropped_naming_the_role(tmp_path):
    chat = [
        {"prompt": [{"role": "user", "content": "2+2?"}], "ground_truth": "4"},
        {"prompt": [{"role": "human", "content": "2+3?"}], "ground_truth": "5"},
        {"prompt": [{"role": "system", "content": "S"}, {"role": "asistant", "content": "x"}], "ground_truth": "6"},
        {
            "prompt": [{"role": "user", "content": "Call it."}, {"role": "tool", "content": "7"}],
            "ground_truth": "7",
        },
    ]
    section = {
        "source": "jsonl",
        "path": str(write_jsonl(tmp_path / "chat.jsonl", chat)),
        "eval_files": [str(write_jsonl(tmp_path / "eval.jsonl", rows(2)))],
    }
    result = custom.convert(read_options(section))
    assert [(d["line"], d["reason"]) for d in result.dropped] == [
        (2, "'prompt' (data.prompt_key) message 1 has role 'human'; allowed: system, user, assistant, tool"),
        (3, "'prompt' (data.prompt_key) message 2 has role 'asistant'; allowed: system, user, assistant, tool"),
    ]
    kept = {row["ground_truth"]: row["prompt"] for row in result.train}
    assert kept["7"][-1] == {"role": "tool", "content": "7"}  # TRL's chat-template path takes tool turns
    assert sorted(kept) == ["4", "7"]


def test_sft_conversations_with_unknown_roles_are_dropped(tmp_path):
    chat = [
        {"messages": [{"role": "user", "content": f"hi {i}"}, {"role": "assistant", "content": "hello"}]}
        for i in range(3)
    ] + [{"messages": [{"role": "user", "content": "hi"}, {"role": "gpt", "content": "hello"}]}]
    section = {
        "source": "jsonl",
        "path": str(write_jsonl(tmp_path / "c.jsonl", chat)),
        "eval_ratio": 0.3,
        "format": "sft",
    }
    result = custom.convert(read_options(section))
    assert [d["reason"] for d in result.dropped] == [
        "'messages' (data.messages_key) message 2 has role 'gpt'; allowed: system, user, assistant, tool"
    ]


# --- 5. prompts shared by train and eval -----------------------------------------------------


def test_prompt_overlap_pairs_eval_rows_with_the_train_row_of_the_same_prompt():
    train = [
        {"row_id": "t-0", "prompt": [{"role": "user", "content": "A"}]},
        {"row_id": "t-1", "messages": [{"role": "user", "content": "B "}, {"role": "assistant", "content": "b"}]},
    ]
    evaluation = [
        {"row_id": "e-0", "prompt": [{"role": "user", "content": "A\n"}]},
        {"row_id": "e-1", "prompt": [{"role": "user", "content": "B"}]},
        {"row_id": "e-2", "prompt": [{"role": "user", "content": "C"}]},
        {"row_id": "e-3", "prompt": [{"role": "system", "content": "A"}]},
    ]
    assert prompt_overlap(train, evaluation) == {
        "eval_rows": 2,
        "of": 4,
        "pairs": [{"eval": "e-0", "train": "t-0"}, {"eval": "e-1", "train": "t-1"}],
    }


def test_custom_eval_files_sharing_train_prompts_are_reported_and_warned(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", rows(6))
    evaluation = write_jsonl(tmp_path / "eval.jsonl", rows(3, start=4))  # prompts 4 and 5 are also train's
    config = {"source": "jsonl", "path": str(train), "eval_files": [str(evaluation)]}
    result, manifest = converted_ok(config, tmp_path / "out")
    assert manifest["prompt_overlap"] == {
        "eval_rows": 2,
        "of": 3,
        "pairs": [{"eval": "eval-0", "train": "train-4"}, {"eval": "eval-1", "train": "train-5"}],
    }
    assert result.stderr == (
        "knobsweep.data: warning: 2 of 3 eval rows share their prompt with a train row (eval eval-0 = train "
        "train-4; eval eval-1 = train train-5): their eval scores measure prompts the model trained on; "
        "remove the repeats from the inputs (manifest.json prompt_overlap lists them)\n"
    )


def test_a_held_out_split_of_a_file_with_repeated_rows_reports_the_overlap(tmp_path):
    file = write_jsonl(tmp_path / "rows.jsonl", rows(10) + rows(10))  # every row twice
    manifest = convert_to_dir({"source": "jsonl", "path": str(file), "eval_ratio": 0.5}, tmp_path / "out")
    assert manifest["prompt_overlap"]["eval_rows"] > 0
    assert manifest["prompt_overlap"]["of"] == manifest["rows"]["eval"] == 10


def test_disjoint_splits_report_no_overlap_and_print_no_warning(tmp_path):
    config = {"source": "jsonl", "path": str(EXAMPLE), "prompt_key": "problem", "ground_truth_key": "final_answer"}
    result, manifest = converted_ok(config, tmp_path / "out")
    assert result.stderr == ""
    assert manifest["prompt_overlap"] == {"eval_rows": 0, "of": 16, "pairs": []}
    assert len(pq.read_table(tmp_path / "out" / "eval.parquet")) == 16


def test_openspiel_positions_kept_in_both_splits_are_reported(tmp_path):
    pytest.importorskip("pyspiel")
    section = {"source": "openspiel", "cases": ["tic_tac_toe"], "train_size": 4, "eval_size": 2}
    # max_random_steps 0: every task is the empty board, so with eval_overlap keep both eval rows repeat train-0-0
    result, manifest = converted_ok({**section, "max_random_steps": 0, "eval_overlap": "keep"}, tmp_path / "out")
    assert manifest["prompt_overlap"] == {
        "eval_rows": 2,
        "of": 2,
        "pairs": [{"eval": "eval-0-0", "train": "train-0-0"}, {"eval": "eval-0-1", "train": "train-0-0"}],
    }
    assert "knobsweep.data: warning: 2 of 2 eval rows share their prompt with a train row" in result.stderr


def test_a_config_json_nested_too_deep_is_a_usage_error(tmp_path):
    result = subprocess.run(
        # 20,000 deep: one argument must stay under the kernel's 128 KiB limit
        [
            sys.executable,
            "-m",
            "knobsweep.data",
            "--config-json",
            "[" * 20_000 + "]" * 20_000,
            "--out",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.endswith(
        "python -m knobsweep.data: error: argument --config-json: not usable JSON: nested too deep "
        "(more than about 1000 levels of arrays / objects)\n"
    )
    assert not (tmp_path / "out").exists()

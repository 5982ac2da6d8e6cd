"""SFT and KTO training, the GRPO knobs (vLLM mode, iterations, generation), warm starts.

Unit tests: each method's TRL config fields, row validation, the warm-start path checks, the
KTO health check and console table. Slow tests: the real stage (`python -m knobsweep.train`,
what `accelerate launch` runs) on the tiny model with rows built from real GSM8K: SFT on
multi-turn `messages` and on prompt/completion rows, KTO, a NaN stop, and the warm-start chain
SFT -> GRPO.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
from datasets import Dataset
from rich.console import Console
from test_train_grpo import GSM8K_TRAIN, train_config
from test_train_lifecycle import finish, start, status_of

from knobsweep.errors import SpecError
from knobsweep.io import read_jsonl
from knobsweep.spec.schema import HealthConfig, RolloutConfig, TrainJob
from knobsweep.spec.validate import parse
from knobsweep.train.batching import batch_plan
from knobsweep.train.callbacks import KTO_COLUMNS, MetricsLogger
from knobsweep.train.grpo import vllm_fields, vllm_problem
from knobsweep.train.health import HealthMonitor
from knobsweep.train.kto import KTOMethod, interleave_labels
from knobsweep.train.method import build_trl_config, get_method
from knobsweep.train.sft import SFTMethod
from knobsweep.train.status import RunStatus
from knobsweep.train.warmstart import inspect_warm_start

ROWS = 40  # batch 2 -> 20 optimizer steps per epoch


def method_config(method: str, **train) -> dict:
    """A TRAIN section; SFT / KTO get {model, train, seed} only (no rollout / reward: the
    spec hashes and passes just those for them, docs/contracts.md)."""
    config = train_config(method=method, **train)
    if method != "grpo":
        config["train"].pop("kl_beta")
        del config["rollout"], config["reward"]
    return config


def method_job(method: str, **train) -> TrainJob:
    """method_config as the training stage reads it (the spec's models)."""
    return TrainJob.model_validate(method_config(method, **train))


def trl_args(method: str, config: dict, tmp_path: Path, num_processes: int = 1):
    impl, job = get_method(method), TrainJob.model_validate(config)
    plan = batch_plan(job.train, job.rollout, num_processes)
    return build_trl_config(impl.config_class, impl.trl_kwargs(job, tmp_path, plan, use_cuda=False))


# --- each method's TRL config ------------------------------------------------------------


def test_sft_knobs_reach_sft_config(tmp_path):
    config = method_config(
        "sft",
        batch_size=4,
        per_device_batch_size=2,
        epochs=3,
        learning_rate=2e-4,
        sft={"completion_only_loss": False, "assistant_only_loss": True, "max_length": 256, "packing": True},
    )
    args = trl_args("sft", config, tmp_path)
    assert type(args).__name__ == "SFTConfig"
    assert (args.completion_only_loss, args.assistant_only_loss, args.max_length, args.packing) == (
        False,
        True,
        256,
        True,
    )
    assert (args.per_device_train_batch_size, args.gradient_accumulation_steps) == (2, 2)  # 4 rows, 2 at a time
    assert (args.learning_rate, args.num_train_epochs, args.logging_steps, args.seed) == (2e-4, 3, 1, 0)
    assert (args.use_cpu, args.bf16, args.gradient_checkpointing, args.report_to) == (True, False, False, [])
    defaults = trl_args("sft", method_config("sft"), tmp_path)  # no train.sft section: the schema's defaults
    assert (defaults.completion_only_loss, defaults.assistant_only_loss, defaults.max_length, defaults.packing) == (
        True,
        False,
        1024,
        False,
    )


def test_kto_knobs_reach_kto_config(tmp_path):
    config = method_config(
        "kto",
        batch_size=8,
        per_device_batch_size=4,
        max_context_length=512,
        kto={"beta": 0.3, "desirable_weight": 1.5, "undesirable_weight": 0.5},
    )
    args = trl_args("kto", config, tmp_path)
    assert type(args).__name__ == "KTOConfig"
    assert (args.beta, args.desirable_weight, args.undesirable_weight, args.max_length) == (0.3, 1.5, 0.5, 512)
    assert (args.per_device_train_batch_size, args.gradient_accumulation_steps) == (4, 2)
    assert args.train_sampling_strategy == "sequential"  # the KL estimate pairs neighbours: order matters
    defaults = trl_args("kto", method_config("kto"), tmp_path)
    assert (defaults.beta, defaults.desirable_weight, defaults.undesirable_weight) == (0.1, 1.0, 1.0)
    with pytest.raises(SpecError, match=r"train.kto.beta: 0 is out of range; allowed: 0.0 < value <= 10.0"):
        parse(TrainJob, method_config("kto", kto={"beta": 0}), "--config-json")
    with pytest.raises(SpecError, match=r"train.sft.pack: unknown key 'pack' \(did you mean 'packing'\?\)"):
        parse(TrainJob, method_config("sft", sft={"pack": True}), "--config-json")


def test_a_trl_pass_through_field_is_checked_against_the_methods_config(tmp_path):
    args = trl_args("kto", method_config("kto", trl={"loss_type": "apo_zero_unpaired"}), tmp_path)
    assert args.loss_type == "apo_zero_unpaired"
    with pytest.raises(ValueError, match=r"train.trl.num_generations: not a SFTConfig field"):
        trl_args("sft", method_config("sft", trl={"num_generations": 4}), tmp_path)


@pytest.mark.parametrize(
    "loss, fields",
    [
        ("grpo", dict(loss_type="dapo", epsilon=0.2, epsilon_high=0.2, beta=0.001, importance_sampling_level="token")),
        ("dapo", dict(loss_type="dapo", epsilon=0.2, epsilon_high=0.28, beta=0.0, importance_sampling_level="token")),
        (
            "gspo-token",
            dict(loss_type="grpo", epsilon=3e-4, epsilon_high=4e-4, beta=0.0, importance_sampling_level="sequence"),
        ),
    ],
)
def test_each_grpo_loss_reaches_grpo_config(tmp_path, loss, fields):
    args = trl_args("grpo", method_config("grpo", loss=loss), tmp_path)
    assert {name: getattr(args, name) for name in fields} == fields


def test_grpo_iterations_and_generation_batches(tmp_path):
    # 4 prompts x n=4 = 16 completions per step, 8 per micro-batch: 2 accumulation steps;
    # steps_per_generation 4 = one generation of 32 completions feeds 2 optimizer steps.
    config = method_config("grpo", batch_size=4, per_device_batch_size=8, steps_per_generation=4, num_iterations=2)
    args = trl_args("grpo", config, tmp_path)
    assert (args.per_device_train_batch_size, args.gradient_accumulation_steps) == (8, 2)
    assert (args.steps_per_generation, args.generation_batch_size, args.num_iterations) == (4, 32, 2)
    on_policy = trl_args("grpo", method_config("grpo", batch_size=4, per_device_batch_size=8), tmp_path)
    assert (on_policy.steps_per_generation, on_policy.num_iterations) == (2, 1)  # one generation per step
    # A generation_batch_size in train.trl replaces the plan's steps_per_generation (TRL takes one of the two).
    args = trl_args(
        "grpo",
        method_config("grpo", batch_size=4, per_device_batch_size=8, trl={"generation_batch_size": 48}),
        tmp_path,
    )
    assert (args.generation_batch_size, args.steps_per_generation) == (48, 6)


def test_rollout_vllm_modes_map_to_grpo_config(tmp_path):
    assert vllm_fields(RolloutConfig(vllm="off"), 4096) == {"use_vllm": False}
    assert vllm_fields(RolloutConfig(vllm="colocate"), 4096) == {
        "use_vllm": True,
        "vllm_mode": "colocate",
        "vllm_max_model_length": 4096,
    }
    assert vllm_fields(RolloutConfig(vllm="server", vllm_server="gpu-node-3:8000"), 4096) == {
        "use_vllm": True,
        "vllm_mode": "server",
        "vllm_max_model_length": 4096,
        "vllm_server_host": "gpu-node-3",
        "vllm_server_port": 8000,
    }

    config = method_config("grpo", max_context_length=2048)
    config["rollout"].update(vllm="server", vllm_server="localhost:8123")
    args = trl_args("grpo", config, tmp_path)  # a config field only: nothing connects here
    assert (
        args.use_vllm,
        args.vllm_mode,
        args.vllm_server_host,
        args.vllm_server_port,
        args.vllm_max_model_length,
    ) == (True, "server", "localhost", 8123, 2048)
    config["rollout"]["vllm"] = "colocate"
    config["rollout"]["vllm_server"] = None
    args = trl_args("grpo", config, tmp_path)
    assert (args.use_vllm, args.vllm_mode) == (True, "colocate")
    assert trl_args("grpo", method_config("grpo"), tmp_path).use_vllm is False


@pytest.mark.parametrize(
    "rollout, message",
    [
        ({"vllm": "remote"}, r"rollout.vllm: 'remote' is not allowed; allowed: 'off', 'colocate' or 'server'"),
        ({"vllm": "server"}, r"rollout.vllm_server: rollout.vllm 'server' needs the 'host:port' of a running"),
        ({"vllm": "server", "vllm_server": "gpu-node-3"}, r"rollout.vllm_server: 'gpu-node-3': String should match"),
        (
            {"vllm": "off", "vllm_server": "h:1"},
            r"rollout.vllm_server: 'h:1' only applies with rollout.vllm 'server', "
            r"not 'off'",
        ),
    ],
)
def test_bad_vllm_settings_are_named_by_the_schema(rollout, message):
    with pytest.raises(SpecError, match=message):
        parse(RolloutConfig, rollout, "exp.yaml", "rollout")


def test_no_vllm_asked_for_is_no_problem():
    assert vllm_problem({"use_vllm": False}, "any-model") is None  # where vLLM runs: tests/test_vllm.py


# --- VALIDATING: rows ---------------------------------------------------------------------


def user(text):
    return {"role": "user", "content": text}


def assistant(text):
    return {"role": "assistant", "content": text}


def test_sft_rows_of_either_form_pass_and_bad_rows_are_named():
    config = method_job("sft")
    messages = Dataset.from_dict(
        {
            "row_id": ["a", "b"],
            "extra": [1, 2],
            "messages": [[user("q"), assistant("a"), user("q2"), assistant("a2")], [user("q"), assistant("a")]],
        }
    )
    method = SFTMethod()
    assert method.validate_rows(config, messages).column_names == ["messages"]
    assert method.form == "messages"
    pairs = Dataset.from_dict({"row_id": ["a"], "prompt": [[user("q")]], "completion": [[assistant("a")]]})
    assert SFTMethod().validate_rows(config, pairs).column_names == ["prompt", "completion"]

    bad = Dataset.from_dict(
        {"row_id": ["a", "b", "c"], "messages": [[user("q"), assistant("a")], [user(" "), assistant("")], []]}
    )
    with pytest.raises(
        ValueError,
        match=r"2 of 3 rows have no usable sft conversation \(row b: messages: every "
        r"message is empty; row c: messages: no messages\)",
    ):
        SFTMethod().validate_rows(config, bad)
    no_answer = Dataset.from_dict({"row_id": ["a"], "messages": [[user("q")]]})
    SFTMethod().validate_rows(config, no_answer)  # trains on every token: fine
    with pytest.raises(ValueError, match=r"row a: messages: no assistant message"):
        SFTMethod().validate_rows(method_job("sft", sft={"assistant_only_loss": True}), no_answer)
    with pytest.raises(
        ValueError,
        match=r"SFT needs a 'messages' column or 'prompt' \+ 'completion'.*"
        r"columns: row_id, prompt, ground_truth",
    ):
        SFTMethod().validate_rows(
            config, Dataset.from_dict({"row_id": ["a"], "prompt": [[user("q")]], "ground_truth": ["1"]})
        )
    mixed = Dataset.from_dict(
        {
            "row_id": ["a", "b"],
            "messages": [[user("q"), assistant("a")], None],
            "prompt": [None, [user("q")]],
            "completion": [None, [assistant("a")]],
        }
    )
    with pytest.raises(ValueError, match=r"rows mix the sft forms \(row a has messages, row b has prompt"):
        SFTMethod().validate_rows(config, mixed)
    with pytest.raises(SpecError, match=r"train.sft.max_length: 8192 is longer than max_context_length 4096"):
        parse(TrainJob, method_config("sft", max_context_length=4096, sft={"max_length": 8192}), "--config-json")


def test_kto_rows_need_both_labels_and_are_interleaved():
    config = method_job("kto")
    rows = {
        "row_id": [f"r{i}" for i in range(6)],
        "prompt": [[user(f"q{i}")] for i in range(6)],
        "completion": [[assistant(f"a{i}")] for i in range(6)],
        "label": [True] * 4 + [False] * 2,
    }
    method = KTOMethod()
    dataset = method.validate_rows(config, Dataset.from_dict(rows))
    assert method.counts == {True: 4, False: 2}
    assert dataset.column_names == ["prompt", "completion", "label"]
    assert dataset["label"] in ([True, False, True, True, False, True], [True, True, False, True, True, False])
    assert sorted(dataset["prompt"], key=str) == sorted(Dataset.from_dict(rows)["prompt"], key=str)  # a permutation

    labels = [True] * 10 + [False] * 10  # a file sorted by label
    spread = interleave_labels(Dataset.from_dict({"label": labels, "i": list(range(20))}), seed=3)["label"]
    assert all(spread[i] != spread[i + 1] for i in range(0, 20, 2))  # every batch of 2 holds both labels

    with pytest.raises(ValueError, match=r"all 2 kto rows are labelled desirable \(true\)"):
        KTOMethod().validate_rows(config, Dataset.from_dict({k: v[:2] for k, v in rows.items()}))
    broken = {**rows, "label": [True, None, False, True, True, False]}
    broken["completion"] = [[assistant("a")], [assistant("b")], [], *rows["completion"][3:]]
    with pytest.raises(
        ValueError,
        match=r"2 of 6 rows have no usable kto example \(row r1: label None, expected "
        r"true or false; row r2: completion: no messages\)",
    ):
        KTOMethod().validate_rows(config, Dataset.from_dict(broken))
    with pytest.raises(ValueError, match=r"KTO needs columns prompt, completion, label; missing label"):
        KTOMethod().validate_rows(config, Dataset.from_dict({k: v for k, v in rows.items() if k != "label"}))


def test_assistant_only_loss_needs_generation_markers_in_the_template():
    from knobsweep.models.tiny import train_tokenizer

    tokenizer = train_tokenizer([json.loads(line)["answer"] for line in GSM8K_TRAIN.read_text().splitlines()[:50]])
    config = method_job("sft", sft={"assistant_only_loss": True})
    dataset = Dataset.from_dict({"row_id": ["a"], "messages": [[user("2 + 2?"), assistant("#### 4")]]})
    method = SFTMethod()
    method.validate_rows(config, dataset)
    summary = method.validate_with_tokenizer(config, dataset, tokenizer, Path("."), True)
    assert summary == {
        "rows": 1,
        "form": "messages",
        "loss_on": "assistant tokens",
        "max_length": 1024,
        "packing": False,
    }  # the tiny model's ChatML template marks assistant content
    tokenizer.chat_template = (
        "{%- for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}{%- endfor %}"
    )
    with pytest.raises(
        ValueError,
        match=r"assistant_only_loss: the model's chat template has no \{% generation %\} "
        r"markers .* not supported for this template.*assistant_only_loss: false",
    ):
        method.validate_with_tokenizer(config, dataset, tokenizer, Path("."), True)


# --- warm start paths ---------------------------------------------------------------------


def test_warm_start_paths_are_checked(tmp_path):
    assert inspect_warm_start(None) is None
    with pytest.raises(ValueError, match=rf"train.warm_start_from={tmp_path}/nope: no such file"):
        inspect_warm_start(str(tmp_path / "nope"))
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(ValueError, match="not a directory"):
        inspect_warm_start(str(tmp_path / "file.txt"))
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    with pytest.raises(ValueError, match=r"adapter_config.json but no adapter weights"):
        inspect_warm_start(str(adapter))
    (adapter / "adapter_model.safetensors").write_bytes(b"")
    assert inspect_warm_start(str(adapter)) == "adapter"
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (model / "model.safetensors").write_bytes(b"")
    assert inspect_warm_start(str(model)) == "model"
    with pytest.raises(ValueError, match=r"neither a PEFT adapter .* it holds: adapter, file.txt, model"):
        inspect_warm_start(str(tmp_path))


# --- KTO health and console ---------------------------------------------------------------


def test_a_negative_kto_margin_after_the_warm_up_warns_once():
    monitor = HealthMonitor("kto", HealthConfig(kto_margin_warmup=3))
    found = []
    for step, margin in enumerate([-0.5, -0.4, -0.3, -0.2, None, -0.1, 0.3, 0.9, 1.0, 1.0, 1.0], start=1):
        metrics = {"kl": 50.0, **({"rewards/margins": margin} if margin is not None else {})}
        found += [(step, kind) for kind, _ in monitor.check(step, metrics)]
    # warned at step 4 (past the warm-up, 5-step mean < 0); a step without a margin is no recovery;
    # KTO's batch-level kl is not held to GRPO's per-token kl_max
    assert found == [(4, "kto_margin_negative")]
    assert HealthMonitor("kto", HealthConfig()).t.kto_margin_warmup == 10


def test_the_kto_console_table_shows_chosen_rejected_margin(tmp_path):
    from transformers import TrainerState

    console = Console(record=True, width=200)
    logger = MetricsLogger(
        tmp_path / "metrics.jsonl", RunStatus(tmp_path / "status.json"), console, columns=KTO_COLUMNS
    )
    state = TrainerState()
    state.global_step = 1
    logger.on_log(
        None,
        state,
        None,
        logs={"loss": 0.5, "rewards/chosen": 0.25, "rewards/rejected": -0.5, "rewards/margins": 0.75, "kl": 0.1},
    )
    header, row = console.export_text().splitlines()
    assert header.split() == ["Step", "Loss", "Chosen", "Reject", "Margin", "KL", "Tok/s", "Elapsed"]
    assert row.split()[:5] == ["1", "0.5", "0.2500", "-0.5000", "0.7500"]


# --- the real stage on the tiny model -----------------------------------------------------


@pytest.fixture(scope="module")
def gsm8k_inputs(tmp_path_factory) -> dict[str, Path]:
    """The tiny model and data dirs in each method's row schema, from the first GSM8K train rows."""
    from knobsweep.models.tiny import build_tiny_model

    root = tmp_path_factory.mktemp("methods")
    rows = [json.loads(line) for line in GSM8K_TRAIN.read_text().splitlines()[:ROWS]]
    final = [row["answer"].split("#### ")[-1].replace(",", "") for row in rows]
    ids = [f"train-{i}" for i in range(ROWS)]
    # Short assistant turns keep every sequence within a small max_length (fast, nothing masked away).
    frames = {
        "sft_messages": pd.DataFrame(
            {
                "row_id": ids,
                "messages": [
                    [
                        user(row["question"]),
                        assistant(f"The answer is {answer}."),
                        user("Only the number, please."),
                        assistant(f"#### {answer}"),
                    ]
                    for row, answer in zip(rows, final)
                ],
            }
        ),
        "sft_pairs": pd.DataFrame(
            {
                "row_id": ids,
                "prompt": [[user(row["question"])] for row in rows],
                "completion": [[assistant(f"#### {answer}")] for answer in final],
            }
        ),
        # desirable: the row's own answer; undesirable: another row's
        "kto": pd.DataFrame(
            {
                "row_id": ids,
                "prompt": [[user(row["question"])] for row in rows],
                "completion": [[assistant(f"#### {final[i if i % 2 == 0 else (i + 1) % ROWS]}")] for i in range(ROWS)],
                "label": [i % 2 == 0 for i in range(ROWS)],
            }
        ),
        "rl": pd.DataFrame(
            {
                "row_id": ids[:6],
                "prompt": [[user(row["question"])] for row in rows[:6]],
                "ground_truth": final[:6],
                "answer": [row["answer"] for row in rows[:6]],
            }
        ),
    }
    paths = {}
    for name, frame in frames.items():
        (root / name).mkdir()
        frame.to_parquet(root / name / "train.parquet")
        paths[name] = root / name
    texts = [row["question"] for row in rows] + [row["answer"] for row in rows]
    paths["model"] = build_tiny_model(texts, root / "tiny")
    return paths


def run_stage(
    config: dict, inputs: dict, data: str, out: Path, env: dict | None = None, warm_start: Path | None = None
) -> tuple[int, str, dict]:
    code, output = finish(
        start(config, inputs["model"], inputs[data], out, env=env, launcher=False, warm_start=warm_start)
    )
    return code, output, status_of(out)


def adapter_l2(adapter: Path) -> tuple[int, float]:
    from safetensors.torch import load_file

    tensors = load_file(adapter / "adapter_model.safetensors")
    return (
        sum(t.numel() for t in tensors.values()),
        math.sqrt(sum(float(t.float().pow(2).sum()) for t in tensors.values())),
    )


@pytest.fixture(scope="module")
def sft_run(gsm8k_inputs, tmp_path_factory) -> tuple[Path, str]:
    """SFT on multi-turn messages, assistant tokens only: 40 rows, batch 2 = 20 steps."""
    config = method_config(
        "sft",
        batch_size=2,
        log_every=5,
        learning_rate=5e-4,  # the schema's maximum
        sft={"assistant_only_loss": True, "max_length": 256},
    )
    out = tmp_path_factory.mktemp("sft") / "train"
    code, output = finish(start(config, gsm8k_inputs["model"], gsm8k_inputs["sft_messages"], out, launcher=False))
    assert code == 0, output[-4000:]
    return out, output


@pytest.mark.slow
def test_sft_on_multi_turn_messages_trains_on_assistant_tokens(sft_run):
    out, output = sft_run
    status = status_of(out)
    assert (status["state"], status["step"], status["train_rows"]) == ("COMPLETED", ROWS // 2, ROWS)
    assert status["validation"] == {
        "rows": ROWS,
        "form": "messages",
        "loss_on": "assistant tokens",
        "max_length": 256,
        "packing": False,
    }
    assert status["batch_plan"]["per_device_batch_size"] == 2
    metrics = read_jsonl(out / "metrics.jsonl")
    assert [m["step"] for m in metrics] == list(range(1, ROWS // 2 + 1))
    for line in metrics:
        for key in (
            "loss",
            "mean_token_accuracy",
            "entropy",
            "num_tokens",
            "grad_norm",
            "learning_rate",
            "tokens_per_s",
            "elapsed_s",
        ):
            assert key in line, key
    assert metrics[-1]["loss"] < metrics[0]["loss"]  # it learns the short answers
    assert status["summary"]["mean_token_accuracy"] is not None
    assert "Acc" in output and "batch_size 2 sequences per step" in output  # the table and the batch plan
    assert (out / "adapter" / "adapter_config.json").is_file()


@pytest.mark.slow
def test_sft_on_prompt_completion_rows_with_packing(gsm8k_inputs, tmp_path):
    config = method_config("sft", batch_size=2, log_every=5, sft={"max_length": 256, "packing": True})
    out = tmp_path / "train"
    code, output, status = run_stage(config, gsm8k_inputs, "sft_pairs", out)
    assert code == 0, output[-4000:]
    assert status["state"] == "COMPLETED", status
    assert status["validation"]["loss_on"] == "completion tokens"
    # Packing merges rows into max_length blocks: fewer, longer sequences than rows.
    assert 0 < status["train_rows"] < ROWS
    metrics = read_jsonl(out / "metrics.jsonl")
    assert len(metrics) == status["step"] == math.ceil(status["train_rows"] / 2)
    assert all("loss" in m and "mean_token_accuracy" in m for m in metrics)


@pytest.mark.slow
def test_kto_trains_and_logs_chosen_rejected_margins(gsm8k_inputs, tmp_path):
    config = method_config(
        "kto", batch_size=2, log_every=5, kto={"beta": 0.1, "desirable_weight": 1.0, "undesirable_weight": 1.0}
    )
    out = tmp_path / "train"
    code, output, status = run_stage(config, gsm8k_inputs, "kto", out)
    assert code == 0, output[-4000:]
    assert (status["state"], status["step"]) == ("COMPLETED", ROWS // 2), status
    assert status["validation"] == {
        "rows": ROWS,
        "desirable": ROWS // 2,
        "undesirable": ROWS // 2,
        "weighted_ratio": 1.0,
    }
    metrics = read_jsonl(out / "metrics.jsonl")
    assert [m["step"] for m in metrics] == list(range(1, ROWS // 2 + 1))
    for line in metrics:  # interleaved labels: every batch of 2 has one of each, so every step has a margin
        for key in (
            "loss",
            "rewards/chosen",
            "rewards/rejected",
            "rewards/margins",
            "kl",
            "logps/chosen",
            "logps/rejected",
            "grad_norm",
        ):
            assert key in line, key
        assert line["rewards/margins"] == pytest.approx(line["rewards/chosen"] - line["rewards/rejected"])
    assert status["summary"]["rewards/margins"] is not None
    header = next(line for line in output.splitlines() if line.split()[:2] == ["Step", "Loss"])
    assert header.split()[:5] == ["Step", "Loss", "Chosen", "Reject", "Margin"]
    assert (out / "adapter" / "adapter_config.json").is_file()


@pytest.mark.slow
def test_a_nan_sft_loss_fails_the_run_and_a_rerun_resumes(gsm8k_inputs, tmp_path):
    config = method_config("sft", batch_size=4, save_every=2, sft={"max_length": 256})  # 10 steps
    out = tmp_path / "train"
    code, output, status = run_stage(config, gsm8k_inputs, "sft_pairs", out, env={"KNOBSWEEP_TEST_NAN_AT_STEP": "3"})
    assert code == 1
    assert status["state"] == "FAILED" and "loss is nan at step 3" in status["reason"], status
    assert "checkpoint-2" in status["reason"]
    assert [r["step"] for r in read_jsonl(out / "metrics.jsonl")] == [1, 2]
    assert not (out / "adapter").exists()

    code, output, status = run_stage(config, gsm8k_inputs, "sft_pairs", out)  # the same command again
    assert code == 0, output[-4000:]
    assert (status["state"], status["step"], status["attempt"]) == ("COMPLETED", ROWS // 4, 2)
    assert status["resumed_from"].endswith("checkpoint-2")
    assert [r["step"] for r in read_jsonl(out / "metrics.jsonl")] == list(range(1, ROWS // 4 + 1))
    assert (out / "adapter" / "adapter_config.json").is_file()


@pytest.mark.slow
def test_warm_start_chain_sft_then_grpo_starts_from_the_sft_adapter(sft_run, gsm8k_inputs, tmp_path):
    from peft import PeftConfig

    sft_adapter = sft_run[0] / "adapter"
    sft_params, sft_l2 = adapter_l2(sft_adapter)
    config = method_config("grpo", batch_size=2, kl_beta=0.01)
    config["reward"] = {"name": "test-length"}  # always some signal
    out = tmp_path / "grpo"
    code, output, status = run_stage(config, gsm8k_inputs, "rl", out, warm_start=sft_adapter)
    assert code == 0, output[-4000:]
    assert (status["state"], status["step"]) == ("COMPLETED", 3), status
    assert status["warm_start"]["kind"] == "adapter" and status["warm_start"]["from"] == str(sft_adapter)
    # The GRPO run's trainable weights at step 0 are the SFT adapter's (a fresh LoRA would differ:
    # B = 0 and a new random A, like the SFT run's own start).
    assert status["initial_weights"]["trainable_params"] == sft_params
    assert status["initial_weights"]["l2"] == pytest.approx(sft_l2, rel=1e-6)
    assert status_of(sft_run[0])["initial_weights"]["l2"] != pytest.approx(sft_l2, rel=1e-3)
    # ... and training moved them; the adapter keeps the SFT adapter's shape.
    grpo_params, grpo_l2 = adapter_l2(out / "adapter")
    assert grpo_params == sft_params and grpo_l2 != pytest.approx(sft_l2, rel=1e-9)
    assert PeftConfig.from_pretrained(out / "adapter").r == PeftConfig.from_pretrained(sft_adapter).r
    assert not (out / "adapter" / "ref").exists()  # TRL's frozen KL-reference copy is not part of the result
    assert "warm start from adapter" in output


@pytest.mark.slow
def test_a_missing_warm_start_path_fails_validation(gsm8k_inputs, tmp_path):
    missing = tmp_path / "results" / "train" / "abc" / "adapter"
    config = method_config("kto")
    out = tmp_path / "train"
    code, output, status = run_stage(config, gsm8k_inputs, "kto", out, warm_start=missing)
    assert code == 1
    assert [h["state"] for h in status["history"]] == ["PENDING", "VALIDATING", "FAILED"]
    assert f"train.warm_start_from={missing}: no such file or directory" in status["reason"]


@pytest.mark.slow
def test_wandb_tracking_in_offline_mode_records_the_run(gsm8k_inputs, tmp_path):
    import os
    import subprocess
    import sys

    from test_train_lifecycle import REPO, TESTS

    config = method_config("sft", batch_size=4, sft={"max_length": 128})
    run_info = {
        "experiment": "methods",
        "run": "lr-up",
        "changed": {"train.learning_rate": 1e-3},
        "tracking": {"wandb": {"project": "knobsweep-tests", "mode": "offline"}},
    }
    out = tmp_path / "train"
    info_file = tmp_path / "run_info.json"  # as the workflow writes it (knobsweep.runinfo)
    info_file.write_text(json.dumps(run_info))
    command = [
        sys.executable,
        "-m",
        "knobsweep.train",
        "--config-json",
        json.dumps(config),
        "--model",
        str(gsm8k_inputs["model"]),
        "--data",
        str(gsm8k_inputs["sft_pairs"]),
        "--out",
        str(out),
        "--run-info",
        str(info_file),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(TESTS), "WANDB_SILENT": "true"}
    env.pop("WANDB_API_KEY", None)
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, cwd=REPO)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert status_of(out)["state"] == "COMPLETED"
    assert "tracking: wandb" in result.stdout
    run_id = (out / "wandb_run_id").read_text().strip()
    runs = list((out / "wandb").glob(f"offline-run-*-{run_id}"))
    assert len(runs) == 1, list((out / "wandb").iterdir())
    assert any(runs[0].glob("*.wandb"))  # the offline run's history file
    # status.json names the W&B run, so a report of any experiment reusing this training links to it
    assert status_of(out)["wandb"] == {
        "id": run_id,
        "name": "lr-up",
        "group": "methods",
        "project": "knobsweep-tests",
        "entity": None,
        "mode": "offline",
        "url": None,
    }


def test_load_policy_from_a_full_model_or_an_adapter(tmp_path):
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model

    from knobsweep.models.tiny import build_tiny_model
    from knobsweep.train.warmstart import load_policy

    texts = [json.loads(line)["answer"] for line in GSM8K_TRAIN.read_text().splitlines()[:50]]
    base_dir = build_tiny_model(texts, tmp_path / "base", seed=0)
    other_dir = build_tiny_model(texts, tmp_path / "other", seed=1)  # same tokenizer, other weights
    lora = TrainJob(**train_config()).model.lora
    kwargs = {"dtype": torch.float32}

    def weights(model):
        return model.get_input_embeddings().weight.detach().clone()

    # A full model directory replaces the base; a new LoRA trains on top of it.
    model, peft, how = load_policy(str(base_dir), lora, str(other_dir), "model", kwargs)
    other = load_policy(str(other_dir), None, None, None, kwargs)[0]
    assert torch.equal(weights(model), weights(other)) and peft.r == lora.rank and str(other_dir) in how

    # An adapter (non-zero, as after training) is loaded trainable; with model.lora null it is merged.
    base = load_policy(str(base_dir), None, None, None, kwargs)[0]
    trained = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    trained.save_pretrained(tmp_path / "adapter")
    inputs = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        expected = trained(input_ids=inputs).logits
    model, peft, how = load_policy(str(base_dir), lora, str(tmp_path / "adapter"), "adapter", kwargs)
    assert isinstance(model, PeftModel) and peft is None and "r=4" in how  # the adapter's rank wins
    assert any(p.requires_grad for n, p in model.named_parameters() if "lora_" in n)
    merged, peft, how = load_policy(str(base_dir), None, str(tmp_path / "adapter"), "adapter", kwargs)
    assert not isinstance(merged, PeftModel) and peft is None and "merged" in how
    with torch.no_grad():
        assert torch.allclose(merged(input_ids=inputs).logits, expected, atol=1e-5)
        assert torch.allclose(model(input_ids=inputs).logits, expected, atol=1e-5)


def test_rows_truncated_to_nothing_are_reported():
    method = SFTMethod()
    method.form = "prompt/completion"
    config = method_job("sft", sft={"max_length": 64})
    assert method.dropped_rows(config, 40, 40) is None
    assert method.dropped_rows(config, 40, 31) == (
        "9 of 40 rows have no completion tokens left within "
        "train.sft.max_length=64 and were dropped; raise max_length "
        "to keep them"
    )
    assert method.dropped_rows(method_job("sft", sft={"packing": True}), 40, 12) is None


def test_the_cli_names_an_unknown_method(capsys):
    from knobsweep.train.__main__ import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--config-json", '{"train": {"method": "dpo"}}', "--model", "m", "--data", "d", "--out", "o"])
    assert exit_info.value.code == 2
    assert "--config-json: train.method: 'dpo' is not allowed; allowed: 'grpo', 'sft' or 'kto'" in (
        capsys.readouterr().err
    )
    with pytest.raises(ValueError, match=r"train.method: 'dpo' is not a training method; allowed: grpo, sft, kto"):
        get_method("dpo")


def test_a_training_job_gets_its_warm_start_as_an_argument():
    # The spec resolves train.warm_start_from into the key and --warm-start; a job naming it is not one it made.
    with pytest.raises(
        SpecError,
        match=r"--config-json: train.warm_start_from: a training job gets the weights it "
        r"starts from as --warm-start DIR",
    ):
        parse(TrainJob, method_config("sft", warm_start_from="results/train/abc/adapter"), "--config-json")

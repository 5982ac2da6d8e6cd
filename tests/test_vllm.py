"""vLLM for real (vLLM's CPU build on a machine without CUDA): the eval backend against the hf backend on a
merged tiny model, GRPO with colocated vLLM generation, and the failures that must be clear errors.

vLLM's engine takes tens of seconds to start, so the evaluations share one stage process (one engine)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_merge import make_adapter
from test_train_grpo import ACCELERATE, gsm8k_inputs, train_config

from knobsweep.data import convert_to_dir
from knobsweep.evaluate import evaluate, resolve_backend
from knobsweep.io import read_jsonl
from knobsweep.merge import merge_adapter_into_base
from knobsweep.models import tiny
from knobsweep.spec.schema import EvalJob
from knobsweep.train.grpo import vllm_problem
from knobsweep.vllm_env import explain_failure, install_command, installed_version

REPO = Path(__file__).resolve().parents[1]
EVAL_ROWS, MAX_TOKENS, SAMPLES = 64, 32, 4
REWARD = {"name": "gsm8k", "format_weight": 0.1}
STAGE_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "tests")}

needs_vllm = pytest.mark.skipif(
    importlib.util.find_spec("vllm") is None, reason=f"vLLM is not installed: {install_command()}"
)
cpu_only = pytest.mark.skipif(
    torch.cuda.is_available(), reason="checks the CPU path: CUDA_VISIBLE_DEVICES= pytest tests/test_vllm.py"
)


def eval_config(**options) -> dict:
    return {
        "eval": {
            "backend": "vllm",
            "temperature": 0.0,
            "top_p": 1.0,
            "max_tokens": MAX_TOKENS,
            "samples": 1,
            "batch_size": 16,
            "seed": 0,
            **options,
        },
        "reward": REWARD,
    }


# name -> eval config; run in this order by one process, so the vLLM ones share an engine.
EVAL_RUNS = {
    "hf": eval_config(backend="hf"),
    "vllm": eval_config(),
    "vllm-sampled": eval_config(temperature=1.0, samples=SAMPLES),
    "vllm-sampled-again": eval_config(temperature=1.0, samples=SAMPLES),
}


def run_evals(model: str, data: str, root: str) -> None:
    """The stage's `evaluate` for every EVAL_RUNS entry (called in a subprocess by the `evals` fixture)."""
    for name, config in EVAL_RUNS.items():
        evaluate(EvalJob(**config), model, data, Path(root) / name)


def eval_stage(
    model: Path, data: Path, out: Path, config: dict, env: dict | None = None, prelude: str = ""
) -> subprocess.CompletedProcess:
    """`python -m knobsweep.evaluate` as the workflow runs it (after `prelude`, Python run first)."""
    code = f"{prelude}\nimport sys\nfrom knobsweep.evaluate.__main__ import main\nsys.exit(main())"
    return subprocess.run(
        [
            sys.executable,
            "-c",
            code,
            "--config-json",
            json.dumps(config),
            "--model",
            str(model),
            "--data",
            str(data),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**STAGE_ENV, **(env or {})},
    )


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("data") / "gsm8k"
    convert_to_dir(
        {"source": "gsm8k", "path": str(REPO / "data/gsm8k"), "train_size": 100, "eval_size": EVAL_ROWS}, out
    )
    return out


@pytest.fixture(scope="module")
def merged(data, tmp_path_factory) -> Path:
    """The tiny model with a (random, non-zero) LoRA adapter merged in, as the merge stage writes it."""
    root = tmp_path_factory.mktemp("models")
    base = tiny.build_tiny_model(tiny.texts_from_parquet(data / "train.parquet"), root / "tiny")
    merge_adapter_into_base(base, make_adapter(base, root / "adapter"), root / "merged")
    return root / "merged"


@pytest.fixture(scope="module")
def head_dim_16(data, tmp_path_factory) -> Path:
    """The tiny model at head_dim 16, which vLLM's CPU attention has no kernel for."""
    shape = {**tiny.MODEL_SHAPE, "head_dim": 16}
    mp = pytest.MonkeyPatch()
    mp.setattr(tiny, "MODEL_SHAPE", shape)
    try:
        return tiny.build_tiny_model(
            tiny.texts_from_parquet(data / "train.parquet"), tmp_path_factory.mktemp("models") / "tiny16"
        )
    finally:
        mp.undo()


@pytest.fixture(scope="module")
def evals(merged, data, tmp_path_factory) -> tuple[Path, str]:
    """(folder of the EVAL_RUNS outputs, the process's log)."""
    root = tmp_path_factory.mktemp("evals")
    code = f"import test_vllm; test_vllm.run_evals({str(merged)!r}, {str(data)!r}, {str(root)!r})"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=900, env=STAGE_ENV)
    assert proc.returncode == 0, proc.stderr[-5000:]
    return root, proc.stderr


def completions(out: Path) -> list[str]:
    return [record["completion"] for record in read_jsonl(out / "samples.jsonl")]


@pytest.mark.slow
@pytest.mark.vllm
@needs_vllm
def test_vllm_greedy_agrees_with_hf_on_the_merged_model(evals):
    root, _ = evals
    hf, vllm = completions(root / "hf"), completions(root / "vllm")
    assert len(hf) == len(vllm) == EVAL_ROWS
    agreement = sum(a == b for a, b in zip(hf, vllm)) / EVAL_ROWS
    print(f"greedy agreement vLLM vs transformers (fp32): {agreement:.1%} of {EVAL_ROWS} prompts")
    assert agreement >= 0.95


@pytest.mark.slow
@pytest.mark.vllm
@needs_vllm
def test_vllm_writes_the_hf_backends_summary_and_samples(evals, merged):
    root, _ = evals
    hf, vllm = (json.loads((root / name / "summary.json").read_text()) for name in ("hf", "vllm"))
    assert set(vllm) == set(hf)
    assert (vllm["backend"], vllm["model"], vllm["n"], vllm["samples"]) == ("vllm", str(merged), EVAL_ROWS, 1)
    assert 0 < vllm["completion_tokens"] <= EVAL_ROWS * MAX_TOKENS and vllm["tokens_per_s"] > 0
    hf_records, vllm_records = read_jsonl(root / "hf" / "samples.jsonl"), read_jsonl(root / "vllm" / "samples.jsonl")
    assert [set(r) for r in vllm_records] == [set(r) for r in hf_records]
    assert [r["row_id"] for r in vllm_records] == [r["row_id"] for r in hf_records]


@pytest.mark.slow
@pytest.mark.vllm
@needs_vllm
def test_vllm_sampling_gives_distinct_reproducible_samples(evals):
    root, _ = evals
    summary = json.loads((root / "vllm-sampled" / "summary.json").read_text())
    assert (summary["n"], summary["samples"]) == (EVAL_ROWS * SAMPLES, SAMPLES)
    assert set(summary["pass_at_k"]) == {"1", "2", "4"}
    records = read_jsonl(root / "vllm-sampled" / "samples.jsonl")
    per_row: dict[str, list[str]] = {}
    for record in records:
        per_row.setdefault(record["row_id"], []).append(record["completion"])
    assert all(len(samples) == SAMPLES for samples in per_row.values())
    assert sum(len(set(samples)) > 1 for samples in per_row.values()) > EVAL_ROWS // 2
    # The request's seed, not the engine's state or batching, decides the samples: the same config, the same samples.
    assert completions(root / "vllm-sampled-again") == completions(root / "vllm-sampled")


@pytest.mark.slow
@pytest.mark.vllm
@needs_vllm
def test_the_log_says_which_backend_ran_where(evals):
    _, log = evals
    assert "eval backend: hf (eval.backend)" in log and "eval backend: vllm (eval.backend)" in log
    where = "on CUDA" if torch.cuda.is_available() else "on the CPU (VLLM_CPU_KVCACHE_SPACE=1 GiB)"
    assert f"vLLM: {installed_version()} {where}; starting an engine" in log
    assert log.count("starting an engine") == 1  # three vLLM evaluations, one engine


@cpu_only
def test_auto_picks_hf_without_a_gpu_and_says_why():
    backend, why = resolve_backend("auto")
    assert backend == "hf" and why.startswith("auto: no CUDA GPU")
    if importlib.util.find_spec("vllm") is not None:
        assert "is installed: eval.backend vllm runs it" in why
    assert resolve_backend("vllm") == ("vllm", "eval.backend")


# --- failures: the reason and the fix, before an engine starts ----------------------------------


def test_missing_vllm_fails_with_the_install_command(merged, data, tmp_path):
    out = tmp_path / "eval"
    # The stage in a process where `import vllm` fails as it does where vLLM is not installed.
    proc = eval_stage(merged, data, out, eval_config(), prelude="import sys; sys.modules['vllm'] = None")
    assert proc.returncode == 1
    assert f"error: vLLM is not installed; install it with: {install_command()}" in proc.stderr
    assert not out.exists()


@pytest.mark.slow
@pytest.mark.vllm
@needs_vllm
@cpu_only
def test_a_head_size_the_cpu_build_cannot_serve_fails_before_an_engine_starts(head_dim_16, data, tmp_path):
    out = tmp_path / "eval"
    proc = eval_stage(head_dim_16, data, out, eval_config())
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert f"error: {head_dim_16}: head_dim 16, but vLLM's CPU attention has kernels for head_dim 32" in proc.stderr
    assert "evaluate it with eval.backend: hf" in proc.stderr
    assert "starting an engine" not in proc.stderr and not out.exists()


@pytest.mark.slow
@pytest.mark.vllm
@needs_vllm
@cpu_only
@pytest.mark.parametrize(
    "gib, message",
    [
        (
            "0",
            "VLLM_CPU_KVCACHE_SPACE=0: vLLM's CPU build has no memory for its KV cache; "
            "set VLLM_CPU_KVCACHE_SPACE=1 (GiB) or more",
        ),
        ("100000", "VLLM_CPU_KVCACHE_SPACE=100000 GiB of KV cache, but only"),
    ],
)
def test_a_kv_cache_that_cannot_fit_fails_with_the_fix(merged, data, tmp_path, gib, message):
    out = tmp_path / "eval"
    proc = eval_stage(merged, data, out, eval_config(), env={"VLLM_CPU_KVCACHE_SPACE": gib})
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert f"error: {message}" in proc.stderr
    assert "starting an engine" not in proc.stderr and not out.exists()


def test_vllm_errors_after_start_up_keep_vllms_words_and_add_the_fix():
    # Messages vLLM 0.32 raised here: KV cache space 0 with the engine in-process, and an engine process's death.
    no_blocks = ValueError(
        "No available memory for the cache blocks. Try increasing `gpu_memory_utilization` "
        "when initializing the engine (this flag also controls CPU memory reservation on the "
        "CPU backend, despite its name)."
    )
    assert explain_failure(no_blocks, "M") == (
        f"vLLM failed on M: ValueError: {no_blocks}; fix: no memory for the KV cache: on a CPU set "
        "VLLM_CPU_KVCACHE_SPACE (GiB of host memory, e.g. 1); on a GPU raise gpu_memory_utilization"
    )
    dead = RuntimeError("EngineCore encountered an issue. See stack trace (above) for the root cause.")
    assert explain_failure(dead, "M").endswith(
        "(vLLM's engine process printed the root cause above this line in the log)"
    )


@cpu_only
def test_grpo_server_mode_needs_cuda_for_its_weight_sync(merged):
    problem = vllm_problem({"use_vllm": True, "vllm_mode": "server"}, str(merged))
    assert problem.startswith(
        "rollout.vllm='server' needs a CUDA GPU: weights reach the server through vLLM's NCCL weight transfer"
    )
    assert "use rollout.vllm: colocate" in problem


# --- GRPO with colocated vLLM ---------------------------------------------------------------


@pytest.fixture(scope="module")
def grpo_inputs(tmp_path_factory) -> tuple[Path, Path]:
    return gsm8k_inputs(tmp_path_factory.mktemp("grpo"), 24)


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
    return subprocess.run(command, capture_output=True, text=True, timeout=900, env=STAGE_ENV, cwd=REPO)


@pytest.mark.slow
@pytest.mark.vllm
@needs_vllm
def test_grpo_with_colocated_vllm_trains_and_generates_from_the_trained_weights(grpo_inputs, tmp_path):
    model, data = grpo_inputs
    config = train_config(loss="dapo")  # 24 prompts / 2 per step = 12 steps
    config["model"]["lora"]["alpha"] = 160  # LoRA scale 20 at the largest learning rate: the weights move fast
    config["rollout"]["vllm"] = "colocate"
    config["reward"] = {"name": "test-length"}  # every group has variance
    out = tmp_path / "train"
    result = launch(config, model, data, out)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    status = json.loads((out / "status.json").read_text())
    assert (status["state"], status["step"]) == ("COMPLETED", 12)
    assert "vLLM colocate" in result.stdout

    # vLLM generates from the weights being trained: TRL compares the log-probabilities vLLM reported for
    # each sampled token with the training model's. Synced every step they stay within 0.1 here; with the
    # engine left on the initial weights they reach 1.2 at step 2 and 3-4 after (measured with this LoRA scale).
    metrics = read_jsonl(out / "metrics.jsonl")
    assert [m["step"] for m in metrics] == list(range(1, 13))
    drift = [m["sampling/sampling_logp_difference/max"] for m in metrics]
    assert max(drift) < 0.5, drift

    adapter = load_file(out / "adapter" / "adapter_model.safetensors")
    assert max(float(t.abs().max()) for name, t in adapter.items() if "lora_B" in name) > 0  # B starts at zero


@pytest.mark.slow
@pytest.mark.vllm
@needs_vllm
@cpu_only
def test_grpo_colocate_fails_validation_on_a_model_vllm_cannot_serve(head_dim_16, grpo_inputs, tmp_path):
    _, data = grpo_inputs
    config = train_config()
    config["rollout"]["vllm"] = "colocate"
    out = tmp_path / "train"
    result = launch(config, head_dim_16, data, out)
    assert result.returncode != 0
    status = json.loads((out / "status.json").read_text())
    assert status["state"] == "FAILED" and "RUNNING" not in [h["state"] for h in status["history"]]
    assert status["reason"].startswith(
        f"ValueError: rollout.vllm='colocate': {head_dim_16}: head_dim 16, "
        "but vLLM's CPU attention has kernels for head_dim 32"
    )
    assert not (out / "adapter").exists()

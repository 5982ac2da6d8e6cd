"""Merge: a real PEFT LoRA adapter on the tiny model, merged, verified, saved, reloaded."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from knobsweep.merge import MergeError, main, merge_adapter_into_base
from knobsweep.models.tiny import build_tiny_model

REPO = Path(__file__).resolve().parents[1]
GSM8K_TEST = REPO / "data" / "gsm8k" / "test.jsonl"
WEIGHTS = "adapter_model.safetensors"


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    lines = GSM8K_TEST.read_text().splitlines()[:200]
    texts = [text for line in lines for text in json.loads(line).values()]
    return build_tiny_model(texts, tmp_path_factory.mktemp("models") / "tiny")


def make_adapter(base: Path, out: Path, init_lora_weights=False) -> Path:
    """An adapter as training leaves it: PEFT save_pretrained plus the tokenizer.

    init_lora_weights=False gives a non-zero lora_B, i.e. an adapter that changes the model
    (PEFT's default init is a no-op until trained)."""
    model = AutoModelForCausalLM.from_pretrained(base)
    config = LoraConfig(
        r=8,
        lora_alpha=16,
        target_modules="all-linear",
        exclude_modules=["lm_head", "embed_tokens"],
        init_lora_weights=init_lora_weights,
    )
    get_peft_model(model, config).save_pretrained(out)
    AutoTokenizer.from_pretrained(base).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def adapter(base, tmp_path_factory) -> Path:
    return make_adapter(base, tmp_path_factory.mktemp("adapters") / "adapter")


def corrupt(adapter: Path, out: Path, edit) -> Path:
    """A copy of `adapter` whose weights went through `edit(dict of tensors)`."""
    shutil.copytree(adapter, out)
    weights = load_file(adapter / WEIGHTS)
    edit(weights)
    save_file(weights, out / WEIGHTS)
    return out


def assert_nothing_written(out: Path):
    assert not out.exists()
    assert not list(out.parent.glob(f".{out.name}.*")), "a temp dir was left behind"


def test_merge_verifies_and_saves_a_loadable_model(base, adapter, tmp_path, capsys):
    out = tmp_path / "merged"
    assert main(["--base", str(base), "--adapter", str(adapter), "--out", str(out)]) == 0
    numbers = json.loads((out / "verification.json").read_text())
    assert f"{numbers['param_count_merged']} parameters" in capsys.readouterr().out

    assert numbers["max_abs_logit_diff_merged_vs_adapter"] <= 1e-4
    assert numbers["max_abs_logit_diff_merged_vs_base"] > 1e-3  # the adapter did something
    assert numbers["param_count_merged"] == numbers["param_count_base"] > 0
    assert numbers["shapes_equal"] is True

    # Independently of the stage's own checks: the saved model, loaded as evaluation will,
    # matches base+adapter on a prompt the stage never saw, and has no LoRA weights left.
    tokenizer = AutoTokenizer.from_pretrained(out)
    ids = tokenizer("Janet's ducks lay 16 eggs per day.", return_tensors="pt").input_ids
    merged = AutoModelForCausalLM.from_pretrained(out)
    unmerged = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), adapter)
    with torch.no_grad():
        diff = (merged(ids).logits - unmerged(ids).logits).abs().max().item()
    assert diff <= 1e-4
    assert not [k for k in merged.state_dict() if "lora" in k]


def test_nan_adapter_fails_with_numbers_and_writes_nothing(base, adapter, tmp_path, capsys):
    def poison(weights):
        key = next(k for k in weights if "lora_B" in k)
        weights[key] = torch.full_like(weights[key], float("nan"))

    bad = corrupt(adapter, tmp_path / "nan-adapter", poison)
    out = tmp_path / "merged"
    assert main(["--base", str(base), "--adapter", str(bad), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "failed verification" in err
    assert "merged logits differ from base+adapter by nan" in err
    assert "NaN or Inf" in err
    assert_nothing_written(out)


def test_adapter_for_other_shapes_fails_clearly(base, adapter, tmp_path):
    def reshape(weights):
        key = next(k for k in weights if "lora_A" in k)
        weights[key] = torch.zeros(weights[key].shape[0], weights[key].shape[1] + 3)

    bad = corrupt(adapter, tmp_path / "wrong-shape-adapter", reshape)
    out = tmp_path / "merged"
    with pytest.raises(MergeError, match=r"(?s)does not load onto base.*size mismatch"):
        merge_adapter_into_base(base, bad, out)
    assert_nothing_written(out)


def test_adapter_that_changes_nothing_fails(base, tmp_path):
    # PEFT's default init (lora_B = 0) is what an adapter looks like if training never stepped.
    untrained = make_adapter(base, tmp_path / "untrained", init_lora_weights=True)
    out = tmp_path / "merged"
    with pytest.raises(MergeError, match="the adapter changes nothing"):
        merge_adapter_into_base(base, untrained, out)
    assert_nothing_written(out)


def test_a_run_that_never_learned_is_not_merged_and_any_other_no_op_adapter_still_fails(base, tmp_path, capsys):
    untrained = make_adapter(base, tmp_path / "untrained", init_lora_weights=True)
    status = tmp_path / "status.json"
    status.write_text(json.dumps({"state": "EARLY_STOPPED", "learned": False, "reason": "no learning signal: ..."}))
    assert (
        main(
            [
                "--base",
                str(base),
                "--adapter",
                str(untrained),
                "--out",
                str(tmp_path / "skipped"),
                "--status",
                str(status),
            ]
        )
        == 0
    )
    assert [p.name for p in (tmp_path / "skipped").iterdir()] == ["not_merged.json"]
    assert json.loads((tmp_path / "skipped" / "not_merged.json").read_text()) == {
        "reason": "EARLY_STOPPED: no learning signal: ..."
    }
    # a run that says it learned (or says nothing) and left a no-op adapter: the merge fails loudly
    status.write_text(json.dumps({"state": "COMPLETED", "learned": True, "reason": ""}))
    out = tmp_path / "merged"
    assert main(["--base", str(base), "--adapter", str(untrained), "--out", str(out), "--status", str(status)]) == 1
    assert "the adapter changes nothing" in capsys.readouterr().err
    assert_nothing_written(out)


def test_adapter_without_tokenizer_uses_the_base_tokenizer(base, adapter, tmp_path):
    bare = tmp_path / "bare-adapter"
    bare.mkdir()
    for name in ("adapter_config.json", WEIGHTS):
        shutil.copy(adapter / name, bare / name)
    out = tmp_path / "merged"
    merge_adapter_into_base(base, bare, out)
    assert (out / "tokenizer.json").read_text() == (base / "tokenizer.json").read_text()

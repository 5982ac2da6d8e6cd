"""The tiny offline model: round-trips through from_pretrained, deterministic, trainable chat template."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from knobsweep.models.tiny import build_tiny_model, main, texts_from_parquet

REPO = Path(__file__).resolve().parents[1]
GSM8K_TRAIN = REPO / "data" / "gsm8k" / "train.jsonl"


def gsm8k_texts(n: int = 150) -> list[str]:
    rows = [json.loads(line) for line in GSM8K_TRAIN.read_text().splitlines()[:n]]
    return [text for row in rows for text in (row["question"], row["answer"])]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return build_tiny_model(gsm8k_texts(), tmp_path_factory.mktemp("models") / "tiny", seed=0)


def logits(model_dir: Path, text: str = "Natalia sold 48 clips.\n#### 72") -> torch.Tensor:
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    with torch.no_grad():
        return model(**tokenizer(text, return_tensors="pt")).logits


def test_loads_through_auto_classes_with_the_contract_shape(tiny):
    tokenizer = AutoTokenizer.from_pretrained(tiny)
    model = AutoModelForCausalLM.from_pretrained(tiny)
    assert len(tokenizer) == 1024 == model.config.vocab_size
    assert (tokenizer.eos_token, tokenizer.pad_token, tokenizer.padding_side) == ("<|im_end|>", "<|endoftext|>", "left")
    assert model.config.model_type == "qwen3"
    assert (model.config.hidden_size, model.config.num_hidden_layers) == (64, 2)
    assert (model.config.num_attention_heads, model.config.num_key_value_heads, model.config.head_dim) == (4, 2, 32)
    assert model.generation_config.eos_token_id == tokenizer.eos_token_id
    # GSM8K's answer marker is one token, so the format reward is learnable in a few steps.
    assert "####" in tokenizer.get_vocab()
    assert not list(tiny.parent.glob(".tiny.*")), "atomic_dir left its temp directory behind"


def test_chat_template_is_chatml_with_generation_markers(tiny):
    tokenizer = AutoTokenizer.from_pretrained(tiny)
    messages = [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "#### 4"}]
    prompt = tokenizer.apply_chat_template(messages[:1], tokenize=False, add_generation_prompt=True)
    assert prompt == "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"
    encoded = tokenizer.apply_chat_template(messages, return_dict=True, return_assistant_tokens_mask=True)
    assistant = [t for t, m in zip(encoded["input_ids"], encoded["assistant_masks"]) if m]
    assert tokenizer.decode(assistant) == "#### 4<|im_end|>"


def test_round_trip_gives_identical_logits(tiny, tmp_path):
    model = AutoModelForCausalLM.from_pretrained(tiny)
    model.save_pretrained(tmp_path / "again")
    AutoTokenizer.from_pretrained(tiny).save_pretrained(tmp_path / "again")
    assert torch.equal(logits(tiny), logits(tmp_path / "again"))


def test_same_texts_and_seed_give_the_same_model(tiny, tmp_path):
    same = build_tiny_model(gsm8k_texts(), tmp_path / "same", seed=0)
    other = build_tiny_model(gsm8k_texts(), tmp_path / "other", seed=1)
    assert (same / "tokenizer.json").read_bytes() == (tiny / "tokenizer.json").read_bytes()
    assert torch.equal(logits(same), logits(tiny))
    assert not torch.equal(logits(other), logits(tiny))


def test_cli_trains_on_prompt_and_answer_text(tmp_path):
    rows = [json.loads(line) for line in GSM8K_TRAIN.read_text().splitlines()[:40]]
    frame = pd.DataFrame(
        {
            "row_id": [f"train-{i}" for i in range(len(rows))],
            "prompt": [[{"role": "user", "content": row["question"]}] for row in rows],
            "ground_truth": [row["answer"].split("#### ")[-1] for row in rows],
            "answer": [row["answer"] for row in rows],
        }
    )
    (tmp_path / "data").mkdir()
    frame.to_parquet(tmp_path / "data" / "train.parquet")
    texts = texts_from_parquet(tmp_path / "data" / "train.parquet")
    assert texts[:2] == [rows[0]["question"], rows[0]["answer"]] and len(texts) == 80

    main(["--data", str(tmp_path / "data"), "--out", str(tmp_path / "model")])
    assert torch.equal(logits(tmp_path / "model"), logits(build_tiny_model(texts, tmp_path / "api")))


def test_cli_names_a_missing_data_file(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["--data", str(tmp_path), "--out", str(tmp_path / "model")])
    assert "no train.parquet" in capsys.readouterr().err
    assert not (tmp_path / "model").exists()

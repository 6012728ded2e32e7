"""The training script runs on the CPU and learns: loss falls over a few steps."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest

from clawdbot.demo.tokens import encode_corpus
from clawdbot.demo.train import save, train
from clawdbot.services.tokenizer.assets import DEFAULT_MODEL_DIR
from clawdbot.services.tokenizer.tokenizer import TextTokenizer

SAMPLES = [
    {
        "messages": [
            {"role": "system", "content": f"[1] lookup_order -> status: {s}"},
            {"role": "user", "content": f"订单{n}到哪了"},
            {"role": "assistant", "content": f"您的订单{n}当前状态：{s}。", "train": True},
        ],
        "tools": [],
    }
    for n, s in [("SO1", "已发货"), ("SO2", "已签收"), ("SO3", "已取消"), ("SO4", "待付款")] * 4
]


def tokens_file(tmp_path: Path) -> Path:
    arrays = encode_corpus(
        (json.dumps(s, ensure_ascii=False) for s in SAMPLES), TextTokenizer(DEFAULT_MODEL_DIR), 512
    )
    tokens = tmp_path / "tokens.npz"
    np.savez_compressed(tokens, **arrays)
    return tokens


def cpu_args(tmp_path: Path, **options: object) -> argparse.Namespace:
    """Twelve CPU steps over SAMPLES with a small batch; `options` add or override the rest."""
    defaults = {
        "steps": 12,
        "batch_tokens": 2048,
        "seed": 0,
        "log_every": 1,
        "device": "cpu",
        "max_seconds": 0,
    }
    return argparse.Namespace(tokens=tokens_file(tmp_path), **(defaults | options))


@pytest.mark.timeout(240)
def test_a_few_cpu_steps_lower_the_loss(tmp_path: Path) -> None:
    result = train(cpu_args(tmp_path, preset="tiny", lr=3e-3))
    losses = [p["loss"] for p in result["curve"]]
    assert len(losses) == 12
    assert np.mean(losses[-3:]) < np.mean(losses[:3]) - 0.5
    save(result["model"], tmp_path / "model")
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    assert config["model_type"] == "mistral" and config["sliding_window"] == 256
    assert json.loads((tmp_path / "model" / "generation_config.json").read_text())["eos_token_id"] == [
        8185,
        8183,
    ]
    assert (tmp_path / "model" / "tokenizer.json").exists()


@pytest.mark.timeout(240)
def test_lora_on_a_saved_model_learns_and_saves_only_the_adapter(tmp_path: Path) -> None:
    from transformers import MistralForCausalLM

    from clawdbot.demo.train import model_config

    MistralForCausalLM(model_config("tiny")).save_pretrained(str(tmp_path / "base"))
    result = train(cpu_args(tmp_path, init=tmp_path / "base", lora_rank=8, lr=1e-2))
    losses = [p["loss"] for p in result["curve"]]
    assert np.mean(losses[-3:]) < np.mean(losses[:3]) - 0.3
    assert result["trainable_params"] < result["params"] / 5
    save(result["model"], tmp_path / "adapter")
    assert sorted(p.name for p in (tmp_path / "adapter").iterdir() if p.name != "README.md") == [
        "adapter_config.json",
        "adapter_model.safetensors",
    ]
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert config["r"] == 8 and config["lora_alpha"] == 16

"""Our decoder against transformers on the same weights: fp32 logits within 1e-4, windows included."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from clawdbot.services.inference.block_manager import BlockManager
from clawdbot.services.inference.config import load_config
from clawdbot.services.inference.model.decoder import kv_groups
from clawdbot.services.inference.model.loader import load_model
from clawdbot.services.inference.model_runner import ModelRunner
from clawdbot.services.inference.scheduler import Batch
from clawdbot.services.inference.sequence import SamplingParams, Sequence
from clawdbot.services.inference.testing import tiny_model
from clawdbot.shared.errors import InvalidArgument

TOL = 1e-4


def prefill_logits(folder: Path, prompt: list[int], chunks: list[int], block_size: int = 4) -> torch.Tensor:
    """Logits of every prompt position from our engine's runner, prefilled in the given chunks."""
    model, config = load_model(folder)
    blocks = BlockManager(128, block_size, kv_groups(config))
    runner = ModelRunner(model, config, 128, block_size, torch.device("cpu"), torch.float32)
    seq = Sequence("s", list(prompt), SamplingParams(temperature=0))
    blocks.admit(seq)
    out = []
    for n in chunks:
        assert blocks.reserve(seq, n)
        input_ids, meta, rope_lens = runner.prepare(Batch([seq], [n]), blocks)
        out.append(runner.forward_step(input_ids, meta, rope_lens, torch.arange(n)))
        seq.num_computed += n
    return torch.cat(out)


def prompt_of(length: int, seed: int = 0) -> list[int]:
    return torch.randint(3, 512, (length,), generator=torch.Generator().manual_seed(seed)).tolist()


@pytest.mark.parametrize("family", ["llama", "mistral", "qwen2"])
def test_prefill_logits_match_transformers(family: str, tmp_path: Path) -> None:
    hf = tiny_model(family, tmp_path, seed=3)
    prompt = prompt_of(40)  # longer than the window of 16
    with torch.no_grad():
        ref = hf(torch.tensor([prompt])).logits[0]
    whole = prefill_logits(tmp_path, prompt, [40])
    chunked = prefill_logits(tmp_path, prompt, [7, 16, 17])
    assert (whole - ref).abs().max().item() <= TOL
    assert (chunked - ref).abs().max().item() <= TOL


@pytest.mark.parametrize("family", ["mistral", "qwen2"])
def test_reference_really_applies_the_window(family: str, tmp_path: Path) -> None:
    """The window is smaller than the prompt and changes the logits: the parity above is not vacuous."""
    hf = tiny_model(family, tmp_path, seed=3)
    config = load_config(tmp_path)
    assert any(w == 16 for w in config.layer_windows)
    if family == "qwen2":
        assert 0 in config.layer_windows  # a mix of full and window layers
        assert config.qkv_bias
    no_window = tiny_model(family, tmp_path / "full", seed=3, sliding_window=None, use_sliding_window=False)
    prompt = prompt_of(40)
    with torch.no_grad():
        windowed = hf(torch.tensor([prompt])).logits[0]
        full = no_window(torch.tensor([prompt])).logits[0]
    assert (windowed[:16] - full[:16]).abs().max().item() <= TOL  # inside the window: identical
    assert (windowed[20:] - full[20:]).abs().max().item() > 1e-2  # beyond it: the window matters


@pytest.mark.parametrize(
    "rope",
    [
        {"rope_type": "linear", "factor": 2.0},
        {"rope_type": "dynamic", "factor": 2.0},
        {
            "rope_type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 16,
        },
    ],
    ids=lambda r: r["rope_type"],
)
def test_rope_scaling_variants_match_transformers(rope: dict[str, float | str], tmp_path: Path) -> None:
    # max_position_embeddings (32) below the prompt (48) so dynamic NTK scaling is active.
    hf = tiny_model(
        "llama", tmp_path, seed=4, rope_parameters={"rope_theta": 10000.0, **rope}, max_position_embeddings=32
    )
    prompt = prompt_of(48, seed=5)
    with torch.no_grad():
        ref = hf(torch.tensor([prompt])).logits[0]
    ours = prefill_logits(tmp_path, prompt, [len(prompt)])
    assert (ours - ref).abs().max().item() <= TOL


def test_tied_embeddings_and_llama_biases(tmp_path: Path) -> None:
    hf = tiny_model("llama", tmp_path, seed=6, tie_word_embeddings=True, attention_bias=True, mlp_bias=True)
    prompt = prompt_of(20, seed=6)
    with torch.no_grad():
        ref = hf(torch.tensor([prompt])).logits[0]
    assert (prefill_logits(tmp_path, prompt, [20]) - ref).abs().max().item() <= TOL


def test_sharded_checkpoint_loads(tmp_path: Path) -> None:
    hf = tiny_model("mistral", tmp_path / "one", seed=7)
    hf.save_pretrained(str(tmp_path / "sharded"), max_shard_size="100KB")
    assert (tmp_path / "sharded" / "model.safetensors.index.json").exists()
    prompt = prompt_of(24, seed=7)
    with torch.no_grad():
        ref = hf(torch.tensor([prompt])).logits[0]
    assert (prefill_logits(tmp_path / "sharded", prompt, [24]) - ref).abs().max().item() <= TOL


def _edit_config(folder: Path, **changes: object) -> None:
    path = folder / "config.json"
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"model_type": "gpt2"}, "config.json:model_type"),
        ({"hidden_act": "gelu"}, "config.json:hidden_act"),
        (
            {"rope_parameters": {"rope_type": "yarn", "rope_theta": 10000.0}},
            "config.json:rope_parameters.rope_type",
        ),
        ({"attn_logit_softcapping": 50.0}, "config.json:attn_logit_softcapping"),
        ({"quantization_config": {"quant_method": "gptq"}}, "config.json:quantization_config.quant_method"),
        ({"num_key_value_heads": 3}, "config.json:num_key_value_heads"),
    ],
)
def test_unsupported_model_folder_fields_are_named(
    changes: dict[str, object], field: str, tmp_path: Path
) -> None:
    tiny_model("mistral", tmp_path, seed=8)
    _edit_config(tmp_path, **changes)
    with pytest.raises(InvalidArgument) as err:
        load_model(tmp_path)
    assert err.value.field == field


def test_unknown_tensor_in_the_checkpoint_is_named(tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    tiny_model("llama", tmp_path, seed=9)
    tensors = load_file(str(tmp_path / "model.safetensors"))
    tensors["model.layers.0.self_attn.q_norm.weight"] = torch.ones(16)
    save_file(tensors, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(InvalidArgument) as err:
        load_model(tmp_path)
    assert err.value.field == "model.safetensors:model.layers.0.self_attn.q_norm.weight"


def test_missing_tensor_is_refused(tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    tiny_model("llama", tmp_path, seed=9)
    tensors = load_file(str(tmp_path / "model.safetensors"))
    del tensors["model.layers.1.mlp.up_proj.weight"]
    save_file(tensors, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(InvalidArgument, match="up_proj"):
        load_model(tmp_path)

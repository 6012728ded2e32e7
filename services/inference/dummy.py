"""Named model shapes with random weights, written as a Hugging Face folder for tests and benchmarks.

The weights go through the same loader as a real checkpoint, and `transformers` can load the same
folder, so the benchmark compares both engines on identical weights.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

SHAPES: dict[str, dict[str, Any]] = {
    "tiny": {
        "model_type": "mistral",
        "architectures": ["MistralForCausalLM"],
        "vocab_size": 512,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "sliding_window": 64,
        "max_position_embeddings": 1024,
    },
    "ref-336m": {
        "model_type": "mistral",
        "architectures": ["MistralForCausalLM"],
        "vocab_size": 32000,
        "hidden_size": 1024,
        "intermediate_size": 2816,
        "num_hidden_layers": 24,
        "num_attention_heads": 16,
        "num_key_value_heads": 4,
        "sliding_window": 4096,
        "max_position_embeddings": 8192,
    },
}

COMMON = {
    "hidden_act": "silu",
    "rms_norm_eps": 1e-5,
    "rope_theta": 10000.0,
    "tie_word_embeddings": False,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "dtype": "float32",
}


def hf_tensors(config: dict[str, Any], std: float, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Random weights under Hugging Face names for a Llama-family config."""
    hidden, ffn = config["hidden_size"], config["intermediate_size"]
    heads, kv_heads = config["num_attention_heads"], config["num_key_value_heads"]
    head_dim = hidden // heads

    def normal(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator) * std

    tensors = {
        "model.embed_tokens.weight": normal(config["vocab_size"], hidden),
        "model.norm.weight": torch.ones(hidden),
        "lm_head.weight": normal(config["vocab_size"], hidden),
    }
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}."
        tensors |= {
            p + "input_layernorm.weight": torch.ones(hidden),
            p + "post_attention_layernorm.weight": torch.ones(hidden),
            p + "self_attn.q_proj.weight": normal(heads * head_dim, hidden),
            p + "self_attn.k_proj.weight": normal(kv_heads * head_dim, hidden),
            p + "self_attn.v_proj.weight": normal(kv_heads * head_dim, hidden),
            p + "self_attn.o_proj.weight": normal(hidden, heads * head_dim),
            p + "mlp.gate_proj.weight": normal(ffn, hidden),
            p + "mlp.up_proj.weight": normal(ffn, hidden),
            p + "mlp.down_proj.weight": normal(hidden, ffn),
        }
    return tensors


def write_dummy(name: str, folder: str | Path, seed: int = 0, std: float = 0.02) -> Path:
    """Write the named shape with random weights to `folder` (config.json + model.safetensors)."""
    if name not in SHAPES:
        raise KeyError(f"unknown dummy shape {name!r} (known: {', '.join(SHAPES)})")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = {**COMMON, **SHAPES[name]}
    (folder / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    generator = torch.Generator().manual_seed(seed)
    save_file(
        hf_tensors(config, std, generator), str(folder / "model.safetensors"), metadata={"format": "pt"}
    )
    return folder


def word_names(count: int) -> list[str]:
    """`count` distinct lower-case words without a digit: "a", "b", ..., "z", "aa", "ab", ..."""
    names = []
    for i in range(count):
        name = ""
        i += 1
        while i:
            i, rest = divmod(i - 1, 26)
            name = chr(97 + rest) + name
        names.append(name)
    return names


def write_digit_tokenizer(folder: str | Path, digit_ids: Sequence[int] = range(15, 25)) -> Path:
    """A word-level tokenizer.json for a folder's vocabulary (config.json's `vocab_size`) in which
    `digit_ids` are the tokens "0".."9" and every other token is a word without digits: enough for
    the engine's digit table (grounded decoding) of a model with random weights. Ids 0-2 are
    <unk>, <s>, </s> (the dummy shapes' bos / eos)."""
    from tokenizers import Tokenizer, pre_tokenizers
    from tokenizers.models import WordLevel

    folder = Path(folder)
    vocab_size = json.loads((folder / "config.json").read_text(encoding="utf-8"))["vocab_size"]
    digits = dict(zip(digit_ids, "0123456789", strict=True))
    names = iter(word_names(vocab_size))
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for token in range(3, vocab_size):
        vocab[digits.get(token) or next(names)] = token
    tokenizer = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Digits(individual_digits=True)]
    )
    tokenizer.add_special_tokens(["<unk>", "<s>", "</s>"])
    tokenizer.save(str(folder / "tokenizer.json"))
    return folder

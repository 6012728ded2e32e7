"""The model's shape, read from a Hugging Face folder's `config.json` (+ `generation_config.json`).

Only what our decoder implements is accepted: a value we do not understand (another family, another
activation, a RoPE variant we lack, a foreign quantization) is an `InvalidArgument` naming the key,
because silently ignoring it would serve wrong logits.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clawdbot.shared.errors import InvalidArgument

FAMILIES = ("llama", "mistral", "qwen2")
ROPE_TYPES = ("default", "linear", "dynamic", "llama3")
# Keys that change the math of a forward pass and that our decoder does not implement.
UNSUPPORTED_KEYS = (
    "attn_logit_softcapping",
    "final_logit_softcapping",
    "query_pre_attn_scalar",
    "attention_chunk_size",
    "moe_intermediate_size",
    "num_experts",
    "num_local_experts",
)


@dataclass(frozen=True)
class RopeConfig:
    """RoPE base and the scaling variant, as HF's `rope_parameters` / `rope_scaling` describe it."""

    theta: float = 10000.0
    kind: str = "default"
    factor: float = 1.0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_position_embeddings: int = 8192


@dataclass(frozen=True)
class ModelConfig:
    """Everything the decoder, the KV cache and the request validation need about a model."""

    architecture: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    max_position_embeddings: int
    rms_norm_eps: float = 1e-6
    rope: RopeConfig = field(default_factory=RopeConfig)
    tie_word_embeddings: bool = False
    qkv_bias: bool = False
    o_bias: bool = False
    mlp_bias: bool = False
    layer_windows: tuple[int, ...] = ()  # per layer; 0 = full attention
    eos_token_ids: tuple[int, ...] = ()
    name: str = ""
    torch_dtype: str = "float32"
    quantization: dict[str, Any] | None = None  # our own pre-quantized format, when the folder holds one

    @property
    def context_length(self) -> int:
        return self.max_position_embeddings


def _field(name: str) -> str:
    return f"config.json:{name}"


def _int(data: dict[str, Any], key: str, default: int | None = None) -> int:
    value = data.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise InvalidArgument(f"must be a positive integer, got {value!r}", field=_field(key))
    return value


def _rope(data: dict[str, Any]) -> RopeConfig:
    params = data.get("rope_parameters") or data.get("rope_scaling") or {}
    if not isinstance(params, dict):
        raise InvalidArgument("must be a mapping", field=_field("rope_parameters"))
    theta = float(params.get("rope_theta", data.get("rope_theta", 10000.0)))
    kind = params.get("rope_type", params.get("type", "default"))
    key = "rope_parameters.rope_type" if "rope_parameters" in data else "rope_scaling.rope_type"
    if kind not in ROPE_TYPES:
        raise InvalidArgument(
            f"RoPE variant {kind!r} is not supported (supported: {ROPE_TYPES})", field=_field(key)
        )
    partial = params.get("partial_rotary_factor", data.get("partial_rotary_factor", 1.0))
    if partial != 1.0:
        raise InvalidArgument(
            "partial rotary embeddings are not supported", field=_field("partial_rotary_factor")
        )
    factor = float(params.get("factor", 1.0))
    if kind != "default" and factor <= 0:
        raise InvalidArgument("must be positive", field=_field(key.replace("rope_type", "factor")))
    return RopeConfig(
        theta=theta,
        kind=kind,
        factor=factor,
        low_freq_factor=float(params.get("low_freq_factor", 1.0)),
        high_freq_factor=float(params.get("high_freq_factor", 4.0)),
        original_max_position_embeddings=int(
            params.get("original_max_position_embeddings", data.get("max_position_embeddings", 8192))
        ),
    )


def _windows(data: dict[str, Any], family: str, num_layers: int) -> tuple[int, ...]:
    """Per-layer sliding window as each family defines it (0 = full attention)."""
    window = data.get("sliding_window")
    if family == "llama" or window in (None, 0):
        return (0,) * num_layers
    if not isinstance(window, int) or window < 0:
        raise InvalidArgument(
            f"must be a non-negative integer, got {window!r}", field=_field("sliding_window")
        )
    layer_types = data.get("layer_types")
    if layer_types is not None:
        if len(layer_types) != num_layers or set(layer_types) - {"full_attention", "sliding_attention"}:
            raise InvalidArgument(
                "must list 'full_attention' or 'sliding_attention' once per layer",
                field=_field("layer_types"),
            )
        return tuple(window if kind == "sliding_attention" else 0 for kind in layer_types)
    if family == "mistral":
        return (window,) * num_layers
    # Qwen2: the layers from `max_window_layers` on use the window, when `use_sliding_window` is set.
    if not data.get("use_sliding_window", False):
        return (0,) * num_layers
    first = int(data.get("max_window_layers", num_layers))
    return tuple(window if i >= first else 0 for i in range(num_layers))


def _eos_ids(folder: Path, data: dict[str, Any]) -> tuple[int, ...]:
    ids: list[int] = []
    sources = [data]
    gen = folder / "generation_config.json"
    if gen.exists():
        sources.insert(0, json.loads(gen.read_text(encoding="utf-8")))
    for source in sources:
        value = source.get("eos_token_id")
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, int) and item not in ids:
                ids.append(item)
    return tuple(ids)


def parse_config(data: dict[str, Any], folder: Path | None = None) -> ModelConfig:
    """A `ModelConfig` from the parsed `config.json` of `folder`."""
    family = data.get("model_type")
    if family not in FAMILIES:
        raise InvalidArgument(
            f"model family {family!r} is not supported (supported: {FAMILIES})", field=_field("model_type")
        )
    act = data.get("hidden_act", "silu")
    if act != "silu":
        raise InvalidArgument(f"activation {act!r} is not supported (only silu)", field=_field("hidden_act"))
    for key in UNSUPPORTED_KEYS:
        if data.get(key) not in (None, 0, False):
            raise InvalidArgument("this feature is not supported by our decoder", field=_field(key))
    quant = data.get("quantization_config")
    if quant is not None and quant.get("quant_method") != "clawdbot-int4":
        raise InvalidArgument(
            f"foreign quantization {quant.get('quant_method')!r}; quantize with `clawdbot quantize`",
            field=_field("quantization_config.quant_method"),
        )
    hidden = _int(data, "hidden_size")
    heads = _int(data, "num_attention_heads")
    kv_heads = _int(data, "num_key_value_heads", heads)
    if heads % kv_heads:
        raise InvalidArgument("must divide num_attention_heads", field=_field("num_key_value_heads"))
    head_dim = data.get("head_dim") or hidden // heads
    layers = _int(data, "num_hidden_layers")
    attention_bias = bool(data.get("attention_bias", False))
    folder = folder or Path(".")
    return ModelConfig(
        architecture=family,
        vocab_size=_int(data, "vocab_size"),
        hidden_size=hidden,
        intermediate_size=_int(data, "intermediate_size"),
        num_layers=layers,
        num_heads=heads,
        num_kv_heads=kv_heads,
        head_dim=int(head_dim),
        max_position_embeddings=_int(data, "max_position_embeddings", 4096),
        rms_norm_eps=float(data.get("rms_norm_eps", 1e-6)),
        rope=_rope(data),
        tie_word_embeddings=bool(data.get("tie_word_embeddings", False)),
        qkv_bias=family == "qwen2" or (family == "llama" and attention_bias),
        o_bias=family == "llama" and attention_bias,
        mlp_bias=family == "llama" and bool(data.get("mlp_bias", False)),
        layer_windows=_windows(data, family, layers),
        eos_token_ids=_eos_ids(folder, data),
        name=folder.resolve().name,
        torch_dtype=str(data.get("dtype") or data.get("torch_dtype") or "float32"),
        quantization=quant,
    )


def load_config(folder: str | Path) -> ModelConfig:
    """Read and check `folder/config.json`."""
    path = Path(folder) / "config.json"
    if not path.exists():
        raise InvalidArgument(f"{path} does not exist", field="model")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InvalidArgument(f"not valid JSON: {exc}", field="config.json") from exc
    return parse_config(data, Path(folder))

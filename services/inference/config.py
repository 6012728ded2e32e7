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

FAMILIES = ("llama", "mistral", "qwen2", "gemma3_text")
ROPE_TYPES = ("default", "linear", "dynamic", "llama3")
# Keys that change the math of a forward pass and that our decoder does not implement.
UNSUPPORTED_KEYS = (
    "attn_logit_softcapping",
    "use_bidirectional_attention",
    "attention_chunk_size",
    "moe_intermediate_size",
    "num_experts",
    "num_local_experts",
)
# Gemma-only keys: another family that sets them is a model our Llama-style layers would get wrong.
GEMMA_KEYS = ("final_logit_softcapping", "query_pre_attn_scalar")
# Gemma 3 text defaults (transformers' Gemma3TextConfig): published multimodal configs leave most of
# their `text_config` to them.
GEMMA3_DEFAULTS: dict[str, Any] = {
    "vocab_size": 262_208,
    "hidden_size": 2304,
    "intermediate_size": 9216,
    "num_hidden_layers": 26,
    "num_attention_heads": 8,
    "num_key_value_heads": 4,
    "head_dim": 256,
    "hidden_activation": "gelu_pytorch_tanh",
    "max_position_embeddings": 131_072,
    "rms_norm_eps": 1e-6,
    "rope_theta": 1_000_000.0,
    "rope_local_base_freq": 10_000.0,
    "query_pre_attn_scalar": 256,
    "sliding_window": 4096,
    "tie_word_embeddings": True,
    "eos_token_id": 1,
}


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
    hidden_act: str = "silu"  # the MLP's gate activation: silu, or gelu_pytorch_tanh (Gemma)
    query_pre_attn_scalar: float = 0.0  # attention scale is its -0.5 power (Gemma); 0 = head_dim
    final_logit_softcapping: float = 0.0  # logits = cap * tanh(logits / cap) (Gemma 2 style); 0 = none
    local_rope: RopeConfig | None = None  # RoPE of the sliding-window layers when it differs (Gemma 3)
    eos_token_ids: tuple[int, ...] = ()
    name: str = ""
    torch_dtype: str = "float32"
    quantization: dict[str, Any] | None = None  # our own pre-quantized format, when the folder holds one

    @property
    def context_length(self) -> int:
        return self.max_position_embeddings

    @property
    def attention_scale(self) -> float:
        return (self.query_pre_attn_scalar or self.head_dim) ** -0.5


def _field(name: str) -> str:
    return f"config.json:{name}"


def _int(data: dict[str, Any], key: str, default: int | None = None) -> int:
    value = data.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise InvalidArgument(f"must be a positive integer, got {value!r}", field=_field(key))
    return value


def _rope(data: dict[str, Any], params: Any = None, key: str = "", theta: float | None = None) -> RopeConfig:
    """`params` is the RoPE mapping (default: the config's `rope_parameters` or `rope_scaling`),
    `key` where it sits in config.json, `theta` the base when the mapping has none."""
    if params is None:
        params = data.get("rope_parameters") or data.get("rope_scaling") or {}
        key = "rope_parameters" if "rope_parameters" in data else "rope_scaling"
    if not isinstance(params, dict):
        raise InvalidArgument("must be a mapping", field=_field(key))
    theta = float(params.get("rope_theta", data.get("rope_theta", 10000.0) if theta is None else theta))
    kind = params.get("rope_type", params.get("type", "default"))
    key = f"{key}.rope_type"
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


def _gemma3_ropes(data: dict[str, Any]) -> tuple[RopeConfig, RopeConfig]:
    """(global, local) RoPE: `rope_parameters` per layer type (transformers 5), or the older
    `rope_theta` + `rope_scaling` for the global layers and `rope_local_base_freq` for the local ones."""
    params = data.get("rope_parameters")
    if isinstance(params, dict) and ("full_attention" in params or "sliding_attention" in params):
        full = params.get("full_attention") or {}
        local = params.get("sliding_attention") or {}
        return (
            _rope(data, full, "rope_parameters.full_attention", data["rope_theta"]),
            _rope(data, local, "rope_parameters.sliding_attention", data["rope_local_base_freq"]),
        )
    scaling = params or data.get("rope_scaling") or {}
    key = "rope_parameters" if params else "rope_scaling"
    return (
        _rope(data, scaling, key, data["rope_theta"]),
        _rope(data, {}, "rope_local_base_freq", data["rope_local_base_freq"]),
    )


def _gemma3_text(data: dict[str, Any]) -> dict[str, Any]:
    """The text model's config with Gemma 3's defaults under it; a multimodal `gemma3` config's
    `text_config` (we serve the text decoder; the loader skips the vision tower's tensors)."""
    if data.get("model_type") == "gemma3":
        text = data.get("text_config") or {}
        if not isinstance(text, dict) or text.get("model_type", "gemma3_text") != "gemma3_text":
            raise InvalidArgument("must be a gemma3_text config", field=_field("text_config"))
        # The outer config's EOS ids (the model's, [<eos>, <end_of_turn>]), quantization and dtype win.
        outer: dict[str, Any] = {
            k: data[k] for k in ("eos_token_id", "quantization_config", "dtype", "torch_dtype") if k in data
        }
        data = {**text, **outer, "model_type": "gemma3_text"}
    return GEMMA3_DEFAULTS | {k: v for k, v in data.items() if v is not None}


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
    if family == "gemma3_text":
        # Older configs: every `sliding_window_pattern`-th layer is global (five local, one global).
        pattern = int(data.get("sliding_window_pattern", data.get("_sliding_window_pattern", 6)))
        return tuple(window if (i + 1) % pattern else 0 for i in range(num_layers))
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
    gemma = family in ("gemma3", "gemma3_text")
    if gemma:
        data = _gemma3_text(data)
        family = "gemma3_text"
    if family not in FAMILIES:
        raise InvalidArgument(
            f"model family {family!r} is not supported (supported: {FAMILIES})", field=_field("model_type")
        )
    if gemma:
        act_key = "hidden_activation" if "hidden_activation" in data else "hidden_act"
        act, allowed = data.get(act_key), "gelu_pytorch_tanh"
    else:
        act_key, act, allowed = "hidden_act", data.get("hidden_act", "silu"), "silu"
    if act != allowed:
        raise InvalidArgument(f"activation {act!r} is not supported (only {allowed})", field=_field(act_key))
    for key in UNSUPPORTED_KEYS + (() if gemma else GEMMA_KEYS):
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
    rope, local_rope = _gemma3_ropes(data) if gemma else (_rope(data), None)
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
        rope=rope,
        tie_word_embeddings=bool(data.get("tie_word_embeddings", False)),
        qkv_bias=family == "qwen2" or (family in ("llama", "gemma3_text") and attention_bias),
        o_bias=family in ("llama", "gemma3_text") and attention_bias,
        mlp_bias=family == "llama" and bool(data.get("mlp_bias", False)),
        layer_windows=_windows(data, family, layers),
        hidden_act=act,
        query_pre_attn_scalar=float(data.get("query_pre_attn_scalar") or 0.0),
        final_logit_softcapping=float(data.get("final_logit_softcapping") or 0.0),
        local_rope=local_rope,
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

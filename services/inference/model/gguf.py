"""GGUF checkpoints (llama.cpp's one-file format) turned into the Hugging Face folder the mesh reads.

Why a conversion and not a second loader: the tokenizer service needs a `tokenizer.json`, the engine
reads `config.json` + safetensors, and `clawdbot quantize` and the tests all speak that folder. A GGUF
is converted once, into a cache keyed on the file's identity, and everything downstream sees a plain
HF folder: `hf_folder("model.gguf")` (or `load_model("model.gguf")`, which calls it).

What the conversion does, mirroring llama.cpp's `convert_hf_to_gguf.py` backwards and transformers'
own GGUF loading (`modeling_gguf_pytorch_utils`):

- tensors: dequantized by gguf-py (`gguf.quants.dequantize`: F32, F16, BF16, Q8_0, Q4_K, Q6_K and the
  other ggml types) to fp32; names mapped back through gguf-py's own HF -> GGUF table
  (`get_tensor_name_map`); Gemma's norms were written as `w + 1` (Gemma3RMSNorm scales by 1 + w,
  llama.cpp's norm by w), so 1 is taken off again; Llama's q/k rows were permuted for llama.cpp's
  RoPE layout and are permuted back;
- config: from the `{arch}.*` metadata. What llama.cpp hard-codes for Gemma 3 instead of storing
  it, we hard-code the same way: the local RoPE base 10000 (unless `rope.freq_base_swa` says),
  five sliding layers to one global (unless `attention.sliding_window_pattern` says), and
  query_pre_attn_scalar = head_dim, hidden / heads for the 27B (62 layers) as llama.cpp computes
  its attention scale. The vocabulary is the embedding's rows (llama.cpp drops the padding rows);
- tokenizer: transformers builds it from the metadata (`AutoTokenizer.from_pretrained(dir,
  gguf_file=...)`) and saves `tokenizer.json` + `tokenizer_config.json` (chat template included).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file

from clawdbot.services.inference.model.cached_folder import build_once, cache_root, print_folder
from clawdbot.shared.errors import InvalidArgument

log = logging.getLogger("clawdbot.inference.gguf")

# GGUF architecture -> our family. Mistral files say "llama" (same tensors; no sliding window key).
ARCHS = {"gemma3": "gemma3_text", "llama": "llama", "qwen2": "qwen2"}
HF_CLASSES = {"gemma3_text": "Gemma3ForCausalLM", "llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM"}
# Bump when the conversion's output changes: cached folders of an older version are redone.
CONVERSION_VERSION = 1
SHARD_BYTES = 2 << 30
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _field(name: str) -> str:
    return f"gguf:{name}"


class GGUFFile:
    """A parsed GGUF: its metadata as Python values and its tensors, read on demand (memory-mapped)."""

    def __init__(self, path: str | Path) -> None:
        from gguf import GGUFReader

        self.path = Path(path)
        try:
            self.reader = GGUFReader(str(self.path))
        except (ValueError, OSError) as exc:
            raise InvalidArgument(f"not a readable GGUF file: {exc}", field="model") from exc
        self.fields = self.reader.fields
        self.tensors = {tensor.name: tensor for tensor in self.reader.tensors}
        self.arch = str(self.get("general.architecture", ""))

    def get(self, key: str, default: Any = None) -> Any:
        field = self.fields.get(key.format(arch=self.arch) if "{arch}" in key else key)
        return default if field is None else field.contents()

    def need(self, key: str) -> Any:
        value = self.get(key)
        if value is None:
            raise InvalidArgument(
                "required metadata key is missing", field=_field(key.format(arch=self.arch))
            )
        return value

    def tensor(self, name: str) -> np.ndarray:
        """fp32 values of a tensor, shaped [rows, columns] as HF stores it (ggml lists dims reversed)."""
        from gguf.quants import dequantize

        tensor = self.tensors[name]
        try:
            values = dequantize(tensor.data, tensor.tensor_type)
        except NotImplementedError as exc:
            raise InvalidArgument(
                f"ggml type {tensor.tensor_type.name} cannot be dequantized by gguf-py", field=_field(name)
            ) from exc
        shape = tuple(int(d) for d in reversed(tensor.shape.tolist()))
        return np.asarray(values, dtype=np.float32).reshape(shape)


def _decimal(value: float) -> float:
    """A float32 metadata value as the decimal it was written from (1e-6, not 9.99999997e-07)."""
    return float(f"{float(value):.7g}")


def _layer_types(gguf: GGUFFile, layers: int, window: int) -> list[str]:
    """llama.cpp's sliding-window layers: the `sliding_window_pattern` key (an int n: every n-th
    layer global; or one bool per layer, true = sliding), else Gemma 3's hard-coded 6."""
    if not window:
        return ["full_attention"] * layers
    pattern = gguf.get("{arch}.attention.sliding_window_pattern", 6)
    if isinstance(pattern, list):
        if len(pattern) != layers:
            raise InvalidArgument(
                "must have one entry per layer", field=_field(f"{gguf.arch}.attention.sliding_window_pattern")
            )
        sliding = [bool(p) for p in pattern]
    else:
        n = int(pattern)
        sliding = [n == 0 or i % n < n - 1 for i in range(layers)]
    return ["sliding_attention" if s else "full_attention" for s in sliding]


def _rope_scaling(gguf: GGUFFile) -> dict[str, Any]:
    kind = gguf.get("{arch}.rope.scaling.type", "none")
    factor = gguf.get("{arch}.rope.scaling.factor") or gguf.get("{arch}.rope.scale_linear")
    if kind == "none" and factor not in (None, 1.0):
        kind = "linear"  # older files: only `rope.scale_linear`
    if kind == "none":
        return {"rope_type": "default"}
    # yarn / longrope go through as named: the config parser refuses what our RoPE lacks, by name.
    return {"rope_type": kind, "factor": _decimal(factor or 1.0)}


def _eos_ids(gguf: GGUFFile, tokens: list[str] | None) -> list[int]:
    """EOS, and the end-of-turn token, which llama.cpp treats as end of generation too."""
    ids: list[int] = []
    for key in ("tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"):
        value = gguf.get(key)
        if value is not None and int(value) not in ids:
            ids.append(int(value))
    if gguf.arch == "gemma3" and tokens is not None and "<end_of_turn>" in tokens:
        end = tokens.index("<end_of_turn>")
        if end not in ids:
            ids.append(end)
    return ids


def gguf_config(gguf: GGUFFile) -> dict[str, Any]:
    """The HF `config.json` of the GGUF's model (transformers can load it too)."""
    family = ARCHS.get(gguf.arch)
    if family is None:
        raise InvalidArgument(
            f"GGUF architecture {gguf.arch!r} is not supported (supported: {tuple(ARCHS)})",
            field=_field("general.architecture"),
        )
    if "rope_freqs.weight" in gguf.tensors:
        # Llama 3.1's per-dimension RoPE factors, stored precomputed without the parameters we need.
        raise InvalidArgument(
            "precomputed RoPE frequency factors are not supported", field=_field("rope_freqs.weight")
        )
    if "token_embd.weight" not in gguf.tensors:
        raise InvalidArgument("the embedding tensor is missing", field=_field("token_embd.weight"))
    hidden = int(gguf.need("{arch}.embedding_length"))
    heads = int(gguf.need("{arch}.attention.head_count"))
    layers = int(gguf.need("{arch}.block_count"))
    head_dim = int(gguf.get("{arch}.attention.key_length") or hidden // heads)
    tokens = gguf.get("tokenizer.ggml.tokens")
    eos = _eos_ids(gguf, tokens)
    config: dict[str, Any] = {
        "architectures": [HF_CLASSES[family]],
        "model_type": family,
        "vocab_size": int(gguf.tensors["token_embd.weight"].shape[1]),
        "hidden_size": hidden,
        "intermediate_size": int(gguf.need("{arch}.feed_forward_length")),
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": int(gguf.get("{arch}.attention.head_count_kv") or heads),
        "head_dim": head_dim,
        "max_position_embeddings": int(gguf.need("{arch}.context_length")),
        "rms_norm_eps": _decimal(gguf.get("{arch}.attention.layer_norm_rms_epsilon", 1e-6)),
        "tie_word_embeddings": "output.weight" not in gguf.tensors,
        "bos_token_id": gguf.get("tokenizer.ggml.bos_token_id"),
        "eos_token_id": eos[0] if len(eos) == 1 else (eos or None),
        "pad_token_id": gguf.get("tokenizer.ggml.padding_token_id"),
    }
    theta = _decimal(gguf.get("{arch}.rope.freq_base", 10000.0))
    scaling = _rope_scaling(gguf)
    if family == "gemma3_text":
        window = int(gguf.get("{arch}.attention.sliding_window") or 0)
        config |= {
            "hidden_activation": "gelu_pytorch_tanh",
            "query_pre_attn_scalar": hidden // heads if layers == 62 else head_dim,
            "sliding_window": window or None,
            "layer_types": _layer_types(gguf, layers, window),
            "rope_parameters": {
                "full_attention": scaling | {"rope_theta": theta},
                "sliding_attention": {
                    "rope_type": "default",
                    "rope_theta": _decimal(gguf.get("{arch}.rope.freq_base_swa", 10000.0)),
                },
            },
            "final_logit_softcapping": gguf.get("{arch}.final_logit_softcapping"),
            "attn_logit_softcapping": gguf.get("{arch}.attn_logit_softcapping"),
        }
    else:
        config |= {"hidden_act": "silu", "rope_theta": theta}
        if scaling["rope_type"] != "default":
            config["rope_scaling"] = scaling
        if family == "qwen2":
            config["use_sliding_window"] = False
    return config


def _hf_names(config: dict[str, Any]) -> list[str]:
    """The HF tensor names (without .weight / .bias) a model of this config has."""
    per_layer = [
        "input_layernorm",
        "post_attention_layernorm",
        "self_attn.q_proj",
        "self_attn.k_proj",
        "self_attn.v_proj",
        "self_attn.o_proj",
        "mlp.gate_proj",
        "mlp.up_proj",
        "mlp.down_proj",
    ]
    if config["model_type"] == "gemma3_text":
        per_layer += [
            "pre_feedforward_layernorm",
            "post_feedforward_layernorm",
            "self_attn.q_norm",
            "self_attn.k_norm",
        ]
    names = ["model.embed_tokens", "model.norm", "lm_head"]
    for i in range(config["num_hidden_layers"]):
        names += [f"model.layers.{i}.{name}" for name in per_layer]
    return names


def tensor_names(gguf: GGUFFile, config: dict[str, Any]) -> dict[str, str]:
    """GGUF tensor name -> HF name, from gguf-py's HF -> GGUF table (the one llama.cpp converts with)."""
    from gguf import MODEL_ARCH_NAMES, get_tensor_name_map

    arch = next(key for key, name in MODEL_ARCH_NAMES.items() if name == gguf.arch)
    table = get_tensor_name_map(arch, config["num_hidden_layers"])
    mapping: dict[str, str] = {}
    for hf in _hf_names(config):
        name = table.get_name(hf)
        if name is not None:
            for suffix in (".weight", ".bias"):
                mapping[name + suffix] = hf + suffix
    return mapping


def _unpermute(weights: np.ndarray, heads: int) -> np.ndarray:
    """Undo llama.cpp's q/k row permutation for Llama (its RoPE pairs adjacent dims, HF's halves)."""
    dim = weights.shape[0] // heads // 2
    return weights.reshape(heads, dim, 2, *weights.shape[1:]).swapaxes(2, 1).reshape(weights.shape)


def gguf_tensors(gguf: GGUFFile, config: dict[str, Any]) -> Iterator[tuple[str, np.ndarray]]:
    """(HF name, fp32 values) for every tensor of the file; an unknown tensor is an error naming it."""
    mapping = tensor_names(gguf, config)
    family = config["model_type"]
    for name in gguf.tensors:
        hf = mapping.get(name)
        if hf is None:
            raise InvalidArgument("unknown tensor: not part of a supported decoder", field=_field(name))
        values = gguf.tensor(name)
        if family == "gemma3_text" and name.endswith("norm.weight"):
            values = values - np.float32(1.0)  # stored as 1 + w
        elif family == "llama" and name.endswith(("attn_q.weight", "attn_q.bias")):
            values = _unpermute(values, config["num_attention_heads"])
        elif family == "llama" and name.endswith(("attn_k.weight", "attn_k.bias")):
            values = _unpermute(values, config["num_key_value_heads"])
        yield hf, values


def _write_tokenizer(gguf: GGUFFile, dst: Path) -> bool:
    """tokenizer.json and friends from the GGUF's metadata (transformers builds it); False if it has none."""
    if gguf.get("tokenizer.ggml.model") is None:
        log.warning(
            "the GGUF has no tokenizer metadata; the folder has no tokenizer", extra={"gguf": str(gguf.path)}
        )
        return False
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gguf.path.parent), gguf_file=gguf.path.name)
    tokenizer.save_pretrained(str(dst))
    return True


def convert_gguf(path: str | Path, dst: str | Path, dtype: str = "float32") -> Path:
    """Write `dst` as an HF folder: config.json, generation_config.json, safetensors (sharded past
    2 GiB), tokenizer files. `dtype` of the stored weights: float32 keeps the dequantized values
    exactly; bfloat16 halves the disk (the loader casts to the serving dtype either way)."""
    if dtype not in DTYPES:
        raise InvalidArgument(f"unknown dtype {dtype!r} (known: {', '.join(DTYPES)})", field="dtype")
    gguf = GGUFFile(path)
    config = gguf_config(gguf) | {"dtype": dtype}
    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name, values in gguf_tensors(gguf, config):
        if not values.flags.writeable:  # F32/F16 tensors come straight from the memory map
            values = values.copy()
        tensor = torch.from_numpy(values).to(DTYPES[dtype]).contiguous()
        if size and size + tensor.nbytes > SHARD_BYTES:
            shards.append({})
            size = 0
        shards[-1][name] = tensor
        size += tensor.nbytes
    if len(shards) == 1:
        save_file(shards[0], str(dst / "model.safetensors"), metadata={"format": "pt"})
    else:
        weight_map: dict[str, str] = {}
        for i, shard in enumerate(shards):
            file = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
            save_file(shard, str(dst / file), metadata={"format": "pt"})
            weight_map |= dict.fromkeys(shard, file)
        index = {"metadata": {}, "weight_map": weight_map}
        (dst / "model.safetensors.index.json").write_text(json.dumps(index, indent=2), encoding="utf-8")
    (dst / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    generation = {
        k: config[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id") if config[k] is not None
    }
    (dst / "generation_config.json").write_text(json.dumps(generation, indent=2), encoding="utf-8")
    _write_tokenizer(gguf, dst)
    return dst


def default_cache_dir() -> Path:
    return cache_root("gguf")


def hf_folder(path: str | Path, cache_dir: str | Path | None = None, dtype: str = "float32") -> Path:
    """The HF folder of a GGUF file, converted on first use and cached (keyed on the file's path,
    size and modification time, the dtype and the conversion version). Safe against concurrent
    starts: each converts into a private folder and renames it into place; the first one wins."""
    path = Path(path).resolve()
    if not path.is_file():
        raise InvalidArgument(f"{path} does not exist", field="model")
    stat = path.stat()
    identity = f"{path}|{stat.st_size}|{stat.st_mtime_ns}|{dtype}|{CONVERSION_VERSION}"
    key = hashlib.sha256(identity.encode()).hexdigest()[:16]
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = root / key / path.stem  # the folder's name is the model's name in ModelInfo

    def convert(staging: Path) -> None:
        log.info("converting GGUF to an HF folder", extra={"gguf": str(path), "folder": str(target)})
        convert_gguf(path, staging, dtype)

    return build_once(target, convert)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m clawdbot.services.inference.model.gguf",
        description="Convert a GGUF file into an HF folder (cached) and print the folder's path.",
    )
    parser.add_argument("gguf", type=Path)
    parser.add_argument("--out", type=Path, help="write here instead of the cache")
    parser.add_argument("--cache-dir", type=Path)
    parser.add_argument("--dtype", default="float32", choices=tuple(DTYPES))
    args = parser.parse_args(argv)
    if args.out:
        return print_folder(lambda: convert_gguf(args.gguf, args.out, args.dtype))
    return print_folder(lambda: hf_folder(args.gguf, args.cache_dir, args.dtype))


if __name__ == "__main__":
    sys.exit(main())

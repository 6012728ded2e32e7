"""Build our decoder from a local Hugging Face folder: `config.json` + safetensors (single or sharded).

Hugging Face names map onto our fused modules (q/k/v -> qkv_proj, gate/up -> gate_up_proj). A tensor
we do not know, a missing one or a wrong shape is an `InvalidArgument` naming it: loading half a
model and serving noise is worse than refusing. Folders written by `clawdbot quantize` carry our own
names and INT4 buffers and load without re-quantizing.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors import safe_open

from clawdbot.services.inference.config import ModelConfig, load_config
from clawdbot.services.inference.model.decoder import Decoder
from clawdbot.services.inference.quant import DEFAULT_GROUP_SIZE, prepare_kernels, quantize_model
from clawdbot.shared.errors import InvalidArgument

_LAYER = re.compile(r"^model\.layers\.(\d+)\.(.+)$")
_FUSED = {
    "self_attn.q_proj": ("self_attn.qkv_proj", 0),
    "self_attn.k_proj": ("self_attn.qkv_proj", 1),
    "self_attn.v_proj": ("self_attn.qkv_proj", 2),
    "mlp.gate_proj": ("mlp.gate_up_proj", 0),
    "mlp.up_proj": ("mlp.gate_up_proj", 1),
}
_IGNORED = re.compile(r"rotary_emb\.inv_freq$")
# A multimodal Gemma 3 checkpoint (Gemma3ForConditionalGeneration): the text decoder sits under
# `model.language_model.` (transformers 5) or `language_model.model.` (4.x); its vision tower and
# projector are not ours to serve.
_MULTIMODAL = (
    ("model.language_model.", "model."),
    ("language_model.model.", "model."),
    ("language_model.lm_head.", "lm_head."),
)
_VISION = re.compile(r"^(model\.)?(vision_tower|multi_modal_projector)\.")

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def safetensors_files(folder: Path) -> list[Path]:
    """The weight files of a folder: the sharded index's files, or the single `model.safetensors`."""
    index = folder / "model.safetensors.index.json"
    if index.exists():
        weight_map = json.loads(index.read_text(encoding="utf-8")).get("weight_map", {})
        return [folder / name for name in sorted(set(weight_map.values()))]
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise InvalidArgument(f"no *.safetensors in {folder}", field="model")
    return files


def iter_tensors(folder: Path) -> Iterator[tuple[str, str, torch.Tensor]]:
    """(file name, tensor name, tensor) for every tensor of the folder."""
    for path in safetensors_files(folder):
        if not path.exists():
            raise InvalidArgument(f"shard {path.name} named by the index is missing", field="model")
        with safe_open(str(path), framework="pt") as handle:
            for name in handle.keys():  # noqa: SIM118 - safe_open is not a mapping
                yield path.name, name, handle.get_tensor(name)


def _slices(config: ModelConfig, fused: str) -> list[int]:
    if fused == "self_attn.qkv_proj":
        q = config.num_heads * config.head_dim
        kv = config.num_kv_heads * config.head_dim
        return [0, q, q + kv, q + 2 * kv]
    return [0, config.intermediate_size, 2 * config.intermediate_size]


def _hf_target(config: ModelConfig, name: str) -> tuple[str, int | None]:
    """Our parameter name for an HF tensor name, and the shard index inside a fused one."""
    if config.architecture == "gemma3_text":
        for prefix, replacement in _MULTIMODAL:
            if name.startswith(prefix):
                name = replacement + name.removeprefix(prefix)
    if name == "model.embed_tokens.weight":
        return "embed_tokens.weight", None
    if name == "model.norm.weight":
        return "norm.weight", None
    if name == "lm_head.weight":
        return "lm_head.weight", None
    match = _LAYER.match(name)
    if match:
        index, rest = match.groups()
        module, _, kind = rest.rpartition(".")
        if module in _FUSED:
            fused, part = _FUSED[module]
            return f"layers.{index}.{fused}.{kind}", part
        return f"layers.{index}.{rest}", None
    return name, None


def _load_hf(model: Decoder, config: ModelConfig, folder: Path) -> None:
    params = dict(model.named_parameters(remove_duplicate=False))
    seen: set[str] = set()
    for file, name, tensor in iter_tensors(folder):
        if _IGNORED.search(name) or (config.architecture == "gemma3_text" and _VISION.match(name)):
            continue
        target, part = _hf_target(config, name)
        if target not in params:
            raise InvalidArgument("unknown tensor: not part of a supported decoder", field=f"{file}:{name}")
        param = params[target]
        view = param.data
        if part is not None:
            bounds = _slices(config, "self_attn.qkv_proj" if ".qkv_proj." in target else "mlp.gate_up_proj")
            view = param.data[bounds[part] : bounds[part + 1]]
        if tuple(view.shape) != tuple(tensor.shape):
            raise InvalidArgument(
                f"shape {tuple(tensor.shape)} does not match the config's {tuple(view.shape)}",
                field=f"{file}:{name}",
            )
        view.copy_(tensor)
        seen.add(f"{target}#{part}")
    expected = set()
    for target in params:
        if target == "lm_head.weight" and config.tie_word_embeddings:
            continue
        if ".qkv_proj." in target:
            expected |= {f"{target}#{i}" for i in range(3)}
        elif ".gate_up_proj." in target:
            expected |= {f"{target}#{i}" for i in range(2)}
        else:
            expected.add(f"{target}#None")
    missing = sorted(expected - seen)
    if missing:
        raise InvalidArgument(
            f"{len(missing)} tensor(s) missing, e.g. {missing[0].split('#')[0]}", field="model"
        )


def _load_quantized(model: Decoder, folder: Path) -> None:
    state = {name: tensor for _, name, tensor in iter_tensors(folder)}
    own = model.state_dict()
    for name, tensor in state.items():
        if name not in own:
            raise InvalidArgument(
                "unknown tensor in a quantized checkpoint", field=f"model.safetensors:{name}"
            )
        if tuple(own[name].shape) != tuple(tensor.shape):
            raise InvalidArgument(
                f"shape {tuple(tensor.shape)} != expected {tuple(own[name].shape)}",
                field=f"model.safetensors:{name}",
            )
    missing = [
        n for n in own if n not in state and not (n == "lm_head.weight" and model.config.tie_word_embeddings)
    ]
    if missing:
        raise InvalidArgument(f"{len(missing)} tensor(s) missing, e.g. {missing[0]}", field="model")
    model.load_state_dict(state, strict=False)


def decoder_class(config: ModelConfig) -> type[Decoder]:
    """Our decoder for the config's family: the Llama-style one, or Gemma 3's subclass."""
    if config.architecture == "gemma3_text":
        from clawdbot.services.inference.model.gemma import GemmaDecoder

        return GemmaDecoder
    return Decoder


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """`auto` is bf16 on CUDA and fp32 on the CPU (where fp32 matmuls are the fast ones)."""
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if name not in DTYPES:
        raise InvalidArgument(f"unknown dtype {name!r} (known: auto, {', '.join(DTYPES)})", field="dtype")
    return DTYPES[name]


def load_model(
    folder: str | Path,
    *,
    device: str | torch.device = "cpu",
    dtype: str = "auto",
    quantization: str = "none",
    lm_head: str = "16bit",
    group_size: int = DEFAULT_GROUP_SIZE,
) -> tuple[Decoder, ModelConfig]:
    """Our decoder with the folder's weights, on `device`, quantized as asked (or as saved).

    `folder` may also be a `.gguf` file: it is converted once into a cached HF folder (model/gguf.py);
    or a recipe of a base and a LoRA adapter, built once into a cached folder (model/adapter.py).
    """
    folder = Path(folder)
    if folder.suffix == ".gguf" and folder.is_file():
        from clawdbot.services.inference.model.gguf import hf_folder

        folder = hf_folder(folder)
    elif (folder / "base.json").is_file():  # a base + LoRA recipe (model/adapter.py)
        from clawdbot.services.inference.model.adapter import served_folder

        folder = served_folder(folder)
    config = load_config(folder)
    torch_device = torch.device(device)
    torch_dtype = resolve_dtype(dtype, torch_device)
    if quantization not in ("none", "int4"):
        raise InvalidArgument(f"unknown quantization {quantization!r} (int4 or none)", field="quantization")
    # Built on the meta device and given uninitialised storage: random init of hundreds of
    # millions of weights that the checkpoint overwrites anyway cost seconds. Every tensor is then
    # loaded (missing ones are an error), and the RoPE table, which is computed, is rebuilt.
    with torch.device("meta"):
        model = decoder_class(config)(config)
    model.requires_grad_(False)
    saved = config.quantization
    if saved is not None:
        model.to(torch_dtype)
        quantize_model(
            model,
            int(saved.get("group_size", DEFAULT_GROUP_SIZE)),
            lm_head=bool(saved.get("lm_head", False)),
            scale_dtype=DTYPES[str(saved.get("scale_dtype", "float16"))],
            empty=True,
        )
    model.to_empty(device="cpu")
    model.build_rope()
    if saved is not None:
        _load_quantized(model, folder)
        if not saved.get("lm_head", False):
            model.tie_weights()
    else:
        model.tie_weights()
        _load_hf(model, config, folder)
        model.to(torch_dtype)
        if quantization == "int4":
            quantize_model(
                model, group_size, lm_head=lm_head == "int4", scale_dtype=scale_dtype_for(torch_dtype)
            )
    model.to(torch_device)
    model.eval()
    prepare_kernels(model, torch_dtype)
    return model, config


def scale_dtype_for(dtype: torch.dtype) -> torch.dtype:
    """bf16 scales beside bf16 activations, fp16 otherwise (more mantissa for the same 16 bits)."""
    return torch.bfloat16 if dtype == torch.bfloat16 else torch.float16

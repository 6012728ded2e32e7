"""A tiny random-weight chat model for the end-to-end tests, built the way the design says tests
build models: a `transformers` config + `save_pretrained` into a temp folder, with the bundled
tokenizer's files beside it. Its text is gibberish; the mechanics of the mesh are what is tested."""

from __future__ import annotations

import json
import shutil
from pathlib import Path


def build_tiny_model(folder: Path, seed: int = 0) -> Path:
    import torch
    from transformers import MistralConfig, MistralForCausalLM

    from clawdbot.services.tokenizer.assets import DEFAULT_MODEL_DIR

    tokenizer_dir = Path(DEFAULT_MODEL_DIR)
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "special_tokens_map.json"):
        if (tokenizer_dir / name).is_file():
            shutil.copy(tokenizer_dir / name, folder / name)
    vocab = json.loads((tokenizer_dir / "tokenizer.json").read_text(encoding="utf-8"))
    added = {t["content"]: t["id"] for t in vocab.get("added_tokens", [])}
    vocab_size = max([*vocab["model"]["vocab"].values(), *added.values()]) + 1
    config = MistralConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        sliding_window=512,
        eos_token_id=added.get("<|im_end|>", 2),
        bos_token_id=None,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    MistralForCausalLM(config).save_pretrained(folder, safe_serialization=True)
    return folder

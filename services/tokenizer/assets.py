"""Where the bundled demo model lives (tokenizer now; weights when the demo-model issue lands).

It is package data under `clawdbot/models/`, so `pip install .` ships it and every service
finds it without a path.
"""

from __future__ import annotations

from pathlib import Path

import clawdbot

MODELS = Path(clawdbot.__file__).resolve().parent / "models"
DEFAULT_MODEL_DIR = MODELS / "shop-assistant"
# What `clawdbot up` serves when no --model is given: the Gemma 3 270M fine-tune, a base + adapter
# recipe built at first start (services/inference/model/adapter.py), when its adapter is present.
_SHOP_GEMMA = MODELS / "shop-gemma"
DEFAULT_SERVING_MODEL: Path | None = (
    _SHOP_GEMMA if (_SHOP_GEMMA / "adapter_model.safetensors").is_file() else None
)

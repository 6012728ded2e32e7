"""Where the bundled demo model lives (tokenizer now; weights when the demo-model issue lands).

It is package data under `clawdbot/models/`, so `pip install .` ships it and every service
finds it without a path.
"""

from __future__ import annotations

from pathlib import Path

import clawdbot

DEFAULT_MODEL_DIR = Path(clawdbot.__file__).resolve().parent / "models" / "shop-assistant"

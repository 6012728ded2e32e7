"""Settings of the tokenizer service (YAML section `tokenizer`, env CLAWDBOT_TOKENIZER_*)."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from clawdbot.services.tokenizer.assets import DEFAULT_MODEL_DIR
from clawdbot.shared.config import ServiceSettings


class TokenizerSettings(ServiceSettings):
    section: ClassVar[str] = "tokenizer"

    port: int = 50051
    model: Path = DEFAULT_MODEL_DIR
    max_batch: int = 1024  # texts or sequences per call
    max_chars: int = 4_000_000  # characters per call, all texts together

"""Settings of the plugin service process (the plugins themselves are configured in plugins.yaml)."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from clawdbot.examples import SHOP_PLUGINS_FILE
from clawdbot.shared.config import ServiceSettings

# The example shop's plugins, shipped with the repository; `clawdbot up` uses it by default.
EXAMPLE_PLUGINS_FILE = SHOP_PLUGINS_FILE


class PluginsSettings(ServiceSettings):
    section: ClassVar[str] = "plugins"

    port: int = 50053
    # plugins.yaml; None runs with no plugins (every turn passes through unchanged).
    plugins_file: Path | None = None

"""The example online shop (catalogue, orders, policies, FAQ, knowledge graph, plugins.yaml).

Installed as `clawdbot.examples` package data, so `clawdbot up` from a plain `pip install` has the
same default plugins as a source checkout.
"""

from pathlib import Path

SHOP_DIR = Path(__file__).resolve().parent / "shop"
SHOP_PLUGINS_FILE = SHOP_DIR / "plugins.yaml"

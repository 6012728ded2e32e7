"""The shop's order lookup, a Python tool for the `tool` kind: answers order-status questions
from the orders file, offline.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from clawdbot.services.plugins.builtin.tool import ToolContext


@lru_cache(maxsize=8)
def _orders(path: Path, mtime: float) -> dict[str, Any]:
    data = json.loads(path.read_text(encoding="utf-8"))
    return {"statuses": data.get("statuses", {}), "orders": {o["order_id"]: o for o in data["orders"]}}


def lookup_order(order_id: str, context: ToolContext) -> dict[str, Any]:
    """Status, items, shipping and tracking of one order, with the status in Chinese and English."""
    path = context.path(str(context.options.get("orders_file", "orders.json")))
    data = _orders(path, path.stat().st_mtime)
    order = data["orders"].get(order_id.strip().upper())
    if order is None:
        return {"found": False, "order_id": order_id, "message": "no order with this number"}
    labels = data["statuses"].get(order["status"], {})
    return {
        "found": True,
        **{k: v for k, v in order.items() if k != "contact_phone"},
        "status_zh": labels.get("zh", order["status"]),
        "status_en": labels.get("en", order["status"]),
    }

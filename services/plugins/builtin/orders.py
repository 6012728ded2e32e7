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
def _names(path: Path, mtime: float) -> dict[str, dict[str, str]]:
    """Product names by id and language from the catalogue, so answers can say what was bought."""
    data = json.loads(path.read_text(encoding="utf-8"))
    return {p["id"]: {"zh": p["name_zh"], "en": p["name_en"]} for p in data.get("products", [])}


def _items(order: dict[str, Any], names: dict[str, dict[str, str]], lang: str) -> str:
    parts = []
    for item in order.get("items", []):
        name = names.get(item["product_id"], {}).get(lang, item["product_id"])
        parts.append(f"{name} ×{item['quantity']}" if lang == "zh" else f"{item['quantity']} × {name}")
    return ("、" if lang == "zh" else ", ").join(parts)


@lru_cache(maxsize=8)
def _orders(path: Path, mtime: float) -> dict[str, Any]:
    data = json.loads(path.read_text(encoding="utf-8"))
    return {"statuses": data.get("statuses", {}), "orders": {o["order_id"]: o for o in data["orders"]}}


# Statuses whose expected delivery date is news to the customer ("paid" orders have one too:
# "when will it arrive?" is asked before an order ships as often as after).
EXPECTED = ("paid", "shipped")


def order_answer(order: dict[str, Any], lang: str) -> str:
    """What the shop tells a customer about an order: status, note, carrier, tracking, expected
    date, and what was bought for how much when the lookup knows the items' names."""
    if lang == "zh":
        text = f"您的订单{order['order_id']}当前状态：{order['status_zh']}。{order.get('note_zh') or ''}"
        if order.get("tracking_no"):
            text += f"承运商：{order['carrier']}，运单号：{order['tracking_no']}。"
        if order.get("estimated_delivery") and order["status"] in EXPECTED:
            text += f"预计{order['estimated_delivery']}送达。"
        if order.get("delivered_at") and order["status"] == "delivered":
            text += f"签收时间：{order['delivered_at'][:10]}。"
        if order.get("items_zh"):
            text += f"商品：{order['items_zh']}，合计{order['total_cny']}元。"
        return text
    text = f"Your order {order['order_id']} is {order['status_en']}."
    if order.get("note_en"):
        text += f" {order['note_en']}"
    if order.get("tracking_no"):
        text += f" Carrier: {order['carrier']}, tracking number {order['tracking_no']}."
    if order.get("estimated_delivery") and order["status"] in EXPECTED:
        text += f" Expected delivery: {order['estimated_delivery']}."
    if order.get("delivered_at") and order["status"] == "delivered":
        text += f" Delivered on {order['delivered_at'][:10]}."
    if order.get("items_en"):
        text += f" Items: {order['items_en']}; total {order['total_cny']} CNY."
    return text


def not_found_answer(order_id: str, lang: str) -> str:
    if lang == "zh":
        return f"抱歉，没有查到订单{order_id}。请核对订单号（SO加11位数字）后再发给我。"
    return (
        f"Sorry, I couldn't find order {order_id}. "
        "Please check the number (SO followed by 11 digits) and send it again."
    )


def lookup_order(order_id: str, context: ToolContext) -> dict[str, Any]:
    """Status, items, shipping and tracking of one order, with the status in Chinese and English,
    and the answer a customer gets in each language (the extractive fallback) with its key facts."""
    path = context.path(str(context.options.get("orders_file", "orders.json")))
    data = _orders(path, path.stat().st_mtime)
    wanted = order_id.strip().upper()
    order = data["orders"].get(wanted)
    if order is None:
        return {
            "found": False,
            "order_id": order_id,
            "message": "no order with this number",
            "answer": {lang: not_found_answer(wanted, lang) for lang in ("zh", "en")},
            "key_facts": {"zh": ["没有查到"], "en": ["couldn't find"]},
        }
    labels = data["statuses"].get(order["status"], {})
    result = {
        "found": True,
        **{k: v for k, v in order.items() if k != "contact_phone"},
        "status_zh": labels.get("zh", order["status"]),
        "status_en": labels.get("en", order["status"]),
    }
    catalogue = context.options.get("catalogue_file")
    if catalogue:
        names_path = context.path(str(catalogue))
        names = _names(names_path, names_path.stat().st_mtime)
        for lang in ("zh", "en"):
            result[f"items_{lang}"] = _items(order, names, lang)
    tracking = [order["tracking_no"]] if order.get("tracking_no") else []
    result["answer"] = {lang: order_answer(result, lang) for lang in ("zh", "en")}
    # The note is a key fact too: a reply that names another warehouse or city is wrong.
    result["key_facts"] = {
        lang: [
            result[f"status_{lang}"],
            *tracking,
            *(
                [order["estimated_delivery"]]
                if order.get("estimated_delivery") and order["status"] in EXPECTED
                else []
            ),
            *([order[f"note_{lang}"]] if order.get(f"note_{lang}") else []),
        ]
        for lang in ("zh", "en")
    }
    return result

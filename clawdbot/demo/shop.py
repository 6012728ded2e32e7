"""The example shop's data, typed: orders, products, FAQ. Replies in the corpus are built from it."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clawdbot.examples import SHOP_DIR as DEFAULT_SHOP_DIR


@dataclass(frozen=True)
class Order:
    order_id: str
    status: str
    status_zh: str
    status_en: str
    note_zh: str
    note_en: str
    carrier: str
    tracking_no: str
    estimated_delivery: str
    items: tuple[str, ...]


@dataclass(frozen=True)
class Product:
    id: str
    name_zh: str
    name_en: str
    aliases: tuple[str, ...]
    price_cny: int
    stock: int
    colours: tuple[tuple[str, str], ...]
    warranty_months: int
    return_days: int
    description_zh: str
    description_en: str


@dataclass(frozen=True)
class Faq:
    id: str
    topic: str
    q_zh: str
    a_zh: str
    q_en: str
    a_en: str


@dataclass
class Shop:
    name_zh: str
    name_en: str
    hotline: str
    orders: list[Order] = field(default_factory=list)
    products: list[Product] = field(default_factory=list)
    faqs: list[Faq] = field(default_factory=list)

    def order(self, order_id: str) -> Order | None:
        return next((o for o in self.orders if o.order_id == order_id), None)


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def load_shop(folder: Path = DEFAULT_SHOP_DIR) -> Shop:
    catalogue = _read_json(folder / "catalogue.json")
    orders = _read_json(folder / "orders.json")
    labels: dict[str, dict[str, str]] = orders.get("statuses", {})
    names = {p["id"]: (p["name_zh"], p["name_en"]) for p in catalogue["products"]}
    shop = Shop(
        name_zh=catalogue["shop"]["name_zh"],
        name_en=catalogue["shop"]["name_en"],
        hotline=catalogue["shop"].get("hotline", ""),
    )
    for o in orders["orders"]:
        label = labels.get(o["status"], {})
        shop.orders.append(
            Order(
                order_id=o["order_id"],
                status=o["status"],
                status_zh=label.get("zh", o["status"]),
                status_en=label.get("en", o["status"]),
                note_zh=o.get("note_zh") or "",
                note_en=o.get("note_en") or "",
                carrier=o.get("carrier") or "",
                tracking_no=o.get("tracking_no") or "",
                estimated_delivery=o.get("estimated_delivery") or "",
                items=tuple(
                    names.get(i["product_id"], (i["product_id"], i["product_id"]))[0]
                    for i in o.get("items", [])
                ),
            )
        )
    for p in catalogue["products"]:
        shop.products.append(
            Product(
                id=p["id"],
                name_zh=p["name_zh"],
                name_en=p["name_en"],
                aliases=tuple(p.get("aliases", [])),
                price_cny=int(p["price_cny"]),
                stock=int(p.get("stock", 0)),
                colours=tuple((c[0], c[1]) for c in p.get("colours", [])),
                warranty_months=int(p.get("warranty_months", 12)),
                return_days=int(p.get("return_days", 7)),
                description_zh=p.get("description_zh", ""),
                description_en=p.get("description_en", ""),
            )
        )
    for line in (folder / "faq.jsonl").read_text(encoding="utf-8").splitlines():
        if line.strip():
            f = json.loads(line)
            shop.faqs.append(
                Faq(f["id"], f.get("topic", ""), f["zh"]["q"], f["zh"]["a"], f["en"]["q"], f["en"]["a"])
            )
    return shop

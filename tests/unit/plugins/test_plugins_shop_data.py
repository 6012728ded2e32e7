"""The shop's data files agree with each other (ids, prices, totals) and stay small."""

from __future__ import annotations

import csv
import json

from .conftest import SHOP


def load() -> tuple[dict, dict]:
    catalogue = json.loads((SHOP / "catalogue.json").read_text(encoding="utf-8"))
    orders = json.loads((SHOP / "orders.json").read_text(encoding="utf-8"))
    return catalogue, orders


def test_orders_reference_catalogue_products_at_catalogue_prices() -> None:
    catalogue, orders = load()
    prices = {p["id"]: p["price_cny"] for p in catalogue["products"]}
    for order in orders["orders"]:
        assert order["status"] in orders["statuses"], order["order_id"]
        assert order["order_id"].startswith("SO2026") and len(order["order_id"]) == 13
        for item in order["items"]:
            assert prices[item["product_id"]] == item["unit_price_cny"], order["order_id"]
        subtotal = sum(i["unit_price_cny"] * i["quantity"] for i in order["items"])
        assert order["total_cny"] == subtotal + order["shipping_fee_cny"]
        assert order["shipping_fee_cny"] == (0 if subtotal >= 99 else 10), order["order_id"]


def test_every_product_has_both_languages_and_known_brand_and_category() -> None:
    catalogue, _ = load()
    brands = {b["id"] for b in catalogue["brands"]}
    categories = {c["id"] for c in catalogue["categories"]}
    for product in catalogue["products"]:
        assert product["brand"] in brands and product["category"] in categories
        assert product["name_zh"] and product["name_en"].isascii()
        assert product["description_zh"] and product["description_en"]


def test_the_knowledge_graph_matches_the_catalogue() -> None:
    catalogue, _ = load()
    with (SHOP / "kg_triples.csv").open(encoding="utf-8") as handle:
        triples = {(r["subject"], r["predicate"], r["object"]) for r in csv.DictReader(handle)}
    for product in catalogue["products"]:
        assert (product["id"], "price_cny", str(product["price_cny"])) in triples
        assert (product["id"], "brand", product["brand"]) in triples


def test_faq_entries_are_bilingual_and_the_data_stays_small() -> None:
    for line in (SHOP / "faq.jsonl").read_text(encoding="utf-8").splitlines():
        entry = json.loads(line)
        assert entry["zh"]["q"] and entry["zh"]["a"] and entry["en"]["q"].isascii()
    assert sum(f.stat().st_size for f in SHOP.iterdir() if f.is_file()) < 300_000

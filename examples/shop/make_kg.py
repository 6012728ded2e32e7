"""Regenerate kg_triples.csv from catalogue.json and the policy summaries below.

The knowledge graph repeats facts that live in catalogue.json and policies.md; generating it
keeps the three files consistent. Run: python examples/shop/make_kg.py
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

HERE = Path(__file__).resolve().parent

POLICIES = [
    (
        "POL-RETURNS",
        "退货政策",
        "return policy",
        ["退货", "无理由退货", "return", "returns"],
        "签收7天内无理由退货（小爪家居15天）；入耳式耳机和拆封的头戴耳机仅质量问题可退。",
        "No-reason returns within 7 days of delivery (15 for ClawHome); earbuds and unsealed headphones only if defective.",
        "policies.md#returns",
    ),
    (
        "POL-REFUNDS",
        "退款政策",
        "refund policy",
        ["退款", "退差价", "refund", "refunds"],
        "验货后1-3个工作日原路退款；未发货订单取消立即退款；7天价格保护。",
        "Refund to the original payment method 1-3 business days after the return is checked; cancelled unshipped orders at once; 7-day price protection.",
        "policies.md#refunds",
    ),
    (
        "POL-SHIPPING",
        "配送政策",
        "shipping policy",
        ["运费", "包邮", "发货", "快递", "shipping", "delivery"],
        "满99元包邮，否则运费10元；16:00前付款当日发货；一般1-4天送达，偏远地区3-7天。",
        "Free shipping from 99 CNY, else 10 CNY; paid before 16:00 ships the same day; 1-4 days, remote regions 3-7 days.",
        "policies.md#shipping",
    ),
    (
        "POL-WARRANTY",
        "保修政策",
        "warranty policy",
        ["保修", "质保", "warranty"],
        "手机耳机手表外设12个月，安克18个月，小爪家居24个月；15天内故障换新；人为损坏和进水不保。",
        "12 months for phones, headphones, watches, accessories; 18 for Anker; 24 for ClawHome; new replacement within 15 days; no cover for accidental or water damage.",
        "policies.md#warranty",
    ),
    (
        "POL-PAYMENT",
        "支付方式",
        "payment methods",
        ["支付", "付款", "花呗", "payment", "pay"],
        "支付宝、微信支付、银联卡，部分商品花呗3期免息；不支持货到付款；30分钟未付自动取消。",
        "Alipay, WeChat Pay, UnionPay cards, some products with 3 interest-free Huabei instalments; no cash on delivery; unpaid orders cancel after 30 minutes.",
        "policies.md#payment",
    ),
]


def main() -> None:
    data = json.loads((HERE / "catalogue.json").read_text(encoding="utf-8"))
    rows: list[tuple[str, str, str]] = []
    for brand in data["brands"]:
        rows += [(brand["id"], "type", "Brand"), (brand["id"], "label_zh", brand["name_zh"])]
        rows += [(brand["id"], "label_en", brand["name_en"]), (brand["id"], "country", brand["country"])]
    for cat in data["categories"]:
        rows += [(cat["id"], "type", "Category"), (cat["id"], "label_zh", cat["name_zh"])]
        rows += [(cat["id"], "label_en", cat["name_en"])]
    for p in data["products"]:
        pid = p["id"]
        rows += [(pid, "type", "Product"), (pid, "label_zh", p["name_zh"]), (pid, "label_en", p["name_en"])]
        rows += [(pid, "alias", a) for a in [p["sku"], *p["aliases"]]]
        rows += [(pid, "brand", p["brand"]), (pid, "category", p["category"])]
        rows += [
            (pid, "price_cny", str(p["price_cny"])),
            (pid, "in_stock", "yes" if p["stock"] > 0 else "no"),
        ]
        rows += [(pid, "colour", f"{zh} / {en}") for zh, en in p["colours"]]
        rows += [
            (pid, "warranty_months", str(p["warranty_months"])),
            (pid, "return_days", str(p["return_days"])),
        ]
        rows += [(pid, "return_policy", "POL-RETURNS"), (pid, "warranty_policy", "POL-WARRANTY")]
    for pid, zh, en, aliases, summary_zh, summary_en, doc in POLICIES:
        rows += [(pid, "type", "Policy"), (pid, "label_zh", zh), (pid, "label_en", en)]
        rows += [(pid, "alias", a) for a in aliases]
        rows += [(pid, "summary_zh", summary_zh), (pid, "summary_en", summary_en), (pid, "document", doc)]
    with (HERE / "kg_triples.csv").open("w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["subject", "predicate", "object"])
        writer.writerows(rows)


if __name__ == "__main__":
    main()

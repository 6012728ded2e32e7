"""Extra orders for the training copy of the shop, so the model reads order facts from context
instead of memorising the twelve real ones."""

from __future__ import annotations

import random
from typing import Any

CARRIERS = [
    "顺丰速运 SF Express",
    "京东物流 JD Logistics",
    "中通快递 ZTO Express",
    "圆通速递 YTO Express",
    "韵达快递 Yunda Express",
]
PREFIX = {
    "顺丰速运 SF Express": "SF",
    "京东物流 JD Logistics": "JD",
    "中通快递 ZTO Express": "ZT",
    "圆通速递 YTO Express": "YT",
    "韵达快递 Yunda Express": "YD",
}
CITIES = [
    ("北京", "Beijing"),
    ("上海", "Shanghai"),
    ("广州", "Guangzhou"),
    ("深圳", "Shenzhen"),
    ("杭州", "Hangzhou"),
    ("成都", "Chengdu"),
    ("武汉", "Wuhan"),
    ("南京", "Nanjing"),
    ("西安", "Xi'an"),
    ("乌鲁木齐", "Urumqi"),
]
WAREHOUSES = [
    ("上海仓", "Shanghai warehouse"),
    ("广州仓", "Guangzhou warehouse"),
    ("北京仓", "Beijing warehouse"),
    ("成都仓", "Chengdu warehouse"),
]
NOTES: dict[str, list[tuple[str, str]]] = {
    "pending_payment": [
        (
            "订单待付款，30分钟内未付款将自动取消。",
            "Awaiting payment; it is cancelled automatically after 30 minutes.",
        )
    ],
    "paid": [
        (
            "已付款，仓库正在备货，预计24小时内发货。",
            "Paid; the warehouse is packing it and it ships within 24 hours.",
        )
    ],
    "shipped": [
        ("已从{wh_zh}发出，运输中。", "Left the {wh_en}, in transit."),
        ("包裹已到达{city_zh}转运中心。", "The parcel reached the {city_en} sorting centre."),
        ("快递员正在派送，请保持电话畅通。", "Out for delivery; please keep your phone on."),
    ],
    "delivered": [
        ("包裹已由本人签收。", "Signed for by the recipient."),
        ("已放入快递柜，请凭取件码取件。", "Left in a parcel locker; use your pickup code."),
    ],
    "cancelled": [("订单已取消，款项已原路退回。", "The order was cancelled and the payment returned.")],
    "return_requested": [
        ("退货申请已通过，请在3天内寄回。", "Return approved; please send the item back within 3 days.")
    ],
    "refunded": [
        ("退款已原路退回，请注意查收。", "The refund was sent back to your original payment method.")
    ],
}


def synthetic_orders(
    count: int, seed: int, product_ids: list[str], prices: dict[str, int]
) -> list[dict[str, Any]]:
    """`count` orders in orders.json's format with ids that cannot collide with the real ones (SO2025…)."""
    rng = random.Random(seed)
    out = []
    for n in range(count):
        status = rng.choice(list(NOTES))
        city_zh, city_en = rng.choice(CITIES)
        wh_zh, wh_en = rng.choice(WAREHOUSES)
        note_zh, note_en = rng.choice(NOTES[status])
        month, day = rng.randint(1, 12), rng.randint(1, 28)
        product = rng.choice(product_ids)
        quantity = rng.randint(1, 3)
        has_parcel = status in ("shipped", "delivered", "return_requested", "refunded")
        carrier = rng.choice(CARRIERS) if has_parcel else None
        out.append(
            {
                "order_id": f"SO2025{month:02d}{day:02d}{n:03d}"
                if n < 1000
                else f"SO2024{month:02d}{day:02d}{n % 1000:03d}",
                "status": status,
                "created_at": f"2025-{month:02d}-{day:02d}T10:00:00+08:00",
                "items": [{"product_id": product, "quantity": quantity, "unit_price_cny": prices[product]}],
                "shipping_fee_cny": 0,
                "total_cny": prices[product] * quantity,
                "carrier": carrier,
                "tracking_no": f"{PREFIX[carrier]}{rng.randint(10**11, 10**12 - 1)}" if carrier else None,
                "shipped_at": None,
                "delivered_at": None,
                "estimated_delivery": f"2025-{month:02d}-{min(28, day + rng.randint(1, 4)):02d}"
                if status == "shipped"
                else None,
                "ship_to_city": city_zh,
                "contact_phone": "139****0000",
                "note_zh": note_zh.format(wh_zh=wh_zh, city_zh=city_zh),
                "note_en": note_en.format(wh_en=wh_en, city_en=city_en),
            }
        )
    return out

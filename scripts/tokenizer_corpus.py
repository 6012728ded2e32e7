"""Shop-domain sentences in Chinese and English, generated from templates for tokenizer training.

They teach the tokenizer the words customer service for an online shop uses (orders, refunds,
shipping, sizes, prices) so those words become single tokens in both languages.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

PRODUCTS_ZH = [
    "无线耳机",
    "运动鞋",
    "保温杯",
    "连衣裙",
    "机械键盘",
    "充电宝",
    "羽绒服",
    "智能手表",
    "护肤套装",
    "行李箱",
    "电饭煲",
    "蓝牙音箱",
]
PRODUCTS_EN = [
    "wireless earbuds",
    "running shoes",
    "thermos bottle",
    "summer dress",
    "mechanical keyboard",
    "power bank",
    "down jacket",
    "smart watch",
    "skincare set",
    "suitcase",
    "rice cooker",
    "bluetooth speaker",
]
STATUS_ZH = [
    "已下单",
    "已付款",
    "待发货",
    "已发货",
    "运输中",
    "派送中",
    "已签收",
    "已取消",
    "退款中",
    "已退款",
]
STATUS_EN = [
    "placed",
    "paid",
    "awaiting shipment",
    "shipped",
    "in transit",
    "out for delivery",
    "delivered",
    "cancelled",
    "refund in progress",
    "refunded",
]
CITIES_ZH = ["北京", "上海", "广州", "深圳", "杭州", "成都", "武汉", "南京", "西安", "重庆"]
CITIES_EN = [
    "Beijing",
    "Shanghai",
    "Guangzhou",
    "Shenzhen",
    "Hangzhou",
    "Chengdu",
    "London",
    "New York",
    "Singapore",
    "Sydney",
]
COLORS_ZH = ["黑色", "白色", "红色", "蓝色", "灰色", "粉色"]
COLORS_EN = ["black", "white", "red", "blue", "grey", "pink"]

TEMPLATES_ZH = [
    "您好，请问订单{order}现在到哪里了？",
    "您的订单{order}当前状态是：{status}，预计{days}天内送达{city}。",
    "我想退货，{product}尺码不合适，可以办理七天无理由退货吗？",
    "{product}有{color}的吗？价格是多少？",
    "这款{product}目前售价{price}元，{color}有现货，下单后48小时内发货。",
    "退款会在审核通过后{days}个工作日内原路退回。",
    "亲，非常抱歉给您带来不便，我们马上为您转接人工客服。",
    "请提供您的订单号和收货人手机号，我帮您查询物流信息。",
    "您好，欢迎光临本店！有什么可以帮您？",
    "包裹已经由快递公司揽收，物流单号是{tracking}。",
    "满{price}元包邮，偏远地区需要补运费。",
    "这个问题超出了我的服务范围，建议您咨询相关专业人士。",
    "根据店铺政策，{product}支持一年保修，人为损坏不在保修范围内。",
    "我收到的{product}有质量问题，屏幕有划痕，我要投诉！",
    "好的，已为您登记换货申请，新的{product}将在{days}天内寄出。",
]
TEMPLATES_EN = [
    "Hi, where is my order {order}? It has been {days} days.",
    "Your order {order} is {status} and should arrive in {city} within {days} days.",
    "I want to return the {product}, it does not fit. Is that possible within 30 days?",
    "Do you have the {product} in {color}? How much is it?",
    "The {product} costs ${price}; the {color} one is in stock and ships within 48 hours.",
    "Refunds are issued to the original payment method within {days} business days after approval.",
    "I'm sorry for the trouble. Let me transfer you to a human agent right away.",
    "Please share your order number and the phone number on the order so I can check the delivery.",
    "Hello and welcome! How can I help you today?",
    "Your parcel was picked up by the carrier; the tracking number is {tracking}.",
    "Shipping is free on orders over ${price}.",
    "That question is outside what I can help with; please ask a qualified professional.",
    "Under our policy the {product} has a one-year warranty; accidental damage is not covered.",
    "The {product} I received is damaged and the screen is scratched. I want to complain!",
    "Done: your exchange is registered and a new {product} will ship within {days} days.",
]


def _slots(rng: random.Random, zh: bool) -> dict[str, str]:
    i = rng.randrange(len(PRODUCTS_ZH))
    return {
        "order": f"SO2026{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}{rng.randint(1, 999):03d}",
        "status": (STATUS_ZH if zh else STATUS_EN)[rng.randrange(len(STATUS_ZH))],
        "days": str(rng.randint(1, 15)),
        "city": (CITIES_ZH if zh else CITIES_EN)[rng.randrange(len(CITIES_ZH))],
        "product": (PRODUCTS_ZH if zh else PRODUCTS_EN)[i],
        "color": (COLORS_ZH if zh else COLORS_EN)[rng.randrange(len(COLORS_ZH))],
        "price": str(rng.choice([49, 99, 129, 199, 299, 399, 599, 999, 1299])),
        "tracking": f"SF{rng.randint(10**11, 10**12 - 1)}",
    }


def domain_sentences(count: int, seed: int = 0) -> Iterator[str]:
    """`count` sentences alternating Chinese and English, the same for the same seed."""
    rng = random.Random(seed)
    for n in range(count):
        zh = n % 2 == 0
        template = rng.choice(TEMPLATES_ZH if zh else TEMPLATES_EN)
        yield template.format(**_slots(rng, zh))

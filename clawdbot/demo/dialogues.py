"""Conversations to train on: what the customer says, what the context must contain, what to answer.

A `Dialogue` is one session of one or more turns. Each turn says which piece of context the
reply depends on (`needs`): the corpus keeps a turn only when the plugins really supplied it, so
the model learns to answer from the context it is given.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from clawdbot.demo import phrasings as ph
from clawdbot.demo import replies as rp

try:  # typo, spacing and code-switch noise on user turns
    from clawdbot.demo import augment
except ImportError:  # pragma: no cover - only while the module is being written
    augment = None  # type: ignore[assignment]
from clawdbot.demo.shop import Order, Product, Shop

LANGS = ("zh", "en")


@dataclass
class Turn:
    user: str
    reply: str
    intent: str
    needs: tuple[str, str] | None = None  # ("order", id) | ("faq", id) | ("product", id)
    tool_call: dict[str, object] | None = None  # the model calls this tool first, then replies
    drop_context_from: str | None = None  # plugin whose context is removed (so the model must call the tool)
    expect: list[str] = field(default_factory=list)  # phrases a correct reply contains (evaluation)


@dataclass
class Dialogue:
    lang: str
    kind: str
    turns: list[Turn]


PRIMARY = "<the primary context block's answer>"  # the reply is whatever block [1] answers


def _names(p: Product, lang: str) -> list[str]:
    if lang == "zh":
        names = [p.name_zh.split(" ")[0], *[a for a in p.aliases if not a.isascii()]]
    else:
        names = [p.name_en.split(" (")[0], *[a for a in p.aliases if a.isascii()]]
    names += getattr(ph, "PRODUCT_NICKNAMES", {}).get(p.id, {}).get(lang, [])
    return [n for n in names if n] or [p.name_zh if lang == "zh" else p.name_en]


def _product_name(p: Product, lang: str, rng: random.Random) -> str:
    return rng.choice(_names(p, lang))


def _pick(name: str, lang: str, rng: random.Random, fallback: str = "") -> str:
    table = getattr(ph, name, None) or getattr(ph, fallback, None) or {}
    return rng.choice(table.get(lang) or [""])


def _noisy(text: str, lang: str, rng: random.Random) -> str:
    return augment.noisy(text, lang, rng) if augment is not None else text


def order_turn(order: Order, lang: str, rng: random.Random) -> Turn:
    text = rng.choice(ph.ORDER_STATUS[lang]).format(order=order.order_id)
    expect = [order.status_zh if lang == "zh" else order.status_en] + (
        [order.tracking_no] if order.tracking_no else []
    )
    return Turn(_noisy(text, lang, rng), PRIMARY, "order_status", ("order", order.order_id), expect=expect)


PRODUCT_ASKS = ["PRODUCT_PRICE", "PRODUCT_PRICE", "PRODUCT_COLOURS", "PRODUCT_STOCK", "PRODUCT_WARRANTY",
                "PRODUCT_SPECS", "PRODUCT_GENERAL"]  # fmt: skip
FOLLOW_UPS = ["FOLLOWUP_PRICE", "FOLLOWUP_STOCK", "FOLLOWUP_COLOURS", "FOLLOWUP_WARRANTY"]


def product_turn(p: Product, lang: str, rng: random.Random) -> Turn:
    asked = _pick(rng.choice(PRODUCT_ASKS), lang, rng, "PRODUCT_PRICE")
    text = asked.format(product=_product_name(p, lang, rng)) if "{product}" in asked else asked
    return Turn(
        _noisy(text, lang, rng), PRIMARY, "product_info", ("product", p.id), expect=[str(p.price_cny)]
    )


def faq_turn(shop: Shop, lang: str, rng: random.Random) -> Turn:
    faq = rng.choice(shop.faqs)
    paraphrases = getattr(ph, "FAQ_PARAPHRASES", {}).get(faq.id, {}).get(lang, [])
    if paraphrases and rng.random() < 0.75:
        question = rng.choice(paraphrases)
    else:
        question = faq.q_zh if lang == "zh" else faq.q_en
        prefix = rng.choice(ph.FAQ_PREFIXES[lang])
        if prefix and lang == "en":
            question = question[0].lower() + question[1:] if prefix.endswith(": ") else question
        question = prefix + question
    return Turn(_noisy(question, lang, rng), PRIMARY, faq.topic or "faq", ("faq", faq.id))


def simple_turn(
    table: dict[str, list[str]], reply: dict[str, str], intent: str, lang: str, rng: random.Random
) -> Turn:
    return Turn(_noisy(rng.choice(table[lang]), lang, rng), reply[lang], intent)


def _table(name: str, fallback: str) -> dict[str, list[str]]:
    return getattr(ph, name, None) or getattr(ph, fallback)


def recommend_turn(shop: Shop, lang: str, rng: random.Random) -> Turn | None:
    words = getattr(ph, "CATEGORY_NAMES", {})
    if not words:
        return None
    category = rng.choice(sorted(words))
    names = words[category][lang]
    if rng.random() < 0.5 and getattr(ph, "RECOMMEND_BUDGET", None):
        budget = rng.choice([50, 100, 200, 300, 500, 800, 1000, 1500, 2000, 3000, 5000, 8000])
        text = rng.choice(ph.RECOMMEND_BUDGET[lang]).format(category=rng.choice(names), budget=budget)
    else:
        text = _pick("RECOMMEND", lang, rng).format(category=rng.choice(names))
    return Turn(_noisy(text, lang, rng), PRIMARY, "product_info", ("recommend", category))


def generate_dialogues(
    shop: Shop, count: int, seed: int, extra_orders: Sequence[Order] = ()
) -> Iterator[Dialogue]:
    """`count` dialogues; the same seed gives the same dialogues."""
    rng = random.Random(seed)
    orders = [*shop.orders, *extra_orders]
    kinds = (
        ["order"] * 24
        + ["order_missing"] * 5
        + ["order_ask"] * 7
        + ["order_follow_up"] * 4
        + ["product"] * 16
        + ["product_follow_up"] * 8
        + ["recommend"] * 6
        + ["faq"] * 24
        + ["greeting"] * 4
        + ["thanks"] * 4
        + ["complaint"] * 3
        + ["out_of_scope"] * 6
        + ["not_sold"] * 2
        + ["tool_call"] * 4
        + ["mixed"] * 6
    )
    for n in range(count):
        lang = LANGS[n % 2]
        other = LANGS[(n + 1) % 2]
        kind = rng.choice(kinds)
        turns: list[Turn]
        if kind == "order":
            turns = [order_turn(rng.choice(orders), lang, rng)]
        elif kind == "order_missing":
            missing = f"SO2026{rng.randint(0, 9_999_999):07d}"
            if any(o.order_id == missing for o in orders):
                continue
            text = rng.choice(ph.ORDER_STATUS[lang]).format(order=missing)
            turns = [Turn(_noisy(text, lang, rng), PRIMARY, "order_status", ("order_missing", missing))]
        elif kind == "order_ask":
            order = rng.choice(orders)
            given = _pick("ORDER_GIVE_NUMBER", lang, rng) or "{order}"
            turns = [
                simple_turn(ph.ORDER_NO_NUMBER, {lang: rp.ask_order_number(lang)}, "order_status", lang, rng),
                Turn(given.format(order=order.order_id), PRIMARY, "order_status", ("order", order.order_id)),
            ]
        elif kind == "order_follow_up":
            order = rng.choice(orders)
            follow = _pick("FOLLOWUP_ORDER", lang, rng) or "那个订单呢"
            turns = [
                order_turn(order, lang, rng),
                faq_turn(shop, lang, rng),
                Turn(_noisy(follow, lang, rng), PRIMARY, "order_status", ("order", order.order_id)),
            ]
        elif kind == "product":
            turns = [product_turn(rng.choice(shop.products), lang, rng)]
        elif kind == "product_follow_up":
            p = rng.choice(shop.products)
            follow = _pick(rng.choice(FOLLOW_UPS), lang, rng, "PRODUCT_PRICE")
            turns = [
                product_turn(p, lang, rng),
                Turn(
                    _noisy(follow.replace("{product}", ""), lang, rng),
                    PRIMARY,
                    "product_info",
                    ("product", p.id),
                ),
            ]
            if rng.random() < 0.3:  # then another product by name, in the other language
                turns.append(product_turn(rng.choice(shop.products), other, rng))
        elif kind == "recommend":
            turn = recommend_turn(shop, lang, rng)
            if turn is None:
                continue
            turns = [turn]
        elif kind == "faq":
            turns = [faq_turn(shop, lang, rng)]
        elif kind == "greeting":
            turns = [simple_turn(ph.GREETING, rp.GREETING_REPLY, "greeting", lang, rng)]
            if rng.random() < 0.6:
                turns.append(
                    faq_turn(shop, lang, rng)
                    if rng.random() < 0.5
                    else order_turn(rng.choice(orders), lang, rng)
                )
        elif kind == "thanks":
            turns = [faq_turn(shop, lang, rng), simple_turn(ph.THANKS, rp.THANKS_REPLY, "thanks", lang, rng)]
            if rng.random() < 0.4 and getattr(ph, "GOODBYE", None):
                turns.append(simple_turn(ph.GOODBYE, rp.GOODBYE_REPLY, "thanks", lang, rng))
        elif kind == "complaint":
            turns = [simple_turn(ph.COMPLAINT, rp.COMPLAINT_REPLY, "complaint", lang, rng)]
        elif kind == "out_of_scope":
            table = _table("DECLINE_TOPICS", "OUT_OF_SCOPE") if rng.random() < 0.7 else ph.OUT_OF_SCOPE
            turns = [simple_turn(table, rp.OUT_OF_SCOPE_REPLY, "other", lang, rng)]
        elif kind == "not_sold":
            brand = rng.choice(
                ["iPhone", "苹果手机", "三星", "Samsung", "戴森", "Dyson", "AirPods", "华为笔记本电脑"]
            )
            text = rng.choice(["你们卖{b}吗", "有没有{b}", "{b}多少钱"] if lang == "zh" else
                              ["do you sell {b}?", "do you have {b}", "how much is {b}"]).format(b=brand)  # fmt: skip
            turns = [Turn(_noisy(text, lang, rng), PRIMARY, "product_info", ("not_sold", brand))]
        elif kind == "mixed":  # a longer session: several asks, the language may change on the way
            turns = [simple_turn(ph.GREETING, rp.GREETING_REPLY, "greeting", lang, rng)]
            for _ in range(rng.randint(2, 3)):
                speak = other if rng.random() < 0.2 else lang
                pick = rng.random()
                if pick < 0.35:
                    turns.append(order_turn(rng.choice(orders), speak, rng))
                elif pick < 0.7:
                    turns.append(faq_turn(shop, speak, rng))
                else:
                    turns.append(product_turn(rng.choice(shop.products), speak, rng))
            turns.append(simple_turn(ph.THANKS, rp.THANKS_REPLY, "thanks", lang, rng))
        else:  # tool_call: the lookup context is absent, so the model calls the tool itself
            order = rng.choice(orders)
            base = order_turn(order, lang, rng)
            base.reply = rp.order_reply(order, lang)
            base.tool_call = {"name": "lookup_order", "arguments": {"order_id": order.order_id}}
            base.drop_context_from = "tool:lookup_order"
            base.needs = None
            turns = [base]
        yield Dialogue(lang, kind, turns)


def dumps(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True)

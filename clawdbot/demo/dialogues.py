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


def _product_name(p: Product, lang: str, rng: random.Random) -> str:
    if lang == "zh":
        choices = [p.name_zh.split(" ")[0], *[a for a in p.aliases if not a.isascii()]]
    else:
        choices = [p.name_en.split(" (")[0], *[a for a in p.aliases if a.isascii()]]
    return rng.choice([c for c in choices if c] or [p.name_zh if lang == "zh" else p.name_en])


def order_turn(order: Order, lang: str, rng: random.Random) -> Turn:
    text = rng.choice(ph.ORDER_STATUS[lang]).format(order=order.order_id)
    expect = [order.status_zh if lang == "zh" else order.status_en] + (
        [order.tracking_no] if order.tracking_no else []
    )
    return Turn(text, rp.order_reply(order, lang), "order_status", ("order", order.order_id), expect=expect)


def product_turn(p: Product, lang: str, rng: random.Random) -> Turn:
    name = _product_name(p, lang, rng)
    kind = rng.choice(["price", "price", "colours", "stock", "warranty"])
    table = {
        "price": (ph.PRODUCT_PRICE, rp.price_reply, [str(p.price_cny)]),
        "colours": (
            ph.PRODUCT_COLOURS,
            rp.colours_reply,
            [c[0] if lang == "zh" else c[1] for c in p.colours[:1]],
        ),
        "stock": (ph.PRODUCT_STOCK, rp.stock_reply, []),
        "warranty": (ph.PRODUCT_WARRANTY, rp.warranty_reply, [str(p.warranty_months)]),
    }
    phrases, reply, expect = table[kind]
    return Turn(
        rng.choice(phrases[lang]).format(product=name),
        reply(p, lang),
        "product_info",
        ("product", p.id),
        expect=expect,
    )


def faq_turn(shop: Shop, lang: str, rng: random.Random) -> Turn:
    faq = rng.choice(shop.faqs)
    question = faq.q_zh if lang == "zh" else faq.q_en
    prefix = rng.choice(ph.FAQ_PREFIXES[lang])
    if prefix and lang == "en":
        question = question[0].lower() + question[1:] if prefix.endswith(": ") else question
    return Turn(prefix + question, rp.faq_reply(faq, lang), faq.topic or "faq", ("faq", faq.id))


def simple_turn(
    table: dict[str, list[str]], reply: dict[str, str], intent: str, lang: str, rng: random.Random
) -> Turn:
    return Turn(rng.choice(table[lang]), reply[lang], intent)


def generate_dialogues(
    shop: Shop, count: int, seed: int, extra_orders: Sequence[Order] = ()
) -> Iterator[Dialogue]:
    """`count` dialogues; the same seed gives the same dialogues."""
    rng = random.Random(seed)
    orders = [*shop.orders, *extra_orders]
    kinds = (
        ["order"] * 30
        + ["order_missing"] * 5
        + ["order_ask"] * 8
        + ["product"] * 18
        + ["faq"] * 20
        + ["greeting"] * 5
        + ["thanks"] * 4
        + ["complaint"] * 3
        + ["out_of_scope"] * 5
        + ["tool_call"] * 6
    )
    for n in range(count):
        lang = LANGS[n % 2]
        kind = rng.choice(kinds)
        turns: list[Turn]
        if kind == "order":
            turns = [order_turn(rng.choice(orders), lang, rng)]
        elif kind == "order_missing":
            missing = f"SO2026{rng.randint(0, 9_999_999):07d}"
            if any(o.order_id == missing for o in orders):
                continue
            text = rng.choice(ph.ORDER_STATUS[lang]).format(order=missing)
            turns = [
                Turn(
                    text, rp.order_not_found_reply(missing, lang), "order_status", ("order_missing", missing)
                )
            ]
        elif kind == "order_ask":
            order = rng.choice(orders)
            turns = [
                simple_turn(ph.ORDER_NO_NUMBER, {lang: rp.ask_order_number(lang)}, "order_status", lang, rng),
                Turn(order.order_id, rp.order_reply(order, lang), "order_status", ("order", order.order_id)),
            ]
        elif kind == "product":
            turns = [product_turn(rng.choice(shop.products), lang, rng)]
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
        elif kind == "complaint":
            turns = [simple_turn(ph.COMPLAINT, rp.COMPLAINT_REPLY, "complaint", lang, rng)]
        elif kind == "out_of_scope":
            turns = [simple_turn(ph.OUT_OF_SCOPE, rp.OUT_OF_SCOPE_REPLY, "other", lang, rng)]
        else:  # tool_call: the lookup context is absent, so the model calls the tool itself
            order = rng.choice(orders)
            base = order_turn(order, lang, rng)
            base.tool_call = {"name": "lookup_order", "arguments": {"order_id": order.order_id}}
            base.drop_context_from = "tool:lookup_order"
            base.needs = None
            turns = [base]
        yield Dialogue(lang, kind, turns)


def dumps(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True)

"""The demo corpus: deterministic for a seed, grounded in the plugins' context, learned spans only."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest

from clawdbot.demo.corpus import build_corpus
from clawdbot.demo.dialogues import PRIMARY, generate_dialogues
from clawdbot.demo.replies import order_reply
from clawdbot.demo.shop import load_shop
from clawdbot.demo.synthetic import synthetic_orders
from clawdbot.demo.tokens import sample_tokens
from clawdbot.services.tokenizer.assets import DEFAULT_MODEL_DIR
from clawdbot.services.tokenizer.tokenizer import TextTokenizer


def test_dialogues_are_the_same_for_the_same_seed() -> None:
    shop = load_shop()
    first = [asdict(d) for d in generate_dialogues(shop, 300, seed=5)]
    again = [asdict(d) for d in generate_dialogues(shop, 300, seed=5)]
    other = [asdict(d) for d in generate_dialogues(shop, 300, seed=6)]
    assert first == again
    assert first != other
    assert {d["lang"] for d in first} == {"zh", "en"}
    assert len({d["kind"] for d in first}) >= 9


def test_replies_use_the_shops_real_facts() -> None:
    shop = load_shop()
    order = shop.order("SO20261125001")
    assert order is not None
    turns = [
        t
        for d in generate_dialogues(shop, 400, seed=1)
        for t in d.turns
        if t.needs == ("order", "SO20261125001")
    ]
    assert turns, "the real orders appear in the corpus"
    for turn in turns:  # the reply is the lookup's own answer (block [1]), checked by the corpus
        assert turn.reply == PRIMARY
        assert not turn.expect or order.tracking_no in turn.expect
    zh, en = order_reply(order, "zh"), order_reply(order, "en")
    assert order.tracking_no in zh and order.status_zh in zh and order.note_zh in zh
    assert order.tracking_no in en and order.status_en in en


def test_synthetic_orders_are_deterministic_and_well_formed() -> None:
    prices = {"P1": 10, "P2": 20}
    orders = synthetic_orders(50, 3, ["P1", "P2"], prices)
    assert orders == synthetic_orders(50, 3, ["P1", "P2"], prices)
    for order in orders:
        assert (
            len(order["order_id"]) == 13
            and order["order_id"].startswith("SO")
            and order["order_id"][2:].isdigit()
        )
        assert order["total_cny"] == order["items"][0]["unit_price_cny"] * order["items"][0]["quantity"]


@pytest.mark.timeout(240)
async def test_corpus_through_the_real_plugins_is_deterministic(tmp_path: Path) -> None:
    a = await build_corpus(
        tmp_path / "a.jsonl", dialogues=40, seed=9, shop_dir=load_shop_dir(), extra_orders=50
    )
    b = await build_corpus(
        tmp_path / "b.jsonl", dialogues=40, seed=9, shop_dir=load_shop_dir(), extra_orders=50
    )
    assert a["sha256"] == b["sha256"] and a["samples"] >= 30
    samples = [json.loads(line) for line in (tmp_path / "a.jsonl").read_text().splitlines()]
    order_samples = [s for s in samples if s["kind"] == "order"]
    assert order_samples
    for sample in order_samples:
        system = sample["messages"][0]["content"]
        reply = sample["messages"][-1]["content"]
        assert sample["messages"][0]["role"] == "system" and "lookup_order(" in system
        order_id = reply.split("订单")[-1][:13] if "订单" in reply else reply.split("order ")[1][:13]
        assert order_id in system, "the reply's order is in the context the model reads"
    assert any(s["tools"] for s in samples), "the plugins' tools are listed as the template shows them"


def test_only_assistant_replies_are_learned() -> None:
    tok = TextTokenizer(DEFAULT_MODEL_DIR)
    sample = {
        "messages": [
            {"role": "system", "content": "ctx"},
            {"role": "user", "content": "SO1 到哪了"},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {
                        "type": "function",
                        "function": {"name": "lookup_order", "arguments": {"order_id": "SO1"}},
                    }
                ],
                "train": True,
            },
            {"role": "tool", "content": '{"status": "shipped"}'},
            {"role": "assistant", "content": "已发货", "train": True},
        ],
        "tools": [],
    }
    ids, learn = sample_tokens(tok, sample)
    learned = tok.decode_one([i for i, keep in zip(ids, learn, strict=True) if keep])
    assert (
        learned
        == '<tool_call>{"name": "lookup_order", "arguments": {"order_id": "SO1"}}</tool_call><|im_end|>已发货<|im_end|>'
    )


def load_shop_dir() -> Path:
    from clawdbot.demo.shop import DEFAULT_SHOP_DIR

    return DEFAULT_SHOP_DIR

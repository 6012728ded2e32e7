"""Generate the demo model's training corpus through the real plugins and the gateway's prompt.

    python -m clawdbot.demo.corpus --out runs/corpus.jsonl --dialogues 12000 --seed 1

Each line is one training sample: the messages exactly as the mesh would put them before the
model (one system message made by `clawdbot.gateway.prompt.system_text` from the plugins'
instructions, context blocks and facts; the session history; the new user turn), the tools the
template lists, and the assistant messages to learn (`"train": true`). The plugins run as a real
`clawdbot serve plugins` process over a temporary copy of the shop with extra synthetic orders;
the response cache is off so every turn reaches the model. Same seed, same corpus.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from clawdbot.demo.dialogues import PRIMARY, Dialogue, Turn, generate_dialogues
from clawdbot.demo.shop import DEFAULT_SHOP_DIR, Order, Shop, load_shop
from clawdbot.demo.synthetic import synthetic_orders
from clawdbot.gateway.prompt import system_text
from clawdbot.shared.channels import create_channel
from clawdbot.shared.processes import ServiceProcess, free_port
from clawdbot.v1 import common_pb2, plugins_pb2, plugins_pb2_grpc


def prepare_shop_copy(source: Path, target: Path, extra_orders: int, seed: int) -> list[Order]:
    """Copy the shop, add synthetic orders, switch the response cache off; returns the extra orders."""
    shutil.copytree(source, target, dirs_exist_ok=True)
    catalogue = json.loads((source / "catalogue.json").read_text(encoding="utf-8"))
    prices = {p["id"]: int(p["price_cny"]) for p in catalogue["products"]}
    data = json.loads((source / "orders.json").read_text(encoding="utf-8"))
    real = {o["order_id"] for o in data["orders"]}
    extra = [
        o for o in synthetic_orders(extra_orders, seed, sorted(prices), prices) if o["order_id"] not in real
    ]
    unique = list({o["order_id"]: o for o in extra}.values())
    data["orders"] = data["orders"] + unique
    (target / "orders.json").write_text(json.dumps(data, ensure_ascii=False, indent=1), encoding="utf-8")
    config = yaml.safe_load((target / "plugins.yaml").read_text(encoding="utf-8"))
    for plugin in config["plugins"]:
        if plugin["kind"] == "response_cache":
            plugin["enabled"] = False
    (target / "plugins.yaml").write_text(
        yaml.safe_dump(config, allow_unicode=True, sort_keys=False), encoding="utf-8"
    )
    return [o for o in load_shop(target).orders if o.order_id not in real]


def _template_message(m: common_pb2.ChatMessage) -> dict[str, Any]:
    item: dict[str, Any] = {"role": m.role, "content": m.content}
    if m.tool_calls:
        item["tool_calls"] = [
            {
                "id": c.id,
                "type": "function",
                "function": {"name": c.function.name, "arguments": json.loads(c.function.arguments)},
            }
            for c in m.tool_calls
        ]
    if m.tool_call_id:
        item["tool_call_id"] = m.tool_call_id
    return item


def _tool_dict(t: common_pb2.ToolSpec) -> dict[str, Any]:
    params = json.loads(t.function.parameters_json) if t.function.parameters_json else {}
    return {
        "type": "function",
        "function": {"name": t.function.name, "description": t.function.description, "parameters": params},
    }


def _topic(source: str, shop: Shop) -> str:
    anchor = source.rsplit("#", 1)[-1]
    return next((f.topic for f in shop.faqs if f.id == anchor), anchor)


def _primary_answers(turn: Turn, context: Sequence[common_pb2.ContextBlock], shop: Shop) -> bool:
    """Whether block [1] (what the plugins are surest answers the turn) is what the turn needs.

    A turn whose reply is the primary block's answer is kept only when that block is the right one,
    so the model learns to answer from block [1] and never from a wrong one.
    """
    if turn.needs is None:
        return True
    if not context or (turn.reply == PRIMARY and not context[0].answer):
        return False
    kind, key = turn.needs
    first = context[0]
    if kind == "order":
        return (
            first.source == "tool:lookup_order"
            and f'"order_id": "{key}"' in first.text
            and '"found": true' in first.text
        )
    if kind == "order_missing":
        return first.source == "tool:lookup_order" and '"found": false' in first.text
    if kind == "faq":
        topic = _topic(f"#{key}", shop)
        if topic == "products" and "catalogue.json#P" in first.source:  # the product's own card
            return True
        return first.source.endswith(f"#{key}") or _topic(first.source, shop) == topic
    if kind == "recommend":
        return first.source.endswith("#recommend")
    if kind == "not_sold":
        return first.source.endswith("#brands")
    return first.source.endswith(f"#{key}")


class CorpusBuilder:
    """Runs each dialogue's turns through Preprocess (and InvokeTool) and records samples."""

    def __init__(self, stub: plugins_pb2_grpc.PluginsStub, shop: Shop) -> None:
        self.stub = stub
        self.shop = shop
        self.stats: Counter[str] = Counter()

    async def dialogue_samples(self, dialogue: Dialogue, session: str) -> list[dict[str, Any]]:
        history: list[common_pb2.ChatMessage] = []
        facts: dict[str, str] = {}
        samples: list[dict[str, Any]] = []
        for turn in dialogue.turns:
            user = common_pb2.ChatMessage(role="user", content=turn.user)
            pre = await self.stub.Preprocess(
                plugins_pb2.PreprocessRequest(
                    turn=plugins_pb2.TurnContext(tenant="corpus", session_id=session, facts=facts),
                    messages=[*history, user],
                )
            )
            facts.update(pre.facts)
            if pre.HasField("short_circuit") and pre.short_circuit.reply:
                self.stats["short_circuit"] += 1
                history += [
                    pre.user_message,
                    common_pb2.ChatMessage(role="assistant", content=pre.short_circuit.reply),
                ]
                continue
            context = [
                b for b in pre.context if not (turn.drop_context_from and b.source == turn.drop_context_from)
            ]
            if not _primary_answers(turn, context, self.shop):
                self.stats[f"dropped_wrong_primary_{dialogue.kind}"] += 1
                return samples
            reply = context[0].answer if turn.reply == PRIMARY else turn.reply
            system = system_text([], pre.instructions, context, facts, "")
            prompt = [common_pb2.ChatMessage(role="system", content=system), *history, pre.user_message]
            targets: list[common_pb2.ChatMessage] = []
            if turn.tool_call is not None:
                call = common_pb2.ToolCall(
                    id=f"call_{session}",
                    type="function",
                    function=common_pb2.FunctionCall(
                        name=str(turn.tool_call["name"]),
                        arguments=json.dumps(turn.tool_call["arguments"], ensure_ascii=False),
                    ),
                )
                result = await self.stub.InvokeTool(
                    plugins_pb2.InvokeToolRequest(
                        turn=plugins_pb2.TurnContext(tenant="corpus", session_id=session), call=call
                    )
                )
                targets += [
                    common_pb2.ChatMessage(role="assistant", tool_calls=[call]),
                    common_pb2.ChatMessage(role="tool", content=result.content, tool_call_id=call.id),
                ]
            targets.append(common_pb2.ChatMessage(role="assistant", content=reply))
            samples.append(
                {
                    "messages": [_template_message(m) for m in prompt]
                    + [{**_template_message(m), "train": m.role == "assistant"} for m in targets],
                    "tools": [_tool_dict(t) for t in pre.tools],
                    "intent": turn.intent,
                    "lang": dialogue.lang,
                    "kind": dialogue.kind,
                }
            )
            self.stats[f"kept_{dialogue.kind}"] += 1
            history += [pre.user_message, common_pb2.ChatMessage(role="assistant", content=reply)]
        return samples


async def build_corpus(
    out: Path, dialogues: int, seed: int, shop_dir: Path, extra_orders: int
) -> dict[str, Any]:
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="clawdbot-corpus-") as tmp:
        shop_copy = Path(tmp) / "shop"
        extra = prepare_shop_copy(shop_dir, shop_copy, extra_orders, seed)
        shop = load_shop(shop_dir)
        proc = ServiceProcess(
            "plugins",
            free_port(),
            args=["--plugins", str(shop_copy / "plugins.yaml")],
            log_path=Path(tmp) / "plugins.log",
        )
        proc.env["CLAWDBOT_PLUGINS_LOG_LEVEL"] = "WARNING"
        proc.start()
        try:
            await proc.wait_serving(120)
            out.parent.mkdir(parents=True, exist_ok=True)
            digest = hashlib.sha256()
            count = 0
            async with create_channel(proc.target) as channel:
                builder = CorpusBuilder(plugins_pb2_grpc.PluginsStub(channel), shop)
                with out.open("w", encoding="utf-8") as sink:
                    for n, dialogue in enumerate(generate_dialogues(shop, dialogues, seed, extra)):
                        for sample in await builder.dialogue_samples(dialogue, f"s{seed}-{n}"):
                            line = json.dumps(
                                sample, ensure_ascii=False
                            )  # key order matters: the template renders tools as given
                            sink.write(line + "\n")
                            digest.update(line.encode())
                            count += 1
        finally:
            proc.stop()
    return {
        "out": str(out),
        "samples": count,
        "sha256": digest.hexdigest(),
        "seed": seed,
        "dialogues": dialogues,
        "extra_orders": len(extra),
        "stats": dict(sorted(builder.stats.items())),
        "seconds": round(time.perf_counter() - started, 1),
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--dialogues", type=int, default=12000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--shop", type=Path, default=DEFAULT_SHOP_DIR)
    parser.add_argument("--extra-orders", type=int, default=1500)
    args = parser.parse_args(argv)
    report = asyncio.run(build_corpus(args.out, args.dialogues, args.seed, args.shop, args.extra_orders))
    json.dump(report, sys.stdout, ensure_ascii=False)
    print()


if __name__ == "__main__":
    main()

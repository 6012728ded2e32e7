"""The shipped demo model: loads through our loader (16-bit and INT4), agrees with transformers, and
answers order-status questions with the order's real status through the real services."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from clawdbot.demo.shop import DEFAULT_SHOP_DIR, load_shop
from clawdbot.gateway.prompt import system_text
from clawdbot.services.inference.builder import digit_tokens
from clawdbot.services.inference.engine import Engine, EngineConfig
from clawdbot.services.inference.model.loader import load_model
from clawdbot.services.inference.sequence import SamplingParams
from clawdbot.services.tokenizer.assets import DEFAULT_MODEL_DIR
from clawdbot.services.tokenizer.tokenizer import TextTokenizer
from clawdbot.shared.channels import create_channel
from clawdbot.shared.processes import ServiceProcess, free_port
from clawdbot.v1 import (
    common_pb2,
    inference_pb2,
    inference_pb2_grpc,
    plugins_pb2,
    plugins_pb2_grpc,
    tokenizer_pb2,
    tokenizer_pb2_grpc,
)

pytestmark = pytest.mark.timeout(300)
INT4_DIR = DEFAULT_MODEL_DIR.parent / "shop-assistant-int4"
EOS = (8185, 8183)


@pytest.fixture(scope="module")
def prompt(services: dict[str, ServiceProcess]) -> list[int]:
    """A real prompt: the plugins' context for an order question, templated by the tokenizer service."""
    return asyncio.run(prompt_ids(services, "订单SO20261125001到哪了？"))


def greedy_with_engine(
    folder: Path, prompt: list[int], dtype: str, steps: int = 60, grounding: str | None = None
) -> list[int]:
    """Greedy tokens from our engine; `grounding` as the gateway sends it for chat turns (the prompt's text)."""
    model, config = load_model(folder, device="cpu", dtype=dtype)
    engine = Engine(
        model,
        config,
        EngineConfig(kv_cache_bytes=64 << 20, max_num_seqs=2),
        torch.device("cpu"),
        model.embed_tokens.weight.dtype,
        digits=digit_tokens(folder),
    )
    engine.start()
    try:
        return asyncio.run(_generate(engine, prompt, steps, grounding))
    finally:
        engine.stop()


async def _generate(engine: Engine, prompt: list[int], steps: int, grounding: str | None) -> list[int]:
    params = SamplingParams(temperature=0.0, max_tokens=steps)
    return await engine.generate(prompt, params, "demo", grounding=grounding)


def until_eos(ids: list[int]) -> list[int]:
    return ids[: next((i for i, t in enumerate(ids) if t in EOS), len(ids))]


def test_the_shipped_files_are_small_and_complete() -> None:
    config = json.loads((DEFAULT_MODEL_DIR / "config.json").read_text())
    assert config["model_type"] == "mistral" and config["sliding_window"] == 1024
    assert (INT4_DIR / "tokenizer.json").resolve().exists()
    sizes = [
        p.stat().st_size
        for folder in (DEFAULT_MODEL_DIR, INT4_DIR)
        for p in folder.iterdir()
        if not p.is_symlink()
    ]
    assert sum(sizes) <= 25_000_000


def test_16bit_load_matches_transformers_greedy(prompt: list[int]) -> None:
    from transformers import AutoModelForCausalLM

    reference = AutoModelForCausalLM.from_pretrained(str(DEFAULT_MODEL_DIR), dtype=torch.float32).eval()
    with torch.no_grad():
        out = reference.generate(
            torch.tensor([prompt]),
            max_new_tokens=60,
            do_sample=False,
            eos_token_id=list(EOS),
            pad_token_id=8183,
        )
    expected = until_eos(out[0, len(prompt) :].tolist())
    ours = until_eos(greedy_with_engine(DEFAULT_MODEL_DIR, prompt, "float32"))
    assert ours == expected
    # Unconstrained, a small model can slip a digit of a 13-digit tracking number; grounded on the
    # prompt's text (as every chat turn is), it cannot.
    tok = TextTokenizer(DEFAULT_MODEL_DIR)
    grounding = tok.decode_one(prompt)
    ours_bf16 = until_eos(greedy_with_engine(DEFAULT_MODEL_DIR, prompt, "bfloat16", grounding=grounding))
    text = tok.decode_one(ours_bf16)
    assert "已发货，运输中" in text and "SF1420261123887" in text


def test_int4_copy_gives_the_same_answer(prompt: list[int]) -> None:
    tok = TextTokenizer(DEFAULT_MODEL_DIR)
    grounding = tok.decode_one(prompt)
    int4 = tok.decode_one(until_eos(greedy_with_engine(INT4_DIR, prompt, "float32", grounding=grounding)))
    full = tok.decode_one(
        until_eos(greedy_with_engine(DEFAULT_MODEL_DIR, prompt, "float32", grounding=grounding))
    )
    assert int4 == full
    assert "SO20261125001" in int4 and "已发货，运输中" in int4


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, ServiceProcess]]:
    logs = tmp_path_factory.mktemp("demo-services")
    procs = {
        "tokenizer": ServiceProcess("tokenizer", free_port(), log_path=logs / "tokenizer.log"),
        "inference": ServiceProcess(
            "inference", free_port(), args=["--model", str(INT4_DIR)], log_path=logs / "inference.log"
        ),
        "plugins": ServiceProcess(
            "plugins",
            free_port(),
            args=["--plugins", str(DEFAULT_SHOP_DIR / "plugins.yaml")],
            log_path=logs / "plugins.log",
        ),
    }
    for proc in procs.values():
        proc.start()
    try:
        asyncio.run(_wait_all(procs))
        yield procs
    finally:
        for proc in procs.values():
            proc.stop()


async def _wait_all(procs: dict[str, ServiceProcess]) -> None:
    await asyncio.gather(*(p.wait_serving(180) for p in procs.values()))


async def prompt_ids(procs: dict[str, ServiceProcess], question: str) -> list[int]:
    """The prompt the gateway builds: Preprocess -> one system message -> the chat template."""
    async with create_channel(procs["plugins"].target) as pc, create_channel(procs["tokenizer"].target) as tc:
        user = common_pb2.ChatMessage(role="user", content=question)
        pre = await plugins_pb2_grpc.PluginsStub(pc).Preprocess(
            plugins_pb2.PreprocessRequest(
                turn=plugins_pb2.TurnContext(tenant="t", session_id=question), messages=[user]
            )
        )
        system = system_text([], pre.instructions, pre.context, dict(pre.facts), "")
        messages = [common_pb2.ChatMessage(role="system", content=system), pre.user_message]
        templ = await tokenizer_pb2_grpc.TokenizerStub(tc).ApplyChatTemplate(
            tokenizer_pb2.ApplyChatTemplateRequest(
                messages=messages, tools=pre.tools, add_generation_prompt=True
            )
        )
        return list(templ.ids)


async def ask(procs: dict[str, ServiceProcess], question: str) -> str:
    """One turn the way the gateway runs it, then Generate and Decode."""
    prompt = await prompt_ids(procs, question)
    async with (
        create_channel(procs["tokenizer"].target) as tc,
        create_channel(procs["inference"].target) as ic,
    ):
        ids: list[int] = []
        request = inference_pb2.GenerateRequest(
            request_id=f"q{abs(hash(question))}",
            prompt_token_ids=prompt,
            sampling=inference_pb2.SamplingParams(temperature=0.0, max_tokens=160),
        )
        async for reply in inference_pb2_grpc.InferenceStub(ic).Generate(request):
            ids += reply.token_ids
        decoded = await tokenizer_pb2_grpc.TokenizerStub(tc).Decode(
            tokenizer_pb2.DecodeRequest(sequences=[tokenizer_pb2.TokenIds(ids=ids)], skip_special_tokens=True)
        )
        return str(decoded.texts[0])


@pytest.mark.parametrize(
    ("question", "lang"),
    [
        ("帮我看看订单SO20261125008现在到哪了", "zh"),
        ("Where is my order SO20261125002 now?", "en"),
        ("SO20261125004 发货了吗？", "zh"),
    ],
)
def test_order_status_answers_carry_the_real_status(
    services: dict[str, ServiceProcess], question: str, lang: str
) -> None:
    order_id = next(w for w in question.replace("？", " ").replace("?", " ").split() if "SO" in w)
    order_id = order_id[order_id.index("SO") : order_id.index("SO") + 13]
    order = load_shop().order(order_id)
    assert order is not None
    reply = asyncio.run(ask(services, question))
    assert order_id in reply
    assert (order.status_zh if lang == "zh" else order.status_en) in reply, reply

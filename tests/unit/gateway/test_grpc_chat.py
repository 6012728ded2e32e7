"""gRPC clawdbot.v1.Chat on the same pipeline: the stream, API keys, the shared per-key limits and
error codes (through the shared RpcInterceptor, as in the gateway process)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest

from clawdbot.gateway.app import limiter_for
from clawdbot.gateway.grpc_chat import ChatService
from clawdbot.gateway.pipeline import ChatPipeline
from clawdbot.gateway.settings import GatewaySettings
from clawdbot.gateway.upstreams import Upstreams
from clawdbot.shared.interceptors import RpcInterceptor
from clawdbot.v1 import chat_pb2, chat_pb2_grpc, common_pb2

from .fakes import Script, start_fakes


@pytest.fixture
async def chat_stub() -> AsyncIterator[tuple[chat_pb2_grpc.ChatStub, Script]]:
    script = Script()
    fakes, target = await start_fakes(script)
    settings = GatewaySettings(
        tokenizer_target=target,
        inference_target=target,
        plugins_target=target,
        memory_target=target,
        api_keys={"sk-a": "tenant-a"},
        key_requests_per_minute={"sk-a": 2},
    )
    upstreams = Upstreams(settings)
    server = grpc.aio.server(interceptors=[RpcInterceptor("gateway")])
    chat_pb2_grpc.add_ChatServicer_to_server(
        ChatService(ChatPipeline(upstreams, settings), settings, limiter_for(settings)), server
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield chat_pb2_grpc.ChatStub(channel), script
    await server.stop(0)
    await upstreams.close()
    await fakes.stop(0)


KEY = (("authorization", "Bearer sk-a"),)


def request(**kwargs: object) -> chat_pb2.ChatRequest:
    return chat_pb2.ChatRequest(messages=[common_pb2.ChatMessage(role="user", content="hi")], **kwargs)  # type: ignore[arg-type]


async def test_chat_streams_the_turn_and_scopes_the_session_to_the_keys_tenant(
    chat_stub: tuple[chat_pb2_grpc.ChatStub, Script],
) -> None:
    stub, script = chat_stub
    replies = [r async for r in stub.Chat(request(session_id="g1", tenant="someone-else"), metadata=KEY)]
    assert replies[0].choices[0].role == "assistant"
    assert "".join(r.choices[0].content for r in replies) == "Hello there!"
    assert replies[-1].choices[0].finish_reason == common_pb2.FINISH_REASON_STOP
    assert replies[-1].usage.completion_tokens == 12
    assert ("tenant-a", "g1") in script.sessions  # the body's tenant is ignored


async def test_chat_needs_a_key_and_counts_against_its_limit(
    chat_stub: tuple[chat_pb2_grpc.ChatStub, Script],
) -> None:
    stub, _ = chat_stub
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        [r async for r in stub.Chat(request())]
    assert missing.value.code() == grpc.StatusCode.UNAUTHENTICATED
    for _ in range(2):
        [r async for r in stub.Chat(request(), metadata=KEY)]
    with pytest.raises(grpc.aio.AioRpcError) as limited:
        [r async for r in stub.Chat(request(), metadata=KEY)]
    assert limited.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_chat_errors_keep_their_codes(chat_stub: tuple[chat_pb2_grpc.ChatStub, Script]) -> None:
    stub, _ = chat_stub
    with pytest.raises(grpc.aio.AioRpcError) as unknown_model:
        [r async for r in stub.Chat(request(model="nope"), metadata=KEY)]
    assert unknown_model.value.code() == grpc.StatusCode.NOT_FOUND
    assert "model" in (unknown_model.value.details() or "")


async def test_cancelling_the_chat_stream_aborts_inference_and_stores_nothing(
    chat_stub: tuple[chat_pb2_grpc.ChatStub, Script],
) -> None:
    stub, script = chat_stub
    script.reply = "y, " * 300
    script.delay_s = 0.01
    call = stub.Chat(request(session_id="gone"), metadata=KEY)
    seen = 0
    async for _ in call:
        seen += 1
        if seen >= 4:
            break
    call.cancel()
    for _ in range(200):
        if script.cancelled:
            break
        await asyncio.sleep(0.02)
    assert script.cancelled == 1 and script.finished == 0
    assert script.appends == 0

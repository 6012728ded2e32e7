"""Through Envoy, with every service a separate process: the official `openai` client, streaming
and not, in English and Chinese; sessions; a tool round trip; an image turn; gRPC Chat."""

from __future__ import annotations

import json
import uuid

import grpc
import httpx

from clawdbot.gateway.up import Mesh
from clawdbot.v1 import chat_pb2, chat_pb2_grpc, common_pb2

from .conftest import API_KEY
from .helpers import client, model_name, png_data_url

AUTH = {"Authorization": f"Bearer {API_KEY}"}


def test_openai_client_non_streaming_english(mesh: Mesh) -> None:
    reply = client(mesh).chat.completions.create(
        model=model_name(mesh),
        messages=[{"role": "user", "content": "Hello, what is your return policy?"}],
        max_tokens=12,
        temperature=0,
    )
    assert reply.object == "chat.completion"
    choice = reply.choices[0]
    assert choice.message.role == "assistant"
    assert choice.finish_reason in ("stop", "length")
    assert reply.usage is not None and 0 < reply.usage.completion_tokens <= 12
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


def test_openai_client_streaming_chinese(mesh: Mesh) -> None:
    stream = client(mesh).chat.completions.create(
        model=model_name(mesh),
        messages=[{"role": "user", "content": "你好，我的订单什么时候发货？"}],
        max_tokens=16,
        stream=True,
        stream_options={"include_usage": True},
        seed=7,
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes in (["stop"], ["length"])
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens <= 16
    # the same seed gives the same text without streaming
    again = client(mesh).chat.completions.create(
        model=model_name(mesh),
        messages=[{"role": "user", "content": "你好，我的订单什么时候发货？"}],
        max_tokens=16,
        seed=7,
    )
    assert again.choices[0].message.content == text


def test_second_turn_of_a_session_sees_the_first(mesh: Mesh) -> None:
    session = f"e2e-{uuid.uuid4().hex[:8]}"
    c = client(mesh)
    model = model_name(mesh)
    first = c.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "My name is Ann, order A-1001."}],
        max_tokens=8,
        extra_body={"session_id": session},
    )
    question = [{"role": "user", "content": "What is my name?"}]
    alone = c.chat.completions.create(model=model, messages=question, max_tokens=4)  # type: ignore[arg-type]
    second = c.chat.completions.create(
        model=model, messages=question, max_tokens=4, extra_headers={"X-Session-Id": session}
    )  # type: ignore[arg-type]
    assert first.usage and second.usage and alone.usage
    # the first turn (question and reply) is in the second turn's prompt
    assert second.usage.prompt_tokens >= alone.usage.prompt_tokens + first.usage.completion_tokens
    stored = httpx.get(f"{mesh.http_url}/v1/sessions/{session}/messages", headers=AUTH, timeout=10).json()[
        "data"
    ]
    assert [m["role"] for m in stored] == ["user", "assistant", "user", "assistant"]
    assert stored[0]["content"].startswith("My name is Ann")
    assert all(m["token_count"] > 0 for m in stored)
    meta = httpx.get(f"{mesh.http_url}/v1/sessions/{session}", headers=AUTH, timeout=10).json()
    assert meta["message_count"] == 4
    deleted = httpx.delete(f"{mesh.http_url}/v1/sessions/{session}", headers=AUTH, timeout=10).json()
    assert deleted["deleted"] is True
    assert httpx.get(f"{mesh.http_url}/v1/sessions/{session}", headers=AUTH, timeout=10).status_code == 404


def test_tool_call_round_trip(mesh: Mesh) -> None:
    """The client declares a tool, answers the call, and the turn continues with the result.
    (Whether a random-weight model chooses to call is chance; the gateway's parsing of a call
    is tested with a scripted model in tests/unit/gateway.)"""
    session = f"tools-{uuid.uuid4().hex[:8]}"
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_order_status",
                "description": "Look up an order",
                "parameters": {
                    "type": "object",
                    "properties": {"order_id": {"type": "string"}},
                    "required": ["order_id"],
                },
            },
        }
    ]
    c = client(mesh)
    model = model_name(mesh)
    first = c.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Where is order A-1001?"}],
        tools=tools,  # type: ignore[arg-type]
        max_tokens=8,
        extra_body={"session_id": session},
    )
    assert first.choices[0].finish_reason in ("stop", "length", "tool_calls")
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_order_status", "arguments": json.dumps({"order_id": "A-1001"})},
    }
    followup = c.chat.completions.create(
        model=model,
        messages=[
            {"role": "assistant", "content": None, "tool_calls": [call]},  # type: ignore[list-item]
            {"role": "tool", "tool_call_id": "call_1", "content": json.dumps({"status": "shipped"})},
        ],
        tools=tools,  # type: ignore[arg-type]
        max_tokens=8,
        extra_body={"session_id": session},
    )
    assert followup.choices[0].finish_reason in ("stop", "length", "tool_calls")
    stored = httpx.get(f"{mesh.http_url}/v1/sessions/{session}/messages", headers=AUTH, timeout=10).json()[
        "data"
    ]
    roles = [m["role"] for m in stored]
    assert (
        roles[:2] == ["user", "assistant"]
        and roles[2:4] == ["assistant", "tool"]
        and roles[-1] == "assistant"
    )
    assert stored[2]["tool_calls"][0]["function"]["name"] == "get_order_status"
    assert stored[3]["tool_call_id"] == "call_1"


def test_image_turn_gets_multimodal_context(mesh: Mesh) -> None:
    reply = httpx.post(
        mesh.http_url + "/v1/chat/completions",
        headers=AUTH,
        json={
            "model": model_name(mesh),
            "max_tokens": 6,
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "Is this the red bag you sell?"},
                        {"type": "image_url", "image_url": {"url": png_data_url()}},
                    ],
                }
            ],
        },
        timeout=60,
    )
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["choices"][0]["finish_reason"] in ("stop", "length")
    plugins = {s["plugin"] for s in body["sources"]}
    kinds = {
        p["name"]: p["kind"]
        for p in httpx.get(mesh.http_url + "/v1/plugins", headers=AUTH, timeout=10).json()["data"]
    }
    assert any(kinds.get(p) == "multimodal" for p in plugins), body["sources"]


async def test_grpc_chat_through_envoy(mesh: Mesh) -> None:
    async with grpc.aio.insecure_channel(mesh.grpc_target) as channel:
        stub = chat_pb2_grpc.ChatStub(channel)
        request = chat_pb2.ChatRequest(
            model=model_name(mesh),
            messages=[common_pb2.ChatMessage(role="user", content="Tell me about the blue backpack")],
            max_tokens=6,
        )
        replies = [
            r
            async for r in stub.Chat(request, metadata=(("authorization", f"Bearer {API_KEY}"),), timeout=180)
        ]
    assert replies[0].choices[0].role == "assistant"
    assert replies[-1].choices[0].finish_reason in (
        common_pb2.FINISH_REASON_STOP,
        common_pb2.FINISH_REASON_LENGTH,
    )
    assert 0 < replies[-1].usage.completion_tokens <= 6
    async with grpc.aio.insecure_channel(mesh.grpc_target) as channel:
        stub = chat_pb2_grpc.ChatStub(channel)
        try:
            [r async for r in stub.Chat(request, timeout=30)]
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == grpc.StatusCode.UNAUTHENTICATED
        else:
            raise AssertionError("a call without an API key was served")

"""Faults through Envoy: bad input gets the right status and OpenAI's error shape, a dropped
stream aborts its inference request without a half-written session, and killing one of two
inference replicas under load loses no request that had not started streaming."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import uuid
from typing import Any

import grpc
import httpx
import pytest

from clawdbot.gateway.up import Mesh
from clawdbot.v1 import chat_pb2, chat_pb2_grpc, common_pb2

from .conftest import API_KEY, BURST_KEY, BURST_RPM
from .helpers import metric, model_name, service_metrics

AUTH = {"Authorization": f"Bearer {API_KEY}"}


def wait_for_a_fresh_minute(margin_s: float = 15) -> None:
    """Sleep past the minute boundary when fewer than `margin_s` seconds of this minute are left."""
    left = 60 - time.time() % 60
    if left < margin_s:
        time.sleep(left + 0.1)


def post(
    mesh: Mesh, body: Any, headers: dict[str, str] | None = None, raw: bytes | None = None
) -> httpx.Response:
    url = mesh.http_url + "/v1/chat/completions"
    hdrs = {**AUTH, "Content-Type": "application/json", **(headers or {})}
    content = raw if raw is not None else json.dumps(body).encode()
    return httpx.post(url, content=content, headers=hdrs, timeout=180)


def assert_openai_error(reply: httpx.Response, status: int, param: str | None = None) -> dict[str, Any]:
    assert reply.status_code == status, reply.text
    error = reply.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    if param is not None:
        assert error["param"] == param
    return error


def test_bad_input_gets_the_right_status_and_shape(mesh: Mesh) -> None:
    model = model_name(mesh)
    user = [{"role": "user", "content": "hello"}]
    assert_openai_error(post(mesh, None, raw=b'{"model": "x", "messages": ['), 400)
    assert_openai_error(post(mesh, {"model": model, "messages": "hello"}), 400, "messages")
    assert_openai_error(
        post(mesh, {"model": model, "messages": user, "max_tokens": "ten"}), 400, "max_tokens"
    )
    error = assert_openai_error(post(mesh, {"model": "gpt-17", "messages": user}), 404, "model")
    assert error["code"] == "model_not_found"
    assert_openai_error(post(mesh, {"model": model, "messages": []}), 400, "messages")
    assert_openai_error(
        post(mesh, {"model": model, "messages": user, "max_tokens": 100_000}), 400, "max_tokens"
    )
    big = (
        b'{"model": "%s", "messages": [{"role": "user", "content": "' % model.encode()
        + b"a" * (20 * 1024 * 1024)
        + b'"}]}'
    )
    too_large = post(mesh, None, raw=big)
    assert_openai_error(too_large, 413)
    error = assert_openai_error(
        post(mesh, {"model": model, "messages": user}, headers={"Authorization": "Bearer sk-wrong"}), 401
    )
    assert error["code"] == "invalid_api_key"
    wait_for_a_fresh_minute()  # rate-limit windows are whole minutes: do not straddle two
    statuses = [
        post(
            mesh,
            {"model": model, "messages": user, "max_tokens": 1},
            headers={"Authorization": f"Bearer {BURST_KEY}"},
        ).status_code
        for _ in range(BURST_RPM + 3)
    ]
    assert statuses.count(429) >= 3 and all(s in (200, 429) for s in statuses)
    limited = post(mesh, {"model": model, "messages": user}, headers={"Authorization": f"Bearer {BURST_KEY}"})
    assert assert_openai_error(limited, 429)["code"] == "rate_limit_exceeded"
    assert int(limited.headers["Retry-After"]) >= 1
    # gRPC Chat counts against the same per-key budget
    with grpc.insecure_channel(mesh.grpc_target) as channel:
        request = chat_pb2.ChatRequest(
            model=model, messages=[common_pb2.ChatMessage(role="user", content="hello")]
        )
        try:
            list(
                chat_pb2_grpc.ChatStub(channel).Chat(
                    request, metadata=(("authorization", f"Bearer {BURST_KEY}"),), timeout=30
                )
            )
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        else:
            raise AssertionError("gRPC Chat ignored the rate limit")
    # the mesh keeps serving
    ok = post(mesh, {"model": model, "messages": user, "max_tokens": 4})
    assert ok.status_code == 200 and ok.json()["object"] == "chat.completion"


def _generate_counts(mesh: Mesh) -> tuple[float, float]:
    """(Generate streams cancelled, tokens generated) summed over the inference replicas."""
    cancelled = tokens = 0.0
    for name in mesh.metrics_ports:
        if name.startswith("inference-"):
            text = service_metrics(mesh, name)
            cancelled += metric(
                text,
                "clawdbot_rpc_requests_total",
                method="/clawdbot.v1.Inference/Generate",
                code="CANCELLED",
            )
            tokens += metric(text, "clawdbot_inference_generation_tokens_total")
    return cancelled, tokens


async def test_dropping_the_stream_aborts_inference_and_writes_nothing(mesh: Mesh) -> None:
    session = f"drop-{uuid.uuid4().hex[:8]}"
    cancelled_before, tokens_before = _generate_counts(mesh)
    max_tokens = 1500
    body = {
        "model": model_name(mesh),
        "messages": [{"role": "user", "content": "Write a long story"}],
        "max_tokens": max_tokens,
        "stream": True,
        "session_id": session,
        "verify": False,  # token by token: verification would hold a short reply back until its end
    }
    async with (
        httpx.AsyncClient(timeout=180) as http,
        http.stream("POST", mesh.http_url + "/v1/chat/completions", json=body, headers=AUTH) as resp,
    ):
        assert resp.status_code == 200
        contents = 0
        async for line in resp.aiter_lines():
            if line.startswith("data: ") and '"content":"' in line and '"role"' not in line:
                contents += 1
                if contents >= 3:
                    break  # leaving the block closes the connection mid-stream
    deadline = time.monotonic() + 30
    while True:  # the replica saw its Generate stream cancelled ...
        cancelled, tokens = _generate_counts(mesh)
        if cancelled > cancelled_before:
            break
        assert time.monotonic() < deadline, "inference was not aborted"
        await asyncio.sleep(0.2)
    await asyncio.sleep(1.0)
    _, tokens_later = _generate_counts(mesh)
    # ... and stopped generating for it, long before max_tokens
    assert tokens_later == tokens and tokens - tokens_before < max_tokens
    # the turn never completed, so nothing of it was stored
    async with httpx.AsyncClient(timeout=10) as http:
        got = await http.get(f"{mesh.http_url}/v1/sessions/{session}/messages", headers=AUTH)
    assert got.status_code == 404 or got.json()["data"] == []


async def _one_streaming_request(mesh: Mesh, model: str, i: int) -> tuple[bool, bool]:
    """(succeeded, had received content before failing)."""
    body = {
        "model": model,
        "messages": [{"role": "user", "content": f"question {i}: tell me about shipping"}],
        "max_tokens": 48,
        "stream": True,
    }
    saw_content = False
    try:
        async with (
            httpx.AsyncClient(timeout=120) as http,
            http.stream("POST", mesh.http_url + "/v1/chat/completions", json=body, headers=AUTH) as resp,
        ):
            if resp.status_code != 200:
                return False, False
            async for line in resp.aiter_lines():
                if line.startswith("data: {") and '"error"' in line:
                    return False, saw_content
                if '"content":"' in line and '"role"' not in line:
                    saw_content = True
                if line == "data: [DONE]":
                    return True, saw_content
    except httpx.HTTPError:
        return False, saw_content
    return False, saw_content


@pytest.mark.slow
async def test_killing_one_inference_replica_loses_no_unstarted_request(mesh: Mesh) -> None:
    model = model_name(mesh)
    victim = mesh.services["inference-0"]
    assert victim.process is not None
    victim_tokens = metric(service_metrics(mesh, "inference-0"), "clawdbot_inference_generation_tokens_total")
    tasks = [asyncio.create_task(_one_streaming_request(mesh, model, i)) for i in range(12)]
    deadline = time.monotonic() + 30
    while (
        metric(service_metrics(mesh, "inference-0"), "clawdbot_inference_generation_tokens_total")
        == victim_tokens
    ):
        assert time.monotonic() < deadline, "Envoy never sent the victim replica any work"
        await asyncio.sleep(0.05)  # the victim is generating: it dies with work in hand
    os.killpg(victim.process.pid, signal.SIGKILL)
    victim.process.wait(10)
    late = [
        asyncio.create_task(_one_streaming_request(mesh, model, 100 + i)) for i in range(6)
    ]  # after the kill
    results = await asyncio.gather(*tasks, *late)
    lost_unstarted = [i for i, (ok, started) in enumerate(results) if not ok and not started]
    assert lost_unstarted == [], f"requests lost before streaming: {lost_unstarted}; results={results}"
    assert all(ok for ok, _ in results[len(tasks) :]), "requests sent after the kill must all succeed"
    # bring the replica back for the tests that follow
    victim.start()
    await victim.wait_serving(120)

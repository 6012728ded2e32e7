"""Security at the edge: API keys, per-key rate limits (local and shared through a real Redis),
body size limit, CORS; and the OpenAPI document's shape."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest

from clawdbot.gateway.openapi import openapi_document
from clawdbot.gateway.ratelimit import LocalCounter, RateLimiter, RedisCounter
from clawdbot.shared.processes import free_port

from .conftest import Edge

CHAT = {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
KEYS: dict[str, Any] = {
    "api_keys": {"sk-a": "tenant-a", "sk-b": "tenant-b"},
    "key_requests_per_minute": {"sk-b": 2},
}


@pytest.mark.parametrize("gateway_overrides", [KEYS])
async def test_api_keys_decide_access_and_tenant(edge: Edge) -> None:
    status, err = await edge.post("/v1/chat/completions", CHAT)
    assert status == 401 and err["error"]["code"] == "missing_api_key"
    status, err = await edge.post("/v1/chat/completions", CHAT, headers={"Authorization": "Bearer sk-nope"})
    assert status == 401 and err["error"]["code"] == "invalid_api_key"
    status, _ = await edge.post(
        "/v1/chat/completions", {**CHAT, "session_id": "s"}, headers={"Authorization": "Bearer sk-a"}
    )
    assert status == 200
    assert ("tenant-a", "s") in edge.script.sessions
    # another tenant cannot see tenant-a's session
    async with edge.http.get(
        edge.url + "/v1/sessions/s/messages", headers={"Authorization": "Bearer sk-b"}
    ) as resp:
        assert resp.status == 404
    async with edge.http.get(edge.url + "/healthz") as resp:  # health stays public
        assert resp.status == 200


@pytest.mark.parametrize("gateway_overrides", [KEYS])
async def test_per_key_rate_limit(edge: Edge) -> None:
    auth = {"Authorization": "Bearer sk-b"}
    left = 60 - time.time() % 60  # limits count whole minutes: do not straddle two
    if left < 5:
        await asyncio.sleep(left + 0.1)
    got = [(await edge.post("/v1/chat/completions", CHAT, headers=auth))[0] for _ in range(4)]
    assert got == [200, 200, 429, 429]
    async with edge.http.post(edge.url + "/v1/chat/completions", json=CHAT, headers=auth) as resp:
        body = await resp.json()
        assert body["error"]["type"] == "requests" and body["error"]["code"] == "rate_limit_exceeded"
        assert int(resp.headers["Retry-After"]) >= 1
    status, _ = await edge.post("/v1/chat/completions", CHAT, headers={"Authorization": "Bearer sk-a"})
    assert status == 200  # other keys are unaffected


@pytest.mark.parametrize("gateway_overrides", [{"max_body_bytes": 1024}])
async def test_body_over_the_limit_is_413(edge: Edge) -> None:
    body = {**CHAT, "messages": [{"role": "user", "content": "x" * 5000}]}
    status, err = await edge.post("/v1/chat/completions", body)
    assert status == 413 and err["error"]["code"] == "request_too_large"


@pytest.mark.parametrize("gateway_overrides", [{"cors_origins": ["https://shop.example"]}])
async def test_cors_allows_only_configured_origins(edge: Edge) -> None:
    preflight = {"Origin": "https://shop.example", "Access-Control-Request-Method": "POST"}
    async with edge.http.options(edge.url + "/v1/chat/completions", headers=preflight) as resp:
        assert resp.status == 204
        assert resp.headers["Access-Control-Allow-Origin"] == "https://shop.example"
    async with edge.http.get(edge.url + "/v1/models", headers={"Origin": "https://evil.example"}) as resp:
        assert "Access-Control-Allow-Origin" not in resp.headers


async def test_token_limit_blocks_after_the_window_is_spent() -> None:
    limiter = RateLimiter(0, 100, LocalCounter())
    assert (await limiter.admit("k")).allowed
    await limiter.charge_tokens("k", 150)
    verdict = await limiter.admit("k")
    assert not verdict.allowed and verdict.limit == "tokens"


@pytest.fixture
def redis_url(tmp_path: Any) -> Iterator[str]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed")
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
    )
    import redis

    deadline = time.monotonic() + 10
    while True:
        try:
            redis.Redis(port=port).ping()
            break
        except redis.ConnectionError:
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.05)
    yield f"redis://127.0.0.1:{port}/0"
    proc.terminate()
    proc.wait(10)


async def test_redis_counts_are_shared_between_replicas(redis_url: str) -> None:
    one, two = RateLimiter(3, 0, RedisCounter(redis_url)), RateLimiter(3, 0, RedisCounter(redis_url))
    verdicts = [await limiter.admit("shared") for limiter in (one, two, one, two)]
    assert [v.allowed for v in verdicts] == [True, True, True, False]
    await one.counter.close()
    await two.counter.close()


def test_openapi_document_describes_every_route() -> None:
    doc = openapi_document()
    assert doc["openapi"].startswith("3.1")
    paths = doc["paths"]
    for path in (
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/models",
        "/v1/sessions/{session_id}",
        "/v1/sessions/{session_id}/messages",
        "/v1/plugins",
        "/healthz",
        "/readyz",
        "/metrics",
    ):
        assert path in paths
    chat = doc["components"]["schemas"]["ChatCompletionRequest"]
    assert {"model", "messages"} <= set(chat["required"])
    assert "session_id" in chat["properties"] and "return_token_ids" in chat["properties"]
    assert "text/event-stream" in paths["/v1/chat/completions"]["post"]["responses"]["200"]["content"]

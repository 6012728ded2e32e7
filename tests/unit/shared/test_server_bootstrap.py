"""The shared bootstrap: health follows readiness, errors map to codes with field details, metrics count calls."""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2

from clawdbot.shared.channels import create_channel
from clawdbot.shared.config import ServiceSettings
from clawdbot.shared.errors import InvalidArgument
from clawdbot.shared.grpc_server import ServiceHost
from clawdbot.shared.interceptors import STATUS_DETAILS_KEY
from clawdbot.shared.processes import free_port, health_status
from clawdbot.v1 import tokenizer_pb2, tokenizer_pb2_grpc


class FailingTokenizer(tokenizer_pb2_grpc.TokenizerServicer):
    """Raises domain errors and crashes, so the interceptor's mapping can be observed."""

    async def Encode(
        self, request: tokenizer_pb2.EncodeRequest, context: Any
    ) -> tokenizer_pb2.EncodeResponse:
        if request.texts and request.texts[0] == "crash":
            raise RuntimeError("secret internal detail")
        raise InvalidArgument("must not be empty", field="texts[0]")

    async def DetokenizeStream(
        self, request_iterator: Any, context: Any
    ) -> AsyncIterator[tokenizer_pb2.DetokenizeDelta]:
        async for _ in request_iterator:
            yield tokenizer_pb2.DetokenizeDelta(text="a")
            raise InvalidArgument("bad chunk", field="ids")


@pytest.fixture
async def host() -> AsyncIterator[ServiceHost]:
    settings = ServiceSettings(port=free_port(), metrics_port=free_port(), grace_seconds=1)
    host = ServiceHost("bootstrap-test", settings)
    host.add_service(
        "clawdbot.v1.Tokenizer",
        lambda s: tokenizer_pb2_grpc.add_TokenizerServicer_to_server(FailingTokenizer(), s),
    )
    await host.start()
    yield host
    await host.stop()


async def test_health_is_not_serving_until_ready(host: ServiceHost) -> None:
    target = f"127.0.0.1:{host.port}"
    assert await health_status(target, "clawdbot.v1.Tokenizer") == health_pb2.HealthCheckResponse.NOT_SERVING
    await host.set_serving(True)
    assert await health_status(target, "") == health_pb2.HealthCheckResponse.SERVING
    assert await health_status(target, "clawdbot.v1.Tokenizer") == health_pb2.HealthCheckResponse.SERVING


async def test_domain_error_becomes_invalid_argument_with_the_field(host: ServiceHost) -> None:
    async with create_channel(f"127.0.0.1:{host.port}") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await tokenizer_pb2_grpc.TokenizerStub(channel).Encode(tokenizer_pb2.EncodeRequest(texts=[""]))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details() == "texts[0]: must not be empty"
    trailers = dict(err.value.trailing_metadata() or ())
    status = status_pb2.Status.FromString(trailers[STATUS_DETAILS_KEY])
    bad = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(bad)
    assert bad.field_violations[0].field == "texts[0]"


async def test_unexpected_exception_is_internal_without_leaking(host: ServiceHost) -> None:
    async with create_channel(f"127.0.0.1:{host.port}") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await tokenizer_pb2_grpc.TokenizerStub(channel).Encode(
                tokenizer_pb2.EncodeRequest(texts=["crash"])
            )
    assert err.value.code() == grpc.StatusCode.INTERNAL
    assert "secret" not in (err.value.details() or "")


async def test_stream_error_mid_way_keeps_what_was_sent(host: ServiceHost) -> None:
    async def chunks() -> AsyncIterator[tokenizer_pb2.DetokenizeChunk]:
        yield tokenizer_pb2.DetokenizeChunk(ids=[1])

    async with create_channel(f"127.0.0.1:{host.port}") as channel:
        call = tokenizer_pb2_grpc.TokenizerStub(channel).DetokenizeStream(chunks())
        got = []
        with pytest.raises(grpc.aio.AioRpcError) as err:
            async for delta in call:
                got.append(delta.text)
    assert got == ["a"]
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_metrics_endpoint_counts_calls_by_code(host: ServiceHost) -> None:
    async with create_channel(f"127.0.0.1:{host.port}") as channel:
        with pytest.raises(grpc.aio.AioRpcError):
            await tokenizer_pb2_grpc.TokenizerStub(channel).Encode(tokenizer_pb2.EncodeRequest(texts=[""]))
    url = f"http://127.0.0.1:{host.settings.metrics_port}/metrics"
    body = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=5).read().decode())
    line = next(
        row
        for row in body.splitlines()
        if row.startswith("clawdbot_rpc_requests_total")
        and "Encode" in row
        and "INVALID_ARGUMENT" in row
        and "bootstrap-test" in row
    )
    assert float(line.rsplit(" ", 1)[1]) >= 1


async def test_calls_without_a_deadline_get_the_default_one(host: ServiceHost) -> None:
    """A server that never answers cannot hang a caller: the channel adds a deadline."""
    await host.set_serving(True)

    class Silent(tokenizer_pb2_grpc.TokenizerServicer):
        async def Info(self, request: Any, context: Any) -> tokenizer_pb2.TokenizerInfo:
            import asyncio

            await asyncio.sleep(30)
            return tokenizer_pb2.TokenizerInfo()

    silent = ServiceHost("silent", ServiceSettings(port=free_port(), grace_seconds=0))
    silent.add_service(
        "clawdbot.v1.Tokenizer", lambda s: tokenizer_pb2_grpc.add_TokenizerServicer_to_server(Silent(), s)
    )
    await silent.start()
    try:
        async with create_channel(f"127.0.0.1:{silent.port}", unary_timeout_s=0.5) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await tokenizer_pb2_grpc.TokenizerStub(channel).Info(tokenizer_pb2.TokenizerInfoRequest())
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    finally:
        await silent.stop()

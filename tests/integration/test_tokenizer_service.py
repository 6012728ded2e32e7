"""The tokenizer service as a real process: health, reflection, round trips, bad input, drain."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from clawdbot.shared.processes import ServiceProcess, free_port, health_status
from clawdbot.v1 import common_pb2, tokenizer_pb2, tokenizer_pb2_grpc

pytestmark = pytest.mark.timeout(120)

CHINESE = "您好！请问订单 SO20261125001 什么时候发货？谢谢🙏"


def start_tokenizer(log_dir: Path) -> ServiceProcess:
    proc = ServiceProcess("tokenizer", free_port(), log_path=log_dir / "tokenizer.log")
    proc.env["CLAWDBOT_TOKENIZER_GRACE_SECONDS"] = "10"
    proc.start()
    try:
        asyncio.run(proc.wait_serving(timeout=60))
    except Exception:
        proc.kill()
        print(proc.log_text())
        raise
    return proc


@pytest.fixture(scope="module")
def tokenizer_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    """One process for the tests that leave it running."""
    proc = start_tokenizer(tmp_path_factory.mktemp("tokenizer"))
    yield proc
    proc.stop()


@pytest.fixture
def own_tokenizer_service(tmp_path: Path) -> Iterator[ServiceProcess]:
    """A process of its own, for a test that stops it."""
    proc = start_tokenizer(tmp_path)
    yield proc
    proc.stop()


async def test_health_and_reflection_list_the_services(tokenizer_service: ServiceProcess) -> None:
    assert (
        await health_status(tokenizer_service.target, "clawdbot.v1.Tokenizer")
        == health_pb2.HealthCheckResponse.SERVING
    )
    async with grpc.aio.insecure_channel(tokenizer_service.target) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        responses = stub.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10
        )
        names = set()
        async for response in responses:
            names |= {s.name for s in response.list_services_response.service}
    assert {
        "clawdbot.v1.Tokenizer",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    } <= names


def test_a_service_cli_runs_its_process_on_uvloop(tokenizer_service: ServiceProcess) -> None:
    """`clawdbot serve tokenizer` goes through shared/event_loop.py, not a plain asyncio.run."""
    assert [line["event_loop"] for line in tokenizer_service.log_records("listening")] == ["uvloop"]


async def test_chinese_round_trip_through_encode_and_detokenize_stream(
    tokenizer_service: ServiceProcess,
) -> None:
    async with grpc.aio.insecure_channel(tokenizer_service.target) as channel:
        stub = tokenizer_pb2_grpc.TokenizerStub(channel)
        encoded = await stub.Encode(tokenizer_pb2.EncodeRequest(texts=[CHINESE]), timeout=10)
        ids = list(encoded.encodings[0].ids)
        assert len(ids) < len(CHINESE.encode())  # real merges, not bytes

        async def chunks() -> AsyncIterator[tokenizer_pb2.DetokenizeChunk]:
            for i in range(0, len(ids), 2):
                yield tokenizer_pb2.DetokenizeChunk(ids=ids[i : i + 2])

        deltas = [d.text async for d in stub.DetokenizeStream(chunks(), timeout=10)]
        assert "".join(deltas) == CHINESE
        assert all("\ufffd" not in d for d in deltas)
        decoded = await stub.Decode(
            tokenizer_pb2.DecodeRequest(sequences=[tokenizer_pb2.TokenIds(ids=ids)]), timeout=10
        )
        assert decoded.texts == [CHINESE]


async def test_chat_template_count_and_info(tokenizer_service: ServiceProcess) -> None:
    async with grpc.aio.insecure_channel(tokenizer_service.target) as channel:
        stub = tokenizer_pb2_grpc.TokenizerStub(channel)
        messages = [common_pb2.ChatMessage(role="user", content="退货政策是什么？")]
        templ = await stub.ApplyChatTemplate(
            tokenizer_pb2.ApplyChatTemplateRequest(messages=messages, add_generation_prompt=True), timeout=10
        )
        assert templ.text.endswith("<|im_start|>assistant\n") and templ.num_tokens == len(templ.ids)
        counted = await stub.CountTokens(
            tokenizer_pb2.CountTokensRequest(texts=["abc", "订单"], messages=messages), timeout=10
        )
        assert counted.messages_tokens == templ.num_tokens and len(counted.per_message) == 1
        info = await stub.Info(tokenizer_pb2.TokenizerInfoRequest(), timeout=10)
        assert info.has_chat_template and info.vocab_size == 8192
        assert {t.content for t in info.special_tokens} >= {"<|im_start|>", "<|im_end|>"}
        assert info.eos_token_ids


@pytest.mark.parametrize(
    ("request_", "code", "field"),
    [
        (
            tokenizer_pb2.EncodeRequest(texts=["x"], allowed_special=["<|nope|>"]),
            grpc.StatusCode.INVALID_ARGUMENT,
            "allowed_special",
        ),
        (
            tokenizer_pb2.EncodeRequest(texts=["x" * (10 * 1024 * 1024)]),
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "",
        ),
        (
            tokenizer_pb2.DecodeRequest(sequences=[tokenizer_pb2.TokenIds(ids=[5, 10**6])]),
            grpc.StatusCode.INVALID_ARGUMENT,
            "sequences[0].ids",
        ),
    ],
    ids=["unknown-special-token", "10MB-request", "id-outside-vocab"],
)
async def test_bad_input_is_refused_and_the_server_stays_up(
    tokenizer_service: ServiceProcess, request_: object, code: grpc.StatusCode, field: str
) -> None:
    async with grpc.aio.insecure_channel(
        tokenizer_service.target, options=[("grpc.max_send_message_length", 64 << 20)]
    ) as channel:
        stub = tokenizer_pb2_grpc.TokenizerStub(channel)
        call = stub.Encode if isinstance(request_, tokenizer_pb2.EncodeRequest) else stub.Decode
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call(request_, timeout=20)
        assert err.value.code() == code
        assert field in (err.value.details() or "")
        ok = await stub.Encode(tokenizer_pb2.EncodeRequest(texts=["still here"]), timeout=10)
        assert ok.encodings[0].ids


async def test_detokenize_stream_with_bad_ids_is_invalid_argument(tokenizer_service: ServiceProcess) -> None:
    async with grpc.aio.insecure_channel(tokenizer_service.target) as channel:
        stub = tokenizer_pb2_grpc.TokenizerStub(channel)

        async def chunks() -> AsyncIterator[tokenizer_pb2.DetokenizeChunk]:
            yield tokenizer_pb2.DetokenizeChunk(ids=[100, 9_999_999])

        with pytest.raises(grpc.aio.AioRpcError) as err:
            async for _ in stub.DetokenizeStream(chunks(), timeout=10):
                pass
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_sigterm_drains_an_open_stream_before_exit(own_tokenizer_service: ServiceProcess) -> None:
    proc = own_tokenizer_service
    assert proc.process is not None
    async with grpc.aio.insecure_channel(proc.target) as channel:
        stub = tokenizer_pb2_grpc.TokenizerStub(channel)
        ids = list(
            (await stub.Encode(tokenizer_pb2.EncodeRequest(texts=[CHINESE]), timeout=10)).encodings[0].ids
        )
        outgoing: asyncio.Queue[tokenizer_pb2.DetokenizeChunk | None] = asyncio.Queue()

        async def chunks() -> AsyncIterator[tokenizer_pb2.DetokenizeChunk]:
            while (chunk := await outgoing.get()) is not None:
                yield chunk

        call = stub.DetokenizeStream(chunks(), timeout=30)
        half = len(ids) // 2
        await outgoing.put(tokenizer_pb2.DetokenizeChunk(ids=ids[:half]))
        first = await call.read()
        proc.process.send_signal(signal.SIGTERM)
        # The server now drains: not serving new work, but the open stream goes on.
        deadline = time.monotonic() + 10
        while (
            await health_status(proc.target, "clawdbot.v1.Tokenizer")
            == health_pb2.HealthCheckResponse.SERVING
        ):
            assert time.monotonic() < deadline, "health never left SERVING after SIGTERM"
            await asyncio.sleep(0.05)
        await outgoing.put(tokenizer_pb2.DetokenizeChunk(ids=ids[half:]))
        await outgoing.put(None)
        rest: list[str] = []
        while (delta := await call.read()) is not grpc.aio.EOF:
            rest.append(delta.text)
        assert await call.code() == grpc.StatusCode.OK
        assert first.text + "".join(rest) == CHINESE
    assert await asyncio.to_thread(proc.process.wait, 15) == 0

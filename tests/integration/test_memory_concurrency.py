"""Many writers on one session, on both backends: nothing lost, nothing duplicated, retries applied once."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import grpc
import pytest

from clawdbot.services.memory.testing import Backend, Memory, RedisServer, chat_message, open_memory
from clawdbot.v1 import memory_pb2

WRITERS = 50


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    try:
        server.wait_ready_blocking()
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["embedded", "redis"])
def backend(request: pytest.FixtureRequest) -> Backend:
    if request.param == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        return Backend("redis", server.url)
    return Backend("embedded", None)


async def stored_ids(memory: Memory) -> list[str]:
    session = await memory.stub.GetSession(memory_pb2.GetSessionRequest(key=memory.key()))
    return [m.message_id for m in session.messages]


async def test_fifty_concurrent_appenders_lose_and_duplicate_nothing(backend: Backend) -> None:
    async with open_memory(backend) as memory:

        async def writer(w: int) -> list[memory_pb2.AppendResponse]:
            replies: list[memory_pb2.AppendResponse] = []
            for turn in range(3):
                request = memory_pb2.AppendRequest(
                    key=memory.key(),
                    messages=[
                        chat_message(f"w{w}-t{turn}-user"),
                        chat_message(f"w{w}-t{turn}-bot", "assistant"),
                    ],
                    max_messages=10_000,
                )
                # Every call is sent twice at once, as a client retrying a timed-out call would.
                replies += await asyncio.gather(memory.stub.Append(request), memory.stub.Append(request))
            return replies

        results = [
            r for replies in await asyncio.gather(*(writer(w) for w in range(WRITERS))) for r in replies
        ]
        expected = {f"w{w}-t{t}-{who}" for w in range(WRITERS) for t in range(3) for who in ("user", "bot")}
        got = await stored_ids(memory)
        assert len(got) == len(set(got)) == len(expected)
        assert set(got) == expected
        assert sum(r.appended for r in results) == len(expected)
        assert sum(r.duplicates for r in results) == len(expected)
        # Each writer's turns stay in its own order, user before bot.
        for w in range(WRITERS):
            mine = [i for i in got if i.startswith(f"w{w}-")]
            assert mine == [f"w{w}-t{t}-{who}" for t in range(3) for who in ("user", "bot")]
        session = await memory.stub.GetSession(memory_pb2.GetSessionRequest(key=memory.key()))
        assert session.meta.version == WRITERS * 3  # one version per applied append, none per retry
        again = await memory.stub.Append(
            memory_pb2.AppendRequest(
                key=memory.key(), messages=[chat_message("w0-t0-user"), chat_message("w7-t2-bot")]
            )
        )
        assert (again.appended, again.duplicates, again.message_count) == (0, 2, len(expected))


async def test_optimistic_appenders_all_land_exactly_once(backend: Backend) -> None:
    """Each writer reads the version, appends only if nobody moved it, and retries when someone did."""
    async with open_memory(backend) as memory:
        await memory.stub.Append(memory_pb2.AppendRequest(key=memory.key(), messages=[chat_message("seed")]))
        conflicts = 0

        async def writer(w: int) -> None:
            nonlocal conflicts
            for _ in range(WRITERS * 2):
                session = await memory.stub.GetSession(memory_pb2.GetSessionRequest(key=memory.key()))
                request = memory_pb2.AppendRequest(
                    key=memory.key(), messages=[chat_message(f"w{w}")], expected_version=session.meta.version
                )
                try:
                    await memory.stub.Append(request)
                    return
                except grpc.aio.AioRpcError as err:
                    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION, err.details()
                    conflicts += 1
            pytest.fail(f"writer {w} never got its turn")

        await asyncio.gather(*(writer(w) for w in range(WRITERS)))
        got = await stored_ids(memory)
        assert sorted(got) == sorted(["seed", *(f"w{w}" for w in range(WRITERS))])
        assert conflicts > 0  # the writers really did race
        session = await memory.stub.GetSession(memory_pb2.GetSessionRequest(key=memory.key()))
        assert session.meta.version == WRITERS + 1


async def test_two_replicas_on_one_redis_share_every_session(redis_server: RedisServer) -> None:
    """Any replica can serve any turn: writes through two processes' stores land in one session."""
    backend = Backend("redis", redis_server.url)
    async with open_memory(backend) as first, open_memory(backend) as second:
        stubs = [first.stub, second.stub]  # two servers, two stores, one Redis

        async def writer(w: int) -> None:
            request = memory_pb2.AppendRequest(
                key=first.key(), messages=[chat_message(f"w{w}")], max_messages=1000
            )
            await stubs[w % 2].Append(request)
            await stubs[(w + 1) % 2].Append(request)  # the retry lands on the other replica

        await asyncio.gather(*(writer(w) for w in range(WRITERS)))
        for stub in stubs:
            session = await stub.GetSession(memory_pb2.GetSessionRequest(key=first.key()))
            assert sorted(m.message_id for m in session.messages) == sorted(f"w{w}" for w in range(WRITERS))
            assert session.meta.version == WRITERS

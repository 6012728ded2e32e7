"""The memory contract, run against both backends: a real redis-server on a free port, and the embedded store.

Every test talks gRPC to an in-process memory service, so status codes, validation and the
store's atomic operations are checked together, exactly as the gateway sees them.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Iterable, Iterator
from typing import Any

import grpc
import pytest
import redis.asyncio as aioredis

from clawdbot.services.memory.redis_store import session_keys
from clawdbot.services.memory.store import SessionKey
from clawdbot.services.memory.testing import (
    Backend,
    Memory,
    RedisServer,
    chat_message,
    open_memory,
    session_key,
)
from clawdbot.v1 import common_pb2, memory_pb2

PNG_DATA_URL = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="


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


@pytest.fixture
async def memory(backend: Backend) -> AsyncIterator[Memory]:
    async with open_memory(backend) as opened:
        yield opened


async def expect_code(code: grpc.StatusCode, call: Awaitable[object]) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    assert caught.value.code() == code, caught.value.details()
    return caught.value


async def append(
    memory: Memory, session_id: str, *messages: common_pb2.ChatMessage, **fields: Any
) -> memory_pb2.AppendResponse:
    return await memory.stub.Append(
        memory_pb2.AppendRequest(key=memory.key(session_id), messages=messages, **fields)
    )


def ids(messages: Iterable[common_pb2.ChatMessage]) -> list[str]:
    return [m.message_id for m in messages]


async def test_append_then_get_session_round_trips_every_field(memory: Memory) -> None:
    image = common_pb2.ContentPart(image_url=common_pb2.ImageUrl(url=PNG_DATA_URL, detail="low"))
    user = chat_message(
        "m1",
        "user",
        "这张图是什么?",
        12,
        parts=[common_pb2.ContentPart(text="这张图是什么?"), image],
        name="alice",
    )
    call = common_pb2.ToolCall(
        id="call-1",
        type="function",
        function=common_pb2.FunctionCall(name="lookup_order", arguments='{"order": "A-17"}'),
    )
    assistant = chat_message("m2", "assistant", " ", 7, tool_calls=[call])
    result = chat_message("m3", "tool", '{"status": "shipped"}', 5, tool_call_id="call-1")
    reply = await append(
        memory, "s1", user, assistant, result, user="alice", model="ref-336m", labels={"channel": "web"}
    )
    assert (reply.appended, reply.duplicates, reply.trimmed, reply.message_count, reply.version) == (
        3,
        0,
        0,
        3,
        1,
    )

    session = await memory.stub.GetSession(memory_pb2.GetSessionRequest(key=memory.key("s1")))
    for stored, sent in zip(session.messages, [user, assistant, result], strict=True):
        assert stored.created_at.ToMilliseconds() > 0  # stamped by the service when the caller gave none
        stored.ClearField("created_at")
        assert stored == sent
    assert session.messages[0].parts[1].image_url.url == PNG_DATA_URL
    meta = session.meta
    assert (meta.key.tenant, meta.key.session_id, meta.user, meta.model) == (
        memory.tenant,
        "s1",
        "alice",
        "ref-336m",
    )
    assert dict(meta.labels) == {"channel": "web"}
    assert (meta.message_count, meta.version) == (3, 1)
    assert abs(meta.created_at.ToMilliseconds() - time.time() * 1000) < 60_000
    assert meta.updated_at.ToMilliseconds() >= meta.created_at.ToMilliseconds()


async def test_retried_append_is_applied_once(memory: Memory) -> None:
    first = await append(memory, "s1", chat_message("a"), chat_message("b"))
    retry = await append(memory, "s1", chat_message("a"), chat_message("b"))
    partly = await append(memory, "s1", chat_message("b"), chat_message("c"))
    assert (retry.appended, retry.duplicates, retry.version) == (0, 2, first.version)
    assert (partly.appended, partly.duplicates, partly.version) == (1, 1, first.version + 1)
    session = await memory.stub.GetSession(memory_pb2.GetSessionRequest(key=memory.key("s1")))
    assert ids(session.messages) == ["a", "b", "c"]


async def test_append_trims_the_oldest_and_still_recognises_trimmed_ids(memory: Memory) -> None:
    reply = await append(memory, "s1", *[chat_message(f"m{i}") for i in range(5)], max_messages=3)
    assert (reply.appended, reply.trimmed, reply.message_count) == (5, 2, 3)
    again = await append(memory, "s1", chat_message("m0"), chat_message("m5"), max_messages=3)
    assert (again.appended, again.duplicates, again.trimmed, again.message_count) == (1, 1, 1, 3)
    session = await memory.stub.GetSession(memory_pb2.GetSessionRequest(key=memory.key("s1")))
    assert ids(session.messages) == ["m3", "m4", "m5"]


async def test_expected_version_guards_against_a_moved_session(memory: Memory) -> None:
    first = await append(memory, "s1", chat_message("a"))
    await expect_code(
        grpc.StatusCode.FAILED_PRECONDITION,
        append(memory, "s1", chat_message("b"), expected_version=first.version + 5),
    )
    ok = await append(memory, "s1", chat_message("b"), expected_version=first.version)
    # The retry of an applied call carries the old version; it is a duplicate, not a conflict.
    retry = await append(memory, "s1", chat_message("b"), expected_version=first.version)
    assert (ok.version, retry.version, retry.duplicates) == (first.version + 1, first.version + 1, 1)
    session = await memory.stub.GetSession(memory_pb2.GetSessionRequest(key=memory.key("s1")))
    assert ids(session.messages) == ["a", "b"]


async def test_get_context_fits_the_budget_keeps_tool_calls_whole_and_reports_omissions(
    memory: Memory,
) -> None:
    call = common_pb2.ToolCall(
        id="c1", type="function", function=common_pb2.FunctionCall(name="track", arguments="{}")
    )
    await append(
        memory,
        "s1",
        chat_message("u1", "user", tokens=10),
        chat_message("a1", "assistant", tokens=10),
        chat_message("u2", "user", tokens=10),
        chat_message("a2", "assistant", tokens=4, tool_calls=[call]),
        chat_message("t2", "tool", tokens=4, tool_call_id="c1"),
        chat_message("a3", "assistant", tokens=6),
    )
    await memory.stub.SetFacts(
        memory_pb2.SetFactsRequest(key=memory.key("s1"), facts={"order": "A-17", "lang": "zh"})
    )
    await memory.stub.SetSummary(
        memory_pb2.SetSummaryRequest(
            key=memory.key("s1"),
            summary=memory_pb2.Summary(text="greeted", covers_through_message_id="a1", token_count=3),
        )
    )
    # 3 (summary) + 6 (a3) + 8 (a2+t2) = 17; u2 (10) would make 27 > 20.
    ctx = await memory.stub.GetContext(memory_pb2.GetContextRequest(key=memory.key("s1"), token_budget=20))
    assert ids(ctx.messages) == ["a2", "t2", "a3"]
    assert list(ctx.omitted_message_ids) == ["u2"]
    assert ctx.tokens_used == 17
    assert (ctx.summary.text, ctx.summary.covers_through_message_id) == ("greeted", "a1")
    assert dict(ctx.facts) == {"order": "A-17", "lang": "zh"}
    assert ctx.meta.message_count == 6
    # A budget that splits the tool exchange takes neither half.
    tight = await memory.stub.GetContext(
        memory_pb2.GetContextRequest(key=memory.key("s1"), token_budget=3 + 6 + 5)
    )
    assert ids(tight.messages) == ["a3"]
    assert list(tight.omitted_message_ids) == ["u2", "a2", "t2"]
    nothing = await memory.stub.GetContext(memory_pb2.GetContextRequest(key=memory.key("s1"), token_budget=0))
    assert (list(nothing.messages), nothing.tokens_used, nothing.summary.text) == ([], 0, "")


async def test_summary_must_cover_a_message_of_the_session(memory: Memory) -> None:
    await append(memory, "s1", chat_message("a"))
    bad = memory_pb2.SetSummaryRequest(
        key=memory.key("s1"), summary=memory_pb2.Summary(text="x", covers_through_message_id="nope")
    )
    await expect_code(grpc.StatusCode.INVALID_ARGUMENT, memory.stub.SetSummary(bad))
    session = await memory.stub.GetSession(memory_pb2.GetSessionRequest(key=memory.key("s1")))
    assert (session.summary.text, session.meta.version) == ("", 1)


async def test_facts_are_set_removed_and_bounded(backend: Backend) -> None:
    async with open_memory(backend, max_facts=3) as memory:
        await append(memory, "s1", chat_message("a"))
        key = memory.key("s1")
        set1 = await memory.stub.SetFacts(
            memory_pb2.SetFactsRequest(key=key, facts={"order": "A-17", "lang": "zh", "name": "王"})
        )
        assert dict(set1.facts) == {"order": "A-17", "lang": "zh", "name": "王"}
        set2 = await memory.stub.SetFacts(
            memory_pb2.SetFactsRequest(key=key, facts={"lang": "en"}, remove=["name"])
        )
        assert dict(set2.facts) == {"order": "A-17", "lang": "en"}
        await expect_code(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            memory.stub.SetFacts(memory_pb2.SetFactsRequest(key=key, facts={"x": "1", "y": "2"})),
        )
        got = await memory.stub.GetFacts(memory_pb2.GetFactsRequest(key=key))
        assert dict(got.facts) == {"order": "A-17", "lang": "en"}
        # A slot learnt before the first message creates the session; too many facts create nothing.
        await expect_code(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            memory.stub.SetFacts(
                memory_pb2.SetFactsRequest(key=memory.key("new"), facts={f"k{i}": "v" for i in range(4)})
            ),
        )
        await expect_code(
            grpc.StatusCode.NOT_FOUND, memory.stub.GetFacts(memory_pb2.GetFactsRequest(key=memory.key("new")))
        )
        removed = await memory.stub.SetFacts(
            memory_pb2.SetFactsRequest(key=memory.key("new"), remove=["order"])
        )
        assert dict(removed.facts) == {}
        await expect_code(
            grpc.StatusCode.NOT_FOUND, memory.stub.GetFacts(memory_pb2.GetFactsRequest(key=memory.key("new")))
        )
        early = await memory.stub.SetFacts(
            memory_pb2.SetFactsRequest(key=memory.key("new"), facts={"order": "B-2"})
        )
        assert dict(early.facts) == {"order": "B-2"}
        first = await append(memory, "new", chat_message("a"))
        assert (first.appended, first.version, first.message_count) == (1, 2, 1)
        ctx = await memory.stub.GetContext(
            memory_pb2.GetContextRequest(key=memory.key("new"), token_budget=10)
        )
        assert (dict(ctx.facts), ids(ctx.messages)) == ({"order": "B-2"}, ["a"])
        listed = await memory.stub.ListSessions(memory_pb2.ListSessionsRequest(tenant=memory.tenant))
        assert [s.key.session_id for s in listed.sessions] == ["new", "s1"]


async def test_list_sessions_pages_through_one_tenant_only(memory: Memory) -> None:
    for n in range(5):
        await append(memory, f"s{n}", chat_message("a"))
    other = memory_pb2.AppendRequest(key=session_key(memory.tenant + "x", "s9"), messages=[chat_message("a")])
    await memory.stub.Append(other)
    seen: list[str] = []
    token = ""
    for _ in range(10):
        page = await memory.stub.ListSessions(
            memory_pb2.ListSessionsRequest(tenant=memory.tenant, page_size=2, page_token=token)
        )
        assert len(page.sessions) <= 2
        seen += [s.key.session_id for s in page.sessions]
        assert all(s.message_count == 1 and s.key.tenant == memory.tenant for s in page.sessions)
        token = page.next_page_token
        if not token:
            break
    assert seen == [f"s{n}" for n in range(5)]
    await expect_code(
        grpc.StatusCode.INVALID_ARGUMENT,
        memory.stub.ListSessions(memory_pb2.ListSessionsRequest(tenant=memory.tenant, page_token="%%%")),
    )
    await expect_code(
        grpc.StatusCode.INVALID_ARGUMENT, memory.stub.ListSessions(memory_pb2.ListSessionsRequest(tenant=""))
    )


async def test_delete_session_removes_every_key(memory: Memory) -> None:
    await append(memory, "s1", chat_message("a"), chat_message("b"))
    await memory.stub.SetFacts(memory_pb2.SetFactsRequest(key=memory.key("s1"), facts={"order": "A-17"}))
    await memory.stub.SetSummary(
        memory_pb2.SetSummaryRequest(
            key=memory.key("s1"), summary=memory_pb2.Summary(text="s", covers_through_message_id="a")
        )
    )
    deleted = await memory.stub.DeleteSession(memory_pb2.DeleteSessionRequest(key=memory.key("s1")))
    assert deleted.deleted
    await expect_code(
        grpc.StatusCode.NOT_FOUND, memory.stub.GetSession(memory_pb2.GetSessionRequest(key=memory.key("s1")))
    )
    await expect_code(
        grpc.StatusCode.NOT_FOUND, memory.stub.GetFacts(memory_pb2.GetFactsRequest(key=memory.key("s1")))
    )
    listed = await memory.stub.ListSessions(memory_pb2.ListSessionsRequest(tenant=memory.tenant))
    assert list(listed.sessions) == []
    again = await memory.stub.DeleteSession(memory_pb2.DeleteSessionRequest(key=memory.key("s1")))
    assert not again.deleted
    if memory.redis_url is not None:
        client = aioredis.Redis.from_url(memory.redis_url)
        try:
            assert await client.exists(*session_keys(SessionKey(memory.tenant, "s1"))) == 0
            assert [k async for k in client.scan_iter(match=f"*{memory.tenant}*")] == []
        finally:
            await client.aclose()
    # Nothing remembers the deleted ids: the same message may be stored again.
    fresh = await append(memory, "s1", chat_message("a"))
    assert (fresh.appended, fresh.version, fresh.message_count) == (1, 1, 1)


async def test_sessions_expire_after_the_ttl_unless_used(backend: Backend) -> None:
    async with open_memory(backend, ttl_seconds=1.5) as memory:
        await append(memory, "s1", chat_message("a"))
        await append(memory, "idle", chat_message("a"))
        started = time.monotonic()
        while time.monotonic() - started < 2.5:  # longer than the TTL: only use keeps s1 alive
            await memory.stub.GetContext(memory_pb2.GetContextRequest(key=memory.key("s1"), token_budget=10))
            await asyncio.sleep(0.2)
        await memory.stub.GetSession(memory_pb2.GetSessionRequest(key=memory.key("s1")))
        await expect_code(
            grpc.StatusCode.NOT_FOUND,
            memory.stub.GetSession(memory_pb2.GetSessionRequest(key=memory.key("idle"))),
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                await memory.stub.GetSession(memory_pb2.GetSessionRequest(key=memory.key("s1")))
            except grpc.aio.AioRpcError as err:
                assert err.code() == grpc.StatusCode.NOT_FOUND
                break
            await asyncio.sleep(0.2)
        else:
            pytest.fail("s1 did not expire once it was no longer used")
        listed = await memory.stub.ListSessions(memory_pb2.ListSessionsRequest(tenant=memory.tenant))
        assert list(listed.sessions) == []


async def test_bad_input_is_rejected_and_changes_nothing(memory: Memory) -> None:
    await append(memory, "s1", chat_message("a"), user="alice")
    before = await memory.stub.GetSession(memory_pb2.GetSessionRequest(key=memory.key("s1")))
    unknown = memory.key("unknown")
    for call in (
        memory.stub.GetSession(memory_pb2.GetSessionRequest(key=unknown)),
        memory.stub.GetContext(memory_pb2.GetContextRequest(key=unknown, token_budget=10)),
        memory.stub.GetFacts(memory_pb2.GetFactsRequest(key=unknown)),
        memory.stub.SetSummary(
            memory_pb2.SetSummaryRequest(key=unknown, summary=memory_pb2.Summary(text="x"))
        ),
        memory.stub.ExportSession(memory_pb2.ExportSessionRequest(key=unknown)),
    ):
        await expect_code(grpc.StatusCode.NOT_FOUND, call)
    empty_tenant = memory_pb2.AppendRequest(key=session_key("", "s1"), messages=[chat_message("b")])
    err = await expect_code(grpc.StatusCode.INVALID_ARGUMENT, memory.stub.Append(empty_tenant))
    assert "key.tenant" in (err.details() or "")
    huge = chat_message("b", text="x" * (5 * 1024 * 1024))
    err = await expect_code(grpc.StatusCode.RESOURCE_EXHAUSTED, append(memory, "s1", chat_message("c"), huge))
    assert "messages[1]" in (err.details() or "")
    err = await expect_code(
        grpc.StatusCode.INVALID_ARGUMENT,
        append(memory, "s1", chat_message("c"), chat_message("d", role="wizard")),
    )
    assert "messages[1].role" in (err.details() or "")
    err = await expect_code(
        grpc.StatusCode.INVALID_ARGUMENT,
        memory.stub.GetContext(memory_pb2.GetContextRequest(key=memory.key("s1"), token_budget=-1)),
    )
    assert "token_budget" in (err.details() or "")
    for bad in (
        [chat_message("")],  # no id: retries could not be deduplicated
        [chat_message("c"), chat_message("c")],
        [chat_message("c", role="tool")],  # a tool result without its call id
        [chat_message("c", role="user", tool_calls=[common_pb2.ToolCall(id="x")])],
        [chat_message("c", parts=[common_pb2.ContentPart(image_url=common_pb2.ImageUrl(url=""))])],
        [],
    ):
        await expect_code(grpc.StatusCode.INVALID_ARGUMENT, append(memory, "s1", *bad))
    await expect_code(
        grpc.StatusCode.INVALID_ARGUMENT,
        memory.stub.Append(
            memory_pb2.AppendRequest(key=session_key("t", "has space"), messages=[chat_message("c")])
        ),
    )
    await expect_code(
        grpc.StatusCode.NOT_FOUND,
        memory.stub.GetSession(memory_pb2.GetSessionRequest(key=session_key(memory.tenant, "unknown"))),
    )
    after = await memory.stub.GetSession(memory_pb2.GetSessionRequest(key=memory.key("s1")))
    assert after == before


async def test_export_is_one_json_document_with_everything(memory: Memory) -> None:
    image = common_pb2.ContentPart(image_url=common_pb2.ImageUrl(url=PNG_DATA_URL))
    await append(
        memory,
        "s1",
        chat_message("a", text="你好", parts=[image]),
        chat_message("b", "assistant", "hello"),
        user="alice",
    )
    await memory.stub.SetFacts(memory_pb2.SetFactsRequest(key=memory.key("s1"), facts={"lang": "zh"}))
    exported = await memory.stub.ExportSession(memory_pb2.ExportSessionRequest(key=memory.key("s1")))
    assert "你好" in exported.json  # readable, not \\u-escaped
    document = json.loads(exported.json)
    assert document["format"] == "clawdbot.memory.session/v1"
    session = document["session"]
    assert [m["message_id"] for m in session["messages"]] == ["a", "b"]
    assert session["messages"][0]["parts"][0]["image_url"]["url"] == PNG_DATA_URL
    assert session["facts"] == {"lang": "zh"}
    assert session["meta"]["user"] == "alice"


async def test_the_same_session_id_in_two_tenants_is_two_sessions(memory: Memory) -> None:
    await append(memory, "s1", chat_message("a"))
    other = session_key(memory.tenant + "-other", "s1")
    await memory.stub.Append(
        memory_pb2.AppendRequest(key=other, messages=[chat_message("a"), chat_message("b")])
    )
    mine = await memory.stub.GetSession(memory_pb2.GetSessionRequest(key=memory.key("s1")))
    theirs = await memory.stub.GetSession(memory_pb2.GetSessionRequest(key=other))
    assert (ids(mine.messages), ids(theirs.messages)) == (["a"], ["a", "b"])
    await memory.stub.DeleteSession(memory_pb2.DeleteSessionRequest(key=other))
    assert ids(
        (await memory.stub.GetSession(memory_pb2.GetSessionRequest(key=memory.key("s1")))).messages
    ) == ["a"]


async def test_a_full_redis_refuses_appends_as_resource_exhausted(redis_server: RedisServer) -> None:
    async with open_memory(Backend("redis", redis_server.url)) as memory:
        await append(memory, "s1", chat_message("a"))
        admin = aioredis.Redis.from_url(redis_server.url)
        try:
            await admin.config_set("maxmemory", "1")  # below what is used: noeviction refuses writes
            err = await expect_code(
                grpc.StatusCode.RESOURCE_EXHAUSTED, append(memory, "s1", chat_message("b"))
            )
            assert "full" in (err.details() or "")
        finally:
            await admin.config_set("maxmemory", "0")
            await admin.aclose()
        session = await memory.stub.GetSession(memory_pb2.GetSessionRequest(key=memory.key("s1")))
        assert ids(session.messages) == ["a"]

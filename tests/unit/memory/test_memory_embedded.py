"""The embedded store's expiry with a clock the test controls (the contract suite covers the rest)."""

from __future__ import annotations

import pytest

from clawdbot.services.memory.embedded_store import SWEEP_EVERY_S, EmbeddedStore
from clawdbot.services.memory.store import Limits, SessionKey, SessionUpdate
from clawdbot.services.memory.testing import chat_message
from clawdbot.shared.errors import NotFound


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(clock: Clock) -> EmbeddedStore:
    return EmbeddedStore(Limits(ttl_seconds=60, max_facts=8), clock=clock)


async def add(store: EmbeddedStore, key: SessionKey, message_id: str) -> None:
    await store.append(key, [chat_message(message_id)], SessionUpdate(), 100, None, 0)


async def test_a_session_expires_ttl_seconds_after_its_last_use(store: EmbeddedStore, clock: Clock) -> None:
    key = SessionKey("acme", "s1")
    await add(store, key, "a")
    clock.now += 59
    await store.get_session(key, touch=True)  # a use: the TTL starts again
    clock.now += 59
    await store.get_session(key, touch=False)  # a read that is not a use
    clock.now += 2
    with pytest.raises(NotFound):
        await store.get_session(key, touch=False)
    assert await store.list_sessions("acme", 10, None) == ([], None)
    assert not await store.delete_session(key)


async def test_expired_sessions_are_swept_without_being_read(store: EmbeddedStore, clock: Clock) -> None:
    for n in range(3):
        await add(store, SessionKey("acme", f"old{n}"), "a")
    clock.now += SWEEP_EVERY_S + 61
    await add(store, SessionKey("other", "new"), "a")  # any write sweeps
    assert set(store._sessions) == {"other"}


async def test_a_zero_ttl_keeps_sessions_forever(clock: Clock) -> None:
    store = EmbeddedStore(Limits(ttl_seconds=0, max_facts=8), clock=clock)
    key = SessionKey("acme", "s1")
    await add(store, key, "a")
    clock.now += 10 * 365 * 86400
    assert [m.message_id for m in (await store.get_session(key, touch=False)).messages] == ["a"]


async def test_an_expired_session_starts_afresh_with_its_old_ids_forgotten(
    store: EmbeddedStore, clock: Clock
) -> None:
    key = SessionKey("acme", "s1")
    await add(store, key, "a")
    clock.now += 61
    result = await store.append(key, [chat_message("a")], SessionUpdate(), 100, None, 0)
    assert (result.appended, result.version, result.message_count) == (1, 1, 1)

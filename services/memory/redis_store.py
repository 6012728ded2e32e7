"""The Redis backend: every session in four keys on one Cluster slot, every write one Lua script.

Key layout (the braces are the Redis Cluster hash tag, so a session's keys live together):
    clawdbot:{<tenant>:<session_id>}:meta    hash: created_ms, updated_ms, user, model, labels (JSON),
                                             version, summary (serialized Summary)
    clawdbot:{<tenant>:<session_id>}:msgs    list of serialized ChatMessage, oldest first
    clawdbot:{<tenant>:<session_id>}:ids     set of every message id appended (dedupes retries)
    clawdbot:{<tenant>:<session_id>}:facts   hash of facts/slots
    clawdbot:{<tenant>}:sessions             sorted set (all scores 0, ordered by id): the tenant's sessions
The tenant index is on another slot, so it is written beside the session's script (same round
trip, not the same atomic step): an id may outlive its session, and a listing that finds it
expired removes it.
Connection errors are retried with exponential backoff by the client; what still fails
becomes `Unavailable` (gRPC UNAVAILABLE), and the health watcher turns the service NOT_SERVING.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import OutOfMemoryError as RedisOutOfMemoryError
from redis.exceptions import TimeoutError as RedisTimeoutError

from clawdbot.services.memory import redis_scripts
from clawdbot.services.memory.settings import MemorySettings
from clawdbot.services.memory.store import AppendResult, Limits, MemoryStore, SessionKey, SessionUpdate
from clawdbot.shared.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unavailable,
)
from clawdbot.v1 import common_pb2, memory_pb2

PREFIX = "clawdbot"


def session_keys(key: SessionKey) -> list[str]:
    base = f"{PREFIX}:{{{key.tenant}:{key.session_id}}}"
    return [f"{base}:meta", f"{base}:msgs", f"{base}:ids", f"{base}:facts"]


def index_key(tenant: str) -> str:
    return f"{PREFIX}:{{{tenant}}}:sessions"


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _pairs(flat: Sequence[bytes]) -> dict[str, bytes]:
    return {flat[i].decode(): flat[i + 1] for i in range(0, len(flat), 2)}


def _meta(key: SessionKey, fields: Mapping[str, bytes], message_count: int) -> memory_pb2.SessionMeta:
    meta = memory_pb2.SessionMeta(
        key=memory_pb2.SessionKey(tenant=key.tenant, session_id=key.session_id),
        user=fields.get("user", b"").decode(),
        model=fields.get("model", b"").decode(),
        labels=json.loads(fields.get("labels", b"{}")) or {},
        message_count=message_count,
        version=int(fields.get("version", b"0")),
    )
    meta.created_at.FromMilliseconds(int(fields.get("created_ms", b"0")))
    meta.updated_at.FromMilliseconds(int(fields.get("updated_ms", b"0")))
    return meta


@contextmanager
def _unavailable() -> Iterator[None]:
    """Connection trouble that outlived the client's retries is the caller's UNAVAILABLE."""
    try:
        yield
    except (RedisConnectionError, RedisTimeoutError) as exc:  # BusyLoadingError (AOF replay) included
        raise Unavailable(f"redis is unreachable: {exc}") from exc
    except RedisOutOfMemoryError as exc:  # maxmemory reached under noeviction: nothing was written
        raise ResourceExhausted(f"redis is full: {exc}") from exc


def connect(settings: MemorySettings) -> aioredis.Redis:
    """A client over a blocking pool: bounded connections, timeouts, retries with backoff."""
    assert settings.redis_url is not None
    pool = aioredis.BlockingConnectionPool.from_url(
        settings.redis_url,
        max_connections=settings.redis_max_connections,
        timeout=settings.redis_pool_timeout_s,
        socket_timeout=settings.redis_socket_timeout_s,
        socket_connect_timeout=settings.redis_connect_timeout_s,
        health_check_interval=settings.redis_health_check_interval_s,
        retry=Retry(
            ExponentialWithJitterBackoff(
                cap=settings.redis_backoff_cap_s, base=settings.redis_backoff_base_s
            ),
            settings.redis_retries,
        ),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
    )
    return aioredis.Redis.from_pool(pool)


class RedisStore(MemoryStore):
    backend = "redis"

    def __init__(self, client: aioredis.Redis, limits: Limits) -> None:
        self.client = client
        self.limits = limits
        self._ttl_ms = int(limits.ttl_seconds * 1000)
        self._append = client.register_script(redis_scripts.APPEND)
        self._read = client.register_script(redis_scripts.READ)
        self._facts = client.register_script(redis_scripts.FACTS)
        self._summary = client.register_script(redis_scripts.SUMMARY)

    async def _index(self, key: SessionKey, *, add: bool) -> None:
        """List the session in its tenant's index (when the write may create it) and keep the index
        alive as long as its newest session: one round trip, sent alongside the session's script."""
        index = index_key(key.tenant)
        pipe = self.client.pipeline(transaction=False)
        if add:
            pipe.zadd(index, {key.session_id: 0})
        if self._ttl_ms > 0:
            pipe.pexpire(index, self._ttl_ms)
        else:
            pipe.persist(index)
        await pipe.execute()

    async def append(
        self,
        key: SessionKey,
        messages: Sequence[common_pb2.ChatMessage],
        update: SessionUpdate,
        max_messages: int,
        expected_version: int | None,
        now_ms: int,
    ) -> AppendResult:
        args: list[Any] = [
            now_ms,
            self._ttl_ms,
            max_messages,
            "" if expected_version is None else expected_version,
            update.user,
            update.model,
            json.dumps(dict(update.labels)) if update.labels else "",
        ]
        for msg in messages:
            args += [msg.message_id, msg.SerializeToString()]
        with _unavailable():
            reply, _ = await asyncio.gather(
                self._append(keys=session_keys(key), args=args), self._index(key, add=True)
            )
        if reply[0] == b"conflict":
            raise FailedPrecondition(
                f"session is at version {int(reply[1])}, not {expected_version}", field="expected_version"
            )
        version, appended, duplicates, trimmed, count = (int(x) for x in reply[1:])
        return AppendResult(version, appended, duplicates, trimmed, count)

    async def get_session(self, key: SessionKey, *, touch: bool) -> memory_pb2.Session:
        with _unavailable():
            reply = await self._read(keys=session_keys(key), args=[self._ttl_ms, "1" if touch else "0"])
        if reply is None:
            raise NotFound(f"no session {key.session_id!r} for tenant {key.tenant!r}", field="key")
        meta_flat, blobs, facts_flat = reply
        fields = _pairs(meta_flat)
        session = memory_pb2.Session(
            meta=_meta(key, fields, len(blobs)),
            facts={name: value.decode() for name, value in _pairs(facts_flat).items()},
        )
        for blob in blobs:
            session.messages.add().ParseFromString(blob)
        session.summary.ParseFromString(fields.get("summary", b""))
        return session

    async def list_sessions(
        self, tenant: str, page_size: int, after: str | None
    ) -> tuple[list[memory_pb2.SessionMeta], str | None]:
        index = index_key(tenant)
        lower = b"-" if after is None else b"(" + after.encode()
        found: list[memory_pb2.SessionMeta] = []
        with _unavailable():
            while len(found) <= page_size:
                want = page_size + 1 - len(found)
                ids = [_text(i) for i in await self.client.zrangebylex(index, lower, b"+", 0, want)]
                if not ids:
                    break
                pipe = self.client.pipeline(transaction=False)
                for session_id in ids:
                    meta, msgs, _, _ = session_keys(SessionKey(tenant, session_id))
                    pipe.hgetall(meta)
                    pipe.llen(msgs)
                replies = await pipe.execute()
                expired = []
                for n, session_id in enumerate(ids):
                    fields, count = replies[2 * n], replies[2 * n + 1]
                    if fields:
                        found.append(_meta(SessionKey(tenant, session_id), _pairs_dict(fields), count))
                    else:
                        expired.append(session_id)
                if expired:
                    await self.client.zrem(index, *expired)
                lower = b"(" + ids[-1].encode()
        if len(found) > page_size:
            page = found[:page_size]
            return page, page[-1].key.session_id
        return found, None

    async def delete_session(self, key: SessionKey) -> bool:
        with _unavailable():
            removed = await self.client.delete(*session_keys(key))
            await self.client.zrem(index_key(key.tenant), key.session_id)
        return bool(removed)

    async def update_facts(
        self, key: SessionKey, set_facts: Mapping[str, str], remove: Sequence[str], now_ms: int
    ) -> dict[str, str]:
        args: list[Any] = [now_ms, self._ttl_ms, self.limits.max_facts, len(set_facts)]
        for name, value in set_facts.items():
            args += [name, value]
        args += list(remove)
        with _unavailable():  # setting facts may create the session
            reply, _ = await asyncio.gather(
                self._facts(keys=session_keys(key), args=args), self._index(key, add=bool(set_facts))
            )
        if reply[0] == b"too_many":
            raise ResourceExhausted(f"at most {self.limits.max_facts} facts per session", field="facts")
        return {name: value.decode() for name, value in _pairs(reply[1]).items()}

    async def set_summary(self, key: SessionKey, summary: memory_pb2.Summary, now_ms: int) -> None:
        args: list[Any] = [
            now_ms,
            self._ttl_ms,
            summary.SerializeToString(),
            summary.covers_through_message_id,
        ]
        with _unavailable():
            reply, _ = await asyncio.gather(
                self._summary(keys=session_keys(key), args=args), self._index(key, add=False)
            )
        if reply == b"missing":
            raise NotFound(f"no session {key.session_id!r} for tenant {key.tenant!r}", field="key")
        if reply == b"unknown_message":
            raise InvalidArgument("not a message of this session", field="summary.covers_through_message_id")

    async def ping(self) -> None:
        with _unavailable():
            await self.client.ping()

    async def close(self) -> None:
        await self.client.aclose()


def _pairs_dict(fields: Mapping[bytes, bytes]) -> dict[str, bytes]:
    return {name.decode(): value for name, value in fields.items()}

"""The in-process store: what `make run` uses without Redis, with the same semantics as Redis.

Everything lives in one dict, so it is lost when the process exits and is not shared between
replicas; run one memory process, or use Redis. Expiry is lazy (checked on access) plus a sweep
on writes, with a clock that tests can replace.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from clawdbot.services.memory.store import AppendResult, Limits, MemoryStore, SessionKey, SessionUpdate
from clawdbot.shared.errors import FailedPrecondition, InvalidArgument, NotFound, ResourceExhausted
from clawdbot.v1 import common_pb2, memory_pb2

SWEEP_EVERY_S = 60.0


@dataclass
class _Session:
    created_ms: int
    updated_ms: int = 0
    user: str = ""
    model: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    version: int = 0
    messages: list[bytes] = field(default_factory=list)  # serialized, as Redis holds them
    seen_ids: set[str] = field(default_factory=set)  # every id ever appended, trimmed ones too
    facts: dict[str, str] = field(default_factory=dict)
    summary: bytes = b""
    expires_at: float | None = None


def _meta(key: SessionKey, session: _Session) -> memory_pb2.SessionMeta:
    meta = memory_pb2.SessionMeta(
        key=memory_pb2.SessionKey(tenant=key.tenant, session_id=key.session_id),
        user=session.user,
        model=session.model,
        labels=session.labels,
        message_count=len(session.messages),
        version=session.version,
    )
    meta.created_at.FromMilliseconds(session.created_ms)
    meta.updated_at.FromMilliseconds(session.updated_ms)
    return meta


class EmbeddedStore(MemoryStore):
    backend = "embedded"

    def __init__(self, limits: Limits, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits
        self._clock = clock
        self._sessions: dict[str, dict[str, _Session]] = {}
        # Every call below runs without awaiting inside the lock; the lock keeps it atomic should
        # one ever await (the same guarantee a Lua script gives on Redis).
        self._lock = asyncio.Lock()
        self._next_sweep = clock() + SWEEP_EVERY_S

    def _live(self, key: SessionKey) -> _Session | None:
        session = self._sessions.get(key.tenant, {}).get(key.session_id)
        if session is not None and session.expires_at is not None and session.expires_at <= self._clock():
            self._drop(key)
            return None
        return session

    def _drop(self, key: SessionKey) -> bool:
        tenant = self._sessions.get(key.tenant, {})
        found = tenant.pop(key.session_id, None) is not None
        if not tenant:
            self._sessions.pop(key.tenant, None)
        return found

    def _touch(self, session: _Session) -> None:
        ttl = self.limits.ttl_seconds
        session.expires_at = self._clock() + ttl if ttl > 0 else None

    def _existing(self, key: SessionKey) -> _Session:
        session = self._live(key)
        if session is None:
            raise NotFound(f"no session {key.session_id!r} for tenant {key.tenant!r}", field="key")
        return session

    def _sweep(self) -> None:
        now = self._clock()
        if now < self._next_sweep:
            return
        self._next_sweep = now + SWEEP_EVERY_S
        for tenant, sessions in list(self._sessions.items()):
            for session_id in [
                s for s, v in sessions.items() if v.expires_at is not None and v.expires_at <= now
            ]:
                self._drop(SessionKey(tenant, session_id))

    async def append(
        self,
        key: SessionKey,
        messages: Sequence[common_pb2.ChatMessage],
        update: SessionUpdate,
        max_messages: int,
        expected_version: int | None,
        now_ms: int,
    ) -> AppendResult:
        async with self._lock:
            self._sweep()
            found = self._live(key)
            session = found or _Session(created_ms=now_ms)
            fresh = [m for m in messages if m.message_id not in session.seen_ids]
            if fresh and expected_version is not None and expected_version != session.version:
                raise FailedPrecondition(
                    f"session is at version {session.version}, not {expected_version}",
                    field="expected_version",
                )
            trimmed = 0
            if fresh:
                if found is None:
                    self._sessions.setdefault(key.tenant, {})[key.session_id] = session
                session.messages.extend(m.SerializeToString() for m in fresh)
                session.seen_ids.update(m.message_id for m in fresh)
                session.version += 1
                session.updated_ms = now_ms
                session.user = update.user or session.user
                session.model = update.model or session.model
                session.labels.update(update.labels)
                trimmed = max(0, len(session.messages) - max_messages)
                del session.messages[:trimmed]
            if found is not None or fresh:
                self._touch(session)
            return AppendResult(
                version=session.version,
                appended=len(fresh),
                duplicates=len(messages) - len(fresh),
                trimmed=trimmed,
                message_count=len(session.messages),
            )

    async def get_session(self, key: SessionKey, *, touch: bool) -> memory_pb2.Session:
        async with self._lock:
            session = self._existing(key)
            if touch:
                self._touch(session)
            result = memory_pb2.Session(meta=_meta(key, session), facts=session.facts)
            for blob in session.messages:
                result.messages.add().ParseFromString(blob)
            result.summary.ParseFromString(session.summary)
            return result

    async def list_sessions(
        self, tenant: str, page_size: int, after: str | None
    ) -> tuple[list[memory_pb2.SessionMeta], str | None]:
        async with self._lock:
            ids = sorted(s for s in self._sessions.get(tenant, {}) if after is None or s > after)
            page: list[memory_pb2.SessionMeta] = []
            for session_id in ids:
                key = SessionKey(tenant, session_id)
                session = self._live(key)
                if session is None:
                    continue
                if len(page) == page_size:
                    return page, page[-1].key.session_id
                page.append(_meta(key, session))
            return page, None

    async def delete_session(self, key: SessionKey) -> bool:
        async with self._lock:
            return self._live(key) is not None and self._drop(key)

    async def update_facts(
        self, key: SessionKey, set_facts: Mapping[str, str], remove: Sequence[str], now_ms: int
    ) -> dict[str, str]:
        async with self._lock:
            found = self._live(key)
            if found is None and not set_facts:
                return {}
            session = found or _Session(created_ms=now_ms)
            result = {k: v for k, v in session.facts.items() if k not in remove} | dict(set_facts)
            if len(result) > self.limits.max_facts:
                raise ResourceExhausted(f"at most {self.limits.max_facts} facts per session", field="facts")
            if (
                found is None
            ):  # facts may be learnt before the first message: setting some creates the session
                self._sessions.setdefault(key.tenant, {})[key.session_id] = session
            if set_facts or remove:
                session.facts = result
                session.version += 1
                session.updated_ms = now_ms
            self._touch(session)
            return dict(session.facts)

    async def set_summary(self, key: SessionKey, summary: memory_pb2.Summary, now_ms: int) -> None:
        async with self._lock:
            session = self._existing(key)
            covers = summary.covers_through_message_id
            if covers and covers not in session.seen_ids:
                raise InvalidArgument(
                    "not a message of this session", field="summary.covers_through_message_id"
                )
            session.summary = summary.SerializeToString()
            session.version += 1
            session.updated_ms = now_ms
            self._touch(session)

    async def ping(self) -> None:
        return None

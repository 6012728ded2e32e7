"""The one interface both backends implement, and the value types that cross it.

Requests are validated before they reach a store (`validation.py`), so a store only has to be
atomic and faithful: Redis (`redis_store.py`) and the embedded store (`embedded_store.py`) must
behave identically, which the contract tests check for both.
Messages, metadata and summaries are the protobuf types of the contract, so nothing is converted
twice and every field (content parts, tool calls) round-trips by construction.
"""

from __future__ import annotations

import base64
import binascii
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from clawdbot.shared.errors import InvalidArgument
from clawdbot.v1 import common_pb2, memory_pb2


@dataclass(frozen=True)
class SessionKey:
    """A session is addressed by its tenant and its id; nothing is shared across tenants."""

    tenant: str
    session_id: str


@dataclass(frozen=True)
class SessionUpdate:
    """Metadata an Append carries along with its messages (applied only when a message is new)."""

    user: str = ""
    model: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class AppendResult:
    version: int
    appended: int
    duplicates: int
    trimmed: int
    message_count: int


@dataclass(frozen=True)
class Limits:
    """What a store itself enforces because only it sees the stored state."""

    ttl_seconds: float
    max_facts: int


class MemoryStore(ABC):
    """Session memory. Every mutating call is one atomic step and refreshes the session's TTL.

    Semantics both backends share:
    - `append` creates the session if needed; a message whose id the session has seen (even one
      trimmed since) is a duplicate and is skipped; if `expected_version` is given and the version
      moved, FailedPrecondition, unless every message is a duplicate (the retry of an applied call).
    - `version` increases with every change (append of a new message, facts, summary).
    - an unknown or expired session is NotFound everywhere except `append`, `update_facts` (both
      create it) and `delete_session` (False).
    """

    backend: str = "abstract"

    @abstractmethod
    async def append(
        self,
        key: SessionKey,
        messages: Sequence[common_pb2.ChatMessage],
        update: SessionUpdate,
        max_messages: int,
        expected_version: int | None,
        now_ms: int,
    ) -> AppendResult: ...

    @abstractmethod
    async def get_session(self, key: SessionKey, *, touch: bool) -> memory_pb2.Session:
        """The whole session; `touch` refreshes its TTL (GetContext is a use, an export is not)."""

    @abstractmethod
    async def list_sessions(
        self, tenant: str, page_size: int, after: str | None
    ) -> tuple[list[memory_pb2.SessionMeta], str | None]:
        """Sessions of a tenant ordered by id, starting after `after`; the last id when more follow."""

    @abstractmethod
    async def delete_session(self, key: SessionKey) -> bool:
        """Remove every key of the session; False when there was none."""

    @abstractmethod
    async def update_facts(
        self, key: SessionKey, set_facts: Mapping[str, str], remove: Sequence[str], now_ms: int
    ) -> dict[str, str]:
        """Set and remove facts at once; ResourceExhausted past `max_facts` (nothing changed).

        Setting facts on an unknown session creates it (a slot may be learnt before the first
        message is stored); only removing from an unknown session returns {} and creates nothing.
        """

    @abstractmethod
    async def set_summary(self, key: SessionKey, summary: memory_pb2.Summary, now_ms: int) -> None:
        """InvalidArgument when `covers_through_message_id` is not a message this session has seen."""

    @abstractmethod
    async def ping(self) -> None:
        """Raise `Unavailable` when the store cannot serve calls."""

    async def close(self) -> None:  # noqa: B027 (a store with nothing to release needs no override)
        """Release connections."""


_TOKEN_PREFIX = "after:"


def encode_page_token(session_id: str) -> str:
    return base64.urlsafe_b64encode((_TOKEN_PREFIX + session_id).encode()).decode().rstrip("=")


def decode_page_token(token: str) -> str | None:
    """The session id a page token continues after; InvalidArgument when it is not ours."""
    if not token:
        return None
    try:
        text = base64.b64decode(token + "=" * (-len(token) % 4), altchars=b"-_", validate=True).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise InvalidArgument("not a page token from ListSessions", field="page_token") from exc
    if not text.startswith(_TOKEN_PREFIX):
        raise InvalidArgument("not a page token from ListSessions", field="page_token")
    return text[len(_TOKEN_PREFIX) :]

"""Checks every request passes before it reaches a store, so a bad request changes nothing.

Each check raises the domain error that names the offending field (`key.tenant`,
`messages[2].role`, ...); the shared interceptor turns it into INVALID_ARGUMENT or
RESOURCE_EXHAUSTED with that field in the status details.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from clawdbot.services.memory.store import SessionKey
from clawdbot.shared.errors import InvalidArgument, ResourceExhausted
from clawdbot.v1 import common_pb2, memory_pb2

ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})
# No whitespace, control characters or braces anywhere (braces delimit the Redis Cluster hash tag), and no ':' in a
# tenant so that `<tenant>:<session>` inside a key can only be read one way.
_TENANT = re.compile(r"[^\s\x00-\x1f\x7f:{}]{1,128}")
_SESSION_ID = re.compile(r"[^\s\x00-\x1f\x7f{}]{1,256}")
MAX_ID_CHARS = 256
MAX_LABELS = 64
MAX_FACT_KEY_CHARS = 256
MAX_FACT_VALUE_BYTES = 64 * 1024
MAX_SUMMARY_BYTES = 256 * 1024


def tenant(value: str, field: str = "tenant") -> str:
    if not value:
        raise InvalidArgument("required", field=field)
    if not _TENANT.fullmatch(value):
        raise InvalidArgument("1-128 characters without whitespace, ':', '{' or '}'", field=field)
    return value


def session_key(key: memory_pb2.SessionKey, field: str = "key") -> SessionKey:
    checked_tenant = tenant(key.tenant, f"{field}.tenant")
    if not key.session_id:
        raise InvalidArgument("required", field=f"{field}.session_id")
    if not _SESSION_ID.fullmatch(key.session_id):
        raise InvalidArgument("1-256 characters without whitespace, '{' or '}'", field=f"{field}.session_id")
    return SessionKey(checked_tenant, key.session_id)


def _message(msg: common_pb2.ChatMessage, field: str, max_bytes: int) -> None:
    if msg.role not in ROLES:
        raise InvalidArgument(
            f"must be one of {', '.join(sorted(ROLES))}, not {msg.role!r}", field=f"{field}.role"
        )
    if not msg.message_id:
        raise InvalidArgument(
            "required (retried appends are deduplicated by it)", field=f"{field}.message_id"
        )
    if len(msg.message_id) > MAX_ID_CHARS:
        raise InvalidArgument(f"at most {MAX_ID_CHARS} characters", field=f"{field}.message_id")
    if msg.role == "tool" and not msg.tool_call_id:
        raise InvalidArgument(
            "a tool message needs the id of the call it answers", field=f"{field}.tool_call_id"
        )
    if msg.tool_calls and msg.role != "assistant":
        raise InvalidArgument("only assistant messages call tools", field=f"{field}.tool_calls")
    for j, call in enumerate(msg.tool_calls):
        if not call.id:
            raise InvalidArgument("required", field=f"{field}.tool_calls[{j}].id")
    for j, part in enumerate(msg.parts):
        kind = part.WhichOneof("part")
        if kind is None:
            raise InvalidArgument("a content part needs text or image_url", field=f"{field}.parts[{j}]")
        if kind == "image_url" and not part.image_url.url:
            raise InvalidArgument("required", field=f"{field}.parts[{j}].image_url.url")
    size = msg.ByteSize()
    if size > max_bytes:
        raise ResourceExhausted(f"{size} bytes; one message may have at most {max_bytes}", field=field)


def messages(
    items: Sequence[common_pb2.ChatMessage], max_bytes: int, max_count: int
) -> list[common_pb2.ChatMessage]:
    """Every message valid, ids unique within the request; the list unchanged."""
    if not items:
        raise InvalidArgument("at least one message", field="messages")
    if len(items) > max_count:
        raise ResourceExhausted(
            f"{len(items)} messages; one append may carry at most {max_count}", field="messages"
        )
    seen: set[str] = set()
    for i, msg in enumerate(items):
        _message(msg, f"messages[{i}]", max_bytes)
        if msg.message_id in seen:
            raise InvalidArgument(
                "repeats an earlier message_id of this request", field=f"messages[{i}].message_id"
            )
        seen.add(msg.message_id)
    return list(items)


def labels(values: Mapping[str, str]) -> dict[str, str]:
    if len(values) > MAX_LABELS:
        raise ResourceExhausted(f"at most {MAX_LABELS} labels", field="labels")
    for name, value in values.items():
        if not name or len(name) > MAX_FACT_KEY_CHARS or len(value) > MAX_FACT_KEY_CHARS:
            raise InvalidArgument(
                f"names 1-{MAX_FACT_KEY_CHARS} characters, values at most as long", field=f"labels[{name!r}]"
            )
    return dict(values)


def facts(set_facts: Mapping[str, str], remove: Sequence[str]) -> tuple[dict[str, str], list[str]]:
    for name, value in set_facts.items():
        if not name or len(name) > MAX_FACT_KEY_CHARS:
            raise InvalidArgument(
                f"fact names have 1-{MAX_FACT_KEY_CHARS} characters", field=f"facts[{name!r}]"
            )
        if len(value.encode()) > MAX_FACT_VALUE_BYTES:
            raise ResourceExhausted(
                f"a fact value has at most {MAX_FACT_VALUE_BYTES} bytes", field=f"facts[{name!r}]"
            )
    for i, name in enumerate(remove):
        if not name:
            raise InvalidArgument("empty fact name", field=f"remove[{i}]")
        if name in set_facts:
            raise InvalidArgument("a fact cannot be set and removed at once", field=f"remove[{i}]")
    return dict(set_facts), list(dict.fromkeys(remove))


def summary(value: memory_pb2.Summary) -> memory_pb2.Summary:
    if len(value.text.encode()) > MAX_SUMMARY_BYTES:
        raise ResourceExhausted(f"a summary has at most {MAX_SUMMARY_BYTES} bytes", field="summary.text")
    if len(value.covers_through_message_id) > MAX_ID_CHARS:
        raise InvalidArgument(f"at most {MAX_ID_CHARS} characters", field="summary.covers_through_message_id")
    return value


def token_budget(value: int) -> int:
    if value < 0:
        raise InvalidArgument(f"must be >= 0, not {value}", field="token_budget")
    return value


def page_size(value: int, default: int, maximum: int) -> int:
    if value > maximum:
        raise InvalidArgument(f"at most {maximum}", field="page_size")
    return value or default


def max_messages(value: int, default: int) -> int:
    return value or default

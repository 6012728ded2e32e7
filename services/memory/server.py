"""The gRPC surface of `clawdbot.v1.Memory`: validate, call the store, shape the reply.

Domain errors raised here or in a store become status codes in the shared interceptor.
"""

from __future__ import annotations

import json
import time

import grpc
from google.protobuf import json_format

from clawdbot.services.memory import validation
from clawdbot.services.memory.context import select_context
from clawdbot.services.memory.metrics import CONTEXT_TOKENS, MESSAGES, observe
from clawdbot.services.memory.settings import MemorySettings
from clawdbot.services.memory.store import MemoryStore, SessionUpdate, decode_page_token, encode_page_token
from clawdbot.v1 import common_pb2, memory_pb2, memory_pb2_grpc

EXPORT_FORMAT = "clawdbot.memory.session/v1"


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _stamped(msg: common_pb2.ChatMessage, now_ms: int) -> common_pb2.ChatMessage:
    """A copy with `created_at` set to now when the caller left it unset (the request stays as sent)."""
    copy = common_pb2.ChatMessage()
    copy.CopyFrom(msg)
    if not copy.HasField("created_at"):
        copy.created_at.FromMilliseconds(now_ms)
    return copy


class MemoryServicer(memory_pb2_grpc.MemoryServicer):
    def __init__(self, store: MemoryStore, settings: MemorySettings) -> None:
        self.store = store
        self.settings = settings
        self.backend = store.backend

    async def Append(
        self, request: memory_pb2.AppendRequest, context: grpc.aio.ServicerContext
    ) -> memory_pb2.AppendResponse:
        key = validation.session_key(request.key)
        s = self.settings
        messages = validation.messages(request.messages, s.max_stored_message_bytes, s.max_append_messages)
        update = SessionUpdate(request.user, request.model, validation.labels(request.labels))
        now_ms = _now_ms()
        messages = [_stamped(msg, now_ms) for msg in messages]
        expected = request.expected_version if request.HasField("expected_version") else None
        limit = validation.max_messages(request.max_messages, s.max_messages)
        with observe("append", self.backend, key.tenant):
            result = await self.store.append(key, messages, update, limit, expected, now_ms)
        MESSAGES.labels(self.backend, "appended").inc(result.appended)
        MESSAGES.labels(self.backend, "duplicate").inc(result.duplicates)
        MESSAGES.labels(self.backend, "trimmed").inc(result.trimmed)
        return memory_pb2.AppendResponse(
            version=result.version,
            appended=result.appended,
            duplicates=result.duplicates,
            trimmed=result.trimmed,
            message_count=result.message_count,
        )

    async def GetContext(
        self, request: memory_pb2.GetContextRequest, context: grpc.aio.ServicerContext
    ) -> memory_pb2.GetContextResponse:
        key = validation.session_key(request.key)
        budget = validation.token_budget(request.token_budget)
        with observe("get_context", self.backend, key.tenant):
            session = await self.store.get_session(key, touch=True)
        chosen = select_context(session.messages, session.summary, budget)
        CONTEXT_TOKENS.observe(chosen.tokens_used)
        return memory_pb2.GetContextResponse(
            messages=chosen.messages,
            summary=session.summary if chosen.include_summary else None,
            facts=session.facts,
            omitted_message_ids=chosen.omitted_message_ids,
            tokens_used=chosen.tokens_used,
            meta=session.meta,
        )

    async def GetSession(
        self, request: memory_pb2.GetSessionRequest, context: grpc.aio.ServicerContext
    ) -> memory_pb2.Session:
        key = validation.session_key(request.key)
        with observe("get_session", self.backend, key.tenant):
            return await self.store.get_session(key, touch=False)

    async def ListSessions(
        self, request: memory_pb2.ListSessionsRequest, context: grpc.aio.ServicerContext
    ) -> memory_pb2.ListSessionsResponse:
        tenant = validation.tenant(request.tenant)
        size = validation.page_size(
            request.page_size, self.settings.list_page_size, self.settings.max_list_page_size
        )
        after = decode_page_token(request.page_token)
        with observe("list_sessions", self.backend, tenant, one_session=False):
            page, last = await self.store.list_sessions(tenant, size, after)
        return memory_pb2.ListSessionsResponse(
            sessions=page, next_page_token=encode_page_token(last) if last is not None else ""
        )

    async def DeleteSession(
        self, request: memory_pb2.DeleteSessionRequest, context: grpc.aio.ServicerContext
    ) -> memory_pb2.DeleteSessionResponse:
        key = validation.session_key(request.key)
        with observe("delete_session", self.backend, key.tenant):
            deleted = await self.store.delete_session(key)
        return memory_pb2.DeleteSessionResponse(deleted=deleted)

    async def SetFacts(
        self, request: memory_pb2.SetFactsRequest, context: grpc.aio.ServicerContext
    ) -> memory_pb2.SetFactsResponse:
        key = validation.session_key(request.key)
        set_facts, remove = validation.facts(request.facts, request.remove)
        with observe("set_facts", self.backend, key.tenant):
            facts = await self.store.update_facts(key, set_facts, remove, _now_ms())
        return memory_pb2.SetFactsResponse(facts=facts)

    async def GetFacts(
        self, request: memory_pb2.GetFactsRequest, context: grpc.aio.ServicerContext
    ) -> memory_pb2.GetFactsResponse:
        key = validation.session_key(request.key)
        with observe("get_facts", self.backend, key.tenant):
            session = await self.store.get_session(key, touch=False)
        return memory_pb2.GetFactsResponse(facts=session.facts)

    async def SetSummary(
        self, request: memory_pb2.SetSummaryRequest, context: grpc.aio.ServicerContext
    ) -> memory_pb2.SetSummaryResponse:
        key = validation.session_key(request.key)
        summary = validation.summary(request.summary)
        with observe("set_summary", self.backend, key.tenant):
            await self.store.set_summary(key, summary, _now_ms())
        return memory_pb2.SetSummaryResponse()

    async def ExportSession(
        self, request: memory_pb2.ExportSessionRequest, context: grpc.aio.ServicerContext
    ) -> memory_pb2.ExportSessionResponse:
        key = validation.session_key(request.key)
        with observe("export_session", self.backend, key.tenant):
            session = await self.store.get_session(key, touch=False)
        return memory_pb2.ExportSessionResponse(json=export_json(session))


def export_json(session: memory_pb2.Session) -> str:
    """One self-describing JSON document (proto3 JSON mapping, field names as in the .proto)."""
    document = {
        "format": EXPORT_FORMAT,
        "session": json_format.MessageToDict(session, preserving_proto_field_name=True),
    }
    return json.dumps(document, ensure_ascii=False, indent=2)

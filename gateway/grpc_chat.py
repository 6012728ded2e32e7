"""gRPC `clawdbot.v1.Chat`: the same turn pipeline as POST /v1/chat/completions with stream=true.

The API key travels as `authorization: Bearer KEY` metadata and decides the tenant, as on REST;
a tenant sent in the request body is ignored. The per-key rate limits are the REST ones (the same
counters). Upstream gRPC errors pass through with their code.
"""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator

import grpc

from clawdbot.gateway.pipeline import ChatPipeline
from clawdbot.gateway.ratelimit import RateLimiter
from clawdbot.gateway.settings import GatewaySettings
from clawdbot.v1 import chat_pb2, chat_pb2_grpc


class ChatService(chat_pb2_grpc.ChatServicer):
    def __init__(self, pipeline: ChatPipeline, settings: GatewaySettings, limiter: RateLimiter) -> None:
        self.pipeline = pipeline
        self.settings = settings
        self.limiter = limiter

    async def _identify(self, context: grpc.aio.ServicerContext) -> tuple[str, str]:
        """(tenant, rate-limit key) of the caller; aborts UNAUTHENTICATED on a missing/wrong key."""
        keys = self.settings.api_keys
        if not keys:
            return self.settings.default_tenant, context.peer() or "anonymous"
        metadata = dict(context.invocation_metadata() or ())
        scheme, _, token = str(metadata.get("authorization", "")).partition(" ")
        if scheme.lower() == "bearer":
            for key, tenant in keys.items():
                if hmac.compare_digest(key.encode(), token.strip().encode()):
                    return tenant, key
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or incorrect API key")
        raise AssertionError("unreachable")  # abort raises

    async def Chat(
        self, request: chat_pb2.ChatRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[chat_pb2.ChatResponse]:
        tenant, key = await self._identify(context)
        if self.limiter.enabled:
            verdict = await self.limiter.admit(key)
            if not verdict.allowed:
                await context.abort(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"rate limit reached ({verdict.limit} per minute); retry in {verdict.retry_after_s}s",
                )
        turn_request = chat_pb2.ChatRequest()
        turn_request.CopyFrom(request)
        turn_request.tenant = tenant
        turn = self.pipeline.chat(turn_request, api="grpc")
        tokens = 0
        try:
            async for message in turn:
                tokens = message.usage.prompt_tokens + message.usage.completion_tokens or tokens
                yield message
        except grpc.aio.AioRpcError as exc:
            await context.abort(exc.code(), exc.details() or exc.code().name)
        finally:
            await turn.aclose()
            await self.limiter.charge_tokens(key, tokens)

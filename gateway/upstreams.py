"""The gateway's clients of the four services: one channel each, typed stubs, and the few
facts about the model that every turn needs (context length, eos ids), fetched once.

Every channel comes from `create_channel`, so each call has a deadline, UNAVAILABLE is retried
and the trace context travels with it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from clawdbot.gateway.settings import GatewaySettings
from clawdbot.shared.channels import create_channel
from clawdbot.v1 import (
    inference_pb2,
    inference_pb2_grpc,
    memory_pb2_grpc,
    plugins_pb2_grpc,
    tokenizer_pb2,
    tokenizer_pb2_grpc,
)

SERVICE_NAMES = {
    "tokenizer": "clawdbot.v1.Tokenizer",
    "inference": "clawdbot.v1.Inference",
    "plugins": "clawdbot.v1.Plugins",
    "memory": "clawdbot.v1.Memory",
}


@dataclass(frozen=True)
class ModelFacts:
    """What the pipeline needs to know about the served model."""

    name: str
    context_length: int
    eos_token_ids: tuple[int, ...]
    vocab_size: int
    grounding: bool = False  # the inference service constrains numbers to the grounding text


class Upstreams:
    """Channels and stubs for tokenizer, inference, plugins and memory."""

    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        max_bytes = settings.max_message_bytes
        self.channels: dict[str, grpc.aio.Channel] = {
            name: create_channel(
                target,
                unary_timeout_s=settings.upstream_timeout_s,
                stream_timeout_s=settings.stream_timeout_s,
                max_message_bytes=max_bytes,
            )
            for name, target in self.targets().items()
        }
        self.tokenizer = tokenizer_pb2_grpc.TokenizerStub(self.channels["tokenizer"])
        self.inference = inference_pb2_grpc.InferenceStub(self.channels["inference"])
        self.plugins = plugins_pb2_grpc.PluginsStub(self.channels["plugins"])
        self.memory = memory_pb2_grpc.MemoryStub(self.channels["memory"])
        self._facts: ModelFacts | None = None
        self._facts_lock = asyncio.Lock()

    def targets(self) -> dict[str, str]:
        s = self.settings
        return {
            "tokenizer": s.tokenizer_target,
            "inference": s.inference_target,
            "plugins": s.plugins_target,
            "memory": s.memory_target,
        }

    async def model_facts(self) -> ModelFacts:
        """ModelInfo + tokenizer Info, asked once and then remembered (the model does not change)."""
        if self._facts is not None:
            return self._facts
        async with self._facts_lock:
            if self._facts is None:
                info, tok = await asyncio.gather(
                    self.inference.ModelInfo(inference_pb2.ModelInfoRequest()),
                    self.tokenizer.Info(tokenizer_pb2.TokenizerInfoRequest()),
                )
                eos = tuple(info.eos_token_ids) or tuple(tok.eos_token_ids)
                self._facts = ModelFacts(
                    name=self.settings.model_name or info.name or "clawdbot",
                    context_length=int(info.context_length),
                    eos_token_ids=eos,
                    vocab_size=int(info.vocab_size or tok.vocab_size),
                    grounding=bool(info.grounding),
                )
        return self._facts

    async def health(self, timeout: float = 2.0) -> dict[str, bool]:
        """Whether each upstream's service reports SERVING."""

        async def serving(channel: grpc.aio.Channel, name: str) -> bool:
            stub = health_pb2_grpc.HealthStub(channel)
            try:
                reply = await stub.Check(
                    health_pb2.HealthCheckRequest(service=SERVICE_NAMES[name]), timeout=timeout
                )
            except grpc.aio.AioRpcError:
                return False
            return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

        async def one(name: str) -> bool:
            direct = self.settings.health_targets.get(name)
            if not direct:
                return await serving(self.channels[name], name)
            for target in direct:
                async with grpc.aio.insecure_channel(target) as channel:
                    if await serving(channel, name):
                        return True
            return False

        names = list(self.channels)
        results = await asyncio.gather(*(one(n) for n in names))
        return dict(zip(names, results, strict=True))

    async def close(self) -> None:
        await asyncio.gather(*(ch.close() for ch in self.channels.values()))

"""Scripted stand-ins for the four services, served by a real in-process grpc.aio server, so the
gateway's own logic (stop strings across deltas, cancellation, tool calls, error mapping) is
tested exactly, independent of model output. The end-to-end tests use the real services.

Tokens are characters: id = ord(char); the "model" replies with `Script.reply` one char per
message, after `Script.delay_s`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import grpc

from clawdbot.v1 import (
    common_pb2,
    inference_pb2,
    inference_pb2_grpc,
    memory_pb2,
    memory_pb2_grpc,
    plugins_pb2,
    plugins_pb2_grpc,
    tokenizer_pb2,
    tokenizer_pb2_grpc,
)

EOS = 3


@dataclass
class Script:
    reply: str = "Hello there!"
    delay_s: float = 0.0
    context_length: int = 4096
    context_blocks: list[common_pb2.ContextBlock] = field(default_factory=list)
    plugin_tools: list[common_pb2.ToolSpec] = field(default_factory=list)
    short_circuit: str = ""
    generate_error: grpc.StatusCode | None = None
    fail_generates: int = 0  # this many Generate calls die (INTERNAL) after sending ids, then it works
    # observations
    prompts: list[str] = field(default_factory=list)
    started: int = 0
    cancelled: int = 0
    finished: int = 0
    tool_invocations: list[str] = field(default_factory=list)
    sessions: dict[tuple[str, str], list[common_pb2.ChatMessage]] = field(default_factory=dict)
    summaries: dict[tuple[str, str], memory_pb2.Summary] = field(default_factory=dict)
    appends: int = 0
    filter_limit: int = 0  # > 0: the stream filter cuts the reply at this many chars
    filter_note: str = " [cut]"  # what the filter sends after its stop
    post_suffix: str = ""  # Postprocess appends this
    post_rewrite: str = ""  # Postprocess replaces the reply with this
    keep_messages: int = 0  # > 0: GetContext returns only the newest N, the rest as omitted


def _text(ids: list[int]) -> str:
    return "".join(chr(i) for i in ids if i != EOS)


class FakeTokenizer(tokenizer_pb2_grpc.TokenizerServicer):
    def __init__(self, script: Script) -> None:
        self.script = script

    async def Encode(self, request, context):
        return tokenizer_pb2.EncodeResponse(
            encodings=[tokenizer_pb2.Encoding(ids=[ord(c) for c in t]) for t in request.texts]
        )

    async def Decode(self, request, context):
        return tokenizer_pb2.DecodeResponse(texts=[_text(list(s.ids)) for s in request.sequences])

    async def ApplyChatTemplate(self, request, context):
        text = "".join(f"<{m.role}>{m.content}" for m in request.messages)
        text += "".join(f"<tool:{t.function.name}>" for t in request.tools)
        text += "<assistant>"
        self.script.prompts.append(text)
        return tokenizer_pb2.ApplyChatTemplateResponse(
            ids=[ord(c) for c in text], text=text, num_tokens=len(text)
        )

    async def DetokenizeStream(self, request_iterator, context):
        consumed = 0
        async for chunk in request_iterator:
            consumed += len(chunk.ids)
            yield tokenizer_pb2.DetokenizeDelta(text=_text(list(chunk.ids)), ids_consumed=consumed)

    async def CountTokens(self, request, context):
        per = [len(m.content) + 2 for m in request.messages]
        return tokenizer_pb2.CountTokensResponse(
            counts=[len(t) for t in request.texts], messages_tokens=sum(per), per_message=per
        )

    async def Info(self, request, context):
        return tokenizer_pb2.TokenizerInfo(name="fake", vocab_size=0x110000, eos_token_ids=[EOS])


class FakeInference(inference_pb2_grpc.InferenceServicer):
    def __init__(self, script: Script) -> None:
        self.script = script

    async def Generate(self, request, context) -> AsyncIterator[inference_pb2.GenerateResponse]:
        s = self.script
        if s.generate_error is not None:
            await context.abort(s.generate_error, "sampling.max_tokens: scripted failure")
        s.started += 1
        if s.fail_generates > 0:
            s.fail_generates -= 1
            yield inference_pb2.GenerateResponse(token_ids=[0xD800 - 1])  # a token whose text is held back
            await context.abort(grpc.StatusCode.INTERNAL, "stream reset by a dying replica")
        reply = s.reply
        limit = request.sampling.max_tokens or len(reply)
        try:
            for i, ch in enumerate(reply[:limit]):
                if s.delay_s:
                    await asyncio.sleep(s.delay_s)
                lp = []
                if request.sampling.logprobs:
                    lp = [
                        common_pb2.PositionLogprobs(
                            chosen=common_pb2.TokenLogprob(token_id=ord(ch), logprob=-0.5)
                        )
                    ]
                yield inference_pb2.GenerateResponse(token_ids=[ord(ch)], logprobs=lp)
                if i == limit - 1:
                    break
            finish = common_pb2.FINISH_REASON_LENGTH if limit < len(reply) else common_pb2.FINISH_REASON_STOP
            n = min(limit, len(reply))
            s.finished += 1
            yield inference_pb2.GenerateResponse(
                token_ids=[EOS] if finish == common_pb2.FINISH_REASON_STOP else [],
                finish_reason=finish,
                usage=common_pb2.Usage(
                    prompt_tokens=len(request.prompt_token_ids),
                    completion_tokens=n,
                    total_tokens=len(request.prompt_token_ids) + n,
                ),
            )
        except (asyncio.CancelledError, GeneratorExit):
            s.cancelled += 1
            raise

    async def ModelInfo(self, request, context):
        return inference_pb2.ModelInfoResponse(
            name="fake-model",
            context_length=self.script.context_length,
            vocab_size=0x110000,
            eos_token_ids=[EOS],
        )


class FakePlugins(plugins_pb2_grpc.PluginsServicer):
    def __init__(self, script: Script) -> None:
        self.script = script

    async def ListPlugins(self, request, context):
        return plugins_pb2.ListPluginsResponse(
            plugins=[plugins_pb2.PluginInfo(name="echo", kind="output_filter", enabled=True)]
        )

    async def Preprocess(self, request, context):
        s = self.script
        out = plugins_pb2.PreprocessResponse(
            user_message=request.messages[-1],
            context=s.context_blocks,
            tools=[*request.tools, *s.plugin_tools],
            facts={"seen": "yes"},
        )
        if s.short_circuit:
            out.short_circuit.reply = s.short_circuit
            out.short_circuit.reason = "cache"
            out.events.add(type="handoff", source="fake", message="to a human")
        return out

    async def Postprocess(self, request, context):
        s = self.script
        reply = s.post_rewrite or request.reply + s.post_suffix
        return plugins_pb2.PostprocessResponse(reply=reply)

    async def FilterStream(self, request_iterator, context):
        held = ""  # released word by word, the way a real filter avoids splitting a term
        sent = 0
        limit = self.script.filter_limit
        async for item in request_iterator:
            if item.WhichOneof("item") == "delta":
                held += item.delta
                if " " in held:
                    done, _, held = held.rpartition(" ")
                    out = done.replace("darn", "****") + " "
                    if limit and sent + len(out) > limit:  # a length limit: cut, stop, then a note
                        yield plugins_pb2.FilterStreamResponse(delta=out[: limit - sent], stop=True)
                        if self.script.filter_note:
                            await asyncio.sleep(0.05)
                            yield plugins_pb2.FilterStreamResponse(delta=self.script.filter_note)
                        return  # ends the call while the gateway may still be writing deltas
                    sent += len(out)
                    yield plugins_pb2.FilterStreamResponse(delta=out)
        if held:
            yield plugins_pb2.FilterStreamResponse(delta=held.replace("darn", "****"))

    async def InvokeTool(self, request, context):
        self.script.tool_invocations.append(request.call.function.name)
        return plugins_pb2.InvokeToolResponse(tool_call_id=request.call.id, content='{"status": "shipped"}')


class FakeMemory(memory_pb2_grpc.MemoryServicer):
    def __init__(self, script: Script) -> None:
        self.script = script

    def _messages(self, key: memory_pb2.SessionKey) -> list[common_pb2.ChatMessage]:
        return self.script.sessions.setdefault((key.tenant, key.session_id), [])

    async def Append(self, request, context):
        self.script.appends += 1
        self._messages(request.key).extend(request.messages)
        return memory_pb2.AppendResponse(appended=len(request.messages))

    async def GetContext(self, request, context):
        messages = self._messages(request.key)
        key = (request.key.tenant, request.key.session_id)
        summary = self.script.summaries.get(key, memory_pb2.Summary())
        ids = [m.message_id for m in messages]
        covered = ids.index(summary.covers_through_message_id) + 1 if summary.covers_through_message_id else 0
        keep = self.script.keep_messages or len(messages)
        newest = messages[-keep:] if keep < len(messages) else messages
        omitted = ids[covered : len(messages) - len(newest)]
        return memory_pb2.GetContextResponse(messages=newest, summary=summary, omitted_message_ids=omitted)

    async def SetSummary(self, request, context):
        self.script.summaries[(request.key.tenant, request.key.session_id)] = request.summary
        return memory_pb2.SetSummaryResponse()

    async def GetSession(self, request, context):
        key = (request.key.tenant, request.key.session_id)
        if key not in self.script.sessions:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"session {request.key.session_id} not found")
        meta = memory_pb2.SessionMeta(key=request.key, message_count=len(self.script.sessions[key]))
        return memory_pb2.Session(meta=meta, messages=self.script.sessions[key])

    async def DeleteSession(self, request, context):
        deleted = self.script.sessions.pop((request.key.tenant, request.key.session_id), None) is not None
        return memory_pb2.DeleteSessionResponse(deleted=deleted)

    async def SetFacts(self, request, context):
        return memory_pb2.SetFactsResponse(facts=request.facts)


async def start_fakes(script: Script) -> tuple[grpc.aio.Server, str]:
    """One server hosting all four fakes (the gateway points every upstream at it)."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_health.v1.health import aio as health_aio

    server = grpc.aio.server()
    tokenizer_pb2_grpc.add_TokenizerServicer_to_server(FakeTokenizer(script), server)
    inference_pb2_grpc.add_InferenceServicer_to_server(FakeInference(script), server)
    plugins_pb2_grpc.add_PluginsServicer_to_server(FakePlugins(script), server)
    memory_pb2_grpc.add_MemoryServicer_to_server(FakeMemory(script), server)
    health_servicer = health_aio.HealthServicer()
    for name in (
        "",
        "clawdbot.v1.Tokenizer",
        "clawdbot.v1.Inference",
        "clawdbot.v1.Plugins",
        "clawdbot.v1.Memory",
    ):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, f"127.0.0.1:{port}"

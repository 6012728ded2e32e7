"""One chat turn, top to bottom.

    memory.GetContext (history within the token budget)
 -> plugins.Preprocess (context blocks, tools, facts, instructions, maybe a short-circuit reply)
 -> tokenizer.ApplyChatTemplate
 -> inference.Generate -> tokenizer.DetokenizeStream -> stop strings -> plugins.FilterStream
 -> the caller (REST/SSE or gRPC Chat), delta by delta
 -> plugins.Postprocess, memory.Append (user and assistant turns with token counts), and a
    summary refresh when turns fell out of the budget.

The turn is an async generator of `chat_pb2.ChatResponse`: the REST handlers and the gRPC Chat
service both drive it, so they cannot drift apart. Closing it (the client disconnected) cancels
every call in flight, the inference request included, and nothing is written to memory: a turn
is stored whole or not at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field

import grpc
from opentelemetry import trace
from opentelemetry.context import Context

from clawdbot.gateway import metrics
from clawdbot.gateway.logprobs import name_tokens
from clawdbot.gateway.prompt import prompt_messages, split_system
from clawdbot.gateway.settings import GatewaySettings
from clawdbot.gateway.summary import refresh_summary
from clawdbot.gateway.textstream import StreamOutcome, TextPiece, detokenized, filtered, until_stop
from clawdbot.gateway.toolcalls import ToolCallScanner
from clawdbot.gateway.upstreams import ModelFacts, Upstreams
from clawdbot.gateway.verify import AnswerPlan, ReplyGuard
from clawdbot.shared.errors import InvalidArgument, NotFound
from clawdbot.shared.script import has_cjk
from clawdbot.shared.telemetry import tracer
from clawdbot.v1 import chat_pb2, common_pb2, inference_pb2, memory_pb2, plugins_pb2, tokenizer_pb2

log = logging.getLogger("clawdbot.gateway.pipeline")

MAX_TOOL_ROUNDS = 3  # plugin tools run inside the turn at most this many times
PREFIX_IDS = 4  # prompt ids handed to the detokenizer so the first delta's spacing is right
STOP = common_pb2.FINISH_REASON_STOP
GENERATE_ATTEMPTS = 3
MAX_GROUNDING_CHARS = 60_000  # under the inference service's cap; the context comes first in the prompt
REPLY_REWRITTEN = "reply_rewritten"  # event: Postprocess changed text the client already has
REPLY_REPLACED = "reply_replaced"  # event: the model's reply failed verification (gateway/verify.py)
# What a replica that died mid-call looks like through Envoy: reset before or after headers.
RETRY_CODES = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN)


@dataclass
class Turn:
    """The state of one turn as it moves through the pipeline."""

    request: chat_pb2.ChatRequest
    model: ModelFacts
    id: str = field(default_factory=lambda: f"chatcmpl-{uuid.uuid4().hex}")
    created: int = field(default_factory=lambda: int(time.time()))
    key: memory_pb2.SessionKey | None = None
    system: list[common_pb2.ChatMessage] = field(default_factory=list)
    new_messages: list[common_pb2.ChatMessage] = field(default_factory=list)
    context: memory_pb2.GetContextResponse = field(default_factory=memory_pb2.GetContextResponse)
    pre: plugins_pb2.PreprocessResponse = field(default_factory=plugins_pb2.PreprocessResponse)
    reply: str = ""  # the reply as it will be stored
    shown: str = ""  # the text the client has been sent
    tool_calls: list[common_pb2.ToolCall] = field(default_factory=list)
    outcome: StreamOutcome = field(default_factory=StreamOutcome)

    @property
    def turn_context(self) -> plugins_pb2.TurnContext:
        r = self.request
        ctx = plugins_pb2.TurnContext(tenant=r.tenant, session_id=r.session_id, user=r.user, turn_id=self.id)
        ctx.facts.update(self.context.facts)
        ctx.facts.update(self.pre.facts)
        ctx.metadata.update(self.pre.metadata)
        return ctx

    def response(self, **kwargs: object) -> chat_pb2.ChatResponse:
        return chat_pb2.ChatResponse(
            id=self.id,
            model=self.model.name,
            created=self.created,
            session_id=self.request.session_id,
            **kwargs,  # type: ignore[arg-type]
        )


class ChatPipeline:
    """Runs chat turns against the four upstream services."""

    def __init__(self, upstreams: Upstreams, settings: GatewaySettings) -> None:
        self.up = upstreams
        self.settings = settings
        self.background: set[asyncio.Task[None]] = set()

    async def chat(
        self, request: chat_pb2.ChatRequest, api: str = "rest", parent: Context | None = None
    ) -> AsyncGenerator[chat_pb2.ChatResponse, None]:
        """The turn as a stream: a first message (role, sources, events), content deltas, and a
        last message with the finish reason and usage."""
        started = time.perf_counter()
        turn = Turn(request=request, model=await self.up.model_facts())
        with tracer("clawdbot.gateway").start_as_current_span("chat.turn", context=parent) as span:
            span.set_attribute("clawdbot.turn_id", turn.id)
            span.set_attribute("clawdbot.session_id", request.session_id)
            self.validate(turn)
            await self.load_context(turn)
            await self.preprocess(turn)
            yield turn.response(
                choices=[chat_pb2.ChatDelta(index=0, role="assistant")],
                sources=list(turn.pre.context),
                events=list(turn.pre.events),
            )
            last: float | None = None
            metrics.ACTIVE_STREAMS.labels(api).inc()
            try:
                async for piece in self.reply_stream(turn):
                    now = time.perf_counter()
                    if piece.text:
                        if last is None:
                            metrics.TTFT.labels(api).observe(now - started)
                        else:
                            metrics.INTER_TOKEN.labels(api).observe(now - last)
                        last = now
                    turn.shown += piece.text
                    yield turn.response(choices=[await self.delta(turn, piece)])
            finally:
                metrics.ACTIVE_STREAMS.labels(api).dec()
            events = await self.postprocess(turn)
            if turn.reply != turn.shown and turn.reply.startswith(turn.shown):  # e.g. a disclaimer
                yield turn.response(
                    choices=[chat_pb2.ChatDelta(index=0, content=turn.reply[len(turn.shown) :])]
                )
            elif turn.reply != turn.shown:  # rewritten after the fact: tell the client the final text
                events.append(
                    common_pb2.Event(
                        type=REPLY_REWRITTEN,
                        source="gateway",
                        message="the stored reply differs from the stream",
                        data={"reply": turn.reply},
                    )
                )
            await asyncio.shield(self.store(turn))
            finish = turn.outcome.finish_reason or STOP
            metrics.TURNS.labels(api, common_pb2.FinishReason.Name(finish)).inc()
            metrics.TOKENS.labels("prompt").inc(turn.outcome.usage.prompt_tokens)
            metrics.TOKENS.labels("completion").inc(turn.outcome.usage.completion_tokens)
            yield turn.response(
                choices=[chat_pb2.ChatDelta(index=0, tool_calls=turn.tool_calls, finish_reason=finish)],
                usage=turn.outcome.usage,
                events=events,
            )

    # -- before the model -------------------------------------------------------------------

    def validate(self, turn: Turn) -> None:
        r = turn.request
        if r.model and r.model != turn.model.name:
            raise NotFound(
                f"The model `{r.model}` does not exist; this server serves `{turn.model.name}`", field="model"
            )
        if not r.messages:
            raise InvalidArgument("messages must contain at least one message", field="messages")
        if r.n > 1:
            raise InvalidArgument("only n=1 is supported", field="n")
        if r.max_tokens < 0 or r.max_tokens >= turn.model.context_length:
            raise InvalidArgument(
                f"max_tokens is {r.max_tokens}, but this model's context length is "
                f"{turn.model.context_length} tokens including the prompt",
                field="max_tokens",
            )
        system, rest = split_system(r.messages)
        if not rest:
            raise InvalidArgument("messages must contain a user message", field="messages")
        turn.system = system
        turn.new_messages = [self._with_id(m) for m in rest]
        if r.session_id:
            turn.key = memory_pb2.SessionKey(
                tenant=r.tenant or self.settings.default_tenant, session_id=r.session_id
            )

    @staticmethod
    def _with_id(message: common_pb2.ChatMessage) -> common_pb2.ChatMessage:
        out = common_pb2.ChatMessage()
        out.CopyFrom(message)
        if not out.message_id:
            out.message_id = f"msg-{uuid.uuid4().hex}"
        if not out.content and out.parts:
            out.content = "".join(p.text for p in out.parts if p.WhichOneof("part") == "text")
        return out

    async def load_context(self, turn: Turn) -> None:
        """Stored history that fits the budget left after this turn's messages and the reply."""
        if turn.key is None:
            return
        counted = await self.up.tokenizer.CountTokens(
            tokenizer_pb2.CountTokensRequest(messages=[*turn.system, *turn.new_messages])
        )
        for message, count in zip(
            turn.new_messages, list(counted.per_message)[len(turn.system) :], strict=False
        ):
            message.token_count = count
        ctx = turn.model.context_length
        reply = turn.request.max_tokens or self.settings.default_max_tokens
        budget = min(int(ctx * self.settings.history_share), ctx - reply - int(counted.messages_tokens))
        try:
            turn.context = await self.up.memory.GetContext(
                memory_pb2.GetContextRequest(key=turn.key, token_budget=max(0, budget))
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.NOT_FOUND:  # a new session has no context yet
                raise

    async def preprocess(self, turn: Turn) -> None:
        """The input-side plugins. Skipped when the turn continues a tool call (no new user text)."""
        if turn.new_messages[-1].role != "user":
            return
        turn.pre = await self.up.plugins.Preprocess(
            plugins_pb2.PreprocessRequest(
                turn=turn.turn_context,
                messages=[*turn.system, *turn.context.messages, *turn.new_messages],
                tools=turn.request.tools,
            )
        )
        if turn.pre.HasField("user_message") and (
            turn.pre.user_message.content or turn.pre.user_message.parts
        ):
            rewritten = common_pb2.ChatMessage()
            rewritten.CopyFrom(turn.pre.user_message)
            rewritten.message_id = turn.new_messages[-1].message_id
            rewritten.role = "user"
            rewritten.token_count = turn.new_messages[-1].token_count
            turn.new_messages[-1] = rewritten
        if turn.pre.facts and turn.key is not None:
            await self.up.memory.SetFacts(memory_pb2.SetFactsRequest(key=turn.key, facts=turn.pre.facts))

    # -- the model ----------------------------------------------------------------------------

    async def reply_stream(self, turn: Turn) -> AsyncGenerator[TextPiece, None]:
        """The reply's text: a plugin's short-circuit reply, or the model's, with plugin tools run
        inside the turn and client tools handed back as tool_calls."""
        short = turn.pre.short_circuit
        if short.reply:
            turn.reply = short.reply
            turn.outcome.finish_reason = STOP
            yield TextPiece(short.reply)
            return
        tools = list(turn.pre.tools) or list(turn.request.tools)
        plugin_tools = {t.function.name for t in turn.pre.tools} - {
            t.function.name for t in turn.request.tools
        }
        messages = prompt_messages(
            turn.system,
            turn.context.messages,
            turn.new_messages,
            instructions=turn.pre.instructions,
            context=turn.pre.context,
            facts={**turn.context.facts, **turn.pre.facts},
            summary=turn.context.summary.text,
        )
        usage = common_pb2.Usage()
        if prefix := turn.pre.metadata.get("reply_prefix", ""):  # e.g. the input guard's notice
            prefix += "" if has_cjk(prefix) else " "
            turn.reply += prefix
            yield TextPiece(prefix)
        for round_ in range(MAX_TOOL_ROUNDS):
            scanner = ToolCallScanner() if tools and turn.request.tool_choice != "none" else None
            guard = self.reply_guard(turn, messages)
            before = turn.reply
            async for piece in self.generate(turn, messages, tools):
                if piece.restart:  # nothing of the failed attempt was shown: forget what it wrote
                    scanner = ToolCallScanner() if scanner else None
                    guard = self.reply_guard(turn, messages)
                    turn.reply = before
                    continue
                text = scanner.feed(piece.text) if scanner else piece.text
                if guard is not None:
                    text = guard.feed(text)
                    if text:
                        turn.reply += text
                        yield TextPiece(text)
                    continue
                turn.reply += text
                yield TextPiece(text, piece.token_ids, piece.logprobs)
            tail = scanner.flush() if scanner else ""
            _add_usage(usage, turn.outcome.usage)
            calls = scanner.tool_calls() if scanner else []
            if guard is not None and not calls:
                guard.feed(tail)
                tail, final, reason = guard.finish()
                turn.reply = before + final[: len(final) - len(tail)]
                if reason:
                    self.replaced(turn, reason)
            if tail:
                turn.reply += tail
                yield TextPiece(tail)
            if not calls:
                break
            last_round = round_ == MAX_TOOL_ROUNDS - 1
            if last_round or any(c.function.name not in plugin_tools for c in calls):
                turn.tool_calls = calls
                turn.outcome.finish_reason = common_pb2.FINISH_REASON_TOOL_CALLS
                break
            messages += await self.run_plugin_tools(turn, calls)
        turn.outcome.usage.CopyFrom(usage)

    def grounded(self, turn: Turn) -> bool:
        """Numbers in a customer's chat reply come from the prompt (the engine's grounding constraint);
        a caller with its own tools, or with grounding off in the settings, gets the model unconstrained."""
        r = turn.request
        if not turn.model.grounding:
            return False
        if r.HasField("grounding"):
            return r.grounding
        return self.settings.grounding and turn.new_messages[-1].role == "user" and not r.tools

    def reply_guard(self, turn: Turn, messages: Sequence[common_pb2.ChatMessage]) -> ReplyGuard | None:
        """A guard for a customer's chat turn; none where the caller reads tokens or asked not to."""
        r = turn.request
        if (
            not self.settings.verify_replies
            or (r.HasField("verify") and not r.verify)
            or turn.new_messages[-1].role != "user"
            or r.tools
            or r.logprobs
            or r.return_token_ids
        ):
            return None
        plan = AnswerPlan.for_turn(list(turn.pre.context), dict(turn.pre.metadata), grounding_text(messages))
        return ReplyGuard(plan)

    def replaced(self, turn: Turn, reason: str) -> None:
        """Count, trace and report a reply that failed verification and was replaced."""
        kind = reason.split(":", 1)[0]
        metrics.REPLIES_REPLACED.labels(kind).inc()
        span = trace.get_current_span()
        span.add_event("reply_replaced", {"reason": reason})
        log.info("reply replaced by the extractive answer", extra={"reason": reason, "turn": turn.id})
        turn.outcome.events.append(
            common_pb2.Event(
                type=REPLY_REPLACED,
                source="gateway",
                message="the model's reply failed verification; the extractive answer was sent",
                data={"reason": kind},
            )
        )

    async def generate(
        self, turn: Turn, messages: Sequence[common_pb2.ChatMessage], tools: Sequence[common_pb2.ToolSpec]
    ) -> AsyncGenerator[TextPiece, None]:
        """Template, then Generate -> DetokenizeStream -> stop strings -> FilterStream."""
        r = turn.request
        shown_before = turn.shown
        template = await self.up.tokenizer.ApplyChatTemplate(
            tokenizer_pb2.ApplyChatTemplateRequest(
                messages=messages,
                tools=tools,
                add_generation_prompt=True,
                output=tokenizer_pb2.TEMPLATE_OUTPUT_IDS,
            )
        )
        prompt_ids = list(template.ids)
        max_tokens = self.reply_budget(
            turn.model, len(prompt_ids), r.max_tokens, self.settings.default_max_tokens
        )
        sampling = inference_pb2.SamplingParams(
            max_tokens=max_tokens,
            presence_penalty=r.presence_penalty,
            frequency_penalty=r.frequency_penalty,
            logprobs=r.logprobs,
            top_logprobs=r.top_logprobs,
            stop_token_ids=turn.model.eos_token_ids,
        )
        if r.HasField("temperature"):
            sampling.temperature = r.temperature
        if r.HasField("top_p"):
            sampling.top_p = r.top_p
        if r.HasField("seed"):
            sampling.seed = r.seed
        for attempt in range(1, GENERATE_ATTEMPTS + 1):
            turn.outcome = StreamOutcome()
            request = inference_pb2.GenerateRequest(
                request_id=f"{turn.id}-{uuid.uuid4().hex[:8]}", prompt_token_ids=prompt_ids, sampling=sampling
            )
            if self.grounded(turn):
                request.grounding.enabled = True
                request.grounding.text = grounding_text(messages)[:MAX_GROUNDING_CHARS]
            stream = until_stop(
                detokenized(self.up, request, turn.outcome, prompt_ids[-PREFIX_IDS:]), r.stop, turn.outcome
            )
            if turn.new_messages[-1].role == "user" and not turn.pre.short_circuit.reply:
                stream = filtered(self.up, turn.turn_context, stream, turn.outcome)
            started = False
            try:
                async for piece in stream:
                    if not started and attempt > 1:
                        yield TextPiece("", restart=True)  # what the last attempt produced is void
                    started = True
                    yield piece
                return
            except grpc.aio.AioRpcError as exc:
                # A replica that died before this reply showed anything: run it again elsewhere.
                # Envoy retries what never started upstream; this covers a stream that had begun
                # upstream but whose text was still held back (a partial character, a stop-string
                # prefix, a filter's buffer, the reply's verification), so the client cannot tell.
                shown = turn.shown != shown_before
                if shown or exc.code() not in RETRY_CODES or attempt == GENERATE_ATTEMPTS:
                    raise
                log.warning("generation failed before any output; retrying", extra={"code": exc.code().name})
            finally:
                await stream.aclose()

    @staticmethod
    def reply_budget(model: ModelFacts, prompt_tokens: int, asked: int, default: int) -> int:
        """`max_tokens` if it fits the context; without one, `default_max_tokens` or the room left."""
        room = model.context_length - prompt_tokens
        if asked > room or room <= 0:
            raise InvalidArgument(
                f"This model's context length is {model.context_length} tokens; the prompt has "
                f"{prompt_tokens} and max_tokens asks for {asked}",
                field="max_tokens" if asked else "messages",
            )
        if asked:
            return asked
        return min(room, default) if default > 0 else room

    async def run_plugin_tools(
        self, turn: Turn, calls: list[common_pb2.ToolCall]
    ) -> list[common_pb2.ChatMessage]:
        """Invoke the plugin-provided tools the model called; their results join the prompt."""
        results = await asyncio.gather(
            *(
                self.up.plugins.InvokeTool(plugins_pb2.InvokeToolRequest(turn=turn.turn_context, call=c))
                for c in calls
            )
        )
        assistant = common_pb2.ChatMessage(role="assistant", tool_calls=calls)
        answers = [
            common_pb2.ChatMessage(role="tool", tool_call_id=res.tool_call_id or c.id, content=res.content)
            for c, res in zip(calls, results, strict=True)
        ]
        turn.reply = ""
        return [assistant, *answers]

    async def delta(self, turn: Turn, piece: TextPiece) -> chat_pb2.ChatDelta:
        out = chat_pb2.ChatDelta(index=0, content=piece.text)
        if turn.request.return_token_ids:
            out.token_ids.extend(piece.token_ids)
        if turn.request.logprobs and piece.logprobs:
            out.logprobs.extend(await name_tokens(self.up, piece.logprobs))
        return out

    # -- after the model ----------------------------------------------------------------------

    async def postprocess(self, turn: Turn) -> list[common_pb2.Event]:
        """Output-side plugins on the finished reply; the (possibly changed) reply is what is stored."""
        if turn.new_messages[-1].role != "user" or not turn.reply:
            return list(turn.outcome.events)
        post = await self.up.plugins.Postprocess(
            plugins_pb2.PostprocessRequest(
                turn=turn.turn_context,
                reply=turn.reply,
                messages=[*turn.context.messages, *turn.new_messages],
            )
        )
        turn.reply = post.reply or turn.reply
        return [*turn.outcome.events, *post.events]

    async def store(self, turn: Turn) -> None:
        """Append the turn (new messages + the reply) in one atomic call, then refresh the summary."""
        if turn.key is None:
            return
        assistant = common_pb2.ChatMessage(
            role="assistant",
            content=turn.reply,
            tool_calls=turn.tool_calls,
            message_id=f"msg-{uuid.uuid4().hex}",
        )
        counted = await self.up.tokenizer.CountTokens(tokenizer_pb2.CountTokensRequest(messages=[assistant]))
        assistant.token_count = (
            counted.per_message[0] if counted.per_message else turn.outcome.usage.completion_tokens
        )
        for message in turn.new_messages:
            if not message.token_count:
                message.token_count = max(1, len(message.content) // 2)
        await self.up.memory.Append(
            memory_pb2.AppendRequest(
                key=turn.key,
                messages=[*turn.new_messages, assistant],
                user=turn.request.user,
                model=turn.model.name,
                max_messages=self.settings.max_session_messages,
            )
        )
        if turn.context.omitted_message_ids:
            task = asyncio.create_task(refresh_summary(self.up, turn.key, turn.context))
            self.background.add(task)
            task.add_done_callback(self.background.discard)

    async def drain(self) -> None:
        """Wait for background summary refreshes (on shutdown)."""
        if self.background:
            with contextlib.suppress(Exception):
                await asyncio.wait(self.background, timeout=10)


def grounding_text(messages: Sequence[common_pb2.ChatMessage]) -> str:
    """What a reply may take its facts from: the prompt's messages (system context, history, tools)."""
    return "\n".join(m.content for m in messages if m.content)


def _add_usage(total: common_pb2.Usage, part: common_pb2.Usage) -> None:
    total.prompt_tokens += part.prompt_tokens
    total.completion_tokens += part.completion_tokens
    total.total_tokens += part.total_tokens
    total.cached_prompt_tokens += part.cached_prompt_tokens

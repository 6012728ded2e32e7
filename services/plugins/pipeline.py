"""One turn through the plugins: Preprocess and Postprocess, in `order` (streams: `streaming.py`).

Each plugin call gets its own timeout, span and metrics. A call that fails or times out is
logged, traced and counted and the turn goes on without it (`on_error: skip`), or the turn
fails (`on_error: fail`). `InvalidArgument` from a plugin is the caller's bad input (an
undecodable image, a malformed data URL): it always reaches the caller as INVALID_ARGUMENT.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from opentelemetry.trace import Status, StatusCode

from clawdbot.services.plugins.loader import LoadedPlugin, PluginSet
from clawdbot.services.plugins.metrics import PLUGIN_CALLS, PLUGIN_LATENCY
from clawdbot.services.plugins.types import (
    ContextItem,
    Contribution,
    Event,
    InputState,
    ReplyState,
    ShortCircuitReply,
    ToolDef,
)
from clawdbot.shared.errors import DeadlineExceeded, InvalidArgument, Unavailable
from clawdbot.shared.telemetry import tracer

log = logging.getLogger("clawdbot.plugins")
T = TypeVar("T")


@dataclass
class Outcome:
    plugin: str
    kind: str
    status: str  # "ok" | "skipped" | "timeout" | "error" | "disabled"
    error: str = ""
    latency_ms: float = 0.0


@dataclass
class PreprocessResult:
    text: str
    context: list[ContextItem] = field(default_factory=list)
    tools: list[ToolDef] = field(default_factory=list)
    short_circuit: ShortCircuitReply | None = None
    short_circuit_plugin: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    facts: dict[str, str] = field(default_factory=dict)
    instructions: list[str] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)


@dataclass
class PostprocessResult:
    reply: str
    events: list[Event] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)


class PluginFailed(Exception):
    """A plugin failed and its on_error is "skip": the outcome is recorded, the turn goes on."""


async def call_plugin(
    loaded: LoadedPlugin,
    stage: str,
    work: Callable[[], Awaitable[T]],
    outcomes: list[Outcome],
    events: list[Event],
) -> T:
    """Run one plugin call under its timeout, as a span, counted; raise `PluginFailed` to skip it."""
    name, kind, entry = loaded.name, loaded.kind, loaded.entry
    started = time.perf_counter()
    status, error = "ok", ""
    span_name = f"plugin.{stage} {name}"
    with tracer("clawdbot.plugins").start_as_current_span(
        span_name, attributes={"plugin.name": name, "plugin.kind": kind, "plugin.stage": stage}
    ) as span:
        try:
            if loaded.setup_error is not None:
                raise RuntimeError(loaded.setup_error)
            return await asyncio.wait_for(work(), timeout=entry.timeout_ms / 1000)
        except InvalidArgument:
            status = "error"
            raise
        except TimeoutError:
            status, error = "timeout", f"no answer within {entry.timeout_ms} ms"
            if entry.on_error == "fail":
                raise DeadlineExceeded(f"plugin {name!r} ({kind}) timed out: {error}") from None
        except Exception as exc:
            status, error = "error", f"{type(exc).__name__}: {exc}"
            log.warning("plugin failed", extra={"plugin": name, "stage": stage, "error": error}, exc_info=exc)
            if entry.on_error == "fail":
                raise Unavailable(f"plugin {name!r} ({kind}) failed: {error}") from exc
        finally:
            elapsed = time.perf_counter() - started
            PLUGIN_CALLS.labels(name, kind, stage, status).inc()
            PLUGIN_LATENCY.labels(name, kind, stage).observe(elapsed)
            span.set_attribute("plugin.status", status)
            if status != "ok":
                span.set_status(Status(StatusCode.ERROR, error or status))
            outcomes.append(Outcome(name, kind, status, error, elapsed * 1000))
        events.append(Event(f"plugin_{status}", name, error, {"kind": kind, "stage": stage}))
        raise PluginFailed(error)


def _disabled(plugins: list[LoadedPlugin], stage: str) -> list[Outcome]:
    return [Outcome(p.name, p.kind, "disabled") for p in plugins if not p.entry.enabled]


def _merge_tools(client: list[ToolDef], extra: list[ToolDef]) -> list[ToolDef]:
    """The client's tools first; a plugin tool with a name the client already uses is dropped."""
    seen = {tool.name for tool in client}
    merged = list(client)
    for tool in extra:
        if tool.name not in seen:
            seen.add(tool.name)
            merged.append(tool)
    return merged


async def preprocess(plugins: PluginSet, state: InputState) -> PreprocessResult:
    """Run the input side in order; each plugin sees what the earlier ones did to the turn."""
    participants = plugins.with_side("input")
    result = PreprocessResult(text=state.text, outcomes=_disabled(participants, "input"))
    plugin_tools: list[ToolDef] = []
    for loaded in (p for p in participants if p.entry.enabled):
        if result.short_circuit is not None:
            result.outcomes.append(Outcome(loaded.name, loaded.kind, "skipped", "turn already answered"))
            continue

        async def work(loaded: LoadedPlugin = loaded) -> Contribution | None:
            return await loaded.plugin.preprocess(state)

        try:
            contribution = await call_plugin(loaded, "preprocess", work, result.outcomes, result.events)
        except PluginFailed:
            continue
        if contribution is None:
            continue
        _apply(result, state, contribution, loaded.name, plugin_tools)
    result.text = state.text
    result.tools = _merge_tools(state.client_tools, plugin_tools)
    result.context = rank_context(result.context)
    return result


MIN_CONTEXT_SCORE = 0.25  # blocks a plugin is less sure of only distract a small model


def rank_context(context: list[ContextItem]) -> list[ContextItem]:
    """The block that most surely answers the turn first (stable among equals).

    Each plugin scores its blocks in [0, 1] (how sure it is the block answers this turn: an order
    looked up by the number the customer just typed is 1, a passage on another intent's topic is
    low), so the model reads the answer in block [1] and the gateway verifies the reply against it
    and falls back to its `answer`.
    """
    kept = [c for c in context if c.score == 0.0 or c.score >= MIN_CONTEXT_SCORE]  # 0: the plugin gave none
    return sorted(kept, key=lambda item: -item.score)


def _apply(
    result: PreprocessResult, state: InputState, part: Contribution, name: str, tools: list[ToolDef]
) -> None:
    if part.text is not None:
        state.text = part.text
    for item in part.context:
        item.plugin = item.plugin or name
        result.context.append(item)
    tools.extend(part.tools)
    state.facts.update(part.facts)
    result.facts.update(part.facts)
    state.metadata.update(part.metadata)
    result.metadata.update(part.metadata)
    result.events.extend(part.events)
    result.instructions.extend(part.instructions)
    if part.short_circuit is not None:
        result.short_circuit = part.short_circuit
        result.short_circuit_plugin = name


async def postprocess(plugins: PluginSet, state: ReplyState) -> PostprocessResult:
    """Run the output side on a finished reply, in order; each plugin sees the reply so far."""
    participants = plugins.with_side("output")
    result = PostprocessResult(reply=state.reply, outcomes=_disabled(participants, "output"))
    for loaded in (p for p in participants if p.entry.enabled):
        current = ReplyState(state.turn, result.reply, state.messages)

        async def work(loaded: LoadedPlugin = loaded, current: ReplyState = current) -> Any:
            return await loaded.plugin.postprocess(current)

        try:
            change = await call_plugin(loaded, "postprocess", work, result.outcomes, result.events)
        except PluginFailed:
            continue
        if change is None:
            continue
        if change.reply is not None:
            result.reply = change.reply
        result.events.extend(change.events)
    return result

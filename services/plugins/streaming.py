"""Stream filtering of one streamed reply: the output-side plugins' filters chained in order."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any

from clawdbot.services.plugins.base import StreamFilter
from clawdbot.services.plugins.loader import LoadedPlugin, PluginSet
from clawdbot.services.plugins.metrics import PLUGIN_CALLS, PLUGIN_LATENCY
from clawdbot.services.plugins.pipeline import Outcome, PluginFailed, call_plugin
from clawdbot.services.plugins.types import Event, ReplyState, StreamStep, Turn
from clawdbot.shared.errors import Unavailable


class StreamPipeline:
    """The stream filters of one streamed reply, chained in order.

    Filters hold back what they cannot decide yet (a word that may be a banned term, digits that
    may become a phone number), so the caller only ever sees text no later delta can change.
    When the stream ends, output-side plugins without a stream filter (hand-off counters,
    the answer cache) see the whole reply as sent; they can add events but not change it.
    """

    def __init__(self, plugins: PluginSet, turn: Turn) -> None:
        self.plugins = plugins
        self.turn = turn
        self.outcomes: list[Outcome] = []
        self._filters: list[tuple[LoadedPlugin, StreamFilter]] = []
        self._sent: list[str] = []
        self.stopped = False
        for loaded in plugins.with_side("stream"):
            if not loaded.entry.enabled or loaded.setup_error is not None:
                continue
            made = loaded.plugin.stream_filter(turn)
            if made is not None:
                self._filters.append((loaded, made))

    def _run(self, loaded: LoadedPlugin, step: Callable[[], StreamStep], events: list[Event]) -> StreamStep:
        started = time.perf_counter()
        try:
            out = step()
        except Exception as exc:
            PLUGIN_CALLS.labels(loaded.name, loaded.kind, "stream", "error").inc()
            error = f"{type(exc).__name__}: {exc}"
            if loaded.entry.on_error == "fail":
                raise Unavailable(f"plugin {loaded.name!r} ({loaded.kind}) failed: {error}") from exc
            self._filters = [(lp, f) for lp, f in self._filters if lp is not loaded]
            self.outcomes.append(Outcome(loaded.name, loaded.kind, "error", error))
            events.append(Event("plugin_error", loaded.name, error, {"kind": loaded.kind, "stage": "stream"}))
            return StreamStep()
        PLUGIN_LATENCY.labels(loaded.name, loaded.kind, "stream").observe(time.perf_counter() - started)
        return out

    def _chain(self, delta: str, finishing: bool) -> StreamStep:
        events: list[Event] = []
        stop = False
        text = delta
        for loaded, stream_filter in list(self._filters):
            if text:
                step = self._run(loaded, functools.partial(stream_filter.feed, text), events)
                if (loaded, stream_filter) not in self._filters:  # it failed and was dropped: pass through
                    continue
                text, stop = step.text, stop or step.stop
                events.extend(step.events)
            else:
                text = ""
            if finishing or stop:
                tail = self._run(loaded, stream_filter.finish, events)
                text += tail.text
                events.extend(tail.events)
                stop = stop or tail.stop
        return StreamStep(text, events, stop)

    def feed(self, delta: str) -> StreamStep:
        if self.stopped:
            return StreamStep(stop=True)
        step = self._chain(delta, finishing=False)
        self._sent.append(step.text)
        self.stopped = step.stop
        return step

    async def finish(self) -> StreamStep:
        step = StreamStep(stop=self.stopped) if self.stopped else self._chain("", finishing=True)
        self._sent.append(step.text)
        await self._observe("".join(self._sent), step.events)
        return step

    async def _observe(self, reply: str, events: list[Event]) -> None:
        for loaded in self.plugins.with_side("output"):
            if not loaded.entry.enabled or "stream" in loaded.plugin.sides():
                continue
            state = ReplyState(self.turn, reply, [])

            async def work(loaded: LoadedPlugin = loaded, state: ReplyState = state) -> Any:
                return await loaded.plugin.postprocess(state)

            try:
                change = await call_plugin(loaded, "stream_end", work, self.outcomes, events)
            except PluginFailed:
                continue
            if change is not None:
                events.extend(change.events)

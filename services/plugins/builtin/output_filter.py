"""output_filter: banned terms replaced, replies cut at a length limit (at a word boundary),
required disclaimers appended; the same rules on streamed deltas.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field

from clawdbot.services.plugins.base import PluginContext, PluginSettings, StreamFilter, localized
from clawdbot.services.plugins.builtin.stream import HoldbackFilter, trailing_run
from clawdbot.services.plugins.builtin.text import find_term, has_cjk, is_word_char
from clawdbot.services.plugins.kinds import FilteredReply, OutputFilterPlugin
from clawdbot.services.plugins.types import Event, StreamStep, Turn


class Disclaimer(BaseModel):
    model_config = ConfigDict(extra="forbid")

    when: str  # a regular expression on the reply (case-insensitive); "" means always
    text: dict[str, str]  # by language: {"zh": ..., "en": ...}


class OutputFilterSettings(PluginSettings):
    banned_terms: list[str] = Field(default_factory=list)  # whole words for Latin terms, case-insensitive
    replacement: str = "***"
    max_chars: int | None = Field(default=None, gt=0)
    truncation_suffix: str = "…"
    disclaimers: list[Disclaimer] = Field(default_factory=list)


class ReplyFilter(OutputFilterPlugin[OutputFilterSettings]):
    settings_model = OutputFilterSettings
    description = "Replaces banned terms, enforces a length limit and appends required disclaimers."

    def __init__(self, name: str, settings: OutputFilterSettings, context: PluginContext) -> None:
        super().__init__(name, settings, context)
        self.terms = sorted({t.casefold() for t in settings.banned_terms if t}, key=len, reverse=True)
        self.disclaimers = [
            (re.compile(d.when, re.IGNORECASE) if d.when else None, d.text) for d in settings.disclaimers
        ]

    def replace_terms(self, text: str) -> tuple[str, int]:
        """Banned terms replaced; case-folding keeps lengths for the scripts we serve, so indices line up."""
        folded = text.casefold()
        if len(folded) != len(text):
            folded = text.lower()
        spans: list[tuple[int, int]] = []
        for term in self.terms:
            start = 0
            while (index := find_term(folded, term, start)) >= 0:
                end = index + len(term)
                if not any(index < e and s < end for s, e in spans):
                    spans.append((index, end))
                start = index + 1
        if not spans:
            return text, 0
        out, last = [], 0
        for s, e in sorted(spans):
            out += [text[last:s], self.settings.replacement]
            last = e
        out.append(text[last:])
        return "".join(out), len(spans)

    def truncate(self, text: str, limit: int) -> str:
        """At most `limit` characters plus the suffix, cut before a Latin word rather than inside it."""
        if len(text) <= limit:
            return text
        cut = limit
        while cut > 0 and is_word_char(text[cut - 1]) and is_word_char(text[cut]):
            cut -= 1
        if cut == 0:
            cut = limit
        return text[:cut].rstrip() + self.settings.truncation_suffix

    def disclaimer_for(self, reply: str, language: str) -> str | None:
        for pattern, texts in self.disclaimers:
            if pattern is None or pattern.search(reply):
                # Without a detected language, the reply's own script decides.
                text = localized(texts, language or ("zh" if has_cjk(reply) else "en"))
                if text and text not in reply:
                    return text
        return None

    def filter_reply(self, reply: str, turn: Turn) -> FilteredReply:
        events = []
        text, replaced = self.replace_terms(reply)
        if replaced:
            events.append(Event("banned_terms", self.name, data={"count": str(replaced)}))
        if self.settings.max_chars is not None and len(text) > self.settings.max_chars:
            text = self.truncate(text, self.settings.max_chars)
            events.append(Event("truncated", self.name, data={"max_chars": str(self.settings.max_chars)}))
        disclaimer = self.disclaimer_for(text, turn.language)
        if disclaimer:
            text = f"{text}\n\n{disclaimer}"
            events.append(Event("disclaimer", self.name))
        return FilteredReply(text, events)

    def stream_filter(self, turn: Turn) -> StreamFilter | None:
        return _StreamingReplyFilter(self, turn)


class _StreamingReplyFilter:
    """Banned terms through a hold-back, then the length limit on what is sent, then the disclaimer."""

    def __init__(self, owner: ReplyFilter, turn: Turn) -> None:
        self.owner = owner
        self.turn = turn
        self.sent = ""
        self.done = False
        longest = max((len(t) for t in owner.terms), default=0)

        def transform(text: str) -> tuple[str, list[Event]]:
            out, n = owner.replace_terms(text)
            return out, [Event("banned_terms", owner.name, data={"count": str(n)})] if n else []

        def hold(buffer: str) -> int:
            folded = buffer[-longest:].casefold() if longest else ""
            prefix = max(
                (k for k in range(1, len(folded) + 1) if any(t.startswith(folded[-k:]) for t in owner.terms)),
                default=0,
            )
            word = trailing_run(buffer, lambda b, i: is_word_char(b[i]))
            return max(prefix, word)

        self.terms = HoldbackFilter(transform, hold, max_hold=max(64, longest))

    def _limit(self, step: StreamStep) -> StreamStep:
        limit = self.owner.settings.max_chars
        if limit is None or self.done:
            self.sent += step.text
            return step
        if len(self.sent) + len(step.text) <= limit:
            self.sent += step.text
            return step
        whole = self.owner.truncate(self.sent + step.text, limit)
        text = (
            whole[len(self.sent) :] if whole.startswith(self.sent) else self.owner.settings.truncation_suffix
        )
        self.sent += text
        self.done = True
        events = [*step.events, Event("truncated", self.owner.name, data={"max_chars": str(limit)})]
        return StreamStep(text, events, stop=True)

    def feed(self, delta: str) -> StreamStep:
        if self.done:
            return StreamStep(stop=True)
        return self._limit(self.terms.feed(delta))

    def finish(self) -> StreamStep:
        if self.done:
            return StreamStep(stop=True)
        step = self._limit(self.terms.finish())
        if step.stop:
            return step
        disclaimer = self.owner.disclaimer_for(self.sent, self.turn.language)
        if disclaimer:
            step = StreamStep(
                step.text + f"\n\n{disclaimer}", [*step.events, Event("disclaimer", self.owner.name)]
            )
        return step

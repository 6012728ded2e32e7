"""Stop strings applied on the text side of a stream.

A stop string can span deltas ("</" then "end>"), so text that could still become the start of
a stop string is held back until the next delta decides it. The text before the first stop is
emitted; the stop string itself and everything after it never reach the client.
"""

from __future__ import annotations

from collections.abc import Sequence


class StopMatcher:
    """Feed deltas in order; get back the text that is safe to emit and whether a stop matched."""

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = [s for s in stops if s]
        self._held = ""
        self.stopped = False

    def _held_back_length(self, text: str) -> int:
        """Length of the longest suffix of `text` that is a proper prefix of some stop string."""
        longest = min(len(text), max((len(s) for s in self.stops), default=1) - 1)
        for k in range(longest, 0, -1):
            tail = text[-k:]
            if any(stop.startswith(tail) for stop in self.stops):
                return k
        return 0

    def feed(self, delta: str) -> str:
        """The part of held text + `delta` that can be emitted now; sets `stopped` on a match."""
        if self.stopped:
            return ""
        if not self.stops:
            return delta
        text = self._held + delta
        hits = [i for i in (text.find(stop) for stop in self.stops) if i >= 0]
        if hits:
            self.stopped = True
            self._held = ""
            return text[: min(hits)]
        keep = self._held_back_length(text)
        self._held = text[len(text) - keep :] if keep else ""
        return text[: len(text) - keep]

    def flush(self) -> str:
        """At the end of the stream the held text was not a stop after all: emit it."""
        text, self._held = self._held, ""
        return "" if self.stopped else text

"""Filtering streamed text without ever splitting what a filter must see whole.

A `HoldbackFilter` keeps back the tail of the text that a later delta could still turn into a
match (digits that may become a phone number, "guarant" that may become "guaranteed") and
passes the rest through its transform. Deltas are Python strings, whole code points, so UTF-8
is never split; the cut also never falls inside a Latin word or before a joiner.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable

from clawdbot.services.plugins.types import Event, StreamStep

Transform = Callable[[str], tuple[str, list[Event]]]
Holdback = Callable[[str], int]

_JOINERS = {"\u200d", "\u200c", "\ufe0f", "\ufe0e"}


def joins_next(char: str) -> bool:
    """Characters after which the text must not be cut (zero-width joiners, variation selectors)."""
    return char in _JOINERS


def starts_cluster_tail(char: str) -> bool:
    """Characters that belong to the character before them (combining marks, joiners)."""
    return char in _JOINERS or unicodedata.combining(char) != 0


class HoldbackFilter:
    """Feeds deltas through `transform`, holding back `holdback(buffer)` trailing characters.

    `max_hold` bounds the delay: past it the held text is released even if it might still grow
    into a match (a run of 200 digits is not a phone number the filter needs to see whole).
    """

    def __init__(self, transform: Transform, holdback: Holdback, max_hold: int = 128) -> None:
        self.transform = transform
        self.holdback = holdback
        self.max_hold = max_hold
        self.buffer = ""

    def _cut(self) -> int:
        keep = min(self.holdback(self.buffer), len(self.buffer))
        if keep > self.max_hold:
            keep = 0
        cut = len(self.buffer) - keep
        while 0 < cut < len(self.buffer) and (
            starts_cluster_tail(self.buffer[cut]) or joins_next(self.buffer[cut - 1])
        ):
            cut -= 1
        while cut == len(self.buffer) and cut > 0 and joins_next(self.buffer[cut - 1]):
            cut -= 1
        return cut

    def feed(self, delta: str) -> StreamStep:
        self.buffer += delta
        cut = self._cut()
        if cut <= 0:
            return StreamStep()
        ready, self.buffer = self.buffer[:cut], self.buffer[cut:]
        text, events = self.transform(ready)
        return StreamStep(text, events)

    def finish(self) -> StreamStep:
        ready, self.buffer = self.buffer, ""
        if not ready:
            return StreamStep()
        text, events = self.transform(ready)
        return StreamStep(text, events)


def trailing_run(buffer: str, belongs: Callable[[str, int], bool]) -> int:
    """Length of the longest suffix whose every character `belongs(buffer, index)`."""
    index = len(buffer)
    while index > 0 and belongs(buffer, index - 1):
        index -= 1
    return len(buffer) - index

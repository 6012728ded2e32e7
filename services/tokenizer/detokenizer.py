"""Incremental detokenization that never emits a broken character.

Decoding one id at a time is wrong for byte-level BPE (a Chinese character or an emoji spans
several ids) and for SentencePiece (a leading space depends on the previous id). So we keep a
small window: `prefix_offset..read_offset` is text already emitted, used only as context; we
decode the window with and without the new ids and emit the difference once it no longer ends in
an incomplete character. Concatenated deltas equal the decode of all ids, because the window
always starts at a character boundary and `flush()` emits whatever is held back at the end.

Byte-fallback tokenizers (SentencePiece `<0xNN>` tokens) decode a run of byte tokens as a whole:
`C2 80` is a character, `C2 80 80` is three replacement characters. So while the newest id is a
byte token, nothing is emitted (`holdback_ids`); the run is settled by the next ordinary id.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

REPLACEMENT = "\ufffd"

Decode = Callable[[Sequence[int], bool], str]


class IncrementalDetokenizer:
    def __init__(
        self,
        decode: Decode,
        *,
        skip_special_tokens: bool = False,
        prefix_ids: Sequence[int] = (),
        holdback_ids: frozenset[int] = frozenset(),
    ) -> None:
        self._decode = decode
        self._holdback = holdback_ids
        self._skip = skip_special_tokens
        self._ids: list[int] = list(prefix_ids)
        self._prefix_len = len(self._ids)
        # Context starts a few ids back so the first delta gets SentencePiece spaces right.
        self._prefix_offset = max(0, len(self._ids) - 5)
        self._read_offset = len(self._ids)

    @property
    def ids_consumed(self) -> int:
        """Ids received whose text has been emitted."""
        return self._read_offset - self._prefix_len

    @property
    def ids_received(self) -> int:
        return len(self._ids) - self._prefix_len

    def add(self, ids: Sequence[int]) -> str:
        """Take new ids; return the text that is now complete (possibly empty)."""
        if not ids:
            return ""
        self._ids.extend(ids)
        if self._ids[-1] in self._holdback:
            return ""
        prefix_text = self._decode(self._ids[self._prefix_offset : self._read_offset], self._skip)
        new_text = self._decode(self._ids[self._prefix_offset :], self._skip)
        if len(new_text) <= len(prefix_text) or new_text.endswith(REPLACEMENT):
            return ""
        if not new_text.startswith(prefix_text):
            # The context decodes differently once more ids follow (rare normalisations):
            # emit nothing now; flush() settles the difference against the full decode.
            return ""
        self._prefix_offset = self._read_offset
        self._read_offset = len(self._ids)
        return new_text[len(prefix_text) :]

    def flush(self) -> str:
        """Everything not yet emitted, incomplete characters included (as U+FFFD)."""
        prefix_text = self._decode(self._ids[self._prefix_offset : self._read_offset], self._skip)
        new_text = self._decode(self._ids[self._prefix_offset :], self._skip)
        self._prefix_offset = self._read_offset = len(self._ids)
        return new_text[len(prefix_text) :]

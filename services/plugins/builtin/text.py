"""Text helpers the built-ins share: normalisation, script tests, word boundaries."""

from __future__ import annotations

import re
import unicodedata

from clawdbot.shared.script import cjk_share, has_cjk

__all__ = ["cjk_share", "find_term", "has_cjk", "is_word_char", "normalize", "normalize_question"]

_PUNCT_OR_SPACE = re.compile(r"[\s\W_]+", re.UNICODE)


def normalize(text: str) -> str:
    """NFKC (full-width to half-width), case-folded, whitespace collapsed."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def normalize_question(text: str) -> str:
    """`normalize` without punctuation or spaces: "Hi!!" and "hi" and "你好？" match "你好"."""
    return _PUNCT_OR_SPACE.sub("", normalize(text))


def is_word_char(char: str) -> bool:
    """Latin letters and digits join into words; CJK characters stand alone."""
    return char.isascii() and (char.isalnum() or char in "_")


def find_term(haystack: str, needle: str, start: int = 0) -> int:
    """Index of `needle` in `haystack` from `start` as a whole word where it is Latin, else -1."""
    while True:
        index = haystack.find(needle, start)
        if index < 0:
            return -1
        before = haystack[index - 1] if index > 0 else ""
        after = haystack[index + len(needle)] if index + len(needle) < len(haystack) else ""
        left_ok = not (before and is_word_char(before) and is_word_char(needle[0]))
        right_ok = not (after and is_word_char(after) and is_word_char(needle[-1]))
        if left_ok and right_ok:
            return index
        start = index + 1

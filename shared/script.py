"""Which script a text is written in: the gateway (reply language checks), the plugins (language,
matching) and the evaluation all need the same answer, so it is decided in one place."""

from __future__ import annotations

import re

CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")


def has_cjk(text: str) -> bool:
    return CJK.search(text) is not None


def cjk_share(text: str) -> float:
    """The share of the letters that are Chinese characters (0 when there are no letters)."""
    letters = [c for c in text if c.isalpha()]
    if not letters:
        return 0.0
    return sum(1 for c in letters if CJK.match(c)) / len(letters)

"""pii: finds and masks personal data (e-mail, phone numbers including Chinese mobiles, Chinese
resident ID numbers with their checksum, bank cards with Luhn) in input, output and facts.

Masking keeps enough to recognise one's own data ("138****5678") unless `style: tag`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Literal

from pydantic import Field

from clawdbot.services.plugins.base import PluginSettings, StreamFilter
from clawdbot.services.plugins.builtin.stream import HoldbackFilter, trailing_run
from clawdbot.services.plugins.kinds import PiiMatch, PiiPlugin
from clawdbot.services.plugins.types import Contribution, Event, InputState, ReplyChange, ReplyState, Turn

_B = r"(?<![A-Za-z0-9])"
_E = r"(?![A-Za-z0-9])"
PATTERNS: dict[str, re.Pattern[str]] = {
    "cn_id": re.compile(
        _B + r"[1-9]\d{5}(?:18|19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\d{3}[\dXx]" + _E
    ),
    "bank_card": re.compile(_B + r"(?:\d{4}[ -]?){3}\d{1,7}" + _E),
    "phone": re.compile(r"(?<![A-Za-z0-9+])(?:\+?86[ -]?)?1[3-9]\d[ -]?\d{4}[ -]?\d{4}" + _E),
    "intl_phone": re.compile(r"(?<![A-Za-z0-9])\+\d{1,3}[ -]?\(?\d{1,4}\)?(?:[ -]?\d{2,4}){2,3}" + _E),
    "email": re.compile(
        r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}" + _E
    ),
}
_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"
_PII_CHARS = frozenset("0123456789+-()@._% ")


def cn_id_valid(number: str) -> bool:
    """GB 11643 checksum of an 18-character resident ID number."""
    total = sum(int(d) * w for d, w in zip(number[:17], _ID_WEIGHTS, strict=True))
    return _ID_CHECK[total % 11] == number[17].upper()


def luhn_valid(digits: str) -> bool:
    total = 0
    for i, char in enumerate(reversed(digits)):
        d = int(char)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _digits(text: str) -> str:
    return "".join(c for c in text if c.isdigit())


VALIDATORS: dict[str, Callable[[str], bool]] = {
    "cn_id": cn_id_valid,
    "bank_card": lambda s: 13 <= len(_digits(s)) <= 19 and luhn_valid(_digits(s)),
}


def _keep_last(value: str, keep: int) -> str:
    digits_seen = 0
    out = []
    for char in reversed(value):
        if char.isdigit() and digits_seen >= keep:
            out.append("*")
        else:
            digits_seen += char.isdigit()
            out.append(char)
    return "".join(reversed(out))


def partial_mask(kind: str, value: str) -> str:
    if kind == "email":
        local, _, domain = value.partition("@")
        return f"{local[0]}***@{domain}"
    if kind == "phone":
        digits = _digits(value)[-11:]
        return f"{digits[:3]}****{digits[-4:]}"
    if kind == "cn_id":
        return f"{value[:3]}{'*' * 13}{value[-2:]}"
    return _keep_last(value, 4)


PiiType = Literal["email", "phone", "intl_phone", "cn_id", "bank_card"]


def _all_types() -> list[PiiType]:
    return ["email", "phone", "intl_phone", "cn_id", "bank_card"]


class PiiSettings(PluginSettings):
    types: list[PiiType] = Field(default_factory=_all_types)
    style: Literal["partial", "tag"] = "partial"  # "138****5678" or "[PHONE]"
    mask_input: bool = True
    mask_output: bool = True
    # Public values never masked: the shop's own e-mail and hotline, which replies must show.
    allow: list[str] = Field(default_factory=list)


class PiiMasker(PiiPlugin[PiiSettings]):
    settings_model = PiiSettings
    description = "Masks e-mail, phone numbers, Chinese ID numbers (checksum) and bank cards (Luhn)."

    @property
    def _allowed(self) -> set[str]:
        return {value.lower() for value in self.settings.allow}

    def find(self, text: str) -> list[PiiMatch]:
        found: list[PiiMatch] = []
        taken: list[tuple[int, int]] = []
        for kind in ("cn_id", "bank_card", "email", "phone", "intl_phone"):
            if kind not in self.settings.types:
                continue
            for m in PATTERNS[kind].finditer(text):
                validate = VALIDATORS.get(kind)
                if validate is not None and not validate(m.group(0)):
                    continue
                if any(m.start() < end and start < m.end() for start, end in taken):
                    continue
                if m.group(0).lower() in self._allowed:
                    continue
                taken.append((m.start(), m.end()))
                found.append(PiiMatch(kind, m.start(), m.end()))
        return sorted(found, key=lambda match: match.start)

    def _replacement(self, kind: str, value: str) -> str:
        if self.settings.style == "tag":
            return f"[{kind.upper()}]"
        return partial_mask("phone" if kind == "phone" else kind, value)

    def mask(self, text: str) -> tuple[str, dict[str, int]]:
        counts: dict[str, int] = {}
        out, last = [], 0
        for match in self.find(text):
            out.append(text[last : match.start])
            out.append(self._replacement(match.type, text[match.start : match.end]))
            counts[match.type] = counts.get(match.type, 0) + 1
            last = match.end
        out.append(text[last:])
        return "".join(out), counts

    async def preprocess(self, state: InputState) -> Contribution | None:
        if not self.settings.mask_input:
            return None
        return await super().preprocess(state)

    async def postprocess(self, state: ReplyState) -> ReplyChange | None:
        if not self.settings.mask_output:
            return None
        return await super().postprocess(state)

    def stream_filter(self, turn: Turn) -> StreamFilter | None:
        if not self.settings.mask_output:
            return None

        def transform(text: str) -> tuple[str, list[Event]]:
            masked, counts = self.mask(text)
            events = (
                [Event("pii_masked", self.name, data={k: str(v) for k, v in counts.items()})]
                if counts
                else []
            )
            return masked, events

        def belongs(buffer: str, i: int) -> bool:
            char = buffer[i]
            return (
                char.isascii()
                and (char.isalnum() or char in _PII_CHARS)
                and (char != " " or _between_digits(buffer, i))
            )

        return HoldbackFilter(transform, lambda buffer: trailing_run(buffer, belongs), max_hold=96)


def _between_digits(buffer: str, i: int) -> bool:
    """A space inside "6222 0212 ..." belongs to the number; a space after a word does not."""
    return i > 0 and buffer[i - 1].isdigit() and (i + 1 == len(buffer) or buffer[i + 1].isdigit())

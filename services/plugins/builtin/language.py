"""language: the user's language by lingua, and the reply language's instructions and templates.

The detector covers only the configured languages (fewer languages: faster and more accurate)
and is built once per process, on first use, off the event loop.
"""

from __future__ import annotations

import asyncio
import re
import threading
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from clawdbot.services.plugins.base import PluginSettings
from clawdbot.services.plugins.kinds import LanguageGuess, LanguagePlugin
from clawdbot.services.plugins.types import Contribution, InputState
from clawdbot.shared.script import CJK, cjk_share

_DETECTORS: dict[tuple[str, ...], Any] = {}
_IDS = re.compile(r"[A-Za-z]{1,4}\d{4,}")  # order ids, tracking numbers, SKUs say nothing of the language
_LETTERS = re.compile(r"[^\W\d_]", re.UNICODE)
_WORD = re.compile(r"[A-Za-z]+(?:'[a-z]+)?")
# Quoted text; a single quote opens only after a non-letter and closes before one (not "it's").
_QUOTED = re.compile(r"(?<![A-Za-z])'[^']*'(?![A-Za-z])|\"[^\"]*\"|“[^”]*”|‘[^’]*’")
_BUILD_LOCK = threading.Lock()


def chinese_leads(text: str) -> bool:
    """As many Chinese characters as plain English words, or more, in mixed text.

    A Chinese character counts as a word (short Chinese asides are one or two words long but read
    as a clause); English words count only when written in lower case, since names carry no
    language ("Xiaomi", "MacBook Air", "VAT", "iPhone"); ids and quoted text ("帮我translate一下
    'good morning'") are left out. Ties go to Chinese: "human agent 谢谢" was written by a reader of
    Chinese."""
    bare = _IDS.sub(" ", _QUOTED.sub(" ", text))
    english = sum(1 for word in _WORD.findall(bare) if word.islower())
    return len(CJK.findall(bare)) >= english


def detector_for(codes: tuple[str, ...]) -> Any:
    """One lingua detector per language set per process (building one is the slow part)."""
    with _BUILD_LOCK:
        if codes not in _DETECTORS:
            from lingua import IsoCode639_1, Language, LanguageDetectorBuilder

            languages = [Language.from_iso_code_639_1(getattr(IsoCode639_1, code.upper())) for code in codes]
            _DETECTORS[codes] = LanguageDetectorBuilder.from_languages(*languages).build()
        return _DETECTORS[codes]


class LanguageTemplate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    locale: str  # "zh-CN", "en-US"
    instruction: str  # the system instruction for replies in this language
    templates: dict[str, str] = Field(default_factory=dict)  # locale-specific phrases, passed as metadata


class LanguageSettings(PluginSettings):
    languages: list[str] = Field(default_factory=lambda: ["zh", "en"], min_length=1)
    default: str = "zh"
    min_confidence: float = Field(default=0.5, ge=0.0, le=1.0)
    templates: dict[str, LanguageTemplate] = Field(default_factory=dict)


class LinguaLanguage(LanguagePlugin[LanguageSettings]):
    settings_model = LanguageSettings
    description = "Detects the user's language with lingua and sets the reply language, locale and templates."

    def _detect(self, text: str) -> LanguageGuess:
        if not text.strip():
            return LanguageGuess(self.settings.default, 0.0)
        if "zh" in self.settings.languages and (cjk_share(text) >= 0.3 or len(CJK.findall(text)) >= 2):
            # Mixed text: Chinese unless the English carries the sentence ("我的 Xiaomi 14 订单" is
            # Chinese; "does the 65W charger work with my laptop? 我的是 Dell 的" is English).
            if chinese_leads(text):
                return LanguageGuess("zh", max(0.9, cjk_share(text)))
            return LanguageGuess("en", 0.9)
        detector = detector_for(tuple(sorted(self.settings.languages)))
        values = detector.compute_language_confidence_values(text)
        if not values:
            return LanguageGuess(self.settings.default, 0.0)
        best = values[0]
        code = best.language.iso_code_639_1.name.lower()
        if best.value < self.settings.min_confidence:
            return LanguageGuess(self.settings.default, float(best.value))
        return LanguageGuess(code, float(best.value))

    async def detect(self, text: str) -> LanguageGuess:
        return await asyncio.to_thread(self._detect, text)

    def instructions(self, code: str) -> list[str]:
        template = self.settings.templates.get(code)
        return [template.instruction] if template else []

    async def preprocess(self, state: InputState) -> Contribution | None:
        guess = await self.detect(state.text)
        if len(_LETTERS.findall(_IDS.sub("", state.text))) < 2:
            # "SO20261125001", "?", "ok": too little to tell; the conversation's language holds.
            # With no conversation yet, the shop's default language (an id's Latin letters are no
            # evidence of English).
            earlier = [m.content for m in state.messages[:-1] if m.role == "user" and m.content.strip()]
            guess = await self.detect(earlier[-1]) if earlier else LanguageGuess(self.settings.default, 0.0)
        metadata = {"language": guess.code, "language_confidence": f"{guess.confidence:.2f}"}
        template = self.settings.templates.get(guess.code)
        if template is not None:
            metadata["locale"] = template.locale
            metadata.update({f"template.{key}": value for key, value in template.templates.items()})
        return Contribution(metadata=metadata, instructions=self.instructions(guess.code))

"""intent: rules first (regular expressions, then keywords), then the nearest labelled example.

Several intents' keywords can occur in one message ("小米14怎么退货"): the intent with the highest
`priority` wins, then the most keyword characters matched, so a policy question that names a product is about the
policy. Latin keywords (six letters or more) also match a typo within one edit or swap (`retrun`, `shiping`), since customers type
fast. Similarity is the cosine of character n-gram counts (1- and 2-grams for Chinese, words and
3-grams for Latin text), which works in both languages without a model.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field
from rapidfuzz.distance import OSA

from clawdbot.services.plugins.base import PluginContext, PluginSettings, localized
from clawdbot.services.plugins.builtin.text import find_term, normalize
from clawdbot.services.plugins.kinds import IntentPlugin, IntentResult
from clawdbot.services.plugins.types import ContextItem, InputState


class IntentDef(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    keywords: list[str] = Field(default_factory=list)  # any of them (whole words for Latin) -> this intent
    patterns: list[str] = Field(default_factory=list)  # regular expressions, case-insensitive
    examples: list[str] = Field(default_factory=list)
    route: str = ""  # where the gateway should send the turn ("model", "human", "tool:lookup_order")
    priority: int = 1  # among intents whose keywords all occur, the highest priority wins
    # What the shop says to this intent when nothing more specific answers it ({"zh": ..., "en": ...}):
    # a context block with this answer, scored `reply_score`, so an order or product block still wins.
    reply: dict[str, str] = Field(default_factory=dict)
    reply_score: float = Field(default=0.6, ge=0.0, le=1.0)
    # Said before the answer when this turn also named one of `notice_facts` (a complaint about an
    # order: the apology, then the order's status from the lookup).
    notice: dict[str, str] = Field(default_factory=dict)
    notice_facts: list[str] = Field(default_factory=list)


class IntentSettings(PluginSettings):
    intents: list[IntentDef] = Field(default_factory=list)
    file: str | None = None  # a YAML file with an `intents:` list, merged with the inline ones
    min_similarity: float = Field(default=0.3, ge=0.0, le=1.0)
    default: str = "other"
    # A catalogue (JSON with `products`: names and aliases): naming a product is a keyword of this
    # intent, at priority 0, so "do you have the mx keys?" is a product question.
    catalogue: str | None = None
    catalogue_intent: str = "product_info"


def features(text: str) -> Counter[str]:
    norm = normalize(text)
    grams: Counter[str] = Counter()
    for chunk in re.findall(r"[a-z0-9]+|[^\sa-z0-9\W]+", norm):
        if chunk.isascii():
            grams[chunk] += 2
            padded = f" {chunk} "
            grams.update(padded[i : i + 3] for i in range(len(padded) - 2))
        else:
            grams.update(chunk)
            grams.update(chunk[i : i + 2] for i in range(len(chunk) - 1))
    return grams


def cosine(a: Counter[str], b: Counter[str]) -> float:
    dot = sum(v * b.get(k, 0) for k, v in a.items())
    norm = math.sqrt(sum(v * v for v in a.values())) * math.sqrt(sum(v * v for v in b.values()))
    return dot / norm if norm else 0.0


def load_intents(settings: IntentSettings, context: PluginContext) -> list[IntentDef]:
    intents = list(settings.intents)
    if settings.file:
        path: Path = context.path(settings.file)
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        intents += [IntentDef.model_validate(item) for item in data.get("intents", [])]
    if settings.catalogue:
        products = json.loads(context.path(settings.catalogue).read_text(encoding="utf-8"))["products"]
        names = {
            name
            for p in products
            for name in [*p.get("aliases", []), p.get("name_zh", "").split(" ")[0]]
            if len(name) >= 2
        }
        intents.append(
            IntentDef(name=settings.catalogue_intent, keywords=sorted(names), priority=0, route="model")
        )
    return intents


class RulesAndExamples(IntentPlugin[IntentSettings]):
    settings_model = IntentSettings
    description = "Intent from keyword/regex rules, else the nearest labelled example (char n-gram cosine)."

    def __init__(self, name: str, settings: IntentSettings, context: PluginContext) -> None:
        super().__init__(name, settings, context)
        self.intents = load_intents(settings, context)
        if not self.intents:
            raise ValueError("no intents configured (`intents:` or `file:`)")
        self.patterns = [(i, [re.compile(p, re.IGNORECASE) for p in i.patterns]) for i in self.intents]
        self.keywords = [(i, [normalize(k) for k in i.keywords]) for i in self.intents]
        self.examples = [(i, features(example)) for i in self.intents for example in i.examples]

    def _keyword_hit(self, norm: str, words: set[str], keyword: str) -> bool:
        if find_term(norm, keyword) >= 0:
            return True
        if not keyword.isascii() or " " in keyword or len(keyword) < 6:
            return False
        return any(len(w) >= 4 and OSA.distance(w, keyword, score_cutoff=1) <= 1 for w in words)

    def reply_block(self, result: IntentResult, language: str) -> ContextItem | None:
        intent = next((i for i in self.intents if i.name == result.label and i.reply), None)
        if intent is None or result.method == "default":
            return None
        answer = localized(intent.reply, language or "zh")
        # No text: the model is not shown the reply (it answers greetings and complaints by itself);
        # the block is there for the gateway to verify against and fall back to.
        return ContextItem("", f"intents#{intent.name}", intent.name, intent.reply_score, answer=answer)

    def notice(self, result: IntentResult, state: InputState) -> str:
        """An intent's notice fires on its keywords even when a stronger rule decided the intent
        ("SO20261125012 坏了 太失望了" is an order question from an upset customer)."""
        norm = normalize(state.text)
        words = set(re.findall(r"[a-z]+", norm))
        for intent, keywords in self.keywords:
            if not intent.notice or not any(state.facts.get(f) for f in intent.notice_facts):
                continue
            if intent.name == result.label or any(self._keyword_hit(norm, words, k) for k in keywords):
                return localized(intent.notice, state.language or "zh")
        return ""

    def classify(self, text: str) -> IntentResult:
        norm = normalize(text)
        for intent, patterns in self.patterns:
            if any(p.search(norm) for p in patterns):
                return IntentResult(intent.name, 1.0, "rule", intent.route)
        words = set(re.findall(r"[a-z]+", norm))
        scores: dict[int, tuple[int, int, int]] = {}
        for index, (intent, keywords) in enumerate(self.keywords):
            length = sum(len(k) for k in keywords if self._keyword_hit(norm, words, k))
            if length:
                scores[index] = (intent.priority, length, -index)
        if scores:
            intent = self.keywords[max(scores, key=lambda i: scores[i])][0]
            return IntentResult(intent.name, 1.0, "rule", intent.route)
        query = features(text)
        best, score = None, 0.0
        for intent, example in self.examples:
            similarity = cosine(query, example)
            if similarity > score:
                best, score = intent, similarity
        if best is not None and score >= self.settings.min_similarity:
            return IntentResult(best.name, score, "example", best.route)
        route = next((i.route for i in self.intents if i.name == self.settings.default), "")
        return IntentResult(self.settings.default, 0.0, "default", route)

"""intent: rules first (keywords and regular expressions), then the nearest labelled example.

Similarity is the cosine of character n-gram counts (1- and 2-grams for Chinese, words and
3-grams for Latin text), which works in both languages without a model.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field

from clawdbot.services.plugins.base import PluginContext, PluginSettings
from clawdbot.services.plugins.builtin.text import find_term, normalize
from clawdbot.services.plugins.kinds import IntentPlugin, IntentResult


class IntentDef(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    keywords: list[str] = Field(default_factory=list)  # any of them (whole words for Latin) -> this intent
    patterns: list[str] = Field(default_factory=list)  # regular expressions, case-insensitive
    examples: list[str] = Field(default_factory=list)
    route: str = ""  # where the gateway should send the turn ("model", "human", "tool:lookup_order")


class IntentSettings(PluginSettings):
    intents: list[IntentDef] = Field(default_factory=list)
    file: str | None = None  # a YAML file with an `intents:` list, merged with the inline ones
    min_similarity: float = Field(default=0.3, ge=0.0, le=1.0)
    default: str = "other"


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
        self.examples = [(i, features(example)) for i in self.intents for example in i.examples]

    def classify(self, text: str) -> IntentResult:
        norm = normalize(text)
        for intent, patterns in self.patterns:
            if any(find_term(norm, normalize(k)) >= 0 for k in intent.keywords) or any(
                p.search(text) for p in patterns
            ):
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

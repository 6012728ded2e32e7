"""response_cache: known questions answered without the model.

Entries come from a file (never expire) and, with `learn: true`, from replies the model gave
(expire after `ttl_seconds`). Matching is exact first, then on the normalised question
(case, width, punctuation and spaces ignored). Every entry belongs to one tenant or to all ("*").
"""

from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from pydantic import Field

from clawdbot.services.plugins.base import PluginContext, PluginSettings
from clawdbot.services.plugins.builtin.text import normalize_question
from clawdbot.services.plugins.kinds import ResponseCachePlugin
from clawdbot.services.plugins.types import Event, ReplyChange, ReplyState

ALL_TENANTS = "*"


class CacheSettings(PluginSettings):
    file: str | None = None  # JSONL: {"questions": [...], "answer": "...", "tenant": "*"}
    learn: bool = False  # remember the model's replies to questions asked on the output side
    learn_intents: list[str] = Field(default_factory=list)  # learn only these intents (empty: any)
    ttl_seconds: float = Field(default=3600.0, gt=0)
    max_entries: int = Field(default=10_000, gt=0)
    min_question_chars: int = Field(default=2, ge=1)


class AnswerCache(ResponseCachePlugin[CacheSettings]):
    settings_model = CacheSettings
    description = "Answers known questions (exact or normalised match) per tenant; learnt answers expire."

    def __init__(self, name: str, settings: CacheSettings, context: PluginContext) -> None:
        super().__init__(name, settings, context)
        self.path = context.path(settings.file) if settings.file else None
        if self.path is not None and not self.path.is_file():
            raise ValueError(f"cache file {self.path} does not exist")
        self.static_exact: dict[tuple[str, str], str] = {}
        self.static_norm: dict[tuple[str, str], str] = {}
        self.learnt: OrderedDict[tuple[str, str], tuple[str, float]] = OrderedDict()
        self._lock = threading.Lock()
        self.clock: Callable[[], float] = time.monotonic

    async def setup(self) -> None:
        if self.path is None:
            return
        for line in self.path.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            tenant = item.get("tenant", ALL_TENANTS)
            for question in item["questions"]:
                self.static_exact[(tenant, question.strip())] = item["answer"]
                self.static_norm[(tenant, normalize_question(question))] = item["answer"]

    def get(self, tenant: str, question: str) -> str | None:
        exact, norm = question.strip(), normalize_question(question)
        if len(norm) < self.settings.min_question_chars:
            return None
        for scope in (tenant, ALL_TENANTS):
            for table, key in ((self.static_exact, exact), (self.static_norm, norm)):
                if (scope, key) in table:
                    return table[(scope, key)]
        with self._lock:
            entry = self.learnt.get((tenant, norm))
            if entry is None:
                return None
            answer, expires = entry
            if expires <= self.clock():
                del self.learnt[(tenant, norm)]
                return None
            return answer

    def put(self, tenant: str, question: str, answer: str) -> None:
        norm = normalize_question(question)
        if len(norm) < self.settings.min_question_chars or not answer.strip():
            return
        with self._lock:
            self.learnt[(tenant, norm)] = (answer, self.clock() + self.settings.ttl_seconds)
            self.learnt.move_to_end((tenant, norm))
            while len(self.learnt) > self.settings.max_entries:
                self.learnt.popitem(last=False)

    async def postprocess(self, state: ReplyState) -> ReplyChange | None:
        if not self.settings.learn or state.turn.metadata.get("cache") == "hit":
            return None
        intent = state.turn.metadata.get("intent", "")
        if self.settings.learn_intents and intent not in self.settings.learn_intents:
            return None
        if state.turn.metadata.get("guard") or not state.last_user_text:
            return None
        self.put(state.turn.tenant, state.last_user_text, state.reply)
        return ReplyChange(events=[Event("cache_stored", self.name)])

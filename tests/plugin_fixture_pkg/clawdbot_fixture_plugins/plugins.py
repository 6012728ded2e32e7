"""Test plugins: a keyword intent (entry point), a gated note (entry point), and misbehaving
plugins that sleep past their timeout or raise (loaded by module:Class)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from pydantic import Field

from clawdbot.services.plugins.base import PluginSettings
from clawdbot.services.plugins.kinds import IntentPlugin, IntentResult, Passage, RetrievalPlugin
from clawdbot.services.plugins.types import ContextItem, Contribution, InputState


class VipSettings(PluginSettings):
    keywords: list[str] = Field(default_factory=lambda: ["vip", "会员"])
    label: str = "vip"


class VipIntent(IntentPlugin[VipSettings]):
    """Labels turns that mention membership as the `vip` intent."""

    settings_model = VipSettings
    description = "fixture: membership intent"

    def classify(self, text: str) -> IntentResult:
        lowered = text.lower()
        if any(k in lowered for k in self.settings.keywords):
            return IntentResult(self.settings.label, 1.0, "rule", "vip_desk")
        return IntentResult("other", 0.0, "default")


class GatedSettings(PluginSettings):
    note: str
    gate_file: str | None = None  # wait (bounded) until this file exists before answering
    wait_s: float = 30.0


class GatedNote(RetrievalPlugin[GatedSettings]):
    """Adds a fixed note as context, optionally only once a gate file appears (to hold a turn in flight)."""

    settings_model = GatedSettings
    description = "fixture: a note, optionally gated"

    async def search(self, query: str, k: int) -> list[Passage]:
        if self.settings.gate_file:
            gate = Path(self.settings.gate_file)
            started = Path(f"{gate}.started")
            await asyncio.to_thread(started.write_text, "1")
            deadline = time.monotonic() + self.settings.wait_s
            # The gate is a file another process creates: polling is the only way to see it.
            while not await asyncio.to_thread(gate.exists) and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
        return [Passage(self.settings.note, "fixture", "note", 1.0)]


class SleepSettings(PluginSettings):
    seconds: float = 5.0
    note: str = "slept"


class SlowNote(RetrievalPlugin[SleepSettings]):
    settings_model = SleepSettings

    async def search(self, query: str, k: int) -> list[Passage]:
        await asyncio.sleep(self.settings.seconds)
        return [Passage(self.settings.note, "fixture", "slow", 1.0)]


class BrokenNote(RetrievalPlugin[PluginSettings]):
    async def search(self, query: str, k: int) -> list[Passage]:
        raise RuntimeError("the fixture plugin always fails")


class StaticNote(RetrievalPlugin[SleepSettings]):
    settings_model = SleepSettings

    async def preprocess(self, state: InputState) -> Contribution | None:
        return Contribution(context=[ContextItem(self.settings.note, "fixture", "static")])

    async def search(self, query: str, k: int) -> list[Passage]:
        return []


class Unfinished(IntentPlugin[PluginSettings]):
    """Forgets to implement `classify`: loading it must say so."""

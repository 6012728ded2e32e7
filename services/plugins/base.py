"""The base every plugin shares: a name, a validated settings model, a context, a lifetime.

A plugin takes part in the input side by overriding `preprocess`, in the output side by
overriding `postprocess` and/or `stream_filter`; the pipeline asks `sides()` which it does.
"""

from __future__ import annotations

from abc import ABC
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Generic, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict

from clawdbot.services.plugins.types import (
    Contribution,
    InputState,
    ReplyChange,
    ReplyState,
    StreamStep,
    Turn,
)


class PluginSettings(BaseModel):
    """Base of every plugin's `config:` model; unknown keys are errors, so typos never pass silently."""

    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class PluginContext:
    """Where the plugin lives: relative paths in its config resolve against the plugins file's folder."""

    base_dir: Path
    config_file: Path | None = None

    def path(self, value: str | Path) -> Path:
        path = Path(value).expanduser()
        return path if path.is_absolute() else (self.base_dir / path)


class StreamFilter(Protocol):
    """Filters one streamed reply: `feed` each delta, then `finish` once to flush what it held back."""

    def feed(self, delta: str) -> StreamStep: ...

    def finish(self) -> StreamStep: ...


S = TypeVar("S", bound=PluginSettings)


class Plugin(ABC, Generic[S]):
    """One configured plugin instance. Subclasses set `kind`, `settings_model` and `description`."""

    kind: ClassVar[str] = ""
    settings_model: ClassVar[type[PluginSettings]] = PluginSettings
    description: ClassVar[str] = ""

    def __init__(self, name: str, settings: S, context: PluginContext) -> None:
        self.name = name
        self.settings = settings
        self.context = context

    async def setup(self) -> None:
        """Load files and models before the plugin serves (runs before health turns SERVING)."""

    async def close(self) -> None:
        """Release what `setup` took; called once no call uses the plugin any more."""

    async def preprocess(self, state: InputState) -> Contribution | None:
        """Input side: look at the new user message and contribute to the turn."""
        return None

    async def postprocess(self, state: ReplyState) -> ReplyChange | None:
        """Output side on a finished reply."""
        return None

    def stream_filter(self, turn: Turn) -> StreamFilter | None:
        """Output side on a streamed reply: a fresh filter per stream, or None to pass deltas through."""
        return None

    def sides(self) -> frozenset[str]:
        """Which pipeline stages this plugin implements ("input", "output", "stream")."""
        cls = type(self)
        found = set()
        if cls.preprocess is not Plugin.preprocess:
            found.add("input")
        if cls.postprocess is not Plugin.postprocess:
            found.add("output")
        if cls.stream_filter is not Plugin.stream_filter:
            found.add("stream")
        return frozenset(found)


def localized(texts: dict[str, str], language: str, fallback: str = "en") -> str:
    """The text for `language` ("zh", "en"), else the fallback language's, else any."""
    if language in texts:
        return texts[language]
    base = language.split("-")[0]
    if base in texts:
        return texts[base]
    if fallback in texts:
        return texts[fallback]
    return next(iter(texts.values()), "")

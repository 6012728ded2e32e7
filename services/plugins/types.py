"""The plain data every plugin sees and returns, free of protobuf so plugins are easy to test and write.

`server.py` converts the gRPC messages to these and back; a third-party plugin imports only
this module and `kinds.py`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Role = Literal["system", "developer", "user", "assistant", "tool"]


@dataclass(frozen=True)
class Turn:
    """Who and where a turn happens; `metadata` carries what Preprocess learnt (intent, language)."""

    tenant: str = ""
    session_id: str = ""
    user: str = ""
    turn_id: str = ""
    facts: dict[str, str] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def language(self) -> str:
        return self.metadata.get("language", "")


@dataclass(frozen=True)
class ImageInput:
    """One image content part of the new user message, as the client sent it (a data: URL)."""

    url: str
    index: int


@dataclass(frozen=True)
class Message:
    role: str
    content: str
    images: tuple[ImageInput, ...] = ()


@dataclass
class Event:
    """Something the caller should know: "handoff", "intent", "blocked", "pii_masked", ..."""

    type: str
    source: str = ""
    message: str = ""
    data: dict[str, str] = field(default_factory=dict)


@dataclass
class ContextItem:
    """Context for the model with a source a person can check (a file, a URL, an entity id)."""

    text: str
    source: str
    title: str = ""
    score: float = 0.0  # in [0, 1] where the plugin can say how sure it is that this block answers the turn
    plugin: str = ""  # filled by the pipeline with the instance that produced it
    answer: str = ""  # the extractive answer this block gives on its own, in the turn's language
    key_facts: list[str] = field(default_factory=list)  # phrases a right reply from this block contains


@dataclass
class ToolDef:
    """A tool in OpenAI's `tools` shape: name, description and the JSON Schema of its arguments."""

    name: str
    description: str
    parameters: dict[str, Any]


@dataclass
class ShortCircuitReply:
    """Answer the turn with this reply and do not run the model."""

    reply: str
    reason: str


@dataclass
class ToolOutcome:
    content: str
    is_error: bool = False


@dataclass
class InputState:
    """The turn as the input-side plugins see it, updated after each plugin in `order`.

    `text` is the new user message as rewritten so far (OCR text added, personal data masked);
    `facts` and `metadata` hold the values this turn produced so far on top of the session's.
    """

    turn: Turn
    messages: list[Message]
    text: str
    images: list[ImageInput]
    facts: dict[str, str] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)
    client_tools: list[ToolDef] = field(default_factory=list)

    @property
    def language(self) -> str:
        return self.metadata.get("language") or self.turn.language

    def fact(self, key: str) -> str | None:
        return self.facts.get(key) or self.turn.facts.get(key)


@dataclass
class Contribution:
    """What one input-side plugin adds to the turn; the pipeline merges them in order."""

    text: str | None = None  # the rewritten user message, when the plugin changed it
    context: list[ContextItem] = field(default_factory=list)
    tools: list[ToolDef] = field(default_factory=list)
    facts: dict[str, str] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    instructions: list[str] = field(default_factory=list)
    short_circuit: ShortCircuitReply | None = None


@dataclass
class ReplyState:
    """A finished reply on the output side, with the conversation that led to it."""

    turn: Turn
    reply: str
    messages: list[Message] = field(default_factory=list)

    @property
    def language(self) -> str:
        return self.turn.language

    @property
    def last_user_text(self) -> str:
        for message in reversed(self.messages):
            if message.role == "user":
                return message.content
        return ""


@dataclass
class ReplyChange:
    """What one output-side plugin does to a reply: a new text and/or events."""

    reply: str | None = None
    events: list[Event] = field(default_factory=list)


@dataclass
class StreamStep:
    """Output of a stream filter for one delta: text safe to send now, events, and whether to stop."""

    text: str = ""
    events: list[Event] = field(default_factory=list)
    stop: bool = False

"""The twelve plugin kinds: one small typed interface each, with the results it produces.

A kind's interface is the method(s) a third party implements (`link`/`facts_about`, `search`,
`describe`, ...); the kind's `preprocess`/`postprocess` turns those results into the turn's
context, facts, events or short-circuit reply, so an implementation only answers its question.
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from clawdbot.services.plugins.base import Plugin, S
from clawdbot.services.plugins.types import (
    ContextItem,
    Contribution,
    Event,
    ImageInput,
    InputState,
    ReplyChange,
    ReplyState,
    ShortCircuitReply,
    ToolDef,
    ToolOutcome,
    Turn,
)

KINDS: tuple[str, ...] = (
    "knowledge_graph",
    "retrieval",
    "multimodal",
    "tool",
    "intent",
    "entity",
    "input_guard",
    "pii",
    "output_filter",
    "response_cache",
    "handoff",
    "language",
)


# 1. knowledge_graph ---------------------------------------------------------------------------


@dataclass(frozen=True)
class EntityMatch:
    entity_id: str
    label: str
    mention: str  # the text in the user message that named it


@dataclass(frozen=True)
class GraphFact:
    subject: str
    predicate: str
    object: str
    source: str  # the file (and line or graph) the triple came from


class KnowledgeGraphPlugin(Plugin[S]):
    kind: ClassVar[str] = "knowledge_graph"

    @abstractmethod
    def link(self, text: str) -> list[EntityMatch]:
        """The entities the text mentions, most specific first."""

    @abstractmethod
    def facts_about(self, entity_id: str) -> list[GraphFact]:
        """Facts about one entity, readable (labels, not ids, where the graph has them)."""

    max_entities: ClassVar[int] = 5

    async def preprocess(self, state: InputState) -> Contribution | None:
        context = []
        for match in self.link(state.text)[: self.max_entities]:
            facts = self.facts_about(match.entity_id)
            if not facts:
                continue
            lines = [f"{f.predicate}: {f.object}" for f in facts]
            sources = sorted({f.source for f in facts})
            context.append(
                ContextItem(
                    text=f"{match.label} ({match.entity_id})\n" + "\n".join(lines),
                    source=f"{match.entity_id} @ {', '.join(sources)}",
                    title=match.label,
                    score=1.0,
                )
            )
        return Contribution(context=context) if context else None


# 2. retrieval ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Passage:
    text: str
    source: str
    title: str
    score: float


class RetrievalPlugin(Plugin[S]):
    kind: ClassVar[str] = "retrieval"

    @abstractmethod
    async def search(self, query: str, k: int) -> list[Passage]:
        """The best `k` passages for the query, best first."""

    top_k: ClassVar[int] = 3

    async def preprocess(self, state: InputState) -> Contribution | None:
        passages = await self.search(state.text, self.top_k)
        context = [ContextItem(p.text, p.source, p.title, p.score) for p in passages]
        return Contribution(context=context) if context else None


# 3. multimodal --------------------------------------------------------------------------------


@dataclass(frozen=True)
class CodeFound:
    format: str  # "QRCode", "EAN13", ...
    text: str


@dataclass(frozen=True)
class ImageReport:
    index: int
    format: str
    width: int
    height: int
    colours: list[tuple[str, float]]  # colour name, share of the pixels
    codes: list[CodeFound]
    text: str  # OCR text, "" when none was found


class MultimodalPlugin(Plugin[S]):
    kind: ClassVar[str] = "multimodal"

    @abstractmethod
    async def describe(self, image: ImageInput) -> ImageReport:
        """What the image shows; raises InvalidArgument for an undecodable or oversized image."""

    async def preprocess(self, state: InputState) -> Contribution | None:
        if not state.images:
            return None
        reports = [await self.describe(image) for image in state.images]
        context = [
            ContextItem(summarize_image(r), f"image:{r.index}", f"image {r.index + 1}") for r in reports
        ]
        extra = [line for r in reports for line in image_text_lines(r)]
        text = "\n".join([state.text, *extra]).strip() if extra else None
        return Contribution(text=text, context=context)


def image_text_lines(report: ImageReport) -> list[str]:
    """What the image says in words (codes, OCR text), appended to the user message for later plugins."""
    lines = [f"[image {report.index + 1} {code.format}: {code.text}]" for code in report.codes]
    if report.text:
        lines.append(f"[image {report.index + 1} text: {report.text}]")
    return lines


def summarize_image(report: ImageReport) -> str:
    colours = ", ".join(f"{name} {share:.0%}" for name, share in report.colours)
    parts = [f"{report.format} image, {report.width}x{report.height} px", f"dominant colours: {colours}"]
    parts += [f"{code.format} code: {code.text}" for code in report.codes]
    if report.text:
        parts.append(f"text in the image: {report.text}")
    return "; ".join(parts)


# 4. tool --------------------------------------------------------------------------------------


class ToolPlugin(Plugin[S]):
    kind: ClassVar[str] = "tool"

    @abstractmethod
    def tools(self) -> list[ToolDef]:
        """The tools this plugin offers the model, in OpenAI's `tools` shape."""

    @abstractmethod
    async def invoke(self, name: str, arguments: dict[str, Any], turn: Turn) -> ToolOutcome:
        """Run one tool call (arguments already parsed from JSON, validated here against the schema)."""

    async def preprocess(self, state: InputState) -> Contribution | None:
        return Contribution(tools=self.tools())


# 5. intent ------------------------------------------------------------------------------------

INTENT_FACT = "_intent"  # the session's last intent; "_" facts are state, not shown to the model


@dataclass(frozen=True)
class IntentResult:
    label: str
    score: float
    method: str  # "rule" | "example" | "default"
    route: str = ""


class IntentPlugin(Plugin[S]):
    kind: ClassVar[str] = "intent"

    @abstractmethod
    def classify(self, text: str) -> IntentResult:
        """The intent of the user message."""

    # Intents a follow-up that says nothing new ("and for clawhome stuff?") keeps talking about.
    carried: ClassVar[tuple[str, ...]] = ("return_refund", "shipping", "warranty", "payment", "product_info")

    async def preprocess(self, state: InputState) -> Contribution | None:
        rewritten = self.repeated_question(state) or self.spaced(state.text)
        if rewritten is not None:
            # "用中文再说一遍": the question asked before, answered again; "howmuchisthexiaomi14":
            # the words it is made of.
            state.text = rewritten
        result = self.classify(self.classified_text(state))
        last = state.fact(INTENT_FACT)
        if result.method == "default" and last in self.carried:
            result = IntentResult(last, 0.5, "context", result.route)
        result = self.follow_up(result, last, state)
        metadata = {
            "intent": result.label,
            "intent_score": f"{result.score:.2f}",
            "intent_method": result.method,  # rule, example, context, follow_up or default
        }
        if result.route:
            metadata["route"] = result.route
        data = {"intent": result.label, "score": f"{result.score:.2f}", "method": result.method}
        context = [item] if (item := self.reply_block(result, state)) is not None else []
        if notice := self.notice(result, state):
            metadata["reply_prefix"] = notice
        if also := self.also_asked(result, state):
            metadata["intent_also"] = also
        direct = self.direct_reply(result, state)
        return Contribution(
            text=rewritten,
            metadata=metadata,
            facts={INTENT_FACT: result.label},
            events=[Event("intent", self.name, data=data)],
            context=context,
            short_circuit=ShortCircuitReply(direct, "intent") if direct is not None else None,
        )

    def spaced(self, text: str) -> str | None:
        """`text` with words typed without spaces split apart, or None when nothing changes."""
        return None

    def also_asked(self, result: IntentResult, state: InputState) -> str:
        """A second intent the turn asks about ("SO… 还能改地址吗?": the order, and the address
        policy), whose passage then answers first; "" for none."""
        return ""

    def classified_text(self, state: InputState) -> str:
        """What the intent is read from: the message, less what a guard flagged as smuggled."""
        return state.text

    def repeated_question(self, state: InputState) -> str | None:
        """The earlier question when this message only asks to hear the answer again (in another
        language: "用中文再说一遍", "english please"), else None."""
        return None

    def follow_up(self, result: IntentResult, last: str | None, state: InputState) -> IntentResult:
        """The intent of a follow-up that points back ("how much did I get back?" after an order
        lookup is about that order), else `result` unchanged."""
        return result

    def reply_block(self, result: IntentResult, state: InputState) -> ContextItem | None:
        """The intent's own answer as a context block ("sorry to hear that" to a complaint), or None."""
        return None

    def notice(self, result: IntentResult, state: InputState) -> str:
        """Words the reply starts with before the answer ("" for none): an apology to a complaint
        that also names an order, whose status is then the answer."""
        return ""

    def direct_reply(self, result: IntentResult, state: InputState) -> str | None:
        """The whole reply, sent without the model, when the shop words it itself ("who are you?");
        None to let the model answer."""
        return None


# 6. entity ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Slot:
    name: str  # "order_id", "phone", "product_id", "amount", "date", ...
    value: str  # normalised ("2026-11-25", "199.00 CNY")
    mention: str


class EntityPlugin(Plugin[S]):
    kind: ClassVar[str] = "entity"

    @abstractmethod
    def extract(self, text: str) -> list[Slot]:
        """Slots found in the text, in the order they appear."""

    async def preprocess(self, state: InputState) -> Contribution | None:
        slots = self.extract(state.text)
        if not slots:
            return None
        facts = {slot.name: slot.value for slot in slots}
        event = Event("entities", self.name, data={s.name: s.value for s in slots})
        return Contribution(facts=facts, events=[event])


# 7. input_guard -------------------------------------------------------------------------------


@dataclass(frozen=True)
class GuardVerdict:
    action: Literal["allow", "flag", "block"]
    category: str = ""  # "prompt_injection", "violence", "too_long", ...
    reason: str = ""


class InputGuardPlugin(Plugin[S]):
    kind: ClassVar[str] = "input_guard"

    @abstractmethod
    def check(self, text: str) -> GuardVerdict:
        """Whether the message may go to the model."""

    @abstractmethod
    def canned_reply(self, verdict: GuardVerdict, language: str) -> str:
        """What the user reads when the message is blocked."""

    def flag_notice(self, verdict: GuardVerdict, language: str) -> str:
        """What the user reads before the answer to a flagged message ("" for nothing): e.g. that
        an offer smuggled into the message is not honoured, while the real question is answered."""
        return ""

    async def preprocess(self, state: InputState) -> Contribution | None:
        verdict = self.check(state.text)
        if verdict.action == "allow":
            return None
        data = {"category": verdict.category, "action": verdict.action}
        if verdict.action == "flag":
            metadata = {"guard": "flagged", "guard_category": verdict.category}
            if notice := self.flag_notice(verdict, state.language):
                metadata["reply_prefix"] = notice  # the gateway sends it before the model's reply
            return Contribution(metadata=metadata, events=[Event("flagged", self.name, verdict.reason, data)])
        return Contribution(
            metadata={"guard": "blocked", "guard_category": verdict.category},
            events=[Event("blocked", self.name, verdict.reason, data)],
            short_circuit=ShortCircuitReply(self.canned_reply(verdict, state.language), "blocked"),
        )


# 8. pii ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PiiMatch:
    type: str  # "email", "phone", "cn_id", "bank_card"
    start: int
    end: int


class PiiPlugin(Plugin[S]):
    kind: ClassVar[str] = "pii"

    @abstractmethod
    def find(self, text: str) -> list[PiiMatch]:
        """Personal data in the text, non-overlapping, in order."""

    @abstractmethod
    def mask(self, text: str) -> tuple[str, dict[str, int]]:
        """The text with personal data masked, and how many of each type were masked."""

    async def preprocess(self, state: InputState) -> Contribution | None:
        text, counts = self.mask(state.text)
        facts = {}
        for key, value in state.facts.items():
            masked, found = self.mask(value)
            if masked != value:
                facts[key] = masked
                for kind, n in found.items():
                    counts[kind] = counts.get(kind, 0) + n
        if not counts:
            return None
        event = Event("pii_masked", self.name, data={k: str(v) for k, v in counts.items()})
        return Contribution(text=text, facts=facts, events=[event])

    async def postprocess(self, state: ReplyState) -> ReplyChange | None:
        text, counts = self.mask(state.reply)
        if not counts:
            return None
        return ReplyChange(
            text, [Event("pii_masked", self.name, data={k: str(v) for k, v in counts.items()})]
        )


# 9. output_filter -----------------------------------------------------------------------------


@dataclass
class FilteredReply:
    reply: str
    events: list[Event] = field(default_factory=list)


class OutputFilterPlugin(Plugin[S]):
    kind: ClassVar[str] = "output_filter"

    @abstractmethod
    def filter_reply(self, reply: str, turn: Turn) -> FilteredReply:
        """The finished reply after banned terms, length limits and disclaimers."""

    async def postprocess(self, state: ReplyState) -> ReplyChange | None:
        result = self.filter_reply(state.reply, state.turn)
        return ReplyChange(result.reply, result.events)


# 10. response_cache ---------------------------------------------------------------------------


class ResponseCachePlugin(Plugin[S]):
    kind: ClassVar[str] = "response_cache"

    @abstractmethod
    def get(self, tenant: str, question: str) -> str | None:
        """The cached answer to the question for this tenant, if a live one exists."""

    @abstractmethod
    def put(self, tenant: str, question: str, answer: str) -> None:
        """Remember an answer for this tenant (with the plugin's TTL)."""

    async def preprocess(self, state: InputState) -> Contribution | None:
        if state.images:
            return None  # an answer about a picture cannot come from a text cache
        answer = self.get(state.turn.tenant, state.text)
        if answer is None:
            return None
        return Contribution(
            metadata={"cache": "hit"},
            events=[Event("cache_hit", self.name)],
            short_circuit=ShortCircuitReply(answer, "cache"),
        )


# 11. handoff ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class HandoffDecision:
    reason: Literal["request", "failures", "sentiment"]
    detail: str
    reply: str


class HandoffPlugin(Plugin[S]):
    kind: ClassVar[str] = "handoff"

    @abstractmethod
    def assess(self, state: InputState) -> HandoffDecision | None:
        """Whether this turn goes to a person."""

    async def preprocess(self, state: InputState) -> Contribution | None:
        decision = self.assess(state)
        if decision is None:
            return None
        data = {
            "reason": decision.reason,
            "tenant": state.turn.tenant,
            "session_id": state.turn.session_id,
            "user": state.turn.user,
        }
        return Contribution(
            metadata={"route": "human", "handoff_reason": decision.reason},
            events=[Event("handoff", self.name, decision.detail, data)],
            short_circuit=ShortCircuitReply(decision.reply, "handoff"),
        )


# 12. language ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class LanguageGuess:
    code: str  # ISO 639-1: "zh", "en", ...
    confidence: float


class LanguagePlugin(Plugin[S]):
    kind: ClassVar[str] = "language"

    @abstractmethod
    async def detect(self, text: str) -> LanguageGuess:
        """The language of the text (the configured default when unsure)."""

    def instructions(self, code: str) -> list[str]:
        """Extra system instructions for replies in this language."""
        return []

    async def preprocess(self, state: InputState) -> Contribution | None:
        guess = await self.detect(state.text)
        metadata = {"language": guess.code, "language_confidence": f"{guess.confidence:.2f}"}
        return Contribution(metadata=metadata, instructions=self.instructions(guess.code))


KIND_INTERFACES: dict[str, type[Plugin[Any]]] = {
    "knowledge_graph": KnowledgeGraphPlugin,
    "retrieval": RetrievalPlugin,
    "multimodal": MultimodalPlugin,
    "tool": ToolPlugin,
    "intent": IntentPlugin,
    "entity": EntityPlugin,
    "input_guard": InputGuardPlugin,
    "pii": PiiPlugin,
    "output_filter": OutputFilterPlugin,
    "response_cache": ResponseCachePlugin,
    "handoff": HandoffPlugin,
    "language": LanguagePlugin,
}

__all__ = [
    "KINDS",
    "KIND_INTERFACES",
    "CodeFound",
    "ContextItem",
    "EntityMatch",
    "FilteredReply",
    "GraphFact",
    "GuardVerdict",
    "HandoffDecision",
    "ImageReport",
    "IntentResult",
    "LanguageGuess",
    "Passage",
    "PiiMatch",
    "Slot",
]

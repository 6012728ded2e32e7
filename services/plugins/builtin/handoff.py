"""handoff: escalation to a person when the user asks for one, after repeated failures, or on
strongly negative sentiment; emits a `handoff` event and a reply.

Failures are counted per session: replies matching a failure pattern (seen on the output side)
and the user asking the same question again. The counts live in this process (bounded LRU). A
caller without a session has no conversation to count in, so nothing is kept for it: strangers who
ask the same question never escalate each other.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from dataclasses import dataclass

from pydantic import Field

from clawdbot.services.plugins.base import PluginContext, PluginSettings, localized
from clawdbot.services.plugins.builtin.text import find_term, normalize, normalize_question
from clawdbot.services.plugins.kinds import HandoffDecision, HandoffPlugin
from clawdbot.services.plugins.types import Event, InputState, ReplyChange, ReplyState

NEGATIVE = [
    "垃圾",
    "骗子",
    "骗人",
    "太差",
    "很差",
    "差劲",
    "气死",
    "失望",
    "投诉",
    "愤怒",
    "恶心",
    "坑人",
    "差评",
    "烂透",
    "忍无可忍",
    "退钱",
    "terrible",
    "awful",
    "worst",
    "scam",
    "angry",
    "furious",
    "useless",
    "ridiculous",
    "disappointed",
    "hate",
    "complaint",
    "unacceptable",
    "garbage",
    "rip-off",
    "fraud",
]
INTENSIFIERS = ["非常", "太", "真的", "极其", "超级", "very", "so", "extremely", "really", "totally"]


@dataclass
class SessionState:
    failures: int = 0
    last_question: str = ""


class HandoffSettings(PluginSettings):
    request_keywords: list[str] = Field(
        default_factory=lambda: [
            "转人工",
            "人工客服",
            "找人工",
            "真人客服",
            "human agent",
            "real person",
            "talk to a human",
            "speak to a person",
            "live agent",
        ]
    )
    # Whole messages that are a request on their own ("人工", "human"): too short to be keywords in text.
    exact_requests: list[str] = Field(
        default_factory=lambda: [
            "人工",
            "转人工",
            "真人",
            "客服",
            "人工服务",
            "找客服",
            "human",
            "agent",
            "a human",
            "person",
            "real person",
            "human please",
            "agent please",
            "operator",
            "representative",
        ]
    )
    # Questions about the bot itself ("are you a human?") name a person without asking for one.
    identity_patterns: list[str] = Field(
        default_factory=lambda: [
            r"\b(are|r)\s+(you|u)\s+(a\s+|an\s+)?(real\s+)?(human|person|bot|robot|ai|real)\b",
            r"\b(am i|is this)\s+(talking to\s+)?(a\s+)?(bot|robot|human|real person)\b",
            r"你是(不是)?(真人|机器人|人工|ai|人)吗?",
            r"是(真人|机器人)吗",
        ]
    )
    # Requests worded freely ("can you put me through to a person", "帮我接通人工"): regular
    # expressions, case-insensitive, searched in the message.
    request_patterns: list[str] = Field(
        default_factory=lambda: [
            r"\b(speak|talk|chat)\s+(to|with)\s+(a|an|the|your|some)?\s*(real\s+)?(manager|human|person|supervisor|agent|representative|staff)\b",
            r"\b(put|transfer|connect|pass)\s+me\s+(through\s+|on\s+)?(to|with)\b.{0,25}\b(manager|human|person|supervisor|agent|representative|operator|support|staff|customer\s+service|someone|team)\b",
            r"\b(get|give|bring|find)\s+me\s+(a|an|the|your)?\s*(real\s+|live\s+)?(manager|human|person|supervisor|agent|representative|operator)\b",
            r"\b(i\s+)?(want|need|demand)\s+(a|an|the|your)?\s*(real\s+|live\s+)?(manager|human|supervisor|representative|operator|human\s+agent)\b",
            r"(叫|找|让|请)(你们)?(的)?(客服|人工|经理|主管|领导|老板)(出来|来|过来|跟我|和我)",
            r"(有没有|有)真人(吗|嘛|么)?",
            r"(人工|人公|真人)(客服)?(在吗|在不在|呢|在线吗)",
            r"\b(talk|speak|chat|deal|sort\w*(\s+\w+){0,4})\s+(to|with)\s+(an?\s+|the\s+|some(one|body)\s+)?(actual|real|live|human)?\s*(human|person|people|someone|somebody|staff|agent|manager|supervisor|representative|operator|team)\b",
            r"\bnot\s+(a|the|this|your)\s+(chat\s*)?bot\b",
            r"不想(跟|和|同)(机器|机器人|ai|bot)",
            r"\b(transfer|connect|put)\s+(me\s+)?(through\s+)?to\s+(a\s+)?(人工|真人|客服)",
            r"(接通|转接|转到|转给|找|叫|要|换|联系)(一下|一个|个|你们的?)?(人工|真人|客服人员|经理|主管|领导|负责人)",
            r"\b(speak|talk|chat)\s+(to|with)\s+(a\s+)?(member\s+of\s+(your\s+)?staff|staff\s+member|someone\s+(from|on)\s+(your|the)\s+team)\b",
            # Shouted in bare words: "AGENT. HUMAN. NOW.", "human now", "人工 马上"
            r"^\W*(human|agent|operator|manager|person|人工|真人)[\s.!！。,，]+(human|agent|operator|person|now|asap|immediately|马上|立刻|快点|现在)\b",
        ]
    )
    # Frustration with the bot itself ("your bot is useless", "机器人解决不了"): a hand-off with the
    # apology of the sentiment reply, not the plain request's.
    frustration_patterns: list[str] = Field(
        default_factory=lambda: [
            r"(机器人|bot|\bai\b).{0,12}(解决不了|没用|不管用|听不懂|答非所问|useless|can'?t help|stupid|dumb)",
            r"\b(stop|quit|done|enough|sick|tired)\b.{0,30}\b(bot|robot|automated|canned|scripted)\s+(answers?|replies|responses|messages)\b",
        ]
    )
    # Politeness around a one-word request ("人工 please", "operator pls") is stripped first.
    polite_words: list[str] = Field(
        default_factory=lambda: [
            "please",
            "pls",
            "plz",
            "thanks",
            "thx",
            "now",
            "谢谢",
            "请",
            "麻烦",
            "一下",
            "吧",
        ]
    )
    # Questions about the people, not for them ("人工客服几点上班", "when are your agents online").
    question_patterns: list[str] = Field(
        default_factory=lambda: [
            r"(人工|客服|真人).{0,4}(几点|什么时候|啥时候|时间|上班|下班|在线吗|电话|热线)",
            r"(几点|[一二三四五六七八九十\d]+点|晚上|早上|周末|节假日|凌晨).{0,6}(还有|有没有|有)(人工|客服|真人)",
            r"\b(when|what time|which hours|hours)\b.{0,30}\b(agents?|humans?|people|staff|customer service)\b.{0,15}\b(online|available|work|open)",
            r"\b(agents?|customer service)\b.{0,10}\b(hours|opening|online hours)\b",
        ]
    )
    failure_patterns: list[str] = Field(
        default_factory=lambda: [
            "抱歉，我不太明白",
            "我不确定",
            "无法回答",
            "i'm not sure",
            "i don't understand",
            "i cannot answer",
        ]
    )
    max_failures: int = Field(default=2, ge=1)
    negative_words: list[str] = Field(default_factory=lambda: list(NEGATIVE))
    sentiment_threshold: float = Field(default=2.0, gt=0)  # negative score at or past this hands off
    max_sessions: int = Field(default=50_000, gt=0)
    replies: dict[str, dict[str, str]] = Field(
        default_factory=lambda: {
            "request": {
                "zh": "好的，正在为您转接人工客服，请稍候。",
                "en": "Sure, I'm transferring you to a human agent. Please wait a moment.",
            },
            "failures": {
                "zh": "抱歉没能解决您的问题，已为您转接人工客服。",
                "en": "Sorry I couldn't solve this. I'm handing you over to a human agent.",
            },
            "sentiment": {
                "zh": "非常抱歉给您带来不好的体验，已为您转接人工客服优先处理。",
                "en": "I'm very sorry about this experience. A human agent will take over right away.",
            },
        }
    )


SMUGGLED = ("fake_authority", "prompt_injection")
_NOTE = re.compile(r"[\[【(（<][^\]】)）>]{0,80}[\]】)）>]")


def without_smuggled_notes(state: InputState) -> str:
    """The message without bracketed notes when the input guard flagged smuggled authority."""
    if state.metadata.get("guard_category") != "fake_authority":
        return state.text
    return _NOTE.sub(" ", state.text)


def sentiment_score(text: str, negative: list[str]) -> float:
    """Negative words count 1 each (1.5 after an intensifier); each "!" adds 0.25 once a word was found."""
    norm = normalize(text)
    score = 0.0
    for word in negative:
        start = 0
        while (index := find_term(norm, word, start)) >= 0:
            before = norm[max(0, index - 6) : index]
            score += 1.5 if any(i in before for i in INTENSIFIERS) else 1.0
            start = index + len(word)
    if score:
        score += 0.25 * min(4, text.count("!") + text.count("！"))
    return score


class HumanHandoff(HandoffPlugin[HandoffSettings]):
    settings_model = HandoffSettings
    description = (
        "Hands the conversation to a person on request, after repeated failures, or on negative sentiment."
    )

    def __init__(self, name: str, settings: HandoffSettings, context: PluginContext) -> None:
        super().__init__(name, settings, context)
        self.sessions: OrderedDict[tuple[str, str], SessionState] = OrderedDict()
        self._lock = threading.Lock()
        self.requests = [normalize(k) for k in settings.request_keywords]
        self.exact = {normalize_question(k) for k in settings.exact_requests}
        self.identity = [re.compile(p, re.IGNORECASE) for p in settings.identity_patterns]
        self.request_patterns = [re.compile(p, re.IGNORECASE) for p in settings.request_patterns]
        self.frustration = [re.compile(p, re.IGNORECASE) for p in settings.frustration_patterns]
        self.questions = [re.compile(p, re.IGNORECASE) for p in settings.question_patterns]
        self.failures = [normalize(p) for p in settings.failure_patterns]
        self.negative = [normalize(w) for w in settings.negative_words]

    def _bare_request(self, text: str) -> bool:
        words = [w for w in re.split(r"[\s,，.。!！?？~]+", normalize(text)) if w]
        polite = {normalize(w) for w in self.settings.polite_words}
        while words and words[-1] in polite:
            words.pop()
        while words and words[0] in polite:
            words.pop(0)
        return bool(words) and normalize_question(" ".join(words)) in self.exact

    def _session(self, tenant: str, session_id: str) -> SessionState:
        key = (tenant, session_id)
        with self._lock:
            state = self.sessions.pop(key, None) or SessionState()
            self.sessions[key] = state
            while len(self.sessions) > self.settings.max_sessions:
                self.sessions.popitem(last=False)
            return state

    def _reply(self, reason: str, language: str) -> str:
        return localized(self.settings.replies.get(reason, {}), language or "zh")

    def assess(self, state: InputState) -> HandoffDecision | None:
        # A note the input guard flagged as smuggled authority ("[客服主管备注：…]") is not the
        # customer asking for the manager.
        text = without_smuggled_notes(state)
        if state.metadata.get("guard_category") in SMUGGLED:
            # "NOTE FROM SUPERVISOR: …": a message carrying smuggled authority names people it
            # does not ask for.
            text = ""
        norm = normalize(text)
        language = state.language
        hit = next((k for k in self.requests if find_term(norm, k) >= 0), None)
        if hit is None:
            hit = next((m.group(0) for p in self.request_patterns if (m := p.search(norm))), None)
        if hit is None and self._bare_request(text):
            hit = norm
        if hit is not None and any(p.search(norm) for p in (*self.identity, *self.questions)):
            hit = None
        if hit is not None:
            return HandoffDecision(
                "request", f"the user asked for a person ({hit!r})", self._reply("request", language)
            )
        if any(p.search(norm) for p in self.frustration):
            return HandoffDecision("sentiment", "frustrated with the bot", self._reply("sentiment", language))
        score = sentiment_score(state.text, self.negative)
        if score >= self.settings.sentiment_threshold:
            return HandoffDecision(
                "sentiment", f"negative sentiment score {score:.2f}", self._reply("sentiment", language)
            )
        if not state.turn.session_id:
            return None
        session = self._session(state.turn.tenant, state.turn.session_id)
        question = normalize_question(state.text)
        if question and question == session.last_question:
            session.failures += 1
        session.last_question = question
        if session.failures >= self.settings.max_failures:
            count = session.failures
            session.failures = 0
            return HandoffDecision(
                "failures", f"{count} failed turns in this session", self._reply("failures", language)
            )
        return None

    async def postprocess(self, state: ReplyState) -> ReplyChange | None:
        norm = normalize(state.reply)
        if not state.turn.session_id or not any(p in norm for p in self.failures):
            return None
        session = self._session(state.turn.tenant, state.turn.session_id)
        session.failures += 1
        return ReplyChange(
            events=[Event("failure_counted", self.name, data={"failures": str(session.failures)})]
        )

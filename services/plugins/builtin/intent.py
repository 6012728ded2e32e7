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
from collections.abc import Callable
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field
from rapidfuzz.distance import OSA

from clawdbot.services.plugins.base import PluginContext, PluginSettings, localized
from clawdbot.services.plugins.builtin.handoff import without_smuggled_notes
from clawdbot.services.plugins.builtin.text import find_term, normalize
from clawdbot.services.plugins.kinds import IntentPlugin, IntentResult
from clawdbot.services.plugins.types import ContextItem, InputState


class IntentDef(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    keywords: list[str] = Field(default_factory=list)  # any of them (whole words for Latin) -> this intent
    patterns: list[str] = Field(default_factory=list)  # regular expressions, case-insensitive
    # Regular expressions that count as keywords (priorities still decide): "ordered black but got
    # pink" is a complaint, yet a question in the same message is answered.
    keyword_patterns: list[str] = Field(default_factory=list)
    examples: list[str] = Field(default_factory=list)
    route: str = ""  # where the gateway should send the turn ("model", "human", "tool:lookup_order")
    priority: int = 1  # among intents whose keywords all occur, the highest priority wins
    # What the shop says to this intent when nothing more specific answers it ({"zh": ..., "en": ...}):
    # a context block with this answer, scored `reply_score`, so an order or product block still wins.
    reply: dict[str, str] = Field(default_factory=dict)
    reply_score: float = Field(default=0.6, ge=0.0, le=1.0)
    # The reply is the shop's own words for a question it decided by its own rules ("who are you?"):
    # sent as the answer without running the model, like a cached answer.
    answer_directly: bool = False
    # Said before the answer when this turn also named one of `notice_facts` (a complaint about an
    # order: the apology, then the order's status from the lookup).
    notice: dict[str, str] = Field(default_factory=dict)
    notice_facts: list[str] = Field(default_factory=list)
    # ... or whenever this intent's keywords occur but another intent answers the turn (an upset
    # customer asking when a refund arrives hears the apology, then the refund times).
    notice_on_keywords: bool = False
    # Right after a turn of this intent, with these facts in the session, these words keep the
    # conversation on it ("啥时候到", "how much did I get back" after an order lookup).
    # The reply block steps back (scored below any passage) when a sibling entry of the same name
    # matched instead ("change the delivery address" is the orders FAQ's, not "send the number").
    reply_yields: bool = False
    # No `reply` block when the turn or the session already holds one of these facts.
    reply_unless_facts: list[str] = Field(default_factory=list)
    follow_up_keywords: list[str] = Field(default_factory=list)
    follow_up_facts: list[str] = Field(default_factory=list)


# Words typed without spaces ("canireturnmyearbuds") are split into words by word frequencies
# (wordninja's English list) with the shop's own words (keywords, product names) ranked in among the
# common ones, so "earbuds" and "xiaomi" stay whole. Only Latin runs this long are split.
# "SO20261125004 还能改地址吗?", "how do I pay for SO…003?": the order is named, but what is asked
# is how a policy applies to it; the policy's passage answers first, the order's status second.
_HOW = re.compile(
    r"(能不能|可不可以|能否|还能|可以|怎么|如何|能吗|想\s*(取消|退|换|改|cancel|return|refund)|\bcancel\b|\bcan i\b|\bcould i\b|"
    r"\bhow (do|can|should) i\b|\bis it possible\b|\bhow to\b|\b(want|like) to (cancel|return|change|pay)\b)"
)
# A product that stopped working, described: the warranty answers it even when an order is named.
_DEFECT = re.compile(
    r"(不转了?|不动了|不工作|不亮了|没反应|开不了机|用不了了|不能用了|死机|stopped working|not working any ?more|"
    r"doesn'?t work any ?more|won'?t turn on|won'?t charge|crackl)"
)
# Words that ask where an order stands: the order's own answer comes first, not a policy.
_STATUS = re.compile(r"(\bstatus\b|状态|进度|动静|到哪|怎么还没|还没(有)?(到|动静|消息|退|处理|收到))")
_WHERE_TO = re.compile(
    r"(去哪|在哪里?看|哪里(看|查)|怎么(看|查)|\bwhere (can|do) i (see|find|check)\b|\bhow (can|do) i (see|find|check|track)\b)"
)
ALSO_ASKED = ("return_refund", "payment", "warranty")
ORDER_CHANGE = "order_change"  # the cancel / change-address entry of order_status, as a second intent
KEYWORD_PATTERN_WEIGHT = 4  # a keyword pattern weighs as much as a four-character keyword
RUN_TOGETHER = re.compile(r"[A-Za-z][A-Za-z0-9']{13,}")
DOMAIN_RANK = 2000  # where the shop's words go in the frequency list


def run_together_splitter(domain_words: set[str]) -> Callable[[str], list[str]]:
    import wordninja

    base = wordninja.DEFAULT_LANGUAGE_MODEL
    common = sorted(base._wordcost, key=base._wordcost.get)
    extra = [
        w
        for w in sorted(domain_words)
        if w not in base._wordcost or base._wordcost[w] > base._wordcost[common[DOMAIN_RANK]]
    ]
    words = list(dict.fromkeys([*common[:DOMAIN_RANK], *extra, *common[DOMAIN_RANK:]]))
    model = wordninja.LanguageModel.__new__(wordninja.LanguageModel)
    model._wordcost = {w: math.log((i + 1) * math.log(len(words))) for i, w in enumerate(words)}
    model._maxword = max(len(w) for w in words)
    return model.split


class IntentSettings(PluginSettings):
    intents: list[IntentDef] = Field(default_factory=list)
    file: str | None = None  # a YAML file with an `intents:` list, merged with the inline ones
    min_similarity: float = Field(default=0.3, ge=0.0, le=1.0)
    default: str = "other"
    # A catalogue (JSON with `products`: names and aliases): naming a product is a keyword of this
    # intent, at priority 0, so "do you have the mx keys?" is a product question.
    catalogue: str | None = None
    catalogue_intent: str = "product_info"
    # A message that only asks to hear the last answer again, maybe in another language: the
    # earlier question is answered instead. Matched on the whole message, case-insensitive.
    repeat_patterns: list[str] = Field(
        default_factory=lambda: [
            r"(请|麻烦)?(用|说|换成?|改用)?(中文|汉语|普通话|英文|英语)(再|重新)?(说|讲|回答|回复|发)?(一遍|一下|一次)?(吧|呗|好吗|可以吗)?",
            r"(请|麻烦)?(再|重新)(说|讲|回答|回复|发)(一遍|一下|一次)(吧|呗)?",
            r"((can|could) you )?(please )?(say|repeat|answer|reply|write|tell me)( that| it| this)?( again)?( in (english|chinese))?( please)?",
            r"(in )?(english|chinese)( please| pls| plz)?",
            r"(please )?(reply|answer|speak) in (english|chinese)( please)?",
        ]
    )


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
        self.keyword_patterns = [
            [re.compile(p, re.IGNORECASE) for p in i.keyword_patterns] for i in self.intents
        ]
        self.examples = [(i, features(example)) for i in self.intents for example in i.examples]
        self.repeats = [re.compile(p, re.IGNORECASE) for p in settings.repeat_patterns]
        domain = {
            w
            for intent in self.intents
            for k in intent.keywords
            for w in re.findall(r"[a-z0-9]+", normalize(k))
            if len(w) > 2
        }
        self._split_words = run_together_splitter(domain)
        self.follow_ups = [
            (i, [normalize(k) for k in i.follow_up_keywords]) for i in self.intents if i.follow_up_keywords
        ]

    def classified_text(self, state: InputState) -> str:
        return without_smuggled_notes(state)

    def also_asked(self, result: IntentResult, state: InputState) -> str:
        if result.label != "order_status" or result.method != "rule" or not state.facts.get("order_id"):
            return ""
        norm = normalize(state.text)
        if _DEFECT.search(norm) and not _STATUS.search(norm):
            return "warranty"  # "SO… 才用了两周就不转了": what the warranty does for it comes first
        if not _HOW.search(norm) or _STATUS.search(norm):
            return ""  # "现在什么status啊…怎么还没动静" asks where the order stands, whatever else it names
        words = set(re.findall(r"[a-z]+", norm))
        best, length = "", 0
        for intent, keywords in self.keywords:
            change = intent.name == "order_status" and intent.priority == 2
            if intent.name not in ALSO_ASKED and not change:
                continue
            hit = sum(len(k) for k in keywords if self._keyword_hit(norm, words, k))
            if hit > length:
                best, length = (ORDER_CHANGE if change else intent.name), hit
        return best

    def spaced(self, text: str) -> str | None:
        """`text` with run-together English split into words, or None when there is none."""
        if not RUN_TOGETHER.search(text):
            return None
        return RUN_TOGETHER.sub(lambda m: " ".join(self._split_words(m.group(0).lower())), text)

    def repeated_question(self, state: InputState) -> str | None:
        if not self._asks_again(state.text):
            return None
        earlier = [m.content for m in state.messages[:-1] if m.role == "user" and m.content.strip()]
        return next((q for q in reversed(earlier) if not self._asks_again(q)), None)

    def _asks_again(self, text: str) -> bool:
        """The whole message (punctuation at either end aside) is a request to hear it again."""
        core = re.sub(r"^[\s\W_]+|[\s\W_]+$", "", normalize(text).strip())
        return bool(core) and any(p.fullmatch(core) for p in self.repeats)

    def follow_up(self, result: IntentResult, last: str | None, state: InputState) -> IntentResult:
        norm = normalize(state.text)
        if (
            result.label == "order_status"
            and not state.facts.get("order_id")
            and _DEFECT.search(norm)
            and not _STATUS.search(norm)
        ):
            # "扫地机签收才十天就不转了": an order word, but a defect is the question; no number to look up.
            route = next((i.route for i in self.intents if i.name == "warranty"), "")
            return IntentResult("warranty", result.score, result.method, route)
        if not last or result.label == last or (result.score >= 1.0 and result.label not in self.weak_labels):
            return result
        norm = normalize(state.text)
        words = set(re.findall(r"[a-z]+", norm))
        for intent, keywords in self.follow_ups:
            if intent.name != last or not all(state.fact(f) for f in intent.follow_up_facts):
                continue
            if any(self._keyword_hit(norm, words, k) for k in keywords):
                return IntentResult(intent.name, 0.9, "follow_up", intent.route)
        return result

    # Intents decided by words any follow-up may hold ("how much", "when"): a follow-up keyword of
    # the conversation's intent outranks them.
    weak_labels = (
        "product_info",
        "shipping",
        "return_refund",
        "payment",
        "complaint",
        "other",
        "greeting",
        "thanks",
    )

    def _keyword_hit(self, norm: str, words: set[str], keyword: str) -> bool:
        if find_term(norm, keyword) >= 0:
            return True
        if not keyword.isascii() or " " in keyword or len(keyword) < 6:
            return False
        return any(len(w) >= 4 and OSA.distance(w, keyword, score_cutoff=1) <= 1 for w in words)

    def reply_block(self, result: IntentResult, state: InputState) -> ContextItem | None:
        intent = next((i for i in self.intents if i.name == result.label and i.reply), None)
        if intent is None or result.method == "default":
            return None
        if any(state.fact(f) for f in intent.reply_unless_facts):
            return None  # "please send the order number" when the turn (or the session) has one
        answer = localized(intent.reply, state.language or "zh")
        # Sure when the words of the entry that carries the reply were said ("where is my parcel?"
        # asks for the number); less when a sibling entry decided the intent ("how do I cancel an
        # order?" is answered by the FAQ).
        norm = normalize(state.text)
        words = set(re.findall(r"[a-z]+", norm))
        own = [normalize(k) for k in intent.keywords]
        said = any(self._keyword_hit(norm, words, k) for k in own) or any(
            re.search(p, norm, re.IGNORECASE) for p in intent.patterns
        )
        # A sibling entry's words ("change the delivery address") say the question is not "where is it".
        siblings = [  # entries of the same name that decide it on their own words (priority 2 and up)
            i
            for i in self.intents
            if intent.reply_yields
            and i.name == intent.name
            and i is not intent
            and not i.reply
            and i.priority >= 2
        ]
        if any(self._keyword_hit(norm, words, normalize(k)) for i in siblings for k in i.keywords):
            said = False
        # "发货以后去哪看单号" asks how, not for this order: the FAQ answers it.
        if _WHERE_TO.search(norm):
            said = False
        score = intent.reply_score if said or result.method != "rule" else min(intent.reply_score, 0.45)
        # No text: the model is not shown the reply (it answers greetings and complaints by itself);
        # the block is there for the gateway to verify against and fall back to.
        return ContextItem("", f"intents#{intent.name}", intent.name, score, answer=answer)

    def direct_reply(self, result: IntentResult, state: InputState) -> str | None:
        """The reply of an `answer_directly` intent decided by its own patterns or keywords."""
        if result.method != "rule":
            return None
        intent = next((i for i in self.intents if i.name == result.label and i.reply), None)
        if intent is None or not intent.answer_directly:
            return None
        norm = normalize(state.text)
        own = next((patterns for i, patterns in self.patterns if i is intent), [])
        for pattern in own:  # what is left once the question about the bot is taken out
            norm = pattern.sub(" ", norm)
        words = set(re.findall(r"[a-z]+", norm))
        if any(  # "are you a bot? get me a human": a weightier ask in the same message, the model's turn
            other.priority > intent.priority and any(self._keyword_hit(norm, words, k) for k in keywords)
            for other, keywords in self.keywords
        ):
            return None
        return localized(intent.reply, state.language or "zh")

    def notice(self, result: IntentResult, state: InputState) -> str:
        """An intent's notice fires on its keywords even when a stronger rule decided the intent
        ("SO20261125012 坏了 太失望了" is an order question from an upset customer)."""
        norm = normalize(state.text)
        words = set(re.findall(r"[a-z]+", norm))
        for index, (intent, keywords) in enumerate(self.keywords):
            if not intent.notice:
                continue
            named = any(state.facts.get(f) for f in intent.notice_facts)
            if not named and not (intent.notice_on_keywords and intent.name != result.label):
                continue
            patterns = self.keyword_patterns[index]
            if (
                (named and intent.name == result.label)
                or any(self._keyword_hit(norm, words, k) for k in keywords)
                or any(p.search(norm) for p in patterns)
            ):
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
            # Typo matches count only where nothing matched as written ("email" and its near twin
            # "e-mail" are one word, not two).
            exact = sum(len(k) for k in keywords if find_term(norm, k) >= 0)
            length = exact or sum(len(k) for k in keywords if self._keyword_hit(norm, words, k))
            length += KEYWORD_PATTERN_WEIGHT * sum(1 for p in self.keyword_patterns[index] if p.search(norm))
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

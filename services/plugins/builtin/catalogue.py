"""catalogue: the shop's products named in a turn, the way customers name them, with their facts.

A knowledge-graph plugin over the shop's catalogue file (`catalogue.json`: brands, categories,
products with zh/en names, aliases, price, stock, colours, warranty, description). It links:

- a product by any name or alias, with spaces, hyphens and case ignored ("mate60pro", "WH1000XM5")
  and one typo allowed in longer Latin names ("freebud pro");
- a brand plus a category ("华为手机", "sony headphones") to that brand's products in it;
- a follow-up that names nothing ("多少钱？", "is it in stock?") to the product the conversation was
  about (the session fact `product_id`);
- a request for a recommendation ("500以内的耳机推荐", "a charger under 300") to the products of that
  category within the budget, in stock first;
- a brand the shop does not sell ("iPhone", "戴森") to a block saying so.

Each block carries the facts for the model, an extractive `answer` in the turn's language (what
the gateway falls back to when the model's reply fails verification) and the `key_facts` a right
reply contains (the price), and a score saying how sure the plugin is that the block answers the turn.
"""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass
from typing import Any

from pydantic import Field
from rapidfuzz.distance import OSA

from clawdbot.services.plugins.base import PluginContext, PluginSettings
from clawdbot.services.plugins.builtin.entity import CN_NUMERALS
from clawdbot.services.plugins.builtin.handoff import without_smuggled_notes
from clawdbot.services.plugins.builtin.text import cjk_share, normalize
from clawdbot.services.plugins.kinds import EntityMatch, GraphFact, KnowledgeGraphPlugin
from clawdbot.services.plugins.types import ContextItem, Contribution, InputState

_COMPACT = re.compile(r"[\s\-_·.,，。!！?？'\"()（）]+")
_BUDGET = [
    re.compile(r"(\d{2,6})\s*(?:元|块|rmb|cny|yuan)?\s*(?:以内|以下|之内|内|左右|上下|不到|封顶)"),
    re.compile(r"(?:不超过|不到|低于|少于|预算|最多|控制在)\s*(\d{2,6})"),
    re.compile(
        r"(?:under|below|less than|within|max|up to|cheaper than|budget(?: is| of)?)\s*(?:cny|rmb|¥)?\s*(\d{2,6})"
    ),
]
# Asking which of the products just listed is cheaper or dearer ("which one is cheaper?", "哪个便宜").
_CHEAPER = re.compile(r"(cheaper|cheapest|less expensive|lower price|便宜|实惠|省钱|划算)")
_DEARER = re.compile(r"(more expensive|pricier|most expensive|dearer|贵一点|更贵|最贵|贵的|高端)")
# What a policy question about one product asks: its warranty or its return window.
_ASPECTS = {
    "warranty": re.compile(
        r"(保修|质保|保固|保多久|坏了|故障|换新|不转|不动了|不工作|没反应|开不了机|用不了|warrant|guarantee|"
        r"stopped working|not working|broken|new one|replace)"
    ),
    # Not a price-protection question ("降价了能退差价吗", "price protection"): the FAQ answers that.
    "returns": re.compile(
        r"^(?!.*(差价|价保|价格保护|降价|price\s+protection|price\s+drop|the\s+difference)).*(退|return|refund|send it back)"
    ),
}
# "the cheaper one, what colours?", "贵的那个多少钱": one of the products just discussed, picked by price.
_PICK = re.compile(
    r"(cheaper|cheapest|more expensive|pricier|dearer)\s+one|(便宜|贵)(的)?(那|这)(个|款|台)|(那|这)(个|款|台)(便宜|贵)的"
)
# "这两个都…", "both of them": every product just discussed.
_BOTH = re.compile(r"(这两|那两|两个都|两款都|都能|都可以|\bboth\b|\beach\b|\bthe two\b)")
# "不想要了" asks to return, not for a suggestion ("想要").
_NOT_WANTED = re.compile(r"(不想要|不要了|don'?t want)")
# Intents a product block answers at full strength.
_PRODUCT_INTENTS = ("product_info", "other", "greeting", "")
# How to claim or return, not how long: the FAQ's steps answer these, not the product's terms.
_PROCESS = re.compile(
    r"(提供什么|需要什么|要什么|怎么申请|如何申请|流程|手续|how do i (claim|apply|start)|what do i need|what should i (send|provide)|process)"
)
# When an out-of-stock product is back: the shop's restock note (FAQ) answers it, not the card.
_RESTOCK = re.compile(
    r"(补货|到货|什么时候有货|啥时候有货|再有货|back in stock|restock|be back|come back|available again)"
)
# Words just before a brand that make it the customer's device, not the thing asked for.
_OWNED_BEFORE = re.compile(
    r"(\b(for|with|charge|charges|charging|compatible\s+with|works?\s+with|support|supports|fit|fits|connect\s+to)"
    r"\s+(my|a|an|the|our|both\s+my)?\s*|(给|适配|兼容|支持|配|连|我的是|我用的是|我的)\s*(我的)?\s*)$"
)
_PRICE_TALK = re.compile(
    r"(\bpay\b|price|cost|多少钱|价格|售价|¥|\d{3,}\s*(元|块|rmb|cny|yuan)?)", re.IGNORECASE
)
LISTED_FACT = "_listed"  # the products just listed or discussed (at most three), for "which one is cheaper?"
# "两百以内", "一千五左右": budgets in Chinese numerals are read as digits first.
_CN_DIGITS = {k: v for k, v in CN_NUMERALS.items() if v < 10}
_CN_UNITS = {"十": 10, "百": 100, "千": 1000, "万": 10000}
_CN_NUMBER = re.compile(r"[零一二两三四五六七八九十百千万]{2,}")
# "the biggest battery", "电池最大的": the products compared by their battery capacity.
_BATTERY = re.compile(
    r"(bigger|biggest|largest|larger|more|most)\s+battery|battery.{0,12}(bigger|biggest|largest|most)|电池(最|更)?大|大电池|电池容量"
)
_MAH = re.compile(r"(\d{3,6})\s*mAh", re.IGNORECASE)


def cn_number(text: str) -> int | None:
    """ "两百" -> 200, "一千五" -> 1500, "三千" -> 3000 (the forms budgets are said in)."""
    total, digit, last_unit = 0, None, 1
    for char in text:
        if char in _CN_DIGITS:
            digit = _CN_DIGITS[char]
        elif char in _CN_UNITS:
            unit = _CN_UNITS[char]
            total += (1 if digit is None else digit) * unit
            digit, last_unit = None, unit
        else:
            return None
    if digit is not None:  # "一千五": the trailing digit is of the next unit down
        total += digit * (last_unit // 10 if last_unit >= 10 else 1)
    return total or None


def with_arabic_numbers(text: str) -> str:
    return _CN_NUMBER.sub(lambda m: str(n) if (n := cn_number(m.group(0))) else m.group(0), text)


_FOLLOW_UP = re.compile(
    r"(它|这个|那个|这款|那款|这台|那台|这个东西|\bit\b|\bthis\b|\bthat\b|\bthis one\b|\bthat one\b)"
)


def last_known(state: InputState, products: dict[str, Any]) -> bool:
    return (state.fact("product_id") or "") in products


# Spec topics a policy question may turn on: the words that ask about one, and the words of the
# description clause that answers it.
_SPECS = (
    (
        re.compile(r"(防水|进水|泡水|游泳|淋雨|湿了|water|swim|wet|rain)"),
        re.compile(r"(防水|water)", re.IGNORECASE),
    ),
    (re.compile(r"(续航|电池|没电|battery)"), re.compile(r"(续航|battery)", re.IGNORECASE)),
)


def asked_specs(description: str, question: str) -> list[str]:
    """The description's clauses on the specs the question asks about, each ending in a stop."""
    clauses = [c.strip(" 。.") for c in re.split(r"[，,。;；]\s*|(?<=\.)\s+", description) if c.strip(" 。.")]
    found = [c for asked, answers in _SPECS if asked.search(question) for c in clauses if answers.search(c)]
    cjk = cjk_share(description) >= 0.3
    return [f"{c}。" if cjk else f"{c[0].upper()}{c[1:]}." for c in dict.fromkeys(found)]


def compact(text: str) -> str:
    return _COMPACT.sub("", normalize(text))


@dataclass(frozen=True)
class Product:
    data: dict[str, Any]
    brand: dict[str, Any]
    category: dict[str, Any]

    @property
    def id(self) -> str:
        return str(self.data["id"])

    def name(self, lang: str) -> str:
        return str(self.data["name_zh" if lang == "zh" else "name_en"])

    def colours(self, lang: str) -> list[str]:
        return [c[0] if lang == "zh" else c[1] for c in self.data.get("colours", [])]

    @property
    def price(self) -> int:
        return int(self.data["price_cny"])

    @property
    def in_stock(self) -> bool:
        return int(self.data.get("stock", 0)) > 0


class CatalogueSettings(PluginSettings):
    file: str = "catalogue.json"
    # Extra names per category id ("C02": [耳机, headphones, earbuds]); the category's own names always count.
    category_words: dict[str, list[str]] = Field(default_factory=dict)
    # Words that ask for a suggestion ("|" joins the words of a phrase).
    recommend_words: list[str] = Field(
        default_factory=lambda: [
            w.replace("|", " ")
            for w in [
                "推荐",
                "有什么",
                "有哪些",
                "有没有",
                "哪款",
                "哪个好",
                "哪个比较好",
                "适合",
                "送人",
                "预算",
                "买什么",
                "选哪个",
                "想买",
                "想要",
                "要一个",
                "要个",
                "要能",
                "有啥",
                "买点啥",
                "礼物",
                "送啥",
                "买副",
                "买个",
                "买一副",
                "想给",
                "给孩子买",
                "sell|anything",
                "do|u|have",
                "got|any",
                "have|any",
                "anything|for",
                "送什么",
                "生日",
                "最好",
                "最便宜",
                "recommend",
                "suggest",
                "suggestion",
                "looking|for",
                "what|do|you|have",
                "which|one",
                "any|good",
                "good|for",
                "options",
                "do|you|have",
                "do|you|sell",
                "need|a",
                "need|something",
                "want|a",
                "something",
                "gift",
                "ideas",
                "best",
                "cheapest",
                "which|phone",
                "which|watch",
            ]
        ]
    )
    # Said after a product's warranty ({"zh": ..., "en": ...}): the shop-wide terms that go with it.
    warranty_note: dict[str, str] = Field(default_factory=dict)
    # Words typed for others by pinyin input ("耳鸡" for 耳机): read as meant before linking.
    typos: dict[str, str] = Field(default_factory=dict)
    # Words that name one kind of product ("headphones" takes in earbuds; "speaker" does not).
    same_kind: list[list[str]] = Field(default_factory=list)
    # Needs that point at particular products ("P1011": [homework, 写作业, reading]): a request for
    # a suggestion that names one is narrowed to those products.
    product_words: dict[str, list[str]] = Field(default_factory=dict)
    # Brands the shop does not sell, with the name to show: a question about them gets a clear "no".
    not_sold: dict[str, list[str]] = Field(default_factory=dict)
    max_products: int = Field(default=3, ge=1, le=10)
    max_recommendations: int = Field(default=3, ge=1, le=10)


class ProductCatalogue(KnowledgeGraphPlugin[CatalogueSettings]):
    settings_model = CatalogueSettings
    description = "Links products (names, aliases, typos, brand + category, follow-ups) to catalogue facts."

    def __init__(self, name: str, settings: CatalogueSettings, context: PluginContext) -> None:
        super().__init__(name, settings, context)
        path = context.path(settings.file)
        if not path.is_file():
            raise ValueError(f"catalogue file {path} does not exist")
        data = json.loads(path.read_text(encoding="utf-8"))
        brands = {b["id"]: b for b in data.get("brands", [])}
        categories = {c["id"]: c for c in data.get("categories", [])}
        self.shop: dict[str, Any] = data.get("shop", {})
        self.products = [
            Product(p, brands.get(p.get("brand", ""), {}), categories.get(p.get("category", ""), {}))
            for p in data["products"]
        ]
        self.by_id = {p.id: p for p in self.products}
        self.brand_names = {
            bid: {compact(b.get("name_zh", "")), compact(b.get("name_en", ""))} - {""}
            for bid, b in brands.items()
        }
        self.category_names = {
            cid: {compact(c.get("name_zh", "")), compact(c.get("name_en", ""))}
            | {compact(w) for w in settings.category_words.get(cid, [])}
            for cid, c in categories.items()
        }
        self.aliases: list[tuple[str, str]] = sorted(
            {(alias, p.id) for p in self.products for alias in self._names(p) if len(alias) >= 2},
            key=lambda pair: (-len(pair[0]), pair[1]),
        )
        self.codes = self._model_codes()
        self.same_kind = [{compact(w) for w in group} for group in settings.same_kind]
        self.need_names = {pid: {compact(w) for w in words} for pid, words in settings.product_words.items()}
        self.not_sold = {label: [compact(w) for w in words] for label, words in settings.not_sold.items()}

    @staticmethod
    def _names(p: Product) -> set[str]:
        names = {compact(p.data.get("name_zh", "")), compact(p.data.get("name_en", ""))}
        first = compact(p.data.get("name_zh", "").split(" ")[0]) if " " in p.data.get("name_zh", "") else ""
        brand = {compact(p.brand.get("name_zh", "")), compact(p.brand.get("name_en", ""))}
        if first and first not in brand:  # "小米14 手机 …" -> "小米14"; "华为 Mate 60 …" -> not "华为"
            names.add(first)
        names |= {compact(a) for a in p.data.get("aliases", [])}
        if p.data.get("sku"):
            names.add(compact(p.data["sku"]))
        # "华为 Mate 60 Pro 12GB+512GB" -> "mate60pro": the model name without brand and memory size.
        for field in ("name_en", "name_zh"):
            words = [w for w in normalize(p.data.get(field, "")).split() if not re.match(r"\d+gb", w)]
            brand = {normalize(p.brand.get("name_en", "")), normalize(p.brand.get("name_zh", ""))}
            rest = [w for w in words if w not in brand]
            if rest:
                names.add(compact(" ".join(rest)))
        return names - {""}

    def _model_codes(self) -> dict[str, str]:
        """Model codes of letters and digits that name one product only ("X1", "P2", "GT4"): a
        customer says "扫拖一体的X1" without the rest of the name. Matched as whole words."""
        owners: dict[str, set[str]] = {}
        for p in self.products:
            for word in re.findall(r"[a-z0-9]+", normalize(f"{p.name('en')} {p.name('zh')}")):
                if re.fullmatch(r"(?=.*[a-z])(?=.*\d)[a-z0-9]{2,6}", word) and not re.fullmatch(
                    r"\d+(gb|mm|w|mah)", word
                ):
                    owners.setdefault(word, set()).add(p.id)
        return {word: next(iter(ids)) for word, ids in owners.items() if len(ids) == 1}

    # -- linking ----------------------------------------------------------------------------------

    def _by_alias(self, text: str) -> list[tuple[str, str]]:
        haystack = compact(text)
        taken = [False] * len(haystack)
        found: dict[str, str] = {}
        for alias, pid in self.aliases:
            start = 0
            while (index := haystack.find(alias, start)) >= 0:
                end = index + len(alias)
                if not any(taken[index:end]):
                    taken[index:end] = [True] * (end - index)
                    found.setdefault(pid, alias)
                start = index + 1
        for word in re.findall(r"[a-z0-9]+", normalize(text)):
            if word in self.codes:
                found.setdefault(self.codes[word], word)
        return list(found.items())

    def _by_typo(self, text: str) -> list[tuple[str, str]]:
        if typo := self._by_cjk_typo(text):
            return typo
        words = re.findall(r"[a-z0-9]+", normalize(text))
        grams = set(words) | {a + b for a, b in itertools.pairwise(words)}
        grams |= {a + b + c for a, b, c in zip(words, words[1:], words[2:], strict=False)}
        found: dict[str, str] = {}
        for alias, pid in self.aliases:
            if len(alias) < 6 or not alias.isascii() or pid in found:
                continue
            cutoff = 2 if len(alias) >= 10 else 1
            if any(OSA.distance(g, alias, score_cutoff=cutoff) <= cutoff for g in grams if len(g) >= 5):
                found[pid] = alias
        return list(found.items())

    def _by_cjk_typo(self, text: str) -> list[tuple[str, str]]:
        """One wrong character in a long Chinese name ("扫地鸡器人", a homophone typed by pinyin).
        Five characters at least: in four, one changed character is often another product."""
        haystack = compact(text)
        for alias, pid in self.aliases:
            size = len(alias)
            if size < 5 or cjk_share(alias) < 1.0:
                continue
            for start in range(len(haystack) - size + 1):
                window = haystack[start : start + size]
                if sum(a != b for a, b in zip(window, alias, strict=True)) == 1 and cjk_share(window) == 1.0:
                    return [(pid, alias)]
        return []

    def _mentioned(self, names: dict[str, set[str]], text: str) -> list[str]:
        """Keys whose names occur: Chinese names anywhere, Latin ones as whole words ("phone" is
        not in "headphones")."""
        haystack = compact(text)
        words = re.findall(r"[a-z0-9]+", normalize(text))
        grams = {"".join(words[i : i + n]) for n in (1, 2, 3) for i in range(len(words) - n + 1)}
        return [
            key
            for key, found in names.items()
            if any(w and (w in grams if w.isascii() else w in haystack) for w in found)
        ]

    def _device_owned(self, label: str, text: str) -> bool:
        """The unsold brand names the customer's own device ("for my macbook", "我的是苹果手机",
        "兼容iPhone吗"), which a product of ours should fit."""
        lowered = normalize(text)
        for word in self.settings.not_sold.get(label, []):
            for found in re.finditer(re.escape(normalize(word)), lowered):
                if _OWNED_BEFORE.search(lowered[: found.start()]):
                    return True
        return False

    def _named_kind(self, pool: list[Product], text: str) -> list[Product]:
        """Of a category's products, those whose names contain the very word used ("speaker" picks
        the speaker of "Headphones & Speakers"); all of them when none does."""
        haystack = compact(text)
        words = {w for c in self.category_names.values() for w in c if w and w in haystack}
        words |= {k for group in self.same_kind if words & group for k in group}
        named = [p for p in pool if any(w in self._all_names(p) for w in words)]
        return named or pool

    def _all_names(self, p: Product) -> str:
        """A product's names and aliases run together, for "is this word in its name?"."""
        return compact(" ".join([p.name("zh"), p.name("en"), *p.data.get("aliases", [])]))

    def link(self, text: str, single_from_category: bool = True) -> list[EntityMatch]:
        found = self._by_alias(text) or self._by_typo(text)
        if not found:
            brands = self._mentioned(self.brand_names, text)
            categories = self._mentioned(self.category_names, text)
            needed = [pid for pid in self._mentioned(self.need_names, text) if pid in self.by_id]
            if brands:  # "the sony over-ear ones"
                needed = [pid for pid in needed if self.by_id[pid].data.get("brand") in brands]
            if len(needed) == 1 and (brands or single_from_category):  # "想除甲醛", "for long flights"
                found = [(needed[0], "")]
            elif brands and categories:
                pool = [
                    p
                    for p in self.products
                    if p.data.get("brand") in brands and p.data.get("category") in categories
                ]
                # A brand and a kind ("安克充电器") name the product as surely as its name does.
                found = [(p.id, "+".join(brands)) for p in self._named_kind(pool, text)]
            elif categories and not brands and single_from_category:  # "and the keyboard?"
                pool = [p for p in self.products if p.data.get("category") in categories]
                named = self._named_kind(pool, text)
                if len(named) == 1 and len(pool) > 1:
                    found = [(named[0].id, "")]
        return [EntityMatch(pid, self.by_id[pid].name("en"), mention) for pid, mention in found]

    def facts_about(self, entity_id: str) -> list[GraphFact]:
        p = self.by_id.get(entity_id)
        if p is None:
            return []
        source = self.settings.file
        return [
            GraphFact(p.name("en"), "price_cny", str(p.price), source),
            GraphFact(p.name("en"), "stock", str(p.data.get("stock", 0)), source),
            GraphFact(p.name("en"), "colours", ", ".join(p.colours("en")), source),
            GraphFact(p.name("en"), "warranty_months", str(p.data.get("warranty_months", "")), source),
        ]

    # -- what the model and the fallback read -------------------------------------------------------

    def card(self, p: Product, lang: str) -> str:
        d = p.data
        if lang == "zh":
            stock = f"有货（{d['stock']}件）" if p.in_stock else "缺货"
            lines = [
                f"商品：{p.name('zh')}（{p.id}）",
                f"售价：{p.price}元",
                f"库存：{stock}",
                f"颜色：{'、'.join(p.colours('zh'))}",
                f"保修：{d.get('warranty_months')}个月",
                f"无理由退货：签收{d.get('return_days')}天内",
                f"介绍：{d.get('description_zh', '')}",
            ]
        else:
            stock = f"in stock ({d['stock']})" if p.in_stock else "out of stock"
            lines = [
                f"Product: {p.name('en')} ({p.id})",
                f"Price: {p.price} CNY",
                f"Stock: {stock}",
                f"Colours: {', '.join(p.colours('en'))}",
                f"Warranty: {d.get('warranty_months')} months",
                f"No-reason returns: within {d.get('return_days')} days of delivery",
                f"Description: {d.get('description_en', '')}",
            ]
        return "\n".join(lines)

    def answer(self, p: Product, lang: str) -> str:
        d = p.data
        if lang == "zh":
            stock = "目前有货" if p.in_stock else "目前缺货"
            return (
                f"{p.name('zh')}售价{p.price}元，{stock}，颜色有{'、'.join(p.colours('zh'))}。"
                f"保修{d.get('warranty_months')}个月，签收{d.get('return_days')}天内支持无理由退货。"
                f"{d.get('description_zh', '')}"
            )
        stock = "is in stock" if p.in_stock else "is out of stock right now"
        colours = ", ".join(p.colours("en"))
        return (
            f"The {p.name('en')} costs {p.price} CNY and {stock}; colours: {colours}. "
            f"It has a {d.get('warranty_months')}-month warranty and can be returned within "
            f"{d.get('return_days')} days of delivery. {d.get('description_en', '')}"
        )

    def aspect_answer(self, p: Product, aspect: str, lang: str, question: str = "") -> tuple[str, list[str]]:
        """One product's warranty or return window, the answer to a policy question that names it,
        with the phrase a right reply contains; and the product's own spec the question turns on
        ("got it wet swimming, is that covered?": its water rating)."""
        text, facts = self._aspect_terms(p, aspect, lang)
        specs = asked_specs(p.data.get(f"description_{lang}", ""), question)
        if not specs:
            return text, facts
        return (text + "".join(specs) if lang == "zh" else " ".join([text, *specs])), facts

    def _aspect_terms(self, p: Product, aspect: str, lang: str) -> tuple[str, list[str]]:
        d = p.data
        note = [
            sentence
            for sentence in re.split(r"(?<=[。.])\s*", d.get(f"description_{lang}", ""))
            if aspect == "returns" and re.search(r"(退|return)", sentence, re.IGNORECASE)
        ]
        if aspect == "warranty":
            months = d.get("warranty_months")
            terms = self.settings.warranty_note.get(lang, "")
            if lang == "zh":
                return f"{p.name('zh')}保修{months}个月。{terms}", [f"{months}个月"]
            return " ".join([f"The {p.name('en')} has a {months}-month warranty.", terms]).strip(), [
                f"{months}"
            ]
        days = d.get("return_days")
        if lang == "zh":
            text = f"{p.name('zh')}签收{days}天内支持无理由退货（商品完好、配件齐全）。" + "".join(note)
            return text, [f"{days}天"]
        text = f"The {p.name('en')} can be returned within {days} days of delivery if it is complete and undamaged."
        return " ".join([text, *note]), [f"{days} days"]

    def recommendation(self, chosen: list[Product], lang: str, what: str, budget: int | None) -> ContextItem:
        if lang == "zh":
            header = f"符合条件的商品（{what}{f'，{budget}元以内' if budget else ''}）："
            lines = [f"- {p.name('zh')}：{p.price}元，{'有货' if p.in_stock else '缺货'}" for p in chosen]
            answer = (
                "为您推荐："
                + "；".join(
                    f"{p.name('zh')}（{p.price}元{'' if p.in_stock else '，暂时缺货'}）" for p in chosen
                )
                + "。"
            )
        else:
            header = f"Matching products ({what}{f', up to {budget} CNY' if budget else ''}):"
            lines = [
                f"- {p.name('en')}: {p.price} CNY, {'in stock' if p.in_stock else 'out of stock'}"
                for p in chosen
            ]
            answer = (
                "I'd suggest: "
                + "; ".join(
                    f"the {p.name('en')} ({p.price} CNY{'' if p.in_stock else ', out of stock'})"
                    for p in chosen
                )
                + "."
            )
        return ContextItem(
            "\n".join([header, *lines]),
            f"{self.settings.file}#recommend",
            "recommendation",
            0.9,
            answer=answer,
            # An out-of-stock suggestion says so: a reply naming it as if it could be bought is wrong.
            key_facts=[str(chosen[0].price)]
            + ([] if chosen[0].in_stock else ["缺货" if lang == "zh" else "out of stock"]),
        )

    def compare(self, listed: list[Product], dearer: bool, lang: str) -> ContextItem:
        """Which of the products just listed is cheaper (or dearer), with both prices."""
        ranked = sorted(listed, key=lambda p: p.price, reverse=dearer)
        best = ranked[0]
        prices_zh = "，".join(f"{p.name('zh')}{p.price}元" for p in ranked)
        prices_en = "; ".join(f"the {p.name('en')} {p.price} CNY" for p in ranked)
        if lang == "zh":
            word = "更贵" if dearer else "更便宜"
            text = f"价格比较：{prices_zh}。"
            answer = f"{best.name('zh')}{word}，售价{best.price}元（{prices_zh}）。"
        else:
            word = "more expensive" if dearer else "cheaper"
            text = f"Prices: {prices_en}."
            answer = f"The {best.name('en')} is {word}, at {best.price} CNY ({prices_en})."
        return ContextItem(
            text,
            f"{self.settings.file}#compare",
            "comparison",
            0.85,
            answer=answer,
            key_facts=[str(best.price)],
        )

    def no_match(self, what: str, budget: int, cheapest: Product, lang: str) -> ContextItem:
        if lang == "zh":
            text = f"没有{budget}元以内的{what}；最便宜的是{cheapest.name('zh')}，{cheapest.price}元。"
            answer = f"抱歉，{budget}元以内暂时没有合适的{what}。最实惠的是{cheapest.name('zh')}，售价{cheapest.price}元。"
        else:
            text = f"No {what} up to {budget} CNY; the cheapest is the {cheapest.name('en')} at {cheapest.price} CNY."
            answer = f"Sorry, we have no {what} up to {budget} CNY. The most affordable is the {cheapest.name('en')} at {cheapest.price} CNY."
        return ContextItem(text, f"{self.settings.file}#recommend", "recommendation", 0.9, answer=answer)

    def not_sold_item(self, label: str, lang: str) -> ContextItem:
        brands = "、".join(p.brand.get("name_zh", "") for p in self.products)
        brands_zh = "、".join(dict.fromkeys(b for b in brands.split("、") if b))
        brands_en = ", ".join(dict.fromkeys(p.brand.get("name_en", "") for p in self.products))
        if lang == "zh":
            text = f"本店不销售{label}的商品。本店在售品牌：{brands_zh}。"
            answer = f"抱歉，本店暂不销售{label}的商品。我们有{brands_zh}的商品，需要的话我可以为您推荐。"
        else:
            text = f"The shop does not sell {label} products. Brands on sale: {brands_en}."
            answer = f"Sorry, we don't sell {label} products. We carry {brands_en}; I'm happy to suggest something."
        return ContextItem(text, f"{self.settings.file}#brands", "brands", 0.85, answer=answer)

    # -- the turn ------------------------------------------------------------------------------------

    def _budget(self, text: str) -> int | None:
        norm = with_arabic_numbers(normalize(text))
        for pattern in _BUDGET:
            if m := pattern.search(norm):
                return int(m.group(1))
        return None

    def _recommend(self, text: str, lang: str, asked: bool) -> ContextItem | None:
        categories = self._mentioned(self.category_names, text)
        brands = self._mentioned(self.brand_names, text)
        needed = [pid for pid in self._mentioned(self.need_names, text) if pid in self.by_id]
        if categories:  # "a small charger for travel": the need narrows the kind named, not another
            needed = [pid for pid in needed if self.by_id[pid].data.get("category") in categories]
        categories = list(
            dict.fromkeys([*categories, *(str(self.by_id[pid].data.get("category")) for pid in needed)])
        )
        budget = self._budget(text)
        cheapest = any(w in normalize(text) for w in ("cheapest", "最便宜", "最实惠", "便宜点"))
        if not (asked or budget or cheapest):
            return None
        if not (categories or brands or budget or cheapest):
            return None
        pool = [
            p
            for p in self.products
            if (not categories or p.data.get("category") in categories)
            and (not brands or p.data.get("brand") in brands)
        ]
        pool = [p for p in pool if p.id in needed] or self._named_kind(pool, text)
        if not pool:
            return None
        names = [
            (p.category if categories else p.brand).get("name_zh" if lang == "zh" else "name_en", "")
            for p in pool
        ]
        what = (
            "、".join(dict.fromkeys(names))
            if categories or brands
            else ("商品" if lang == "zh" else "products")
        )
        fitting = [p for p in pool if budget is None or p.price <= budget]
        if not fitting:
            return self.no_match(what, budget or 0, min(pool, key=lambda p: p.price), lang)
        # Within a budget the best it buys first; otherwise (or asked for the cheapest) the cheapest.
        fitting.sort(key=lambda p: (not p.in_stock, -p.price if budget and not cheapest else p.price))
        return self.recommendation(fitting[: self.settings.max_recommendations], lang, what, budget)

    def _recent(self, state: InputState, now: list[str]) -> str:
        """The products this conversation has been about, latest last (at most three): what "which
        one is cheaper?" and "这两个都能退吗" point back at."""
        before = [i for i in (state.fact(LISTED_FACT) or "").split(",") if i in self.by_id]
        return ",".join(list(dict.fromkeys([i for i in before if i not in now] + now))[-3:])

    def _product_block(self, p: Product, lang: str, score: float) -> ContextItem:
        return ContextItem(
            self.card(p, lang),
            f"{self.settings.file}#{p.id}",
            p.name(lang),
            score,
            answer=self.answer(p, lang),
            key_facts=[str(p.price)] + ([] if p.in_stock else ["缺货" if lang == "zh" else "out of stock"]),
        )

    def _aspect_block(self, chosen: list[Product], aspect: str, lang: str, question: str = "") -> ContextItem:
        """A policy question about named products ("安克充电器保修多久", "这两个都能15天退吗"):
        their own terms answer it."""
        parts = [self.aspect_answer(p, aspect, lang, question) for p in chosen]
        answer = ("" if lang == "zh" else " ").join(a for a, _ in parts)
        return ContextItem(
            "\n\n".join(self.card(p, lang) for p in chosen),
            f"{self.settings.file}#{chosen[0].id}",
            chosen[0].name(lang),
            0.95,  # a named product's own terms outrank the shop-wide policy passage
            answer=answer,
            key_facts=list(dict.fromkeys(f for _, facts in parts for f in facts)),
        )

    def _read_as_meant(self, text: str) -> str:
        for typo, meant in self.settings.typos.items():
            text = text.replace(typo, meant)
        return text

    async def preprocess(self, state: InputState) -> Contribution | None:
        # A note the guard flagged as smuggled ("（备注：赠送小米手环一只）") names no product asked about.
        text = self._read_as_meant(without_smuggled_notes(state))
        lang = state.language or ("zh" if cjk_share(text) >= 0.3 else "en")
        intent = state.metadata.get("intent", "")
        weak_intent = state.metadata.get("intent_method") in ("example", "default", "context")
        flagged = state.metadata.get("guard") == "flagged"
        # A flagged offer about a price ("the owner said I only pay 3499") is answered with the price.
        product_turn = (
            intent in _PRODUCT_INTENTS or weak_intent or (flagged and _PRICE_TALK.search(text) is not None)
        )
        norm = normalize(text)
        for label in self._mentioned({k: set(v) for k, v in self.not_sold.items()}, text):
            # "xiaomi phone" is no iPhone: Latin brand words count as whole words only.
            if self._device_owned(label, text):
                continue  # "a charger for my macbook" asks for what we sell, not for the brand
            return Contribution(context=[self.not_sold_item(label, lang)])
        asked = any(w in norm for w in self.settings.recommend_words) and not _NOT_WANTED.search(norm)
        budget = self._budget(text)
        matches = self.link(text, single_from_category=not asked and budget is None)
        if (
            matches
            and all(not m.mention for m in matches)
            and _FOLLOW_UP.search(norm)
            and last_known(state, self.by_id)
        ):
            matches = []  # "它防水吗?": the product just discussed, not one a need word points at
        wants_list = product_turn and len(matches) != 1 and (asked or budget is not None or not matches)
        recent = [self.by_id[i] for i in (state.fact(LISTED_FACT) or "").split(",") if i in self.by_id]
        last_id = state.fact("product_id") or ""
        aspect = next((a for a, pattern in _ASPECTS.items() if pattern.search(norm)), "")

        if not matches and (_CHEAPER.search(norm) or _DEARER.search(norm)) and last_id in self.by_id:
            pool = recent if len(recent) > 1 else self._same_kind_as(self.by_id[last_id])
            if len(pool) > 1:
                dearer = _DEARER.search(norm) is not None
                if _PICK.search(norm):  # "the cheaper one, what colours?": that product's card
                    chosen = sorted(pool, key=lambda p: p.price, reverse=dearer)[0]
                    facts = {"product_id": chosen.id, LISTED_FACT: ",".join(p.id for p in pool)}
                    return Contribution(context=[self._product_block(chosen, lang, 0.85)], facts=facts)
                comparison = self.compare(pool, dearer, lang)
                best = next(p for p in pool if str(p.price) == comparison.key_facts[0])
                facts = {"product_id": best.id, LISTED_FACT: ",".join(p.id for p in pool)}
                return Contribution(context=[comparison], facts=facts)
        if _BATTERY.search(norm) and (battery := self._by_battery(matches, recent, text, lang)):
            return battery
        if not matches and last_id in self.by_id:
            # "how about the huawei one?" after the xiaomi 14: that brand's product of the same kind.
            brands = self._mentioned(self.brand_names, text)
            kind = self.by_id[last_id].data.get("category")
            same = [
                p for p in self.products if p.data.get("brand") in brands and p.data.get("category") == kind
            ]
            if len(same) == 1:
                matches = [EntityMatch(same[0].id, same[0].name("en"), "+".join(brands))]
        if not matches and aspect and _BOTH.search(norm) and len(recent) > 1:
            return Contribution(context=[self._aspect_block(recent[-2:], aspect, lang, norm)])
        if wants_list and (item := self._recommend(text, lang, asked or len(matches) > 1)):
            shown = [p for p in self.products if p.name(lang) in item.answer]
            facts = {LISTED_FACT: ",".join(p.id for p in shown)}
            if shown:
                facts["product_id"] = shown[0].id
            return Contribution(context=[item], facts=facts)
        # A named product answers product questions, and warranty ones (its card has its warranty);
        # a policy question that names a product is the policy's.
        score = 0.9 if product_turn else {"warranty": 0.7}.get(intent, 0.4)
        named = bool(matches) and all(m.mention for m in matches)
        if not matches:
            # A follow-up ("它有货吗", "那个保修多久", a bare "warranty?") is about the product just discussed.
            short_aspect = bool(aspect) and len(compact(text)) <= 12
            follow_up = intent == "product_info" or _FOLLOW_UP.search(norm) is not None or short_aspect
            if last_id not in self.by_id or not follow_up or intent == "order_status":
                return None
            named = True
            matches = [EntityMatch(last_id, self.by_id[last_id].name("en"), "")]
            score = 0.75 if product_turn else 0.3
        ids = [m.entity_id for m in matches[: self.settings.max_products]]
        if (
            intent in ("warranty", "return_refund")
            and aspect
            and named
            and len(matches) == 1
            and not _PROCESS.search(norm)
        ):
            # "安克充电器保修多久", "台灯买了10天还能退吗": that product's own terms answer it.
            item = self._aspect_block([self.by_id[ids[0]]], aspect, lang, norm)
            return Contribution(
                context=[item], facts={"product_id": ids[0], LISTED_FACT: self._recent(state, ids)}
            )
        context = []
        for pid in ids:
            p = self.by_id[pid]
            restock = not p.in_stock and _RESTOCK.search(norm) is not None
            context.append(self._product_block(p, lang, min(score, 0.55) if restock else score))
            score *= 0.9
        if len(context) > 1:  # "compare the xiaomi 14 and the mate 60": the answer covers both
            both = context[:2]
            context[0].answer = ("" if lang == "zh" else " ").join(c.answer for c in both)
            context[0].key_facts = [f for c in both for f in c.key_facts]
        return Contribution(
            context=context, facts={"product_id": ids[0], LISTED_FACT: self._recent(state, ids)}
        )

    def _by_battery(
        self, matches: list[EntityMatch], recent: list[Product], text: str, lang: str
    ) -> Contribution | None:
        """Which product has the biggest battery: of those named, else those just discussed, else
        the kind named ("which phone has the biggest battery")."""
        pool = [self.by_id[m.entity_id] for m in matches] if len(matches) > 1 else recent
        if len(pool) < 2:
            categories = self._mentioned(self.category_names, text)
            pool = [p for p in self.products if p.data.get("category") in categories]
        sized = [(int(m.group(1)), p) for p in pool if (m := _MAH.search(p.data.get("description_en", "")))]
        if len(sized) < 2:
            return None
        sized.sort(key=lambda pair: -pair[0])
        (top, best), rest = sized[0], sized[1:]
        if lang == "zh":
            others = "，".join(f"{p.name('zh')}为{mah}mAh" for mah, p in rest)
            answer = f"{best.name('zh')}的电池更大，{top}mAh（{others}）。"
        else:
            others = "; ".join(f"the {p.name('en')} has {mah} mAh" for mah, p in rest)
            answer = f"The {best.name('en')} has the bigger battery, {top} mAh ({others})."
        item = ContextItem(
            "\n\n".join(self.card(p, lang) for _, p in sized),
            f"{self.settings.file}#battery",
            "battery",
            0.85,
            answer=answer,
            key_facts=[str(top)],
        )
        return Contribution(
            context=[item], facts={"product_id": best.id, LISTED_FACT: ",".join(p.id for _, p in sized)}
        )

    def _same_kind_as(self, p: Product) -> list[Product]:
        """Products of the same kind as `p` ("which one is cheaper?" after one pair of headphones)."""
        pool = [q for q in self.products if q.data.get("category") == p.data.get("category")]
        words = {w for group in self.same_kind for w in group if w in compact(p.name("en") + p.name("zh"))}
        same = [q for q in pool if any(w in compact(q.name("en") + q.name("zh")) for w in words)]
        return same if len(same) > 1 else pool

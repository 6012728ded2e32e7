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
_FOLLOW_UP = re.compile(
    r"(它|这个|那个|这款|那款|这台|那台|这个东西|\bit\b|\bthis\b|\bthat\b|\bthis one\b|\bthat one\b)"
)


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
        self.not_sold = {label: [compact(w) for w in words] for label, words in settings.not_sold.items()}

    @staticmethod
    def _names(p: Product) -> set[str]:
        names = {compact(p.data.get("name_zh", "")), compact(p.data.get("name_en", ""))}
        names |= {compact(p.data["name_zh"].split(" ")[0])} if " " in p.data.get("name_zh", "") else set()
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
        return list(found.items())

    def _by_typo(self, text: str) -> list[tuple[str, str]]:
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

    def _mentioned(self, names: dict[str, set[str]], text: str) -> list[str]:
        haystack = compact(text)
        return [key for key, words in names.items() if any(w and w in haystack for w in words)]

    def _named_kind(self, pool: list[Product], text: str) -> list[Product]:
        """Of a category's products, those whose names contain the very word used ("speaker" picks
        the speaker of "Headphones & Speakers"); all of them when none does."""
        haystack = compact(text)
        words = {w for c in self.category_names.values() for w in c if w and w in haystack}
        named = [p for p in pool if any(w in compact(p.name("zh") + p.name("en")) for w in words)]
        return named or pool

    def link(self, text: str, single_from_category: bool = True) -> list[EntityMatch]:
        found = self._by_alias(text) or self._by_typo(text)
        if not found:
            brands = self._mentioned(self.brand_names, text)
            categories = self._mentioned(self.category_names, text)
            if brands and categories:
                pool = [
                    p
                    for p in self.products
                    if p.data.get("brand") in brands and p.data.get("category") in categories
                ]
                found = [(p.id, "") for p in self._named_kind(pool, text)]
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
            key_facts=[str(chosen[0].price)],
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
        norm = normalize(text)
        for pattern in _BUDGET:
            if m := pattern.search(norm):
                return int(m.group(1))
        return None

    def _recommend(self, text: str, lang: str, asked: bool) -> ContextItem | None:
        categories = self._mentioned(self.category_names, text)
        brands = self._mentioned(self.brand_names, text)
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
        pool = self._named_kind(pool, text)
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

    async def preprocess(self, state: InputState) -> Contribution | None:
        text = state.text
        lang = state.language or ("zh" if cjk_share(text) >= 0.3 else "en")
        intent = state.metadata.get("intent", "")
        norm = normalize(text)
        for label, words in self.not_sold.items():
            if any(w and w in compact(text) for w in words):
                return Contribution(context=[self.not_sold_item(label, lang)])
        asked = any(w in norm for w in self.settings.recommend_words)
        budget = self._budget(text)
        matches = self.link(text, single_from_category=not asked and budget is None)
        wants_list = len(matches) != 1 and (asked or budget is not None or not matches)
        if wants_list and (item := self._recommend(text, lang, asked or len(matches) > 1)):
            first = next((p for p in self.products if p.name(lang) in item.answer), None)
            return Contribution(context=[item], facts={"product_id": first.id} if first else {})
        # A named product answers product questions, and warranty ones (its card has its warranty);
        # a policy question that names a product is the policy's.
        score = {"product_info": 0.9, "other": 0.9, "greeting": 0.9, "": 0.9, "warranty": 0.7}.get(
            intent, 0.4
        )
        if not matches:
            last = state.fact("product_id")
            follow_up = intent == "product_info" or _FOLLOW_UP.search(norm) is not None
            if not last or last not in self.by_id or not follow_up or intent == "order_status":
                return None
            matches = [EntityMatch(last, self.by_id[last].name("en"), "")]
            score = 0.75 if intent in ("product_info", "other", "") else 0.3
        context = []
        for match in matches[: self.settings.max_products]:
            p = self.by_id[match.entity_id]
            context.append(
                ContextItem(
                    self.card(p, lang),
                    f"{self.settings.file}#{p.id}",
                    p.name(lang),
                    score,
                    answer=self.answer(p, lang),
                    key_facts=[str(p.price)],
                )
            )
            score *= 0.9
        if len(context) > 1:  # "compare the xiaomi 14 and the mate 60": the answer covers both
            both = context[:2]
            context[0].answer = ("" if lang == "zh" else " ").join(c.answer for c in both)
            context[0].key_facts = [f for c in both for f in c.key_facts]
        return Contribution(context=context, facts={"product_id": matches[0].entity_id})

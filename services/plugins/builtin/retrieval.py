"""retrieval: FAQ and document search with BM25 (jieba segmentation for Chinese), optionally fused
with dense embeddings from a local sentence-embedding model folder.

Passages carry their language so a Chinese question gets Chinese passages when both exist.
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from rapidfuzz.distance import OSA

from clawdbot.services.plugins.base import PluginContext, PluginSettings
from clawdbot.services.plugins.builtin.text import has_cjk, normalize
from clawdbot.services.plugins.kinds import Passage, RetrievalPlugin
from clawdbot.services.plugins.types import ContextItem, Contribution, InputState

_STOPWORDS = frozenset(
    [
        "的",
        "了",
        "吗",
        "呢",
        "吧",
        "啊",
        "是",
        "我",
        "你",
        "我的",
        "请问",
        "一下",
        "怎么",
        "怎么样",
        "什么",
        "多少",
        "可以",
        "能",
        "会",
        "有",
        "这个",
        "那个",
        "the",
        "a",
        "an",
        "is",
        "are",
        "do",
        "does",
        "i",
        "my",
        "me",
        "you",
        "your",
        "to",
        "of",
        "for",
        "in",
        "on",
        "and",
        "or",
        "can",
        "how",
        "what",
    ]
)
_TOKEN = re.compile(r"\w", re.UNICODE)


class Source(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str
    # faq: JSONL of {"id", "zh": {"q", "a"}, "en": {...}}; markdown: "## " sections split into paragraphs;
    # jsonl: one {"text", "title"?, "id"?} per line.
    format: Literal["faq", "markdown", "jsonl"]


class DenseSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model_dir: str  # a local Hugging Face model folder (config.json, weights, tokenizer); never downloaded
    weight: float = Field(default=0.5, ge=0.0, le=1.0)  # share of the dense score in the fused score
    max_length: int = Field(default=256, ge=8)
    min_score: float = Field(default=0.3, ge=0.0, le=1.0)  # threshold on the fused score (0..1)


class RetrievalSettings(PluginSettings):
    sources: list[Source] = Field(min_length=1)
    top_k: int = Field(default=3, ge=1, le=20)
    min_score: float = Field(default=0.5, ge=0.0)
    dense: DenseSettings | None = None
    # Words customers use -> words the documents use ("退钱" -> "退款"): appended to the query when present.
    synonyms: dict[str, str] = Field(default_factory=dict)
    # The document topics (FAQ `topic`, markdown `{#anchor}`) that answer each intent: passages on the
    # turn's intent's topics rank first, passages on another intent's topics last.
    intent_topics: dict[str, list[str]] = Field(default_factory=dict)
    # BM25 score at which a passage on the right topic counts as a sure answer (score -> 0.95).
    confident_bm25: float = Field(default=12.0, gt=0)
    # A query naming a key ("上海") cuts a passage's answer to its one clause naming a value
    # ("江浙沪…1-2天"): the customer asked about one case of a rule that lists several.
    focus_terms: dict[str, list[str]] = Field(default_factory=dict)
    # Latin query words the documents lack are read as their nearest document word within one
    # edit ("refnud" -> "refund"); words shorter than this are left alone.
    typo_min_length: int = Field(default=5, ge=3)
    # Only a question about how long or when is cut to one case ("寄到杭州多久"); "which courier
    # to Hangzhou?" is not about the delivery time.
    focus_when: str = r"(多久|几天|多长时间|哪天|几号|什么时候|how long|how many days|how fast|how soon|when)"


@dataclass(frozen=True)
class Doc:
    text: str
    source: str
    title: str
    language: str
    topic: str = ""
    answer: str = ""  # what the passage says to a customer on its own (a FAQ's answer)
    index_text: str = ""  # extra text that is searched but not shown (a FAQ's other phrasings)


# Where a rule's cases part: Chinese commas and semicolons, or an English comma or "and" before a number.
FOCUS_BOOST = 0.15
_SENTENCE = re.compile(r"(?<=[。！？])|(?<=[.!?])\s+")
_CLAUSE = re.compile(r"[，；;]|,\s*(?=\d)|\s+and\s+(?=\d)")


def tokenize(text: str) -> list[str]:
    import jieba

    tokens = []
    for token in jieba.lcut_for_search(normalize(text)):
        token = token.strip()
        if token and _TOKEN.search(token) and token not in _STOPWORDS:
            tokens.append(token)
    return tokens


def _language(text: str) -> str:
    return "zh" if has_cjk(text) else "en"


def load_docs(path: Path, fmt: str) -> list[Doc]:
    name = path.name
    docs: list[Doc] = []
    if fmt == "faq":
        for line in path.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            for lang in ("zh", "en"):
                if lang in item:
                    qa = item[lang]
                    docs.append(
                        Doc(
                            f"Q: {qa['q']}\nA: {qa['a']}",
                            f"{name}#{item['id']}",
                            qa["q"],
                            lang,
                            item.get("topic", ""),
                            qa["a"],
                            " ".join(qa.get("alt", [])),
                        )
                    )
    elif fmt == "jsonl":
        for index, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
            if line.strip():
                item = json.loads(line)
                doc_id = item.get("id", str(index + 1))
                docs.append(
                    Doc(item["text"], f"{name}#{doc_id}", item.get("title", ""), _language(item["text"]))
                )
    else:
        heading, anchor = "", ""
        for block in re.split(r"\n\s*\n", path.read_text(encoding="utf-8")):
            block = block.strip()
            if block.startswith("## "):
                match = re.match(r"##\s+(.*?)\s*(?:\{#([\w-]+)\})?\s*$", block.splitlines()[0])
                heading, anchor = (match.group(1), match.group(2) or "") if match else (block[3:], "")
                continue
            if block and not block.startswith("#"):
                docs.append(
                    Doc(
                        block,
                        f"{name}#{anchor}" if anchor else name,
                        heading,
                        _language(block),
                        anchor,
                        block,
                    )
                )
    return docs


class Bm25Retrieval(RetrievalPlugin[RetrievalSettings]):
    settings_model = RetrievalSettings
    description = "BM25 search (jieba for Chinese) over FAQ and policy documents, optionally fused with dense embeddings."

    def __init__(self, name: str, settings: RetrievalSettings, context: PluginContext) -> None:
        super().__init__(name, settings, context)
        self.paths = [(context.path(s.path), s.format) for s in settings.sources]
        for path, _ in self.paths:
            if not path.is_file():
                raise ValueError(f"retrieval source {path} does not exist")
        self.docs: list[Doc] = []
        self._bm25: Any = None
        self._dense: Any = None
        self._vocab: set[str] = set()

    async def setup(self) -> None:
        await asyncio.to_thread(self._build)

    def _build(self) -> None:
        import bm25s
        import jieba

        jieba.setLogLevel(60)
        jieba.initialize()
        self.docs = [doc for path, fmt in self.paths for doc in load_docs(path, fmt)]
        corpus = [tokenize(f"{d.title} {d.text} {d.index_text}") for d in self.docs]
        self._bm25 = bm25s.BM25()
        self._bm25.index(corpus, show_progress=False)
        self._vocab = {t for tokens in corpus for t in tokens if t.isascii() and t.isalpha()}
        if self.settings.dense is not None:
            from clawdbot.services.plugins.builtin.embeddings import DenseIndex

            dense = self.settings.dense
            self._dense = DenseIndex(self.context.path(dense.model_dir), dense.max_length)
            self._dense.index([d.text for d in self.docs])

    def _scores(self, query: str) -> tuple[list[float], float]:
        """Scores of every document and the threshold they must reach.

        BM25 alone: raw BM25 against `min_score`. With dense: BM25 divided by the best hit (but
        never by less than `min_score`, so weak keyword hits stay weak) mixed with the cosine
        similarity, in [0, 1] against `dense.min_score`: a passage BM25 misses entirely can
        still win on meaning.
        """
        norm = normalize(query)
        query += "".join(f" {v}" for k, v in self.settings.synonyms.items() if normalize(k) in norm)
        tokens = [self._spelled(t) for t in tokenize(query)]
        bm25 = [float(s) for s in self._bm25.get_scores(tokens)] if tokens else [0.0] * len(self.docs)
        dense_settings = self.settings.dense
        if self._dense is None or dense_settings is None:
            return bm25, self.settings.min_score
        top = max([*bm25, self.settings.min_score, 1e-9])
        weight = dense_settings.weight
        similarities = self._dense.similarities(query)
        fused = [
            (1 - weight) * s / top + weight * max(0.0, d) for s, d in zip(bm25, similarities, strict=True)
        ]
        return fused, dense_settings.min_score

    def _spelled(self, token: str) -> str:
        """The document word a misspelt Latin query word stands for, when exactly one is that near."""
        if len(token) < self.settings.typo_min_length or not token.isascii() or token in self._vocab:
            return token
        near = [
            w
            for w in self._vocab
            if abs(len(w) - len(token)) <= 1 and OSA.distance(w, token, score_cutoff=1) <= 1
        ]
        return near[0] if len(near) == 1 else token

    def _focus_values(self, query: str) -> list[str]:
        norm = normalize(query)
        if not re.search(self.settings.focus_when, norm):
            return []
        return [
            normalize(v)
            for k, values in self.settings.focus_terms.items()
            if normalize(k) in norm
            for v in values
        ]

    def focused(self, answer: str, query: str) -> str:
        """`answer` cut to its one clause on the case the query names (see `focus_terms`)."""
        wanted = self._focus_values(query)
        if not wanted:
            return answer
        sentences = [x for x in _SENTENCE.split(answer) if x.strip()]
        named = [x for x in sentences if any(w in normalize(x) for w in wanted)]
        if len(named) != 1:
            return answer
        clauses = [c.strip() for c in _CLAUSE.split(named[0].strip().rstrip("。.")) if c.strip()]
        hits = [c for c in clauses if any(w in normalize(c) for w in wanted) and re.search(r"\d", c)]
        if len(clauses) < 2 or len(hits) != 1:
            return answer
        clause = hits[0]
        return clause + ("。" if has_cjk(clause) else ".")

    def _confidence(self, doc: Doc, score: float, intent: str) -> float:
        """How sure it is that the passage answers the turn, in [0, 1], from its score and topic."""
        share = score if self._dense is not None else min(1.0, score / self.settings.confident_bm25)
        wanted = self.settings.intent_topics.get(intent)
        if wanted is None:  # no intent to go by ("tell me a joke"): only a near-exact match counts
            return 0.7 * share * share
        if doc.topic in wanted:
            return 0.5 + 0.45 * share
        if any(doc.topic in topics for topics in self.settings.intent_topics.values()):
            return 0.2 * share
        return 0.5 * share

    def _search(self, query: str, k: int, language: str, intent: str = "") -> list[Passage]:
        scores, threshold = self._scores(query)
        hits = [i for i in range(len(self.docs)) if scores[i] >= threshold and scores[i] > 0]
        sure = {i: self._confidence(self.docs[i], scores[i], intent) for i in hits}
        # A passage on the very case the query names ("寄到北京…": the delivery times by region)
        # outranks one that only shares its words ("可以寄到国外吗").
        cases = self._focus_values(query)
        for i in hits:
            if cases and any(c in normalize(self.docs[i].text) for c in cases):
                sure[i] = min(0.95, sure[i] + FOCUS_BOOST)
        hits.sort(key=lambda i: (-sure[i], -scores[i]))
        preferred = [i for i in hits if self.docs[i].language == language] if language else []
        chosen = (preferred or hits)[:k]
        wanted = self.settings.intent_topics.get(intent, [])
        if wanted and not any(self.docs[i].topic in wanted for i in chosen):
            # The intent is clear but the words matched nothing on its topic ("what's your return
            # policy?"): the topic's policy section answers it.
            section = next(
                (
                    i
                    for i, d in enumerate(self.docs)
                    if d.topic == wanted[0] and d.language == language and d.answer == d.text
                ),
                None,
            )
            if section is not None:
                sure[section] = 0.6
                chosen = [section, *chosen][:k]
        return [Passage(self.docs[i].text, self.docs[i].source, self.docs[i].title, sure[i]) for i in chosen]

    async def search(self, query: str, k: int) -> list[Passage]:
        return await asyncio.to_thread(self._search, query, k, _language(query))

    async def preprocess(self, state: InputState) -> Contribution | None:
        language = state.language or _language(state.text)
        # The second intent when the turn asks a policy question about a named order.
        intent = state.metadata.get("intent_also") or state.metadata.get("intent", "")
        query = state.text
        if state.metadata.get("intent_method") == "context":
            # A follow-up that says little ("多久能收到？" after asking about invoices) is searched
            # together with the question it follows.
            earlier = [m.content for m in state.messages[:-1] if m.role == "user" and m.content.strip()]
            if earlier:
                query = f"{earlier[-1]} {query}"
        passages = await asyncio.to_thread(self._search, query, self.settings.top_k, language, intent)
        answers = {d.source + d.language: d.answer for d in self.docs}
        context = [
            ContextItem(
                p.text,
                p.source,
                p.title,
                p.score,
                answer=self.focused(answers.get(p.source + language, ""), state.text),
            )
            for p in passages
        ]
        return Contribution(context=context) if context else None

"""knowledge_graph: entities and their facts from a triples file (CSV, JSON, or RDF through rdflib).

Entities are linked by their labels and aliases (longest mention first, whole words for Latin
text); the facts of each linked entity, with neighbours shown by label, become context.
"""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from pathlib import Path

from pydantic import Field

from clawdbot.services.plugins.base import PluginContext, PluginSettings
from clawdbot.services.plugins.builtin.text import find_term, normalize
from clawdbot.services.plugins.kinds import EntityMatch, GraphFact, KnowledgeGraphPlugin
from clawdbot.services.plugins.types import ContextItem, Contribution, InputState


class GraphSettings(PluginSettings):
    file: str  # .csv (subject,predicate,object), .json ([[s, p, o], ...] or [{"subject":..}]), or RDF
    label_predicates: list[str] = Field(default_factory=lambda: ["label", "label_zh", "label_en"])
    alias_predicates: list[str] = Field(default_factory=lambda: ["alias"])
    max_entities: int = Field(default=3, ge=1, le=20)
    max_facts: int = Field(default=20, ge=1, le=200)
    min_mention_chars: int = Field(default=2, ge=1)


Triple = tuple[str, str, str]


def _local_name(term: object) -> str:
    text = str(term)
    for sep in ("#", "/", ":"):
        if sep in text and text.startswith(("http://", "https://", "urn:")):
            text = text.rsplit(sep, 1)[-1]
    return text


def read_triples(path: Path) -> list[Triple]:
    """Triples from CSV/TSV, JSON or any RDF syntax rdflib reads (by file extension)."""
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv"):
        with path.open(encoding="utf-8", newline="") as handle:
            rows = list(csv.reader(handle, delimiter="\t" if suffix == ".tsv" else ","))
        if rows and [c.strip().lower() for c in rows[0][:3]] == ["subject", "predicate", "object"]:
            rows = rows[1:]
        bad = next((i for i, row in enumerate(rows) if len(row) != 3), None)
        if bad is not None:
            raise ValueError(f"{path.name}: row {bad + 2} does not have 3 columns")
        return [(s.strip(), p.strip(), o.strip()) for s, p, o in rows]
    if suffix == ".json":
        data = json.loads(path.read_text(encoding="utf-8"))
        items = data["triples"] if isinstance(data, dict) else data
        return [
            (str(t["subject"]), str(t["predicate"]), str(t["object"]))
            if isinstance(t, dict)
            else (str(t[0]), str(t[1]), str(t[2]))
            for t in items
        ]
    import rdflib
    from rdflib.namespace import RDFS

    graph = rdflib.Graph()
    graph.parse(str(path))
    triples = []
    for s, p, o in graph:
        predicate = "label" if p == RDFS.label else _local_name(p)
        if predicate == "label" and isinstance(o, rdflib.Literal) and o.language:
            predicate = f"label_{o.language.split('-')[0]}"
        triples.append(
            (_local_name(s), predicate, _local_name(o) if isinstance(o, rdflib.URIRef) else str(o))
        )
    return triples


class TripleGraph(KnowledgeGraphPlugin[GraphSettings]):
    settings_model = GraphSettings
    description = (
        "Links products, brands, categories and policies in the message to facts from a triples file."
    )

    def __init__(self, name: str, settings: GraphSettings, context: PluginContext) -> None:
        super().__init__(name, settings, context)
        self.path = context.path(settings.file)
        if not self.path.is_file():
            raise ValueError(f"knowledge graph file {self.path} does not exist")
        self.source = self.path.name
        self.outgoing: dict[str, list[Triple]] = defaultdict(list)
        self.incoming: dict[str, list[Triple]] = defaultdict(list)
        self.labels: dict[str, list[str]] = defaultdict(list)
        self.aliases: list[tuple[str, str]] = []  # (normalised alias, entity id), longest first

    async def setup(self) -> None:
        triples = read_triples(self.path)
        names: dict[str, set[str]] = defaultdict(set)
        for s, p, o in triples:
            self.outgoing[s].append((s, p, o))
            self.incoming[o].append((s, p, o))
            if p in self.settings.label_predicates:
                self.labels[s].append(o)
            if p in self.settings.label_predicates or p in self.settings.alias_predicates:
                names[s].add(normalize(o))
        for entity in self.outgoing:
            names[entity].add(normalize(entity))
        pairs = {
            (alias, e)
            for e, aliases in names.items()
            for alias in aliases
            if len(alias) >= self.settings.min_mention_chars
        }
        self.aliases = sorted(pairs, key=lambda pair: (-len(pair[0]), pair[1]))

    def label(self, entity: str) -> str:
        return " / ".join(dict.fromkeys(self.labels.get(entity, []))) or entity

    def link(self, text: str) -> list[EntityMatch]:
        haystack = normalize(text)
        taken = [False] * len(haystack)
        found: dict[str, EntityMatch] = {}
        for alias, entity in self.aliases:
            start = 0
            while (index := find_term(haystack, alias, start)) >= 0:
                end = index + len(alias)
                if not any(taken[index:end]):
                    for i in range(index, end):
                        taken[i] = True
                    found.setdefault(entity, EntityMatch(entity, self.label(entity), haystack[index:end]))
                start = index + 1
        return list(found.values())[: self.settings.max_entities]

    def facts_about(self, entity_id: str) -> list[GraphFact]:
        label_like = {*self.settings.label_predicates, *self.settings.alias_predicates}
        facts = [
            GraphFact(self.label(s), p, self.label(o) if o in self.outgoing else o, self.source)
            for s, p, o in self.outgoing.get(entity_id, [])
            if p not in label_like
        ]
        facts += [
            GraphFact(self.label(entity_id), f"{p} of", self.label(s), self.source)
            for s, p, _ in self.incoming.get(entity_id, [])
        ]
        return facts[: self.settings.max_facts]

    async def preprocess(self, state: InputState) -> Contribution | None:
        context = []
        for match in self.link(state.text):
            facts = self.facts_about(match.entity_id)
            if not facts:
                continue
            lines = "\n".join(f"- {fact.predicate}: {fact.object}" for fact in facts)
            context.append(
                ContextItem(
                    text=f"{match.label} [{match.entity_id}]\n{lines}",
                    source=f"{self.source}#{match.entity_id}",
                    title=match.label,
                    score=len(match.mention) / max(1, len(state.text)),
                )
            )
        return Contribution(context=context) if context else None

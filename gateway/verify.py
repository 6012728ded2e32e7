"""Checking a reply against what the plugins supplied, and the extractive answer when it fails.

The engine's grounding constraint already keeps invented numbers out while the model writes; this
is the second line: a finished (or growing) reply is checked for what a shop cannot send —

- nothing at all, or tool-call / chat-template markup;
- the wrong language (a Chinese question answered in English);
- a number (order id, tracking number, price, date, phone) that is not in the prompt;
- missing the key facts of the block that answers the turn (block [1]: the looked-up order's status
  and tracking number, the named product's price), or, for a passage without key facts, saying
  little of what the passage says.

A reply that fails is replaced by that block's own `answer`, or the language's fallback template
when no block answers, in the customer's language.

Streaming holds back only what the check needs: nothing is shown until the key facts have
appeared (for a passage: until the reply is complete), then the rest streams clause by clause and
a later clause that fails ends the reply at the last clause boundary before it.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field

from clawdbot.shared.script import CJK, cjk_share
from clawdbot.v1 import common_pb2

PRIMARY_MIN_SCORE = 0.5  # a block scored below this does not surely answer the turn
NEAR_TIE = 0.1  # blocks scored this close to block [1] may answer the turn as well
FROM_ONE_ANSWER = 0.85  # of the reply's units found in one answer
SAYS_SHARE_MIN = 0.3  # of that answer's units found in the reply ...
QUOTE_UNITS = 8  # ... or this many: a whole sentence quoted from a long policy section
MARKUP = re.compile(r"</?tool_call>|<\|im_|</?tool_response>|\{\s*\"(name|arguments)\"\s*:")
DIGITS = re.compile(r"[0-9]+")
CLAUSE_END = re.compile(r"[\n。！？!?；;，]|[.,](?=\s)")  # clause ends: shown text never ends mid-clause
_WORD = re.compile(r"[a-z]+")


def digit_runs(text: str) -> set[str]:
    return set(DIGITS.findall(text))


def _units(text: str) -> set[str]:
    """Chinese character bigrams and English words: what "saying the same thing" is measured in."""
    lowered = text.lower()
    cjk = "".join(c for c in lowered if CJK.match(c))
    return {cjk[i : i + 2] for i in range(len(cjk) - 1)} | {w for w in _WORD.findall(lowered) if len(w) > 2}


@dataclass
class AnswerPlan:
    """What a right reply to this turn looks like, from Preprocess and the prompt."""

    language: str  # "zh" | "en" | "" (unknown: not checked)
    grounding: str  # the prompt's text: every number in the reply must be one of its numbers
    key_facts: list[str] = field(default_factory=list)
    answer: str = ""  # block [1]'s answer: what a right reply says (and the fallback)
    fallback: str = ""  # the language's template when no block answers the turn
    # Answers of blocks scored nearly as high as block [1] (a FAQ entry and the policy section it
    # comes from): a reply that says one of them says the answer.
    alternatives: list[str] = field(default_factory=list)

    @classmethod
    def for_turn(
        cls,
        context: list[common_pb2.ContextBlock],
        metadata: dict[str, str],
        grounding: str,
    ) -> AnswerPlan:
        primary = context[0] if context and context[0].score >= PRIMARY_MIN_SCORE else None
        fallback = metadata.get("template.fallback", "")
        if primary is None:
            # Nothing surely answers the turn: the reply declines (the fallback template) or says
            # one of the weaker blocks' answers; a greeting or a made-up answer to a question the
            # plugins found nothing for is not sent.
            return cls(
                language=metadata.get("language", ""),
                grounding=grounding,
                answer=fallback,
                fallback=fallback,
                alternatives=[b.answer for b in context if b.answer],
            )
        near = [
            b.answer
            for b in context[1:]
            if b.answer and b.score >= max(PRIMARY_MIN_SCORE, primary.score - NEAR_TIE)
        ]
        return cls(
            language=metadata.get("language", ""),
            grounding=grounding,
            key_facts=list(primary.key_facts),
            answer=primary.answer,
            fallback=fallback,
            alternatives=near,
        )

    @functools.cached_property
    def allowed_numbers(self) -> set[str]:
        """The prompt's digit runs, made once: the guard checks each streamed clause against them."""
        return digit_runs(self.grounding)

    @property
    def replacement(self) -> str:
        return self.answer or self.fallback

    # -- checks ---------------------------------------------------------------------------------

    def language_problem(self, text: str) -> str:
        letters = sum(1 for c in text if c.isalpha())
        if letters < 6 or not self.language:
            return ""
        share = cjk_share(text)
        if self.language == "zh" and share < 0.3:
            return "language"
        if self.language == "en" and share > 0.15:
            return "language"
        return ""

    def partial_problem(self, text: str, complete: bool) -> str:
        """A problem in text that is final up to its end (`complete`) or may still grow."""
        if MARKUP.search(text):
            return "markup"
        if complete:
            runs = DIGITS.findall(text)
        else:  # a run touching the end may still grow
            runs = [m.group(0) for m in DIGITS.finditer(text) if m.end() < len(text)]
        bad = next((r for r in runs if r not in self.allowed_numbers), None)
        return f"ungrounded_number:{bad}" if bad is not None else ""

    def missing_facts(self, text: str) -> list[str]:
        lowered = text.lower()
        return [f for f in self.key_facts if f.lower() not in lowered]

    def says_the_answer(self, text: str) -> bool:
        """Most of the answer is in the reply, or most of the reply is from the answer (a reply may
        quote the one sentence of a policy section that answers the question)."""
        if not self.answer:
            return True
        # Output filters append their notes after a blank line ("价格以下单页面为准。"); the model's
        # own reply is one paragraph.
        said = _units(text.split("\n\n", 1)[0])
        for answer in (self.answer, *self.alternatives):
            wanted = _units(answer)
            if not wanted or not said:
                return not wanted
            common = len(wanted & said)
            # Most of what it says is from this one answer (not stitched from several, not garbled
            # after its key facts), and, for a passage, it says a fair part of it (a quoted
            # sentence of a policy section counts; a block's key facts say that much already).
            enough = bool(self.key_facts) or common / len(wanted) >= SAYS_SHARE_MIN or common >= QUOTE_UNITS
            if common / len(said) >= FROM_ONE_ANSWER and enough:
                return True
        return False

    def problem(self, text: str) -> str:
        """Why a finished reply cannot be sent ("" when it can)."""
        if not text.strip():
            return "empty"
        if found := self.partial_problem(text, complete=True):
            return found
        if found := self.language_problem(text):
            return found
        if missing := self.missing_facts(text):
            return f"missing_fact:{missing[0]}"
        if not self.says_the_answer(text):
            return "off_answer"
        return ""


@dataclass
class ReplyGuard:
    """Holds a streamed reply back until it can be trusted; see the module docstring."""

    plan: AnswerPlan
    text: str = ""
    released: int = 0
    confirmed: bool = False
    cut: int | None = None  # the reply ends here: a later clause failed

    def _confirmable(self) -> bool:
        if self.plan.answer and not self.plan.key_facts:
            return False  # a passage's answer is judged on the whole reply
        if self.plan.missing_facts(self.text):
            return False
        letters = sum(1 for c in self.text if c.isalpha())
        if letters < 6:
            return False
        return not (self.plan.partial_problem(self.text, False) or self.plan.language_problem(self.text))

    def _safe_end(self) -> int:
        """Release up to the last clause boundary: numbers and markup are seen whole, and a reply cut
        by a later clause's failure still ends with a whole clause."""
        ends = [m.end() for m in CLAUSE_END.finditer(self.text, self.released)]
        return ends[-1] if ends else self.released

    def feed(self, piece: str) -> str:
        """Add model text; return the text that may be shown now."""
        if self.cut is not None:
            return ""
        self.text += piece
        if not self.confirmed:
            if not self._confirmable():
                return ""
            self.confirmed = True
        end = self._safe_end()
        if end <= self.released:
            return ""
        chunk = self.text[self.released : end]
        if self.plan.partial_problem(self.text[:end], complete=True):
            self.cut = self.released
            return ""
        self.released = end
        return chunk

    def finish(self) -> tuple[str, str, str]:
        """(the rest to show, the whole final reply, why the model's reply was replaced or "")."""
        if self.confirmed:
            final = self.text if self.cut is None else self.text[: self.cut]
            if self.cut is None and self.plan.partial_problem(final, complete=True):
                final = self.text[: self.released]
            if final.strip():
                return final[self.released :], final, ""
        reason = self.plan.problem(self.text)
        if not reason:
            return self.text[self.released :], self.text, ""
        replacement = self.plan.replacement or self.text
        if self.released:  # only possible when a confirmed reply was cut to nothing
            return "", self.text[: self.released], reason
        return replacement, replacement, reason

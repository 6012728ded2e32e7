"""Grounded decoding, the host half: a grounding text's digit runs and their trie, and which tokens
of the vocabulary write digits. No torch: the gRPC process checks the caps with it.

The rule: every maximal run of digits the model writes must be a complete run of digits of the
request's grounding text. `grounding_mask.py` applies it on the device, token by token, as an
automaton over the trie made here (docs/inference.md, "Grounded decoding").
"""

from __future__ import annotations

import json
import re
from array import array
from dataclasses import dataclass
from pathlib import Path

from clawdbot.shared.errors import InvalidArgument

# Caps on one request's grounding (INVALID_ARGUMENT on `grounding.text` past either). The trie has
# at most one node per digit (+ the root): 16,384 digits bound it to 852 KB on the device.
MAX_TEXT_CHARS = 65_536
MAX_DIGITS = 16_384

_FULLWIDTH = str.maketrans("０１２３４５６７８９", "0123456789")
_RUN = re.compile(r"[0-9]+")  # ASCII only: `\d` would also take other scripts' digits


def normalise(text: str) -> str:
    """Fullwidth digits ０-９ as ASCII 0-9 (the only normalisation the rule makes)."""
    return text.translate(_FULLWIDTH)


def digit_runs(text: str) -> list[str]:
    """The maximal runs of digits of `text`, in order (fullwidth ones normalised)."""
    return _RUN.findall(normalise(text))


def grounding_problem(text: str) -> str | None:
    """Why `text` cannot be a grounding (past a cap), or None."""
    if len(text) > MAX_TEXT_CHARS:
        return f"at most {MAX_TEXT_CHARS} characters, got {len(text)}"
    digits = sum(len(run) for run in digit_runs(text))
    if digits > MAX_DIGITS:
        return f"at most {MAX_DIGITS} digits, got {digits}"
    return None


def check_stop_ids(stop_token_ids: tuple[int, ...], digit_tokens: frozenset[int]) -> None:
    """A grounded request may not stop on a digit token: the stop token is not written, so the
    reply would end inside a run. (A non-digit stop token may only follow a complete run anyway.)"""
    for i, token in enumerate(stop_token_ids):
        if token in digit_tokens:
            raise InvalidArgument(
                f"id {token} writes a digit: a grounded request cannot stop on it",
                field=f"sampling.stop_token_ids[{i}]",
            )


@dataclass(frozen=True, eq=False)
class Trie:
    """The complete digit runs of a grounding text, as a table the device walks.

    Node 0 is the root ("not inside a run"); `children[10 * n + d]` is node n's child by digit d
    (-1: none). `terminal[n]` is 1 where a complete run ends, and for the root, so that one rule
    serves both: a non-digit token may follow a node only if it is terminal.
    """

    children: array  # 'i' (int32), 10 per node
    terminal: bytes

    @property
    def num_nodes(self) -> int:
        return len(self.terminal)

    @classmethod
    def of(cls, text: str) -> Trie:
        problem = grounding_problem(text)
        if problem is not None:
            raise InvalidArgument(problem, field="grounding.text")
        children = array("i", [-1] * 10)
        terminal = bytearray(b"\x01")
        for run in set(digit_runs(text)):
            node = 0
            for char in run:
                at = 10 * node + ord(char) - 48
                child = children[at]
                if child < 0:
                    child = len(terminal)
                    children[at] = child
                    children.extend([-1] * 10)
                    terminal.append(0)
                node = child
            terminal[node] = 1
        return cls(children, bytes(terminal))

    def accepts(self, run: str) -> bool:
        """Whether `run` (ASCII digits) is a complete run of the text (tests, references)."""
        node = self._walk(run)
        return bool(run) and node >= 0 and self.terminal[node] == 1

    def leads_to_a_run(self, run: str) -> bool:
        """Whether `run` is the start of a complete run (all a reply cut by its length may end with)."""
        return self._walk(run) >= 0

    def _walk(self, run: str) -> int:
        node = 0
        for char in run:
            node = self.children[10 * node + ord(char) - 48]
            if node < 0:
                return -1
        return node


# Fullwidth digits are EF BC 90..99 in UTF-8. A byte-level vocabulary may spell one across tokens
# (the bundled tokenizer writes "２" as "ï¼" + "Ĵ"), so the automaton also tracks how much of that
# lead a row has just written: 0 nothing, 1 the EF byte, 2 EF BC.
_LEAD = (0xEF, 0xBC)


def _fullwidth_digit(data: bytes, i: int) -> bool:
    return data[i : i + 2] == bytes(_LEAD) and i + 2 < len(data) and 0x90 <= data[i + 2] <= 0x99


def _walk_lead(state: int, data: bytes) -> tuple[int, bool]:
    """(lead state after `data`, whether `data` completes a fullwidth digit begun before it)."""
    crosses = False
    for i, byte in enumerate(data):
        if state == 2 and 0x90 <= byte <= 0x99 and i < 2:
            crosses = True
        if byte == _LEAD[0]:
            state = 1
        elif state == 1 and byte == _LEAD[1]:
            state = 2
        else:
            state = 0
    return state, crosses


@dataclass(frozen=True)
class DigitTokens:
    """What each token of a vocabulary does to digit runs.

    - `digits`: tokens whose text is one digit (ASCII, or one fullwidth digit): id -> value.
    - `banned`: other tokens that write a digit ("12", "a1", a whole fullwidth digit with more):
      refused while a request is grounded. The bundled tokenizer has none (its pre-tokenizer
      isolates every digit); walking such tokens through the trie exactly would cost a table per
      token, which a vocabulary that splits digits never needs.
    - `silent`: tokens that write no text (special tokens: EOS, chat markers). The detokenizer
      skips them, so they end nothing: "12" <special> "34" reads "1234". They leave the state as
      it was, and may only follow a complete run (EOS ends the reply there).
    - `lead_next[s][id]`: the fullwidth lead state after the token from state s (see `_LEAD`);
      `lead_banned[s - 1]`: tokens that would complete a fullwidth digit begun in state s (1, 2),
      refused there: a digit spelled in byte pieces is never written.
    Every other token is a non-digit: it ends a run, so it may only follow a complete one.
    """

    vocab_size: int
    digits: dict[int, int]
    banned: frozenset[int]
    silent: frozenset[int]
    lead_next: tuple[bytes, bytes, bytes]
    lead_banned: tuple[frozenset[int], frozenset[int]]

    @property
    def complete(self) -> bool:
        """Every digit 0-9 can be written (else a run could reach a node no token leaves)."""
        return set(self.digits.values()) == set(range(10))

    @classmethod
    def of(cls, token_bytes: list[bytes | None]) -> DigitTokens:
        """From each token id's bytes (None: a special token, which writes no text)."""
        digits: dict[int, int] = {}
        banned: set[int] = set()
        silent: set[int] = set()
        lead_next = [bytearray(len(token_bytes)) for _ in range(3)]
        lead_banned: tuple[set[int], set[int]] = (set(), set())
        for token, data in enumerate(token_bytes):
            if not data:
                silent.add(token)
                lead_next[1][token], lead_next[2][token] = 1, 2
                continue
            if len(data) == 1 and 0x30 <= data[0] <= 0x39:
                digits[token] = data[0] - 0x30
            elif len(data) == 3 and _fullwidth_digit(data, 0):
                digits[token] = data[2] - 0x90
            elif any(0x30 <= b <= 0x39 for b in data) or any(
                _fullwidth_digit(data, i) for i in range(len(data))
            ):
                banned.add(token)
            if 0xEF not in data and 0xBC not in data and not 0x90 <= data[0] <= 0x99:
                continue  # no part in a fullwidth digit: lead state 0 after it, from any state
            for state in range(3):
                after, crosses = _walk_lead(state, data)
                lead_next[state][token] = after
                if crosses:  # only from states 1 and 2
                    lead_banned[state - 1].add(token)
        return cls(
            vocab_size=len(token_bytes),
            digits=digits,
            banned=frozenset(banned),
            silent=frozenset(silent),
            lead_next=(bytes(lead_next[0]), bytes(lead_next[1]), bytes(lead_next[2])),
            lead_banned=(frozenset(lead_banned[0]), frozenset(lead_banned[1])),
        )

    @classmethod
    def from_tokenizer_file(cls, path: Path) -> DigitTokens:
        """From a Hugging Face tokenizer.json (byte-level BPE, or SentencePiece-style with `▁` and
        `<0xNN>` byte fallback)."""
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(path))
        byte_level = "ByteLevel" in json.dumps(json.loads(tokenizer.to_str()).get("decoder"))
        special = {i for i, added in tokenizer.get_added_tokens_decoder().items() if added.special}
        decode = _byte_level_bytes if byte_level else _piece_bytes
        vocab = tokenizer.get_vocab(with_added_tokens=True)
        table: list[bytes | None] = [None] * (max(vocab.values(), default=-1) + 1)
        for piece, token in vocab.items():
            table[token] = None if token in special else decode(piece)
        return cls.of(table)


def _gpt2_byte_chars() -> dict[str, int]:
    """The byte-level BPE alphabet: the character standing for each byte (GPT-2's table)."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    chars = {chr(b): b for b in printable}
    extra = 0
    for b in range(256):
        if b not in printable:
            chars[chr(256 + extra)] = b
            extra += 1
    return chars


_BYTE_CHARS = _gpt2_byte_chars()
_BYTE_PIECE = re.compile(r"<0x([0-9A-Fa-f]{2})>")


def _byte_level_bytes(piece: str) -> bytes:
    try:
        return bytes(_BYTE_CHARS[c] for c in piece)
    except KeyError:  # an added (non-special) token is stored as its text
        return piece.encode()


def _piece_bytes(piece: str) -> bytes:
    match = _BYTE_PIECE.fullmatch(piece)
    if match:
        return bytes([int(match.group(1), 16)])
    return piece.replace("▁", " ").encode()

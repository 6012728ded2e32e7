"""Grounded decoding, the device half: every grounded request's trie in one pooled table, each
request's automaton state, and the mask and state update the sampler applies to a batch.

Everything a step needs stays on the device: the sampler reads each row's state, masks the logits
(refused tokens to -inf, as if the model had never proposed them), samples, and moves the state by
the sampled token, all with tensor ops and no host sync. A chained launch's later steps and a
pipelined step launched before the last one's tokens are read therefore find the state they need
without the host, and CUDA graphs are untouched (sampling runs outside them).

Rows of requests that are not grounded use slot 0, whose node 0 leads back to itself by every digit
and counts as terminal: nothing is masked for them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from clawdbot.services.inference.grounding import DigitTokens, Trie
from clawdbot.services.inference.sequence import Sequence

NEG_INF = float("-inf")
# The columns of a node's row in the pooled table: its child by each digit (0-9; -1: none), then
# where a silent token leaves it (itself), where any other non-digit token leads (its trie's root),
# and whether it is terminal (1/0). One gather gives a row everything `mask` and `advance` need.
SELF, ROOT, TERMINAL = 10, 11, 12
COLUMNS = 13


class GroundingTables:
    """One engine's grounding state on its device (made once per engine, grown on demand).

    - the vocabulary: the digit tokens and their values, each token's column in a node's row
      (its digit, SELF for silent tokens, ROOT for the other non-digits), the tokens refused while
      grounded in each fullwidth lead state (always: several digits; in a lead state: the byte
      that would complete a fullwidth digit), the lead state after each token;
    - the pool: `nodes` [nodes, COLUMNS] int32, each attached request's trie in a range of it;
    - per slot (one per attached request): `state` [slots, 2] long (node, fullwidth lead state).
    """

    def __init__(
        self,
        tokens: DigitTokens,
        vocab_size: int,
        device: torch.device,
        to_device: Callable[[torch.Tensor], torch.Tensor],
        nodes: int = 4096,
        slots: int = 64,
    ) -> None:
        self.device = device
        self._to_device = to_device
        long = torch.long
        digits = {t: d for t, d in sorted(tokens.digits.items()) if t < vocab_size}
        self.digit_tokens = frozenset(digits)
        self.digit_ids = torch.tensor(list(digits), dtype=long, device=device)
        self.digit_values = torch.tensor(list(digits.values()), dtype=long, device=device)
        # Ids past the tokenizer's vocabulary (a padded embedding) write nothing either.
        known = min(vocab_size, tokens.vocab_size)
        column = torch.full((vocab_size,), SELF, dtype=long)
        column[:known] = ROOT
        column[[t for t in tokens.silent if t < vocab_size]] = SELF
        column[list(digits)] = torch.tensor(list(digits.values()), dtype=long)
        self.column = column.to(device)
        # Refused ids: the union of the three lead states' sets, and per state which of them.
        refused = [
            set(tokens.banned),
            tokens.banned | tokens.lead_banned[0],
            tokens.banned | tokens.lead_banned[1],
        ]
        ids = sorted(t for t in set().union(*refused) if t < vocab_size)
        self.refused_ids = torch.tensor(ids, dtype=long, device=device)
        self.refused_in = torch.tensor(
            [[t in r for t in ids] for r in refused], dtype=torch.bool, device=device
        )
        # Only vocabularies with fullwidth lead pieces (byte-level ones) need the lead state.
        self.tracks_lead = bool(tokens.lead_banned[0] or tokens.lead_banned[1])
        lead = torch.arange(3, dtype=long)[:, None].repeat(1, vocab_size)  # silent: unchanged
        for state in range(3):
            row = torch.frombuffer(bytearray(tokens.lead_next[state]), dtype=torch.uint8)
            lead[state, :known] = row[:known].long()
        self.lead_next = lead.to(device)
        self.nodes = torch.zeros((0, COLUMNS), dtype=torch.int32, device=device)
        self.state = torch.zeros((0, 2), dtype=long, device=device)
        self._free_nodes: list[tuple[int, int]] = []  # (start, length), sorted, merged
        self._free_slots: list[int] = []
        self._grow_nodes(nodes)
        self._grow_slots(slots)
        # Node 0: the free node of slot 0 (rows that are not grounded): every column leads back to it.
        self.nodes[0] = 0
        self.nodes[0, TERMINAL] = 1
        self._take(1)
        self._attached: dict[Sequence, tuple[int, int, int]] = {}  # seq -> (slot, first node, nodes)

    @property
    def num_attached(self) -> int:
        return len(self._attached)

    # -- the pool --------------------------------------------------------------------------------
    def slots(self, seqs: list[Sequence]) -> list[int]:
        """Each request's slot (0: not grounded), attaching the new ones' tries together: one
        upload and three small kernels for a step, however many requests it admits (one upload
        and two fills per request made a 256-request prompt step wait on 768 tiny copies)."""
        new = [s for s in dict.fromkeys(seqs) if s.trie is not None and s not in self._attached]
        if new:
            self._attach(new)
        return [0 if s.trie is None else self._attached[s][0] for s in seqs]

    def _attach(self, seqs: list[Sequence]) -> None:
        rows, index, slots, bases = [], [], [], []
        for seq in seqs:
            assert seq.trie is not None
            count = seq.trie.num_nodes
            base = self._take(count)
            if not self._free_slots:
                self._grow_slots(2 * self.state.shape[0])
            slot = self._free_slots.pop()
            rows.append(node_rows(seq.trie, base).flatten().long())
            index.append(torch.arange(base, base + count, dtype=torch.long))
            slots.append(slot)
            bases.append(base)
            self._attached[seq] = (slot, base, count)
        nodes = sum(len(i) for i in index)
        packed = torch.cat([*rows, *index, torch.tensor(slots + bases, dtype=torch.long)])
        # Queued on the device's stream after every step already launched: a slot or node range a
        # finished request gave back may still be read by the step in flight, which finishes first.
        device = self._to_device(packed)
        table = device[: nodes * COLUMNS].view(nodes, COLUMNS).to(torch.int32)
        where = device[nodes * COLUMNS : nodes * (COLUMNS + 1)]
        slot_ids = device[nodes * (COLUMNS + 1) : nodes * (COLUMNS + 1) + len(slots)]
        self.nodes.index_copy_(0, where, table)
        self.state[:, 0].index_copy_(0, slot_ids, device[nodes * (COLUMNS + 1) + len(slots) :])
        self.state[:, 1].index_fill_(0, slot_ids, 0)

    def slot(self, seq: Sequence) -> int:
        """The request's slot (0: not grounded), attaching its trie on first use."""
        return self.slots([seq])[0]

    def release(self, seq: Sequence) -> None:
        """Give a finished request's slot and nodes back (nothing if it never got any)."""
        held = self._attached.pop(seq, None)
        if held is None:
            return
        slot, base, count = held
        self._free_slots.append(slot)
        self._give(base, count)

    def _take(self, count: int) -> int:
        """First fit in the free node ranges, growing the pool when none is long enough."""
        for i, (start, length) in enumerate(self._free_nodes):
            if length >= count:
                if length == count:
                    del self._free_nodes[i]
                else:
                    self._free_nodes[i] = (start + count, length - count)
                return start
        self._grow_nodes(max(2 * self.nodes.shape[0], self.nodes.shape[0] + count))
        return self._take(count)

    def _give(self, start: int, count: int) -> None:
        free = self._free_nodes
        i = next((i for i, (s, _) in enumerate(free) if s > start), len(free))
        free.insert(i, (start, count))
        if i + 1 < len(free) and start + count == free[i + 1][0]:  # merge with the next range
            free[i] = (start, count + free.pop(i + 1)[1])
        if i > 0 and free[i - 1][0] + free[i - 1][1] == start:  # and the previous one
            previous = free.pop(i - 1)
            free[i - 1] = (previous[0], previous[1] + free[i - 1][1])

    def _grow_nodes(self, size: int) -> None:
        old = self.nodes.shape[0]
        nodes = torch.zeros((size, COLUMNS), dtype=torch.int32, device=self.device)
        nodes[:old] = self.nodes
        self.nodes = nodes
        self._give(old, size - old)

    def _grow_slots(self, size: int) -> None:
        old = self.state.shape[0]
        state = torch.zeros((size, 2), dtype=torch.long, device=self.device)
        state[:old] = self.state
        self.state = state
        self._free_slots += range(size - 1, max(old, 1) - 1, -1)  # slot 0 is never handed out

    def rows(self, slots: torch.Tensor) -> GroundingRows:
        """The grounding of one batch's sampling rows (`slots` [B] long, on the device)."""
        return GroundingRows(self, slots, slots > 0)


def node_rows(trie: Trie, base: int) -> torch.Tensor:
    """A trie's rows of the pooled table, its nodes numbered from `base` (on the host)."""
    count = trie.num_nodes
    children = torch.frombuffer(trie.children, dtype=torch.int32).view(count, 10)
    rows = torch.empty((count, COLUMNS), dtype=torch.int32)
    rows[:, :10] = torch.where(children >= 0, children + base, children)
    rows[:, SELF] = torch.arange(base, base + count, dtype=torch.int32)
    rows[:, ROOT] = base
    rows[:, TERMINAL] = torch.frombuffer(bytearray(trie.terminal), dtype=torch.uint8)
    return rows


@dataclass
class GroundedStep:
    """What `mask` read for one sampling call, for `advance` after it."""

    rows: torch.Tensor  # [B, COLUMNS] int32: each row's node's row of the table
    lead: torch.Tensor  # [B] long: each row's fullwidth lead state


@dataclass
class GroundingRows:
    """A batch's rows as the sampler sees them (the same object for every step of a chain)."""

    tables: GroundingTables
    slots: torch.Tensor  # [B] long; 0 = the row is not grounded
    grounded: torch.Tensor  # [B] bool

    def mask(self, logits: torch.Tensor) -> tuple[torch.Tensor, GroundedStep]:
        """The logits with what the automaton refuses at each row's state set to -inf.

        A non-digit token (a silent one too) needs a terminal node (the root counts as one); a digit
        token needs a child; tokens writing several digits are refused, and in a fullwidth lead
        state so is a byte that would complete a fullwidth digit.
        """
        t = self.tables
        state = t.state[self.slots]
        lead = state[:, 1]
        rows = t.nodes[state[:, 0]]
        # One pass over [B, V] (`where` makes a new tensor: the logits may be a CUDA graph's output
        # buffer), then small edits in place; every `where` here is one kernel, `masked_fill` two.
        masked = torch.where(rows[:, TERMINAL : TERMINAL + 1] != 0, logits, NEG_INF)
        has_child = rows.index_select(1, t.digit_values) >= 0
        masked.index_copy_(
            1, t.digit_ids, torch.where(has_child, logits.index_select(1, t.digit_ids), NEG_INF)
        )
        if t.refused_ids.numel():
            refuse = t.refused_in[lead] & self.grounded[:, None]
            masked.index_copy_(
                1, t.refused_ids, torch.where(refuse, NEG_INF, masked.index_select(1, t.refused_ids))
            )
        return masked, GroundedStep(rows, lead)

    def advance(self, tokens: torch.Tensor, step: GroundedStep) -> None:
        """Move each row's state by its sampled token (on the device, queued after the sampling)."""
        t = self.tables
        node = step.rows.gather(1, t.column[tokens][:, None]).long()
        if t.tracks_lead:
            # Slot 0 may pick up a lead state here; it is never refused anything (`grounded`).
            lead = t.lead_next[step.lead, tokens]
            t.state.index_copy_(0, self.slots, torch.cat([node, lead[:, None]], dim=1))
        else:
            t.state[:, 0].index_copy_(0, self.slots, node[:, 0])

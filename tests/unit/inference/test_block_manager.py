"""Block manager: invariants under a hypothesis state machine, window freeing, prefix sharing."""

from __future__ import annotations

from dataclasses import replace

import hypothesis.strategies as st
import pytest
from hypothesis import settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from clawdbot.services.inference.block_manager import BlockManager
from clawdbot.services.inference.config import parse_config
from clawdbot.services.inference.dummy import SHAPES
from clawdbot.services.inference.gpu import blocks_per_sequence
from clawdbot.services.inference.sequence import SamplingParams, Sequence

BLOCK = 4
WINDOW = 8
NUM_BLOCKS = 24


def new_seq(name: str, tokens: list[int]) -> Sequence:
    return Sequence(name, list(tokens), SamplingParams(temperature=0))


class BlockManagerMachine(RuleBasedStateMachine):
    """Sequences come and go, grow, slide, share prefixes and get preempted; the books always balance."""

    def __init__(self) -> None:
        super().__init__()
        self.blocks = BlockManager(NUM_BLOCKS, BLOCK, [0, WINDOW])
        self.live: dict[str, Sequence] = {}
        self.counter = 0

    def _admit(self, seq: Sequence, chunk: int) -> None:
        seq.num_computed = self.blocks.admit(seq)
        assert seq.num_computed < seq.num_tokens
        assert seq.num_computed % BLOCK == 0
        if self.blocks.reserve(seq, min(chunk, seq.num_uncomputed)):
            self.live[seq.request_id] = seq
        else:
            self.blocks.free(seq.request_id)

    @rule(tokens=st.lists(st.integers(0, 3), min_size=1, max_size=30), chunk=st.integers(1, 12))
    def allocate(self, tokens: list[int], chunk: int) -> None:
        self.counter += 1
        self._admit(new_seq(f"s{self.counter}", tokens), chunk)

    @precondition(lambda self: self.live)
    @rule(data=st.data(), extra=st.lists(st.integers(0, 3), max_size=8), chunk=st.integers(1, 12))
    def fork_by_prefix(self, data: st.DataObject, extra: list[int], chunk: int) -> None:
        parent = self.live[data.draw(st.sampled_from(sorted(self.live)))]
        cut = data.draw(st.integers(1, parent.num_tokens))
        self.counter += 1
        child = new_seq(f"s{self.counter}", parent.token_ids[:cut] + extra)
        self._admit(child, chunk)

    @precondition(lambda self: self.live)
    @rule(data=st.data(), n=st.integers(1, 12), token=st.integers(0, 3))
    def append(self, data: st.DataObject, n: int, token: int) -> None:
        """Compute up to n uncomputed tokens (the reservation done earlier), then sample one."""
        seq = self.live[data.draw(st.sampled_from(sorted(self.live)))]
        step = min(n, seq.num_uncomputed)
        if not self.blocks.reserve(seq, step):
            return
        seq.num_computed += step
        self.blocks.commit(seq)
        if seq.num_uncomputed == 0:
            seq.token_ids.append(token)

    @precondition(lambda self: self.live)
    @rule(data=st.data())
    def slide(self, data: st.DataObject) -> None:
        seq = self.live[data.draw(st.sampled_from(sorted(self.live)))]
        self.blocks.slide(seq.request_id, 1, seq.num_computed)

    @precondition(lambda self: self.live)
    @rule(data=st.data())
    def free(self, data: st.DataObject) -> None:
        seq = self.live.pop(data.draw(st.sampled_from(sorted(self.live))))
        self.blocks.free(seq.request_id)

    @precondition(lambda self: self.live)
    @rule(data=st.data(), chunk=st.integers(1, 12))
    def preempt_and_readmit(self, data: st.DataObject, chunk: int) -> None:
        seq = self.live.pop(data.draw(st.sampled_from(sorted(self.live))))
        self.blocks.free(seq.request_id)
        seq.num_computed = 0
        self._admit(seq, chunk)

    @invariant()
    def books_balance(self) -> None:
        self.blocks.check()
        assert set(self.blocks.tables) == set(self.live)

    @invariant()
    def window_group_holds_only_the_window(self) -> None:
        # A step of at most 12 queries from `first` needs keys from first - WINDOW + 1 on.
        bound = (WINDOW + 11 + BLOCK - 1) // BLOCK + 1
        for seq in self.live.values():
            assert self.blocks.live_blocks(seq.request_id, 1) <= bound

    @invariant()
    def hashed_blocks_hold_what_their_hash_says(self) -> None:
        for seq_id in self.live:
            for group in range(2):
                for block, h in zip(
                    self.blocks.table(seq_id, group), self.blocks.hashes[seq_id], strict=False
                ):
                    if block >= 0 and block in self.blocks.pools[group].hash_of:
                        assert self.blocks.pools[group].hash_of[block] == h

    @invariant()
    def no_block_twice_in_one_table(self) -> None:
        for seq_id in self.live:
            for group in range(2):
                blocks = [b for b in self.blocks.table(seq_id, group) if b >= 0]
                assert len(blocks) == len(set(blocks))

    @invariant()
    def shared_blocks_are_hashed_full_blocks(self) -> None:
        owners: dict[tuple[int, int], int] = {}
        for seq_id in self.live:
            for group in range(2):
                for block in self.blocks.table(seq_id, group):
                    if block >= 0:
                        owners[(group, block)] = owners.get((group, block), 0) + 1
        for (group, block), count in owners.items():
            if count > 1:
                assert block in self.blocks.pools[group].hash_of


TestBlockManagerMachine = BlockManagerMachine.TestCase
TestBlockManagerMachine.settings = settings(max_examples=40, stateful_step_count=30, deadline=None)


def test_window_group_frees_blocks_while_full_group_keeps_them() -> None:
    blocks = BlockManager(64, BLOCK, [0, WINDOW])
    seq = new_seq("a", [1] * 5)
    blocks.admit(seq)
    held = []
    for _ in range(60):
        assert blocks.reserve(seq, seq.num_uncomputed)
        seq.num_computed = seq.num_tokens
        blocks.commit(seq)
        seq.token_ids.append(2)
        held.append(blocks.live_blocks("a", 1))
    assert max(held[10:]) <= WINDOW // BLOCK + 1
    assert blocks.live_blocks("a", 0) == (seq.num_computed + BLOCK - 1) // BLOCK
    blocks.free("a")
    blocks.check()
    assert blocks.num_used() == 0


def test_prefix_cache_shares_full_blocks_and_counts_references() -> None:
    blocks = BlockManager(32, BLOCK, [0])
    system = list(range(10, 22))  # three full blocks
    first = new_seq("a", [*system, 1, 2])
    assert blocks.admit(first) == 0
    assert blocks.reserve(first, first.num_tokens)
    first.num_computed = first.num_tokens
    blocks.commit(first)
    second = new_seq("b", [*system, 7])
    assert blocks.admit(second) == 12
    assert blocks.table("b", 0)[:3] == blocks.table("a", 0)[:3]
    assert all(blocks.pools[0].refs[b] == 2 for b in blocks.table("a", 0)[:3])
    blocks.free("a")
    assert all(blocks.pools[0].refs[b] == 1 for b in blocks.table("b", 0)[:3])
    blocks.free("b")
    blocks.check()
    # Freed but still cached: a third request with the same prompt gets them back.
    third = new_seq("c", [*system, 9])
    assert blocks.admit(third) == 12


def test_whole_prompt_cached_still_computes_the_last_token() -> None:
    blocks = BlockManager(16, BLOCK, [0])
    seq = new_seq("a", list(range(8)))
    blocks.admit(seq)
    assert blocks.reserve(seq, 8)
    seq.num_computed = 8
    blocks.commit(seq)
    again = new_seq("b", list(range(8)))
    assert blocks.admit(again) == 4  # the block holding the last prompt token is recomputed


def test_a_hash_collision_is_a_miss_not_a_wrong_hit(monkeypatch: pytest.MonkeyPatch) -> None:
    from clawdbot.services.inference import block_manager

    monkeypatch.setattr(block_manager, "block_hash", lambda parent, tokens: 7)  # everything collides
    blocks = BlockManager(16, BLOCK, [0])
    first = new_seq("a", [1, 2, 3, 4, 5])
    blocks.admit(first)
    assert blocks.reserve(first, 5)
    first.num_computed = 5
    blocks.commit(first)
    other = new_seq("b", [9, 9, 9, 9, 5])  # same "hash", other tokens
    assert blocks.admit(other) == 0
    same = new_seq("c", [1, 2, 3, 4, 6])
    assert blocks.admit(same) == 4


def test_blocks_per_sequence_counts_the_window_not_the_context() -> None:
    config = parse_config(dict(SHAPES["ref-336m"]))  # window 4096 in a context of 8192
    assert blocks_per_sequence(config, 16) == 4096 // 16 + 1
    assert blocks_per_sequence(replace(config, layer_windows=(0, 4096)), 16) == 8192 // 16

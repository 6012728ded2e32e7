"""The prefill tile table and the prompt graphs' token buckets: pure torch, so checked on the CPU.

The Triton prefill kernel trusts the tile table blindly: a token covered twice is attended twice
(a race on its output row), a token never covered keeps garbage, and a tile that crosses into the
next sequence attends with the wrong keys. The GPU tests check the kernel on top of this.
"""

from __future__ import annotations

import itertools

import torch
from hypothesis import given
from hypothesis import strategies as st

from clawdbot.services.inference.kernels.paged_attention import prefill_tiles, tile_capacity
from clawdbot.services.inference.prefill_graphs import token_buckets


@given(
    lens=st.lists(st.integers(0, 300), min_size=1, max_size=40),
    tile=st.sampled_from([1, 4, 16, 64]),
    spare=st.integers(0, 20),
    padding_seqs=st.integers(0, 5),
)
def test_tiles_cover_every_token_once_inside_its_sequence(
    lens: list[int], tile: int, spare: int, padding_seqs: int
) -> None:
    tokens = sum(lens)
    capacity = tile_capacity(tokens, len(lens), tile) + spare
    query_lens = torch.tensor(lens + [0] * padding_seqs)  # as the graphs' static rows past the batch
    table = prefill_tiles(query_lens, tile, capacity)
    assert table.shape == (capacity, 3) and table.dtype == torch.long
    starts = [sum(lens[:b]) for b in range(len(lens))]
    covered = [0] * tokens
    for seq, first, end in table.tolist():
        assert 0 <= seq < len(query_lens)
        if first == end:
            continue  # padding
        assert 0 < end - first <= tile
        assert starts[seq] <= first and end <= starts[seq] + lens[seq]
        for t in range(first, end):
            covered[t] += 1
    assert covered == [1] * tokens


@given(lens=st.lists(st.integers(1, 300), min_size=1, max_size=40), tile=st.sampled_from([1, 16, 64]))
def test_capacity_is_enough_and_the_tiles_come_first(lens: list[int], tile: int) -> None:
    needed = sum(-(-n // tile) for n in lens)
    assert tile_capacity(sum(lens), len(lens), tile) >= needed
    table = prefill_tiles(torch.tensor(lens), tile, needed)
    assert bool((table[:, 2] > table[:, 1]).all())  # exactly enough: no padding row


@given(max_tokens=st.integers(1, 40000))
def test_token_buckets_end_at_the_budget_and_pad_at_most_a_quarter(max_tokens: int) -> None:
    buckets = token_buckets(max_tokens)
    assert buckets[-1] == max_tokens
    assert buckets == sorted(set(buckets))
    assert buckets[0] == min(16, max_tokens)
    for smaller, larger in itertools.pairwise(buckets):
        if smaller >= 1024:
            assert larger <= smaller * 5 // 4 + 512  # a step just above `smaller` pads < ~25%
        else:
            assert larger <= 2 * smaller

"""CUDA graphs of the decode forward, one per batch-size bucket.

A decode step of a small model is mostly kernel launches: 24 layers x ~15 kernels at ~5-10 us each
is milliseconds of CPU time for microseconds of GPU work. Captured once per bucket, the whole
forward (embedding, layers, attention, final norm, logits) replays as one launch.

Graphs need fixed shapes and fixed addresses, so every input lives in a static buffer sized for the
largest bucket: token ids, positions, context lengths, and per KV group the slot mapping and a block
table as wide as any sequence can need (window/block_size + 2 blocks for a window group; the whole
context for a full-attention group). A live batch of n sequences is copied into the first n rows;
rows n..bucket are padding (slot -1 writes nothing, an all -1 table reads nothing) and their logits
are dropped. Sampling stays outside the graph: it is cheap and its shapes vary with the request mix.

Only pure decode steps (one new token per sequence, no dynamic-RoPE lengths) use these graphs;
prefill and mixed steps have their own, per token bucket (prefill_graphs.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from torch.cuda import _POOL_HANDLE

from clawdbot.services.inference.attention import AttentionMetadata, GroupMetadata

log = logging.getLogger("clawdbot.inference.graphs")

DEFAULT_BUCKETS = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 160, 192, 224, 256, 320, 384, 448, 512)


def bucket_sizes(max_batch: int, candidates: tuple[int, ...] = DEFAULT_BUCKETS) -> list[int]:
    sizes = [b for b in candidates if b < max_batch]
    return [*sizes, max_batch]


def group_buffers(
    widths: list[int], tokens: int, seqs: int, device: torch.device
) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
    """A graph's static slot mappings [tokens], block tables [seqs, width] and first blocks [seqs],
    one of each per KV group, filled with what a padding row needs (-1 writes and reads nothing)."""
    slots = [torch.full((tokens,), -1, dtype=torch.long, device=device) for _ in widths]
    tables = [torch.full((seqs, w), -1, dtype=torch.long, device=device) for w in widths]
    firsts = [torch.zeros(seqs, dtype=torch.long, device=device) for _ in widths]
    return slots, tables, firsts


def static_groups(
    windows: list[int],
    slots: list[torch.Tensor],
    tables: list[torch.Tensor],
    firsts: list[torch.Tensor],
    tokens: int,
    seqs: int,
) -> list[GroupMetadata]:
    """Per KV group, the views of a graph's static buffers for `tokens` query tokens of `seqs` rows."""
    return [
        GroupMetadata(window=w, slot_mapping=s[:tokens], block_tables=t[:seqs], first_block=f[:seqs])
        for w, s, t, f in zip(windows, slots, tables, firsts, strict=True)
    ]


def capture_buckets(
    sizes: list[int], forward: Callable[[int], torch.Tensor], pool: _POOL_HANDLE | None
) -> tuple[dict[int, torch.cuda.CUDAGraph], dict[int, torch.Tensor], _POOL_HANDLE | None]:
    """(graphs, their outputs, the pool) of `forward(size)` for every size, largest first, in one
    memory pool (`pool`, or a new one).

    Each size runs eagerly first, on a side stream (Triton compiles outside any capture), and each
    graph is replayed once after capture (its first launch uploads it, which should not happen
    under load): `forward` must write nothing while its static inputs hold no tokens.
    """
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for size in reversed(sizes):
            forward(size)
    torch.cuda.current_stream().wait_stream(stream)
    torch.cuda.synchronize()
    graphs: dict[int, torch.cuda.CUDAGraph] = {}
    outputs: dict[int, torch.Tensor] = {}
    for size in reversed(sizes):
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=pool):
            outputs[size] = forward(size)
        pool = graph.pool()
        graphs[size] = graph
    for graph in graphs.values():
        graph.replay()
    torch.cuda.synchronize()
    return graphs, outputs, pool


class DecodeGraphs:
    """Captured decode forwards of a `ModelRunner`, replayed for batches of up to `max_batch` sequences."""

    def __init__(self, runner: object, max_batch: int, context_length: int) -> None:
        from clawdbot.services.inference.model_runner import ModelRunner

        assert isinstance(runner, ModelRunner)
        self.runner = runner
        self.buckets = bucket_sizes(max_batch)
        size = self.buckets[-1]
        device = runner.device
        bs = runner.block_size
        self.widths = [(w // bs + 2) if w > 0 else -(-context_length // bs) + 1 for w in runner.windows]
        self.input_ids = torch.zeros(size, dtype=torch.long, device=device)
        self.positions = torch.zeros(size, dtype=torch.long, device=device)
        self.query_slot = torch.arange(size, dtype=torch.long, device=device)
        self.context_lens = torch.zeros(size, dtype=torch.long, device=device)
        self.rows = torch.arange(size, dtype=torch.long, device=device)
        self.slots, self.tables, self.firsts = group_buffers(self.widths, size, size, device)
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self.outputs: dict[int, torch.Tensor] = {}

    def _forward(self, n: int) -> torch.Tensor:
        """The captured body: the decoder and the logits of every row."""
        return self.runner.forward_step(self.input_ids[:n], self._meta(n), None, self.rows[:n])

    def _meta(self, n: int) -> AttentionMetadata:
        groups = static_groups(self.runner.windows, self.slots, self.tables, self.firsts, n, n)
        return AttentionMetadata(
            positions=self.positions[:n],
            query_slot=self.query_slot[:n],
            context_lens=self.context_lens[:n],
            max_q=1,
            groups=groups,
        )

    @torch.inference_mode()
    def capture(self, pool: _POOL_HANDLE | None = None) -> _POOL_HANDLE | None:
        """Capture every bucket (`capture_buckets`; the empty static inputs have every slot -1)."""
        self.graphs, self.outputs, pool = capture_buckets(self.buckets, self._forward, pool)
        log.info("captured decode graphs", extra={"buckets": self.buckets})
        return pool

    def fits(self, meta: AttentionMetadata, num_seqs: int) -> bool:
        if meta.max_q != 1 or num_seqs > self.buckets[-1] or not self.graphs:
            return False
        return all(g.block_tables.shape[1] <= w for g, w in zip(meta.groups, self.widths, strict=True))

    @torch.inference_mode()
    def run(
        self, input_ids: torch.Tensor, meta: AttentionMetadata, same_tables: bool = False
    ) -> torch.Tensor:
        """fp32 logits [n, vocab] of a pure decode batch (check `fits` first). `same_tables`: the
        block tables, first blocks and padding are those of the last run (a chained step's), so
        only ids, positions, lengths and slots are copied."""
        n = int(input_ids.shape[0])
        size = next(b for b in self.buckets if b >= n)
        self.input_ids[:n].copy_(input_ids)
        self.positions[:n].copy_(meta.positions)
        self.context_lens[:n].copy_(meta.context_lens)
        if not same_tables:
            self.context_lens[n:size].zero_()
        for group, slots, table, first in zip(meta.groups, self.slots, self.tables, self.firsts, strict=True):
            slots[:n].copy_(group.slot_mapping)
            if same_tables:
                continue
            width = group.block_tables.shape[1]
            slots[n:size].fill_(-1)
            table[:n, :width].copy_(group.block_tables)
            table[:n, width:].fill_(-1)
            table[n:size].fill_(-1)
            first[:n].copy_(group.first_block)
        self.graphs[size].replay()
        return self.outputs[size][:n]

"""CUDA graphs of the prompt forward (prefill and mixed steps), one per token-count bucket.

Why: an eager forward of the 24-layer reference model costs ~13 ms of host time whatever its size
(~500 launches: Triton's launcher alone takes ~25 us a call), so a step of a few prompts kept the
GPU idle most of its wall time and time-to-first-token under load was made of that host time
(docs/perf.md). Replayed from a graph, the same step is one launch and a dozen input copies.

How: every input lives in a static buffer sized for the largest bucket (`max_num_batched_tokens`
tokens, `max_num_seqs` sequences). A step of n tokens from B sequences is copied into the first n
token rows and B sequence rows and replays the smallest bucket of at least n tokens:

- padding tokens get id 0 and slot -1, so they write nothing to the KV cache; no attention tile
  covers them, and every other op works row by row, so whatever their rows hold is dropped;
- sequences past B get 0 query tokens, hence no tiles; the tile table itself (`prefill_tiles`) is
  computed inside the graph from the static per-sequence token counts, so the attention kernel's
  launch shape depends on the bucket only. That keeps attention inside the graph, where vLLM's
  piecewise capture runs it eagerly between captured pieces;
- a prompt chunk's block table spans its window plus the chunk, so the static tables are
  `window + max tokens` wide (a full-attention group: the whole context).

The graph ends at the final norm: the logits of the rows that sample (a few per step) are computed
outside, as is sampling. Steps the buckets cannot hold (wider tables, more tokens or sequences)
run eagerly.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from torch.cuda import _POOL_HANDLE

from clawdbot.services.inference.attention import AttentionMetadata
from clawdbot.services.inference.cuda_graphs import capture_buckets, group_buffers, static_groups
from clawdbot.services.inference.kernels.paged_attention import prefill_tiles, tile_capacity

log = logging.getLogger("clawdbot.inference.graphs")

SMALLEST_BUCKET = 16
GEOMETRIC_FROM = 1024  # buckets double up to here, then grow by ~1.25x in steps of GRAIN tokens
GRAIN = 512


def token_buckets(max_tokens: int) -> list[int]:
    """Token counts to capture: powers of two from 16 to 1024, then ~1.25x apart (at most ~25% of a
    replay is padding) up to `max_tokens`, which is always the last."""
    sizes: list[int] = []
    size = SMALLEST_BUCKET
    while size < max_tokens:
        sizes.append(size)
        if size < GEOMETRIC_FROM:
            size *= 2
        else:
            size = -(-(size * 5 // 4) // GRAIN) * GRAIN
    return [*sizes, max_tokens]


class PrefillGraphs:
    """Captured prompt forwards of a `ModelRunner` (Triton attention), for steps of up to
    `max_tokens` tokens from up to `max_seqs` sequences."""

    def __init__(self, runner: object, max_tokens: int, max_seqs: int, context_length: int) -> None:
        from clawdbot.services.inference.model_runner import ModelRunner

        assert isinstance(runner, ModelRunner)
        if not runner.tile_tokens:
            raise ValueError("prefill graphs need the Triton attention backend (runner.tile_tokens)")
        self.runner = runner
        self.buckets = token_buckets(max_tokens)
        self.max_seqs = max_seqs
        tokens, device, bs = self.buckets[-1], runner.device, runner.block_size
        full = -(-context_length // bs) + 1
        self.widths = [min(-(-(w + tokens) // bs) + 2, full) if w > 0 else full for w in runner.windows]
        self.input_ids = torch.zeros(tokens, dtype=torch.long, device=device)
        self.positions = torch.zeros(tokens, dtype=torch.long, device=device)
        self.query_slot = torch.zeros(tokens, dtype=torch.long, device=device)  # unused by the kernels
        self.context_lens = torch.zeros(max_seqs, dtype=torch.long, device=device)
        self.query_lens = torch.zeros(max_seqs, dtype=torch.long, device=device)
        self.slots, self.tables, self.firsts = group_buffers(self.widths, tokens, max_seqs, device)
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self.outputs: dict[int, torch.Tensor] = {}

    def _forward(self, size: int) -> torch.Tensor:
        """The captured body: the tile table from the static token counts, then the decoder."""
        runner = self.runner
        groups = static_groups(runner.windows, self.slots, self.tables, self.firsts, size, self.max_seqs)
        meta = AttentionMetadata(
            positions=self.positions[:size],
            query_slot=self.query_slot[:size],
            context_lens=self.context_lens,
            max_q=size,  # any value above 1 selects the prompt path; the kernels read the tiles
            groups=groups,
            query_lens=self.query_lens,
        )
        tile = runner.tile_tokens
        meta.tiles = prefill_tiles(self.query_lens, tile, tile_capacity(size, self.max_seqs, tile))
        return runner.model(self.input_ids[:size], meta.positions, meta, runner.kv_caches)

    @torch.inference_mode()
    def capture(self, pool: _POOL_HANDLE | None = None) -> _POOL_HANDLE | None:
        """Capture every bucket (`capture_buckets`). The static inputs hold no tokens meanwhile
        (every slot -1, every count 0): the warm-up runs and replays write nothing to the KV cache."""
        self.graphs, self.outputs, pool = capture_buckets(self.buckets, self._forward, pool)
        log.info("captured prefill graphs", extra={"buckets": self.buckets, "widths": self.widths})
        return pool

    def fits(self, meta: AttentionMetadata, num_seqs: int, num_tokens: int) -> bool:
        if meta.max_q <= 1 or meta.query_lens is None or not self.graphs:
            return False
        if num_tokens > self.buckets[-1] or num_seqs > self.max_seqs:
            return False
        return all(g.block_tables.shape[1] <= w for g, w in zip(meta.groups, self.widths, strict=True))

    @torch.inference_mode()
    def run(self, input_ids: torch.Tensor, meta: AttentionMetadata) -> torch.Tensor:
        """Final hidden states [n, hidden] of a prompt step (check `fits` first)."""
        assert meta.query_lens is not None
        n, seqs = int(input_ids.shape[0]), meta.num_seqs
        size = next(b for b in self.buckets if b >= n)
        self.input_ids[:n].copy_(input_ids)
        self.input_ids[n:size].zero_()
        self.positions[:n].copy_(meta.positions)
        self.context_lens[:seqs].copy_(meta.context_lens)
        self.query_lens[:seqs].copy_(meta.query_lens)
        self.query_lens[seqs:].zero_()
        for group, slots, table, first in zip(meta.groups, self.slots, self.tables, self.firsts, strict=True):
            width = group.block_tables.shape[1]
            slots[:n].copy_(group.slot_mapping)
            slots[n:size].fill_(-1)
            table[:seqs, :width].copy_(group.block_tables)
            table[:seqs, width:].fill_(-1)
            first[:seqs].copy_(group.first_block)
        self.graphs[size].replay()
        return self.outputs[size][:n]

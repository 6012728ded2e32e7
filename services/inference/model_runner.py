"""Tensors of one engine step: the KV cache, the flat token batch, one forward, one sampling call.

The runner turns a scheduled `Batch` into index tensors (a few Python loops over sequences to read
their block tables, as any paged engine does), runs the decoder once for the whole batch, computes
logits only for the rows that sample, and samples them together. CUDA graphs for decode buckets
belong here (a later issue): `forward_step` is the pure function they would capture.
"""

from __future__ import annotations

from collections.abc import Sequence as Seq
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from clawdbot.services.inference.attention import AttentionMetadata, GroupMetadata
from clawdbot.services.inference.block_manager import BlockManager
from clawdbot.services.inference.config import ModelConfig
from clawdbot.services.inference.model.decoder import Decoder, kv_groups
from clawdbot.services.inference.sampler import SamplingTensors, sample
from clawdbot.services.inference.scheduler import Batch
from clawdbot.services.inference.sequence import Sequence

if TYPE_CHECKING:
    from clawdbot.services.inference.cuda_graphs import DecodeGraphs


@dataclass
class TokenOutput:
    """The token a sequence got this step, with its logprob and the top alternatives when asked."""

    token: int
    logprob: float | None = None
    top: list[tuple[int, float]] | None = None


def kv_block_bytes(config: ModelConfig, block_size: int, dtype: torch.dtype) -> int:
    """Bytes one block index costs across all layers (K and V)."""
    element = torch.empty((), dtype=dtype).element_size()
    return 2 * config.num_layers * block_size * config.num_kv_heads * config.head_dim * element


class ModelRunner:
    def __init__(
        self,
        model: Decoder,
        config: ModelConfig,
        num_blocks: int,
        block_size: int,
        device: torch.device,
        dtype: torch.dtype,
    ) -> None:
        self.model = model
        self.config = config
        self.block_size = block_size
        self.num_blocks = num_blocks
        self.device = device
        self.dtype = dtype
        self.windows = kv_groups(config)
        self.decode_graphs: DecodeGraphs | None = None  # set by gpu.accelerate on CUDA devices
        shape = (num_blocks, block_size, config.num_kv_heads, config.head_dim)
        self.kv_caches = [
            (torch.zeros(shape, dtype=dtype, device=device), torch.zeros(shape, dtype=dtype, device=device))
            for _ in range(config.num_layers)
        ]

    # -- inputs --------------------------------------------------------------------------------
    def _tensor(self, data: Seq[Any], dtype: torch.dtype = torch.long) -> torch.Tensor:
        return torch.tensor(data, dtype=dtype, device=self.device)

    def prepare(
        self, batch: Batch, blocks: BlockManager
    ) -> tuple[torch.Tensor, AttentionMetadata, torch.Tensor | None]:
        """(input ids [T], metadata, rope sequence lengths [T]) for a scheduled batch."""
        input_ids: list[int] = []
        positions: list[int] = []
        seq_index: list[int] = []
        context: list[int] = []
        max_q = max(batch.num_new)
        for b, (seq, n) in enumerate(zip(batch.seqs, batch.num_new, strict=True)):
            start = seq.num_computed
            input_ids.extend(seq.token_ids[start : start + n])
            positions.extend(range(start, start + n))
            seq_index.extend([b] * n)
            context.append(start + n)
        pos = self._tensor(positions)
        rows = self._tensor(seq_index)
        first_pos = torch.tensor([seq.num_computed for seq in batch.seqs], dtype=torch.long)
        query_slot = rows * max_q + (pos - first_pos.to(self.device)[rows])
        groups = []
        bs = self.block_size
        for g, window in enumerate(self.windows):
            tables = [blocks.table(seq.request_id, g) for seq in batch.seqs]
            firsts = [blocks.first_needed(g, seq.num_computed) for seq in batch.seqs]
            width = max(len(t) - f for t, f in zip(tables, firsts, strict=True))
            padded = [t[f:] + [-1] * (width - len(t) + f) for t, f in zip(tables, firsts, strict=True)]
            table = self._tensor(padded)
            first = self._tensor(firsts)
            logical = pos // bs - first[rows]
            slots = table[rows, logical] * bs + pos % bs
            groups.append(
                GroupMetadata(window=window, slot_mapping=slots, block_tables=table, first_block=first)
            )
        meta = AttentionMetadata(
            positions=pos,
            query_slot=query_slot,
            context_lens=self._tensor(context),
            max_q=max_q,
            groups=groups,
        )
        rope_lens = meta.context_lens[rows] if self.config.rope.kind == "dynamic" else None
        return self._tensor(input_ids), meta, rope_lens

    def sampling_tensors(self, seqs: list[Sequence], eos: tuple[int, ...]) -> SamplingTensors:
        """Per-row sampling parameters; penalty state only when some row uses a penalty."""
        params = [s.params for s in seqs]
        vocab = self.config.vocab_size
        f32 = torch.float32
        t = SamplingTensors(
            temperature=self._tensor([p.temperature for p in params], f32),
            top_k=self._tensor([p.top_k for p in params]),
            top_p=self._tensor([p.top_p for p in params], f32),
            min_p=self._tensor([p.min_p for p in params], f32),
            seeds=self._tensor([p.seed for p in params]),
            steps=self._tensor([s.num_output for s in seqs]),
        )
        banned = [
            [*eos, *p.stop_token_ids] if s.num_output < p.min_tokens else []
            for s, p in zip(seqs, params, strict=True)
        ]
        if any(banned):
            width = max(len(b) for b in banned)
            t.suppress = self._tensor([b + [-1] * (width - len(b)) for b in banned])
        if any(p.needs_penalties for p in params):
            t.repetition_penalty = self._tensor([p.repetition_penalty for p in params], f32)
            t.presence_penalty = self._tensor([p.presence_penalty for p in params], f32)
            t.frequency_penalty = self._tensor([p.frequency_penalty for p in params], f32)
            t.seen = self._occurrences([s.token_ids for s in seqs], vocab) > 0
            t.output_counts = self._occurrences([s.output_ids for s in seqs], vocab)
        wanted = [p.top_logprobs for p in params if p.logprobs]
        t.num_top_logprobs = max(wanted) if wanted else -1
        return t

    def _occurrences(self, token_lists: list[list[int]], vocab: int) -> torch.Tensor:
        """[B, V] counts via one scatter_add (padding goes to a spare column that is dropped)."""
        width = max(1, max(len(t) for t in token_lists))
        ids = self._tensor([t + [vocab] * (width - len(t)) for t in token_lists])
        counts = torch.zeros(len(token_lists), vocab + 1, device=self.device)
        counts.scatter_add_(1, ids, torch.ones_like(ids, dtype=counts.dtype))
        return counts[:, :vocab]

    # -- the step ------------------------------------------------------------------------------
    @torch.inference_mode()
    def forward_step(
        self,
        input_ids: torch.Tensor,
        meta: AttentionMetadata,
        rope_lens: torch.Tensor | None,
        logits_rows: torch.Tensor,
    ) -> torch.Tensor:
        """One batched forward; fp32 logits of the rows that sample."""
        hidden = self.model(input_ids, meta.positions, meta, self.kv_caches, rope_lens)
        return self.model.compute_logits(hidden[logits_rows])

    @torch.inference_mode()
    def execute(self, batch: Batch, blocks: BlockManager, eos: tuple[int, ...]) -> list[TokenOutput | None]:
        """Run a batch; one `TokenOutput` per sequence that reached its last token, None for others."""
        input_ids, meta, rope_lens = self.prepare(batch, blocks)
        sampling = [b for b in range(len(batch)) if batch.samples(b)]
        ends = torch.tensor(batch.num_new).cumsum(0) - 1
        graphs = self.decode_graphs
        if (
            graphs is not None
            and rope_lens is None
            and len(sampling) == len(batch)
            and graphs.fits(meta, len(batch))
        ):
            logits = graphs.run(input_ids, meta)  # pure decode: one replay instead of ~15 launches a layer
        else:
            logits = self.forward_step(input_ids, meta, rope_lens, ends[sampling].to(self.device))
        results: list[TokenOutput | None] = [None] * len(batch)
        if not sampling:
            return results
        seqs = [batch.seqs[b] for b in sampling]
        out = sample(logits, self.sampling_tensors(seqs, eos))
        tokens = out.tokens.tolist()
        chosen = out.logprobs.tolist() if out.logprobs is not None else None
        top_ids = out.top_ids.tolist() if out.top_ids is not None else None
        top_lps = out.top_logprobs.tolist() if out.top_logprobs is not None else None
        for row, (b, seq) in enumerate(zip(sampling, seqs, strict=True)):
            item = TokenOutput(token=tokens[row])
            if seq.params.logprobs and chosen is not None:
                item.logprob = chosen[row]
                n = seq.params.top_logprobs
                if n and top_ids is not None and top_lps is not None:
                    item.top = list(zip(top_ids[row][:n], top_lps[row][:n], strict=True))
            results[b] = item
        return results

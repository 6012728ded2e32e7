"""Tensors of one engine step: the KV cache, the flat token batch, one forward, one sampling call.

The runner turns a scheduled `Batch` into index tensors (a few Python loops over sequences to read
their block tables, as any paged engine does), runs the decoder once for the whole batch, computes
logits only for the rows that sample, and samples them together. CUDA graphs for decode buckets
belong here (a later issue): `forward_step` is the pure function they would capture.
"""

from __future__ import annotations

import dataclasses
import itertools
from array import array
from collections.abc import Callable, Iterable
from collections.abc import Sequence as Seq
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from clawdbot.services.inference.attention import AttentionMetadata, GroupMetadata
from clawdbot.services.inference.block_manager import BlockManager
from clawdbot.services.inference.config import ModelConfig
from clawdbot.services.inference.events import TokenOutput
from clawdbot.services.inference.grounding_mask import NEG_INF, GroundingRows, GroundingTables
from clawdbot.services.inference.kernels.paged_attention import prefill_tiles, tile_capacity
from clawdbot.services.inference.model.decoder import Decoder, kv_groups
from clawdbot.services.inference.sampler import SamplingTensors, sample
from clawdbot.services.inference.scheduler import Batch
from clawdbot.services.inference.sequence import PENDING, Sequence

if TYPE_CHECKING:
    from clawdbot.services.inference.cuda_graphs import DecodeGraphs
    from clawdbot.services.inference.prefill_graphs import PrefillGraphs


@dataclass(frozen=True)
class _BatchMix:
    """What the sampling parameters of a batch need; recomputed only when the batch changes."""

    all_greedy: bool
    min_tokens: bool  # some row has min_tokens (suppression may apply)
    penalties: bool
    top_logprobs: int  # max alternatives any row asked for; -1 = no logprobs at all
    grounded: bool  # some row is grounded


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
        self.prefill_graphs: PrefillGraphs | None = None  # likewise
        self.tile_tokens = 0  # query tokens per prefill tile of the attention kernel; 0 = it needs none
        self._no_rows = torch.zeros(0, dtype=torch.long, device=device)
        self._no_rows_f = torch.zeros(0, dtype=torch.float32, device=device)
        self._mix_of: list[Sequence] = []  # the batch `_mix` describes
        self._mix = _BatchMix(
            all_greedy=True, min_tokens=False, penalties=False, top_logprobs=-1, grounded=False
        )
        self.grounding: GroundingTables | None = None  # set by the engine when it can ground requests
        self._grounding_rows: GroundingRows | None = None  # of the batch `_mix` describes
        self._in_flight_tokens: torch.Tensor | None = None  # the last launched step's samples (device)
        self._arange = torch.arange(256, device=device)
        shape = (num_blocks, block_size, config.num_kv_heads, config.head_dim)
        self.kv_caches = [
            (torch.zeros(shape, dtype=dtype, device=device), torch.zeros(shape, dtype=dtype, device=device))
            for _ in range(config.num_layers)
        ]

    # -- inputs --------------------------------------------------------------------------------
    def _to_device(self, host: torch.Tensor) -> torch.Tensor:
        """Host numbers on the device without waiting for it: a plain copy from pageable memory
        synchronises the stream, which would wait for the step in flight and undo the pipelining."""
        if self.device.type != "cuda":
            return host
        return host.pin_memory().to(self.device, non_blocking=True)

    def _tensor(self, data: Seq[Any], dtype: torch.dtype = torch.long) -> torch.Tensor:
        return self._to_device(torch.tensor(data, dtype=dtype))

    def _upload(self, flat: list[int]) -> torch.Tensor:
        """One host-to-device copy of a step's integers."""
        # 4x faster than torch.tensor(list) for a step's thousands of integers.
        return self._to_device(torch.frombuffer(array("q", flat), dtype=torch.long))

    def prepare(
        self, batch: Batch, blocks: BlockManager
    ) -> tuple[torch.Tensor, AttentionMetadata, torch.Tensor | None]:
        """(input ids [T], metadata, rope sequence lengths [T]) for a scheduled batch.

        Every integer of the step (ids, positions, block tables...) is gathered into one list and
        crosses to the device in one copy; a pure decode step also gets its cache slots computed
        here (one per sequence) instead of by a few small device ops.
        """
        seqs, num_new = batch.seqs, batch.num_new
        count, total = len(seqs), sum(num_new)
        max_q = max(num_new)
        decode = max_q == 1
        bs = self.block_size
        input_ids: list[int] = []
        positions: list[int] = []
        rows: list[int] = []
        starts = [seq.num_computed for seq in seqs]
        if decode:
            input_ids = [seq.token_ids[start] for seq, start in zip(seqs, starts, strict=True)]
            positions = starts
        else:
            for b, (seq, start, n) in enumerate(zip(seqs, starts, num_new, strict=True)):
                input_ids.extend(seq.token_ids[start : start + n])
                positions.extend(range(start, start + n))
                rows.extend([b] * n)
        context = [start + n for start, n in zip(starts, num_new, strict=True)]
        # Tokens sampled by the step still in flight: their row in that step's output, read on the device.
        sources = self._pending_sources(seqs, num_new, total) if PENDING in input_ids else []
        flat: list[int] = []
        sizes: list[int] = []

        def add(values: Iterable[int]) -> None:
            """Append one section, padded to an even length: every view of the upload then starts
            16-byte aligned, as Triton specialises kernels on pointer alignment (a parity that
            varied with the batch compiled new kernel variants while serving)."""
            start = len(flat)
            flat.extend(values)
            sizes.append(len(flat) - start)
            if len(flat) % 2:
                flat.append(0)

        for section in (input_ids, positions, rows, starts, context, sources, () if decode else num_new):
            add(section)
        widths = []
        all_tables = blocks.tables
        for g in range(len(self.windows)):
            tables = [all_tables[seq.request_id][g] for seq in seqs]
            firsts = blocks.first_needed_all(g, starts)
            width = max(len(t) - f for t, f in zip(tables, firsts, strict=True))
            widths.append(width)
            add(firsts)
            padded: list[int] = []
            for entries, skip in zip(tables, firsts, strict=True):
                padded += entries[skip:]
                padded += [-1] * (width - len(entries) + skip)
            add(padded)
            add((t[p // bs] * bs + p % bs for t, p in zip(tables, positions, strict=True)) if decode else ())
        uploaded = self._upload(flat)
        parts = []
        offset = 0
        for size in sizes:
            parts.append(uploaded[offset : offset + size])
            offset += size + size % 2
        ids, pos, row_index, first_pos, context_lens, source, query_lens = parts[:7]
        if sources:
            assert self._in_flight_tokens is not None, "a PENDING token without a step in flight"
            ids = torch.where(ids >= 0, ids, self._in_flight_tokens[source])
        if decode:
            row_index = self._rows(count)
            query_slot = row_index
        else:
            query_slot = row_index * max_q + (pos - first_pos[row_index])
        groups = []
        for g, (window, width) in enumerate(zip(self.windows, widths, strict=True)):
            first, table, slots = parts[7 + 3 * g : 10 + 3 * g]
            table = table.view(count, width)
            if not decode:
                slots = table[row_index, pos // bs - first[row_index]] * bs + pos % bs
            groups.append(
                GroupMetadata(window=window, slot_mapping=slots, block_tables=table, first_block=first)
            )
        meta = AttentionMetadata(
            positions=pos, query_slot=query_slot, context_lens=context_lens, max_q=max_q, groups=groups
        )
        if not decode:
            meta.query_lens = query_lens  # the tile table is built where it is needed (`launch`)
        rope_lens = context_lens[row_index] if self.config.rope.kind == "dynamic" else None
        return ids, meta, rope_lens

    @staticmethod
    def _pending_sources(seqs: list[Sequence], num_new: list[int], total: int) -> list[int]:
        """Per token: the row of the in-flight step's samples that holds it (0 where it is known)."""
        sources = [0] * total
        end = 0
        for seq, n in zip(seqs, num_new, strict=True):
            end += n
            if seq.token_ids[seq.num_computed + n - 1] == PENDING:  # only a chunk's last token can be
                sources[end - 1] = seq.pending_row
        return sources

    def _rows(self, count: int) -> torch.Tensor:
        """0..count-1 on the device, from a cached arange (a decode step's row of each token)."""
        if self._arange.shape[0] < count:
            self._arange = torch.arange(max(count, 2 * self._arange.shape[0]), device=self.device)
        return self._arange[:count]

    def sampling_tensors(self, seqs: list[Sequence], eos: tuple[int, ...]) -> SamplingTensors:
        """Per-row sampling parameters; penalty state only when some row uses a penalty.

        The per-row numbers cross to the device in two copies (floats, integers); an all-greedy
        batch without penalties or logprobs needs none of them.
        """
        params = [s.params for s in seqs]
        if seqs != self._mix_of:  # list equality is identity here: the same batch as last step
            self._mix_of = list(seqs)
            self._mix = _BatchMix(
                all_greedy=all(p.temperature <= 0 for p in params),
                min_tokens=any(p.min_tokens for p in params),
                penalties=any(p.needs_penalties for p in params),
                top_logprobs=max((p.top_logprobs for p in params if p.logprobs), default=-1),
                grounded=any(s.trie is not None for s in seqs),
            )
            self._grounding_rows = None
            if self._mix.grounded:
                assert self.grounding is not None, "a grounded request in an engine that cannot ground"
                tables = self.grounding
                self._grounding_rows = tables.rows(self._tensor(tables.slots(seqs)))
        mix = self._mix
        if mix.all_greedy:
            none, nothing = self._no_rows, self._no_rows_f
            t = SamplingTensors(nothing, none, nothing, nothing, none, none, all_greedy=True)
        else:
            floats = self._tensor(
                [[p.temperature for p in params], [p.top_p for p in params], [p.min_p for p in params]],
                torch.float32,
            )
            ints = self._tensor(
                [[p.top_k for p in params], [p.seed for p in params], [s.num_output for s in seqs]]
            )
            t = SamplingTensors(
                temperature=floats[0],
                top_k=ints[0],
                top_p=floats[1],
                min_p=floats[2],
                seeds=ints[1],
                steps=ints[2],
            )
        if mix.min_tokens and any(s.num_output < s.params.min_tokens for s in seqs):
            banned = [
                [*eos, *p.stop_token_ids] if s.num_output < p.min_tokens else []
                for s, p in zip(seqs, params, strict=True)
            ]
            width = max(len(b) for b in banned)
            t.suppress = self._tensor([b + [-1] * (width - len(b)) for b in banned])
        if mix.penalties:
            f32 = torch.float32
            t.repetition_penalty = self._tensor([p.repetition_penalty for p in params], f32)
            t.presence_penalty = self._tensor([p.presence_penalty for p in params], f32)
            t.frequency_penalty = self._tensor([p.frequency_penalty for p in params], f32)
            t.seen = self._occurrences([s.token_ids for s in seqs], self.config.vocab_size) > 0
            t.output_counts = self._occurrences([s.output_ids for s in seqs], self.config.vocab_size)
        t.num_top_logprobs = mix.top_logprobs
        t.grounding = self._grounding_rows
        return t

    def release(self, seq: Sequence) -> None:
        """A finished request gives back what it held here (its grounding slot and trie nodes)."""
        if self.grounding is not None:
            self.grounding.release(seq)

    def _occurrences(self, token_lists: list[list[int]], vocab: int) -> torch.Tensor:
        """[B, V] counts via one scatter_add (padding goes to a spare column that is dropped)."""
        width = max(1, max(len(t) for t in token_lists))
        ids = self._tensor([t + [vocab] * (width - len(t)) for t in token_lists])
        ids = ids.masked_fill(ids < 0, vocab)  # PENDING tokens of other rows count nowhere
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
    def launch(self, batch: Batch, blocks: BlockManager, eos: tuple[int, ...]) -> LaunchedStep:
        """Queue a batch's forward and sampling on the device and return without waiting for them.

        On CUDA the sampled ids travel back by an asynchronous copy into pinned memory, so the
        engine can do the previous step's host work (events, metrics) while the GPU runs this one.
        """
        input_ids, meta, rope_lens = self.prepare(batch, blocks)
        sampling = batch.sampling_rows()
        graphs, prefill = self.decode_graphs, self.prefill_graphs
        replay = (
            graphs is not None
            and rope_lens is None
            and len(sampling) == len(batch)
            and graphs.fits(meta, len(batch))
        )
        if replay:
            assert graphs is not None
            logits = graphs.run(input_ids, meta)  # pure decode: one replay instead of ~15 launches a layer
        else:
            hidden = None
            if prefill is not None and rope_lens is None and prefill.fits(meta, len(batch), len(input_ids)):
                hidden = prefill.run(input_ids, meta)  # prompts: one replay instead of ~500 launches
            else:
                self._add_tiles(meta, len(input_ids))
            if not sampling:
                if hidden is None:
                    self.forward_step(input_ids, meta, rope_lens, input_ids[:0])
                return LaunchedStep([], [])
            ends = list(itertools.accumulate(batch.num_new))
            rows = self._upload([ends[b] - 1 for b in sampling])
            if hidden is None:
                logits = self.forward_step(input_ids, meta, rope_lens, rows)
            else:
                logits = self.model.compute_logits(hidden[rows])
        seqs = [batch.seqs[b] for b in sampling]
        params = self.sampling_tensors(seqs, eos)
        out = sample(logits, params)
        tokens = out.tokens
        if batch.steps > 1:
            tokens = self._chain(tokens, meta, rope_lens is not None, params, batch.steps, replay)
        self._in_flight_tokens = tokens
        step = LaunchedStep(sampling, seqs)
        step.tokens = self._to_host(tokens)
        step.logprobs = self._to_host(out.logprobs)
        step.top_ids = self._to_host(out.top_ids)
        step.top_logprobs = self._to_host(out.top_logprobs)
        if self.device.type == "cuda":
            step.ready = torch.cuda.Event()
            step.ready.record()
        return step

    def _chain(
        self,
        first: torch.Tensor,
        meta: AttentionMetadata,
        dynamic_rope: bool,
        params: SamplingTensors,
        steps: int,
        replay: bool,
    ) -> torch.Tensor:
        """The samples of `steps` decode steps queued back to back, step-major [steps * B]: each
        step's input is the step before's samples, its positions one further, all on the device.

        The host's per-step work (schedule, inputs, reading and handing out tokens) is then paid
        once for all of them; at 256 sequences that work, not the GPU, set the step rate on the
        lent hosts (docs/perf.md). Seeded draws stay those of one step at a time: step k of a row
        uses its noise counter + k.
        """
        samples = [first]
        rows = self._rows(len(first))
        later = self._chain_metadata(meta, steps)
        noise = (
            None if params.all_greedy else _rows_aligned(params.steps[None, :] + self._rows(steps)[:, None])
        )
        for k in range(1, steps):
            shifted = later(k)
            if replay:
                assert self.decode_graphs is not None
                logits = self.decode_graphs.run(samples[-1], shifted, same_tables=True)
            else:
                rope = shifted.context_lens if dynamic_rope else None
                logits = self.forward_step(samples[-1], shifted, rope, rows)
            step_params = params if noise is None else dataclasses.replace(params, steps=noise[k])
            samples.append(sample(logits, step_params).tokens)
        return torch.cat(samples)

    def _chain_metadata(self, meta: AttentionMetadata, steps: int) -> Callable[[int], AttentionMetadata]:
        """Step k's metadata of a chain, from the first step's: the same block tables (they hold the
        blocks of every step), positions and lengths + k, cache slots read from the tables. Made for
        all steps at once (a handful of small kernels a chain, not a step: at batch 1 they were a
        tenth of each step), then handed out as views."""
        bs = self.block_size
        offsets = self._rows(steps)[:, None]
        positions = _rows_aligned(meta.positions[None, :] + offsets)  # [steps, B]
        context_lens = _rows_aligned(meta.context_lens[None, :] + offsets)
        slots = [
            _rows_aligned(
                group.block_tables.gather(1, (positions // bs - group.first_block[None, :]).T).T * bs
                + positions % bs
            )
            for group in meta.groups
        ]

        def at(k: int) -> AttentionMetadata:
            return AttentionMetadata(
                positions=positions[k],
                query_slot=meta.query_slot,
                context_lens=context_lens[k],
                max_q=1,
                groups=[
                    dataclasses.replace(group, slot_mapping=group_slots[k])
                    for group, group_slots in zip(meta.groups, slots, strict=True)
                ],
            )

        return at

    def _add_tiles(self, meta: AttentionMetadata, tokens: int) -> None:
        """The prefill kernel's tile table for an eager prompt step, once for all layers (a graph
        replay builds its own inside the graph)."""
        if self.tile_tokens and meta.max_q > 1 and meta.query_lens is not None:
            capacity = tile_capacity(tokens, meta.num_seqs, self.tile_tokens)
            meta.tiles = prefill_tiles(meta.query_lens, self.tile_tokens, capacity)

    def _to_host(self, tensor: torch.Tensor | None) -> torch.Tensor | None:
        if tensor is None or self.device.type != "cuda":
            return tensor
        return tensor.to("cpu", non_blocking=True)  # into pinned memory: does not wait


def _rows_aligned(table: torch.Tensor) -> torch.Tensor:
    """`table` [steps, B] (int64) in memory whose every row starts 16-byte aligned: each row is one
    step's input to Triton kernels, which compile a variant per pointer alignment (a first one
    met while serving stalls every stream, docs/perf.md)."""
    steps, width = table.shape
    out = torch.empty((steps, width + width % 2), dtype=table.dtype, device=table.device)
    out[:, :width] = table
    return out[:, :width]


@dataclass
class LaunchedStep:
    """A queued step: which rows sample, and host copies of the sampler's output once `ready` fires."""

    sampling: list[int]
    seqs: list[Sequence]
    tokens: torch.Tensor | None = None
    logprobs: torch.Tensor | None = None
    top_ids: torch.Tensor | None = None
    top_logprobs: torch.Tensor | None = None
    ready: torch.cuda.Event | None = None

    def wait(self) -> None:
        """Until the device has finished the step and its samples are on the host."""
        if self.ready is not None:
            self.ready.synchronize()

    def outputs(self) -> list[TokenOutput]:
        """Wait for the device, then one `TokenOutput` per sampling row (in `sampling` order; a
        chained step's step by step)."""
        if self.tokens is None:
            return []
        self.wait()
        tokens = self.tokens.tolist()
        if self.logprobs is None:
            return [TokenOutput(token) for token in tokens]
        chosen = self.logprobs.tolist()
        top_ids = self.top_ids.tolist() if self.top_ids is not None else None
        top_lps = self.top_logprobs.tolist() if self.top_logprobs is not None else None
        results = []
        for row, seq in enumerate(self.seqs):
            item = TokenOutput(token=tokens[row])
            if seq.params.logprobs:
                item.logprob = chosen[row]
                n = seq.params.top_logprobs
                if n and top_ids is not None and top_lps is not None:
                    # A grounded row may allow fewer than n tokens: the refused ones (-inf) are left out.
                    top = zip(top_ids[row][:n], top_lps[row][:n], strict=True)
                    item.top = [(token, logprob) for token, logprob in top if logprob != NEG_INF]
            results.append(item)
        return results

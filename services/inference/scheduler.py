"""Who runs this step: continuous batching with chunked prefill, preemption by recompute,
a bounded waiting queue, deadlines and aborts. Knows sequences and blocks, never tensors.
"""

from __future__ import annotations

import bisect
import time
from dataclasses import dataclass, field

from clawdbot.services.inference.block_manager import BlockManager
from clawdbot.services.inference.sequence import Finish, Sequence, Status
from clawdbot.shared.errors import ResourceExhausted


@dataclass(frozen=True)
class SchedulerConfig:
    max_num_seqs: int = 16
    max_num_batched_tokens: int = 512
    max_waiting: int = 256
    context_length: int = 4096


@dataclass
class Batch:
    """One step's work: each sequence with how many of its uncomputed tokens run now."""

    seqs: list[Sequence] = field(default_factory=list)
    num_new: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.seqs)

    @property
    def num_tokens(self) -> int:
        return sum(self.num_new)

    def samples(self, index: int) -> bool:
        """Whether sequence `index` reaches its last token this step (so a token is sampled)."""
        seq = self.seqs[index]
        return seq.num_computed + self.num_new[index] == seq.num_tokens


def _order(seq: Sequence) -> tuple[int, int]:
    return (-seq.priority, seq.arrival)


class Scheduler:
    def __init__(
        self, config: SchedulerConfig, blocks: BlockManager, eos_token_ids: tuple[int, ...] = ()
    ) -> None:
        self.config = config
        self.blocks = blocks
        self.eos = frozenset(eos_token_ids)
        self.waiting: list[Sequence] = []  # sorted by (priority desc, arrival)
        self.running: list[Sequence] = []
        self.preemptions = 0

    # -- queues --------------------------------------------------------------------------------
    def add(self, seq: Sequence) -> None:
        if len(self.waiting) >= self.config.max_waiting:
            raise ResourceExhausted(
                f"the waiting queue is full ({self.config.max_waiting} requests); retry later"
            )
        self._enqueue(seq)

    def _enqueue(self, seq: Sequence) -> None:
        seq.status = Status.WAITING
        keys = [_order(s) for s in self.waiting]
        self.waiting.insert(bisect.bisect(keys, _order(seq)), seq)

    @property
    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def finish(self, seq: Sequence, reason: Finish) -> None:
        """End a sequence (any state) and give its blocks back at once."""
        if seq.is_finished:
            return
        if seq in self.running:
            self.running.remove(seq)
        if seq in self.waiting:
            self.waiting.remove(seq)
        self.blocks.free(seq.request_id)
        seq.status = Status.FINISHED
        seq.finish = reason

    def expire(self, now: float | None = None) -> list[Sequence]:
        """Sequences past their deadline, finished with ABORT."""
        now = time.monotonic() if now is None else now
        late = [s for s in (*self.running, *self.waiting) if s.deadline is not None and s.deadline <= now]
        for seq in late:
            self.finish(seq, Finish.ABORT)
        return late

    def _preempt(self, seq: Sequence) -> None:
        """Recompute later: drop its blocks (their hashes stay cached) and requeue it."""
        self.running.remove(seq)
        self.blocks.free(seq.request_id)
        seq.num_computed = 0
        seq.admitted = False
        self.preemptions += 1
        self._enqueue(seq)

    # -- one step ------------------------------------------------------------------------------
    def schedule(self) -> Batch:
        batch = Batch()
        budget = self.config.max_num_batched_tokens
        # Decodes first (latency), then unfinished prefill chunks; the last one is the first victim.
        order = sorted(self.running, key=lambda s: (s.num_uncomputed > 1, *_order(s)))
        preempted = False
        i = 0
        while i < len(order) and budget > 0:
            seq = order[i]
            n = min(seq.num_uncomputed, budget)
            while not self.blocks.reserve(seq, n):
                victim = order.pop()
                self._preempt(victim)
                preempted = True
                if victim is seq:
                    break
            else:
                batch.seqs.append(seq)
                batch.num_new.append(n)
                budget -= n
                i += 1
        while self.waiting and budget > 0 and not preempted and len(self.running) < self.config.max_num_seqs:
            seq = self.waiting[0]
            if not seq.admitted:
                seq.num_computed = self.blocks.admit(seq)
                if seq.num_output == 0 and seq.num_cached_prompt == 0:
                    seq.num_cached_prompt = seq.num_computed
                seq.admitted = True
            n = min(seq.num_uncomputed, budget)
            if not self.blocks.reserve(seq, n):
                # Waiting requests hold no blocks: its prefix hits stay in the cache for the next try.
                self.blocks.free(seq.request_id)
                seq.num_computed = 0
                seq.admitted = False
                if not self.running:
                    # Nothing will ever free memory for it: the pool is smaller than one request.
                    self.waiting.pop(0)
                    self.finish(seq, Finish.LENGTH)
                    continue
                break
            self.waiting.pop(0)
            seq.status = Status.RUNNING
            self.running.append(seq)
            batch.seqs.append(seq)
            batch.num_new.append(n)
            budget -= n
        return batch

    def update(self, batch: Batch, sampled: list[int | None]) -> list[Sequence]:
        """Advance the batch by its computed tokens and the sampled ones; returns the sequences
        that got a new token (finished ones included)."""
        now = time.monotonic()
        advanced: list[Sequence] = []
        for seq, n, token in zip(batch.seqs, batch.num_new, sampled, strict=True):
            if seq.is_finished:
                continue  # aborted while the step ran
            seq.num_computed += n
            self.blocks.commit(seq)
            if token is None:
                continue
            seq.token_ids.append(token)
            seq.first_token_time = seq.first_token_time or now
            seq.last_token_time = now
            advanced.append(seq)
            reason = self._stop_reason(seq, token)
            if reason is not None:
                self.finish(seq, reason)
        return advanced

    def _stop_reason(self, seq: Sequence, token: int) -> Finish | None:
        params = seq.params
        stops = token in params.stop_token_ids or (not params.ignore_eos and token in self.eos)
        if stops and seq.num_output > params.min_tokens:  # earlier ones were suppressed by the sampler
            seq.stop_token_id = token
            return Finish.STOP
        if seq.num_output >= params.max_tokens or seq.num_tokens >= self.config.context_length:
            return Finish.LENGTH
        return None

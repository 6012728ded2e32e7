"""Who runs this step: continuous batching with chunked prefill, preemption by recompute,
a bounded waiting queue, deadlines and aborts. Knows sequences and blocks, never tensors.
"""

from __future__ import annotations

import bisect
import time
from dataclasses import dataclass, field

from clawdbot.services.inference.block_manager import BlockManager
from clawdbot.services.inference.sequence import PENDING, Finish, Sequence, Status
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

    def sampling_rows(self) -> list[int]:
        """The rows whose sequence reaches its last token this step (so a token is sampled)."""
        return [
            b
            for b, (seq, n) in enumerate(zip(self.seqs, self.num_new, strict=True))
            if seq.num_computed + n == len(seq.token_ids)
        ]


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
        while seq.token_ids and seq.token_ids[-1] == PENDING:  # sampled by a step it no longer needs
            seq.token_ids.pop()
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
        # Decodes first (latency), then unfinished prefill chunks, each in `running`'s order
        # (priority, arrival); the last one is the first victim.
        running = self.running
        order = [s for s in running if s.num_uncomputed <= 1]
        if len(order) < len(running):
            order += [s for s in running if s.num_uncomputed > 1]
        context = self.config.context_length
        preempted = False
        i = 0
        while i < len(order) and budget > 0:
            seq = order[i]
            ids = seq.token_ids
            if ids[-1] == PENDING and len(ids) >= min(seq.num_prompt + seq.params.max_tokens, context):
                # Its last token is in flight (a pipelined step) and ends it: it finishes when read.
                order.pop(i)
                continue
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
            bisect.insort(self.running, seq, key=_order)
            batch.seqs.append(seq)
            batch.num_new.append(n)
            budget -= n
        return batch

    def advance(self, batch: Batch, sampling: list[int]) -> list[tuple[Sequence, int]]:
        """Right after a launch: count the batch's tokens as computed and give each sampling row a
        PENDING token, so the next step can be scheduled before this one's tokens are read.
        Returns (sequence, index of its PENDING token) per sampling row, in row order."""
        for seq, n in zip(batch.seqs, batch.num_new, strict=True):
            seq.num_computed += n
            if n > 1:
                # A prompt chunk's blocks are hashed before the next schedule can slide them out of
                # the window; a decode token's block waits for `resolve` (it holds a PENDING token).
                self.blocks.commit(seq)
        pending = []
        for row, b in enumerate(sampling):
            seq = batch.seqs[b]
            seq.pending_row = row
            pending.append((seq, len(seq.token_ids)))
            seq.token_ids.append(PENDING)
        return pending

    def resolve(self, batch: Batch, pending: list[tuple[Sequence, int]], tokens: list[int]) -> list[int]:
        """The step's sampled tokens are read: fill them in, register newly full blocks, apply stop
        rules. Returns the rows of `pending` whose sequence got its token (finished ones included)."""
        now = time.monotonic()
        for seq in batch.seqs:
            # Not finished or preempted meanwhile. (A finished sequence's id may already name a new
            # request, resubmitted after an abort while this step ran: its tables are not this one's.)
            if seq.status is not Status.FINISHED and seq.request_id in self.blocks.tables:
                self.blocks.commit(seq)
        advanced: list[int] = []
        for row, ((seq, index), token) in enumerate(zip(pending, tokens, strict=True)):
            if seq.status is Status.FINISHED:
                continue  # aborted, or stopped by the step before, while this one ran
            seq.token_ids[index] = token
            seq.first_token_time = seq.first_token_time or now
            seq.last_token_time = now
            advanced.append(row)
            reason = self._stop_reason(seq, token, index + 1)
            if reason is not None:
                self.finish(seq, reason)
        return advanced

    def _stop_reason(self, seq: Sequence, token: int, length: int) -> Finish | None:
        """Why the sequence ends with `token` as its token number `length` (1-based), if it does."""
        params = seq.params
        outputs = length - seq.num_prompt
        stops = token in params.stop_token_ids or (not params.ignore_eos and token in self.eos)
        if stops and outputs > params.min_tokens:  # earlier ones were suppressed by the sampler
            seq.stop_token_id = token
            return Finish.STOP
        if outputs >= params.max_tokens or length >= self.config.context_length:
            return Finish.LENGTH
        return None

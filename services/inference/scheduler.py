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
    # Decode steps one launch may chain on the device (each feeding the next its sampled tokens) when
    # the batch is all decodes that need nothing from the host between tokens; 1 turns it off.
    decode_steps: int = 1
    # ... but only once no request has arrived for this long: while requests keep coming (a burst of
    # calls reaches the engine over ~100 ms), each is admitted at the next step, not after a chain.
    chain_quiet_s: float = 0.05


@dataclass
class Batch:
    """One step's work: each sequence with how many of its uncomputed tokens run now.

    `steps` > 1 (a pure decode batch only): the device runs that many decode steps back to back,
    each on the tokens the one before sampled, so each sequence gets `steps` tokens from one
    schedule, one input upload and one read of the results.
    """

    seqs: list[Sequence] = field(default_factory=list)
    num_new: list[int] = field(default_factory=list)
    steps: int = 1

    def __len__(self) -> int:
        return len(self.seqs)

    @property
    def num_tokens(self) -> int:
        return sum(self.num_new) * self.steps

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
        self.last_arrival = float("-inf")  # time.monotonic() of the last `add`
        # Sequences `schedule` ended on its own (they can never fit in the pool): the engine sends
        # their final events (`take_ended`).
        self.ended: list[Sequence] = []

    # -- queues --------------------------------------------------------------------------------
    def add(self, seq: Sequence) -> None:
        if len(self.waiting) >= self.config.max_waiting:
            raise ResourceExhausted(
                f"the waiting queue is full ({self.config.max_waiting} requests); retry later"
            )
        self._enqueue(seq)
        self.last_arrival = time.monotonic()

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
                if victim is seq and len(self.running) == 1:
                    # Alone and still short of blocks: nothing will ever free any, and a preempted
                    # sequence would come back to the same place forever. It ends here.
                    self.finish(seq, Finish.LENGTH)
                    self.ended.append(seq)
                    break
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
                    self.ended.append(seq)
                    continue
                break
            self.waiting.pop(0)
            seq.status = Status.RUNNING
            bisect.insort(self.running, seq, key=_order)
            batch.seqs.append(seq)
            batch.num_new.append(n)
            budget -= n
        if self.config.decode_steps > 1 and batch.seqs and not preempted:
            batch.steps = self._chain(batch)
        return batch

    def take_ended(self) -> list[Sequence]:
        """The sequences `schedule` ended since the last call (see `ended`)."""
        ended, self.ended = self.ended, []
        return ended

    def _chain(self, batch: Batch) -> int:
        """How many decode steps this batch can run in one launch (1: just this one).

        Only a batch of decodes alone (no prompt waits to join it) whose sequences need nothing from
        the host between tokens: no penalties (their state is built from the tokens), no logprobs,
        no min_tokens still suppressing stop tokens. No sequence may pass its max_tokens or the
        context; one that stops on a stop token earlier has the tokens after it dropped. Every
        sequence gets the blocks for all of them, or the batch runs one step.
        """
        steps = self.config.decode_steps
        if self.waiting and len(self.running) < self.config.max_num_seqs:
            return 1  # a prompt could join at the next schedule: do not make it wait several steps
        if time.monotonic() - self.last_arrival < self.config.chain_quiet_s:
            return 1  # requests are arriving: the next one joins sooner one step at a time
        context = self.config.context_length
        for seq, n in zip(batch.seqs, batch.num_new, strict=True):
            params = seq.params
            if n != 1 or seq.num_uncomputed != 1:
                return 1  # a prompt chunk (one token of it, when the budget is that tight)
            if params.needs_penalties or params.logprobs or seq.num_output < params.min_tokens:
                return 1
            left = min(seq.num_prompt + params.max_tokens, context) - len(seq.token_ids)
            if left < steps:
                steps = left
                if steps <= 1:
                    return 1
        if not self.blocks.can_extend_all(batch.seqs, steps):
            return 1  # and nobody reserved anything for it
        for seq in batch.seqs:
            self.blocks.reserve(seq, steps)  # succeeds: can_extend_all's yes is certain
        return steps

    def advance(self, batch: Batch, sampling: list[int]) -> list[tuple[Sequence, int]]:
        """Right after a launch: count the batch's tokens as computed and give each sampling row a
        PENDING token (one per chained step), so the next step can be scheduled before this one's
        tokens are read. Returns (sequence, index of its first PENDING token) per sampling row."""
        steps = batch.steps
        for seq, n in zip(batch.seqs, batch.num_new, strict=True):
            seq.num_computed += n + steps - 1
            if n > 1:
                # A prompt chunk's blocks are hashed before the next schedule can slide them out of
                # the window; a decode token's block waits for `resolve` (it holds a PENDING token).
                self.blocks.commit(seq)
        pending = []
        last = (steps - 1) * len(sampling)  # the samples are step-major: the last step's come last
        placeholders = [PENDING] * steps
        for row, b in enumerate(sampling):
            seq = batch.seqs[b]
            seq.pending_row = last + row  # the next step's input
            pending.append((seq, len(seq.token_ids)))
            seq.token_ids += placeholders
        return pending

    def resolve(
        self, batch: Batch, pending: list[tuple[Sequence, int]], tokens: list[int]
    ) -> list[tuple[int, int]]:
        """The step's sampled tokens are read (`tokens`: step-major, [steps * rows] for a chained
        step): fill them in, register newly full blocks, apply stop rules. In a chain a sequence
        takes its tokens up to its first stop token (the ones after it were computed for nothing
        and are dropped); `_chain` ruled out passing max_tokens or the context, and a min_tokens
        still suppressing stops. Returns (row of `pending`, how many tokens its sequence got) for
        every sequence that got some, finished ones included."""
        now = time.monotonic()
        for seq in batch.seqs:
            # Not finished or preempted meanwhile. (A finished sequence's id may already name a new
            # request, resubmitted after an abort while this step ran: its tables are not this one's.)
            if seq.status is not Status.FINISHED and seq.request_id in self.blocks.tables:
                self.blocks.commit(seq)
        rows, steps, eos = len(pending), batch.steps, self.eos
        got: list[tuple[int, int]] = []
        for row, (seq, index) in enumerate(pending):
            if seq.status is Status.FINISHED:
                continue  # aborted, or stopped by the step before, while this one ran
            if steps == 1:  # most steps: one token, no slicing
                n, token = 1, tokens[row]
                seq.token_ids[index] = token
            else:
                mine = tokens[row::rows]
                n = steps
                stop_ids, ignore_eos = seq.params.stop_token_ids, seq.params.ignore_eos
                if stop_ids or not ignore_eos:
                    for j, candidate in enumerate(mine):
                        if candidate in stop_ids or (not ignore_eos and candidate in eos):
                            n = j + 1
                            break
                seq.token_ids[index : index + n] = mine[:n]
                token = mine[n - 1]
            seq.first_token_time = seq.first_token_time or now
            seq.last_token_time = now
            got.append((row, n))
            reason = self._stop_reason(seq, token, index + n)
            if reason is not None:
                self.finish(seq, reason)
        return got

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

"""The engine loop: schedule, one batched forward, sample, hand tokens to each request's asyncio queue.

It runs in its own thread so the gRPC event loop never waits on a forward. Requests come in through
`submit` (which refuses at once when the waiting queue is full), aborts through `abort` (applied at
the start of the next step, so a cancelled stream's blocks are free within one step). Each request
gets `StepEvent`s on its asyncio queue; a consumer that lags finds several there and merges them
into one message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field

import torch

from clawdbot.services.inference.block_manager import BlockManager
from clawdbot.services.inference.config import ModelConfig
from clawdbot.services.inference.metrics import EngineMetrics
from clawdbot.services.inference.model.decoder import Decoder, kv_groups
from clawdbot.services.inference.model_runner import ModelRunner, TokenOutput, kv_block_bytes
from clawdbot.services.inference.scheduler import Scheduler, SchedulerConfig
from clawdbot.services.inference.sequence import Finish, SamplingParams, Sequence
from clawdbot.shared.errors import AlreadyExists, Unavailable

log = logging.getLogger("clawdbot.inference.engine")


@dataclass(frozen=True)
class EngineConfig:
    block_size: int = 16
    num_blocks: int | None = None  # None: from kv_cache_bytes
    kv_cache_bytes: int = 1 << 30
    max_num_seqs: int = 16
    max_num_batched_tokens: int = 512
    max_waiting: int = 256
    prefix_caching: bool = True


@dataclass
class StepEvent:
    """What one step produced for one request (tokens may be empty on a final ABORT)."""

    tokens: list[TokenOutput] = field(default_factory=list)
    finish: Finish | None = None
    stop_token_id: int | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    error: str | None = None
    step: int = 0  # the engine step count when it was emitted


@dataclass
class _Stream:
    queue: asyncio.Queue[StepEvent]
    loop: asyncio.AbstractEventLoop


class Engine:
    def __init__(
        self,
        model: Decoder,
        config: ModelConfig,
        engine_config: EngineConfig,
        device: torch.device,
        dtype: torch.dtype,
        metrics: EngineMetrics | None = None,
    ) -> None:
        self.config = config
        self.engine_config = engine_config
        self.device = device
        self.dtype = dtype
        bs = engine_config.block_size
        num_blocks = engine_config.num_blocks or max(
            2, engine_config.kv_cache_bytes // kv_block_bytes(config, bs, dtype)
        )
        self.blocks = BlockManager(num_blocks, bs, kv_groups(config), engine_config.prefix_caching)
        self.scheduler = Scheduler(
            SchedulerConfig(
                max_num_seqs=engine_config.max_num_seqs,
                max_num_batched_tokens=engine_config.max_num_batched_tokens,
                max_waiting=engine_config.max_waiting,
                context_length=config.context_length,
            ),
            self.blocks,
            config.eos_token_ids,
        )
        self.runner = ModelRunner(model, config, num_blocks, bs, device, dtype)
        self.metrics = metrics or EngineMetrics()
        self.streams: dict[str, _Stream] = {}
        self.seqs: dict[str, Sequence] = {}
        self._aborts: deque[str] = deque()
        self._cv = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self.steps = 0

    @property
    def num_blocks(self) -> int:
        return self.runner.num_blocks

    @property
    def capacity_tokens(self) -> int:
        return self.num_blocks * self.engine_config.block_size

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="inference-engine", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        with self._cv:
            self._stopping = True
            self._cv.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    # -- requests (called from the event loop) ---------------------------------------------------
    def submit(self, seq: Sequence) -> asyncio.Queue[StepEvent]:
        """Queue a request; its events arrive on the returned queue. Raises ResourceExhausted when full."""
        if self._thread is None or self._stopping:
            raise Unavailable("the engine is not running")
        queue: asyncio.Queue[StepEvent] = asyncio.Queue()
        with self._cv:
            if seq.request_id in self.seqs:
                raise AlreadyExists("a request with this id is running", field="request_id")
            self.scheduler.add(seq)
            self.seqs[seq.request_id] = seq
            self.streams[seq.request_id] = _Stream(queue, asyncio.get_running_loop())
            self._cv.notify_all()
        self.metrics.queue(len(self.scheduler.waiting), len(self.scheduler.running))
        return queue

    def abort(self, request_id: str) -> int:
        """End a request at the next step boundary; returns the step count when it was queued."""
        with self._cv:
            self._aborts.append(request_id)
            self._cv.notify_all()
            return self.steps

    # -- the loop --------------------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            with self._cv:
                while not self._stopping and not self.scheduler.has_work and not self._aborts:
                    self._cv.wait(timeout=1.0)
                if self._stopping:
                    break
                self._apply_aborts()
            try:
                self.step()
            except Exception as exc:  # a broken step must not kill the thread: fail what ran
                log.exception("engine step failed")
                with self._cv:
                    for seq in list(self.scheduler.running):
                        self.scheduler.finish(seq, Finish.ABORT)
                        self.seqs.pop(seq.request_id, None)
                        self._emit(seq, StepEvent(error=f"{type(exc).__name__}: {exc}"))
        with self._cv:
            for seq in [*self.scheduler.running, *self.scheduler.waiting]:
                self.scheduler.finish(seq, Finish.ABORT)
                self._finish_event(seq, [])

    def _apply_aborts(self) -> None:
        while self._aborts:
            seq = self.seqs.get(self._aborts.popleft())
            if seq is not None and not seq.is_finished:
                self.scheduler.finish(seq, Finish.ABORT)
                self._finish_event(seq, [])
        for seq in self.scheduler.expire():
            self._finish_event(seq, [])

    def step(self) -> int:
        """One engine step; returns how many sequences ran."""
        with self._cv:
            batch = self.scheduler.schedule()
            self.metrics.queue(len(self.scheduler.waiting), len(self.scheduler.running))
            self.metrics.kv(self.blocks)
        if not batch.seqs:
            time.sleep(0.005)  # nothing fits right now (e.g. all waiting on memory); do not spin hot
            return 0
        started = time.monotonic()
        outputs = self.runner.execute(batch, self.blocks, self.config.eos_token_ids)
        with self._cv:
            self._apply_aborts()
            sampled = [o.token if o is not None else None for o in outputs]
            advanced = self.scheduler.update(batch, sampled)
            by_seq = {id(seq): out for seq, out in zip(batch.seqs, outputs, strict=True)}
            for seq in advanced:
                out = by_seq[id(seq)]
                assert out is not None
                self.metrics.token(seq)
                if seq.is_finished:
                    tokens = [] if seq.stop_token_id is not None else [out]
                    self._finish_event(seq, tokens)
                else:
                    self._emit(seq, StepEvent(tokens=[out]))
            self.metrics.step(self.scheduler.preemptions, batch.num_tokens, time.monotonic() - started)
            self.steps += 1
        return len(batch)

    def _finish_event(self, seq: Sequence, tokens: list[TokenOutput]) -> None:
        self.metrics.finished(seq)
        self.seqs.pop(seq.request_id, None)  # before the event: whoever sees it may reuse the id
        self._emit(
            seq,
            StepEvent(
                tokens=tokens,
                finish=seq.finish,
                stop_token_id=seq.stop_token_id,
                prompt_tokens=seq.num_prompt,
                completion_tokens=seq.num_output,
                cached_tokens=seq.num_cached_prompt,
            ),
        )

    def _emit(self, seq: Sequence, event: StepEvent) -> None:
        stream = self.streams.get(seq.request_id)
        if stream is None:
            return
        event.step = self.steps
        with contextlib.suppress(RuntimeError):  # RuntimeError: the event loop is gone (shutdown)
            stream.loop.call_soon_threadsafe(stream.queue.put_nowait, event)
        if event.finish is not None or event.error is not None:
            # After scheduling the put: a stream gone from `streams` has had its last event queued.
            self.streams.pop(seq.request_id, None)

    # -- helpers -----------------------------------------------------------------------------------
    async def generate(self, prompt: list[int], params: SamplingParams, request_id: str) -> list[int]:
        """All tokens of one request (warm-up, tests, the benchmark)."""
        queue = self.submit(Sequence(request_id, list(prompt), params))
        tokens: list[int] = []
        while True:
            event = await queue.get()
            if event.error:
                raise Unavailable(event.error)
            tokens.extend(t.token for t in event.tokens)
            if event.finish is not None:
                return tokens

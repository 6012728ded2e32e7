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
import gc
import logging
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import torch

from clawdbot.services.inference.block_manager import BlockManager
from clawdbot.services.inference.config import ModelConfig
from clawdbot.services.inference.events import StepEvent, TokenOutput
from clawdbot.services.inference.grounding import DigitTokens, Trie, check_stop_ids
from clawdbot.services.inference.grounding_mask import GroundingTables
from clawdbot.services.inference.metrics import EngineMetrics
from clawdbot.services.inference.model.decoder import Decoder, kv_groups
from clawdbot.services.inference.model_runner import LaunchedStep, ModelRunner, kv_block_bytes
from clawdbot.services.inference.scheduler import Batch, Scheduler, SchedulerConfig
from clawdbot.services.inference.sequence import PENDING, Finish, SamplingParams, Sequence
from clawdbot.shared.errors import AlreadyExists, FailedPrecondition, Unavailable

log = logging.getLogger("clawdbot.inference.engine")
SWITCH_INTERVAL_S = 0.0005


@dataclass(frozen=True)
class EngineConfig:
    block_size: int = 16
    num_blocks: int | None = None  # None: from kv_cache_bytes
    kv_cache_bytes: int = 1 << 30
    max_num_seqs: int = 16
    max_num_batched_tokens: int = 512
    max_waiting: int = 256
    prefix_caching: bool = True
    pipelined: bool = True  # launch step N+1 before reading step N's tokens (see Engine.step)
    decode_steps: int = 1  # decode steps one launch may chain (Scheduler._chain)
    chain_quiet_s: float = 0.05  # ... once no request has arrived for this long
    grounding: bool = True  # apply requests' grounding (False: ignore it; InferenceSettings.grounding)


@dataclass
class _InFlight:
    """A launched step whose tokens have not been read yet."""

    batch: Batch
    launched: LaunchedStep
    pending: list[tuple[Sequence, int]]
    started: float


@dataclass
class _Stream:
    queue: asyncio.Queue[StepEvent]
    loop: asyncio.AbstractEventLoop


EventSink = Callable[[list[tuple[str, StepEvent]]], None]


def _deliver(items: list[tuple[asyncio.Queue[StepEvent], StepEvent]]) -> None:
    for queue, event in items:
        queue.put_nowait(event)


class Engine:
    def __init__(
        self,
        model: Decoder,
        config: ModelConfig,
        engine_config: EngineConfig,
        device: torch.device,
        dtype: torch.dtype,
        metrics: EngineMetrics | None = None,
        digits: DigitTokens | None = None,
    ) -> None:
        """`digits`: the vocabulary's digit tokens (from the model folder's tokenizer.json); without
        them, with a vocabulary that cannot write every digit, or with an EOS id that writes one,
        grounded requests are refused."""
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
                decode_steps=engine_config.decode_steps,
                chain_quiet_s=engine_config.chain_quiet_s,
            ),
            self.blocks,
            config.eos_token_ids,
        )
        self.runner = ModelRunner(model, config, num_blocks, bs, device, dtype)
        if (
            engine_config.grounding
            and digits is not None
            and digits.complete
            and not set(config.eos_token_ids) & digits.digits.keys()
        ):
            self.runner.grounding = GroundingTables(digits, config.vocab_size, device, self.runner._to_device)
        self.metrics = metrics or EngineMetrics()
        self.streams: dict[str, _Stream] = {}
        # Where events of requests queued by `add` (no asyncio stream) go, from the engine thread,
        # once per step: the engine core process sends them to the gRPC process (engine_core.py).
        self.sink: EventSink | None = None
        self.seqs: dict[str, Sequence] = {}
        self._aborts: deque[Sequence] = deque()
        # Called (from the engine thread) if the loop ends by an exception, not by `stop`: the
        # engine core exits on it so that its parent notices and starts a new one.
        self.on_crash: Callable[[], None] | None = None
        self._cv = threading.Condition()
        self._outbox: list[tuple[str, _Stream | None, StepEvent]] = []
        self._in_flight: _InFlight | None = None
        self._thread: threading.Thread | None = None
        self._stopping = False
        self.steps = 0

    @property
    def num_blocks(self) -> int:
        return self.runner.num_blocks

    @property
    def capacity_tokens(self) -> int:
        return self.num_blocks * self.engine_config.block_size

    @property
    def grounding(self) -> str:
        """Whether grounded requests are grounded: "on"; "off" (the setting: their grounding is
        ignored); "unavailable" (no digit tokens: no usable tokenizer.json; they are refused)."""
        if not self.engine_config.grounding:
            return "off"
        return "on" if self.runner.grounding is not None else "unavailable"

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> None:
        # The model, its config and the block tables are long-lived: moving everything alive now out
        # of the collector's generations keeps full collections (which stall the step loop for
        # milliseconds at large batch) from re-scanning them.
        gc.collect()
        gc.freeze()
        # The engine thread shares the GIL with the event loop serving the streams. When it wakes
        # from waiting on the device it must get the GIL back at once, not after the default 5 ms
        # switch interval (longer than a whole decode step).
        sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL_S))
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
        queue: asyncio.Queue[StepEvent] = asyncio.Queue()
        self._admit(seq, _Stream(queue, asyncio.get_running_loop()))
        return queue

    def add(self, seq: Sequence) -> None:
        """Queue a request whose events go to `sink` (the engine core's wire), from any thread."""
        if self.sink is None:
            raise RuntimeError("Engine.add needs a sink; in-process consumers use submit")
        self._admit(seq, None)

    def _admit(self, seq: Sequence, stream: _Stream | None) -> None:
        if self._thread is None or self._stopping:
            raise Unavailable("the engine is not running")
        self._ground(seq)
        with self._cv:
            if seq.request_id in self.seqs:
                raise AlreadyExists("a request with this id is running", field="request_id")
            self.scheduler.add(seq)
            self.seqs[seq.request_id] = seq
            if stream is not None:
                self.streams[seq.request_id] = stream
            self._cv.notify_all()
        self.metrics.queue(len(self.scheduler.waiting), len(self.scheduler.running))

    def _ground(self, seq: Sequence) -> None:
        """Make a grounded request's trie (once, here, off the engine thread), or drop its grounding
        when the setting is off. Validation has checked the caps; `Trie.of` checks them again."""
        if seq.grounding is None or seq.trie is not None:
            return
        status = self.grounding
        if status == "off":
            seq.grounding = None
        elif status == "unavailable":
            raise FailedPrecondition(
                "this model folder has no tokenizer.json that writes every digit 0-9 as one token",
                field="grounding",
            )
        else:
            assert self.runner.grounding is not None
            check_stop_ids(seq.params.stop_token_ids, self.runner.grounding.digit_tokens)
            seq.trie = Trie.of(seq.grounding)

    def abort(self, request_id: str) -> int:
        """End a request at the next step boundary; returns the step count when it was queued.

        The request is looked up now, not when the abort is applied: an id resubmitted meanwhile
        (the old request ended, a new one took its id) is not the one being aborted.
        """
        with self._cv:
            seq = self.seqs.get(request_id)
            if seq is not None:
                self._aborts.append(seq)
                self._cv.notify_all()
            return self.steps

    # -- the loop --------------------------------------------------------------------------------
    def _loop(self) -> None:
        try:
            self._run_loop()
        except Exception:
            log.exception("the engine loop died")
            if self.on_crash is not None and not self._stopping:
                self.on_crash()

    def _run_loop(self) -> None:
        while True:
            if not self.scheduler.has_work:
                # Going idle: the gauges were last set when the final step was scheduled, with the
                # requests it finished still counted; set them to what is left (nothing, mostly).
                with self._cv:
                    self.metrics.queue(len(self.scheduler.waiting), len(self.scheduler.running))
                    self.metrics.kv(self.blocks)
                self._flush()
            with self._cv:
                while (
                    not self._stopping
                    and not self.scheduler.has_work
                    and not self._aborts
                    and self._in_flight is None
                ):
                    self._cv.wait(timeout=1.0)
                if self._stopping:
                    break
                self._apply_aborts()
            try:
                self.step()
            except Exception as exc:  # a broken step must not kill the thread: fail what ran
                log.exception("engine step failed")
                self._in_flight = None
                with self._cv:
                    # What ran, and what was preempted while a step ran: its PENDING token is lost.
                    waiting = [s for s in self.scheduler.waiting if s.token_ids[-1] == PENDING]
                    for seq in [*self.scheduler.running, *waiting]:
                        self.scheduler.finish(seq, Finish.ABORT)
                        self.runner.release(seq)
                        self.seqs.pop(seq.request_id, None)
                        self._emit(seq, StepEvent(error=f"{type(exc).__name__}: {exc}"))
                self._flush()
        with self._cv:
            for seq in [*self.scheduler.running, *self.scheduler.waiting]:
                self.scheduler.finish(seq, Finish.ABORT)
                self._finish_event(seq, [])
        self._flush()

    def _apply_aborts(self) -> None:
        while self._aborts:
            seq = self._aborts.popleft()
            if not seq.is_finished:
                self.scheduler.finish(seq, Finish.ABORT)
                self._finish_event(seq, [])
        for seq in self.scheduler.expire():
            self._finish_event(seq, [])

    def step(self) -> int:
        """One engine step; returns how many sequences it resolved.

        Pipelined: the next step is scheduled and launched before this one's sampled tokens are
        read (its decode rows take their input ids from this step's output on the device), and
        this step's events go out while the device runs the next. The host's per-step work
        (scheduling, building inputs, events) then overlaps the device's instead of adding to it.
        A batch with penalties waits for the tokens instead: its penalty state is built from them
        on the host.
        """
        current = self._in_flight or self._launch()
        self._in_flight = None
        if current is None:
            self._flush()
            time.sleep(0.005)  # nothing fits right now (e.g. all waiting on memory); do not spin hot
            return 0
        if self.engine_config.pipelined and not any(
            seq.params.needs_penalties for seq in self.scheduler.running
        ):
            self._in_flight = self._launch()
        self._flush()
        waited = time.perf_counter()
        current.launched.wait()
        self.metrics.device_wait(time.perf_counter() - waited)
        self._resolve(current)
        if self._in_flight is not None:
            self._flush()  # the device is busy with the next step: hand this one's tokens over now
        return len(current.batch)

    def _resolve(self, current: _InFlight) -> None:
        """Read a step's tokens into its sequences and queue their events: one per sequence, with
        all its tokens of a chained step (a stop token not among them)."""
        outputs = current.launched.outputs()
        with self._cv:
            self._apply_aborts()
            pending, batch = current.pending, current.batch
            got = self.scheduler.resolve(batch, pending, [o.token for o in outputs])
            now = time.monotonic()
            # Token latencies first: finishing a request drops its latency state (`_finish_event`).
            counts = None if batch.steps == 1 else [n for _, n in got]
            self.metrics.tokens([pending[row][0] for row, _ in got], now, counts)
            rows = len(pending)
            for row, n in got:
                seq = pending[row][0]
                mine = [outputs[row]] if n == 1 else outputs[row::rows][:n]
                if seq.is_finished:
                    self._finish_event(seq, mine[:-1] if seq.stop_token_id is not None else mine)
                else:
                    self._emit(seq, StepEvent(tokens=mine))
            self.metrics.step(self.scheduler.preemptions, batch.num_tokens, now - current.started)
            self.steps += 1

    def _launch(self) -> _InFlight | None:
        """Schedule a step, queue it on the device and count its tokens as computed."""
        with self._cv:
            batch = self.scheduler.schedule()
            for seq in self.scheduler.take_ended():  # longer than the whole KV pool can hold
                self._finish_event(seq, [])
            self.metrics.queue(len(self.scheduler.waiting), len(self.scheduler.running))
            self.metrics.kv(self.blocks)
        if not batch.seqs:
            return None
        started = time.monotonic()
        launched = self.runner.launch(batch, self.blocks, self.config.eos_token_ids)
        with self._cv:
            pending = self.scheduler.advance(batch, launched.sampling)
        return _InFlight(batch, launched, pending, started)

    def _finish_event(self, seq: Sequence, tokens: list[TokenOutput]) -> None:
        self.metrics.finished(seq)
        self.runner.release(seq)
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
        """Queue an event for delivery at the next `_flush` (called with the lock held)."""
        stream = self.streams.get(seq.request_id)
        if stream is None and self.sink is None:
            return
        event.step = self.steps
        self._outbox.append((seq.request_id, stream, event))

    def _flush(self) -> None:
        """Hand the queued events over: one thread-safe call per event loop and one sink call, not one per event."""
        with self._cv:
            outbox, self._outbox = self._outbox, []
        if not outbox:
            return
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Queue[StepEvent], StepEvent]]] = {}
        wired: list[tuple[str, StepEvent]] = []
        ended: list[tuple[str, _Stream]] = []
        for request_id, stream, event in outbox:
            if stream is None:
                wired.append((request_id, event))
                continue
            by_loop.setdefault(stream.loop, []).append((stream.queue, event))
            if event.finish is not None or event.error is not None:
                ended.append((request_id, stream))
        for loop, items in by_loop.items():
            with contextlib.suppress(RuntimeError):  # RuntimeError: the event loop is gone (shutdown)
                loop.call_soon_threadsafe(_deliver, items)
        if wired and self.sink is not None:
            self.sink(wired)
        if ended:
            with self._cv:
                # After scheduling the puts: a stream gone from `streams` has had its last event
                # queued. `is stream`: the id may already belong to a new request submitted meanwhile.
                for request_id, stream in ended:
                    if self.streams.get(request_id) is stream:
                        del self.streams[request_id]

    # -- helpers -----------------------------------------------------------------------------------
    async def generate(
        self, prompt: list[int], params: SamplingParams, request_id: str, grounding: str | None = None
    ) -> list[int]:
        """All tokens of one request (warm-up, tests, the benchmark); `grounding` as in Sequence."""
        queue = self.submit(Sequence(request_id, list(prompt), params, grounding=grounding))
        tokens: list[int] = []
        while True:
            event = await queue.get()
            if event.error:
                raise Unavailable(event.error)
            tokens.extend(t.token for t in event.tokens)
            if event.finish is not None:
                return tokens

"""Prometheus metrics of the engine (served by the shared /metrics endpoint of the process)."""

from __future__ import annotations

import bisect
import time
from collections import Counter

from prometheus_client import Counter as PromCounter
from prometheus_client import Gauge, Histogram

from clawdbot.services.inference.block_manager import BlockManager
from clawdbot.services.inference.sequence import Sequence

_LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)

WAITING = Gauge("clawdbot_inference_requests_waiting", "Requests waiting for admission")
RUNNING = Gauge("clawdbot_inference_requests_running", "Requests in the running batch")
KV_USAGE = Gauge("clawdbot_inference_kv_blocks_used_ratio", "Fraction of KV cache blocks in use (0..1)")
KV_USED = Gauge("clawdbot_inference_kv_blocks_used", "KV cache blocks in use, all groups")
PREFIX_HIT_RATE = Gauge(
    "clawdbot_inference_prefix_cache_hit_rate", "Full prompt blocks found in the prefix cache / looked up"
)
PREEMPTIONS = PromCounter("clawdbot_inference_preemptions_total", "Sequences preempted (recomputed later)")
TTFT = Histogram("clawdbot_inference_time_to_first_token_seconds", "Arrival to first token", buckets=_LATENCY)
ITL = Histogram(
    "clawdbot_inference_inter_token_latency_seconds", "Time between tokens of a request", buckets=_LATENCY
)
E2E = Histogram("clawdbot_inference_e2e_latency_seconds", "Arrival to finish", buckets=_LATENCY)
PROMPT_TOKENS = PromCounter("clawdbot_inference_prompt_tokens_total", "Prompt tokens of finished requests")
GENERATION_TOKENS = PromCounter("clawdbot_inference_generation_tokens_total", "Tokens generated")
STEP_TOKENS = Histogram(
    "clawdbot_inference_step_tokens",
    "Tokens per engine step",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
)
STEP_SECONDS = Histogram("clawdbot_inference_step_seconds", "Duration of one engine step", buckets=_LATENCY)
# Its rate is the share of the engine thread's time spent waiting for the device: near 1 the device
# bounds the step rate, near 0 the host (scheduling, inputs, events) does and a faster CPU would help.
DEVICE_WAIT = PromCounter(
    "clawdbot_inference_device_wait_seconds", "Time the engine thread waited for the device to finish a step"
)


def observe_many(histogram: Histogram, value: float, count: int) -> None:
    """`count` observations of one value in one update (prometheus_client has no weighted observe;
    this writes the same sum and bucket values its `observe` would, through its unlabelled fields)."""
    buckets = getattr(histogram, "_buckets", None)
    bounds = getattr(histogram, "_upper_bounds", None)
    if buckets is None or bounds is None:
        for _ in range(count):
            histogram.observe(value)
        return
    histogram._sum.inc(value * count)
    buckets[bisect.bisect_left(bounds, value)].inc(count)


class EngineMetrics:
    """The engine's hooks into the metrics above."""

    def __init__(self) -> None:
        self._preemptions = 0
        self._previous_token: dict[str, float] = {}

    def queue(self, waiting: int, running: int) -> None:
        WAITING.set(waiting)
        RUNNING.set(running)

    def kv(self, blocks: BlockManager) -> None:
        KV_USAGE.set(blocks.usage())
        KV_USED.set(blocks.num_used())
        if blocks.cache_queries:
            PREFIX_HIT_RATE.set(blocks.cache_hits / blocks.cache_queries)

    def step(self, preemptions: int, tokens: int, seconds: float) -> None:
        if preemptions > self._preemptions:
            PREEMPTIONS.inc(preemptions - self._preemptions)
            self._preemptions = preemptions
        STEP_TOKENS.observe(tokens)
        STEP_SECONDS.observe(seconds)

    def device_wait(self, seconds: float) -> None:
        DEVICE_WAIT.inc(seconds)

    def tokens(self, seqs: list[Sequence], now: float, counts: list[int] | None = None) -> None:
        """One new token for each of `seqs` at `now` (or `counts[i]` of them: a chained step's).

        Sequences that also got a token last step share its timestamp, so their inter-token
        latencies are one value: it is observed once with a count, keeping the cost per step, not
        per token (256 `observe` calls a step were half a millisecond of the engine thread). The n
        tokens of a chained step count as n gaps of (time since the last token) / n each: the
        rate the device made them at, not the moment the host read them.
        """
        if not seqs:
            return
        GENERATION_TOKENS.inc(len(seqs) if counts is None else sum(counts))
        previous = self._previous_token
        gaps: Counter[float] = Counter()
        for i, seq in enumerate(seqs):
            n = 1 if counts is None else counts[i]
            last = previous.get(seq.request_id)
            if last is None:
                TTFT.observe(now - seq.arrival_time)
                if n > 1:
                    gaps[0.0] += n - 1
            else:
                gaps[(now - last) / n] += n
            previous[seq.request_id] = now
        for gap, count in gaps.items():
            observe_many(ITL, gap, count)

    def finished(self, seq: Sequence) -> None:
        self._previous_token.pop(seq.request_id, None)
        PROMPT_TOKENS.inc(seq.num_prompt)
        E2E.observe(time.monotonic() - seq.arrival_time)

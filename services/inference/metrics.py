"""Prometheus metrics of the engine (served by the shared /metrics endpoint of the process)."""

from __future__ import annotations

import time

from prometheus_client import Counter, Gauge, Histogram

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
PREEMPTIONS = Counter("clawdbot_inference_preemptions_total", "Sequences preempted (recomputed later)")
TTFT = Histogram("clawdbot_inference_time_to_first_token_seconds", "Arrival to first token", buckets=_LATENCY)
ITL = Histogram(
    "clawdbot_inference_inter_token_latency_seconds", "Time between tokens of a request", buckets=_LATENCY
)
E2E = Histogram("clawdbot_inference_e2e_latency_seconds", "Arrival to finish", buckets=_LATENCY)
PROMPT_TOKENS = Counter("clawdbot_inference_prompt_tokens_total", "Prompt tokens of finished requests")
GENERATION_TOKENS = Counter("clawdbot_inference_generation_tokens_total", "Tokens generated")
STEP_TOKENS = Histogram(
    "clawdbot_inference_step_tokens",
    "Tokens per engine step",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
)
STEP_SECONDS = Histogram("clawdbot_inference_step_seconds", "Duration of one engine step", buckets=_LATENCY)


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

    def token(self, seq: Sequence) -> None:
        now = time.monotonic()
        GENERATION_TOKENS.inc()
        previous = self._previous_token.get(seq.request_id)
        if previous is None:
            TTFT.observe(now - seq.arrival_time)
        else:
            ITL.observe(now - previous)
        self._previous_token[seq.request_id] = now

    def finished(self, seq: Sequence) -> None:
        self._previous_token.pop(seq.request_id, None)
        PROMPT_TOKENS.inc(seq.num_prompt)
        E2E.observe(time.monotonic() - seq.arrival_time)

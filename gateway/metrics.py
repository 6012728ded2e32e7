"""The gateway's Prometheus metrics: what an operator of a chat edge watches.

Requests by route and status, time to first token, inter-token latency, tokens in and out and
the number of streams open right now. They live in the default registry next to the shared
gRPC metrics, and `/metrics` serves them all.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

HTTP_REQUESTS = Counter(
    "clawdbot_gateway_http_requests_total", "HTTP requests by route and status", ["route", "method", "status"]
)
HTTP_LATENCY = Histogram(
    "clawdbot_gateway_http_latency_seconds",
    "HTTP request duration (the whole stream for SSE)",
    ["route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
TTFT = Histogram(
    "clawdbot_gateway_time_to_first_token_seconds",
    "From the turn's start to its first content delta",
    ["api"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32),
)
INTER_TOKEN = Histogram(
    "clawdbot_gateway_inter_token_latency_seconds",
    "Time between consecutive content deltas of one reply",
    ["api"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2),
)
TOKENS = Counter("clawdbot_gateway_tokens_total", "Prompt and completion tokens", ["kind"])
ACTIVE_STREAMS = Gauge("clawdbot_gateway_active_streams", "Replies streaming right now", ["api"])
REPLIES_REPLACED = Counter(
    "clawdbot_gateway_replies_replaced_total",
    "Model replies that failed verification and were replaced by the extractive answer",
    ["reason"],
)
TURNS = Counter("clawdbot_gateway_turns_total", "Chat turns by how they ended", ["api", "finish_reason"])

"""Prometheus metrics every service exposes, and the endpoint that serves them."""

from __future__ import annotations

import threading

from prometheus_client import REGISTRY, Counter, Histogram, start_http_server

RPC_REQUESTS = Counter(
    "clawdbot_rpc_requests_total",
    "gRPC calls handled, by method and status code",
    ["service", "method", "code"],
)
RPC_LATENCY = Histogram(
    "clawdbot_rpc_latency_seconds",
    "gRPC call duration (whole stream for streaming calls)",
    ["service", "method"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)

_started: set[int] = set()
_lock = threading.Lock()


def start_metrics_endpoint(port: int, host: str = "127.0.0.1") -> None:
    """Serve /metrics on host:port from a daemon thread (once per port per process)."""
    with _lock:
        if port in _started:
            return
        start_http_server(port, addr=host, registry=REGISTRY)
        _started.add(port)

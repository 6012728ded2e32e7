"""What the memory service counts and traces, beyond the per-RPC metrics every service has.

`observe(op, store)` wraps one store operation in a span (tenant and backend as attributes) and
records its latency and outcome; the counters below say how much conversation moved.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import Counter, Gauge, Histogram

from clawdbot.shared.errors import ClawdbotError
from clawdbot.shared.telemetry import tracer

OPERATIONS = Counter(
    "clawdbot_memory_operations_total",
    "Store operations by name, backend and outcome (ok or the error code)",
    ["op", "backend", "outcome"],
)
LATENCY = Histogram(
    "clawdbot_memory_operation_seconds",
    "Store operation latency",
    ["op", "backend"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
SESSIONS_TOUCHED = Counter(
    "clawdbot_memory_sessions_touched_total", "Sessions read or written, by operation", ["op", "backend"]
)
MESSAGES = Counter(
    "clawdbot_memory_messages_total",
    "Messages by what an append did with them: appended, duplicate (retry) or trimmed",
    ["backend", "result"],
)
CONTEXT_TOKENS = Histogram(
    "clawdbot_memory_context_tokens",
    "Tokens returned by GetContext",
    buckets=(64, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768),
)
STORE_UP = Gauge(
    "clawdbot_memory_store_up", "1 while the store answers the health watcher's ping", ["backend"]
)

_tracer = tracer("clawdbot.memory")


@contextmanager
def observe(op: str, backend: str, tenant: str = "", *, one_session: bool = True) -> Iterator[None]:
    """Span + latency + outcome of one operation; `one_session` counts a session touched on success."""
    started = time.perf_counter()
    outcome = "ok"
    with _tracer.start_as_current_span(
        f"memory.{op}", attributes={"memory.backend": backend, "memory.tenant": tenant}
    ):
        try:
            yield
        except ClawdbotError as exc:
            outcome = exc.code.name
            raise
        except Exception:
            outcome = "INTERNAL"
            raise
        finally:
            OPERATIONS.labels(op, backend, outcome).inc()
            LATENCY.labels(op, backend).observe(time.perf_counter() - started)
    if one_session:
        SESSIONS_TOUCHED.labels(op, backend).inc()

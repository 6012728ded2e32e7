"""The event loop a service process runs on: uvloop unless its settings say `asyncio`.

Every service is one event loop doing many small things per call (grpc aio's callbacks, futures,
timers, socket writes); uvloop runs the same asyncio programs with a loop written in C over libuv.
Measured on the inference service under a burst of 256 Generate calls from one client (H100 host,
`bench/grpc_ttft_parts.py`, docs/perf.md): the time from the client's call to the servicer's
first line fell from 111-149 ms to 67-89 ms (p50s of five bursts). `asyncio` stays for debugging
(asyncio's debug mode, tools that expect its loop) and as the fallback where uvloop is absent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, Literal, TypeVar

T = TypeVar("T")
EventLoopKind = Literal["uvloop", "asyncio"]


def loop_factory(kind: EventLoopKind) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """What `asyncio.Runner` builds its loop with (None: asyncio's own)."""
    if kind == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:  # a platform without uvloop wheels: asyncio does the same work, slower
        return None
    return uvloop.new_event_loop


def run(main: Coroutine[Any, Any, T], kind: EventLoopKind = "uvloop") -> T:
    """`asyncio.run(main)` on the loop `kind` names."""
    with asyncio.Runner(loop_factory=loop_factory(kind)) as runner:
        return runner.run(main)

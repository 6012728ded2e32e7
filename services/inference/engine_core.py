"""The engine core process: the model, the KV cache and the step loop, with nothing else on its GIL.

Started by the inference service (`engine_client.EngineClient`) as
`python -m clawdbot.services.inference.engine_core FD`, FD being its end of a socket pair. In one
process with the gRPC server, the server's Python (~65 us a message: protobuf, grpc aio,
interceptors) and the step loop took turns on one GIL, and at 256 streams each step waited for the
other's work (docs/perf.md). Here the step loop has a process to itself; the gRPC process only turns
frames into messages.

The core ignores SIGINT/SIGTERM: its parent stops it by closing the socket (after draining its
streams), and a parent that dies without closing it closes it all the same, so the core never
outlives the service.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable

from prometheus_client import REGISTRY, generate_latest

from clawdbot.services.inference.builder import build_engine, engine_limits, warm_up
from clawdbot.services.inference.engine import Engine
from clawdbot.services.inference.events import StepEvent
from clawdbot.services.inference.sequence import Sequence
from clawdbot.services.inference.settings import InferenceSettings
from clawdbot.services.inference.wire import (
    Abort,
    Add,
    BlockingChannel,
    Events,
    Failed,
    Metrics,
    MetricsQuery,
    Ready,
    Start,
)
from clawdbot.shared.errors import ClawdbotError
from clawdbot.shared.logs import configure_logging

log = logging.getLogger("clawdbot.inference.core")


def serve(engine: Engine, channel: BlockingChannel) -> None:
    """Apply the gRPC process's frames until it closes the socket."""
    while (message := channel.receive()) is not None:
        if isinstance(message, Add):
            seq = Sequence(
                message.request_id,
                message.token_ids,
                message.params,
                priority=message.priority,
                deadline=message.deadline,
                arrival_time=message.arrival_time,
                grounding=message.grounding,
            )
            try:
                engine.add(seq)
            except ClawdbotError as exc:  # full waiting queue, duplicate id: that request's answer
                refusal = StepEvent(error=exc.message, error_code=exc.code.name)
                channel.send(Events([(message.request_id, refusal)]))
        elif isinstance(message, Abort):
            engine.abort(message.request_id)
        elif isinstance(message, MetricsQuery):
            channel.send(Metrics(message.ask, generate_latest(REGISTRY).decode()))


def _sender(channel: BlockingChannel) -> Callable[[list[tuple[str, StepEvent]]], None]:
    """The engine's sink: one frame a step. A closed socket means the gRPC process is gone (the core
    is about to stop): the events have no one to go to, and the step loop must not die of it. Any
    other failure leaves requests that would never end: the core exits, and its parent starts a new
    one (their streams end UNAVAILABLE there)."""

    def send(items: list[tuple[str, StepEvent]]) -> None:
        try:
            channel.send(Events(items))
        except OSError:
            pass
        except Exception:
            log.exception("cannot send a step's events; the engine core exits")
            os._exit(1)

    return send


def _crashed() -> None:
    log.error("the engine loop died; the engine core exits")
    os._exit(1)


def run(channel: BlockingChannel) -> int:
    start = channel.receive()
    if not isinstance(start, Start):
        return 2
    try:
        settings = InferenceSettings.model_validate_json(start.settings_json)
        configure_logging("inference-core", settings.log_level, settings.log_format)
        engine, info = build_engine(settings)
        engine.on_crash = _crashed
        engine.start()
        asyncio.run(warm_up(engine))
    except Exception as exc:
        log.exception("engine core failed to start")
        channel.send(Failed(f"{type(exc).__name__}: {exc}"))
        return 1
    engine.sink = _sender(channel)
    channel.send(Ready(info.SerializeToString(), engine.config, engine_limits(engine)))
    log.info("engine core ready", extra={"kv_blocks": engine.num_blocks, "device": str(engine.device)})
    try:
        serve(engine, channel)
    finally:
        engine.stop()
    log.info("engine core stopped")
    return 0


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    channel = BlockingChannel(socket.socket(fileno=int(sys.argv[1])))
    try:
        code = run(channel)
    except (BrokenPipeError, ConnectionResetError):  # the gRPC process is gone: nothing to answer
        code = 0
    finally:
        channel.close()
    sys.exit(code)


if __name__ == "__main__":
    main()

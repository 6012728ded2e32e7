"""The engine as the gRPC process sees it when the engine runs in its own process (`engine_core.py`).

`EngineClient` offers what the servicer uses of an in-process `Engine` (`submit`, `abort`,
`config`), so the servicer does not know which one it has. Requests go to the core as frames; each
step's events come back in one frame, and one reader task on the event loop puts them on the
requests' asyncio queues: no thread, no lock, no self-pipe write per step on this side.

Nothing here imports torch: the gRPC process holds no model.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import socket
import sys
from collections.abc import Callable, Iterator

from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from clawdbot.services.inference.config import ModelConfig
from clawdbot.services.inference.events import StepEvent
from clawdbot.services.inference.sequence import Sequence
from clawdbot.services.inference.settings import InferenceSettings
from clawdbot.services.inference.validation import Limits
from clawdbot.services.inference.wire import (
    Abort,
    Add,
    AsyncChannel,
    Events,
    Failed,
    Metrics,
    MetricsQuery,
    Ready,
    Start,
)
from clawdbot.shared.errors import AlreadyExists, Unavailable
from clawdbot.v1 import inference_pb2

log = logging.getLogger("clawdbot.inference.client")
ENGINE_METRICS_PREFIX = "clawdbot_inference_"


class EngineStartError(RuntimeError):
    """The core exited or reported a failure before it was ready."""


class EngineClient:
    """One engine core process and the requests this process has sent it."""

    def __init__(
        self,
        process: asyncio.subprocess.Process,
        channel: AsyncChannel,
        ready: Ready,
        on_exit: Callable[[int], None] | None,
    ) -> None:
        self.process = process
        self.config: ModelConfig = ready.config
        self.limits: Limits = ready.limits
        self.info = inference_pb2.ModelInfoResponse.FromString(ready.info)
        self._channel = channel
        self._on_exit = on_exit
        self._queues: dict[str, asyncio.Queue[StepEvent]] = {}
        self._metric_answers: dict[int, asyncio.Future[str]] = {}
        self._asks = itertools.count()
        self._stopping = False
        self.closed = False
        self.loop = asyncio.get_running_loop()
        self._reader = asyncio.create_task(self._read(), name="engine-core-reader")

    @classmethod
    async def spawn(
        cls,
        settings: InferenceSettings,
        on_exit: Callable[[int], None] | None = None,
        timeout: float | None = None,
    ) -> EngineClient:
        """Start a core, hand it the settings, and wait until its model is loaded and warmed.

        `on_exit(code)` is called if the core later exits while this client is not stopping it.
        `timeout` bounds the wait for the core to be ready (None: `settings.engine_start_timeout_s`).
        The core gets a session of its own: a Ctrl-C or SIGTERM sent to the service's process
        group reaches only the service, which drains its streams and then stops the core.
        """
        ours, theirs = socket.socketpair()
        channel: AsyncChannel | None = None
        process: asyncio.subprocess.Process | None = None
        try:
            try:
                process = await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "clawdbot.services.inference.engine_core",
                    str(theirs.fileno()),
                    pass_fds=(theirs.fileno(),),
                    start_new_session=True,
                )
            finally:
                theirs.close()
            channel = await AsyncChannel.open(ours)
            channel.send(Start(settings.model_dump_json()))
            limit = settings.engine_start_timeout_s if timeout is None else timeout
            try:
                answer = await asyncio.wait_for(channel.receive(), limit)
            except TimeoutError:
                raise EngineStartError(f"the engine core was not ready after {limit:.0f} s") from None
            if isinstance(answer, Ready):
                return cls(process, channel, answer, on_exit)
            if isinstance(answer, Failed):
                raise EngineStartError(f"the engine core failed to start: {answer.message}")
            code = await process.wait()
            raise EngineStartError(f"the engine core exited with code {code} before it was ready")
        except BaseException:
            if channel is not None:
                channel.close()
            else:
                ours.close()
            if process is not None:
                await _kill(process)
            raise

    # -- what the servicer uses ------------------------------------------------------------------
    def submit(self, seq: Sequence) -> asyncio.Queue[StepEvent]:
        """Send a request to the core; its events arrive on the returned queue.

        A full waiting queue in the core comes back as the request's first event (`error_code`
        RESOURCE_EXHAUSTED): the core alone knows how many wait.
        """
        if self.closed or self._stopping:
            raise Unavailable("the engine is not running")
        if seq.request_id in self._queues:
            raise AlreadyExists("a request with this id is running", field="request_id")
        queue: asyncio.Queue[StepEvent] = asyncio.Queue()
        self._queues[seq.request_id] = queue
        self._channel.send(
            Add(
                seq.request_id,
                seq.token_ids,
                seq.params,
                seq.priority,
                seq.deadline,
                seq.arrival_time,
                seq.grounding,
            )
        )
        return queue

    def abort(self, request_id: str) -> None:
        """End a request at the core's next step boundary (its blocks are freed there)."""
        if request_id in self._queues and not self._stopping:
            self._channel.send(Abort(request_id))

    async def metrics_text(self, timeout: float = 2.0) -> str:
        """The core's Prometheus exposition, asked for now."""
        if self.closed:
            raise Unavailable("the engine is not running")
        ask = next(self._asks)
        answer = self.loop.create_future()
        self._metric_answers[ask] = answer
        self._channel.send(MetricsQuery(ask))
        try:
            return await asyncio.wait_for(answer, timeout)
        finally:
            self._metric_answers.pop(ask, None)

    # -- lifecycle -------------------------------------------------------------------------------
    async def stop(self, timeout: float = 30.0) -> int:
        """Close our end of the socket (the core aborts what still runs and exits); returns its exit code."""
        self._stopping = True
        self._channel.close_write()
        # A reader that failed has logged why where it happened; a slow one is waited for no longer.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.shield(self._reader), timeout)
        try:
            return await asyncio.wait_for(self.process.wait(), timeout)
        except TimeoutError:
            log.warning("the engine core did not exit in time; killing it")
            return await _kill(self.process)
        finally:
            self._channel.close()

    async def _read(self) -> None:
        try:
            await self._deliver_frames()
        except Exception:
            # Frames we cannot apply (a core of another version, a bug): the requests they carried
            # would never end. Stop the core; its exit ends them all and starts a new one.
            log.exception("cannot apply the engine core's frames; stopping it")
            await _kill(self.process)
        finally:
            await self._gone()

    async def _deliver_frames(self) -> None:
        queues = self._queues
        while (message := await self._channel.receive()) is not None:
            if isinstance(message, Events):
                for request_id, event in message.items:
                    queue = queues.get(request_id)
                    if queue is None:
                        continue
                    queue.put_nowait(event)
                    if event.finish is not None or event.error is not None:
                        del queues[request_id]
            elif isinstance(message, Metrics):
                answer = self._metric_answers.get(message.ask)
                if answer is not None and not answer.done():
                    answer.set_result(message.text)

    async def _gone(self) -> None:
        """The core closed its end: it stopped (we asked) or died (we did not)."""
        self.closed = True
        self._channel.close()
        code = await self.process.wait()
        reason = f"the engine process exited with code {code}"
        for queue in self._queues.values():
            queue.put_nowait(StepEvent(error=reason))
        self._queues.clear()
        for answer in self._metric_answers.values():
            if not answer.done():
                answer.set_exception(Unavailable(reason))
        if not self._stopping:
            log.error("engine core exited", extra={"exit_code": code})
            if self._on_exit is not None:
                self._on_exit(code)


async def _kill(process: asyncio.subprocess.Process) -> int:
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
    return await process.wait()


class CoreMetricsCollector:
    """Shows the core's `clawdbot_inference_*` metrics on this process's /metrics.

    Scrapes are rare (seconds apart) and the core's registry is the one source of truth, so each
    scrape asks the core for its exposition rather than streaming every update across.
    """

    def __init__(self, client: EngineClient) -> None:
        self.client = client

    def describe(self) -> list[Metric]:
        return []  # nothing fixed to check for clashes: the families come from the core at each scrape

    def collect(self) -> Iterator[Metric]:
        loop = self.client.loop
        if self.client.closed or _on_loop_thread(loop):
            return  # waiting on our own event loop from inside it would deadlock
        try:
            text = asyncio.run_coroutine_threadsafe(self.client.metrics_text(), loop).result(3.0)
        except Exception:  # the core is restarting or gone: the scrape shows this process's own metrics
            log.warning("engine core metrics unavailable", exc_info=True)
            return
        for family in text_string_to_metric_families(text):
            if family.name.startswith(ENGINE_METRICS_PREFIX):
                yield family


def _on_loop_thread(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:  # no loop runs in this thread
        return False

"""The protocol between the gRPC process and the engine core process: typed frames over one socket.

Each frame is a 4-byte little-endian length and a MessagePack body that decodes into one of the
tagged structs below. The gRPC process sends `Start` once, then `Add` / `Abort` / `MetricsQuery`;
the core answers `Ready` (or `Failed`) once, then one `Events` frame per engine step carrying
every request's events of that step, and `Metrics` for each query.

One socket and length-prefixed frames are all this needs: one peer on each side, messages in order,
and EOF as the signal that the other side is gone (no broker, no extra dependency).
"""

from __future__ import annotations

import asyncio
import socket
import struct
import threading

import msgspec

from clawdbot.services.inference.config import ModelConfig
from clawdbot.services.inference.events import StepEvent
from clawdbot.services.inference.sequence import SamplingParams
from clawdbot.services.inference.validation import Limits

_HEADER = struct.Struct("<I")
MAX_FRAME = 1 << 30


class Start(msgspec.Struct, tag=True, array_like=True):
    settings_json: str  # InferenceSettings, as pydantic writes it


class Ready(msgspec.Struct, tag=True, array_like=True):
    info: bytes  # a serialized inference_pb2.ModelInfoResponse
    config: ModelConfig
    limits: Limits


class Failed(msgspec.Struct, tag=True, array_like=True):
    message: str


class Add(msgspec.Struct, tag=True, array_like=True):
    request_id: str
    token_ids: list[int]
    params: SamplingParams
    priority: int
    deadline: float | None  # time.monotonic(): one clock for every process of the machine
    arrival_time: float
    grounding: str | None = None  # the grounding text; the core makes its trie


class Abort(msgspec.Struct, tag=True, array_like=True):
    request_id: str


class Events(msgspec.Struct, tag=True, array_like=True):
    items: list[tuple[str, StepEvent]]


class MetricsQuery(msgspec.Struct, tag=True, array_like=True):
    ask: int


class Metrics(msgspec.Struct, tag=True, array_like=True):
    ask: int
    text: str  # the core's Prometheus exposition


ToCore = Start | Add | Abort | MetricsQuery
FromCore = Ready | Failed | Events | Metrics

_encoder = msgspec.msgpack.Encoder()


def frame(message: ToCore | FromCore) -> bytes:
    body = _encoder.encode(message)
    return _HEADER.pack(len(body)) + body


class BlockingChannel:
    """The core's end: blocking reads on one thread, writes from any thread (one lock)."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._file = sock.makefile("rb")
        self._decoder = msgspec.msgpack.Decoder(ToCore)
        self._lock = threading.Lock()

    def receive(self) -> ToCore | None:
        """The next frame, or None when the other side has closed its end."""
        header = self._file.read(_HEADER.size)
        if len(header) < _HEADER.size:
            return None
        (size,) = _HEADER.unpack(header)
        body = self._file.read(size)
        if len(body) < size:
            return None
        return self._decoder.decode(body)

    def send(self, message: FromCore) -> None:
        data = frame(message)
        with self._lock:
            self._sock.sendall(data)

    def close(self) -> None:
        self._file.close()
        self._sock.close()


class AsyncChannel:
    """The gRPC process's end, on its event loop."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._decoder = msgspec.msgpack.Decoder(FromCore)
        self._eof_sent = False

    @classmethod
    async def open(cls, sock: socket.socket) -> AsyncChannel:
        reader, writer = await asyncio.open_unix_connection(sock=sock, limit=MAX_FRAME)
        return cls(reader, writer)

    async def receive(self) -> FromCore | None:
        """The next frame, or None when the core has closed its end (or died)."""
        try:
            (size,) = _HEADER.unpack(await self._reader.readexactly(_HEADER.size))
            return self._decoder.decode(await self._reader.readexactly(size))
        except (asyncio.IncompleteReadError, ConnectionError):
            return None

    def send(self, message: ToCore) -> None:
        """Buffered by the transport; frames to the core are small and rare next to the events back.
        After `close_write` or `close` there is no one to tell: nothing is sent."""
        if not self._eof_sent and not self._writer.is_closing():
            self._writer.write(frame(message))

    def close_write(self) -> None:
        """Half-close: the core sees EOF (and stops) while its last events can still come back."""
        if not self._eof_sent and not self._writer.is_closing() and self._writer.can_write_eof():
            self._writer.write_eof()
        self._eof_sent = True

    def close(self) -> None:
        self._writer.close()

"""free_port hands out listening ports outside the kernel's ephemeral range, each bindable."""

from __future__ import annotations

import socket

from clawdbot.shared.processes import LISTEN_PORTS, free_port


def test_free_ports_are_bindable_and_below_the_ephemeral_range() -> None:
    held: list[socket.socket] = []
    try:
        for _ in range(20):
            port = free_port()
            assert port in LISTEN_PORTS
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", port))  # raises if the port was not free
            held.append(sock)
        assert len({s.getsockname()[1] for s in held}) == 20  # ports held open are never handed out
    finally:
        for sock in held:
            sock.close()

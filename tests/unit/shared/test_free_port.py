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


def test_a_process_never_gets_the_same_port_twice() -> None:
    """A mesh's plan draws a dozen ports before binding any; a repeated draw (about 0.5% of plans)
    made two services share a port and one of them fail to start in CI. 2,000 draws, none bound:
    without the rule some 150 would repeat."""
    ports = [free_port() for _ in range(2000)]
    assert len(set(ports)) == len(ports)

"""Outbound HTTP for tools, only to allowed hosts and never, unless allowed, to private addresses.

Every hop is checked: the first URL and each redirect's target must name an allowed host, and
the addresses a name resolves to are checked inside the connector's resolver, so the address
checked is the address connected to (a DNS answer cannot change between check and connect).
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class Refused(Exception):
    """The request would leave the allowed set of hosts or addresses."""


class BlockedAddress(OSError):
    """A name resolved only to addresses the plugin may not reach."""


def address_allowed(ip: IPAddress, private_ok: list[IPNetwork]) -> bool:
    """Public addresses are allowed; private, loopback, link-local and the like only when listed."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if any(ip.version == net.version and ip in net for net in private_ok):
        return True
    return ip.is_global and not ip.is_multicast


class GuardedResolver(AbstractResolver):
    def __init__(self, private_ok: list[IPNetwork]) -> None:
        self.inner = aiohttp.ThreadedResolver()
        self.private_ok = private_ok

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self.inner.resolve(host, port, family)
        allowed = [r for r in results if address_allowed(ipaddress.ip_address(r["host"]), self.private_ok)]
        if not allowed:
            raise BlockedAddress(f"{host} resolves only to private or reserved addresses")
        return allowed

    async def close(self) -> None:
        await self.inner.close()


@dataclass
class HttpResult:
    status: int
    content_type: str
    body: str
    url: str


class GuardedClient:
    """An aiohttp session that follows redirects itself, checking every hop."""

    def __init__(
        self,
        allowed_hosts: list[str],
        private_ok: list[IPNetwork],
        max_redirects: int = 3,
        max_response_bytes: int = 256 * 1024,
    ) -> None:
        self.allowed_hosts = {h.lower().rstrip(".") for h in allowed_hosts}
        self.private_ok = private_ok
        self.max_redirects = max_redirects
        self.max_response_bytes = max_response_bytes
        self._session: aiohttp.ClientSession | None = None

    def check_url(self, url: URL) -> None:
        if url.scheme not in ("http", "https"):
            raise Refused(f"scheme {url.scheme!r} is not allowed (http, https)")
        host = (url.host or "").lower().rstrip(".")
        if host not in self.allowed_hosts:
            raise Refused(f"host {host!r} is not on the allow-list")
        try:
            literal: IPAddress | None = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            literal = None
        if literal is not None and not address_allowed(literal, self.private_ok):
            raise Refused(f"address {host} is private or reserved")

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(resolver=GuardedResolver(self.private_ok), use_dns_cache=False)
            self._session = aiohttp.ClientSession(connector=connector, trust_env=False)
        return self._session

    async def request(
        self,
        method: str,
        url: str,
        *,
        params: dict[str, Any] | None = None,
        json_body: Any = None,
        headers: dict[str, str] | None = None,
        timeout: float = 10.0,
    ) -> HttpResult:
        target = URL(url)
        for _hop in range(self.max_redirects + 1):
            self.check_url(target)
            try:
                async with self.session().request(
                    method,
                    target,
                    params=params,
                    json=json_body,
                    headers=headers,
                    allow_redirects=False,
                    timeout=aiohttp.ClientTimeout(total=timeout),
                ) as response:
                    if response.status in (301, 302, 303, 307, 308) and "Location" in response.headers:
                        target = response.url.join(URL(response.headers["Location"]))
                        params = None
                        if response.status == 303 or (response.status in (301, 302) and method != "GET"):
                            method, json_body = "GET", None
                        continue
                    body = bytearray()
                    async for chunk in response.content.iter_chunked(64 * 1024):
                        body += chunk
                        if len(body) > self.max_response_bytes:
                            raise Refused(f"response is larger than {self.max_response_bytes} bytes")
                    return HttpResult(
                        response.status,
                        response.content_type,
                        bytes(body).decode(response.charset or "utf-8", "replace"),
                        str(response.url),
                    )
            except aiohttp.ClientConnectorError as exc:
                if isinstance(exc.os_error, BlockedAddress):
                    raise Refused(str(exc.os_error)) from exc
                raise
        raise Refused(f"more than {self.max_redirects} redirects")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

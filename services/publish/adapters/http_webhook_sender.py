"""Webhook deliveries over HTTP (httpx), and DNS resolution of target hosts.

DNS rebinding: checking a host's addresses and then letting the HTTP client resolve it again to connect
leaves a window in which the name can start answering 127.0.0.1 (or a private address). The sender closes
it by resolving and checking in the connection itself: ``PublicAddressBackend`` is the httpcore network
backend of the sender's connection pool; it resolves the host with the same resolver, refuses the
connection unless every address is allowed (``check_target_addresses``), and connects to a checked IP.
httpcore still sends the URL's hostname in the Host header and as the TLS server name (SNI) and checks the
certificate against it, since those come from the request's origin, not from the connected address."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterable

import httpcore
import httpx

from services.publish.domain.webhooks import AttemptResult, TargetRefused, check_target_addresses
from services.publish.service_layer.ports import AddressResolver

SocketOptions = Iterable[tuple[int, int, int] | tuple[int, int, bytes | bytearray] | tuple[int, int, None, int]]


class PublicAddressBackend(httpcore.AsyncNetworkBackend):
    """An httpcore network backend that connects only to addresses it has just checked (see module doc)."""

    def __init__(
        self, resolver: AddressResolver, allow_private: bool, inner: httpcore.AsyncNetworkBackend | None = None
    ) -> None:
        self._resolver = resolver
        self._allow_private = allow_private
        self._inner = inner or httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: SocketOptions | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            addresses = await asyncio.wait_for(self._resolver.resolve(host, port), timeout)
        except TimeoutError as exc:
            raise httpcore.ConnectTimeout(f"resolving {host} timed out") from exc
        except OSError as exc:
            raise httpcore.ConnectError(f"{host} does not resolve ({exc.strerror or exc})") from exc
        try:
            check_target_addresses(addresses, self._allow_private)
        except TargetRefused as refused:
            raise httpcore.ConnectError(f"target refused: {refused}") from refused
        last: Exception | None = None
        for address in addresses:  # every one was checked above
            try:
                return await self._inner.connect_tcp(address, port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as error:
                last = error
        assert last is not None  # check_target_addresses refuses an empty list
        raise last

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: SocketOptions | None = None
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("webhook targets are TCP hosts, not Unix sockets")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class CheckedTransport(httpx.AsyncHTTPTransport):
    """httpx's own transport, with its connection pool's network backend replaced by ``backend`` (httpx
    0.28 has no public parameter for it; encode/httpx#3749 proposes one). Proxies are never used."""

    def __init__(self, backend: httpcore.AsyncNetworkBackend, limits: httpx.Limits | None = None) -> None:
        limits = limits or httpx.Limits(max_connections=100, max_keepalive_connections=20)
        super().__init__(trust_env=False, limits=limits)
        assert isinstance(self._pool, httpcore.AsyncConnectionPool), "httpx changed how it builds its pool"
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(trust_env=False),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=backend,
        )


class HttpxWebhookSender:
    """POSTs one delivery; never raises for a network failure (it is an attempt result). Redirects are not
    followed: a receiver that moved must be re-registered, so a redirect cannot point deliveries elsewhere.
    Connections go only to addresses checked when connecting (``PublicAddressBackend``)."""

    def __init__(self, timeout_seconds: float, resolver: AddressResolver, allow_private: bool) -> None:
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout_seconds),
            follow_redirects=False,
            trust_env=False,
            transport=CheckedTransport(PublicAddressBackend(resolver, allow_private)),
        )

    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> AttemptResult:
        try:
            response = await self._client.post(url, content=body, headers=headers)
        except httpx.HTTPError as error:
            return AttemptResult(None, f"{type(error).__name__}: {error}"[:500] or type(error).__name__)
        failure = None if 200 <= response.status_code < 300 else f"HTTP {response.status_code}"
        return AttemptResult(response.status_code, failure)

    async def close(self) -> None:
        await self._client.aclose()


class SystemResolver:
    async def resolve(self, host: str, port: int) -> list[str]:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        return sorted({str(info[4][0]) for info in infos})

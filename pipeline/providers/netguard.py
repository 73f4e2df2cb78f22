"""Where a provider-supplied URL may lead: public addresses only, checked on the address actually dialled.

A result URL (and every redirect hop, and fal's CDN) comes from a provider's reply, so a hostile provider,
a proxy or a compromised CDN could point us at an internal service (SSRF). The policy is pure:

- `address_refusal(ip)`: why an address is not public (loopback, private, link-local, CGNAT, multicast,
  reserved, documentation...; IPv6 forms that carry an IPv4 address are judged by that address), or None.
- `connect_refusal(host, port, addresses, allowed_loopback)`: the same for a host and what it resolved to.
  The one exception: an origin in `allowed_loopback` (a provider whose configured base URL is itself
  loopback: the emulator, a local gateway) may be loopback, and only that exact host and port.

The executor is `GuardedBackend`, an httpcore network backend: it resolves the name once, applies the
policy to every address, and connects to a checked address. There is no second lookup for a rebinding DNS
server to answer differently, and TLS still verifies the certificate against the name (httpcore sends the
URL's host as SNI and in Host, whatever address the socket uses). It also clamps every connect, read and
write to an overall deadline, so a server dripping a byte every few seconds is cut off on time.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
import time
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from typing import Any

import httpcore
import httpx

from ..errors import ValidationError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Origin = tuple[str, int]  # (host as in the URL, lower case, no brackets; port)
Resolver = Callable[[str, int], list[str]]

DEFAULT_PORTS = {"http": 80, "https": 443}
LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain"})

_REFUSED_V4: tuple[tuple[ipaddress.IPv4Network, str], ...] = tuple(
    (ipaddress.IPv4Network(net), why)
    for net, why in (
        ("0.0.0.0/8", "unspecified ('this network')"),
        ("10.0.0.0/8", "private"),
        ("100.64.0.0/10", "shared carrier-grade NAT (CGNAT)"),
        ("127.0.0.0/8", "loopback"),
        ("169.254.0.0/16", "link-local (cloud metadata lives here)"),
        ("172.16.0.0/12", "private"),
        ("192.0.0.0/24", "IETF protocol assignments"),
        ("192.0.2.0/24", "documentation"),
        ("192.88.99.0/24", "6to4 relay anycast"),
        ("192.168.0.0/16", "private"),
        ("198.18.0.0/15", "benchmarking"),
        ("198.51.100.0/24", "documentation"),
        ("203.0.113.0/24", "documentation"),
        ("224.0.0.0/4", "multicast"),
        ("240.0.0.0/4", "reserved (and broadcast)"),
    )
)
_REFUSED_V6: tuple[tuple[ipaddress.IPv6Network, str], ...] = tuple(
    (ipaddress.IPv6Network(net), why)
    for net, why in (
        ("::/128", "unspecified"),
        ("::1/128", "loopback"),
        ("::/96", "deprecated IPv4-compatible form"),
        ("64:ff9b:1::/48", "local-use NAT64"),
        ("100::/64", "discard-only"),
        ("2001::/32", "Teredo tunnel"),
        ("2001:db8::/32", "documentation"),
        ("2001:10::/28", "ORCHID"),
        ("fc00::/7", "unique local (private)"),
        ("fe80::/10", "link-local"),
        ("fec0::/10", "site-local (deprecated)"),
        ("ff00::/8", "multicast"),
    )
)
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def embedded_ipv4(ip: ipaddress.IPv6Address) -> tuple[str, ipaddress.IPv4Address] | None:
    """The IPv4 address an IPv6 form carries and reaches (mapped, 6to4, well-known NAT64), with its name."""
    if ip.ipv4_mapped is not None:
        return "IPv4-mapped", ip.ipv4_mapped
    if ip.sixtofour is not None:
        return "6to4", ip.sixtofour
    if ip in _NAT64:
        return "NAT64", ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def address_refusal(ip: IPAddress) -> str | None:
    """Why `ip` is not a public address we may fetch from, or None when it is."""
    if isinstance(ip, ipaddress.IPv6Address):
        carried = embedded_ipv4(ip)
        if carried is not None:
            form, v4 = carried
            inner = address_refusal(v4)
            return f"{form} form of {v4}, which is {inner}" if inner else None
    table = _REFUSED_V4 if isinstance(ip, ipaddress.IPv4Address) else _REFUSED_V6
    for net, why in table:
        if ip in net:
            return why
    if not ip.is_global:
        return "not globally routable"
    return None


def normal_host(host: str) -> str:
    return host.strip("[]").lower().rstrip(".")


def parse_ip(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(normal_host(host))
    except ValueError:
        return None


def url_origin(url: str | httpx.URL) -> Origin:
    parsed = httpx.URL(url) if isinstance(url, str) else url
    return normal_host(parsed.host), parsed.port or DEFAULT_PORTS.get(parsed.scheme, 0)


def is_loopback_host(host: str) -> bool:
    """A loopback literal or a loopback name (the configured emulator, a local gateway)."""
    ip = parse_ip(host)
    return normal_host(host) in LOOPBACK_NAMES if ip is None else ip.is_loopback


def loopback_origins(urls: Iterable[str]) -> frozenset[Origin]:
    """The origins of those `urls` that are on loopback: the only loopback places a provider may send us."""
    return frozenset(origin for origin in map(url_origin, urls) if is_loopback_host(origin[0]))


def connect_refusal(
    host: str, port: int, addresses: Collection[str], allowed_loopback: Collection[Origin] = ()
) -> str | None:
    """Why connecting to `host`:`port`, which resolved to `addresses`, is refused; None when it is allowed.
    Every address must pass (a name answering one public and one private address is refused)."""
    if not addresses:
        return f"{host} resolved to no address"
    loopback_ok = (normal_host(host), port) in allowed_loopback
    for text in addresses:
        ip = parse_ip(text)
        if ip is None:
            return f"{host} resolved to {text!r}, not an IP address"
        why = address_refusal(ip)
        if why is not None and not (loopback_ok and ip.is_loopback):
            shown = host if normal_host(host) == normal_host(text) else f"{host} ({text})"
            return f"{shown} is {why}"
    return None


class BlockedAddress(ValidationError):
    """A provider-supplied URL leads to an address that is not public (refused before any connection)."""


def system_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]).split("%")[0] for info in infos))


def resolve_checked(host: str, port: int, allowed_loopback: Collection[Origin], resolver: Resolver) -> list[str]:
    """The addresses to dial for `host` (one lookup; an IP literal is not looked up); BlockedAddress if any is
    refused."""
    literal = parse_ip(host)
    if literal is not None:
        addresses = [str(literal)]
    else:
        try:
            addresses = resolver(normal_host(host), port)
        except OSError as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from exc
    why = connect_refusal(host, port, addresses, allowed_loopback)
    if why is not None:
        raise BlockedAddress(f"refused to connect to {why}; results are only fetched from public addresses")
    return addresses


@dataclass(frozen=True)
class Deadline:
    """A point on the monotonic clock after which no network operation may wait."""

    at: float
    seconds: float  # the budget it was made from, for messages

    @classmethod
    def after(cls, seconds: float) -> Deadline:
        return cls(time.monotonic() + seconds, seconds)

    def remaining(self) -> float:
        return self.at - time.monotonic()

    def passed(self) -> bool:
        return self.remaining() <= 0

    def clamp(self, timeout: float | None, error: type[Exception]) -> float:
        """`timeout` shortened to what is left; `error` when nothing is."""
        left = self.remaining()
        if left <= 0:
            raise error(f"the overall deadline of {self.seconds:g} s has passed")
        return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    """A connection whose every read and write waits at most until the deadline."""

    def __init__(self, stream: httpcore.NetworkStream, deadline: Deadline | None):
        self._stream = stream
        self._deadline = deadline

    def _clamp(self, timeout: float | None, error: type[Exception]) -> float | None:
        return timeout if self._deadline is None else self._deadline.clamp(timeout, error)

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, self._clamp(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, self._clamp(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        tls = self._stream.start_tls(ssl_context, server_hostname, self._clamp(timeout, httpcore.ConnectTimeout))
        return _DeadlineStream(tls, self._deadline)

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class GuardedBackend(httpcore.SyncBackend):
    """httpcore's own socket backend, dialling only addresses the policy passed, within a deadline."""

    def __init__(
        self,
        allowed_loopback: Collection[Origin] = (),
        resolver: Resolver | None = None,
        deadline: Deadline | None = None,
    ) -> None:
        self.allowed_loopback = frozenset(allowed_loopback)
        self.resolver = resolver or system_resolver
        self.deadline = deadline

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        addresses = resolve_checked(host, port, self.allowed_loopback, self.resolver)
        error: Exception | None = None
        for address in addresses:
            if self.deadline is not None:
                timeout = self.deadline.clamp(timeout, httpcore.ConnectTimeout)
            try:
                stream = super().connect_tcp(address, port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                error = exc
                continue
            return _DeadlineStream(stream, self.deadline)
        assert error is not None
        raise error

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None
    ) -> httpcore.NetworkStream:
        raise BlockedAddress(f"refused to connect to the unix socket {path}")


def guarded_transport(
    *, allowed_loopback: Collection[Origin] = (), resolver: Resolver | None = None, deadline: Deadline | None = None
) -> httpx.HTTPTransport:
    """An httpx transport whose connections go through `GuardedBackend` (no proxy: a proxy would resolve
    the name itself, out of our sight)."""
    transport = httpx.HTTPTransport(trust_env=False)
    # httpx.HTTPTransport takes no network backend (encode/httpx#3180), so its pool is rebuilt with
    # httpcore's public constructor; tests/test_attacks.py proves the backend is the one dialling.
    transport._pool = httpcore.ConnectionPool(
        ssl_context=httpx.create_ssl_context(trust_env=False),
        network_backend=GuardedBackend(allowed_loopback, resolver, deadline),
    )
    return transport


def guarded_client(
    like: httpx.Client,
    *,
    allowed_loopback: Collection[Origin] = (),
    resolver: Resolver | None = None,
    deadline: Deadline | None = None,
) -> httpx.Client:
    """A client with `like`'s timeout, headers and event hooks, whose connections are guarded. Redirects are
    never followed by it: the caller checks each hop."""
    return httpx.Client(
        transport=guarded_transport(allowed_loopback=allowed_loopback, resolver=resolver, deadline=deadline),
        timeout=like.timeout,
        headers=like.headers,
        event_hooks=like.event_hooks,
        follow_redirects=False,
    )

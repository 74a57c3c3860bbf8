"""Which addresses an upstream row may send requests (and its key) to: the SSRF guard.

An upstream URL is typed by a staff user, and what comes back from it reaches people
(the admin's "Test connection", clients' error messages), so a URL must never turn the
gateway into a way to read services only it can reach. The policy, judged on every
address a host name resolves to:

* **never**: unspecified (``0.0.0.0``, ``::``, which Linux connects to this machine),
  link-local (``169.254.0.0/16``, ``fe80::/10``) and cloud-metadata addresses
  (``169.254.169.254``, ``[fd00:ec2::254]``, ``100.100.100.200``), multicast and
  reserved ones, this server's own database and cache (``DATABASE_URL``'s host and port),
  and the ports of well-known databases and caches on any host (an OpenAI server never
  listens on 5432 or 6379);
* **only when listed** in ``UPSTREAM_ALLOWED_HOSTS`` (host names, addresses or CIDR
  networks): loopback and private addresses (anything that is not globally routable);
* everything else: allowed.

It is judged twice: when a row is saved (:func:`urls_problem`, the admin's and the
registry file's validation; a name that does not resolve yet is accepted) and again on
every new connection (:class:`GuardedBackend` resolves the name itself and connects to
the address it checked), so a name re-pointed after the save (DNS rebinding) gets
nowhere. Numeric forms such as ``2852039166`` are resolved like the system resolver
does, to ``169.254.169.254``, and IPv4-mapped IPv6 addresses are judged as IPv4.
"""

from __future__ import annotations

import functools
import ipaddress
import socket
import time
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

import anyio
import httpcore
import httpx
from django.conf import settings

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

# Metadata services outside the link-local range (which is refused as a whole).
METADATA = {ipaddress.ip_address(a) for a in ("fd00:ec2::254", "fd00:ec2::23", "100.100.100.200")}
UNSPECIFIED = ipaddress.ip_network("0.0.0.0/8")  # "this network": connecting to it reaches this host
NAT64 = ipaddress.ip_network("64:ff9b::/96")
# Ports of databases and caches: no OpenAI-compatible server listens there.
DATA_PORTS = {5432: "PostgreSQL", 3306: "MySQL", 6379: "Redis", 11211: "Memcached", 27017: "MongoDB"}


class RefusedAddress(httpcore.ConnectError):
    """A connection the URL policy refused (httpx reports it as a ConnectError)."""


def _conf_allowed() -> tuple[frozenset[str], tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]]:
    names, networks = set(), []
    for item in settings.GPT3DEV.get("UPSTREAM_ALLOWED_HOSTS", ()):
        item = item.strip().strip("[]").lower()
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            names.add(item.rstrip("."))
    return frozenset(names), tuple(networks)


def _plain(ip: Address) -> Address:
    """The IPv4 address an IPv6 form stands for (mapped, 6to4, NAT64), else ``ip``."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
        if ip.sixtofour is not None:
            return ip.sixtofour
        if ip in NAT64:
            return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip


@functools.lru_cache(maxsize=4)
def _own_services(endpoints: tuple[tuple[str, int], ...]) -> frozenset[tuple[Address, int]]:
    """(address, port) of this server's databases and caches (resolved once per config)."""
    found: set[tuple[Address, int]] = set()
    for host, port in endpoints:
        for ip in _resolve_quietly(host, port):
            found.add((ip, port))
    return frozenset(found)


def _service_endpoints() -> list[tuple[str, int]]:
    endpoints = []
    defaults = {"postgresql": 5432, "mysql": 3306, "oracle": 1521}
    for db in settings.DATABASES.values():
        host = str(db.get("HOST") or "")
        if host and not host.startswith("/"):
            engine = next((port for name, port in defaults.items() if name in db.get("ENGINE", "")), 0)
            endpoints.append((host, int(db.get("PORT") or engine or 0)))
    for cache in getattr(settings, "CACHES", {}).values():
        locations = cache.get("LOCATION") or []
        for location in [locations] if isinstance(locations, str) else locations:
            parts = urlsplit(location if "://" in location else f"tcp://{location}")
            try:
                if parts.hostname and parts.port:
                    endpoints.append((parts.hostname, parts.port))
            except ValueError:
                continue
    return endpoints


def _resolve_quietly(host: str, port: int) -> list[Address]:
    try:
        return _addresses(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
    except (OSError, UnicodeError):
        return []


def _addresses(infos: Iterable[tuple[Any, ...]]) -> list[Address]:
    out: list[Address] = []
    for info in infos:
        ip = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if ip not in out:
            out.append(ip)
    return out


def address_problem(host: str, ip: Address, port: int) -> str | None:
    """Why connecting to ``ip:port`` (which ``host`` resolved to) is refused, or None."""
    plain = _plain(ip)
    shown = f"{host} ({ip})" if host.strip("[]") != str(ip) else str(ip)
    if plain in UNSPECIFIED or plain.is_unspecified:
        return f"{shown} is an unspecified address (it reaches this machine): never allowed as an upstream"
    if plain in METADATA or ip in METADATA or plain.is_link_local:
        return f"{shown} is a link-local or cloud-metadata address: never allowed as an upstream"
    if plain.is_multicast or (plain.is_reserved and not plain.is_loopback):  # ::1 sits in reserved ::/8
        return f"{shown} is a multicast or reserved address: never allowed as an upstream"
    if port in DATA_PORTS:
        return f"port {port} is {DATA_PORTS[port]}'s: database and cache ports are never upstreams"
    if (plain, port) in _own_services(tuple(_service_endpoints())):
        return f"{shown}:{port} is this server's own database or cache: never allowed as an upstream"
    if plain.is_global:
        return None
    names, networks = _conf_allowed()
    if host.strip("[]").lower().rstrip(".") in names or any(plain in n or ip in n for n in networks):
        return None
    kind = "a loopback" if plain.is_loopback else "a private (not globally routable)"
    return (f"{shown} is {kind} address; upstream servers on loopback or private networks are refused "
            f"unless listed in UPSTREAM_ALLOWED_HOSTS (e.g. UPSTREAM_ALLOWED_HOSTS={host.strip('[]')})")


def url_problem(url: str) -> str | None:
    """Why the policy refuses ``url`` as it resolves now, or None (a name that does not
    resolve here yet is accepted: it is judged again on every connection)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return None  # the URL check reports the bad port
    for ip in _resolve_quietly(host, port):
        problem = address_problem(host, ip, port)
        if problem:
            return f"'{url}': {problem}."
    return None


def urls_problem(urls: Iterable[str]) -> str | None:
    for url in urls:
        problem = url_problem(url)
        if problem:
            return problem
    return None


def _checked(host: str, port: int, infos: Iterable[tuple[Any, ...]]) -> list[Address]:
    addresses = _addresses(infos)
    if not addresses:
        raise httpcore.ConnectError(f"{host} did not resolve")
    for ip in addresses:  # any refused answer refuses the name: mixed answers are a trick
        problem = address_problem(host, ip, port)
        if problem:
            raise RefusedAddress(f"refused by the upstream URL policy: {problem}")
    return addresses


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend with the policy in front: resolve, judge every
    address, then connect to an address that was judged (never to the name again)."""

    def __init__(self, inner: httpcore.AsyncNetworkBackend | None = None) -> None:
        self._inner = inner or httpcore.AnyIOBackend()

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                          socket_options: Iterable[Any] | None = None) -> httpcore.AsyncNetworkStream:
        started = time.monotonic()
        try:
            with anyio.fail_after(timeout):
                infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except TimeoutError:
            raise httpcore.ConnectTimeout(f"resolving {host} timed out") from None
        except OSError as exc:
            raise httpcore.ConnectError(f"{host} did not resolve: {exc}") from None
        last: Exception | None = None
        for ip in _checked(host, port, infos):
            left = None if timeout is None else max(0.001, timeout - (time.monotonic() - started))
            try:
                return await self._inner.connect_tcp(str(ip), port, timeout=left, local_address=local_address,
                                                     socket_options=socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
        raise last  # type: ignore[misc]

    async def connect_unix_socket(self, path: str, timeout: float | None = None,
                                  socket_options: Iterable[Any] | None = None) -> httpcore.AsyncNetworkStream:
        raise RefusedAddress("refused by the upstream URL policy: unix sockets are not upstreams")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class GuardedSyncBackend(httpcore.NetworkBackend):
    """:class:`GuardedBackend` for the admin's blocking "Test connection"."""

    def __init__(self) -> None:
        self._inner = httpcore.SyncBackend()

    def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                    socket_options: Iterable[Any] | None = None) -> httpcore.NetworkStream:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise httpcore.ConnectError(f"{host} did not resolve: {exc}") from None
        last: Exception | None = None
        for ip in _checked(host, port, infos):
            try:
                return self._inner.connect_tcp(str(ip), port, timeout=timeout, local_address=local_address,
                                               socket_options=socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
        raise last  # type: ignore[misc]

    def connect_unix_socket(self, path: str, timeout: float | None = None,
                            socket_options: Iterable[Any] | None = None) -> httpcore.NetworkStream:
        raise RefusedAddress("refused by the upstream URL policy: unix sockets are not upstreams")

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


def async_transport(limits: httpx.Limits) -> httpx.AsyncHTTPTransport:
    """httpx's transport with the policy checked on every new connection. httpx takes no
    network backend of its own, so the pool it built is replaced by the same pool over
    :class:`GuardedBackend` (the upstream tests fail loudly if httpx changes this)."""
    transport = httpx.AsyncHTTPTransport(limits=limits, trust_env=False)
    transport._pool = httpcore.AsyncConnectionPool(
        ssl_context=httpx.create_ssl_context(trust_env=False),
        max_connections=limits.max_connections,
        max_keepalive_connections=limits.max_keepalive_connections,
        keepalive_expiry=limits.keepalive_expiry,
        network_backend=GuardedBackend(),
    )
    return transport


def sync_transport() -> httpx.HTTPTransport:
    transport = httpx.HTTPTransport(trust_env=False)
    transport._pool = httpcore.ConnectionPool(
        ssl_context=httpx.create_ssl_context(trust_env=False), network_backend=GuardedSyncBackend()
    )
    return transport

"""The upstream servers of each registry row: balancing, health, and the pooled client.

Each ``upstream`` row gets one :class:`Pool` per process, holding a :class:`Server` per
base URL. A request takes the healthy server with the fewest requests in flight from
this process (ties rotate), within the row's concurrency cap.

Health is judged two ways, like nginx's ``max_fails`` and Envoy's outlier detection:

* passively: a request that cannot connect, times out before its answer begins, or
  gets a 5xx counts a failure; ``UPSTREAM_MAX_FAILS`` failures in a row eject the
  server;
* actively: every ``UPSTREAM_HEALTH_INTERVAL`` seconds each server's ``/models`` is
  asked; a failed check ejects it, a passing one brings it back.

The HTTP client is one ``httpx.AsyncClient`` per event loop (connections are pooled
and kept alive); the health checks run as a task on the loop that serves requests,
started by the first request or ``/readyz`` call that needs the pool, and stopped when
nobody has used the pool for a while.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time
import weakref
from dataclasses import dataclass, field

import httpx
from django.conf import settings

from observability import metrics
from upstream import urlpolicy
from upstream.credentials import UnreadableKey, decrypt_key

logger = logging.getLogger("gpt3dev.upstream")

IDLE_STOP_SECONDS = 600  # health checks of a pool nobody asked for in this long stop


def _conf(name: str):
    return settings.GPT3DEV[name]


@dataclass
class Server:
    """One upstream base URL, as this process sees it."""

    model_id: str
    url: str
    in_flight: int = 0
    healthy: bool = True
    fails: int = 0  # consecutive failures
    last_error: str = ""
    latency: float | None = None  # moving average of seconds until an answer began
    checked_at: float | None = None  # time.time() of the last health check

    def report(self) -> dict:
        return {
            "url": self.url,
            "healthy": self.healthy,
            "in_flight": self.in_flight,
            "latency_ms": None if self.latency is None else round(self.latency * 1000, 1),
            "last_error": self.last_error or None,
            "checked_at": self.checked_at,
        }


@dataclass
class Pool:
    """The servers of one upstream row, and what is needed to call them."""

    model_id: str
    servers: list[Server]
    upstream_model: str
    stored_key: str
    timeout: float
    max_concurrency: int | None
    touched: float = field(default_factory=time.monotonic)
    _turn: itertools.count = field(default_factory=itertools.count)
    _health_loops: weakref.WeakSet[asyncio.AbstractEventLoop] = field(default_factory=weakref.WeakSet)

    # ------------------------------------------------------------------ configuration
    def headers(self) -> dict[str, str]:
        """The headers every upstream call carries (the key, when the row has one)."""
        try:
            key = decrypt_key(self.stored_key)
        except UnreadableKey as exc:
            from core.errors import APIError

            raise APIError(503, str(exc), code="upstream_key_unreadable") from None
        return {"Authorization": f"Bearer {key}"} if key else {}

    def timeouts(self) -> httpx.Timeout:
        return httpx.Timeout(self.timeout, connect=min(self.timeout, float(_conf("UPSTREAM_CONNECT_TIMEOUT"))))

    # ---------------------------------------------------------------------- choosing
    def pick(self, tried: set[str]) -> Server | None:
        """The healthy, untried server with the fewest requests in flight and room
        under the cap; None when there is none right now."""
        cap = self.max_concurrency
        ready = [s for s in self.servers if s.healthy and s.url not in tried and (cap is None or s.in_flight < cap)]
        if not ready:
            return None
        start = next(self._turn) % len(ready)
        rotated = ready[start:] + ready[:start]
        return min(rotated, key=lambda s: s.in_flight)

    def waiting_for_room(self, tried: set[str]) -> bool:
        """Some healthy untried server exists but each is at the concurrency cap."""
        return any(s.healthy and s.url not in tried for s in self.servers)

    def begin(self, server: Server) -> None:
        server.in_flight += 1
        metrics.UPSTREAM_IN_FLIGHT.labels(self.model_id, server.url).set(server.in_flight)

    def end(self, server: Server) -> None:
        server.in_flight = max(0, server.in_flight - 1)
        metrics.UPSTREAM_IN_FLIGHT.labels(self.model_id, server.url).set(server.in_flight)

    # ------------------------------------------------------------------------ health
    def succeeded(self, server: Server, seconds: float | None = None) -> None:
        server.fails = 0
        if seconds is not None:
            server.latency = seconds if server.latency is None else 0.8 * server.latency + 0.2 * seconds
            metrics.UPSTREAM_LATENCY.labels(self.model_id, server.url).observe(seconds)

    def failed(self, server: Server, reason: str, error: str) -> None:
        server.fails += 1
        server.last_error = error
        metrics.UPSTREAM_FAILURES.labels(self.model_id, server.url, reason).inc()
        if server.healthy and server.fails >= _conf("UPSTREAM_MAX_FAILS"):
            self._set_health(server, False, error)

    def refused(self, server: Server, reason: str, error: str) -> None:
        """A call counted as failed that says nothing about the server's health (an
        answer over the size cap: the request asked for it), so it never ejects."""
        server.last_error = error
        metrics.UPSTREAM_FAILURES.labels(self.model_id, server.url, reason).inc()

    def _set_health(self, server: Server, healthy: bool, error: str = "") -> None:
        if server.healthy != healthy:
            logger.warning(
                "Upstream %s of %s is %s%s", server.url, self.model_id,
                "back" if healthy else "ejected", "" if healthy else f": {error}",
            )
        server.healthy = healthy
        if healthy:
            server.fails = 0
        metrics.UPSTREAM_HEALTHY.labels(self.model_id, server.url).set(1 if healthy else 0)

    async def check(self, server: Server) -> None:
        """One active health check: the server's /models must answer 200 in time."""
        client = http_client()
        started = time.monotonic()
        try:
            timeout = min(float(_conf("UPSTREAM_HEALTH_TIMEOUT")), self.timeout)
            async with asyncio.timeout(timeout):  # the whole check: a dripping server fails it too
                request = client.build_request("GET", f"{server.url}/models", headers=self.headers(), timeout=timeout)
                response = await client.send(request, stream=True)
                await response.aclose()  # the status is the answer: the body is never read
            if response.status_code != 200:
                raise httpx.HTTPStatusError(f"/models answered {response.status_code}",
                                            request=response.request, response=response)
        except Exception as exc:  # any failure is a failed check, never a crash of the loop
            server.last_error = "no answer within the timeout" if isinstance(exc, TimeoutError) else describe(exc)
            self._set_health(server, False, server.last_error)
        else:
            server.last_error = ""
            self._set_health(server, True)
            self.succeeded(server, time.monotonic() - started)
        server.checked_at = time.time()

    def ensure_health_checks(self) -> None:
        """Start this pool's health-check task on the running loop, once per loop."""
        self.touched = time.monotonic()
        loop = asyncio.get_running_loop()
        if loop in self._health_loops:
            return
        self._health_loops.add(loop)
        loop.create_task(self._health_loop(), name=f"upstream-health-{self.model_id}")

    async def _health_loop(self) -> None:
        try:
            while _pools.get(self.model_id) is self and time.monotonic() - self.touched < IDLE_STOP_SECONDS:
                await asyncio.gather(*(self.check(s) for s in self.servers))
                await asyncio.sleep(float(_conf("UPSTREAM_HEALTH_INTERVAL")))
        finally:
            self._health_loops.discard(asyncio.get_running_loop())

    def report(self) -> list[dict]:
        return [s.report() for s in self.servers]


# --------------------------------------------------------------------------- pools
_pools: dict[str, Pool] = {}


def _signature(pool: Pool) -> tuple:
    return (tuple(s.url for s in pool.servers), pool.upstream_model, pool.stored_key, pool.timeout,
            pool.max_concurrency)


def pool_for(entry) -> Pool:
    """The pool of a registry row, rebuilt when the row's upstream settings changed (a
    server that stays keeps its health and in-flight count)."""
    fresh = Pool(
        model_id=entry.model_id,
        servers=[Server(entry.model_id, url) for url in entry.upstream_urls()],
        upstream_model=entry.upstream_model or entry.model_id,
        stored_key=entry.upstream_api_key,
        timeout=float(entry.upstream_timeout),
        max_concurrency=entry.upstream_max_concurrency,
    )
    current = _pools.get(entry.model_id)
    if current is not None and _signature(current) == _signature(fresh):
        current.touched = time.monotonic()
        return current
    if current is not None:
        kept = {s.url: s for s in current.servers}
        fresh.servers = [kept.get(s.url, s) for s in fresh.servers]
    _pools[entry.model_id] = fresh
    for server in fresh.servers:
        metrics.UPSTREAM_HEALTHY.labels(entry.model_id, server.url).set(1 if server.healthy else 0)
    return fresh


def existing_pool(model_id: str) -> Pool | None:
    return _pools.get(model_id)


def forget_pools() -> None:
    """Drop every pool (tests start from a clean slate)."""
    _pools.clear()


# --------------------------------------------------------------------- the client
_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx.AsyncClient] = weakref.WeakKeyDictionary()


def http_client() -> httpx.AsyncClient:
    """This event loop's pooled client (keep-alive connections to every upstream)."""
    loop = asyncio.get_running_loop()
    client = _clients.get(loop)
    if client is None:
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=256, keepalive_expiry=30)
        # trust_env=False: a proxy in the environment must not capture loopback upstreams.
        # Every new connection goes through the URL policy (upstream.urlpolicy); answers
        # are asked uncompressed, so the size caps count what is really held.
        client = httpx.AsyncClient(transport=urlpolicy.async_transport(limits), trust_env=False,
                                   follow_redirects=False, headers={"Accept-Encoding": "identity"})
        _clients[loop] = client
    return client


def describe(exc: BaseException) -> str:
    """A one-line reason for a failed upstream call, for the log, /readyz and the admin
    (clients are told fixed phrases: upstream.forward)."""
    if isinstance(exc.__cause__, urlpolicy.RefusedAddress):
        return str(exc.__cause__)
    if isinstance(exc, httpx.ConnectTimeout):
        return "connecting timed out"
    if isinstance(exc, httpx.ConnectError):
        return "connection refused or unreachable"
    if isinstance(exc, httpx.ReadTimeout):
        return "no answer within the timeout"
    if isinstance(exc, httpx.TimeoutException):
        return "timed out"
    if isinstance(exc, httpx.RemoteProtocolError):
        return "the connection closed mid-answer"
    if isinstance(exc, httpx.HTTPStatusError):
        return str(exc).split(" for url")[0]
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def probe(entry, url: str) -> tuple[bool, str]:
    """The admin's "test connection": ask one server of a row for its /models (blocking),
    with the row's saved key and under the URL policy. (ok, what happened), naming the
    models it serves."""
    pool = Pool(entry.model_id, [], entry.upstream_model or entry.model_id, entry.upstream_api_key,
                float(entry.upstream_timeout), None)
    try:
        headers = pool.headers()
    except Exception as exc:  # the stored key is unreadable
        return False, getattr(exc, "message", str(exc))
    timeout = min(float(_conf("UPSTREAM_HEALTH_TIMEOUT")) * 2, pool.timeout)
    cap = int(_conf("UPSTREAM_MAX_RESPONSE_BYTES"))
    deadline = time.monotonic() + timeout
    try:
        with httpx.Client(transport=urlpolicy.sync_transport(), trust_env=False, timeout=timeout,
                          follow_redirects=False, headers={"Accept-Encoding": "identity"}) as client:
            with client.stream("GET", f"{url}/models", headers=headers) as response:
                if response.status_code != 200:
                    return False, f"/models answered HTTP {response.status_code}"
                raw = bytearray()
                for chunk in response.iter_raw():
                    raw += chunk
                    if len(raw) > cap or time.monotonic() > deadline:
                        return False, "/models answered too much or too slowly"
    except httpx.HTTPError as exc:
        return False, describe(exc)
    try:
        ids = [str(m.get("id")) for m in json.loads(raw).get("data", []) if isinstance(m, dict)]
    except (ValueError, AttributeError):
        return False, "/models did not answer an OpenAI model list"
    listed = "is served there" if pool.upstream_model in ids else "is NOT among the models it lists"
    return pool.upstream_model in ids, f"reachable; '{pool.upstream_model}' {listed} ({', '.join(ids[:10]) or 'none'})"

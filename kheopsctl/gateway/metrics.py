"""Prometheus metrics, served on their own port (never through the public proxy), optionally behind a token."""

from __future__ import annotations

import asyncio
import errno
import hmac
import logging
import os

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

log = logging.getLogger("kheopsctl.gateway")

REGISTRY = CollectorRegistry(auto_describe=True)

REQUESTS = Counter(
    "kheops_gateway_requests_total", "HTTP requests handled", ["method", "route", "status"], registry=REGISTRY
)
LATENCY = Histogram(
    "kheops_gateway_request_seconds", "Time to the response headers", ["method", "route"], registry=REGISTRY,
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
AUTH_FAILURES = Counter(
    "kheops_gateway_auth_failures_total", "Rejected tokens, by reason", ["reason"], registry=REGISTRY
)


def exposed_registry() -> CollectorRegistry:
    """What ``/metrics`` serves: this process's registry, or, with several workers (prometheus_client's
    multiprocess mode, see workers.py), every worker's values summed from their files."""
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return REGISTRY
    from prometheus_client import multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return registry


class MetricsServer:
    """A minimal HTTP/1.0 responder for ``GET /metrics`` on a separate port (asyncio, same event loop)."""

    def __init__(self, host: str, port: int, token: str = ""):
        self.host, self.port, self.token = host, port, token
        self.server: asyncio.base_events.Server | None = None
        self.registry = exposed_registry()

    async def start(self) -> bool:
        """Listen; False when this is one of several workers and another one already serves the port."""
        shared = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        try:
            self.server = await asyncio.start_server(self._handle, self.host, self.port)
        except OSError as exc:
            if shared and exc.errno == errno.EADDRINUSE:
                return False
            raise
        self.port = self.server.sockets[0].getsockname()[1]
        return True

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    def _authorized(self, headers: dict[str, str]) -> bool:
        if not self.token:
            return True
        given = headers.get("authorization", "")
        return hmac.compare_digest(given.encode(), f"Bearer {self.token}".encode())

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(5):
                request_line = (await reader.readline()).decode("latin-1").split()
                headers: dict[str, str] = {}
                while True:
                    line = await reader.readline()
                    if line in (b"\r\n", b"\n", b""):
                        break
                    name, _, value = line.decode("latin-1").partition(":")
                    headers[name.strip().lower()] = value.strip()
            if len(request_line) < 2 or request_line[0] != "GET" or request_line[1].split("?")[0] != "/metrics":
                status, body, ctype = "404 Not Found", b"not found\n", "text/plain"
            elif not self._authorized(headers):
                status, body, ctype = "401 Unauthorized", b"unauthorized\n", "text/plain"
            else:
                status, body, ctype = "200 OK", generate_latest(self.registry), CONTENT_TYPE_LATEST
            writer.write(
                f"HTTP/1.0 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n".encode() + body
            )
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()

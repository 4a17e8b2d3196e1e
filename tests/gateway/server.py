"""Run the real gateway app under uvicorn on a free loopback port, in a background thread (tests only)."""

from __future__ import annotations

import dataclasses
import socket
import threading
import time

import httpx
import uvicorn

from kheopsctl.gateway.app import create_app
from kheopsctl.gateway.settings import GatewaySettings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RunningGateway(str):
    """The base URL (a str, so tests can use it directly) plus the app, its settings and a stop()."""

    app: object
    settings: GatewaySettings
    server: uvicorn.Server
    thread: threading.Thread

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.app.state.metrics_port}/metrics"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)


def run_gateway(settings: GatewaySettings, *, startup_timeout: float = 30) -> RunningGateway:
    port = free_port()
    settings = dataclasses.replace(settings, listen_host="127.0.0.1", listen_port=port)
    app = create_app(settings, migrate_wait_seconds=5)
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False, lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True, name=f"gateway-{port}")
    thread.start()
    deadline = time.monotonic() + startup_timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError("the gateway did not start (see the log)")
        time.sleep(0.02)
    running = RunningGateway(f"http://127.0.0.1:{port}")
    running.app, running.settings, running.server, running.thread = app, settings, server, thread
    httpx.get(running + "/health/live", timeout=5).raise_for_status()
    return running

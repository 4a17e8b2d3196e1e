"""`kheopsctl gateway serve|migrate`: run the bundled authorization gateway, or migrate its database."""

from __future__ import annotations

import asyncio
import errno
import os
import signal
import socket
import stat
from pathlib import Path

import typer

from kheopsctl.cli.common import console
from kheopsctl.errors import ConfigError, KheopsError
from kheopsctl.gateway.settings import from_env

app = typer.Typer(help="Run or migrate the bundled authorization gateway.", no_args_is_help=True)


def _settings():
    try:
        return from_env()
    except (ValueError, OSError) as exc:
        raise ConfigError(f"invalid gateway settings: {exc}",
                          "check the KHEOPS_GW_* environment variables (see docs/gateway.md)") from None


@app.command("serve")
def serve(
    host: str = typer.Option(None, "--host", help="Listen address (default KHEOPS_GW_LISTEN_HOST or 0.0.0.0)."),
    port: int = typer.Option(None, "--port", help="Listen port (default KHEOPS_GW_LISTEN_PORT or 8000)."),
    workers: int = typer.Option(1, "--workers", envvar="KHEOPS_GW_WORKERS", min=1,
                                help="Worker processes sharing the listeners (gateway.workers in kheops.toml)."),
) -> None:
    """Serve the gateway (settings from KHEOPS_GW_* environment variables)."""
    import dataclasses

    import uvicorn

    from kheopsctl.gateway import logging as gwlogging
    from kheopsctl.gateway.app import create_app

    settings = _settings()
    overrides = {k: v for k, v in (("listen_host", host), ("listen_port", port)) if v is not None}
    settings = dataclasses.replace(settings, **overrides)
    gwlogging.configure(settings.log_level)
    options = dict(host=settings.listen_host, port=settings.listen_port, log_config=None,
                   access_log=False, proxy_headers=True, forwarded_allow_ips=settings.forwarded_allow_ips,
                   server_header=False, lifespan="on", timeout_graceful_shutdown=10)
    if workers > 1:
        _serve_workers(settings, workers, options)
        return
    config = uvicorn.Config(create_app(settings), **options)
    server = uvicorn.Server(config)
    sockets = None
    if settings.listen_socket:
        try:
            sockets = [config.bind_socket(), _unix_listener(settings.listen_socket)]
        except OSError as exc:
            raise KheopsError(f"cannot listen: {exc.strerror or exc}",
                              "check KHEOPS_GW_LISTEN_SOCKET's directory and KHEOPS_GW_LISTEN_HOST/PORT") from None
    # uvicorn re-raises the SIGTERM it handled once it has shut down gracefully; a clean stop should exit 0
    signal.signal(signal.SIGTERM, lambda *_: None)
    try:
        server.run(sockets=sockets)
    finally:
        if settings.listen_socket and server.started:
            Path(settings.listen_socket).unlink(missing_ok=True)
    if not server.started:
        raise KheopsError("the gateway did not start", "see the log lines above (database reachable? port free?)")


def _serve_workers(settings, workers: int, options: dict) -> None:
    """gateway.workers > 1: the listeners bound here once, shared by the worker processes (gateway/workers.py)."""
    import uvicorn

    from kheopsctl.gateway import workers as gwworkers

    try:
        sockets = [uvicorn.Config("unused", **options).bind_socket()]
        if settings.listen_socket:
            sockets.append(_unix_listener(settings.listen_socket))
    except (OSError, SystemExit) as exc:  # uvicorn's bind_socket exits on a busy port
        raise KheopsError(f"cannot listen: {getattr(exc, 'strerror', None) or exc}",
                          "check KHEOPS_GW_LISTEN_SOCKET's directory and KHEOPS_GW_LISTEN_HOST/PORT") from None
    try:
        gwworkers.serve(settings, workers, sockets, **options)
    finally:
        if settings.listen_socket:
            Path(settings.listen_socket).unlink(missing_ok=True)


def _unix_listener(path: str) -> socket.socket:
    """A Unix stream socket at ``path``: a stale one left by a previous container is replaced, anything else
    there is refused. Mode 0666: who may connect is decided by who can reach the directory (a volume that only
    the gateway and nginx mount)."""
    target = Path(path)
    if target.exists() or target.is_symlink():
        if not stat.S_ISSOCK(target.lstat().st_mode):
            raise OSError(errno.EEXIST, f"{path} exists and is not a socket")
        target.unlink()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        os.chmod(path, 0o666)
    except OSError:
        sock.close()
        raise
    return sock


@app.command("migrate")
def migrate() -> None:
    """Apply the gateway's database migrations (also done at every start)."""
    import psycopg

    from kheopsctl.gateway.db import conninfo
    from kheopsctl.gateway.migrate import migrate_url

    settings = _settings()
    try:
        applied = asyncio.run(migrate_url(conninfo(settings)))
    except psycopg.OperationalError as exc:
        raise KheopsError(f"cannot reach the gateway database: {str(exc).splitlines()[0] if str(exc) else exc}",
                          "check KHEOPS_GW_DATABASE_URL and KHEOPS_GW_DATABASE_PASSWORD(_FILE)") from None
    except psycopg.Error as exc:
        raise KheopsError(f"migration failed: {type(exc).__name__}", "the database was left unchanged") from None
    if applied:
        console.print(f"applied migrations: {', '.join(applied)}")
    else:
        console.print("database schema is up to date")

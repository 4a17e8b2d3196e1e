"""``gateway.workers``: N uvicorn worker processes sharing the listening sockets (TCP and the Unix socket).

The parent binds the sockets once and supervises (uvicorn's ``Multiprocess``: a dead worker is replaced); each
worker is a fresh process (spawn) that builds its own app from the ``KHEOPS_GW_*`` environment. What must stay
single, and how it does:
- migrations: every worker migrates at start, serialised by migrate.py's advisory lock (the first applies, the
  others find nothing left to do);
- the metrics port: one worker binds it (the first; the others find it taken and skip), and it serves every
  worker's counters, summed by prometheus_client's multiprocess mode (one file per worker in a private
  directory created here and removed at exit);
- webhook deliveries: each worker's deliverer claims rows with ``FOR UPDATE SKIP LOCKED``, so none is sent twice.
Per-process caches (decisions, tokens) stay per process: a change is seen by the worker that made it at once
and by the others within the cache bound (<= 10 s), as with several gateway replicas.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile

METRICS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"


def app_factory():
    """Run in each worker: logging, settings from the environment, the app."""
    from kheopsctl.gateway import logging as gwlogging
    from kheopsctl.gateway.app import create_app
    from kheopsctl.gateway.settings import from_env

    settings = from_env()
    gwlogging.configure(settings.log_level)
    return create_app(settings)


def serve(settings, workers: int, sockets: list[socket.socket], **uvicorn_options) -> None:
    """Serve with ``workers`` processes on ``sockets`` (already bound) until SIGTERM / SIGINT."""
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    # the workers read their settings from the environment: the command line's listen overrides go there too
    os.environ["KHEOPS_GW_LISTEN_HOST"] = settings.listen_host
    os.environ["KHEOPS_GW_LISTEN_PORT"] = str(settings.listen_port)
    metrics_dir = tempfile.mkdtemp(prefix="kheops-gw-metrics-")
    os.environ[METRICS_DIR_ENV] = metrics_dir
    try:
        config = uvicorn.Config("kheopsctl.gateway.workers:app_factory", factory=True, workers=workers,
                                **uvicorn_options)
        Multiprocess(config, sockets=sockets).run()
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)

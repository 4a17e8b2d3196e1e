"""The gateway application: ``create_app(settings)`` wires the pool, migrations, auth, REST and DICOMweb."""

from __future__ import annotations

import contextlib
import importlib
import logging
import ssl
from types import ModuleType

import httpx
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Mount

from kheopsctl.gateway import health, quiesce
from kheopsctl.gateway.api import routes as api_routes
from kheopsctl.gateway.auth import AuthMiddleware, Authenticator
from kheopsctl.gateway.cors import CorsMiddleware
from kheopsctl.gateway.db import Database, conninfo
from kheopsctl.gateway.errors import exception_handlers
from kheopsctl.gateway.jwks import JwksCache, OidcValidator
from kheopsctl.gateway.logging import AccessLogMiddleware
from kheopsctl.gateway.metrics import MetricsServer
from kheopsctl.gateway.pathguard import PathGuardMiddleware
from kheopsctl.gateway.migrate import migrate_url
from kheopsctl.gateway.settings import GatewaySettings
from kheopsctl.gateway.webhooks import Deliverer

log = logging.getLogger("kheopsctl.gateway")


def load_dicomweb() -> ModuleType | None:
    """The DICOMweb part (built separately); the REST part runs without it."""
    try:
        return importlib.import_module("kheopsctl.gateway.dicomweb.routes")
    except ModuleNotFoundError as exc:
        if exc.name in ("kheopsctl.gateway.dicomweb", "kheopsctl.gateway.dicomweb.routes"):
            log.warning("DICOMweb routes not available: serving the REST API only")
            return None
        raise


def tls_verify(settings: GatewaySettings) -> ssl.SSLContext | bool:
    if not settings.ca_bundle:
        return True
    context = ssl.create_default_context()
    context.load_verify_locations(settings.ca_bundle)
    return context


def create_app(settings: GatewaySettings, *, migrate_wait_seconds: float = 60.0) -> Starlette:
    dw = load_dicomweb()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        await migrate_url(conninfo(settings), wait_seconds=migrate_wait_seconds)
        db = Database(settings)
        await db.open()
        http = httpx.AsyncClient(verify=tls_verify(settings))
        jwks = JwksCache(settings.jwks_url, http, refetch_interval=settings.oidc_jwks_refetch_seconds)
        audiences = [a.strip() for a in settings.oidc_audience.split(",") if a.strip()]
        validator = OidcValidator(jwks, issuer=settings.oidc_issuer, audiences=audiences,
                                  leeway=settings.oidc_leeway_seconds)
        app.state.settings = settings
        app.state.db = db
        app.state.http = http
        app.state.jwks = jwks
        app.state.auth = Authenticator(db, validator, settings.access_cache_seconds)
        app.state.dicomweb = dw
        deliverer = Deliverer(db, settings, tls_verify(settings))
        app.state.webhooks = deliverer
        await deliverer.start()
        metrics_server = None
        if settings.metrics_port:
            metrics_server = MetricsServer(settings.metrics_host or settings.listen_host, settings.metrics_port,
                                           settings.metrics_token)
            await metrics_server.start()
            app.state.metrics_port = metrics_server.port
        try:
            if dw is not None:
                await dw.startup(app, settings)
            try:
                yield
            finally:
                if dw is not None:
                    await dw.shutdown(app)
        finally:
            if metrics_server is not None:
                await metrics_server.stop()
            await deliverer.stop()
            await http.aclose()
            await quiesce.close(app)  # the STOW write-lock pool (backups)
            await db.close()

    api = list(api_routes())
    if dw is not None:
        api += list(dw.routes())
    from kheopsctl.gateway import web  # the web application (kheopsctl/gateway/web): pages, login, sessions

    return Starlette(
        routes=[*health.routes(), *web.routes(), Mount("/api", routes=api)],
        # the path guard runs before authentication, on the path as received (share links included); a
        # same-origin web session cookie becomes the request's bearer token just before authentication
        middleware=[Middleware(AccessLogMiddleware), Middleware(CorsMiddleware), Middleware(PathGuardMiddleware),
                    Middleware(web.WebSessionMiddleware), Middleware(AuthMiddleware)],
        exception_handlers=exception_handlers(),
        lifespan=lifespan,
    )

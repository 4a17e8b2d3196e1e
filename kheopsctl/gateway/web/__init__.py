"""The web application at the site's root: a backend-for-frontend inside the gateway.

- ``flow``: login (authorization code + PKCE, the gateway as the confidential client ``kheops-web``), the
  callback and logout (back channel and RP-initiated);
- ``session``: server-side sessions (tokens sealed in PostgreSQL) and the middleware that turns a same-origin
  session cookie into the request's bearer token for ``/api``;
- ``pages``: server-rendered pages (jinja2) whose hand-written ES modules call ``/api``;
- ``assets``: the static files, one route each, under ``/assets/``.
"""

from __future__ import annotations

from kheopsctl.gateway.web.session import WebSessionMiddleware
from kheopsctl.gateway.web.state import WebState, web_state


def routes() -> list:
    from kheopsctl.gateway.web import assets, flow, pages

    return [*flow.routes(), *pages.routes(), *assets.routes()]


__all__ = ["WebSessionMiddleware", "WebState", "routes", "web_state"]

"""Rendering pages: the jinja2 environment (autoescaped) and the security headers every web reply carries."""

from __future__ import annotations

import functools
from pathlib import Path

import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from kheopsctl.gateway.web import i18n

TEMPLATES = Path(__file__).parent / "templates"


@functools.cache
def environment() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), autoescape=True,
                              undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)


def security_headers(keycloak_origin: str, *, cache: bool = False) -> dict[str, str]:
    # no inline script or style anywhere: every script is a module under /assets/. The logout form's redirect
    # goes on to Keycloak's end-session page, which form-action must allow.
    csp = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
           "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
           f"form-action 'self' {keycloak_origin}; frame-ancestors 'none'")
    return {
        "Content-Security-Policy": csp,
        "X-Frame-Options": "DENY",
        "X-Content-Type-Options": "nosniff",
        # not no-referrer: Chromium then sends "Origin: null" on form posts, and the origin checks need it
        "Referrer-Policy": "same-origin",
        "Cross-Origin-Opener-Policy": "same-origin",
        "Cross-Origin-Resource-Policy": "same-origin",
        "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
        "Cache-Control": "no-cache" if cache else "no-store",
    }


def language(request: Request) -> str:
    asked = request.query_params.get("lang")
    if asked in i18n.LANGUAGES:
        return asked
    return i18n.choose(request.cookies.get(i18n.LANG_COOKIE), request.headers.get("accept-language"))


def page(request: Request, template: str, status: int = 200, **context) -> Response:
    from kheopsctl.gateway.web.state import web_state

    web = web_state(request.app)
    lang = language(request)
    html = environment().get_template(template).render(
        t=i18n.translator(lang), lang=lang, languages=i18n.LANGUAGES, strings=i18n.page_strings(lang),
        path=request.url.path, **context)
    response = HTMLResponse(html, status_code=status, headers=security_headers(web.keycloak.keycloak_origin))
    if request.query_params.get("lang") in i18n.LANGUAGES:
        response.set_cookie(i18n.LANG_COOKIE, lang, max_age=31536000, path="/", samesite="lax",
                            secure=web.secure)
    return response

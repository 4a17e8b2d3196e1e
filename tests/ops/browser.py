"""Keycloak's real HTML pages driven with httpx, as a browser without JavaScript would: the login form, the
required actions it may ask for (choose a new password, complete the profile), the "Forgot password?" form and
the links Keycloak sends by mail. No page is faked: every step is a form Keycloak rendered.
"""

from __future__ import annotations

import base64
import hashlib
import html
import re
import secrets
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx

REDIRECT_URI = "http://127.0.0.1/callback"  # allowed by the rendered realm for root_url http://127.0.0.1
_FORM = re.compile(r'<form\b([^>]*)>', re.S)
_ATTR = re.compile(r'([a-zA-Z_-]+)="([^"]*)"')
_RESET_LINK = re.compile(r'href="([^"]*login-actions/reset-credentials[^"]*)"')
_PROCEED = re.compile(r'<a\b[^>]*href="([^"]*login-actions/action-token[^"]*)"')
_FEEDBACK = re.compile(r'(?:id="input-error"|kc-feedback-text|pf-m-danger|alert-error)[^>]*>\s*(?:<[^>]+>\s*)*([^<]+)<',
                       re.S)


class Refused(Exception):
    """Keycloak did not log the user in; ``reason`` is the message its page shows."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def forms(page: str) -> dict[str, str]:
    """{form id: action URL} of a Keycloak page."""
    out = {}
    for match in _FORM.finditer(page):
        attrs = dict(_ATTR.findall(match.group(1)))
        if "action" in attrs:
            out[attrs.get("id", "")] = html.unescape(attrs["action"])
    return out


def feedback(page: str) -> str:
    match = _FEEDBACK.search(page)
    return html.unescape(match.group(1)).strip() if match else ""


class Browser:
    """One cookie jar, following Keycloak's pages on loopback (its Secure cookies sent over http://127.0.0.1,
    as browsers do for loopback)."""

    def __init__(self, keycloak_url: str, realm: str = "kheops", client_id: str = "loginConnect",
                 redirect_uri: str = REDIRECT_URI, transport: httpx.BaseTransport | None = None):
        self.base = f"{keycloak_url.rstrip('/')}/realms/{realm}/protocol/openid-connect"
        self.client_id = client_id
        self.redirect_uri = redirect_uri
        self.http = httpx.Client(follow_redirects=False, timeout=30, transport=transport)
        self.verifier = secrets.token_urlsafe(48)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> "Browser":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _send(self, method: str, url: str, **kw) -> httpx.Response:
        response = self.http.request(method, url, **kw)
        for cookie in self.http.cookies.jar:
            cookie.secure = False
        return response

    def login_page(self) -> httpx.Response:
        challenge = base64.urlsafe_b64encode(hashlib.sha256(self.verifier.encode()).digest()).rstrip(b"=").decode()
        page = self._send("GET", f"{self.base}/auth", params={
            "client_id": self.client_id, "response_type": "code", "redirect_uri": self.redirect_uri,
            "scope": "openid", "state": "st", "code_challenge": challenge, "code_challenge_method": "S256"})
        assert page.status_code == 200, f"login page: HTTP {page.status_code}"
        return page

    def login(self, username: str, password: str, new_password: str | None = None,
              name: tuple[str, str] = ("Test", "User")) -> dict:
        """Log in through the form; answer Keycloak's required actions. Returns the token response."""
        page = self.login_page()
        action = forms(page.text)["kc-form-login"]
        response = self._send("POST", urljoin(str(page.url), action),
                              data={"username": username, "password": password, "credentialId": ""})
        return self.follow(response, new_password=new_password, name=name)

    def follow(self, response: httpx.Response, new_password: str | None = None,
               name: tuple[str, str] = ("Test", "User")) -> dict:
        """Follow redirects and required-action forms until Keycloak sends us back to the client."""
        for _ in range(10):
            if response.status_code in (302, 303):
                location = urljoin(str(response.url), response.headers["location"])
                if location.startswith(self.redirect_uri):
                    return self._tokens(location)
                response = self._send("GET", location)
                continue
            if response.status_code != 200:
                raise Refused(f"HTTP {response.status_code}: {feedback(response.text) or response.text[:200]}")
            found = forms(response.text)
            url = str(response.url)
            if "kc-passwd-update-form" in found:
                if new_password is None:
                    raise Refused("Keycloak asks for a new password")
                response = self._send("POST", urljoin(url, found["kc-passwd-update-form"]), data={
                    "password-new": new_password, "password-confirm": new_password})
            elif "kc-update-profile-form" in found:
                response = self._send("POST", urljoin(url, found["kc-update-profile-form"]), data={
                    "firstName": name[0], "lastName": name[1]})
            elif _PROCEED.search(response.text):  # "click here to proceed" (a mailed link opened in a new session)
                response = self._send("GET", urljoin(url, html.unescape(_PROCEED.search(response.text).group(1))))
            else:
                raise Refused(feedback(response.text) or "no form to go on with")
        raise Refused("too many steps")

    def _tokens(self, location: str) -> dict:
        query = parse_qs(urlsplit(location).query)
        assert "code" in query, f"no code in {location}"
        token = self._send("POST", f"{self.base}/token", data={
            "grant_type": "authorization_code", "code": query["code"][0], "redirect_uri": self.redirect_uri,
            "client_id": self.client_id, "code_verifier": self.verifier})
        token.raise_for_status()
        return token.json()

    def forgot_password(self, username: str) -> httpx.Response:
        """Click "Forgot password?" on the login page and ask for a reset mail; returns Keycloak's answer."""
        page = self.login_page()
        link = _RESET_LINK.search(page.text)
        if link is None:
            raise Refused("the login page has no \"Forgot password?\" link")
        form_page = self._send("GET", urljoin(str(page.url), html.unescape(link.group(1))))
        assert form_page.status_code == 200, f"reset page: HTTP {form_page.status_code}"
        action = forms(form_page.text)["kc-reset-password-form"]
        return self._send("POST", urljoin(str(form_page.url), action), data={"username": username})

    def open_mailed_link(self, url: str, new_password: str) -> dict | str:
        """Open a link from a Keycloak mail; choose ``new_password`` if asked. Returns tokens when Keycloak
        logs the user in at the end, else the text of the final page."""
        response = self._send("GET", url)
        try:
            return self.follow(response, new_password=new_password)
        except Refused as exc:
            return exc.reason


class PinnedHost(httpx.BaseTransport):
    """Send requests for ``host`` to 127.0.0.1 (TLS verified against ``ca`` for ``host``, with its SNI), as a
    browser would after a DNS lookup; the URLs, the Host header and the cookies keep the real name."""

    def __init__(self, host: str, ca_pem: bytes):
        import ssl

        context = ssl.create_default_context()
        context.load_verify_locations(cadata=ca_pem.decode())
        self.host = host
        self.inner = httpx.HTTPTransport(verify=context)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.host == self.host:
            request = httpx.Request(request.method, request.url.copy_with(host="127.0.0.1"), headers=request.headers,
                                    stream=request.stream, extensions={**request.extensions, "sni_hostname": self.host})
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()

"""The PACS as the gateway sees it: one shared httpx AsyncClient, streaming both ways.

- Upstream responses are always closed (``Upstream.aclose`` in a ``finally`` / response background).
- No cookie jar is shared between users: the client's jar refuses every cookie.
- Optional Basic or Bearer credentials from the settings.
- Transport failures become 502 (unreachable) / 504 (timeout) JSON errors without internals.
- Every request passes ``upstream.check_request`` first: a path under the DICOMweb grammar, naming only the
  resource the decider approved, with validated headers and query (the final guard, see upstream.py).
"""

from __future__ import annotations

import logging
import ssl
import time
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import AsyncIterator, Mapping
from urllib.parse import urlencode

import httpx

from kheopsctl.gateway.dicomweb import upstream
from kheopsctl.gateway.errors import ApiError
from kheopsctl.gateway.settings import GatewaySettings

log = logging.getLogger("kheopsctl.gateway.pacs")

DICOM_JSON = "application/dicom+json"


def _large_reads() -> None:
    """Read the PACS socket in 1 MiB steps instead of httpcore's 64 KiB: 16x fewer trips through the Python
    HTTP stack per byte streamed (the gateway's main cost on large WADO responses)."""
    try:
        from httpcore._async.http11 import AsyncHTTP11Connection

        if getattr(AsyncHTTP11Connection, "READ_NUM_BYTES", 0) < READ_SIZE:
            AsyncHTTP11Connection.READ_NUM_BYTES = READ_SIZE
    except ImportError:  # another httpcore layout: keep its default
        pass


READ_SIZE = 1024 * 1024


def _no_cookies() -> CookieJar:
    return CookieJar(policy=DefaultCookiePolicy(allowed_domains=[]))


def pacs_error(exc: Exception) -> ApiError:
    if isinstance(exc, httpx.TimeoutException):
        log.warning("PACS timeout: %s", type(exc).__name__)
        return ApiError(504, "the PACS did not answer in time")
    log.warning("PACS unreachable: %s", type(exc).__name__)
    return ApiError(502, "the PACS is unreachable")


class Pacs:
    def __init__(self, settings: GatewaySettings, transport: httpx.AsyncBaseTransport | None = None):
        _large_reads()
        self.base = settings.pacs_url.rstrip("/")
        auth: httpx.Auth | None = None
        # identity: we forward raw bytes, so the PACS must not compress them behind our back
        self._headers: dict[str, str] = {"Accept-Encoding": "identity"}
        if settings.pacs_bearer_token:
            self._headers["Authorization"] = f"Bearer {settings.pacs_bearer_token}"
        elif settings.pacs_username:
            auth = httpx.BasicAuth(settings.pacs_username, settings.pacs_password)
        verify: ssl.SSLContext | bool = True
        if settings.ca_bundle:
            verify = ssl.create_default_context(cafile=settings.ca_bundle)
        self._ssl = verify if isinstance(verify, ssl.SSLContext) else None
        self._basic = (settings.pacs_username, settings.pacs_password) if auth is not None else None
        from kheopsctl.gateway.dicomweb.passthrough import RawPool

        self._raw_pool = RawPool()  # keep-alive connections of the raw relay (open_raw)
        self.client = httpx.AsyncClient(
            auth=auth,
            cookies=_no_cookies(),
            verify=verify,
            transport=transport,
            timeout=httpx.Timeout(connect=5.0, read=300.0, write=300.0, pool=30.0),
            limits=httpx.Limits(max_connections=100, max_keepalive_connections=50, keepalive_expiry=30),
            follow_redirects=False,
            trust_env=False,
        )

    async def aclose(self) -> None:
        self._raw_pool.close()
        await self.client.aclose()

    def url(self, path: str) -> str:
        return self.base + path

    async def open(self, method: str, path: str, *, params: Mapping | None = None, headers: Mapping | None = None,
                   content=None) -> httpx.Response:
        """Send and return the response with its body unread (stream). The caller must ``aclose`` it."""
        h = dict(self._headers)
        h.update(headers or {})
        upstream.check_request(method, path, h, params)
        url = self._query(path, params)
        for attempt in (1, 2):
            req = self.client.build_request(method, url, headers=h, content=content)
            try:
                return await self.client.send(req, stream=True)
            except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as e:
                # a pooled keep-alive connection the PACS had closed: a GET is safe to send once more
                if method != "GET" or attempt == 2:
                    raise pacs_error(e) from None
                log.info("PACS connection dropped (%s); retrying once", type(e).__name__)
            except httpx.HTTPError as e:
                raise pacs_error(e) from None
        raise AssertionError("unreachable")

    def _query(self, path: str, params) -> str:
        # commas and wildcards stay literal: some PACS (Orthanc) do not decode %2C in viewport / lists
        url = self.url(path)
        if params:
            items = params.items() if isinstance(params, Mapping) else params
            url += "?" + urlencode(list(items), safe=",*\\^")
        return url

    async def open_raw(self, path: str, *, params=None, headers: Mapping | None = None):
        """A GET through the raw fast path (passthrough.py); same contract as ``open``."""
        from kheopsctl.gateway.dicomweb.passthrough import raw_get

        h = dict(self._headers)
        h.update(headers or {})
        upstream.check_request("GET", path, h, params)
        return await raw_get(self._query(path, params), h, ssl_context=self._ssl, basic=self._basic,
                             pool=self._raw_pool)

    async def get_json(self, path: str, params: Mapping | None = None) -> list | dict:
        """A small JSON answer (QIDO, STOW reply); 404/204 -> []."""
        resp = await self.open("GET", path, params=params, headers={"Accept": DICOM_JSON})
        try:
            if resp.status_code in (204, 404):
                return []
            if resp.status_code >= 400:
                raise upstream_status_error(resp.status_code)
            try:
                body = await resp.aread()
            except httpx.HTTPError as e:
                raise pacs_error(e) from None
            return httpx.Response(200, content=body).json() if body.strip() else []
        finally:
            await resp.aclose()

    async def echo(self) -> float:
        """One real QIDO (studies?limit=1); returns the latency in ms."""
        t0 = time.perf_counter()
        with upstream.internal():  # a whole-PACS query, but only its latency is used
            await self.get_json("/studies", {"limit": "1"})
        return (time.perf_counter() - t0) * 1000


def upstream_status_error(status: int) -> ApiError:
    if status == 404:
        return ApiError(404, "not found")
    if status in (400, 406, 415):
        return ApiError(status, "the PACS refused the request")
    log.warning("PACS replied %s", status)
    return ApiError(502, "the PACS failed to answer")


async def body_chunks(resp: httpx.Response) -> AsyncIterator[bytes]:
    """The raw body, chunk by chunk as the socket delivers it; transport errors end the stream."""
    try:
        async for chunk in resp.aiter_raw():
            yield chunk
    except httpx.HTTPError as e:
        log.warning("PACS stream interrupted: %s", type(e).__name__)
        raise
    finally:
        await resp.aclose()

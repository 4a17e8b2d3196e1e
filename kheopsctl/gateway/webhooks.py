"""Album webhooks: the outbox (deliveries written in the transaction of the change they report), the URL policy
and the deliverer that sends them, HMAC-signed, with retries.

A delivery is ``POST <url>`` with KHEOPS's JSON body (``kheops_body``: ``host``, ``album_id``, ``event_time``,
``source``, ``is_manual_trigger`` and, by event, ``updated_study`` + ``import_source``, ``new_user``, or
``removed_study`` + ``remove_all_series``) and KHEOPS's headers:

- ``X-Kheops-Event``: new_series | new_user | remove_series | delete_album
- ``X-Kheops-Delivery``: the delivery id (the same on every retry: receivers can drop duplicates)
- ``X-Kheops-Attempt``: ``<n>/<maximum>``
- ``X-Kheops-Signature``: lowercase hex HMAC-SHA256 of the body under the webhook's secret (what KHEOPS receivers
  verify); absent when the webhook has no secret, as in KHEOPS

and, as an extension for receivers that want to refuse replays (KHEOPS's signature does not cover a time):

- ``X-Kheops-Timestamp``: Unix seconds of this attempt
- ``X-Kheops-Timestamp-Signature``: ``sha256=`` + hex HMAC-SHA256 of ``<timestamp>.<body>``

Where a delivery may go: an address on the public internet, or in ``KHEOPS_GW_WEBHOOK_ALLOWED_NETWORKS``.
Loopback, link-local (cloud metadata), private and other special addresses are refused unless listed there, so a
webhook cannot be aimed at the gateway's own neighbours (the database, the PACS, Keycloak); so are IPv6 forms
that embed such an IPv4 address (mapped, compatible, NAT64, 6to4) and every IPv6 address outside public unicast. A literal address is
checked at creation; a host name is resolved before each attempt, every address it gives must pass, and the
connection goes to the address that was checked (Host header and TLS name kept), so a second, different answer
from DNS (rebinding) is never used.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import json
import logging
import socket
import time
from datetime import datetime, timezone
from http.cookiejar import CookieJar, DefaultCookiePolicy
from urllib.parse import urlsplit

import httpx
from psycopg.types.json import Jsonb

from kheopsctl.gateway.errors import ApiError

log = logging.getLogger("kheopsctl.gateway.webhooks")

EVENTS = ("new_series", "remove_series", "new_user", "delete_album")  # in the order KHEOPS lists them
BATCH = 20
LEASE_SECONDS = 300  # a claimed delivery whose sender died is retried after this
MAX_BACKOFF_SECONDS = 3600
KEEP_DAYS = 30  # finished deliveries (delivered or failed) are kept this long for admins to look at
PRUNE_EVERY_SECONDS = 3600


# ---- the outbox ----------------------------------------------------------------------------------------------

async def enqueue(conn, album_id: str, event: str, payload: dict, *, webhook_id: str | None = None) -> list[int]:
    """One pending delivery per enabled webhook of the album that wants ``event``, in the caller's transaction;
    with ``webhook_id``, for that webhook only, whatever its events or state (a manual trigger, as KHEOPS).
    ``payload``: ``source`` (``source(principal)``), and by event ``study`` + ``series`` (UIDs), ``user``
    (``{"sub": ...}``); ``manual`` for a manual trigger. Returns the delivery ids."""
    if webhook_id is None:
        cur = await conn.execute("SELECT 1 FROM webhooks WHERE album_id = %s AND enabled AND %s = ANY(events)"
                                 " LIMIT 1", (album_id, event))
        if await cur.fetchone() is None:
            return []  # nobody listens: no need to describe the event
    body = await kheops_body(conn, album_id, event, payload)
    which = "id = %s" if webhook_id is not None else "enabled AND %s = ANY(events)"
    cur = await conn.execute(
        "INSERT INTO webhook_deliveries (webhook_id, album_id, url, secret, event, payload)"
        " SELECT id, album_id, url, secret, %s, %s FROM webhooks"
        f" WHERE album_id = %s AND {which} RETURNING id",
        (event, Jsonb(body), album_id, webhook_id if webhook_id is not None else event),
    )
    return [row["id"] if isinstance(row, dict) else row[0] for row in await cur.fetchall()]


def source(principal) -> dict:
    """Who caused an event, for ``enqueue``."""
    return {"source": {"user_id": principal.user_id, "sub": principal.sub,
                       "capability": principal.capability.id if principal.capability else None}}


def kheops_signature(secret: str, body: bytes) -> str:
    """KHEOPS's ``X-Kheops-Signature``: lowercase hex HMAC-SHA256 of the exact body bytes."""
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """Our ``X-Kheops-Timestamp-Signature``: the signature also covers the attempt's time (replays)."""
    return "sha256=" + hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


# ---- KHEOPS's delivery body ---------------------------------------------------------------------------------
#
# Built in the transaction of the change, from the index, so it describes the album as the change left it. The
# retrieve URLs are kept as paths (``/api/studies/...``); ``render`` puts the site's root URL (``host``) in front
# when the delivery is sent. Absent values are left out, as KHEOPS's JSON writer does.

_STUDY_FIELDS = (("patient_name", "patient_name"), ("patient_ID", "patient_id"), ("study_date", "study_date"),
                 ("study_time", "study_time"), ("study_description", "study_description"),
                 ("study_id", "study_id"), ("accession_number", "accession_number"),
                 ("referring_physician_name", "referring_physician_name"),
                 ("patient_birth_date", "patient_birth_date"), ("patient_sex", "patient_sex"))


def _present(d: dict) -> dict:
    return {k: v for k, v in d.items() if v is not None}


def _event_time() -> str:
    # KHEOPS writes a local date-time without zone; its servers run in UTC
    return datetime.now(timezone.utc).replace(tzinfo=None).isoformat(timespec="milliseconds")


async def _user(conn, album_id: str, where: str, arg) -> dict | None:
    """KHEOPS's user object: email (verified only, see users.py), name, sub, and is_admin when a member."""
    cur = await conn.execute(
        "SELECT u.sub, CASE WHEN u.email_verified THEN u.email END AS email, u.name, au.is_admin FROM users u"
        f" LEFT JOIN album_users au ON au.user_id = u.id AND au.album_id = %s WHERE {where}", (album_id, arg))
    row = await cur.fetchone()
    if row is None:
        return None
    return _present({"email": row["email"], "name": row["name"], "sub": row["sub"], "is_admin": row["is_admin"]})


async def _source(conn, album_id: str, src: dict) -> dict:
    user = None
    if src.get("user_id") is not None:
        user = await _user(conn, album_id, "u.id = %s", src["user_id"])
    elif src.get("sub"):
        user = await _user(conn, album_id, "u.sub = %s", src["sub"])
    user = user or _present({"sub": src.get("sub")})
    if src.get("capability"):
        cur = await conn.execute("SELECT id, title FROM capabilities WHERE id = %s", (src["capability"],))
        cap = await cur.fetchone()
        if cap is not None:
            user["capability_token"] = {"id": cap["id"], "title": cap["title"]}
    return user


async def _study(conn, study_uid: str, series_uids: list[str], *, study_url: bool, series_url: bool,
                 count_new: bool = False) -> tuple[dict, bool]:
    """KHEOPS's study object with these series; and whether instances of them were stored by this
    transaction (a STOW: ``instances.created_time`` is the transaction's ``now()``), with their count."""
    cur = await conn.execute("SELECT * FROM studies WHERE study_uid = %s", (study_uid,))
    st = await cur.fetchone() or {}
    out = {"study_uid": study_uid, **_present({key: st.get(col) for key, col in _STUDY_FIELDS})}
    if study_url:
        out["retrieve_url"] = f"/api/studies/{study_uid}"
    cur = await conn.execute(
        "SELECT s.series_uid, s.modality, s.series_description, s.series_number, s.body_part_examined,"
        " GREATEST(s.number_of_instances, (SELECT count(*) FROM instances i WHERE i.series_uid = s.series_uid))"
        "   AS instances,"
        " (SELECT count(*) FROM instances i WHERE i.series_uid = s.series_uid AND i.created_time = now()) AS new"
        " FROM series s WHERE s.series_uid = ANY(%s) ORDER BY s.series_number NULLS LAST, s.series_uid",
        (list(series_uids),))
    uploaded = False
    series = []
    for row in await cur.fetchall():
        item = _present({"modality": row["modality"], "series_description": row["series_description"],
                         "series_uid": row["series_uid"], "number_of_series_related_instances": row["instances"],
                         "series_number": row["series_number"], "body_part_examined": row["body_part_examined"]})
        if series_url:
            item["retrieve_url"] = f"/api/studies/{study_uid}/series/{row['series_uid']}"
        if row["new"]:
            uploaded = True
            if count_new:
                item["number_of_new_instances"] = row["new"]
        series.append(item)
    if series:
        out["series"] = series
    return out, uploaded


async def kheops_body(conn, album_id: str, event: str, payload: dict) -> dict:
    """The delivery body KHEOPS sends for ``event`` (without ``host``: see ``render``)."""
    manual = bool(payload.get("manual"))
    body = {"album_id": album_id, "event_time": _event_time(),
            "source": await _source(conn, album_id, payload.get("source") or {}), "is_manual_trigger": manual}
    if event == "new_series":
        study, uploaded = await _study(conn, payload["study"], payload["series"], study_url=True, series_url=True,
                                       count_new=not manual)
        body["import_source"] = "upload" if uploaded and not manual else "send"
        body["updated_study"] = study
    elif event == "remove_series":
        cur = await conn.execute("SELECT NOT EXISTS (SELECT 1 FROM album_series als JOIN series s"
                                 " ON s.series_uid = als.series_uid WHERE als.album_id = %s AND s.study_uid = %s)"
                                 " AS all_gone", (album_id, payload["study"]))
        all_gone = (await cur.fetchone())["all_gone"]
        body["remove_all_series"] = all_gone
        # as KHEOPS: the study's URL while some of it stays in the album, no URL once none does
        body["removed_study"], _ = await _study(conn, payload["study"], payload["series"],
                                                study_url=not all_gone, series_url=False)
    elif event == "new_user":
        user = payload.get("user") or {}
        body["new_user"] = await _user(conn, album_id, "u.sub = %s", user.get("sub")) or _present(user)
    return body


def render(payload: dict, host: str) -> dict:
    """The body as sent: ``host`` added and the retrieve URLs made absolute. A delivery queued by an older
    gateway (before the KHEOPS body) goes out as it was queued."""
    if "album_id" not in payload:
        return payload
    out = {"host": host, **payload}
    for key in ("updated_study", "removed_study"):
        study = out.get(key)
        if not study:
            continue
        study = dict(study)
        if "retrieve_url" in study:
            study["retrieve_url"] = host + study["retrieve_url"]
        if "series" in study:
            study["series"] = [{**s, "retrieve_url": host + s["retrieve_url"]} if "retrieve_url" in s else s
                               for s in study["series"]]
        out[key] = study
    return out


# ---- where deliveries may go -----------------------------------------------------------------------------

def parse_networks(text: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    try:
        return [ipaddress.ip_network(n.strip(), strict=False) for n in text.split(",") if n.strip()]
    except ValueError as exc:
        raise ValueError(f"KHEOPS_GW_WEBHOOK_ALLOWED_NETWORKS: {exc}") from None


_net = ipaddress.ip_network

# IPv4 blocks refused although Python's ``is_global`` (which varies between versions) may call them global.
_V4_NOT_GLOBAL = [_net("0.0.0.0/8"), _net("100.64.0.0/10"), _net("192.0.0.0/24"), _net("192.88.99.0/24"),
                  _net("224.0.0.0/4"), _net("240.0.0.0/4")]
# IPv6: only global unicast (2000::/3) can be a destination at all; inside it, these IANA special-purpose blocks
# are refused: IETF protocol assignments (with Teredo, benchmarking, ORCHID), documentation, 6to4 (handled below).
_V6_GLOBAL_UNICAST = _net("2000::/3")
_V6_NOT_GLOBAL = [_net("2001::/23"), _net("2001:db8::/32"), _net("2002::/16"), _net("3fff::/20")]
# IPv6 forms that carry an IPv4 destination: a connection to them reaches that IPv4 address (the host's own
# IPv4 stack, a NAT64 translator or a 6to4 relay), so the IPv4 rules apply to it.
_NAT64_WELL_KNOWN = _net("64:ff9b::/96")  # RFC 6052: last 32 bits
_V4_COMPATIBLE = _net("::/96")  # RFC 4291, deprecated: never a valid destination


def _v4_global(ip: ipaddress.IPv4Address) -> bool:
    return ip.is_global and not any(ip in net for net in _V4_NOT_GLOBAL)


def embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for (IPv4-mapped, IPv4-compatible, NAT64 well-known prefix,
    6to4), or None."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64_WELL_KNOWN or (ip in _V4_COMPATIBLE and int(ip) > 1):  # :: and ::1 are not IPv4
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def address_allowed(address: str, allowed: list) -> bool:
    """May a delivery connect to ``address``? Listed networks (matched against the address and against the IPv4
    address it embeds) are always allowed; otherwise only public unicast. A default-deny: anything outside
    2000::/3 (link-local, site-local fec0::/10, unique-local, local-use NAT64 64:ff9b:1::/48, multicast, ...)
    or in a special-purpose block (Teredo 2001::/32 included) is refused."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    inner = embedded_ipv4(ip) if isinstance(ip, ipaddress.IPv6Address) else None
    if any(ip in net for net in allowed) or (inner is not None and any(inner in net for net in allowed)):
        return True
    if isinstance(ip, ipaddress.IPv4Address):
        return _v4_global(ip)
    if inner is not None:
        # the deprecated IPv4-compatible form is never a destination of its own
        return ip not in _V4_COMPATIBLE and _v4_global(inner)
    return ip in _V6_GLOBAL_UNICAST and not any(ip in net for net in _V6_NOT_GLOBAL) and ip.is_global


def _literal(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address a URL host stands for when it is one, including the legacy IPv4 forms the resolver accepts
    (``2130706433``, ``0x7f.1``, ``017700000001``)."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        return None


def check_url(url: str, allowed: list) -> str:
    """Validate a webhook URL as given by an admin; a literal address must be allowed. Returns it unchanged."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        raise ApiError(400, "url: not a valid URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ApiError(400, "url: an http:// or https:// URL with a host is needed")
    if parts.username or parts.password:
        raise ApiError(400, "url: credentials in the URL are not accepted (the secret signs each delivery)")
    if parts.fragment:
        raise ApiError(400, "url: no fragment")
    literal = _literal(parts.hostname)
    if literal is None:
        return url  # a name: checked after each resolution (pinned_targets)
    if not address_allowed(str(literal), allowed):
        raise ApiError(400, "url: this destination is not allowed (see KHEOPS_GW_WEBHOOK_ALLOWED_NETWORKS)")
    return url


class PermanentFailure(Exception):
    pass


class Unresolved(Exception):
    pass


async def pinned_targets(url: str, allowed: list) -> list[tuple[str, dict, dict]]:
    """For one attempt at ``url``: (URL naming a checked address, headers, request extensions), one per address
    the name gave, in the resolver's order."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
    except OSError:
        raise Unresolved("cannot resolve the host") from None
    addresses = list(dict.fromkeys(info[4][0].split("%", 1)[0] for info in infos))
    if not addresses or not all(address_allowed(a, allowed) for a in addresses):
        raise PermanentFailure("destination not allowed")
    extensions = {"sni_hostname": parts.hostname} if parts.scheme == "https" else {}
    headers = {"Host": parts.netloc}
    return [(parts._replace(netloc=f"[{a}]:{port}" if ":" in a else f"{a}:{port}").geturl(), headers, extensions)
            for a in addresses]


# ---- the deliverer ---------------------------------------------------------------------------------------

class Deliverer:
    """Sends due deliveries from every replica without double sends (rows are leased with SKIP LOCKED)."""

    def __init__(self, db, settings, verify):
        self.db = db
        self.host = settings.root_url.rstrip("/")
        self.allowed = parse_networks(settings.webhook_allowed_networks)
        self.max_attempts = settings.webhook_max_attempts
        self.retry_seconds = settings.webhook_retry_seconds
        self.poll_seconds = min(1.0, self.retry_seconds)
        self.http = httpx.AsyncClient(timeout=settings.webhook_timeout_seconds, follow_redirects=False,
                                      trust_env=False, verify=verify,
                                      cookies=CookieJar(policy=DefaultCookiePolicy(allowed_domains=[])),
                                      headers={"User-Agent": "kheops-gateway-webhooks"})
        self.task: asyncio.Task | None = None
        self.next_prune = 0.0  # monotonic time of the next clean-up (the first loop runs one)

    async def start(self) -> None:
        self.task = asyncio.create_task(self._run(), name="webhook-deliverer")

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        await self.http.aclose()

    async def _run(self) -> None:
        while True:
            try:
                if time.monotonic() >= self.next_prune:
                    await self.prune()
                sent = await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the database may be down: try again later, never die
                log.warning("webhook deliveries: cannot reach the database; retrying", exc_info=False)
                sent = 0
            if sent < BATCH:
                await asyncio.sleep(self.poll_seconds)

    async def prune(self) -> None:
        self.next_prune = time.monotonic() + PRUNE_EVERY_SECONDS
        async with self.db.connection() as conn:
            await conn.execute("DELETE FROM webhook_deliveries WHERE status <> 'pending'"
                               " AND done_time < now() - make_interval(days => %s)", (KEEP_DAYS,))

    async def run_once(self) -> int:
        async with self.db.connection() as conn:
            cur = await conn.execute(
                "UPDATE webhook_deliveries d SET attempts = d.attempts + 1,"
                " next_attempt_time = now() + make_interval(secs => %s)"
                " FROM (SELECT id FROM webhook_deliveries WHERE status = 'pending' AND next_attempt_time <= now()"
                "       ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED) due"
                " WHERE d.id = due.id RETURNING d.id, d.url, d.secret, d.event, d.payload, d.attempts",
                (LEASE_SECONDS, BATCH))
            due = await cur.fetchall()
        await asyncio.gather(*(self._deliver(row) for row in due))
        return len(due)

    async def _deliver(self, row: dict) -> None:
        status, error, permanent = None, None, False
        try:
            status = await self._post(row)
            if 200 <= status < 300:
                await self._finish(row, "delivered", status, None)
                return
            error = f"HTTP {status}"
        except PermanentFailure as exc:
            error, permanent = str(exc), True
        except Unresolved as exc:
            error = str(exc)
        except httpx.HTTPError as exc:
            error = type(exc).__name__  # never the URL: it may carry a token in its query
        if permanent or row["attempts"] >= self.max_attempts:
            await self._finish(row, "failed", status, error)
            log.warning("webhook delivery failed", extra={"audit": {"delivery": row["id"], "event": row["event"],
                                                                    "error": error}})
            return
        delay = min(self.retry_seconds * 2 ** (row["attempts"] - 1), MAX_BACKOFF_SECONDS)
        async with self.db.connection() as conn:
            await self._attempt(conn, row, status)
            await conn.execute(
                "UPDATE webhook_deliveries SET next_attempt_time = now() + make_interval(secs => %s),"
                " last_status = %s, last_error = %s WHERE id = %s", (delay, status, error, row["id"]))

    async def _post(self, row: dict) -> int:
        targets = await pinned_targets(row["url"], self.allowed)
        body = json.dumps(render(row["payload"], self.host), separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json", "X-Kheops-Event": row["event"],
                   "X-Kheops-Delivery": str(row["id"]),
                   "X-Kheops-Attempt": f"{row['attempts']}/{self.max_attempts}"}
        if row["secret"]:
            timestamp = str(int(time.time()))
            headers.update({"X-Kheops-Signature": kheops_signature(row["secret"], body),
                            "X-Kheops-Timestamp": timestamp,
                            "X-Kheops-Timestamp-Signature": sign(row["secret"], timestamp, body)})
        for i, (url, host, extensions) in enumerate(targets):
            try:
                response = await self.http.post(url, content=body, headers={**headers, **host}, extensions=extensions)
            except httpx.ConnectError:
                if i == len(targets) - 1:
                    raise
                continue  # the next address of a dual-stack name
            await response.aclose()
            return response.status_code
        raise AssertionError("unreachable")

    async def _finish(self, row: dict, status: str, http_status: int | None, error: str | None) -> None:
        async with self.db.connection() as conn:
            await self._attempt(conn, row, http_status)
            await conn.execute(
                "UPDATE webhook_deliveries SET status = %s, last_status = %s, last_error = %s, done_time = now()"
                " WHERE id = %s", (status, http_status, error, row["id"]))

    @staticmethod
    async def _attempt(conn, row: dict, http_status: int | None) -> None:
        """Keep this attempt for the admins' view (KHEOPS's attempts): its status, -1 when nothing answered."""
        await conn.execute("INSERT INTO webhook_attempts (delivery_id, attempt, status) VALUES (%s, %s, %s)"
                           " ON CONFLICT DO NOTHING", (row["id"], row["attempts"], -1 if http_status is None
                                                       else http_status))

"""``/albums/{album}/webhooks``: an album's webhooks, managed by its admins with their own (OIDC) token, as KHEOPS
does it (its form fields, replies and status codes; see docs/gateway.md for the few differences).

The secret is optional and write-only: given at creation (or replaced, or removed with ``secret=``, by PATCH), it
signs every delivery and is never returned; the reply says ``use_secret``. A webhook's detail lists its triggers
(deliveries) with their attempts, so an admin can see what was sent and what failed, and trigger one again.
"""

from __future__ import annotations

from datetime import datetime, timezone

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from kheopsctl.gateway import events, ids, webhooks
from kheopsctl.gateway.api.forms import boolean, form_fields, text
from kheopsctl.gateway.auth import require_oidc
from kheopsctl.gateway.dicomweb.access import check_uid
from kheopsctl.gateway.errors import ApiError
from kheopsctl.gateway.permissions import album_role
from kheopsctl.gateway.users import find_user
from kheopsctl.gateway.webhooks import EVENTS, check_url, parse_networks

_COLUMNS = ("w.id, w.album_id, w.name, w.url, w.secret IS NOT NULL AS use_secret, w.events, w.enabled,"
            " w.created_time, (SELECT count(*) FROM webhook_deliveries d WHERE d.webhook_id = w.id)"
            " AS number_of_triggers")
LAST_TRIGGERS = 5  # in lists and PATCH replies, as KHEOPS
MAX_URL = 1024  # KHEOPS's column sizes
MAX_SECRET = 1024


# ---- replies ------------------------------------------------------------------------------------------------

def webhook_json(row: dict) -> dict:
    """KHEOPS's webhook object; ``last_triggers`` / ``triggers`` are added by the routes that show them."""
    chosen = set(row["events"])
    return {"id": row["id"], "url": row["url"], "name": row["name"], "use_secret": row["use_secret"],
            "events": [e for e in EVENTS if e in chosen], "enabled": row["enabled"],
            "number_of_triggers": row["number_of_triggers"]}


def _zoned(value: datetime) -> str:
    """A UTC time as KHEOPS writes it (ISO 8601, ``Z``)."""
    return value.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _passed(attempts: list[dict]) -> bool:
    return any(200 <= a["status"] <= 299 for a in attempts)


def trigger_json(d: dict, attempts: list[dict]) -> dict:
    """One delivery as KHEOPS's trigger: id, is_manual_trigger, event, attempts (newest first), and the user or
    the study (UIDs, and retrieve URLs for new_series) it was about. ``status`` and ``last_error`` are ours."""
    payload = webhooks.render(d["payload"], d["host"])
    out = {"id": str(d["id"]), "is_manual_trigger": bool(payload.get("is_manual_trigger", payload.get("manual"))),
           "event": d["event"]}
    if attempts:
        out["attempts"] = [{"status": a["status"], "time": _zoned(a["time"]), "attempt": a["attempt"]}
                           for a in attempts]
    if d["event"] == "new_user" and payload.get("new_user"):
        user = payload["new_user"]
        out["user"] = {k: user[k] for k in ("email", "name", "sub") if user.get(k) is not None}
    study = payload.get("updated_study") or payload.get("removed_study")
    if d["event"] in ("new_series", "remove_series") and study:
        with_url = d["event"] == "new_series"
        out["study"] = {"study_uid": study["study_uid"],
                        **({"retrieve_url": study["retrieve_url"]} if with_url and "retrieve_url" in study else {}),
                        "series": [{"series_uid": s["series_uid"],
                                    **({"retrieve_url": s["retrieve_url"]} if with_url and "retrieve_url" in s
                                       else {})} for s in study.get("series", [])]}
    out["status"] = d["status"]
    if d["last_error"]:
        out["last_error"] = d["last_error"]
    return out


async def _triggers(conn, hook_id: str, limit: int, offset: int, host: str) -> list[tuple[dict, list[dict]]]:
    """The webhook's deliveries, newest first, each with its attempts (newest first)."""
    cur = await conn.execute(
        "SELECT id, event, payload, status, last_error FROM webhook_deliveries WHERE webhook_id = %s"
        " ORDER BY id DESC LIMIT %s OFFSET %s", (hook_id, limit, offset))
    rows = await cur.fetchall()
    cur = await conn.execute(
        "SELECT delivery_id, attempt, status, time FROM webhook_attempts WHERE delivery_id = ANY(%s)"
        " ORDER BY attempt DESC", ([r["id"] for r in rows],))
    attempts: dict[int, list[dict]] = {}
    for a in await cur.fetchall():
        attempts.setdefault(a["delivery_id"], []).append(a)
    return [({**r, "host": host}, attempts.get(r["id"], [])) for r in rows]


async def _with_last_triggers(conn, data: dict, host: str) -> dict:
    found = await _triggers(conn, data["id"], LAST_TRIGGERS, 0, host)
    if found:  # KHEOPS leaves the field out when there is none
        data["last_triggers"] = [{"id": str(d["id"]), "status": "pass" if _passed(a) else "fail"}
                                 for d, a in found]
    return data


# ---- request parsing ----------------------------------------------------------------------------------------

def _all(fields: list[tuple[str, str]], name: str) -> list[str]:
    return [v for k, v in fields if k == name]


def _event_names(values: list[str], field: str) -> set[str]:
    """Event names (case-insensitive, as KHEOPS; empty values ignored); 400 for an unknown one."""
    chosen = {v.strip().lower() for v in values if v.strip()}
    unknown = sorted(chosen - set(EVENTS))
    if unknown:
        raise ApiError(400, f"Param '{field}' contains an unknown value: {', '.join(unknown)[:100]};"
                            f" use {', '.join(EVENTS)}")
    return chosen


def _legacy_events(values: dict) -> list[str]:
    """``events=a,b`` (comma-separated), this gateway's own form before KHEOPS's repeated ``event``."""
    raw = values.get("events")
    return [] if raw is None else raw.split(",")


def _secret(values: dict) -> str | None:
    secret = values.get("secret")
    if secret is not None and len(secret) > MAX_SECRET:
        raise ApiError(400, f"Param 'secret' is too long: at most {MAX_SECRET} characters")
    return secret


def _url(values: dict, request: Request) -> str:
    url = text(values, "url", max_length=MAX_URL, required=True)
    return check_url(url, parse_networks(request.app.state.settings.webhook_allowed_networks))


def _host(request: Request) -> str:
    return request.app.state.settings.root_url.rstrip("/")


def _int(request: Request, name: str, default: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, f"'{name}' must be an integer >= 0") from None
    if value < 0:
        raise ApiError(400, f"'{name}' must be an integer >= 0")
    return value


# ---- access -------------------------------------------------------------------------------------------------

async def _admin(request: Request, conn) -> tuple[object, str]:
    """The caller must administer the album (404 for non-members, 403 for members)."""
    p = require_oidc(request)
    album_id = request.path_params["album"]
    role = await album_role(conn, p.user_id, album_id)
    if role is None or role.is_inbox:
        raise ApiError(404, "album not found")
    if not role.is_admin:
        raise ApiError(403, "only album admins manage webhooks")
    return p, album_id


async def _get(conn, album_id: str, hook_id: str, *, lock: bool = False) -> dict:
    cur = await conn.execute(f"SELECT {_COLUMNS} FROM webhooks w WHERE w.id = %s AND w.album_id = %s"
                             + (" FOR UPDATE" if lock else ""), (hook_id, album_id))
    row = await cur.fetchone()
    if row is None:
        raise ApiError(404, "webhook not found")
    return row


# ---- routes -------------------------------------------------------------------------------------------------

async def list_webhooks(request: Request) -> Response:
    """Newest first, each with its last 5 triggers' pass/fail; ``url`` narrows to one URL; ``limit``/``offset``."""
    limit = _int(request, "limit", 1000)
    offset = _int(request, "offset", 0)
    url = request.query_params.get("url")
    where, args = "w.album_id = %s", [request.path_params["album"]]
    if url is not None:
        where, args = where + " AND w.url = %s", args + [url]
    async with request.app.state.db.connection() as conn:
        await _admin(request, conn)
        cur = await conn.execute(f"SELECT count(*) AS n FROM webhooks w WHERE {where}", args)
        total = (await cur.fetchone())["n"]
        cur = await conn.execute(f"SELECT {_COLUMNS} FROM webhooks w WHERE {where}"
                                 " ORDER BY w.created_time DESC, w.id LIMIT %s OFFSET %s", (*args, limit, offset))
        body = [await _with_last_triggers(conn, webhook_json(r), _host(request)) for r in await cur.fetchall()]
    return JSONResponse(body, headers={"X-Total-Count": str(total)})


async def create_webhook(request: Request) -> Response:
    fields = await form_fields(request)
    values = dict(fields)
    name = text(values, "name", max_length=255, required=True)
    url = _url(values, request)
    chosen = _event_names(_all(fields, "event") + _legacy_events(values), "event")
    secret = _secret(values) or None  # KHEOPS: no secret, no signature
    enabled = boolean(values, "enabled", True)
    async with request.app.state.db.connection() as conn:
        p, album_id = await _admin(request, conn)
        hook_id = ids.album_id()
        await conn.execute(
            "INSERT INTO webhooks (id, album_id, name, url, secret, events, enabled, created_by)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
            (hook_id, album_id, name, url, secret, sorted(chosen), enabled, p.user_id))
        row = await _get(conn, album_id, hook_id)
        await events.record(conn, album_id=album_id, principal=p, mutation_type="CREATE_WEBHOOK")
    return JSONResponse(webhook_json(row), status_code=201,
                        headers={"Location": f"/api/albums/{album_id}/webhooks/{hook_id}"})


async def get_webhook(request: Request) -> Response:
    """The webhook with its triggers (newest first; ``limit``/``offset`` page them, default all)."""
    limit = _int(request, "limit", 1000)
    offset = _int(request, "offset", 0)
    async with request.app.state.db.connection() as conn:
        _, album_id = await _admin(request, conn)
        row = await _get(conn, album_id, request.path_params["id"])
        data = webhook_json(row)
        found = await _triggers(conn, row["id"], limit, offset, _host(request))
    if found:
        data["triggers"] = [trigger_json(d, a) for d, a in found]
    return JSONResponse(data)


async def patch_webhook(request: Request) -> Response:
    """KHEOPS's PATCH: ``url``, ``name``, ``secret`` (empty: remove it), ``enabled``, and the events either
    replaced (``event``, repeated) or changed (``add_event`` / ``remove_event``), not both ways at once."""
    fields = await form_fields(request)
    values = dict(fields)
    changes: dict = {}
    if "name" in values:
        changes["name"] = text(values, "name", max_length=255, required=True)
    if "url" in values:
        changes["url"] = _url(values, request)
    if "secret" in values:
        changes["secret"] = _secret(values) or None
    if "enabled" in values:
        changes["enabled"] = boolean(values, "enabled", True)
    replace = _all(fields, "event") + _legacy_events(values)
    add, remove = _all(fields, "add_event"), _all(fields, "remove_event")
    if replace and (add or remove):
        raise ApiError(400, "Do not use 'event' and 'add_event'/'remove_event' at the same time")
    replaced = _event_names(replace, "event") if replace else None
    added, removed = _event_names(add, "add_event"), _event_names(remove, "remove_event")
    async with request.app.state.db.connection() as conn:
        p, album_id = await _admin(request, conn)
        row = await _get(conn, album_id, request.path_params["id"], lock=True)
        if replaced is not None or added or removed:
            current = set(row["events"]) if replaced is None else replaced
            changes["events"] = sorted((current | added) - removed)
        if changes:
            assignments = ", ".join(f"{column} = %s" for column in changes)  # column names from the fixed set above
            await conn.execute(f"UPDATE webhooks SET {assignments} WHERE id = %s", (*changes.values(), row["id"]))
        row = await _get(conn, album_id, row["id"])
        await events.record(conn, album_id=album_id, principal=p, mutation_type="EDIT_WEBHOOK")
        data = await _with_last_triggers(conn, webhook_json(row), _host(request))
    return JSONResponse(data)


async def delete_webhook(request: Request) -> Response:
    async with request.app.state.db.connection() as conn:
        p, album_id = await _admin(request, conn)
        row = await _get(conn, album_id, request.path_params["id"])
        # deliveries not sent yet go nowhere once their webhook is deleted
        await conn.execute("UPDATE webhook_deliveries SET status = 'failed', last_error = 'webhook deleted',"
                           " done_time = now() WHERE webhook_id = %s AND status = 'pending'", (row["id"],))
        await conn.execute("DELETE FROM webhooks WHERE id = %s", (row["id"],))
        await events.record(conn, album_id=album_id, principal=p, mutation_type="DELETE_WEBHOOK")
    return Response(status_code=204)


async def _album_series(conn, album_id: str, study: str) -> list[str]:
    cur = await conn.execute(
        "SELECT als.series_uid FROM album_series als JOIN series s ON s.series_uid = als.series_uid"
        " WHERE als.album_id = %s AND s.study_uid = %s ORDER BY als.series_uid", (album_id, study))
    return [r["series_uid"] for r in await cur.fetchall()]


async def trigger_webhook(request: Request) -> Response:
    """Send an event again, to this webhook only, whatever its events and state (as KHEOPS): ``event=new_series``
    with ``StudyInstanceUID`` and one or more ``SeriesInstanceUID`` (each must be in the album), or
    ``event=new_user`` with ``user`` (a member's sub or email). 202. Without ``event``, this gateway's older form:
    ``StudyInstanceUID`` alone sends new_series for all of the study's series in the album."""
    fields = await form_fields(request)
    values = dict(fields)
    event = (values.get("event") or "").strip().lower() or None
    study = values.get("StudyInstanceUID") or None
    user = values.get("user") or None
    if event is None and study is None:
        raise ApiError(400, "'event' must be set")
    if (user is None) == (study is None):
        raise ApiError(400, "Use only 'StudyInstanceUID' xor 'user', not both")
    if event not in (None, "new_series", "new_user"):
        raise ApiError(400, "'event' is not valid: new_series or new_user")
    if event == "new_user" and user is None:
        raise ApiError(400, "'user' must be set with 'event'='new_user'")
    series = [check_uid(s.strip()) for s in _all(fields, "SeriesInstanceUID") if s.strip()]
    if event == "new_series" and (study is None or not series):
        raise ApiError(400, "'StudyInstanceUID' and 'SeriesInstanceUID' must be set")
    if study is not None:
        study = check_uid(text(values, "StudyInstanceUID", max_length=64, required=True))
    async with request.app.state.db.connection() as conn:
        p, album_id = await _admin(request, conn)
        row = await _get(conn, album_id, request.path_params["id"])
        manual = {"manual": True, **webhooks.source(p)}
        if study is not None:
            in_album = await _album_series(conn, album_id, study)
            if not in_album:
                raise ApiError(404, "the study does not exist or is not in the album")
            missing = [s for s in series if s not in in_album]
            if missing:
                raise ApiError(404, "the series does not exist or is not in the album")
            await webhooks.enqueue(conn, album_id, "new_series",
                                   {"study": study, "series": series or in_album, **manual}, webhook_id=row["id"])
        else:
            target = await find_user(conn, text(values, "user", max_length=255, required=True))
            role = await album_role(conn, target["id"], album_id) if target is not None else None
            if target is None:
                raise ApiError(404, "user not found")
            if role is None:
                raise ApiError(404, "the user is not a member of the album")
            await webhooks.enqueue(conn, album_id, "new_user", {"user": {"sub": target["sub"]}, **manual},
                                   webhook_id=row["id"])
        await events.record(conn, album_id=album_id, principal=p, mutation_type="TRIGGER_WEBHOOK", study_uid=study)
    return Response(status_code=202)


def routes() -> list[Route]:
    return [
        Route("/albums/{album}/webhooks", list_webhooks, methods=["GET"]),
        Route("/albums/{album}/webhooks", create_webhook, methods=["POST"]),
        Route("/albums/{album}/webhooks/{id}", get_webhook, methods=["GET"]),
        Route("/albums/{album}/webhooks/{id}", patch_webhook, methods=["PATCH"]),
        Route("/albums/{album}/webhooks/{id}", delete_webhook, methods=["DELETE"]),
        Route("/albums/{album}/webhooks/{id}/trigger", trigger_webhook, methods=["POST"]),
    ]

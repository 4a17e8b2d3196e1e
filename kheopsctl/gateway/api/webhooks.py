"""``/albums/{album}/webhooks``: an album's webhooks, managed by its admins with their own (OIDC) token.

The secret is write-only: given at creation (or replaced by PATCH), used to sign every delivery, never returned.
A webhook's reply lists its latest deliveries, so an admin can see what was sent and what failed.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from kheopsctl.gateway import events, ids, webhooks
from kheopsctl.gateway.api.forms import boolean, form, iso, text
from kheopsctl.gateway.auth import require_oidc
from kheopsctl.gateway.dicomweb.access import check_uid
from kheopsctl.gateway.errors import ApiError
from kheopsctl.gateway.permissions import album_role
from kheopsctl.gateway.webhooks import EVENTS, check_url, parse_networks

_COLUMNS = "id, album_id, name, url, events, enabled, created_time"
RECENT_DELIVERIES = 20


def webhook_json(row: dict, deliveries: list[dict] | None = None) -> dict:
    data = {"id": row["id"], "album": row["album_id"], "name": row["name"], "url": row["url"],
            "events": list(row["events"]), "enabled": row["enabled"], "created_time": iso(row["created_time"])}
    if deliveries is not None:
        data["deliveries"] = [
            {"id": d["id"], "event": d["event"], "status": d["status"], "attempts": d["attempts"],
             "last_status": d["last_status"], "last_error": d["last_error"], "created_time": iso(d["created_time"]),
             "done_time": iso(d["done_time"])} for d in deliveries]
    return data


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


def _events(values: dict, required: bool) -> list[str] | None:
    raw = values.get("events")
    if raw is None:
        if required:
            raise ApiError(400, f"events: one or more of {', '.join(EVENTS)} (comma-separated)")
        return None
    chosen = sorted({e.strip() for e in raw.split(",") if e.strip()})
    unknown = [e for e in chosen if e not in EVENTS]
    if unknown or not chosen:
        raise ApiError(400, f"events: unknown {', '.join(unknown) or '(none given)'}; use {', '.join(EVENTS)}")
    return chosen


def _secret(values: dict, required: bool) -> str | None:
    secret = values.get("secret")
    if secret is None and not required:
        return None
    if secret is None or not 16 <= len(secret) <= 256:
        raise ApiError(400, "secret: 16 to 256 characters (it signs every delivery)")
    return secret


def _allowed(request: Request) -> list:
    return parse_networks(request.app.state.settings.webhook_allowed_networks)


async def _get(conn, album_id: str, hook_id: str) -> dict:
    cur = await conn.execute(f"SELECT {_COLUMNS} FROM webhooks WHERE id = %s AND album_id = %s", (hook_id, album_id))
    row = await cur.fetchone()
    if row is None:
        raise ApiError(404, "webhook not found")
    return row


async def list_webhooks(request: Request) -> Response:
    async with request.app.state.db.connection() as conn:
        _, album_id = await _admin(request, conn)
        cur = await conn.execute(f"SELECT {_COLUMNS} FROM webhooks WHERE album_id = %s ORDER BY created_time, id",
                                 (album_id,))
        rows = await cur.fetchall()
    return JSONResponse([webhook_json(r) for r in rows], headers={"X-Total-Count": str(len(rows))})


async def create_webhook(request: Request) -> Response:
    values = await form(request)
    name = text(values, "name", max_length=255, required=True)
    url = check_url(text(values, "url", max_length=2048, required=True), _allowed(request))
    chosen = _events(values, required=True)
    secret = _secret(values, required=True)
    enabled = boolean(values, "enabled", True)
    async with request.app.state.db.connection() as conn:
        p, album_id = await _admin(request, conn)
        hook_id = ids.album_id()
        cur = await conn.execute(
            "INSERT INTO webhooks (id, album_id, name, url, secret, events, enabled, created_by)"
            f" VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING {_COLUMNS}",
            (hook_id, album_id, name, url, secret, chosen, enabled, p.user_id))
        row = await cur.fetchone()
        await events.record(conn, album_id=album_id, principal=p, mutation_type="CREATE_WEBHOOK")
    return JSONResponse(webhook_json(row, []), status_code=201,
                        headers={"Location": f"/api/albums/{album_id}/webhooks/{hook_id}"})


async def get_webhook(request: Request) -> Response:
    async with request.app.state.db.connection() as conn:
        _, album_id = await _admin(request, conn)
        row = await _get(conn, album_id, request.path_params["id"])
        cur = await conn.execute(
            "SELECT id, event, status, attempts, last_status, last_error, created_time, done_time"
            " FROM webhook_deliveries WHERE webhook_id = %s ORDER BY id DESC LIMIT %s", (row["id"], RECENT_DELIVERIES))
        deliveries = await cur.fetchall()
    return JSONResponse(webhook_json(row, deliveries))


async def patch_webhook(request: Request) -> Response:
    values = await form(request)
    changes: dict = {}
    if "name" in values:
        changes["name"] = text(values, "name", max_length=255, required=True)
    if "url" in values:
        changes["url"] = check_url(text(values, "url", max_length=2048, required=True), _allowed(request))
    if (chosen := _events(values, required=False)) is not None:
        changes["events"] = chosen
    if (secret := _secret(values, required=False)) is not None:
        changes["secret"] = secret
    if "enabled" in values:
        changes["enabled"] = boolean(values, "enabled", True)
    if not changes:
        raise ApiError(400, "nothing to change: name, url, events, secret or enabled")
    async with request.app.state.db.connection() as conn:
        p, album_id = await _admin(request, conn)
        row = await _get(conn, album_id, request.path_params["id"])
        assignments = ", ".join(f"{column} = %s" for column in changes)  # column names from the fixed set above
        cur = await conn.execute(f"UPDATE webhooks SET {assignments} WHERE id = %s RETURNING {_COLUMNS}",
                                 (*changes.values(), row["id"]))
        row = await cur.fetchone()
        await events.record(conn, album_id=album_id, principal=p, mutation_type="EDIT_WEBHOOK")
    return JSONResponse(webhook_json(row))


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


async def trigger_webhook(request: Request) -> Response:
    """Send ``new_series`` for one study of the album again, to this webhook only (e.g. to re-run a pipeline)."""
    values = await form(request)
    study = check_uid(text(values, "StudyInstanceUID", max_length=64, required=True))
    async with request.app.state.db.connection() as conn:
        p, album_id = await _admin(request, conn)
        row = await _get(conn, album_id, request.path_params["id"])
        if not row["enabled"]:
            raise ApiError(409, "the webhook is disabled")
        cur = await conn.execute(
            "SELECT als.series_uid FROM album_series als JOIN series s ON s.series_uid = als.series_uid"
            " WHERE als.album_id = %s AND s.study_uid = %s ORDER BY als.series_uid", (album_id, study))
        series = [r["series_uid"] for r in await cur.fetchall()]
        if not series:
            raise ApiError(404, "no such study in this album")
        sent = await webhooks.enqueue(conn, album_id, "new_series",
                                      {"study": study, "series": series, "manual": True, **webhooks.source(p)},
                                      webhook_id=row["id"])
        await events.record(conn, album_id=album_id, principal=p, mutation_type="TRIGGER_WEBHOOK", study_uid=study)
    return JSONResponse({"deliveries": sent}, status_code=202)


def routes() -> list[Route]:
    return [
        Route("/albums/{album}/webhooks", list_webhooks, methods=["GET"]),
        Route("/albums/{album}/webhooks", create_webhook, methods=["POST"]),
        Route("/albums/{album}/webhooks/{id}", get_webhook, methods=["GET"]),
        Route("/albums/{album}/webhooks/{id}", patch_webhook, methods=["PATCH"]),
        Route("/albums/{album}/webhooks/{id}", delete_webhook, methods=["DELETE"]),
        Route("/albums/{album}/webhooks/{id}/trigger", trigger_webhook, methods=["POST"]),
    ]

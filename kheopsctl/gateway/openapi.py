"""The OpenAPI 3.1 document of the REST part (``GET /api/openapi.json``, public).

Written as data next to the routes it describes; ``tests/gateway/test_openapi.py`` checks that every REST
route is documented and every documented path is served.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

_ERR = {"description": "error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
_PAGING = [
    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 0}},
    {"name": "offset", "in": "query", "schema": {"type": "integer", "minimum": 0}},
]
_ALBUM = {"name": "album", "in": "path", "required": True, "schema": {"type": "string"}}
_USER = {"name": "user", "in": "path", "required": True, "description": "sub or email",
         "schema": {"type": "string"}}
_CAP = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
_HOOK = {"name": {"type": "string", "maxLength": 255}, "url": {"type": "string", "format": "uri"},
         "secret": {"type": "string", "maxLength": 1024, "description": "optional; empty in PATCH: removed"},
         "event": {"type": "array", "items": {"enum": ["new_series", "remove_series", "new_user", "delete_album"]},
                   "description": "one form field per event (PATCH: add_event / remove_event also)"},
         "enabled": {"type": "boolean"}}
_FLAGS = {name: {"type": "boolean"} for name in
          ("addUser", "downloadSeries", "sendSeries", "deleteSeries", "addSeries", "writeComments")}


def _form(properties: dict, required: list[str] | None = None) -> dict:
    schema = {"type": "object", "properties": properties, "required": required or []}
    return {"required": True, "content": {"application/x-www-form-urlencoded": {"schema": schema},
                                          "application/json": {"schema": schema}}}


def _ok(description: str, ref: str | None = None, array: bool = False, status: str = "200") -> dict:
    responses: dict = {"401": _ERR, "403": _ERR, "404": _ERR, "503": _ERR}
    if ref is None:
        responses[status] = {"description": description}
    else:
        schema: dict = {"$ref": f"#/components/schemas/{ref}"}
        if array:
            schema = {"type": "array", "items": schema}
        responses[status] = {"description": description, "content": {"application/json": {"schema": schema}}}
    return responses


def _op(summary: str, responses: dict, parameters: list | None = None, body: dict | None = None) -> dict:
    op: dict = {"summary": summary, "responses": responses}
    if parameters:
        op["parameters"] = parameters
    if body:
        op["requestBody"] = body
    return op


def document() -> dict:
    return {
        "openapi": "3.1.0",
        "info": {"title": "KHEOPS gateway REST API", "version": "1.0",
                 "description": "KHEOPS-compatible albums, users and tokens. DICOMweb routes follow PS3.18."},
        "servers": [{"url": "/api"}],
        "security": [{"bearer": []}, {"basic": []}],
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer",
                           "description": "an OIDC access token of the realm, or a capability token"},
                "basic": {"type": "http", "scheme": "basic", "description": "any user name, the token as password"},
            },
            "schemas": {
                "Error": {"type": "object", "properties": {"error": {"type": "string"}}, "required": ["error"]},
                "Album": {"type": "object", "properties": {
                    "album_id": {"type": "string"}, "name": {"type": "string"}, "description": {"type": "string"},
                    "created_time": {"type": "string", "format": "date-time"},
                    "last_event_time": {"type": "string", "format": "date-time"},
                    "number_of_users": {"type": "integer"}, "number_of_comments": {"type": "integer"},
                    "number_of_studies": {"type": "integer"}, "number_of_series": {"type": "integer"},
                    "modalities": {"type": "array", "items": {"type": "string"}},
                    **{k: {"type": "boolean"} for k in (
                        "add_user", "download_series", "send_series", "delete_series", "add_series",
                        "write_comments", "is_admin", "is_favorite", "notification_new_series",
                        "notification_new_comment")},
                }},
                "Member": {"type": "object", "properties": {
                    "sub": {"type": "string"}, "email": {"type": ["string", "null"]},
                    "name": {"type": ["string", "null"]}, "is_admin": {"type": "boolean"}}},
                "User": {"type": "object", "properties": {
                    "sub": {"type": "string"}, "email": {"type": ["string", "null"]},
                    "name": {"type": ["string", "null"]}}},
                "Event": {"type": "object", "properties": {
                    "event_type": {"enum": ["Comment", "Mutation"]}, "mutation_type": {"type": ["string", "null"]},
                    "comment": {"type": ["string", "null"]}, "post_date": {"type": "string", "format": "date-time"},
                    "source": {"$ref": "#/components/schemas/User"}}},
                "InboxInfo": {"type": "object", "properties": {
                    "number_of_studies": {"type": "integer"}, "number_of_series": {"type": "integer"},
                    "number_of_instances": {"type": "integer"},
                    "modalities": {"type": "array", "items": {"type": "string"}}}},
                "Capability": {"type": "object", "properties": {
                    "id": {"type": "string"}, "title": {"type": "string"}, "scope_type": {"enum": ["user", "album"]},
                    "album": {"type": "object", "description": "album tokens",
                              "properties": {"album_id": {"type": "string"}, "name": {"type": "string"}}},
                    "secret": {"type": "string", "description": "only in the creation reply"},
                    "access_token": {"type": "string", "description": "the secret again (KHEOPS), creation only"},
                    "token_type": {"const": "Bearer"},
                    "expiration_time": {"type": "string", "format": "date-time"},
                    "not_before_time": {"type": "string", "format": "date-time"},
                    "issued_at_time": {"type": "string", "format": "date-time"},
                    "revoked": {"type": "boolean"}, "valid": {"type": "boolean"},
                    "revoke_time": {"type": "string", "format": "date-time"},
                    "created_by": {"$ref": "#/components/schemas/User"},
                    "revoked_by": {"$ref": "#/components/schemas/User"},
                    "restricted": {"type": "boolean", "description": "personal tokens: narrowed to the flags (ours)"},
                    **{f"{k}_permission": {"type": "boolean", "description": "album and restricted tokens"}
                       for k in ("read", "write", "appropriate", "download")},
                }},
                "Webhook": {"type": "object", "description": "KHEOPS's webhook object", "properties": {
                    "id": {"type": "string"}, "name": {"type": "string"}, "url": {"type": "string"},
                    "use_secret": {"type": "boolean"}, "enabled": {"type": "boolean"},
                    "events": {"type": "array", "items": {"enum": ["new_series", "remove_series", "new_user",
                                                                   "delete_album"]}},
                    "number_of_triggers": {"type": "integer"},
                    "last_triggers": {"type": "array", "description": "lists and PATCH: the last 5", "items": {
                        "type": "object", "properties": {"id": {"type": "string"},
                                                         "status": {"enum": ["pass", "fail"]}}}},
                    "triggers": {"type": "array", "description": "one webhook: its deliveries, newest first",
                                 "items": {"type": "object", "properties": {
                                     "id": {"type": "string"}, "is_manual_trigger": {"type": "boolean"},
                                     "event": {"type": "string"},
                                     "attempts": {"type": "array", "items": {"type": "object", "properties": {
                                         "status": {"type": "integer", "description": "-1: no answer"},
                                         "time": {"type": "string"}, "attempt": {"type": "integer"}}}},
                                     "user": {"type": "object"}, "study": {"type": "object"},
                                     "status": {"enum": ["pending", "delivered", "failed"]},
                                     "last_error": {"type": "string"}}}}}},
                "ViewerToken": {"type": "object", "properties": {
                    "access_token": {"type": "string", "description": "shown once"},
                    "token_type": {"const": "Bearer"}, "expires_in": {"type": "integer"},
                    "study_instance_uid": {"type": "string"}, "id": {"type": "string"},
                    "download_permission": {"type": "boolean"}}},
                "Introspection": {"type": "object", "properties": {
                    "active": {"type": "boolean"}, "sub": {"type": "string"}, "scope": {"type": "string"},
                    "exp": {"type": "integer"}, "iat": {"type": "integer"}, "nbf": {"type": "integer"},
                    "album_id": {"type": "string"}, "cap_token": {"type": "string"},
                    "study_uid": {"type": "string", "description": "viewer tokens: the one study they read"},
                    "act": {"type": "object", "properties": {"sub": {"type": "string"}}}}, "required": ["active"]},
            },
        },
        "paths": {
            "/albums": {
                "get": _op("List the caller's albums (X-Total-Count)", _ok("albums", "Album", True), [
                    *_PAGING, *({"name": n, "in": "query", "schema": {"type": "string"}} for n in (
                        "name", "modality", "favorite", "canAddSeries", "canCreateCapabilityToken", "sort"))]),
                "post": _op("Create an album; the caller becomes admin", _ok("created", "Album", status="201"),
                            body=_form({"name": {"type": "string", "maxLength": 255},
                                        "description": {"type": "string", "maxLength": 2048}, **_FLAGS}, ["name"])),
            },
            "/albums/{album}": {
                "get": _op("One album", _ok("the album", "Album"), [_ALBUM]),
                "patch": _op("Edit (admins) or set one's notifications", _ok("the album", "Album"), [_ALBUM],
                             _form({"name": {"type": "string"}, "description": {"type": "string"}, **_FLAGS,
                                    "notificationNewSeries": {"type": "boolean"},
                                    "notificationNewComment": {"type": "boolean"}})),
                "delete": _op("Delete (admins)", _ok("deleted", status="204"), [_ALBUM]),
            },
            "/albums/{album}/users": {"get": _op("Members", _ok("members", "Member", True), [_ALBUM])},
            "/albums/{album}/users/{user}": {
                "put": _op("Add a member (addUser or admin)", _ok("added", status="201"), [_ALBUM, _USER]),
                "delete": _op("Remove a member (self, or admins)", _ok("removed", status="204"), [_ALBUM, _USER]),
            },
            "/albums/{album}/users/{user}/admin": {
                "put": _op("Promote to admin", _ok("done", status="204"), [_ALBUM, _USER]),
                "delete": _op("Demote an admin", _ok("done", status="204"), [_ALBUM, _USER]),
            },
            "/albums/{album}/favorites": {
                "put": _op("Mark as favorite", _ok("done", status="204"), [_ALBUM]),
                "delete": _op("Unmark as favorite", _ok("done", status="204"), [_ALBUM]),
            },
            "/albums/{album}/events": {"get": _op("Comments and mutations, newest first", _ok("events", "Event", True), [
                _ALBUM, *_PAGING, {"name": "types", "in": "query", "schema": {"enum": ["comments", "mutations"]}}])},
            "/albums/{album}/comments": {"post": _op("Post a comment (writeComments)", _ok("posted", status="204"),
                                                     [_ALBUM], _form({"comment": {"type": "string", "maxLength": 1024},
                                                                      "to_user": {"type": "string"}}, ["comment"]))},
            "/studies/{study}/comments": {
                "get": _op("A study's comments (whoever sees the study; private ones to their two users)",
                           _ok("comments", "Event", True), [{"name": "study", "in": "path", "required": True,
                                                             "schema": {"type": "string"}}, *_PAGING]),
                "post": _op("Comment on a study; to_user makes it private", _ok("posted", status="204"),
                            [{"name": "study", "in": "path", "required": True, "schema": {"type": "string"}}],
                            _form({"comment": {"type": "string", "maxLength": 1024}, "to_user": {"type": "string"}},
                                  ["comment"])),
            },
            "/albums/{album}/webhooks": {
                "get": _op("The album's webhooks (admins)", _ok("webhooks", "Webhook", True), [_ALBUM]),
                "post": _op("Add a webhook (admins); the secret signs every delivery and is never returned",
                            _ok("created", "Webhook", status="201"), [_ALBUM], _form(_HOOK, ["name", "url"])),
            },
            "/albums/{album}/webhooks/{id}": {
                "get": _op("One webhook with its triggers (limit, offset)", _ok("webhook", "Webhook"),
                           [_ALBUM, _CAP]),
                "patch": _op("Change a webhook", _ok("changed", "Webhook"), [_ALBUM, _CAP], _form(_HOOK)),
                "delete": _op("Delete a webhook (pending deliveries are dropped)", _ok("deleted", status="204"),
                              [_ALBUM, _CAP]),
            },
            "/albums/{album}/webhooks/{id}/trigger": {"post": _op(
                "Send new_series (StudyInstanceUID, SeriesInstanceUID...) or new_user (user) again, to this"
                " webhook only (admins)", _ok("queued", status="202"), [_ALBUM, _CAP],
                _form({"event": {"enum": ["new_series", "new_user"]}, "StudyInstanceUID": {"type": "string"},
                       "SeriesInstanceUID": {"type": "array", "items": {"type": "string"}},
                       "user": {"type": "string"}}))},
            "/users": {"get": _op("Look up (reference=) or search (search=) users", _ok("user(s)", "User"), [
                {"name": "reference", "in": "query", "schema": {"type": "string"}},
                {"name": "search", "in": "query", "schema": {"type": "string", "minLength": 3}},
                {"name": "album", "in": "query", "schema": {"type": "string"}}, *_PAGING])},
            "/inboxinfo": {"get": _op("Counts for the caller's inbox", _ok("inbox", "InboxInfo"))},
            "/capabilities": {
                "get": _op("The caller's tokens, or an album's (admins)", _ok("tokens", "Capability", True), [
                    {"name": "valid", "in": "query", "schema": {"type": "boolean"}},
                    {"name": "album", "in": "query", "schema": {"type": "string"}},
                    {"name": "user", "in": "query", "schema": {"type": "string"}}, *_PAGING]),
                "post": _op("Create a token; the secret is returned once", _ok("created", "Capability", status="201"),
                            body=_form({
                                "title": {"type": "string", "maxLength": 255},
                                "expiration_time": {"type": "string", "format": "date-time"},
                                "not_before_time": {"type": "string", "format": "date-time"},
                                "scope_type": {"enum": ["user", "album"]}, "album": {"type": "string"},
                                **{f"{k}_permission": {"type": "boolean"}
                                   for k in ("read", "write", "appropriate", "download")},
                                "restricted": {"type": "boolean", "description": "ours: a personal token"
                                               " narrowed to its four permissions (KHEOPS's act as the user)"},
                            }, ["title"])),
            },
            "/capabilities/{id}": {"get": _op("One token (never its secret)", _ok("token", "Capability"), [_CAP])},
            "/capabilities/{id}/revoke": {"post": _op("Revoke", _ok("revoked", "Capability"), [_CAP])},
            "/studies/{study}/viewer-token": {"post": _op(
                "A short-lived read-only token for one study (viewer launch); the secret is returned once",
                _ok("created", "ViewerToken", status="201"),
                [{"name": "study", "in": "path", "required": True, "schema": {"type": "string"}}],
                {"required": False, "content": {"application/x-www-form-urlencoded": {"schema": {
                    "type": "object", "properties": {"download_permission": {"type": "boolean"}}}}}})},
            "/token": {"post": _op(
                "RFC 8693 token exchange for a viewer token (scope viewer, studyUID, source_type, source_id);"
                " public: the subject_token is the credential; errors are RFC 6749 JSON with 400",
                _ok("{access_token, token_type, expires_in}"),
                body=_form({k: {"type": "string"} for k in ("grant_type", "subject_token", "subject_token_type",
                                                           "scope", "studyUID", "source_type", "source_id")},
                           ["grant_type", "subject_token", "subject_token_type", "scope", "studyUID"]))},
            "/token/introspect": {"post": _op("RFC 7662 introspection", _ok("answer", "Introspection"),
                                              body=_form({"token": {"type": "string"}}, ["token"]))},
        },
    }


_CACHED: bytes | None = None


async def openapi_json(request: Request) -> Response:
    global _CACHED
    if _CACHED is None:  # built once: it is the same for every caller
        _CACHED = JSONResponse(document()).body
    return Response(_CACHED, media_type="application/json")


def routes() -> list[Route]:
    return [Route("/openapi.json", openapi_json, methods=["GET"])]

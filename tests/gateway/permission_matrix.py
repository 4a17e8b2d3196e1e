"""The permission matrix shared by the REST and DICOMweb tests.

``ALBUM_FLAG_CASES``: for each of the six album flags, the right it grants an ordinary member (admins always
have it). ``CAPABILITY_CASES``: for each capability permission, the rights it keeps. Tests take one allowed and
one denied case per row: flag on/off, permission on/off. Helpers build the situation over the real API.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

# (form field of the flag, Rights attribute it governs for a member, what a member tries)
ALBUM_FLAG_CASES = [
    ("addSeries", "can_add_series", "add a series to the album (PUT .../albums/{album}, STOW ?album=)"),
    ("deleteSeries", "can_delete_series", "remove a series from the album (DELETE ...?album=)"),
    ("sendSeries", "can_send", "share or appropriate a series out of the album"),
    ("downloadSeries", "can_download", "download: ZIP, bulk instance retrieval"),
    ("addUser", "can_add_user", "add a member (PUT /albums/{album}/users/{user})"),
    ("writeComments", "can_comment", "comment (POST /albums/{album}/comments)"),
]

# (capability permission, Rights attributes it gates)
CAPABILITY_CASES = [
    ("read", ("can_read",)),
    ("write", ("can_add_series", "can_delete_series", "can_comment")),
    ("appropriate", ("can_send",)),
    ("download", ("can_download",)),
]

ALL_FLAGS_ON = {field: "true" for field, _, _ in ALBUM_FLAG_CASES}


def album_with_member(owner, member, **flags: bool) -> str:
    """An album created by ``owner`` with the given flags (others at their KHEOPS defaults) and ``member`` in it."""
    form = {"name": "matrix", **{k: str(v).lower() for k, v in flags.items()}}
    r = owner.client.post("/albums", data=form)
    assert r.status_code == 201, r.text
    album = r.json()["album_id"]
    r = owner.client.put(f"/albums/{album}/users/{member.sub}")
    assert r.status_code == 201, r.text
    return album


def capability(owner, *, scope: str = "user", album: str | None = None, lifetime: timedelta = timedelta(hours=1),
               not_before: datetime | None = None, **perms: bool) -> dict:
    """A capability token created by ``owner`` (an OIDC user); returns the creation reply (with ``secret``)."""
    form = {
        "title": "matrix token", "scope_type": scope,
        "expiration_time": (datetime.now(timezone.utc) + lifetime).isoformat(),
        **{f"{name}_permission": str(bool(perms.get(name, False))).lower()
           for name in ("read", "write", "appropriate", "download")},
    }
    if album:
        form["album"] = album
    if scope == "user":
        form["restricted"] = "true"  # narrowed to these flags (a KHEOPS-style personal token acts as its user)
    if not_before:
        form["not_before_time"] = not_before.isoformat()
    r = owner.client.post("/capabilities", data=form)
    assert r.status_code == 201, r.text
    return r.json()

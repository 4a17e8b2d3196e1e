"""Small helpers shared by the DICOMweb tests."""

from __future__ import annotations

import io
import re
from datetime import datetime, timedelta, timezone

import pydicom


def parts_of(response) -> list[bytes]:
    """Split a multipart/related response (whole, tests only) into its part bodies."""
    m = re.search(r'boundary="?([^";]+)"?', response.headers["content-type"])
    assert m, response.headers["content-type"]
    delim = b"--" + m.group(1).encode()
    out = []
    for chunk in response.content.split(delim)[1:]:
        if chunk.startswith(b"--"):
            break
        head, _, body = chunk.partition(b"\r\n\r\n")
        out.append(body[:-2] if body.endswith(b"\r\n") else body)
    return out


def sop_uids_of(parts: list[bytes]) -> set[str]:
    return {pydicom.dcmread(io.BytesIO(p), stop_before_pixels=True).SOPInstanceUID for p in parts}


def value(item: dict, tag: str):
    v = (item.get(tag) or {}).get("Value")
    return v[0] if v else None


def create_album(user, **flags) -> str:
    r = user.client.post("/albums", data={"name": "Album", **flags})
    assert r.status_code == 201, r.text
    return r.json()["album_id"]


def add_member(admin, album: str, member) -> None:
    assert admin.client.put(f"/albums/{album}/users/{member.sub}").status_code in (201, 204)


def capability(user, *, scope_type="user", album=None, **perms) -> str:
    form = {"title": "test token", "scope_type": scope_type,
            "expiration_time": (datetime.now(timezone.utc) + timedelta(hours=1)).isoformat()}
    if album:
        form["album"] = album
    for p in ("read", "write", "appropriate", "download"):
        form[f"{p}_permission"] = "true" if perms.get(p) else "false"
    if scope_type == "user":
        form["restricted"] = "true"  # narrowed to these flags (a KHEOPS-style personal token acts as its user)
    r = user.client.post("/capabilities", data=form)
    assert r.status_code == 201, r.text
    return r.json()["secret"]

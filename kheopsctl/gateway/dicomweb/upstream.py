"""What may be sent to the PACS: the last gate before any byte leaves the gateway for it.

Two invariants, checked on every request ``Pacs`` sends (``check_request``), whatever handler built it:

1. **Only validated parts.** The path must parse under the DICOMweb grammar below (UIDs, frame lists, bulk-data
   tag paths and a fixed set of suffixes: ``metadata``, ``rendered``, ``thumbnail`` on a study, series or
   instance; ``rendered`` and ``thumbnail`` on a frame list; ``bulk/<tag path>`` on an instance): no dot or
   empty segment, no percent sign, nothing Orthanc's own REST API (``/system``, ``/patients``, ``/changes``)
   could answer. Every header value is free of control characters
   (the raw relay's head is written by h11's strict grammar as well, see passthrough.py), and the Accept value is
   a media-range list that parses (``media_ranges``). Query keys are attribute keywords, tags or DICOMweb
   parameters; values carry no control characters.
2. **Only the approved resource.** Each request starts with nothing approved (``begin``). A handler approves what
   the decider allowed, exactly: one study, and in it the series it may view (and which of them it may download).
   A path naming another study, another series, or a whole-instance retrieve (download) of a series approved for
   viewing only, is refused with 403 before it is sent. Requests the gateway makes on its own behalf (STOW and
   the index refresh that follows, the readiness probe) are marked ``internal`` and are held to the grammar only.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import re
from dataclasses import dataclass, field
from typing import Iterable, Mapping

from kheopsctl.gateway.errors import ApiError

log = logging.getLogger("kheopsctl.gateway.upstream")

UID_RE = re.compile(r"[0-9]+(\.[0-9]+)*")
FRAMES_RE = re.compile(r"[1-9][0-9]{0,8}(,[1-9][0-9]{0,8}){0,4095}")
# a bulk-data tag path: a tag, then (item index, tag) pairs into sequences, e.g. 7FE00010 or 0040A730/1/0040A160
BULK_RE = re.compile(r"[0-9A-Fa-f]{8}(/[0-9]{1,6}/[0-9A-Fa-f]{8}){0,8}")
SUFFIXES = frozenset({"metadata", "rendered", "thumbnail"})
# whole instances or raw values: these need the download right on the series
DOWNLOAD_KINDS = frozenset({"retrieve", "bulk"})

_CTL_RE = re.compile(r"[\x00-\x1f\x7f]")
_QUERY_KEY_RE = re.compile(r"[A-Za-z][A-Za-z0-9]{0,63}|[0-9A-Fa-f]{8}(\.[0-9A-Fa-f]{8}){0,7}")
MAX_QUERY_VALUE = 1024
MAX_QUERY_ITEMS = 64


def is_uid(value: str) -> bool:
    return len(value) <= 64 and UID_RE.fullmatch(value) is not None


def check_bulk_path(rest: str) -> str:
    """A bulk-data tail (``.../bulk/<rest>``): a tag path only, never a free path."""
    if len(rest) > 160 or BULK_RE.fullmatch(rest) is None:
        raise ApiError(400, "malformed bulkdata path")
    return rest


def check_frames(frames: str) -> str:
    if len(frames) > 40960 or FRAMES_RE.fullmatch(frames) is None:
        raise ApiError(400, "malformed frame list")
    return frames


@dataclass(frozen=True)
class Target:
    """A parsed upstream path: which resource it names and what kind of answer it asks for."""

    study: str | None
    series: str | None
    sop: str | None
    kind: str  # qido, retrieve, metadata, rendered, thumbnail, frames, bulk


def parse_path(path: str) -> Target:
    """Parse an upstream path under the DICOMweb grammar; anything else raises ValueError."""
    if not path.startswith("/") or "%" in path or "\\" in path:
        raise ValueError("not a plain absolute path")
    segs = path[1:].split("/")
    if any(s in ("", ".", "..") for s in segs):
        raise ValueError("empty or dot segment")
    if segs[0] in ("series", "instances") and len(segs) == 1:
        return Target(None, None, None, "qido")
    if segs[0] != "studies":
        raise ValueError("outside /studies")
    if len(segs) == 1:
        return Target(None, None, None, "qido")
    study = _uid(segs[1])
    rest = segs[2:]
    if not rest:
        return Target(study, None, None, "retrieve")
    if len(rest) == 1:
        if rest[0] in ("series", "instances"):
            return Target(study, None, None, "qido")
        if rest[0] in SUFFIXES:
            return Target(study, None, None, rest[0])
        raise ValueError("unknown study resource")
    if rest[0] != "series":
        raise ValueError("unknown study resource")
    series = _uid(rest[1])
    rest = rest[2:]
    if not rest:
        return Target(study, series, None, "retrieve")
    if len(rest) == 1:
        if rest[0] == "instances":
            return Target(study, series, None, "qido")
        if rest[0] in SUFFIXES:
            return Target(study, series, None, rest[0])
        raise ValueError("unknown series resource")
    if rest[0] != "instances":
        raise ValueError("unknown series resource")
    sop = _uid(rest[1])
    rest = rest[2:]
    if not rest:
        return Target(study, series, sop, "retrieve")
    if len(rest) == 1 and rest[0] in SUFFIXES:
        return Target(study, series, sop, rest[0])
    if rest[0] == "frames" and len(rest) in (2, 3):
        if FRAMES_RE.fullmatch(rest[1]) is None:
            raise ValueError("malformed frame list")
        if len(rest) == 2:
            return Target(study, series, sop, "frames")
        if rest[2] in ("rendered", "thumbnail"):  # a frame's thumbnail: a viewing answer, like rendered
            return Target(study, series, sop, rest[2])
        raise ValueError("unknown frame resource")
    if rest[0] == "bulk" and len(rest) >= 2:
        if BULK_RE.fullmatch("/".join(rest[1:])) is None:
            raise ValueError("malformed bulk path")
        return Target(study, series, sop, "bulk")
    raise ValueError("unknown instance resource")


def _uid(seg: str) -> str:
    if not is_uid(seg):
        raise ValueError("malformed UID")
    return seg


# ---- media types (RFC 9110 section 5.6 / 8.3.1 / 12.5.1) ------------------------------------------------------

_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_QUOTED = r'"(?:[\t \x21\x23-\x5b\x5d-\x7e]|\\[\t \x21-\x7e])*"'
_PARAM = rf"[ \t]*;[ \t]*{_TOKEN}=(?:{_TOKEN}|{_QUOTED})"
_RANGE_RE = re.compile(rf"(?:\*/\*|{_TOKEN}/\*|{_TOKEN}/{_TOKEN})(?:{_PARAM})*")
MAX_ACCEPT = 2048


def media_ranges(value: str) -> str:
    """An Accept value, checked against the media-range grammar (each comma-separated range, parameters with
    token or quoted-string values); returned unchanged. Raises 400 on anything else."""
    if len(value) > MAX_ACCEPT:
        raise ApiError(400, "Accept value too long")
    ranges = split_ranges(value)
    if not ranges or any(_RANGE_RE.fullmatch(r) is None for r in ranges):
        raise ApiError(400, "malformed Accept value")
    return value


def split_ranges(value: str) -> list[str]:
    """Split on commas outside quoted strings (a transfer-syntax list may sit in quotes)."""
    out, cur, quoted, escaped = [], [], False, False
    for ch in value:
        if quoted:
            cur.append(ch)
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                quoted = False
        elif ch == ",":
            out.append("".join(cur).strip(" \t"))
            cur = []
        else:
            if ch == '"':
                quoted = True
            cur.append(ch)
    if quoted:
        return []
    out.append("".join(cur).strip(" \t"))
    return [r for r in out if r]


def check_header_value(name: str, value: str) -> None:
    if _CTL_RE.search(value.replace("\t", " ")) or len(value) > 8192:
        raise ApiError(400, f"invalid {name} value")


def check_query(params) -> list[tuple[str, str]]:
    """Forwarded query parameters: known shapes of keys, bounded values without control characters."""
    items = list(params.items() if isinstance(params, Mapping) else params or [])
    if len(items) > MAX_QUERY_ITEMS:
        raise ApiError(400, "too many query parameters")
    for k, v in items:
        if not isinstance(k, str) or _QUERY_KEY_RE.fullmatch(k) is None:
            raise ApiError(400, "malformed query parameter name")
        v = str(v)
        if len(v) > MAX_QUERY_VALUE or _CTL_RE.search(v):
            raise ApiError(400, f"invalid value for query parameter {k}")
    return [(k, str(v)) for k, v in items]


# ---- approval ------------------------------------------------------------------------------------------------

@dataclass
class Approval:
    """What the decider allowed in this request. ``series`` maps a series UID to its download right."""

    study: str | None = None
    series: dict[str, bool] = field(default_factory=dict)
    study_query: bool = False  # study-level QIDO through the PACS (its answer is filtered to ``series``)
    internal: bool = False


_APPROVAL: contextvars.ContextVar[Approval | None] = contextvars.ContextVar("kheops_upstream_approval", default=None)


def begin() -> None:
    """A new client request: nothing approved yet (called by the path guard middleware for every request)."""
    _APPROVAL.set(Approval())


def approve(study: str, series: Mapping[str, bool] | Iterable[str], *, study_query: bool = False) -> None:
    """The decider allowed ``study`` and, in it, ``series`` (UID -> may download, or UIDs viewable only)."""
    found = _APPROVAL.get()
    if found is None or found.internal:
        found = Approval()
        _APPROVAL.set(found)
    found.study = study
    found.series = dict(series) if isinstance(series, Mapping) else {s: False for s in series}
    found.study_query = study_query


@contextlib.contextmanager
def internal():
    """The gateway's own requests (STOW, index refresh, readiness): the grammar still applies."""
    token = _APPROVAL.set(Approval(internal=True))
    try:
        yield
    finally:
        _APPROVAL.reset(token)


def mark_internal() -> None:
    """For a handler whose every PACS request is the gateway's own (STOW): the rest of this request."""
    _APPROVAL.set(Approval(internal=True))


def check_request(method: str, path: str, headers: Mapping[str, str], params=None) -> None:
    """The final guard: raise 403 unless this request is well-formed and lies under the approved resource."""
    try:
        target = parse_path(path)
    except ValueError as exc:
        _refuse(method, path, str(exc))
    for name, value in headers.items():
        check_header_value(name, value)
        if name.lower() == "accept":
            media_ranges(value)
    if params:
        check_query(params)
    approval = _APPROVAL.get()
    if approval is None or approval.internal:
        # outside a client request (None: background work, tests) or the gateway's own: grammar only
        if method not in ("GET", "POST") or (method == "POST" and path != "/studies"):
            _refuse(method, path, "method")
        return
    if method != "GET":
        _refuse(method, path, "only GET on behalf of a client")
    if target.study is None or target.study != approval.study:
        _refuse(method, path, "study not approved")
    if target.series is None:
        if not (target.kind == "qido" and approval.study_query):
            _refuse(method, path, "study-level request not approved")
        return
    if target.series not in approval.series:
        _refuse(method, path, "series not approved")
    if target.kind in DOWNLOAD_KINDS and not approval.series[target.series]:
        _refuse(method, path, "download not approved")


def _refuse(method: str, path: str, why: str):
    # a gateway bug or an attack that got past a handler: never sent, logged without the query string
    log.error("upstream request refused (%s): %s %s", why, method, path[:200])
    raise ApiError(403, "request refused")

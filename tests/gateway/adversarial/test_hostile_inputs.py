"""Invariant, for hostile path tails, path parameters, query values and header values sent byte for byte over a
raw socket (httpx would resolve ``..`` before sending): no reply carries another user's data (the victim's
patient, UIDs, member emails) or anything of Orthanc's own REST API (``/system``, ``/patients``, ``/changes``,
Orthanc ids); no reply is a 5xx; no request hangs; the PACS's instance list and the gateway's tables are
unchanged. A request the HTTP parser refuses (a 4xx, or the connection closed without a reply) is a refusal.

The attacker is legitimate: a user with download rights on one instance of their own (the path a traversal
starts from), and the same through a share link and through a viewer token bound to another study.
Generation is hypothesis with a fixed budget (derandomized: the same cases every run) plus the known exploits
as explicit examples. The CR/LF cases also check that no second request reached the PACS: the smuggle
target study is still there and Orthanc's change log shows no deletion.
"""

from __future__ import annotations

from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.gateway.adversarial.conftest import PUBLIC, ROUTES, fill, leaks, raw_request, slots

BUDGET = settings(max_examples=40, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
SMALL = settings(BUDGET, max_examples=6)
SETTINGS_QUERY = settings(BUDGET, max_examples=15)

# ---- building blocks of hostile input -----------------------------------------------------------------------

DOTS = ["..", "%2e%2e", "%2E%2E", "%2e%2E", "%2E%2e", "%2e.", ".%2E", "%252e%252e", "%c0%ae%c0%ae", "\uff0e\uff0e", "..%00",
        "..;", "...", ".", "%2e"]
SEPS = ["/", "%2F", "%2f", "%5C", "%5c", "\\", "//", "/./", "/%2e/", ";/", "%252F"]
# where a traversal would land: the DICOMweb root, Orthanc's REST root, the victim's resources
TARGETS = ["studies", "studies?PatientName=*", "dicom-web/studies", "system", "patients", "changes", "instances",
           "statistics", "series", "studies/{st}", "studies/{st}/series/{se}", "studies/{st}/metadata",
           "studies/{st}/series/{se}/instances/{sop}", "dicom-web/studies/{st}/series/{se}/metadata",
           "albums/{album}/users", "api/albums/{album}/users"]
LEADS = ["", "7fe00010/", "/", "./"]

traversals = st.builds(lambda lead, dots, sep, target: lead + sep.join(dots) + sep + target,
                       st.sampled_from(LEADS), st.lists(st.sampled_from(DOTS), min_size=1, max_size=12),
                       st.sampled_from(SEPS), st.sampled_from(TARGETS))
noise = st.lists(st.sampled_from(list("./%2eEfF5cC\\;?#*0a ") + ["\u00e9", "\x00", "\r", "\n", "\t", "%0d",
                                                                 "%0a", "%00", "\u202e"]),
                 max_size=48).map("".join)
tails = st.one_of(traversals, noise)

SEGMENTS = st.one_of(
    st.sampled_from(["..", ".", "%2e%2e", "%2E%2E", "%2e", "", "%2F", "%2F..%2F..%2F..%2Fsystem", "%00", "x%00",
                     "%0d%0aX-Injected:%201", "a%5Cb", "\u00e9", "%C3%A9", "%", "%zz", "*", "1.2.3%00",
                     "1" * 3000, "{st}%2F..%2F..%2F..", "{st}/../{st}", "%7B%7D", "null", "-1", "0"]),
    traversals, noise)

INJECTIONS = ["\r\nX-Injected: 1", "\r\n\r\nGET /system HTTP/1.1\r\nHost: x\r\n\r\n", "\n", "\r", "\x00",
              "application/dicom\r\nConnection: keep-alive", "*/*; q=0.5\r\n", "x" * 9000, "\u00e9\u202e",
              "multipart/related; type=\"application/dicom\r\n\"", "application/json, text/html;level=1\x7f"]
values = st.one_of(st.sampled_from(INJECTIONS), st.text(max_size=64),
                   st.builds(lambda a, b: a + b, st.sampled_from(INJECTIONS), st.text(max_size=16)))
QUERY_NAMES = ["accept", "includefield", "limit", "offset", "PatientID", "StudyInstanceUID", "fuzzymatching",
               "contentType", "viewport", "quality", "album", "inbox", "access_token", "x\r\ny"]


def esc(text: str, raw_safe: str = "") -> bytes:
    """``text`` percent-encoded except ``raw_safe`` characters, which go on the wire as they are."""
    return quote(text, safe=raw_safe, encoding="utf-8", errors="surrogateescape").encode()


def wire(text: str) -> bytes:
    """A path as given (traversal tokens already spelled the way they should travel), UTF-8 for the rest."""
    return text.encode("utf-8", "surrogateescape")


# ---- the attacker's own footing -----------------------------------------------------------------------------


class Footing:
    """One legitimate identity and the path of one instance it may download."""

    def __init__(self, world, kind: str):
        self.world = world
        self.cred = world.creds[kind]
        own = world.link_study if kind in ("share_link", "viewer_other_study") else world.other_study
        s = own.series[0]
        self.instance = f"/studies/{own.study_uid}/series/{s.series_uid}/instances/{s.sop_uids[0]}"
        self.series = f"/studies/{own.study_uid}/series/{s.series_uid}"
        self.study = f"/studies/{own.study_uid}"
        self.own = own
        self.markers = world.markers(self.cred)
        self.values = {"st": world.st, "se": world.se, "sop": world.sop, "album": world.album}

    def target(self, rest: str) -> bytes:
        """``/api/<rest>`` as this identity sends it (a share link puts its token in the path)."""
        return wire(self.cred.prefix() + rest)

    def headers(self) -> list[tuple[bytes, bytes]]:
        return [(k.encode(), v.encode()) for k, v in self.cred.headers().items()]

    def expand(self, text: str) -> str:
        for k, v in self.values.items():
            text = text.replace("{" + k + "}", v)
        return text


def check(footing: Footing, reply, sent: bytes, baseline, snapshot) -> None:
    bad = [s for s in reply.statuses if s >= 500]
    assert not bad, f"server error {bad} for {sent[:300]!r}: {reply.raw[:300]!r}"
    if any(200 <= s < 300 for s in reply.statuses):
        found = leaks(reply.raw, sent, footing.markers)
        assert not found, f"{reply.statuses} with another user's data {found} for {sent[:300]!r}"
    changes = baseline.diff(snapshot())
    assert not changes, f"{sent[:300]!r} changed {changes}"


@pytest.fixture(scope="module", params=["other_user", "share_link", "viewer_other_study"])
def footing(request, world) -> Footing:
    f = Footing(world, request.param)
    # the footing is real: this identity does download its own instance
    r = httpx.get(world.gateway + f.cred.prefix() + f.instance, headers=f.cred.headers(), timeout=30)
    assert r.status_code == 200 and len(r.content) > 1000, r.text[:200]
    return f


# ---- path tails ---------------------------------------------------------------------------------------------


def test_bulk_tail_reaches_nothing_else(footing, snapshot):
    baseline = snapshot()

    @BUDGET
    @given(tail=tails)
    @example(tail="../" * 7 + "studies")               # whole-PACS QIDO (issue 9 #1)
    @example(tail="%2E%2E/" * 7 + "studies")
    @example(tail="../" * 8 + "system")                # Orthanc's REST root
    @example(tail="%2e%2e/" * 8 + "patients")
    @example(tail="..%2F" * 8 + "changes")
    @example(tail="../" * 6 + "{st}/series/{se}")       # another user's series
    @example(tail="../" * 6 + "{st}/series/{se}/metadata")
    def attack(tail):
        target = footing.target(footing.instance + "/bulk/") + wire(footing.expand(tail))
        reply = raw_request(footing.world.gateway, target, headers=footing.headers())
        check(footing, reply, target, baseline, snapshot)

    attack()


def test_tail_after_the_api_prefix_reaches_nothing_else(footing, snapshot):
    """Right after ``/api/`` (or ``/api/link/<token>/``): dot segments back out of the prefix and into it."""
    baseline = snapshot()

    @BUDGET
    @given(tail=tails)
    @example(tail="../api/albums/{album}/users")
    @example(tail="%2e%2e/studies/{st}/series/{se}/metadata")
    @example(tail="studies/../albums/{album}/events")
    @example(tail="./studies/{st}/metadata")
    @example(tail="studies/{st}/series/{se}/instances/{sop}/bulk/" + "../" * 8 + "system")
    def attack(tail):
        target = footing.target("/") + wire(footing.expand(tail))
        reply = raw_request(footing.world.gateway, target, headers=footing.headers())
        check(footing, reply, target, baseline, snapshot)

    attack()


# ---- every path parameter slot of every route ---------------------------------------------------------------

SLOT_CASES = [(path, method, slot) for (path, method) in ROUTES if (path, method) not in PUBLIC
              for slot in slots(path)]


def _fill_values(world, path: str, method: str) -> dict[str, str]:
    """GETs: the attacker's own resources (so the decider approves, and only the hostile slot is tested);
    writes: the victim's (so any success would be an attack)."""
    if method == "GET":
        o = world.other_study
        return {"study": o.study_uid, "series": o.series[0].series_uid, "sop": o.series[0].sop_uids[0],
                "frames": "1", "rest": "7fe00010", "album": world.other_album, "user": world.other.sub,
                "id": world.other_webhook if "webhooks" in path else world.other_capability_id}
    return {"study": world.st, "series": world.se, "sop": world.sop, "frames": "1", "rest": "7fe00010",
            "album": world.album, "user": world.member.sub,
            "id": world.webhook if "webhooks" in path else world.capability_id}


@pytest.mark.parametrize("path,method,slot", SLOT_CASES, ids=[f"{m} {p} {{{s}}}" for p, m, s in SLOT_CASES])
def test_hostile_path_parameter(world, snapshot, path, method, slot):
    footing = Footing(world, "other_user")
    attack_spec = ROUTES[(path, method)][0]
    body, extra = b"", []
    if attack_spec.stow:
        body, ctype = world.graft
        extra = [(b"Content-Type", ctype.encode())]
    elif attack_spec.form is not None:
        body = "&".join(f"{quote(k)}={quote(v)}" for k, v in attack_spec.form(world, footing.cred).items()).encode()
        extra = [(b"Content-Type", b"application/x-www-form-urlencoded")]
    baseline = snapshot()

    @SMALL
    @given(value=SEGMENTS)
    @example(value="..")
    @example(value="%2E%2E")
    def attack(value):
        params = {k: v for k, v in _fill_values(world, path, method).items()}
        params[slot] = "\x00SLOT\x00"
        text = fill(path, params)
        head, _, tail = text.partition("\x00SLOT\x00")
        target = wire(head) + wire(footing.expand(value)) + wire(tail)
        reply = raw_request(world.gateway, target, method=method.encode(), headers=footing.headers() + extra,
                            body=body)
        check(footing, reply, target, baseline, snapshot)

    attack()


# ---- query values and header values -------------------------------------------------------------------------

QUERY_ROUTES = ["{instance}", "{series}", "{study}", "{instance}/metadata", "{instance}/frames/1",
                "{instance}/rendered", "{series}/rendered", "{study}/instances", "{series}/instances",
                "{instance}/bulk/7fe00010", "{study}/thumbnail", "/studies", "/wado"]


def _route(footing: Footing, template: str) -> str:
    return template.format(instance=footing.instance, series=footing.series, study=footing.study)


@pytest.mark.parametrize("template", QUERY_ROUTES)
def test_hostile_query_values(footing, snapshot, template):
    baseline = snapshot()
    path = _route(footing, template)
    wado = ""
    if template == "/wado":
        s = footing.own.series[0]
        wado = (f"requestType=WADO&studyUID={footing.own.study_uid}&seriesUID={s.series_uid}"
                f"&objectUID={s.sop_uids[0]}&")

    @SETTINGS_QUERY
    @given(name=st.sampled_from(QUERY_NAMES), value=values, raw=st.booleans())
    @example(name="accept", value="application/dicom\r\nX-Injected: 1", raw=False)
    @example(name="includefield", value="all\r\n\r\nGET /system HTTP/1.0\r\n\r\n", raw=False)
    @example(name="limit", value="9" * 400, raw=False)
    def attack(name, value, raw):
        # raw: reserved characters as they are (what survives on a request line), else all percent-encoded
        q = esc(name) + b"=" + (esc(value, raw_safe="/?:@!$'()*+,;=.") if raw else esc(value))
        target = footing.target(path) + b"?" + wado.encode() + q
        reply = raw_request(footing.world.gateway, target, headers=footing.headers())
        check(footing, reply, target, baseline, snapshot)

    attack()


@pytest.mark.parametrize("template", ["{instance}", "{series}", "{study}", "{instance}/metadata",
                                      "{instance}/frames/1", "{instance}/bulk/7fe00010"])
def test_hostile_accept_header(footing, snapshot, template):
    baseline = snapshot()
    path = _route(footing, template)

    @SETTINGS_QUERY
    @given(value=values)
    @example(value="application/dicom\r\nX-Injected: 1")
    @example(value="application/dicom\r\n\r\nDELETE /studies HTTP/1.1")
    @example(value="application/dicom\x00")
    def attack(value):
        target = footing.target(path)
        header = value.encode("utf-8", "surrogateescape")
        reply = raw_request(footing.world.gateway, target, headers=footing.headers() + [(b"Accept", header)])
        check(footing, reply, target + header, baseline, snapshot)

    attack()


# ---- CR/LF smuggling: no second request may reach the PACS --------------------------------------------------


def _orthanc_study_id(orthanc, study_uid: str) -> str:
    r = httpx.post(orthanc.base_url + "/tools/lookup", content=study_uid, timeout=30)
    r.raise_for_status()
    found = [x["ID"] for x in r.json() if x["Type"] == "Study"]
    assert found, f"the smuggle target {study_uid} is not in the PACS"
    return found[0]


def _changes_since(orthanc, last: int) -> list[dict]:
    r = httpx.get(orthanc.base_url + "/changes", params={"since": last, "limit": 1000}, timeout=30)
    r.raise_for_status()
    # Stable* changes come by themselves, a minute after a store; anything else is a write
    return [c for c in r.json()["Changes"] if not c["ChangeType"].startswith("Stable")]


def test_crlf_in_accept_smuggles_no_request_to_the_pacs(world, orthanc, snapshot):
    footing = Footing(world, "other_user")
    victim_id = _orthanc_study_id(orthanc, world.smuggle_study.study_uid)
    smuggled = [f"DELETE /studies/{victim_id} HTTP/1.1\r\nHost: pacs\r\nContent-Length: 0\r\n\r\n",
                f"DELETE /studies/{victim_id} HTTP/1.0\r\n\r\n"]
    payloads = []
    for req in smuggled:
        for nl in ("\r\n", "\n"):
            head = f"application/dicom{nl}Connection: keep-alive{nl}Content-Length: 0{nl}{nl}"
            payloads.append(head + req.replace("\r\n", nl))
    payloads.append("application/dicom\r\nX-Injected: 1\r\nAuthorization: Basic YWRtaW46YWRtaW4=")
    last = httpx.get(orthanc.base_url + "/changes", params={"last": ""}, timeout=30).json()["Last"]
    baseline = snapshot()
    routes = [footing.instance, footing.series, footing.study, footing.instance + "/metadata",
              footing.instance + "/frames/1", footing.instance + "/bulk/7fe00010", footing.instance + "/rendered"]
    for path in routes:
        for p in payloads:
            for q in (esc(p), esc(p, raw_safe="/;=")):
                target = footing.target(path) + b"?accept=" + q
                reply = raw_request(world.gateway, target, headers=footing.headers())
                check(footing, reply, target, baseline, snapshot)
    assert _orthanc_study_id(orthanc, world.smuggle_study.study_uid) == victim_id
    writes = _changes_since(orthanc, last)
    assert not writes, f"requests reached the PACS and changed it: {writes[:5]}"
    assert not baseline.diff(snapshot())

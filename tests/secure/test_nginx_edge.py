"""The shipped edge: both rendered nginx templates (insecure kheops.conf, TLS tls.conf) run by Debian's nginx in
front of a recorder that stands in for the gateway and keeps the raw request head nginx forwarded.

Invariants, whatever the request: nothing reaches the gateway unless its path is already in normal form (no dot
or empty segment, no encoded separator or unreserved character, no control byte, no overlong or double escape),
and then it arrives byte for byte as sent; no credential the client sent shows in nginx's logs; readiness answers
only the Docker network. Requests are raw bytes on a socket: no HTTP client gets to normalise them first.

Addresses simulate Docker's: nginx listens on 127.1.0.1 ("the container"), a peer in 127.1.0.0/16 is on its
network (the bridge gateway docker-proxy connects from), 127.0.0.1 is a client from elsewhere.
"""

from __future__ import annotations

import base64
import re
import secrets
import string

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.secure.pki import make_pki
from tests.services.nginx import Edge, rendered_nginx, start_edge

EDGE = "127.1.0.1"
INSIDE = "127.1.0.9"
OUTSIDE = "127.0.0.1"
HOST_BIND = "127.3.0.7"  # site.bind_address of the TLS site: the host's own connections arrive from it

TLS_SETTINGS = {"project": "kedge", "site": {"root_url": "https://kheops.test", "mode": "custom",
                                             "bind_address": HOST_BIND}}


@pytest.fixture(scope="module")
def edges(tmp_path_factory):
    plain_dir = tmp_path_factory.mktemp("edge-http")
    plain = start_edge(rendered_nginx({}, plain_dir), plain_dir, address=EDGE)
    tls_dir = tmp_path_factory.mktemp("edge-tls")
    pki = make_pki()
    pki.write(tls_dir / "certs", pki.leaf("kheops.test"))
    (tls_dir / "acme").mkdir()
    tls = start_edge(rendered_nginx(TLS_SETTINGS, tls_dir), tls_dir, address=EDGE, listens=("80", "443"),
                     paths={"/etc/letsencrypt/kheops/current/": str(tls_dir / "certs") + "/",
                            "/var/www/acme": str(tls_dir / "acme"),
                            # Keycloak's locations relay to the recorder too (an upstream{} name wins over DNS)
                            "set $keycloak http://keycloak:8080;": "set $keycloak http://kheops_gateway;"},
                     tls_root=pki.write_root(tls_dir / "root.pem"))
    yield {"http": plain, "tls": tls}
    plain.stop()
    tls.stop()


def send(edge: Edge, target: bytes, **kw) -> tuple[int | None, bytes]:
    if edge.tls_root is not None:
        kw.setdefault("port", "https")
        kw.setdefault("tls", True)
    return edge.request(target, **kw)


def body(raw: bytes) -> bytes:
    return raw.split(b"\r\n\r\n", 1)[-1]


# --- the normal form, stated independently of nginx's rules ----------------------------------------------------

UNRESERVED = frozenset((string.ascii_letters + string.digits + "-._~").encode())
ESCAPE = re.compile(rb"%([0-9A-Fa-f]{2})")


def _overlong(data: bytes) -> bool:
    """True if a lax UTF-8 decoder (one that accepts overlong and 5/6-byte forms) would read a multi-byte
    sequence as a code point a shorter form encodes, e.g. C0 AE as '.'."""
    minimum = {2: 0x80, 3: 0x800, 4: 0x10000, 5: 0x200000, 6: 0x4000000}
    for i, lead in enumerate(data):
        n = 2 if 0xC0 <= lead <= 0xDF else 3 if lead <= 0xEF else 4 if lead <= 0xF7 else 5 if lead <= 0xFB \
            else 6 if lead <= 0xFD else 0
        if lead < 0xC0 or not n:
            continue
        tail = data[i + 1:i + n]
        if len(tail) == n - 1 and all(0x80 <= b <= 0xBF for b in tail):
            cp = lead & (0x7F >> n)
            for b in tail:
                cp = cp << 6 | b & 0x3F
            if cp < minimum[n]:
                return True
    return False


def problems(target: bytes) -> list[str]:
    """Why a request-target is not in normal form (empty: it is)."""
    path, _, query = target.partition(b"?")
    found = []
    if not path.startswith(b"/"):
        found.append("not an absolute path")
    if any(b <= 0x20 or b == 0x7F for b in target):
        found.append("raw control byte or space")
    if b"#" in target:
        found.append("raw fragment")
    if any(b >= 0x80 for b in path):
        found.append("raw byte outside ASCII in the path")
    if b"\\" in path:
        found.append("raw backslash")
    if re.search(rb"%(?![0-9A-Fa-f]{2})", path):
        found.append("malformed escape")
    for value in (int(h, 16) for h in ESCAPE.findall(path)):
        if value in UNRESERVED:
            found.append(f"encoded unreserved {chr(value)!r}")
        if value in (0x2F, 0x5C):
            found.append("encoded separator")
    if any(int(h, 16) < 0x20 or int(h, 16) == 0x7F for h in ESCAPE.findall(target)):
        found.append("encoded control byte")
    segments = path.split(b"/")[1:]
    if b"" in segments[:-1]:
        found.append("empty segment")
    if any(s.split(b";")[0] in (b".", b"..") for s in segments):
        found.append("dot segment")
    decoded = ESCAPE.sub(lambda m: bytes([int(m.group(1), 16)]), path)
    if ESCAPE.search(decoded):
        found.append("double-encoded escape")
    if _overlong(decoded):
        found.append("overlong UTF-8")
    if any(b in (0xC0, 0xC1) or b >= 0xF5 for b in decoded):
        found.append("a byte no UTF-8 text has")
    return found


def test_the_spec_itself():
    """The normal-form predicate the properties rely on says what it should."""
    assert problems(b"/api/studies/1.2.3/series?includefield=0020000D&PatientName=Doe%5EJohn*") == []
    for bad in (b"/api/a/../b", b"/api/%2e%2E", b"/api/.%2e/x", b"/api//x", b"/api/a%2Fb", b"/api/a%5cb",
                b"/api/a\\b", b"/api/%00", b"/api/%252e", b"/api/%c0%ae", b"/api/%e0%80%ae", b"/api/%f8%80%80%80%ae",
                b"/api/..;/x", b"/api/l%69nk/x", b"/api/x?a=%0d%0a", b"/api/a#b", b"/api/%zz"):
        assert problems(bad), bad


# --- 1. only normal paths reach the gateway -----------------------------------------------------------------

@st.composite
def escapes(draw) -> bytes:
    """1-3 percent-escapes of any bytes, each hex digit in either case."""
    out = b""
    for value in draw(st.lists(st.integers(0, 255), min_size=1, max_size=3)):
        out += b"%" + "".join(c.lower() if draw(st.booleans()) else c for c in f"{value:02X}").encode()
    return out


@st.composite
def hostile_targets(draw) -> bytes:
    plain = st.sampled_from([b"studies", b"1.2.840.113619.2.55.3", b"series", b"instances", b"bulk", b"7FE00010",
                             b"frames", b"1,2,3", b"link", b"metadata", b"rendered", b"*", b"a^b", b"x%20y",
                             b"alice%40example.com", b"health", b"ready", b"api", b"...", b".a", b"a."])
    dots = st.sampled_from([b".", b"..", b"%2e", b"%2E", b"%2e%2e", b"%2E%2e", b".%2e", b"%2e.", b"%252e%252e",
                            b"%252E", b"%25252e", b"%c0%ae", b"%C0%AE%c0%ae", b"%e0%80%ae", b"%f0%80%80%ae",
                            b"%f8%80%80%80%ae", b"..;", b".;x", b"..%00", b"..%2f", b"..%5C", b"..\\", b"%2e%2e;"])
    escaped = escapes()
    raw = st.binary(min_size=1, max_size=3)
    words = st.text(string.ascii_letters + string.digits + "-._~!$&'()*+,;=:@^", min_size=1, max_size=6).map(
        str.encode)
    segment = st.one_of(plain, dots, escaped, raw, words)
    separator = st.sampled_from([b"/", b"/", b"/", b"/", b"//", b"%2f", b"%2F", b"%5c", b"%5C", b"\\", b"/./",
                                 b"/../", b"%252f", b"/%2e/", b"/%00/", b"%c0%af"])
    target = draw(st.sampled_from([b"/api/", b"/api/link/LinkToken123/", b"/health/", b"/", b"/realms/kheops/"]))
    for i, seg in enumerate(draw(st.lists(segment, min_size=1, max_size=6))):
        target += (draw(separator) if i else b"") + seg
    if draw(st.booleans()):
        target += b"?" + draw(st.one_of(words, escaped, st.just(b"includefield=00100010&limit=1")))
    return target


@pytest.mark.parametrize("kind", ["http", "tls"])
@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(target=hostile_targets())
def test_only_normal_paths_reach_the_gateway_and_unchanged(edges, kind, target):
    edge = edges[kind]
    before = len(edge.recorder.seen)
    status, raw = send(edge, target)
    forwarded = [f.target for f in edge.recorder.seen[before:]]
    for fwd in forwarded:
        assert problems(fwd) == [], f"{target!r} reached the gateway as {fwd!r}: {problems(fwd)}"
        # byte for byte, unless a raw CR/LF ended nginx's request line early (then that shorter request is what
        # nginx received, and it is in normal form)
        assert fwd == target or (target.startswith(fwd) and target[len(fwd):len(fwd) + 1] in (b"\r", b"\n")), \
            (target, fwd)
    wrong = problems(target)
    if wrong and not re.search(rb"[\r\n]", target):
        assert forwarded == [], f"{target!r} ({wrong}) was forwarded"
        assert status in (400, None), (target, status, raw[:200])
    if not wrong and target.startswith(b"/api/"):
        assert forwarded == [target], (target, status, raw[:200])


@pytest.mark.parametrize("kind", ["http", "tls"])
@pytest.mark.parametrize("target", [
    # the issue's traversal, raw and encoded, through a share link and to Orthanc's REST paths
    b"/api/studies/1.2.3/series/1.2.3.4/instances/1.2.3.4.5/bulk/../../../../../studies",
    b"/api/studies/1.2.3/series/1.2.3.4/instances/1.2.3.4.5/bulk/%2E%2E/%2E%2E/%2E%2E/%2E%2E/%2E%2E/studies",
    b"/api/link/AbC123/studies/1/series/2/instances/3/bulk/%2e%2e%2f%2e%2e%2f%2e%2e%2f..%2fsystem",
    b"/api/studies/1/series/2/instances/3/bulk/..%5c..%5c..%5cpatients",
    b"/api/studies/1/series/2/instances/3/bulk//changes",
    b"/api/studies/1/series/2/instances/3/bulk/./x",
    b"/api/studies/1/bulk/%c0%ae%c0%ae/system",
    b"/api/../health/ready",
    b"/health/%2e%2e/api/studies",
    b"/api/studies?accept=application/dicom%0d%0aX-Injected:%201",
])
def test_traversal_from_the_issue_is_refused_with_a_json_error(edges, kind, target):
    edge = edges[kind]
    before = len(edge.recorder.seen)
    status, raw = send(edge, target)
    assert status == 400 and edge.recorder.seen[before:] == []
    assert b"application/json" in raw.split(b"\r\n\r\n", 1)[0] and body(raw).startswith(b'{"error": ')


def test_absolute_form_targets_are_checked_on_their_path(edges):
    edge = edges["http"]
    before = len(edge.recorder.seen)
    assert send(edge, b"http://kheops.test/api/studies/%2e%2e/x")[0] == 400
    assert edge.recorder.seen[before:] == []
    assert send(edge, b"http://kheops.test/api/studies/1.2.3")[0] == 200
    assert edge.recorder.seen[-1].target == b"/api/studies/1.2.3"


NORMAL = [
    b"/api/studies?includefield=00100010&includefield=StudyDescription&PatientName=Doe%5EJohn*&limit=10&offset=0",
    b"/api/studies?PatientName=Doe^John&PatientID=*&fuzzymatching=true",
    b"/api/studies?PatientName=Smith%20Jr&StudyDate=20200101-20201231&ModalitiesInStudy=CT,MR",
    b"/api/studies/1.2.840.113619.2.55.3.604688119.969.1268071029.320/series/1.2.3.4/instances/1.2.3.4.5/frames/1,2,3",
    b"/api/studies/1.2.3/series/1.2.3.4/instances/1.2.3.4.5/frames/1,2,3/rendered?viewport=512,512&quality=90",
    b"/api/studies/1.2.3/series/1.2.3.4/instances/1.2.3.4.5/bulk/7FE00010",
    b"/api/studies/1.2.3/series/1.2.3.4/instances/1.2.3.4.5/bulk/00540016/0/00181072",
    b"/api/studies/1.2.3/metadata",
    b"/api/studies/1.2.3/series?includefield=0008103E&00080060=CT",
    b"/api/link/AbC-123_xyz/studies?includefield=0020000D&StudyDate=20200101-",
    b"/api/link/AbC-123_xyz/studies/1.2.3/series/1.2.3.4/thumbnail",
    b"/api/wado?requestType=WADO&studyUID=1.2.3&seriesUID=1.2.3.4&objectUID=1.2.3.4.5&contentType=application%2Fdicom",
    b"/api/albums/Xy7zQ2/users/alice%40example.com",
    b"/api/albums/Xy7zQ2/users/first.last+kheops@example.com/admin",
    b"/api/albums?favorite=true&sort=-created_time&limit=20",
    b"/api/capabilities?valid=true",
    b"/api/studies/",
    b"/health/live",
]


@pytest.mark.parametrize("kind", ["http", "tls"])
@pytest.mark.parametrize("target", NORMAL)
def test_kheops_and_dicomweb_urls_pass_through_unchanged(edges, kind, target):
    edge = edges[kind]
    assert problems(target) == []
    status, raw = send(edge, target, headers={b"X-Forwarded-For": b"6.6.6.6", b"Accept": b"application/dicom+json"},
                       test_id=(test_id := edge.next_id()))
    assert status == 200, raw[:300]
    (fwd,) = edge.recorder.by_id(test_id)
    assert fwd.target == target
    # the existing edge features still hold: nginx replaces X-Forwarded-For, keeps Host and Accept
    assert fwd.header(b"x-forwarded-for") == OUTSIDE.encode()
    assert fwd.header(b"host") == b"kheops.test" and fwd.header(b"accept") == b"application/dicom+json"


@given(uid=st.lists(st.integers(0, 10**12), min_size=2, max_size=12).map(lambda ns: ".".join(map(str, ns))),
       value=st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=20))
@settings(max_examples=100, deadline=None)
def test_any_uid_and_query_value_passes(edges, uid, value):
    """Property: a UID path and a percent-encoded query value (any printable text) are forwarded unchanged."""
    from urllib.parse import quote

    target = f"/api/studies/{uid}/series?PatientName={quote(value, safe='^*,')}&includefield=all".encode()
    edge = edges["http"]
    status, raw = send(edge, target, test_id=(test_id := edge.next_id()))
    assert status == 200, (target, raw[:200])
    assert [f.target for f in edge.recorder.by_id(test_id)] == [target]


# --- 2. no credential in nginx's logs --------------------------------------------------------------------------

token = st.text(string.ascii_letters + string.digits + "-_", min_size=20, max_size=40).map(
    lambda t: "Tk" + t)  # a letter prefix keeps tokens distinct from anything else in a log line


@st.composite
def credential_requests(draw) -> tuple[bytes, dict[bytes, bytes], list[str]]:
    """A request carrying credentials in the places a client may put them; returns (target, headers, secrets)."""
    link, bearer, basic_user, basic_pw, referer_tok = (draw(token) for _ in range(5))
    params = draw(st.lists(st.sampled_from(["access_token", "token", "subject_token", "code", "client_secret",
                                            "session_code", "key", "password", "ACCESS_TOKEN"]), max_size=5))
    values = [draw(token) for _ in params]
    query = "&".join([f"{p}={v}" for p, v in zip(params, values)] + draw(st.lists(
        st.sampled_from(["includefield=00100010", "limit=5", "PatientName=Doe%5EJohn"]), max_size=2)))
    query = draw(st.permutations(query.split("&"))) if query else []
    path = draw(st.sampled_from([
        "/api/link/{t}/studies", "/api/link/{t}/studies/1.2.3/series", "/api/link/{t}/",  # forwarded
        "/api/link/{t}/studies/%2e%2e/x", "/api//link/{t}/studies", "/api/lin%6b/{t}/x",  # refused, still logged
        "/api/link/{t}%2Fstudies", "/api/link/{t}/hangup", "/api/link/link/{t}/studies", "/api/studies",
        "/api/link/{t}/link/{t}/x", "/api/link/{t}/..;/link/{t}/x", "/api/%6Cin%6B/{t}/x", "/api\\link\\{t}",
        "/api%2flink%2F{t}%2fstudies", "/api/LINK/{t}/x", "/api/link//{t}/x",
    ]))
    target = (path.format(t=link) + ("?" + "&".join(query) if query else "")).encode()
    if draw(st.booleans()):
        authorization = b"Bearer " + bearer.encode()
        used = [bearer]
    else:
        authorization = b"Basic " + base64.b64encode(f"{basic_user}:{basic_pw}".encode())
        used = [basic_user, basic_pw, authorization.decode().split()[1]]
    headers = {b"Authorization": authorization,
               b"Referer": f"https://viewer.example/?access_token={referer_tok}".encode()}
    used += values + [referer_tok] + ([link] if "{t}" in path else [])
    return target, headers, used


@pytest.mark.parametrize("kind", ["http", "tls"])
@settings(max_examples=120, deadline=None)
@given(req=credential_requests())
def test_logs_never_hold_a_credential(edges, kind, req):
    edge = edges[kind]
    target, headers, used = req
    send(edge, target, headers=headers)
    logs = edge.access_log + edge.error_log
    for secret in used:
        assert secret not in logs, f"{secret} from {target!r} is in nginx's logs"
    assert headers[b"Authorization"].decode() not in logs


def test_the_masked_line_keeps_what_an_operator_needs(edges):
    edge = edges["http"]
    secret = "Tk" + secrets.token_urlsafe(24)
    send(edge, f"/api/link/{secret}/studies?includefield=00100010&access_token={secret}&limit=3".encode(),
         headers={b"User-Agent": b"edge-test/1"})
    line = edge.access_log.strip().splitlines()[-1]
    assert '"GET /api/link/***/studies?includefield=00100010&access_token=***&limit=3 HTTP/1.1" 200 ' in line
    assert line.startswith(OUTSIDE + " ") and '"edge-test/1"' in line and "upstream=200 unix:" in line
    # every line is in the masked format: the image's `main` format (raw $request) never writes for our servers
    assert all("upstream=" in ln for ln in edge.access_log.strip().splitlines())


def test_many_credentials_mask_the_whole_query(edges):
    edge = edges["http"]
    values = ["Tk" + secrets.token_hex(12) for _ in range(6)]
    send(edge, ("/api/studies?" + "&".join(f"token={v}" for v in values)).encode())
    line = edge.access_log.strip().splitlines()[-1]
    assert '"GET /api/studies?*** HTTP/1.1"' in line and not any(v in line for v in values)


def test_many_link_segments_mask_the_whole_path(edges):
    edge = edges["http"]
    tokens = ["Tk" + secrets.token_hex(12) for _ in range(5)]
    send(edge, ("/api" + "".join(f"/link/{tok}" for tok in tokens) + "/studies?limit=1").encode())
    line = edge.access_log.strip().splitlines()[-1]
    assert '"GET /***?limit=1 HTTP/1.1"' in line and not any(tok in line for tok in tokens)


@pytest.mark.parametrize("kind", ["http", "tls"])
def test_error_log_names_upstream_failures_without_credentials(edges, kind):
    edge = edges[kind]
    secret = "Tk" + secrets.token_urlsafe(24)
    assert send(edge, f"/api/link/{secret}/hangup".encode())[0] == 502
    assert send(edge, f"/api/hangup?access_token={secret}".encode())[0] == 502
    # a client mistake (nginx's own 400, logged at `info`) quoting the token
    send(edge, f"/api/link/{secret}/a b".encode())
    assert secret not in edge.error_log and secret not in edge.access_log
    # the cause of a 502 is still written, from the readiness probes' location
    assert send(edge, b"/health/live?hangup")[0] == 502
    assert re.search(r"\[error\].*upstream prematurely closed.*request: \"GET /health/live\?hangup", edge.error_log)


# --- 3. readiness only for the Docker network ---------------------------------------------------------------

@pytest.mark.parametrize("kind", ["http", "tls"])
def test_readiness_is_refused_from_outside_and_liveness_is_public(edges, kind):
    edge = edges[kind]
    before = len(edge.recorder.seen)
    for target in (b"/health/ready", b"/health/ready?x=1", b"/health/ready/", b"/health/anything", b"/health/"):
        status, raw = send(edge, target, source=OUTSIDE)
        assert status == 403 and body(raw).startswith(b'{"error": '), target
    assert send(edge, b"/health/%72eady", source=OUTSIDE)[0] == 400
    assert edge.recorder.seen[before:] == []
    assert send(edge, b"/health/live", source=OUTSIDE)[0] == 200
    assert [f.target for f in edge.recorder.seen[before:]] == [b"/health/live"]
    # nginx's own health answers everyone, and is not proxied
    assert send(edge, b"/nginx-health", source=OUTSIDE)[0] == 200


@pytest.mark.parametrize("kind", ["http", "tls"])
def test_readiness_answers_a_peer_on_the_docker_network(edges, kind):
    edge = edges[kind]
    status, _ = send(edge, b"/health/ready", source=INSIDE, test_id=(test_id := edge.next_id()))
    assert status == 200 and [f.target for f in edge.recorder.by_id(test_id)] == [b"/health/ready"]


def test_readiness_answers_the_host_on_its_bind_address(edges):
    """With site.bind_address set, the host's connections to its own address keep that source through DNAT."""
    edge = edges["tls"]
    assert send(edge, b"/health/ready", source=HOST_BIND)[0] == 200
    assert send(edge, b"/health/ready", source="127.3.0.8")[0] == 403
    # the insecure site binds 127.0.0.1 (docker-proxy carries it): no address rule beyond the network's
    assert send(edges["http"], b"/health/ready", source=HOST_BIND)[0] == 403


def test_the_compose_healthcheck_does_not_go_through_nginx(tmp_path):
    """The probe that gates `depends_on` asks the gateway's own port inside its container, so the nginx
    restriction cannot break it."""
    from kheopsctl.config import settings_from_dict
    from kheopsctl.deploy.layout import SiteLayout
    from kheopsctl.deploy.render import render_site

    layout = SiteLayout(tmp_path / "site")
    site = render_site(settings_from_dict({}), layout)
    compose = yaml.safe_load(site.files[layout.compose])
    probe = " ".join(compose["services"]["gateway"]["healthcheck"]["test"])
    assert "http://127.0.0.1:8000/health/ready" in probe

"""The site's nginx config as kheopsctl renders it, run by the host's Debian nginx on loopback, in front of a
recorder that stands in for the gateway's Unix socket and keeps the raw request head nginx forwarded.

Only container paths are mapped into a temp dir (socket, logs, certificates, ACME webroot) and `listen` lines
onto loopback addresses; every rule under test is the rendered text. The wrapping nginx.conf mirrors the official
image's (an http-level `main` access log on the same file), so a server that failed to replace it would show.
"""

from __future__ import annotations

import shutil
import socket
import socketserver
import ssl
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from kheopsctl.config import settings_from_dict
from kheopsctl.deploy.layout import SiteLayout
from kheopsctl.deploy.render import render_site

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
SOCKET = "/run/kheops-socket/gateway.sock"
LOGS = "/var/log/nginx/"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def rendered_nginx(data: dict, tmp: Path) -> str:
    """The nginx file exactly as `kheopsctl install` renders it for these kheops.toml settings."""
    site = render_site(settings_from_dict(data), SiteLayout(tmp / "site"))
    return next(c for p, c in site.files.items() if p.name == "kheops.conf")


@dataclass
class Forwarded:
    request_line: bytes
    headers: list[tuple[bytes, bytes]]

    @property
    def target(self) -> bytes:
        return self.request_line.split(b" ")[1]

    def header(self, name: bytes) -> bytes | None:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)


class Recorder:
    """An HTTP/1.1 server on a Unix socket recording each request head verbatim; it answers 200 with a small
    JSON body, or closes without answering when the target contains `hangup` (an upstream failure for nginx)."""

    def __init__(self, path: Path):
        self.path = path
        self.seen: list[Forwarded] = []
        recorder = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self):
                head = b""
                while b"\r\n\r\n" not in head:
                    chunk = self.request.recv(65536)
                    if not chunk:
                        return
                    head += chunk
                lines = head.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
                headers = [tuple(part.strip() for part in h.split(b":", 1)) for h in lines[1:]]
                fwd = Forwarded(lines[0], headers)
                recorder.seen.append(fwd)
                if b"hangup" in fwd.target:
                    return
                body = b'{"recorded": true}'
                self.request.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                                     + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body)

        class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
            daemon_threads = True

        self.server = Server(str(path), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def by_id(self, test_id: str) -> list[Forwarded]:
        return [f for f in self.seen if f.header(b"x-test-id") == test_id.encode()]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Edge:
    """A running nginx with the rendered site config; `request` sends raw bytes, nothing normalises them."""
    tmp: Path
    conf: str
    ports: dict[str, int]
    address: str
    recorder: Recorder
    process: subprocess.Popen
    tls_root: Path | None = None
    _ids: list[int] = field(default_factory=lambda: [0])

    @property
    def access_log(self) -> str:
        return (self.tmp / "logs" / "access.log").read_bytes().decode("latin-1")

    @property
    def error_log(self) -> str:
        return (self.tmp / "logs" / "error.log").read_bytes().decode("latin-1")

    def next_id(self) -> str:
        self._ids[0] += 1
        return f"t{self._ids[0]}"

    def request(self, target: bytes, *, method: bytes = b"GET", headers: dict[bytes, bytes] | None = None,
                source: str = "127.0.0.1", port: str = "http", tls: bool = False,
                test_id: str | None = None) -> tuple[int | None, bytes]:
        """Send one raw HTTP/1.1 request from `source`; (status or None if nginx closed, raw response)."""
        hdrs = {b"Host": b"kheops.test", b"Connection": b"close", **(headers or {})}
        if test_id:
            hdrs[b"X-Test-Id"] = test_id.encode()
        raw = method + b" " + target + b" HTTP/1.1\r\n" + b"".join(k + b": " + v + b"\r\n" for k, v in hdrs.items())
        sock = socket.socket()
        sock.settimeout(10)
        sock.bind((source, 0))
        sock.connect((self.address, self.ports[port]))
        if tls:
            ctx = ssl.create_default_context(cafile=str(self.tls_root))
            sock = ctx.wrap_socket(sock, server_hostname="kheops.test")
        with sock:
            sock.sendall(raw + b"\r\n")
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        if not data.startswith(b"HTTP/"):
            return None, data
        return int(data.split(b" ", 2)[1]), data

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)
        self.recorder.close()


def start_edge(conf: str, tmp: Path, *, address: str = "127.0.0.1", listens: tuple[str, ...] = ("80",),
               paths: dict[str, str] | None = None, tls_root: Path | None = None) -> Edge:
    """Run `conf` (a rendered site file) with its container paths mapped under `tmp`.

    `listens`: the container ports the config listens on ("80", "443"), each put on a free port of `address`.
    `paths`: further container paths to map (certificates, ACME webroot)."""
    assert Path(NGINX).exists(), "nginx is missing (apt-get install nginx)"
    (tmp / "logs").mkdir(parents=True, exist_ok=True)
    ports = {}
    mapping = {SOCKET: str(tmp / "gw.sock"), LOGS: f"{tmp}/logs/", **(paths or {})}
    for container in listens:
        ports["https" if container == "443" else "http"] = port = free_port(address)
        mapping[f"listen {container} "] = f"listen {address}:{port} "
    for old, new in mapping.items():
        assert old in conf, f"the rendered config no longer has {old!r}: update tests/services/nginx.py"
        conf = conf.replace(old, new)
    (tmp / "site.conf").write_text(conf)
    # the official image's nginx.conf, with its paths mapped; workers as root only because pytest's temp dirs
    # are private (0700), the container runs them as user nginx
    (tmp / "nginx.conf").write_text(
        f"user root;\nworker_processes 1;\npid {tmp}/nginx.pid;\nerror_log {tmp}/logs/error.log notice;\n"
        "events { worker_connections 256; }\n"
        "http {\n"
        "    default_type application/octet-stream;\n"
        "    log_format main '$remote_addr - $remote_user [$time_local] \"$request\" $status $body_bytes_sent '\n"
        "                    '\"$http_referer\" \"$http_user_agent\" \"$http_x_forwarded_for\"';\n"
        f"    access_log {tmp}/logs/access.log main;\n"
        f"    client_body_temp_path {tmp}/body;\n    proxy_temp_path {tmp}/proxy;\n"
        "    keepalive_timeout 65;\n"
        f"    include {tmp}/site.conf;\n"
        "}\n")
    test = subprocess.run([NGINX, "-t", "-c", str(tmp / "nginx.conf"), "-p", str(tmp)], capture_output=True, text=True)
    assert test.returncode == 0, test.stderr
    recorder = Recorder(tmp / "gw.sock")
    proc = subprocess.Popen([NGINX, "-c", str(tmp / "nginx.conf"), "-p", str(tmp), "-g", "daemon off;"],
                            stderr=subprocess.DEVNULL)
    for port in ports.values():
        for _ in range(200):
            try:
                socket.create_connection((address, port), timeout=0.2).close()
                break
            except OSError:
                if proc.poll() is not None:
                    raise AssertionError(f"nginx exited: {(tmp / 'logs' / 'error.log').read_text()}")
                time.sleep(0.025)
    return Edge(tmp, conf, ports, address, recorder, proc, tls_root)

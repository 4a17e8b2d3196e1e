"""The Docker side of backup and restore: streams in and out of containers and volumes, never through a file.

- ``exec_stream``: a command's stdout as chunks (``pg_dump`` into the archive);
- ``exec_feed``: chunks into a command's stdin (the archive into ``pg_restore``), over the exec's own socket;
- ``read_volume`` / ``write_volume``: a volume as a tar stream, through a throwaway container that is created
  but never started (Docker's archive API mounts its volumes for the copy);
- ``WriteLock``: a psql session that holds the gateway's write lock exclusively while the backup runs.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import time
from typing import Iterable, Iterator

from kheopsctl.errors import KheopsError
from kheopsctl.gateway.quiesce import WRITE_LOCK

SERVICE_LABEL = "com.docker.compose.service"
PROJECT_LABEL = "com.docker.compose.project"
LOCK_APP = "kheopsctl-backup-lock"


def service_container(client, project: str, service: str, required: bool = True):
    found = client.containers.list(filters={"label": [f"{PROJECT_LABEL}={project}", f"{SERVICE_LABEL}={service}"]})
    if not found:
        if not required:
            return None
        raise KheopsError(f"the {service} service of {project} is not running",
                          hint="start the site first (kheopsctl install --dir DIR), then run the command again")
    return found[0]


def _frames(raw: socket.socket) -> Iterator[tuple[int, bytes]]:
    """Docker's multiplexed exec stream: 8-byte headers (stream id, length), then the payload."""
    buf = b""
    while True:
        while len(buf) < 8:
            more = raw.recv(1 << 20)
            if not more:
                return
            buf += more
        kind, length = buf[0], struct.unpack(">I", buf[4:8])[0]
        buf = buf[8:]
        while len(buf) < length:
            more = raw.recv(max(1 << 20, length - len(buf)))
            if not more:
                return
            buf += more
        yield kind, buf[:length]
        buf = buf[length:]


def exec_stream(container, cmd: list[str], what: str, env: dict | None = None) -> Iterator[bytes]:
    """Yield the stdout of ``cmd`` run in ``container``; a non-zero exit raises with the last stderr line."""
    api = container.client.api
    ex = api.exec_create(container.id, cmd, stdout=True, stderr=True, environment=env)
    sock = api.exec_start(ex["Id"], socket=True)
    raw = sock._sock
    errors = bytearray()
    try:
        for kind, payload in _frames(raw):
            if kind == 1:
                yield payload
            elif kind == 2 and len(errors) < 65536:
                errors += payload
    finally:
        sock.close()
    _check_exit(api, ex["Id"], what, errors)


def exec_feed(container, cmd: list[str], chunks: Iterable[bytes], what: str, env: dict | None = None) -> str:
    """Send ``chunks`` to the stdin of ``cmd``; returns its output, raises on a non-zero exit."""
    api = container.client.api
    ex = api.exec_create(container.id, cmd, stdin=True, stdout=True, stderr=True, environment=env)
    sock = api.exec_start(ex["Id"], socket=True)
    raw = sock._sock
    output = bytearray()
    try:
        for chunk in chunks:
            raw.sendall(chunk)
        raw.shutdown(socket.SHUT_WR)  # stdin EOF
        for _kind, payload in _frames(raw):
            if len(output) < 65536:
                output += payload
    except (BrokenPipeError, ConnectionResetError):
        pass  # the command stopped reading: its exit status says why
    finally:
        sock.close()
    _check_exit(api, ex["Id"], what, output)
    return output.decode(errors="replace")


def _check_exit(api, exec_id: str, what: str, errors: bytes) -> None:
    for _ in range(50):  # the exit code is set a moment after the stream ends
        info = api.exec_inspect(exec_id)
        if not info.get("Running"):
            break
        time.sleep(0.1)
    code = info.get("ExitCode")
    if code != 0:
        lines = [ln for ln in errors.decode(errors="replace").splitlines() if ln.strip()]
        raise KheopsError(f"{what} failed (exit {code}): {lines[-1] if lines else 'no message'}",
                          hint="see kheopsctl logs postgres; the site was not changed by this step")


def exec_text(container, cmd: list[str], what: str, env: dict | None = None) -> str:
    return b"".join(exec_stream(container, cmd, what, env)).decode()


def psql(container, database: str, sql: str, what: str) -> list[list[str]]:
    """Rows of a query run as the postgres superuser over the container's socket (unaligned, tab-separated)."""
    out = exec_text(container, ["psql", "-U", "postgres", "-d", database, "-At", "-F", "\t", "-v", "ON_ERROR_STOP=1",
                                "-c", sql], what)
    return [line.split("\t") for line in out.splitlines() if line]


@contextlib.contextmanager
def throwaway(client, image: str, volume: str, mount: str = "/v"):
    container = client.containers.create(image, command=["true"], entrypoint=[], volumes={volume: {"bind": mount}},
                                         labels={"org.kheops.role": "backup-helper"}, network_disabled=True)
    try:
        yield container
    finally:
        container.remove(force=True, v=False)


def read_volume(client, image: str, volume: str) -> Iterator[bytes]:
    """The volume's content as a tar stream (members named ``v/...``)."""
    with throwaway(client, image, volume) as c:
        stream, _stat = c.get_archive("/v", chunk_size=1 << 20)
        yield from stream


def write_volume(client, image: str, volume: str, tar_chunks: Iterable[bytes]) -> None:
    """Unpack a tar stream (members relative to the volume's root) into the volume."""
    with throwaway(client, image, volume) as c:
        if not c.put_archive("/v", tar_chunks):
            raise KheopsError(f"Docker refused to fill volume {volume}", hint="see dockerd's log")


class WriteLock:
    """Holds the gateway's write lock (:mod:`kheopsctl.gateway.quiesce`) exclusively in a psql session.

    The session lives on an exec socket: when this process ends, for any reason, the socket closes, psql sees
    the end of its input and exits, and PostgreSQL releases the lock. Nothing can leave the site paused.
    """

    def __init__(self, postgres, database: str = "kheops", wait_seconds: float = 600):
        self.postgres, self.database, self.wait_seconds = postgres, database, wait_seconds
        self._sock = None

    def __enter__(self) -> "WriteLock":
        api = self.postgres.client.api
        ex = api.exec_create(self.postgres.id, ["psql", "-U", "postgres", "-d", self.database, "-q",
                                                "-v", "ON_ERROR_STOP=1"],
                             stdin=True, stdout=True, stderr=True, environment={"PGAPPNAME": LOCK_APP})
        self._exec = ex["Id"]
        self._sock = api.exec_start(ex["Id"], socket=True)
        self._sock._sock.sendall(f"SET lock_timeout = '{int(self.wait_seconds)}s';\n"
                                 f"SELECT pg_advisory_lock({WRITE_LOCK});\n".encode())
        deadline = time.monotonic() + self.wait_seconds + 10
        while time.monotonic() < deadline:
            if self._held():
                return self
            if not api.exec_inspect(self._exec).get("Running"):
                self.__exit__()
                raise KheopsError(f"uploads in flight did not finish within {self.wait_seconds:.0f} s, or the lock "
                                  "session failed: no backup was taken",
                                  hint="retry when the uploads are done; the site was not changed")
            time.sleep(0.1)
        self.__exit__()
        raise KheopsError("could not pause uploads for the backup", hint="retry later; the site was not changed")

    def _held(self) -> bool:
        rows = psql(self.postgres, self.database,
                    "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid) "
                    f"WHERE l.locktype = 'advisory' AND l.mode = 'ExclusiveLock' AND l.granted "
                    f"AND a.application_name = '{LOCK_APP}' "
                    f"AND ((l.classid::bigint << 32) | l.objid::bigint) = {WRITE_LOCK}",
                    "checking the backup lock")
        return rows and rows[0][0] != "0"

    def __exit__(self, *exc) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock._sock.sendall(f"SELECT pg_advisory_unlock({WRITE_LOCK});\n\\q\n".encode())
                self._sock._sock.shutdown(socket.SHUT_WR)
            self._sock.close()
            self._sock = None

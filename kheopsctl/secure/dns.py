"""Name resolution for the pre-flight: the system resolver, or one DNS server asked directly.

Asking a given server (``--dns-server``) lets an operator check a split-horizon setup against the public view,
and lets the tests point the check at Pebble's DNS (pebble-challtestsrv) without touching /etc/hosts.
A minimal stub query (A and AAAA, recursion desired) is all that is needed; no extra dependency.
"""

from __future__ import annotations

import ipaddress
import secrets
import socket
import struct

from kheopsctl.errors import KheopsError

_A, _AAAA = 1, 28


def parse_server(spec: str) -> tuple[str, int]:
    """``IP``, ``IP:PORT`` or ``[IPv6]:PORT`` -> (ip, port)."""
    host, port = spec, "53"
    if spec.startswith("[") and "]:" in spec:
        host, port = spec[1:].split("]:", 1)
    elif spec.count(":") == 1:
        host, port = spec.split(":")
    try:
        ipaddress.ip_address(host.strip("[]"))
        return host.strip("[]"), int(port)
    except ValueError:
        raise KheopsError(f"--dns-server: {spec!r} is not IP[:PORT]", hint="for example 1.1.1.1 or 127.0.0.1:8053",
                          exit_code=2) from None


def resolve(host: str, server: tuple[str, int] | None = None, timeout: float = 3.0) -> list[str]:
    """Addresses of ``host`` (A then AAAA), deduplicated; [] when the name does not resolve."""
    if server is None:
        try:
            infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
        except socket.gaierror:
            return []
        return list(dict.fromkeys(info[4][0] for info in infos))
    out: list[str] = []
    for qtype in (_A, _AAAA):
        out.extend(_query(host, qtype, server, timeout))
    return list(dict.fromkeys(out))


def _query(host: str, qtype: int, server: tuple[str, int], timeout: float) -> list[str]:
    qid = secrets.randbits(16)
    qname = b"".join(bytes([len(p)]) + p.encode("idna") for p in host.rstrip(".").split(".")) + b"\0"
    packet = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + qname + struct.pack("!HH", qtype, 1)
    family = socket.AF_INET6 if ":" in server[0] else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.sendto(packet, server)
            while True:
                data, _ = sock.recvfrom(4096)
                if len(data) >= 12 and struct.unpack("!H", data[:2])[0] == qid:
                    break
        except OSError as exc:
            raise KheopsError(f"DNS server {server[0]}:{server[1]} did not answer ({exc})",
                              hint="check --dns-server, or leave it out to use the system resolver") from None
    return _answers(data, qtype)


def _skip_name(data: bytes, pos: int) -> int:
    while True:
        length = data[pos]
        if length == 0:
            return pos + 1
        if length & 0xC0 == 0xC0:  # compression pointer ends the name
            return pos + 2
        pos += 1 + length


def _answers(data: bytes, qtype: int) -> list[str]:
    _, flags, qdcount, ancount, _, _ = struct.unpack("!HHHHHH", data[:12])
    if flags & 0x000F:  # NXDOMAIN, SERVFAIL, ...: no addresses
        return []
    pos = 12
    for _ in range(qdcount):
        pos = _skip_name(data, pos) + 4
    out = []
    for _ in range(ancount):
        pos = _skip_name(data, pos)
        rtype, _, _, rdlength = struct.unpack("!HHIH", data[pos:pos + 10])
        pos += 10
        rdata = data[pos:pos + rdlength]
        pos += rdlength
        if rtype == qtype == _A and rdlength == 4:
            out.append(socket.inet_ntop(socket.AF_INET, rdata))
        elif rtype == qtype == _AAAA and rdlength == 16:
            out.append(socket.inet_ntop(socket.AF_INET6, rdata))
    return out

"""The raw HTTP/1.0 relay (passthrough.py) at the framing level, under the event loop the gateway runs (uvloop)
and under the standard one.

The upstream here is a small asyncio server written for the test, not a PACS: it produces framings a real
Orthanc never produces on demand (a keep-alive connection after a short Content-Length body, a body cut short,
a head that never comes). The relay's normal path against the real Orthanc is covered by test_routes.py and
test_streams.py.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import ssl

import pytest
import uvloop

from kheopsctl.gateway.dicomweb import passthrough
from kheopsctl.gateway.errors import ApiError

LOOPS = {"uvloop": uvloop.new_event_loop, "asyncio": asyncio.new_event_loop}


def run(loop_name: str, coro_fn):
    loop = LOOPS[loop_name]()
    try:
        return loop.run_until_complete(asyncio.wait_for(coro_fn(), 30))
    finally:
        loop.close()


async def serve(handler):
    """Start a one-shot upstream on a free loopback port; ``handler(reader, writer)`` writes the reply."""
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    return server, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"


async def read_request(reader) -> bytes:
    return await reader.readuntil(b"\r\n\r\n")


async def serve_and_fetch(handler) -> tuple[int, dict, bytes]:
    server, url = await serve(handler)
    async with server:
        return await fetch(url)


async def fetch(url: str) -> tuple[int, dict, bytes]:
    resp = await passthrough.raw_get(url + "/x", {"Accept": "*/*"}, ssl_context=None, basic=("u", "p"))
    out = bytearray()
    async for chunk in resp.body():
        out += chunk
    return resp.status_code, resp.headers, bytes(out)


@pytest.mark.parametrize("loop_name", sorted(LOOPS))
@pytest.mark.parametrize("size", [0, 1, 1000, passthrough.LOW_WATER - 1, passthrough.LOW_WATER + 1,
                                  passthrough.READ_SIZE, 3 * passthrough.READ_SIZE + 12345])
def test_content_length_body_is_relayed_byte_for_byte(loop_name, size):
    body = os.urandom(size)
    seen: dict = {}

    async def handler(reader, writer):
        seen["request"] = await read_request(reader)
        writer.write(b"HTTP/1.0 200 OK\r\nContent-Type: application/dicom\r\nContent-Length: %d\r\n\r\n" % size)
        for i in range(0, size, 100_000):  # in pieces, with pauses: the relay must not wait for more
            writer.write(body[i:i + 100_000])
            await writer.drain()
            await asyncio.sleep(0)
        await reader.read()  # keep the connection open until the relay closes it: it must end on Content-Length
        writer.close()

    status, headers, got = run(loop_name, lambda: serve_and_fetch(handler))
    assert status == 200 and headers["content-type"] == "application/dicom"
    assert hashlib.sha256(got).digest() == hashlib.sha256(body).digest() and len(got) == size
    request = seen["request"].decode()
    assert request.startswith("GET /x HTTP/1.0\r\n")
    assert "Authorization: Basic dTpw" in request  # u:p


@pytest.mark.parametrize("loop_name", sorted(LOOPS))
def test_close_delimited_body_ends_at_eof(loop_name):
    body = os.urandom(700_000)

    async def handler(reader, writer):
        await read_request(reader)
        writer.write(b"HTTP/1.0 200 OK\r\nContent-Type: application/octet-stream\r\n\r\n" + body)
        await writer.drain()
        writer.close()

    status, headers, got = run(loop_name, lambda: serve_and_fetch(handler))
    assert status == 200 and "content-length" not in headers and got == body


@pytest.mark.parametrize("loop_name", sorted(LOOPS))
def test_body_cut_short_is_a_502(loop_name):
    async def handler(reader, writer):
        await read_request(reader)
        writer.write(b"HTTP/1.0 200 OK\r\nContent-Length: 1000000\r\n\r\n" + b"x" * 300_000)
        await writer.drain()
        writer.close()

    async def go():
        server, url = await serve(handler)
        async with server:
            with pytest.raises(ApiError) as err:
                await fetch(url)
            return err.value

    err = run(loop_name, go)
    assert err.status == 502 and "early" in err.message


@pytest.mark.parametrize("loop_name", sorted(LOOPS))
def test_low_water_mark_is_set_and_never_exceeds_what_is_due(loop_name):
    size = passthrough.LOW_WATER + 5000
    marks: list[int] = []

    async def handler(reader, writer):
        await read_request(reader)
        writer.write(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
        writer.write(b"y" * (size - 4000))
        await writer.drain()
        await asyncio.sleep(0.3)
        writer.write(b"y" * 4000)
        await writer.drain()
        await reader.read()
        writer.close()

    async def go():
        server, url = await serve(handler)
        async with server:
            resp = await passthrough.raw_get(url + "/x", {}, ssl_context=None, basic=None)
            sock = resp._proto.transport.get_extra_info("socket")
            total = 0
            async for chunk in resp.body():
                total += len(chunk)
                marks.append(sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT))
            return total

    assert run(loop_name, go) == size
    assert marks and max(marks) <= passthrough.LOW_WATER
    assert marks[0] > 1, "the first wake-up should wait for a large read"


@pytest.mark.parametrize("loop_name", sorted(LOOPS))
def test_unreachable_and_silent_upstreams(loop_name, monkeypatch):
    async def silent(reader, writer):
        await read_request(reader)
        await reader.read()

    async def go():
        with socket.socket() as s:  # a port nobody listens on
            s.bind(("127.0.0.1", 0))
            dead = s.getsockname()[1]
        with pytest.raises(ApiError) as unreachable:
            await passthrough.raw_get(f"http://127.0.0.1:{dead}/x", {}, ssl_context=None, basic=None)
        server, url = await serve(silent)
        async with server:
            with pytest.raises(ApiError) as timeout:
                await passthrough.raw_get(url + "/x", {}, ssl_context=None, basic=None, head_timeout=0.5)
        return unreachable.value, timeout.value

    unreachable, timeout = run(loop_name, go)
    assert unreachable.status == 502 and "127.0.0.1" not in unreachable.message
    assert timeout.status == 504


@pytest.mark.parametrize("loop_name", sorted(LOOPS))
def test_https_pacs_body_is_relayed_and_verified(loop_name, tmp_path):
    """An https PACS (the external kinds): the same buffered reads under TLS, the certificate verified."""
    from tests.secure.pki import issue

    root = issue("test root", ca=True)
    leaf = issue("127.0.0.1", root, names=["127.0.0.1"])
    (tmp_path / "cert.pem").write_bytes(leaf.pem)
    (tmp_path / "key.pem").write_bytes(leaf.key_pem)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    trusting = ssl.create_default_context(cadata=root.pem.decode())
    body = os.urandom(2 * passthrough.READ_SIZE + 777)

    async def handler(reader, writer):
        await read_request(reader)
        writer.write(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        await writer.drain()
        await reader.read()

    async def go():
        server = await asyncio.start_server(handler, "127.0.0.1", 0, ssl=server_ctx)
        url = f"https://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        async with server:
            resp = await passthrough.raw_get(url + "/x", {}, ssl_context=trusting, basic=None)
            got = bytearray()
            async for chunk in resp.body():
                got += chunk
            with pytest.raises(ApiError) as untrusted:  # the default context does not know the test root
                await passthrough.raw_get(url + "/x", {}, ssl_context=None, basic=None)
            return bytes(got), untrusted.value

    got, untrusted = run(loop_name, go)
    assert got == body
    assert untrusted.status == 502

"""A zero-copy HTTP relay for the gateway benchmark's reference rows, not part of the product.

    python benchmarks/splice_relay.py LISTEN_PORT UPSTREAM_HOST:PORT

Each connection: read the request head, ask the upstream the same with HTTP/1.0 (so it closes at the end), then
move the reply upstream socket -> pipe -> client socket with splice(2), a thread per connection. No byte ever
enters user space: it is the cheapest relay Linux offers, so its row says what the extra TCP hop itself costs
on this machine, with no proxy's own work on top.
"""

from __future__ import annotations

import fcntl
import os
import socket
import sys
import threading

PIPE_SIZE = 1024 * 1024
F_SETPIPE_SZ = 1031
DROP = (b"connection", b"keep-alive", b"proxy-connection")


def relay(client: socket.socket, upstream: tuple[str, int]) -> None:
    with client:
        head = b""
        while b"\r\n\r\n" not in head:
            data = client.recv(65536)
            if not data:
                return
            head += data
        lines = head.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
        method, target, _ = lines[0].split(b" ", 2)
        headers = [h for h in lines[1:] if not h.lower().startswith(DROP)]
        with socket.create_connection(upstream) as up:
            up.sendall(b"%s %s HTTP/1.0\r\n%s\r\nConnection: close\r\n\r\n" % (method, target, b"\r\n".join(headers)))
            r, w = os.pipe()
            try:
                fcntl.fcntl(w, F_SETPIPE_SZ, PIPE_SIZE)
                while n := os.splice(up.fileno(), w, PIPE_SIZE):
                    while n:
                        n -= os.splice(r, client.fileno(), n)
            except OSError:
                pass  # a client gone mid-stream: nothing to report in a benchmark helper
            finally:
                os.close(r)
                os.close(w)


def main() -> None:
    port, (host, up_port) = int(sys.argv[1]), sys.argv[2].rsplit(":", 1)
    server = socket.create_server(("127.0.0.1", port), backlog=64)
    while True:
        client, _ = server.accept()
        threading.Thread(target=relay, args=(client, (host, int(up_port))), daemon=True).start()


if __name__ == "__main__":
    main()

"""A tiny real HTTP/1.1 proxy on a TCP socket, for the client's retry tests.

It forwards each request to the upstream server on a connection of its own
(``Connection: close``: one request per connection, both sides) and can misbehave
on purpose, per request, as its ``plan`` says:

- ``"forward"``: relay the request and the upstream's answer;
- ``"drop"``: relay the request, read the upstream's whole answer (the server did
  the work), then close the client's connection without a byte of it;
- ``"503"``: answer 503 (problem+json, ``Retry-After``) without asking upstream;
- ``"cut:<event>"``: relay the answer (an event stream) up to the end of its first
  ``<event>`` event, then close the connection mid-stream.

``plan`` applies to the requests in turn; ``rules`` maps a path fragment to the
action of every request whose path holds it (before the plan is consulted).

Each request handled is recorded (method, path, headers, what was done, the
upstream's status).
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

__all__ = ["Handled", "Proxy", "running_proxy"]


@dataclass(frozen=True)
class Handled:
    method: str
    path: str
    headers: dict[str, str]
    action: str
    upstream_status: int | None


@dataclass
class Proxy:
    upstream: tuple[str, int]
    plan: list[str]
    """What to do with each request in turn; once used up, ``forward``."""
    retry_after: str = "2"
    rules: dict[str, str] = field(default_factory=dict)
    handled: list[Handled] = field(default_factory=list)
    url: str = ""
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def next_action(self, path: str) -> str:
        for fragment, action in self.rules.items():
            if fragment in path:
                return action
        with self._lock:
            return self.plan.pop(0) if self.plan else "forward"

    def requests(self, method: str, path: str) -> list[Handled]:
        return [h for h in self.handled if h.method == method and h.path == path]


def _read_request(conn: socket.socket) -> tuple[bytes, bytes] | None:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        body += chunk
    return head, body


def _closing(head: bytes) -> bytes:
    lines = head.split(b"\r\n")
    kept = [
        line
        for line in lines[1:]
        if line.partition(b":")[0].strip().lower() not in (b"connection", b"keep-alive")
    ]
    return b"\r\n".join([lines[0], *kept, b"Connection: close"])


def _exchange(upstream: tuple[str, int], head: bytes, body: bytes) -> bytes:
    with socket.create_connection(upstream, timeout=60) as out:
        out.sendall(_closing(head) + b"\r\n\r\n" + body)
        answer = b""
        while True:
            chunk = out.recv(65536)
            if not chunk:
                return answer
            answer += chunk


def _unavailable(retry_after: str) -> bytes:
    body = json.dumps(
        {
            "type": "urn:clr-sweep:problem:overloaded",
            "title": "Service unavailable",
            "status": 503,
            "detail": f"busy (the test's proxy); retry in {retry_after} s",
        }
    ).encode()
    head = (
        "HTTP/1.1 503 Service Unavailable\r\n"
        "Content-Type: application/problem+json\r\n"
        f"Retry-After: {retry_after}\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode() + body


def _cut_after(answer: bytes, event: str) -> bytes:
    """``answer`` up to the blank line that ends its first ``event`` event."""
    start = answer.index(f"event: {event}".encode())
    ends = [(answer.find(sep, start), len(sep)) for sep in (b"\r\n\r\n", b"\n\n")]
    end, size = min((e, n) for e, n in ends if e >= 0)
    return answer[: end + size]


def _serve_one(proxy: Proxy, conn: socket.socket) -> None:
    with conn:
        request = _read_request(conn)
        if request is None:
            return
        head, body = request
        lines = head.decode("latin-1").split("\r\n")
        method, path, _ = lines[0].split(" ", 2)
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        action = proxy.next_action(path)
        if action == "503":
            answer, status = _unavailable(proxy.retry_after), None
        else:
            answer = _exchange(proxy.upstream, head, body)
            status = int(answer.split(b" ", 2)[1]) if answer else None
            if action.startswith("cut:"):
                answer = _cut_after(answer, action.removeprefix("cut:"))
        # recorded before the client can see an answer (or the closed connection)
        proxy.handled.append(Handled(method, path, headers, action, status))
        if action != "drop":
            conn.sendall(answer)


@contextmanager
def running_proxy(
    upstream_url: str,
    plan: list[str] | None = None,
    retry_after: str = "2",
    rules: dict[str, str] | None = None,
) -> Iterator[Proxy]:
    """A :class:`Proxy` to ``upstream_url`` listening on a free local port, while in use."""
    host, port = upstream_url.removeprefix("http://").split(":")
    proxy = Proxy((host, int(port)), list(plan or []), retry_after, dict(rules or {}))
    listener = socket.create_server(("127.0.0.1", 0))
    proxy.url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=_serve_one, args=(proxy, conn), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield proxy
    finally:
        stop.set()
        try:
            listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        except OSError:
            pass
        listener.close()
        thread.join(timeout=10)

"""The client against a server that is not the API: a proxy's HTML page, a JSON document
of another shape, an event stream that ends before its first event. Each is a
``ProtocolError`` (or the answer's error), never a crash or a loop without end."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from clr_sweep import AsyncClient, Client, ProtocolError

JOB = "00000000-0000-0000-0000-000000000001"
END = b'event: end\ndata: {"status": "succeeded"}\n\n'

Answer = tuple[int, str, bytes]


@dataclass
class FakeServer:
    """Answers each request with ``answer(path, n)`` (``n``: that path's requests so far)."""

    answer: Callable[[str, int], Answer]
    url: str = ""
    paths: list[str] = field(default_factory=list)

    def count(self, prefix: str) -> int:
        return sum(1 for p in self.paths if p.startswith(prefix))


@contextmanager
def fake_server(answer: Callable[[str, int], Answer]) -> Iterator[FakeServer]:
    fake = FakeServer(answer)
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def _answer(self) -> None:
            path = self.path.split("?")[0]
            with lock:
                n = fake.count(path)
                fake.paths.append(path)
            status, content_type, body = fake.answer(path, n)
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _answer

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()


def _html(path: str, n: int) -> Answer:
    # a proxy's page for the first 10 streams, then an `end` a looping client would take
    if path.endswith("/events") and n >= 10:
        return 200, "text/event-stream", END
    return 200, "text/html", b"<html>Sign in to the proxy</html>"


def _empty_streams(path: str, n: int) -> Answer:
    if path.endswith("/events") and n >= 10:
        return 200, "text/event-stream", END
    if path.endswith("/events"):
        return 200, "text/event-stream", b": ping\n\n"
    return 200, "application/json", json.dumps({"unexpected": True}).encode()


def _client(url: str) -> Client:
    return Client(url, "clr_token", retries=2, backoff=0.001)


@pytest.mark.parametrize("answer", [_html, _empty_streams], ids=["html", "empty-streams"])
def test_events_from_a_server_that_never_streams_is_a_protocol_error(
    answer: Callable[[str, int], Answer],
) -> None:
    with fake_server(answer) as fake, _client(fake.url) as client:
        with pytest.raises(ProtocolError, match="event stream"):
            list(client.events(JOB))
        assert fake.count(f"/jobs/{JOB}/events") == 3  # the first try and its 2 retries


@pytest.mark.parametrize("answer", [_html, _empty_streams], ids=["html", "empty-streams"])
def test_wait_on_a_server_that_never_streams_is_a_protocol_error(
    answer: Callable[[str, int], Answer],
) -> None:
    with fake_server(answer) as fake, _client(fake.url) as client:
        with pytest.raises(ProtocolError):
            client.wait(JOB, poll=0.001, timeout=60)
        assert fake.count(f"/jobs/{JOB}/events") == 3  # then it polls, and the poll fails


def test_async_events_from_a_server_that_never_streams_is_a_protocol_error() -> None:
    async def follow(url: str) -> None:
        async with AsyncClient(url, "clr_token", retries=2, backoff=0.001) as client:
            async for _event in client.events(JOB):
                pass

    with fake_server(_html) as fake:
        with pytest.raises(ProtocolError, match="event stream"):
            asyncio.run(follow(fake.url))
        assert fake.count(f"/jobs/{JOB}/events") == 3


def _wrong_shapes(path: str, _n: int) -> Answer:
    if path.endswith((".png", ".svg")):
        return 200, "application/json", b'{"detail": "not a plot"}'
    if "/series/" in path:
        return 200, "application/json", json.dumps([1, 2, 3]).encode()
    return 200, "application/json", json.dumps({"hello": 1}).encode()


@pytest.mark.parametrize(
    "call",
    [
        lambda c: c.curve(JOB),
        lambda c: c.series(JOB, "iterations"),
        lambda c: c.plot(JOB, kind="range_test"),
        lambda c: c.plot(JOB, "svg", kind="training"),
    ],
    ids=["curve", "series", "png", "svg"],
)
def test_an_answer_of_another_shape_is_a_protocol_error(call: Callable[[Client], object]) -> None:
    with fake_server(_wrong_shapes) as fake, _client(fake.url) as client:
        with pytest.raises(ProtocolError):
            call(client)


def test_async_plot_and_curve_of_another_shape_are_protocol_errors() -> None:
    async def read(url: str, what: str) -> object:
        async with AsyncClient(url, "clr_token", retries=0) as client:
            if what == "plot":
                return await client.plot(JOB, kind="range_test")
            return await client.curve(JOB)

    with fake_server(_wrong_shapes) as fake:
        for what in ("plot", "curve"):
            with pytest.raises(ProtocolError):
                asyncio.run(read(fake.url, what))

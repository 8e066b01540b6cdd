"""The client package on its own: what it imports, its config file, its event parser."""

from __future__ import annotations

import json
import socket
import stat
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import httpx
import pytest

from clr_sweep import Client, RetryPolicy, Timeout, login, logout
from clr_sweep._http import retry_after_seconds
from clr_sweep.config import ConfigError, config_path, load_config, resolve
from clr_sweep.errors import (
    Conflict,
    Invalid,
    NotFound,
    ProblemError,
    ServiceUnavailable,
    Unauthorized,
    problem_error,
)
from clr_sweep.events import SSEDecoder
from tests.unit.contracts.test_import_free import FORBIDDEN

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_importing_the_client_loads_no_service_package() -> None:
    code = (
        "import json, sys, clr_sweep, clr_sweep.client, clr_sweep.config, clr_sweep.events; "
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    loaded = set(json.loads(done.stdout))
    assert "clr_sweep" in loaded
    assert sorted(loaded & set(FORBIDDEN)) == []


def test_a_server_that_never_answers_is_a_timeout() -> None:
    # a listening socket nobody accepts from: the connection is made, no answer comes
    with socket.create_server(("127.0.0.1", 0)) as silent:
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        with Client(url, "token", timeout=0.2, retries=1, backoff=0.01) as client:
            with pytest.raises(Timeout) as caught:
                client.health()
    assert caught.value.url == f"{url}/healthz"
    assert "no answer within 0.2 s" in str(caught.value)


def test_a_url_without_its_scheme_is_refused() -> None:
    with pytest.raises(ConfigError, match="must start with http:// or https://"):
        Client("localhost:8000", "token")


class TestConfig:
    @pytest.fixture(autouse=True)
    def config_file(self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
        for name in ("CLR_URL", "CLR_TOKEN"):
            monkeypatch.delenv(name, raising=False)
        path = tmp_path / "conf" / "config.toml"
        monkeypatch.setenv("CLR_CONFIG", str(path))
        return path

    def test_login_writes_a_private_file_the_client_reads(self) -> None:
        path = login("https://clr.example.org/", 'tok"en\\1')
        assert path == config_path()
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        config = load_config()
        assert (config.url, config.token) == ("https://clr.example.org", 'tok"en\\1')
        assert resolve() == ("https://clr.example.org", 'tok"en\\1')
        # a second login replaces it whole; no temporary file is left behind
        login("http://127.0.0.1:9000", "second")
        assert load_config().token == "second"
        assert sorted(p.name for p in path.parent.iterdir()) == ["config.toml"]
        assert logout() is True
        assert logout() is False
        assert resolve() == ("http://127.0.0.1:8000", None)

    def test_arguments_and_environment_come_before_the_file(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        login("http://saved:8000", "saved-token")
        monkeypatch.setenv("CLR_TOKEN", "env-token")
        assert resolve() == ("http://saved:8000", "env-token")
        assert resolve(token="arg-token") == ("http://saved:8000", "arg-token")
        monkeypatch.delenv("CLR_TOKEN")
        # the file's token goes only to the file's server
        assert resolve(url="http://elsewhere:8000") == ("http://elsewhere:8000", None)
        monkeypatch.setenv("CLR_URL", "http://saved:8000/")
        assert resolve() == ("http://saved:8000", "saved-token")

    def test_a_broken_file_is_named(self, config_file: Path) -> None:
        config_file.parent.mkdir(parents=True)
        config_file.write_text("url = [")
        with pytest.raises(ConfigError, match=str(config_file)):
            load_config()
        config_file.write_text("url = 3\n")
        with pytest.raises(ConfigError, match="url must be a string"):
            load_config()

    @pytest.mark.parametrize(("url", "token"), [("", "t"), ("http://x", " "), ("http://x", "a\nb")])
    def test_login_refuses_empty_or_control_characters(self, url: str, token: str) -> None:
        with pytest.raises(ConfigError):
            login(url, token)
        assert not config_path().exists()


class TestProblems:
    @pytest.mark.parametrize(
        ("status", "cls"),
        [
            (400, Invalid),
            (401, Unauthorized),
            (403, Unauthorized),
            (404, NotFound),
            (409, Conflict),
            (413, Invalid),
            (422, Invalid),
            (429, ServiceUnavailable),
            (503, ServiceUnavailable),
            (500, ProblemError),
        ],
    )
    def test_each_status_has_its_class(self, status: int, cls: type[ProblemError]) -> None:
        body = {
            "type": "urn:x",
            "title": "T",
            "status": status,
            "detail": "d",
            "instance": "/jobs/1",
            "errors": [{"field": "num_iter", "reason": "must be positive"}],
        }
        error = problem_error(status, body)
        assert type(error) is cls
        assert (error.status, error.type, error.title, error.detail) == (status, "urn:x", "T", "d")
        assert error.instance == "/jobs/1"
        assert error.fields == ["num_iter"]
        assert "num_iter: must be positive" in str(error)

    def test_a_body_that_is_not_a_problem_keeps_its_text(self) -> None:
        error = problem_error(502, None, text="<html>Bad Gateway</html>")
        assert error.title == "Bad Gateway"
        assert "Bad Gateway" in error.detail


class TestRetryPolicy:
    def test_backoff_doubles_with_jitter_up_to_its_cap(self) -> None:
        policy = RetryPolicy(retries=5, backoff=1.0, backoff_max=4.0)
        for retry, full in enumerate([1.0, 2.0, 4.0, 4.0, 4.0]):
            wait = policy.delay(retry)
            assert full / 2 <= wait <= full

    def test_retry_after_is_honoured_and_capped(self) -> None:
        policy = RetryPolicy(retry_after_max=10.0)
        assert policy.delay(0, 3.0) == 3.0
        assert policy.delay(0, 3600.0) == 10.0

    def test_retry_after_as_seconds_or_a_date(self) -> None:
        def answer(value: str) -> httpx.Response:
            return httpx.Response(503, headers={"Retry-After": value})

        assert retry_after_seconds(answer("7")) == 7.0
        assert retry_after_seconds(answer("soon")) is None
        later = format_datetime(datetime.now(UTC) + timedelta(seconds=100), usegmt=True)
        seconds = retry_after_seconds(answer(later))
        assert seconds is not None
        assert 0 < seconds <= 100
        assert retry_after_seconds(httpx.Response(503)) is None

    def test_what_is_retried(self) -> None:
        policy = RetryPolicy()
        get = httpx.Request("GET", "http://x/jobs")
        post = httpx.Request("POST", "http://x/range-tests")
        keyed = httpx.Request("POST", "http://x/range-tests", headers={"Idempotency-Key": "k"})
        for request in (get, post, keyed):
            assert policy.retry_response(request, httpx.Response(503))
            assert policy.retry_error(request, httpx.ConnectError("refused"))
            assert not policy.retry_response(request, httpx.Response(500))
        assert policy.retry_response(get, httpx.Response(502))
        assert policy.retry_response(keyed, httpx.Response(504))
        assert not policy.retry_response(post, httpx.Response(502))
        assert policy.retry_error(keyed, httpx.RemoteProtocolError("dropped"))
        assert not policy.retry_error(post, httpx.RemoteProtocolError("dropped"))
        assert not policy.retry_response(get, httpx.Response(429))
        assert policy.retry_response(get, httpx.Response(429, headers={"Retry-After": "1"}))


class TestSSE:
    def test_events_ids_comments_and_multi_line_data(self) -> None:
        decoder = SSEDecoder("1:0")
        lines = [
            ": ping",
            "event: status",
            'data: {"status":',
            'data: "queued"}',
            "",
            "event: curve",
            "id: 1:5",
            'data: {"start": 0}',
            "",
            "event: end",
            'data:{"status": "succeeded"}',
            "",
        ]
        events = [e for e in (decoder.feed(line) for line in lines) if e is not None]
        assert [(e.event, e.id, e.last_event_id) for e in events] == [
            ("status", None, "1:0"),
            ("curve", "1:5", "1:5"),
            ("end", None, "1:5"),
        ]
        assert events[0].data == {"status": "queued"}
        assert events[2].data == {"status": "succeeded"}

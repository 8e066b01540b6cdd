"""The dashboard in a real browser: headless Chromium driven by Playwright's sync API.

The browser is Debian's ``chromium`` (``CLR_CHROMIUM`` names another), launched
through its executable path: Playwright's own browser download cannot be reached
here, so ``playwright install`` is never run. Without the ``playwright`` package
or the executable the tests skip, unless ``CLR_TEST_REQUIRE_BROWSER`` is set (CI),
which makes them fail.

The pages are served by the real service (``postgres_server`` from
:mod:`tests.services`: the API, a worker and the reaper on PostgreSQL and Redis),
the one tests/client uses, so the dashboard tests start no service of their own.

Fixtures:

- ``browser`` (package): one Chromium per xdist worker while it runs these tests.
- ``page`` (function): a fresh context and page (1400x900). The test fails at
  teardown if the page logged a console error, threw an uncaught error, broke its
  Content-Security-Policy or asked another host for anything (such requests are
  aborted). A test that expects one allows it by pattern:
  ``page_errors.allow(r"status of 401")``.
- ``page_errors`` (function): that record, shared with ``page``.
- ``dashboard`` (function): :class:`Dashboard`, the service as a new team: its
  ``url``, ``token``, a ``client`` to create jobs quickly, ``sign_in(page)`` and
  ``screenshot(page, name)`` (``docs/dashboard/<name>.png``, shown in the README).

Everything waits with Playwright's auto-waiting and ``expect`` (timeout
:data:`TIMEOUT_MS`), never with a sleep.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn
from urllib.parse import urlsplit

import pytest

from clr_sweep import Client
from tests.services import REPO_ROOT, Server

if TYPE_CHECKING:
    from playwright.sync_api import Browser, ConsoleMessage, Page, Route

CHROMIUM = os.environ.get("CLR_CHROMIUM", "/usr/bin/chromium")
"""The browser Playwright launches (Debian's package by default)."""
REQUIRE_BROWSER = bool(os.environ.get("CLR_TEST_REQUIRE_BROWSER"))
"""Set in CI: a missing browser fails the tests instead of skipping them."""
BROWSER_ARGS = [
    "--no-sandbox",  # root in a container has no user namespaces for the sandbox
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    # nothing the browser itself would fetch from another host on its own
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 30_000
"""Longest wait for any element or navigation (a loaded two-core machine)."""
SCREENSHOTS = Path(os.environ.get("CLR_TEST_SCREENSHOTS", REPO_ROOT / "docs" / "dashboard"))
"""Where :meth:`Dashboard.screenshot` writes (the README shows them)."""

_LOCAL_SCHEMES = ("data:", "blob:", "about:")
"""URLs that never leave the browser (a ``blob:`` URL carries the page's own origin)."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test under tests/dashboard is a browser test (run in the parallel phase)."""
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents:
            item.add_marker(pytest.mark.browser)


def _unavailable(reason: str) -> NoReturn:
    if REQUIRE_BROWSER:
        pytest.fail(f"{reason} (CLR_TEST_REQUIRE_BROWSER is set)")
    pytest.skip(reason)


@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    """Headless Chromium while this worker runs tests of this package.

    Package scope, not session: Playwright's sync API keeps its asyncio loop marked
    as running in this thread for as long as it is started, so ``asyncio.run`` in a
    later test on the same xdist worker (tests/client/test_async.py) would fail.
    pytest tears a package fixture down before the worker moves on to another package.
    """
    try:
        from playwright.sync_api import expect, sync_playwright
    except ImportError:
        _unavailable("the playwright package is not installed (pip install playwright)")
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        _unavailable(f"no Chromium at {CHROMIUM} (apt-get install chromium, or set CLR_CHROMIUM)")
    expect.set_options(timeout=TIMEOUT_MS)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=BROWSER_ARGS
        )
        try:
            yield browser
        finally:
            browser.close()


@dataclass
class PageErrors:
    """What went wrong in a page during a test, less what the test said to expect."""

    origin: str
    """The server's origin (``http://127.0.0.1:PORT``): the only host the page may reach."""
    recorded: list[str] = field(default_factory=list)
    allowed: list[re.Pattern[str]] = field(default_factory=list)

    def allow(self, pattern: str) -> None:
        """Expect entries matching ``pattern`` (``re.search`` on ``"<kind>: <text>"``)."""
        self.allowed.append(re.compile(pattern))

    def record(self, kind: str, text: str) -> None:
        self.recorded.append(f"{kind}: {text}")

    def unexpected(self) -> list[str]:
        """The entries no :meth:`allow` pattern matches."""
        return [e for e in self.recorded if not any(p.search(e) for p in self.allowed)]

    def on_console(self, message: ConsoleMessage) -> None:
        where = message.location.get("url", "")
        text = f"{message.text} ({where})" if where else message.text
        if "Content Security Policy" in message.text:
            self.record("CSP violation", text)
        elif message.type == "error":
            self.record("console error", text)

    def on_route(self, route: Route) -> None:
        url = route.request.url
        if url.startswith(_LOCAL_SCHEMES) or _origin(url) == self.origin:
            route.continue_()
        else:
            self.record("request to another host", f"{route.request.method} {url}")
            route.abort("blockedbyclient")


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


@dataclass
class Dashboard:
    """The running service as a new team, with the steps every dashboard test takes."""

    server: Server
    token: str
    client: Client
    """A :class:`clr_sweep.Client` of this team, to create its jobs quickly."""

    @property
    def url(self) -> str:
        """The server's base URL (``http://127.0.0.1:PORT``)."""
        return self.server.url

    def sign_in(self, page: Page, token: str | None = None) -> None:
        """Open ``/``, sign in with this team's token (or ``token``), wait for the runs table."""
        from playwright.sync_api import expect

        page.goto(f"{self.url}/")
        page.get_by_test_id("token-input").fill(self.token if token is None else token)
        page.get_by_test_id("sign-in").click()
        expect(page.get_by_test_id("runs-table")).to_be_visible()

    def screenshot(self, page: Page, name: str, *, full_page: bool = True) -> Path:
        """Save the page as ``docs/dashboard/<name>.png`` (the README shows these)."""
        path = SCREENSHOTS / f"{name}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=path, full_page=full_page, animations="disabled")
        return path


@pytest.fixture
def dashboard(postgres_server: Server) -> Iterator[Dashboard]:
    """The PostgreSQL service (real API and worker) as a new team."""
    token = postgres_server.new_token()
    client = postgres_server.client(token=token)
    try:
        yield Dashboard(postgres_server, token, client)
    finally:
        client.close()


@pytest.fixture
def page_errors(postgres_server: Server) -> PageErrors:
    """The errors ``page`` records; ``.allow(pattern)`` for those a test expects."""
    return PageErrors(_origin(postgres_server.url))


@pytest.fixture
def page(browser: Browser, page_errors: PageErrors) -> Iterator[Page]:
    """A fresh page that fails the test on any error, CSP violation or request elsewhere."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    context.route("**/*", page_errors.on_route)
    page = context.new_page()
    page.on("console", page_errors.on_console)
    page.on("pageerror", lambda error: page_errors.record("page error", str(error)))
    try:
        yield page
    finally:
        context.close()
    unexpected = page_errors.unexpected()
    if unexpected:
        pytest.fail(
            "the page recorded what it must not:\n" + "\n".join(f"  {e}" for e in unexpected),
            pytrace=False,
        )

"""Signing in to the dashboard with a team token, in Chromium, against the real service.

The token is checked against the API before the tab keeps it (``sessionStorage``
only: not ``localStorage``, not a cookie), travels only in the ``Authorization``
header (never in a URL, which would land in access logs and the browser's
history), and signing out forgets it.
"""

from __future__ import annotations

import re

import httpx
from playwright.sync_api import Page, Request, expect

from clr_sweep.errors import Conflict
from tests.dashboard.conftest import Dashboard, PageErrors

TOKEN_KEY = "clr-sweep.token"
"""Where js/api.js keeps the token in ``sessionStorage``."""
UNKNOWN_TOKEN = "clr_" + "A" * 43
"""A well-formed token no team has."""


def _stop(dashboard: Dashboard, job_id: str) -> None:
    """Cancel a job this test no longer needs (unless it has already ended)."""
    try:
        dashboard.client.cancel(job_id)
    except Conflict:
        pass  # it finished first


def _stored(page: Page) -> dict[str, dict[str, str]]:
    """Everything the page's origin keeps: sessionStorage, localStorage and cookies."""
    stored: dict[str, dict[str, str]] = page.evaluate(
        """() => ({
            session: Object.fromEntries(Object.entries(sessionStorage)),
            local: Object.fromEntries(Object.entries(localStorage)),
            cookies: {all: document.cookie},
        })"""
    )
    return stored


def _refusal(dashboard: Dashboard, token: str) -> str:
    """Why the API refuses ``token`` (its 401's detail)."""
    response = httpx.get(
        f"{dashboard.url}/jobs", headers={"Authorization": f"Bearer {token}"}, timeout=30
    )
    assert response.status_code == 401
    detail: str = response.json()["detail"]
    return detail


def test_signing_in_keeps_the_token_for_this_tab_only(page: Page, dashboard: Dashboard) -> None:
    page.goto(f"{dashboard.url}/")
    # not signed in: every page leads to the sign-in form, the navigation hidden
    expect(page).to_have_url(re.compile(r"#/signin$"))
    expect(page.get_by_test_id("token-input")).to_be_focused()
    expect(page.get_by_test_id("nav-runs")).to_be_hidden()
    expect(page.get_by_test_id("sign-out")).to_be_hidden()
    dashboard.screenshot(page, "sign_in", full_page=False)

    page.get_by_test_id("token-input").fill(dashboard.token)
    page.get_by_test_id("sign-in").click()
    expect(page.get_by_test_id("runs-table")).to_be_visible()
    expect(page).to_have_url(re.compile(r"#/runs$"))
    expect(page.get_by_test_id("nav-runs")).to_be_visible()
    expect(page.get_by_test_id("sign-out")).to_be_visible()
    stored = _stored(page)
    assert stored["session"].get(TOKEN_KEY) == dashboard.token
    assert dashboard.token not in str(stored["local"])
    assert stored["cookies"] == {"all": ""}


def test_the_page_asked_for_before_signing_in_opens_after_it(
    page: Page, dashboard: Dashboard
) -> None:
    page.goto(f"{dashboard.url}/#/submit/sweeps")
    expect(page).to_have_url(re.compile(r"#/signin$"))
    page.get_by_test_id("token-input").fill(dashboard.token)
    page.get_by_test_id("sign-in").click()
    expect(page).to_have_url(re.compile(r"#/submit/sweeps$"))
    expect(page.get_by_test_id("submit")).to_be_visible()


def test_a_refused_token_says_why_and_is_not_kept(
    page: Page, dashboard: Dashboard, page_errors: PageErrors
) -> None:
    # the browser logs each refused check: expected here
    page_errors.allow(r"^console error: Failed to load resource: .*status of 401")
    page.goto(f"{dashboard.url}/")
    token_input = page.get_by_test_id("token-input")
    message = page.get_by_test_id("sign-in-error")

    # a token no team has, one cut short, and a paste that is no token at all:
    # each with the service's own reason
    for wrong in (UNKNOWN_TOKEN, dashboard.token[:-3], "my password"):
        token_input.fill(wrong)
        page.get_by_test_id("sign-in").click()
        expect(message).to_have_text(
            f"The service refused this token: {_refusal(dashboard, wrong)}."
        )
        expect(token_input).to_have_attribute("aria-invalid", "true")
        assert TOKEN_KEY not in _stored(page)["session"]
    assert _refusal(dashboard, UNKNOWN_TOKEN) == "unknown token"

    token_input.fill("")
    page.get_by_test_id("sign-in").click()
    expect(message).to_have_text("Paste a token first.")

    expect(page).to_have_url(re.compile(r"#/signin$"))
    expect(page.get_by_test_id("runs-table")).to_have_count(0)
    assert TOKEN_KEY not in _stored(page)["session"]

    # the right one still works after the wrong ones
    token_input.fill(dashboard.token)
    page.get_by_test_id("sign-in").click()
    expect(page.get_by_test_id("runs-table")).to_be_visible()


def test_a_token_refused_later_signs_the_tab_out_with_a_message(
    page: Page, dashboard: Dashboard, page_errors: PageErrors
) -> None:
    # a revoked token in a tab left open: the next request is refused
    page_errors.allow(r"^console error: Failed to load resource: .*status of 401")
    page.goto(f"{dashboard.url}/")
    page.evaluate(
        "([key, token]) => sessionStorage.setItem(key, token)", [TOKEN_KEY, UNKNOWN_TOKEN]
    )
    page.goto(f"{dashboard.url}/#/runs")
    expect(page).to_have_url(re.compile(r"#/signin$"))
    expect(page.get_by_test_id("token-input")).to_be_visible()
    expect(page.locator("#flash")).to_contain_text("The service refused the token (unknown token)")
    assert TOKEN_KEY not in _stored(page)["session"]


def test_signing_out_forgets_the_token(page: Page, dashboard: Dashboard) -> None:
    dashboard.sign_in(page)
    page.get_by_test_id("sign-out").click()
    expect(page.get_by_test_id("token-input")).to_be_visible()
    expect(page.locator("#flash")).to_contain_text("Signed out")
    stored = _stored(page)
    assert dashboard.token not in str(stored)
    assert TOKEN_KEY not in stored["session"]
    expect(page.get_by_test_id("sign-out")).to_be_hidden()

    # a reload, or a page's address, finds no token: the sign-in form again
    page.reload()
    expect(page.get_by_test_id("token-input")).to_be_visible()
    page.goto(f"{dashboard.url}/#/runs")
    expect(page).to_have_url(re.compile(r"#/signin$"))
    expect(page.get_by_test_id("token-input")).to_be_visible()
    expect(page.get_by_test_id("runs-table")).to_have_count(0)


def test_the_token_is_sent_only_in_the_authorization_header(
    page: Page, dashboard: Dashboard
) -> None:
    requests: list[Request] = []
    page.on("request", lambda request: requests.append(request))
    dashboard.sign_in(page)
    # pages that read the API in several ways: lists, the schema, a submit
    page.get_by_test_id("filter-kind").select_option("range_test")
    expect(page).to_have_url(re.compile(r"kind=range_test"))
    page.get_by_test_id("nav-submit-range-test").click()
    expect(page.get_by_test_id("submit")).to_be_visible()
    page.get_by_test_id("field-num_iter").fill("20")
    page.get_by_test_id("field-params.width").fill("8")
    page.get_by_test_id("submit").click()
    expect(page).to_have_url(re.compile(r"#/range-tests/[0-9a-f-]{36}$"))
    job_id = page.url.rsplit("/", 1)[1]
    _stop(dashboard, job_id)

    api_calls = [r for r in requests if "/ui/" not in r.url and r.resource_type == "fetch"]
    assert {r.method for r in api_calls} == {"GET", "POST"}
    for request in requests:
        assert dashboard.token not in request.url, request.url
        assert dashboard.token[4:] not in request.url, request.url
    # each API call carries it in the header
    for request in api_calls:
        assert request.headers.get("authorization") == f"Bearer {dashboard.token}", request.url
    # and the addresses the tab went through never held it
    history = page.evaluate("() => [location.href, document.referrer]")
    assert all(dashboard.token not in url for url in history)
    # nor did the API, worker and reaper log it (their access and error logs)
    for log in dashboard.server.logs:
        assert dashboard.token[4:] not in log.read_text(errors="replace"), log.name

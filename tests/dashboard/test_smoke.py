"""``/docs`` and ``/redoc`` render in a real browser with no other host reachable.

Their bundles are served by the API itself (api/routes/docs.py); the ``page``
fixture aborts and reports any request to another host, any CSP violation and
any console or page error, so a page that still reached for a CDN fails here.
"""

from __future__ import annotations

from playwright.sync_api import Page, expect

from tests.dashboard.conftest import Dashboard, PageErrors


def test_swagger_ui_renders_offline(page: Page, dashboard: Dashboard) -> None:
    page.goto(f"{dashboard.url}/docs")
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("clr-sweep")
    # the operations come from /openapi.json, fetched by the page's own script
    expect(
        page.locator(".swagger-ui .opblock-summary-path", has_text="/range-tests").first
    ).to_be_visible()
    dashboard.screenshot(page, "docs", full_page=False)


def test_redoc_renders_offline(page: Page, dashboard: Dashboard, page_errors: PageErrors) -> None:
    # ReDoc 2.5.4 hard-codes its "API docs by Redocly" logo at cdn.redoc.ly, with no
    # option to hide it: the page's CSP (img-src 'self' data:) blocks it before any
    # request leaves, and the image hides itself on error. Only that one is expected.
    page_errors.allow(
        r"^CSP violation: Loading the image 'https://cdn\.redoc\.ly/redoc/logo-mini\.svg'"
    )
    page.goto(f"{dashboard.url}/redoc")
    expect(page.locator(".api-info h1")).to_contain_text("clr-sweep")
    # the side menu lists the operations, read from /openapi.json
    expect(page.locator("[role=menuitem]").first).to_be_visible()
    dashboard.screenshot(page, "redoc", full_page=False)


def test_a_page_whose_code_cannot_be_fetched_says_so_and_loads_on_retry(
    page: Page, dashboard: Dashboard, page_errors: PageErrors
) -> None:
    # the service down or restarting when the user opens a page not loaded yet:
    # the browser's "Failed to fetch dynamically imported module <url>" is no message
    page_errors.allow(r"net::ERR_FAILED")
    dashboard.sign_in(page)
    page.route("**/js/pages/overlay.js", lambda route: route.abort("failed"))
    page.goto(f"{dashboard.url}/#/overlay")
    expect(page.locator("main")).to_contain_text("cannot reach the service")
    page.unroute("**/js/pages/overlay.js")
    page.get_by_test_id("retry").click()
    expect(page.get_by_test_id("overlay-add")).to_be_visible()

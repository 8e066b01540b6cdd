"""The runs page (#/runs) in Chromium, against the real API and worker.

The jobs are the team's own-loop ones (``"source": "client"``: created, their
points uploaded and finished over the API in a moment, no worker needed) plus
jobs for a queue no worker takes (``device: cuda`` on this CPU-only service), which
stay queued and say why. Everything a request can set (a model's name, a tag, an
error) is shown as text: the page is built with ``textContent`` only, and its
Content-Security-Policy would stop an inline script anyway.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Locator, Page, expect

from clr_sweep.errors import Conflict
from tests.dashboard.conftest import Dashboard, PageErrors

PAGE_SIZE = 50
"""Rows per page of the runs table (js/pages/runs.js)."""
FINAL = {"succeeded", "failed", "cancelled"}


def _curve(n: int = 100) -> dict[str, list[float]]:
    """A range test's curve with a clear descent and a blow-up past lr 1."""
    lrs = [1e-4 * (10 / 1e-4) ** (i / (n - 1)) for i in range(n)]
    loss = [
        2.3 - 1.5 / (1 + math.exp(-3 * (math.log10(lr) + 2))) + max(0.0, 3 * (lr - 1)) for lr in lrs
    ]
    accuracy = [max(0.0, min(0.95, (2.3 - v) / 1.6)) for v in loss]
    return {"lr": lrs, "loss": loss, "accuracy": accuracy}


def _post(dashboard: Dashboard, path: str, body: dict[str, Any]) -> Any:
    return dashboard.client.request("POST", path, json=body).json()


def _own_range_test(
    dashboard: Dashboard,
    model: str,
    *,
    dataset: str = "cifar10",
    tags: dict[str, Any] | None = None,
    status: str = "succeeded",
    error: str | None = None,
) -> str:
    """A client range test: created, its curve uploaded (when it succeeds), finished."""
    body = {"source": "client", "model": model, "dataset": dataset, "batch_size": 128}
    body |= {"num_iter": 100, "start_lr": 1e-4, "end_lr": 10.0, "tags": tags or {}}
    job = _post(dashboard, "/range-tests", body)
    if status == "succeeded":
        _post(dashboard, f"/jobs/{job['id']}/series/curve", {"start": 0, "values": _curve()})
    finish = {"status": status} | ({"error": error} if error else {})
    _post(dashboard, f"/jobs/{job['id']}/finish", finish)
    return str(job["id"])


def _own_training(dashboard: Dashboard, model: str) -> str:
    """A client training of 20 iterations between given bounds, finished."""
    schedule = {"policy": "triangular", "base_lr": 0.05, "max_lr": 0.2, "step_size_up": 5}
    body = {"source": "client", "model": model, "dataset": "cifar10", "batch_size": 128}
    job = _post(dashboard, "/trainings", body | {"iterations": 20, "schedule": schedule})
    values = {"lr": [0.1] * 20, "loss": [1.0 - i / 40 for i in range(20)]}
    _post(dashboard, f"/jobs/{job['id']}/series/iterations", {"start": 0, "values": values})
    _post(dashboard, f"/jobs/{job['id']}/finish", {"status": "succeeded"})
    return str(job["id"])


def _queued(dashboard: Dashboard, noun: str = "range-tests", **extra: Any) -> str:
    """A job for jobs.cuda, which no worker of this service takes: it stays queued."""
    body = {"workload": "digits_mlp", "device": "cuda", "params": {"width": 8}} | extra
    return str(_post(dashboard, f"/{noun}", body)["id"])


@pytest.fixture
def team(dashboard: Dashboard) -> Iterator[Dashboard]:
    """The dashboard's team; its jobs still queued or running are cancelled afterwards."""
    yield dashboard
    for job in dashboard.client.list():
        if job.status not in FINAL:
            try:
                dashboard.client.cancel(job.id)
            except Conflict:
                pass  # it ended meanwhile (a sweep ends when its range test is cancelled)


def _rows(page: Page) -> Locator:
    return page.get_by_test_id("runs-table").locator("tbody tr[data-id]")


def _row(page: Page, job_id: str) -> Locator:
    return page.get_by_test_id("runs-table").locator(f"tbody tr[data-id='{job_id}']")


def _ids(page: Page) -> list[str]:
    ids: list[str] = _rows(page).evaluate_all("rows => rows.map(r => r.dataset.id)")
    return ids


def _api_ids(dashboard: Dashboard, **query: Any) -> list[str]:
    return [str(j.id) for j in dashboard.client.list_page(**query).items]


def _num(x: float) -> str:
    """A value as js/format.js's num() shows one in [0.001, 1e5): 3 significant digits."""
    return f"{float(f'{x:.3g}'):g}"


def test_the_runs_table_shows_every_job_of_the_team(page: Page, team: Dashboard) -> None:
    tuned = _own_range_test(team, "resnet18", tags={"run": "baseline"})
    wide = _own_range_test(team, "wide_resnet28", tags={"run": "wider"})
    oom = _own_range_test(team, "vit_b16", status="failed", error="CUDA out of memory")
    trained = _own_training(team, "resnet18")
    sweep = _queued(team, "sweeps", policies=["fixed", "triangular2"], seeds=[0])
    waiting = _queued(team, "range-tests", num_iter=50)
    jobs = {str(j.id): j for j in team.client.list()}
    assert len(jobs) >= 7  # the sweep's range test too

    team.sign_in(page)
    expect(_rows(page)).to_have_count(len(jobs))
    assert _ids(page) == _api_ids(team)  # newest first, as the API lists them

    for job_id, kind, subject in [
        (tuned, "range test (own loop)", "resnet18 / cifar10run=baseline"),
        (oom, "range test (own loop)", "vit_b16 / cifar10"),
        (trained, "training (own loop)", "resnet18 / cifar10"),
        (sweep, "sweep", "digits_mlp"),
        (waiting, "range test", "digits_mlp"),
    ]:
        row = _row(page, job_id)
        expect(row.get_by_test_id("kind")).to_have_text(kind)
        expect(row.get_by_test_id("subject")).to_have_text(subject)
        expect(row.get_by_test_id("status")).to_have_text(jobs[job_id].status)

    # the bounds each range test found, with the method that chose them
    for job_id in (tuned, wide):
        bounds = team.client.request("GET", f"/jobs/{job_id}").json()["result"]["bounds"]
        expect(_row(page, job_id).get_by_test_id("bounds")).to_have_text(
            f"{_num(bounds['base_lr'])} – {_num(bounds['max_lr'])} {bounds['method']}"
        )
    expect(_row(page, trained).get_by_test_id("bounds")).to_have_text("0.05 – 0.2 triangular")
    expect(_row(page, oom)).to_contain_text("CUDA out of memory")
    # attempts: a client job has one; a sweep holds no worker, so none of its own
    expect(_row(page, tuned).get_by_test_id("attempts")).to_have_text("1/1")
    expect(_row(page, sweep).get_by_test_id("attempts")).to_have_text("–")
    queued = team.client.get(waiting)
    expect(_row(page, waiting).get_by_test_id("attempts")).to_have_text(f"0/{queued.max_attempts}")

    # a queued job says what it waits for: no worker takes its queue here
    reason = _row(page, waiting).get_by_test_id("waiting-reason")
    expect(reason).to_contain_text("no running worker takes jobs.cuda")
    [child] = team.client.list_page(parent=sweep).items
    expect(_row(page, str(child.id))).to_contain_text(f"its range test of sweep {sweep[:8]}")
    team.screenshot(page, "runs")


def test_the_filters_change_the_rows_and_the_address(page: Page, team: Dashboard) -> None:
    succeeded = _own_range_test(team, "resnet18")
    failed = _own_range_test(team, "resnet50", status="failed", error="diverged")
    trained = _own_training(team, "resnet18")
    waiting = _queued(team)
    team.sign_in(page)
    expect(_rows(page)).to_have_count(4)

    page.get_by_test_id("filter-kind").select_option("training")
    expect(page).to_have_url(re.compile(r"#/runs\?kind=training$"))
    expect(_rows(page)).to_have_count(1)
    assert _ids(page) == [trained]

    page.get_by_test_id("filter-kind").select_option("range_test")
    expect(page).to_have_url(re.compile(r"#/runs\?kind=range_test$"))
    page.get_by_test_id("filter-status").select_option("failed")
    expect(page).to_have_url(re.compile(r"#/runs\?kind=range_test&status=failed$"))
    expect(_rows(page)).to_have_count(1)
    assert _ids(page) == [failed]

    page.get_by_test_id("filter-status").select_option("")
    expect(page).to_have_url(re.compile(r"#/runs\?kind=range_test$"))
    expect(_rows(page)).to_have_count(3)
    assert _ids(page) == _api_ids(team, kind="range_test") == [waiting, failed, succeeded]

    page.get_by_test_id("filter-kind").select_option("")
    expect(page).to_have_url(re.compile(r"#/runs$"))
    page.get_by_test_id("filter-workload").select_option("digits_mlp")
    expect(page).to_have_url(re.compile(r"#/runs\?workload=digits_mlp$"))
    expect(_rows(page)).to_have_count(1)
    assert _ids(page) == [waiting]

    # the address is the state: going back restores the filters and their rows
    page.go_back()
    expect(page).to_have_url(re.compile(r"#/runs$"))
    expect(page.get_by_test_id("filter-workload")).to_have_value("")
    expect(_rows(page)).to_have_count(4)
    page.go_back()
    expect(page).to_have_url(re.compile(r"#/runs\?kind=range_test$"))
    expect(page.get_by_test_id("filter-kind")).to_have_value("range_test")
    expect(_rows(page)).to_have_count(3)
    # and an address opens with its filters set
    page.goto(f"{team.url}/#/runs?status=succeeded")
    expect(page.get_by_test_id("filter-status")).to_have_value("succeeded")
    expect(_rows(page)).to_have_count(2)
    assert set(_ids(page)) == {succeeded, trained}

    page.goto(f"{team.url}/#/runs?kind=sweep")
    expect(page.get_by_test_id("runs-table").locator("td.empty")).to_be_visible()


def test_more_than_a_page_of_runs_pages_through_the_api_cursors(
    page: Page, team: Dashboard
) -> None:
    for i in range(PAGE_SIZE + 5):
        _own_range_test(team, f"model_{i:02d}", status="cancelled")
    first = _api_ids(team)
    second = _api_ids(team, cursor=team.client.list_page().next_cursor)
    assert (len(first), len(second)) == (PAGE_SIZE, 5)

    team.sign_in(page)
    older, newer = page.get_by_test_id("page-older"), page.get_by_test_id("page-newer")
    expect(_rows(page)).to_have_count(PAGE_SIZE)
    assert _ids(page) == first
    expect(newer).to_be_disabled()
    expect(older).to_be_enabled()

    older.click()
    expect(page).to_have_url(re.compile(r"#/runs\?cursor="))
    expect(_rows(page)).to_have_count(5)
    assert _ids(page) == second
    expect(older).to_be_disabled()
    expect(newer).to_be_enabled()
    expect(page.locator(".pager")).to_contain_text("page 2")

    newer.click()
    expect(page).to_have_url(re.compile(r"#/runs$"))
    expect(_rows(page)).to_have_count(PAGE_SIZE)
    assert _ids(page) == first
    expect(newer).to_be_disabled()


XSS = {
    "model": '<img src=x onerror="window.__xss=1">',
    "dataset": "<script>window.__xss=2</script>",
    "tag": "<img src=x onerror=window.__xss=3>",
    "error": '<b>boom</b><svg onload="window.__xss=4"></svg>',
}


def test_text_from_requests_is_shown_as_text_and_runs_nothing(page: Page, team: Dashboard) -> None:
    shown = _own_range_test(team, XSS["model"], dataset=XSS["dataset"], tags={"note": XSS["tag"]})
    failed = _own_range_test(team, "</td></tr><tr><td>row", status="failed", error=XSS["error"])
    team.sign_in(page)
    expect(_rows(page)).to_have_count(2)
    expect(_row(page, shown).get_by_test_id("subject")).to_have_text(
        f"{XSS['model']} / {XSS['dataset']}note={XSS['tag']}"
    )
    expect(_row(page, failed).get_by_test_id("subject")).to_have_text(
        "</td></tr><tr><td>row / cifar10"
    )
    expect(_row(page, failed).locator(".error-text")).to_have_text(XSS["error"])
    table = page.get_by_test_id("runs-table")
    expect(table.locator("img, script, svg, b, iframe")).to_have_count(0)
    expect(table.locator("tbody > tr")).to_have_count(2)
    assert page.evaluate("() => window.__xss") is None
    # (the page fixture fails the test on any CSP violation or page error)


def test_the_page_carries_a_content_security_policy_that_blocks_inline_script(
    page: Page, team: Dashboard, page_errors: PageErrors
) -> None:
    response = page.goto(f"{team.url}/")
    assert response is not None
    policy = {
        d.split()[0]: d.split()[1:]
        for d in (p.strip() for p in response.headers["content-security-policy"].split(";"))
        if d
    }
    assert policy["default-src"] == ["'none'"]
    assert policy["script-src"] == ["'self'"]
    assert policy["connect-src"] == ["'self'"]
    assert "'unsafe-inline'" not in response.headers["content-security-policy"]
    assert "'unsafe-eval'" not in response.headers["content-security-policy"]

    # the browser enforces it: an injected inline script does not run
    page_errors.allow(r"^CSP violation: .*inline script")
    with page.expect_console_message(lambda m: "Content Security Policy" in m.text):
        page.evaluate(
            """() => {
                const s = document.createElement('script');
                s.textContent = 'window.__inline = 1';
                document.head.append(s);
            }"""
        )
    assert page.evaluate("() => window.__inline") is None

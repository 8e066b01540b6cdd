"""The range test page in a real browser, against the real service.

The live test is deterministic: it uses a range test run in the team's own loop
(``"source": "client"``), so the test itself uploads the points and waits until
the page, following the job's Server-Sent Events, shows them; then it finishes
the job and reads the bounds and the methods the page shows against
``GET /range-tests/{id}/bounds``. A worker-run range test, cancelling from the
page and a failed test's error are covered too.
"""

from __future__ import annotations

import json
import math
import random
import re
from contextlib import ExitStack
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
from playwright.sync_api import Page, expect

from cli.render import cyclic_lr_code
from clr_sweep import Client
from core.settings import Settings
from tests.dashboard.conftest import Dashboard, PageErrors
from tests.services import TINY_RANGE_TEST, WAIT_S

NUM_ITER = 120


def synthetic_curve(n: int, *, center: float, diverge: float, seed: int) -> dict[str, list[float]]:
    """A range test's curve as a real one looks: flat, a descent around 10**center,
    divergence past 10**diverge, 3 % noise; LRs from 1e-5 to 10 (geometric)."""
    rnd = random.Random(seed)
    lrs, losses, accuracies = [], [], []
    for i in range(n):
        lr = 1e-5 * (10 / 1e-5) ** (i / (n - 1))
        x = math.log10(lr)
        fall = 1 / (1 + math.exp(-(x - center) * 2.4))
        loss = 2.3 - 1.7 * fall + (3 * (x - diverge) ** 2 if x > diverge else 0.0)
        lrs.append(lr)
        losses.append(loss * (1 + rnd.gauss(0, 0.03)))
        accuracies.append(min(1.0, max(0.0, 0.1 + 0.8 * fall + rnd.gauss(0, 0.02))))
    return {"lr": lrs, "loss": losses, "accuracy": accuracies}


def create_client_range_test(client: Client, **fields: Any) -> str:
    """A range test the team runs itself (``POST /range-tests`` with ``"source": "client"``)."""
    body = {
        "source": "client",
        "model": "resnet-tiny",
        "dataset": "cifar10",
        "batch_size": 64,
        "optimizer": {"name": "sgd", "momentum": 0.9},
        "num_iter": NUM_ITER,
        "iters_per_epoch": 25,
        **fields,
    }
    return str(client.request("POST", "/range-tests", json=body, idempotency_key=True).json()["id"])


def upload(
    client: Client, job_id: str, curve: dict[str, list[float]], start: int, stop: int
) -> None:
    """Points ``start`` to ``stop`` of ``curve`` (``POST /jobs/{id}/series/curve``)."""
    values = {name: column[start:stop] for name, column in curve.items()}
    client.request("POST", f"/jobs/{job_id}/series/curve", json={"start": start, "values": values})


def finish(client: Client, job_id: str, status: str = "succeeded", **fields: Any) -> None:
    """End a client job (``POST /jobs/{id}/finish``)."""
    client.request("POST", f"/jobs/{job_id}/finish", json={"status": status, **fields})


def uploaded_range_test(client: Client, *, seed: int = 0, **fields: Any) -> str:
    """A client range test with its whole synthetic curve uploaded, succeeded."""
    job_id = create_client_range_test(client, **fields)
    curve = synthetic_curve(NUM_ITER, center=-1.5 + seed * 0.4, diverge=0.2, seed=seed)
    upload(client, job_id, curve, 0, NUM_ITER)
    finish(client, job_id)
    return job_id


def markers(page: Page, testid: str) -> list[str]:
    """The labels the chart's marker plugin drew (kept in the uPlot root's data-markers)."""
    chart = page.get_by_test_id(testid).locator(".uplot")
    expect(chart).to_have_attribute("data-markers", re.compile(r'^\["'))
    return list(json.loads(chart.get_attribute("data-markers") or "[]"))


def close_to(text: str, value: float) -> bool:
    """``text`` (3 significant digits, as the page shows LRs) is ``value`` rounded."""
    return math.isclose(float(text), value, rel_tol=5e-3)


def check_bounds_shown(page: Page, bounds: dict[str, Any]) -> None:
    """The default bounds, every method, the failed ones, the chart's marks and the
    CyclicLR line are those of ``bounds`` (a BoundsRead document)."""
    shown = page.get_by_test_id("bounds")
    expect(shown).to_have_attribute("data-method", bounds["default_method"])
    assert float(shown.get_attribute("data-base-lr") or "nan") == bounds["base_lr"]
    assert float(shown.get_attribute("data-max-lr") or "nan") == bounds["max_lr"]
    low, high = (shown.text_content() or "").split("\u2013")
    assert close_to(low, bounds["base_lr"])
    assert close_to(high, bounds["max_lr"])

    table = page.get_by_test_id("methods")
    failed = bounds["failed"] or {}
    expect(table.locator("tbody tr")).to_have_count(len(bounds["suggestions"]) + len(failed))
    for item in bounds["suggestions"]:
        row = table.locator(f'tr[data-method="{item["method"]}"]')
        assert float(row.get_attribute("data-base-lr") or "nan") == item["base_lr"]
        assert float(row.get_attribute("data-max-lr") or "nan") == item["max_lr"]
        assert close_to(row.get_by_test_id("base-lr").inner_text(), item["base_lr"])
        assert close_to(row.get_by_test_id("max-lr").inner_text(), item["max_lr"])
        expect(row).to_contain_text(item["rationale"])
        is_default = item["method"] == bounds["default_method"]
        expect(row.get_by_test_id("default-method")).to_have_count(1 if is_default else 0)
    for method, reason in failed.items():
        expect(table.locator(f'tr[data-method="{method}"]')).to_contain_text(reason)

    # each method's base and max: a labelled line with its name and value
    labels = markers(page, "curve-chart")
    for item in bounds["suggestions"]:
        for end in ("base", "max"):
            prefix = f"{item['method']} {end} "
            mine = [label for label in labels if label.startswith(prefix)]
            assert mine, f"no {prefix!r} marker among {labels}"
            assert close_to(mine[0].removeprefix(prefix), item[f"{end}_lr"])

    # the line the CLI prints, character for character
    expect(page.get_by_test_id("cyclic-line")).to_have_text(cyclic_lr_code(bounds))


def test_points_arrive_live_then_bounds_and_methods(page: Page, dashboard: Dashboard) -> None:
    client = dashboard.client
    job_id = create_client_range_test(client, tags={"width": 48})
    curve = synthetic_curve(NUM_ITER, center=-1.3, diverge=0.2, seed=7)
    dashboard.sign_in(page)
    page.goto(f"{dashboard.url}/#/range-tests/{job_id}")

    count = page.get_by_test_id("point-count")
    expect(page.get_by_test_id("status")).to_have_text("running")
    expect(page.get_by_test_id("live")).to_be_visible()
    expect(page.get_by_test_id("cancel")).to_be_visible()
    expect(count).to_have_text("0")

    # each upload reaches the page over the event stream (the page does not poll)
    upload(client, job_id, curve, 0, 50)
    expect(count).to_have_text("50")
    expect(page.get_by_test_id("progress")).to_have_text(f"50 / {NUM_ITER} steps")
    expect(page.get_by_test_id("curve-chart").locator("canvas")).to_be_visible()
    upload(client, job_id, curve, 50, 90)
    expect(count).to_have_text("90")

    upload(client, job_id, curve, 90, NUM_ITER)
    finish(client, job_id)
    expect(page.get_by_test_id("status")).to_have_text("succeeded")
    expect(page.get_by_test_id("bounds")).to_be_visible()
    expect(count).to_have_text(str(NUM_ITER))
    expect(page.get_by_test_id("live")).to_have_count(0)
    expect(page.get_by_test_id("cancel")).to_have_count(0)

    bounds = client.request("GET", f"/range-tests/{job_id}/bounds").json()
    check_bounds_shown(page, bounds)
    facts = page.get_by_test_id("facts")
    expect(facts).to_contain_text("resnet-tiny / cifar10")
    expect(facts).to_contain_text("width 48")
    expect(facts).to_contain_text("sgd (momentum 0.9")
    dashboard.screenshot(page, "range_test")

    # another method's bounds for the CyclicLR line, and the copy button
    other = next(s for s in bounds["suggestions"] if s["method"] != bounds["default_method"])
    page.get_by_test_id("methods").locator(
        f'tr[data-method="{other["method"]}"] input[type=radio]'
    ).check()
    # as `clr-sweep range-test show --method <other>` prints it (GET .../bounds?method=)
    chosen = client.request(
        "GET", f"/range-tests/{job_id}/bounds", params={"method": other["method"]}
    ).json()
    expect(page.get_by_test_id("cyclic-line")).to_have_text(cyclic_lr_code(chosen))
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=dashboard.url)
    page.get_by_test_id("copy").click()
    expect(page.get_by_test_id("copy")).to_have_text("copied")
    assert page.evaluate("navigator.clipboard.readText()") == cyclic_lr_code(chosen)


def test_a_page_opened_mid_run_reads_the_points_so_far_then_follows(
    page: Page, dashboard: Dashboard
) -> None:
    client = dashboard.client
    job_id = create_client_range_test(client, num_iter=3000)
    curve = synthetic_curve(3000, center=-1.3, diverge=0.2, seed=3)
    upload(client, job_id, curve, 0, 400)
    upload(client, job_id, curve, 400, 800)
    upload(client, job_id, curve, 800, 1200)
    dashboard.sign_in(page)
    with page.expect_request(lambda r: "/events" in r.url, timeout=WAIT_S * 1000) as stream:
        page.goto(f"{dashboard.url}/#/range-tests/{job_id}")

    count = page.get_by_test_id("point-count")
    expect(count).to_have_text("1200")
    # the stream starts after the points read (thinned to the chart), not from 0
    assert stream.value.headers.get("last-event-id") == "1:1200"
    upload(client, job_id, curve, 1200, 1300)
    expect(count).to_have_text("1300")
    finish(client, job_id, status="failed", error="stopped by the test")
    expect(page.get_by_test_id("status")).to_have_text("failed")
    expect(count).to_have_text("1300")


def test_a_worker_run_range_test(page: Page, dashboard: Dashboard) -> None:
    client = dashboard.client
    job = client.submit_range_test(TINY_RANGE_TEST)
    done = client.wait(job.id, timeout=WAIT_S)
    assert done.status == "succeeded", done
    dashboard.sign_in(page)
    page.goto(f"{dashboard.url}/#/range-tests/{job.id}")

    expect(page.get_by_test_id("status")).to_have_text("succeeded")
    points = client.request("GET", f"/jobs/{job.id}/series/curve").json()["points"]
    expect(page.get_by_test_id("point-count")).to_have_text(str(points))
    facts = page.get_by_test_id("facts")
    expect(facts).to_contain_text("digits_mlp")
    expect(facts).to_contain_text("width 16")
    expect(facts).to_contain_text("completed")
    bounds = client.request("GET", f"/range-tests/{job.id}/bounds").json()
    check_bounds_shown(page, bounds)


def test_a_range_test_under_seeds_shows_how_they_ran_and_their_bounds(
    page: Page, dashboard: Dashboard
) -> None:
    client = dashboard.client
    job = client.submit_range_test({**TINY_RANGE_TEST, "seeds": [3, 4]})
    done = client.wait(job.id, timeout=WAIT_S)
    assert done.status == "succeeded", done
    dashboard.sign_in(page)
    page.goto(f"{dashboard.url}/#/range-tests/{job.id}")

    facts = page.get_by_test_id("facts")
    expect(facts).to_contain_text("3, 4 (the curve is seed 3's)")
    band = client.request("GET", f"/range-tests/{job.id}").json()["result"]["seed_band"]
    shown = page.get_by_test_id("seed-band")
    expect(shown).to_contain_text(band["reason"])
    expect(shown).to_have_attribute("data-fused", "true")
    # both seeds' curves give bounds (0.62 and 0.49 at these 30 steps)
    expect(shown).to_contain_text(f"confidence {band['confidence']:.2f}")
    expect(shown).to_contain_text(f"{band['seed_spread']:.2f}\u00d7")


def test_cancel_from_the_page(page: Page, dashboard: Dashboard) -> None:
    client = dashboard.client
    job_id = create_client_range_test(client)
    upload(client, job_id, synthetic_curve(NUM_ITER, center=-1.5, diverge=0.2, seed=1), 0, 30)
    dashboard.sign_in(page)
    page.goto(f"{dashboard.url}/#/range-tests/{job_id}")
    expect(page.get_by_test_id("point-count")).to_have_text("30")

    page.get_by_test_id("cancel").click()
    expect(page.get_by_test_id("status")).to_have_text("cancelled")
    expect(page.get_by_test_id("cancel")).to_have_count(0)
    assert client.get(job_id).status == "cancelled"
    # the points it had stay on the chart
    expect(page.get_by_test_id("point-count")).to_have_text("30")


def test_a_failed_range_test_shows_its_error_as_text(page: Page, dashboard: Dashboard) -> None:
    client = dashboard.client
    # a model name and an error that would be markup if the page used innerHTML
    job_id = create_client_range_test(client, model="<img src=x onerror=alert(1)>")
    upload(client, job_id, synthetic_curve(NUM_ITER, center=-1.5, diverge=0.2, seed=2), 0, 10)
    finish(client, job_id, "failed", error="CUDA out of memory <b>at step 10</b>")
    dashboard.sign_in(page)
    page.goto(f"{dashboard.url}/#/range-tests/{job_id}")

    expect(page.get_by_test_id("status")).to_have_text("failed")
    expect(page.get_by_test_id("job-error")).to_have_text("CUDA out of memory <b>at step 10</b>")
    expect(page.get_by_test_id("facts")).to_contain_text("<img src=x onerror=alert(1)> / cifar10")
    expect(page.locator("main img")).to_have_count(0)
    expect(page.locator("main b")).to_have_count(0)
    expect(page.get_by_test_id("point-count")).to_have_text("10")


def test_zoom_reads_the_range_again_at_full_resolution(page: Page, dashboard: Dashboard) -> None:
    client = dashboard.client
    n = 3000
    job_id = create_client_range_test(client, num_iter=n)
    curve = synthetic_curve(n, center=-1.0, diverge=0.5, seed=3)
    for start in range(0, n, 500):
        upload(client, job_id, curve, start, start + 500)
    finish(client, job_id)
    dashboard.sign_in(page)
    page.goto(f"{dashboard.url}/#/range-tests/{job_id}")
    expect(page.get_by_test_id("point-count")).to_have_text(str(n))
    expect(page.get_by_test_id("zoom-state")).to_have_count(0)

    # drag across a part of the chart: that range is read again, unthinned
    over = page.get_by_test_id("curve-chart").locator(".u-over")
    box = over.bounding_box()
    assert box is not None
    y = box["y"] + box["height"] / 2
    with page.expect_request(lambda r: "/series/curve" in r.url and "limit=" in r.url) as asked:
        page.mouse.move(box["x"] + box["width"] * 0.55, y)
        page.mouse.down()
        page.mouse.move(box["x"] + box["width"] * 0.7, y, steps=5)
        page.mouse.up()
    query = parse_qs(urlsplit(asked.value.url).query)
    after, limit = int(query["after"][0]), int(query["limit"][0])
    assert 0 < after < after + limit < n
    assert limit < n / 2
    expect(page.get_by_test_id("zoom-state")).to_contain_text(f"({limit} points, full resolution)")

    page.get_by_test_id("zoom-reset").click()
    expect(page.get_by_test_id("zoom-state")).to_have_count(0)


def test_a_queued_range_test_says_why_it_waits_and_is_cancelled(
    page: Page, dashboard: Dashboard
) -> None:
    client = dashboard.client
    # the service's only worker runs on the CPU: a CUDA job waits in its queue
    job = client.submit_range_test({**TINY_RANGE_TEST, "device": "cuda"})
    dashboard.sign_in(page)
    page.goto(f"{dashboard.url}/#/range-tests/{job.id}")

    expect(page.get_by_test_id("status")).to_have_text("queued")
    expect(page.get_by_test_id("waiting-reason")).to_contain_text("jobs.cuda")
    expect(page.get_by_test_id("point-count")).to_have_text("0")

    page.get_by_test_id("cancel").click()
    expect(page.get_by_test_id("status")).to_have_text("cancelled")
    expect(page.get_by_test_id("cancel")).to_have_count(0)
    assert client.get(job.id).status == "cancelled"


def test_a_flat_curve_says_no_bounds_and_draws(page: Page, dashboard: Dashboard) -> None:
    client = dashboard.client
    # every loss the same: the y range is a few ulps wide unless the page widens it
    # (uPlot's tick search then threw "Invalid array length" and drew no chart)
    job_id = create_client_range_test(client)
    lrs = synthetic_curve(NUM_ITER, center=-1.5, diverge=0.2, seed=4)["lr"]
    upload(client, job_id, {"lr": lrs, "loss": [1.0] * NUM_ITER}, 0, NUM_ITER)
    finish(client, job_id)
    dashboard.sign_in(page)
    page.goto(f"{dashboard.url}/#/range-tests/{job_id}")

    expect(page.get_by_test_id("bounds")).to_have_text("none")
    expect(page.get_by_test_id("curve-chart").locator(".uplot canvas")).to_have_count(1)
    expect(page.get_by_test_id("point-count")).to_have_text(str(NUM_ITER))


def test_zoom_on_an_unthinned_test_names_the_zoomed_range(page: Page, dashboard: Dashboard) -> None:
    client = dashboard.client
    job_id = uploaded_range_test(client, seed=5)  # NUM_ITER points: drawn all, not read again
    dashboard.sign_in(page)
    page.goto(f"{dashboard.url}/#/range-tests/{job_id}")
    expect(page.get_by_test_id("point-count")).to_have_text(str(NUM_ITER))

    over = page.get_by_test_id("curve-chart").locator(".u-over")
    box = over.bounding_box()
    assert box is not None
    y = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + box["width"] * 0.4, y)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.6, y, steps=5)
    page.mouse.up()
    # the middle fifth of 1e-5..10 (log axis): about 1.6e-3..2.5e-2, not the whole range
    state = page.get_by_test_id("zoom-state")
    expect(state).to_contain_text("zoomed to")
    low, high = (float(v) for v in re.findall(r"[0-9.]+(?:e-?[0-9]+)?", state.inner_text())[:2])
    assert 1e-4 < low < high < 1, state.inner_text()


def test_the_team_stream_cap_is_said_and_the_page_recovers(
    page: Page, page_errors: PageErrors, dashboard: Dashboard
) -> None:
    page_errors.allow(r"status of 429")
    client = dashboard.client
    job_id = create_client_range_test(client)
    upload(client, job_id, synthetic_curve(NUM_ITER, center=-1.5, diverge=0.2, seed=6), 0, 10)
    cap = Settings.model_fields["api_max_streams_per_team"].default
    headers = {"Authorization": f"Bearer {dashboard.token}"}
    with httpx.Client(base_url=dashboard.url, headers=headers, timeout=WAIT_S) as http:
        with ExitStack() as held:
            # the team's every stream slot taken: the page's stream is refused (429)
            for _ in range(cap):
                response = held.enter_context(http.stream("GET", f"/jobs/{job_id}/events"))
                assert response.status_code == 200
            dashboard.sign_in(page)
            page.goto(f"{dashboard.url}/#/range-tests/{job_id}")
            live = page.get_by_test_id("live")
            # it says why it is not live (the API's reason), not only "reconnecting"
            expect(live).to_contain_text("not live")
            expect(live).to_contain_text(f"{cap} open event streams")
        # the slots given back: the page retries on its own and follows the job
        expect(live).to_have_text("\u25cf live")
        expect(page.get_by_test_id("point-count")).to_have_text("10")

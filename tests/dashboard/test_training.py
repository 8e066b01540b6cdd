"""The training page in Chromium, against the real API and worker.

A worker-run training: the loss chart and, underneath it, the LR chart on the
same x range (one cursor, one zoom, a zoom reading the range again), its cycle
ends, the outcome as the API gives it and the model downloaded at the API's
size. A training run in the team's own loop: its points appear on the open page
as the test uploads them (Server-Sent Events), and its outcome once it finishes.
"""

from __future__ import annotations

from typing import Any

from playwright.sync_api import Page, expect

from tests.dashboard.conftest import Dashboard
from tests.services import TINY_RANGE_TEST, TINY_TRAINING, WAIT_S

TRAINING: dict[str, Any] = {
    **TINY_TRAINING,
    "params": {"width": 16},
    "schedule": {
        "policy": "triangular",
        "base_lr": 0.01,
        "max_lr": 0.3,
        "step_size_up": 30,
        "base_momentum": 0.8,
        "max_momentum": 0.95,
    },
    "cycles": 3,
    "snapshots": 2,
}
"""Three cycles of 60 iterations (about 8 epochs, a second on one core), the momentum
cycled inversely to the LR: three cycle ends, a snapshot ensemble of two."""

OWN_LOOP: dict[str, Any] = {
    "model": "own-net",
    "dataset": "own-data",
    "batch_size": 32,
    "tags": {"width": "64", "note": "<b>not bold</b>"},
    "iterations": 60,
    "schedule": {"policy": "triangular", "base_lr": 0.01, "max_lr": 0.1, "step_size_up": 10},
}
"""A client training of 60 iterations: cycles of 20, ending at 20, 40 and 60."""


def pct(x: float) -> str:
    """A fraction as the dashboard shows it (format.js ``pct``)."""
    return f"{100 * x:.1f}%"


def read_job(dashboard: Dashboard, job_id: str) -> Any:
    return dashboard.client.request("GET", f"/trainings/{job_id}").json()


def x_range(page: Page, test_id: str) -> tuple[float, float]:
    box = page.get_by_test_id(test_id)
    return float(box.get_attribute("data-x-min") or "nan"), float(
        box.get_attribute("data-x-max") or "nan"
    )


def open_training(page: Page, dashboard: Dashboard, job_id: str) -> None:
    dashboard.sign_in(page)
    page.goto(f"{dashboard.url}/#/trainings/{job_id}")
    expect(page.get_by_test_id("loss-chart").locator(".u-over")).to_be_visible()
    expect(page.get_by_test_id("lr-chart").locator(".u-over")).to_be_visible()


def test_training_page_charts_outcome_and_model(page: Page, dashboard: Dashboard) -> None:
    submitted = dashboard.client.submit_training(TRAINING)
    final = dashboard.client.wait(submitted.id, timeout=WAIT_S)
    assert final.status == "succeeded", final.error
    job = read_job(dashboard, str(submitted.id))
    result = job["result"]
    assert result["ensemble_size"] == 2

    open_training(page, dashboard, job["id"])
    expect(page.get_by_test_id("status")).to_have_text("succeeded")
    expect(page.get_by_test_id("iteration-count")).to_have_attribute(
        "data-count", str(result["iterations"])
    )

    # the LR chart is underneath the loss chart, on the same x range, plot areas aligned
    for chart in ("loss-chart", "lr-chart"):
        expect(page.get_by_test_id(chart)).to_have_attribute("data-x-max", str(job["total"]))
    loss_over = page.get_by_test_id("loss-chart").locator(".u-over").bounding_box()
    lr_over = page.get_by_test_id("lr-chart").locator(".u-over").bounding_box()
    assert loss_over is not None
    assert lr_over is not None
    assert lr_over["y"] >= loss_over["y"] + loss_over["height"]
    assert abs(lr_over["x"] - loss_over["x"]) < 1
    assert abs(lr_over["width"] - loss_over["width"]) < 1
    assert x_range(page, "loss-chart") == x_range(page, "lr-chart") == (0, job["total"])
    cycle_ends = page.get_by_test_id("cycle-ends")
    expect(cycle_ends).to_have_attribute("data-ends", ",".join(map(str, result["cycle_ends"])))
    assert result["cycle_ends"] == [60, 120, 180]
    # the first draw of the charts was measured (bench/dashboard.py reads it)
    assert page.evaluate("performance.getEntriesByName('series-drawn').length") >= 1

    # the outcome as the API gives it
    expect(page.get_by_test_id("final-accuracy")).to_have_text(pct(result["final_val_accuracy"]))
    expect(page.get_by_test_id("best-accuracy")).to_contain_text(pct(result["best_val_accuracy"]))
    ensemble = page.get_by_test_id("ensemble-accuracy")
    expect(ensemble).to_contain_text(pct(result["ensemble_val_accuracy"]))
    expect(ensemble).to_contain_text("of 2 cycle-end snapshots")
    assert float(ensemble.get_attribute("data-value") or "nan") == result["ensemble_val_accuracy"]
    expect(page.get_by_test_id("outcome-length")).to_have_text(
        f"{result['iterations']} iterations · {result['epochs']} epochs · 3 cycles"
    )
    expect(page.get_by_test_id("cancel")).to_have_count(0)

    # one cursor: hovering the loss chart shows the LR under it
    page.get_by_test_id("loss-chart").locator(".u-over").hover()
    lr_legend = page.get_by_test_id("lr-chart").locator(".u-legend .u-series")
    expect(lr_legend.nth(1)).to_contain_text("learning rate")
    expect(lr_legend.nth(1).locator(".u-value")).not_to_have_text("–")
    # the momentum, cycled inversely, on its own axis of the same chart
    expect(lr_legend.nth(2)).to_contain_text("momentum")
    expect(lr_legend.nth(2).locator(".u-value")).not_to_have_text("–")

    dashboard.screenshot(page, "training")

    # one zoom: a drag on the loss chart zooms the LR chart too and reads the range again
    with page.expect_request(lambda r: "/series/iterations" in r.url and "limit=" in r.url):
        page.mouse.move(loss_over["x"] + loss_over["width"] * 0.3, loss_over["y"] + 40)
        page.mouse.down()
        page.mouse.move(loss_over["x"] + loss_over["width"] * 0.6, loss_over["y"] + 60, steps=4)
        page.mouse.up()
    expect(page.get_by_test_id("zoom-state")).to_contain_text("every point")
    zoomed = x_range(page, "loss-chart")
    assert 0 < zoomed[0] < zoomed[1] < job["total"]
    assert x_range(page, "lr-chart") == zoomed
    # a double click on the LR chart shows the whole run on both again
    page.get_by_test_id("lr-chart").locator(".u-over").dblclick()
    expect(page.get_by_test_id("loss-chart")).to_have_attribute("data-x-max", str(job["total"]))
    expect(page.get_by_test_id("lr-chart")).to_have_attribute("data-x-max", str(job["total"]))

    # the model, fetched with the token (never in a URL), saved at the API's size
    model = next(a for a in result["artifacts"] if a["name"] == "model")
    with page.expect_download() as caught:
        page.get_by_test_id("download-model").click()
    download = caught.value
    assert download.suggested_filename.endswith(".pt")
    saved = download.path()
    assert saved.stat().st_size == model["size"]
    head = dashboard.client.request("GET", f"/trainings/{job['id']}/model")
    assert saved.read_bytes() == head.content


def test_training_page_follows_a_training_of_the_teams_own_loop(
    page: Page, dashboard: Dashboard
) -> None:
    logger = dashboard.client.training_logger(**OWN_LOOP)
    job_id = str(logger.job_id)

    def log(start: int, stop: int) -> None:
        for i in range(start, stop):
            logger.log(i, lr=0.01 + 0.001 * (i % 20), loss=2.0 / (1 + i), momentum=0.9)
            if (i + 1) % 20 == 0:
                logger.log_epoch(
                    (i + 1) // 20 - 1,
                    iteration=i + 1,
                    train_loss=2.0 / (2 + i),
                    train_accuracy=0.5 + i / 200,
                    val_loss=2.2 / (2 + i),
                    val_accuracy=0.45 + i / 200,
                )
        logger.flush()

    log(0, 15)
    open_training(page, dashboard, job_id)
    count = page.get_by_test_id("iteration-count")
    expect(page.get_by_test_id("status")).to_have_text("running")
    expect(count).to_have_attribute("data-count", "15")
    expect(count).to_have_text("15 / 60 iterations")
    expect(page.get_by_test_id("cancel")).to_be_visible()
    # while it runs, the cycle ends are the schedule's
    expect(page.get_by_test_id("cycle-ends")).to_have_attribute("data-ends", "20,40,60")
    expect(page.get_by_test_id("live")).to_contain_text("live")
    # the team's own model and its tags (as text)
    tags = page.get_by_test_id("tags")
    expect(tags.locator(".tag")).to_have_text(["note=<b>not bold</b>", "width=64"])
    expect(tags.locator("b")).to_have_count(0)

    # points uploaded while the page is open arrive through its event stream
    log(15, 45)
    expect(count).to_have_attribute("data-count", "45")
    expect(page.get_by_test_id("lr-chart")).to_have_attribute("data-x-max", "60")
    rows = page.get_by_test_id("epochs-table").locator("tbody tr")
    expect(rows).to_have_count(2)

    log(45, 60)
    expect(count).to_have_attribute("data-count", "60")
    finished = logger.finish(status="succeeded", seconds=3.5, device="cpu")
    assert finished.status == "succeeded"
    result = read_job(dashboard, job_id)["result"]
    expect(page.get_by_test_id("status")).to_have_text("succeeded")
    expect(page.get_by_test_id("final-accuracy")).to_have_text(pct(result["final_val_accuracy"]))
    expect(page.get_by_test_id("cancel")).to_have_count(0)
    expect(page.get_by_test_id("cycle-ends")).to_have_attribute(
        "data-ends", ",".join(map(str, result["cycle_ends"]))
    )
    expect(rows).to_have_count(3)


def test_training_page_cancels_a_running_training(page: Page, dashboard: Dashboard) -> None:
    logger = dashboard.client.training_logger(**OWN_LOOP)
    job_id = str(logger.job_id)
    logger.log(0, lr=0.01, loss=2.0)
    logger.flush()
    open_training(page, dashboard, job_id)
    page.get_by_test_id("cancel").click()
    expect(page.get_by_test_id("status")).to_have_text("cancelled")
    expect(page.get_by_test_id("cancel")).to_have_count(0)
    assert dashboard.client.get(job_id).status == "cancelled"
    logger.close()


def test_training_page_links_the_range_test_its_bounds_came_from(
    page: Page, dashboard: Dashboard
) -> None:
    range_test = dashboard.client.submit_range_test(TINY_RANGE_TEST)
    assert dashboard.client.wait(range_test.id, timeout=WAIT_S).status == "succeeded"
    spec = {
        **TINY_TRAINING,
        "schedule": {"policy": "triangular"},
        "bounds_from": {"range_test": str(range_test.id)},
    }
    training = dashboard.client.submit_training(spec)
    assert dashboard.client.wait(training.id, timeout=WAIT_S).status == "succeeded"
    source = read_job(dashboard, str(training.id))["spec"]["bounds_source"]

    open_training(page, dashboard, str(training.id))
    bounds = page.get_by_test_id("bounds-source")
    expect(bounds.locator("a")).to_have_attribute("href", f"#/range-tests/{range_test.id}")
    expect(bounds).to_contain_text(source["method"])
    bounds.locator("a").click()
    expect(page).to_have_url(f"{dashboard.url}/#/range-tests/{range_test.id}")
    # the range test's page, with the bounds the training took
    expect(page.get_by_test_id("curve-chart")).to_be_visible()

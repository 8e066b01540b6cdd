"""The overlay of range tests in a real browser, against the real service.

Two range tests run in the team's own loop (uploaded by the test, so their
settings are known) are picked on the runs page and overlaid: one chart with
each test's bounds marked, a legend with the settings that differ highlighted;
a third is added from the page's list and one removed.
"""

from __future__ import annotations

import re

from playwright.sync_api import Page, expect

from clr_sweep import Client
from tests.dashboard.conftest import Dashboard
from tests.dashboard.test_range_test import close_to, markers, uploaded_range_test


def brief_bounds(client: Client, job_id: str) -> dict[str, float]:
    """The default bounds in brief, as the job's result carries them."""
    return dict(client.request("GET", f"/range-tests/{job_id}").json()["result"]["bounds"])


def test_overlay_of_two_range_tests(page: Page, dashboard: Dashboard) -> None:
    client = dashboard.client
    small = uploaded_range_test(
        client,
        seed=0,
        batch_size=64,
        tags={"width": 32},
        optimizer={"name": "sgd", "momentum": 0.9},
    )
    large = uploaded_range_test(
        client,
        seed=1,
        batch_size=256,
        tags={"width": 64},
        optimizer={"name": "sgd", "momentum": 0.95},
    )
    third = uploaded_range_test(
        client,
        seed=2,
        batch_size=64,
        tags={"width": 32},
        optimizer={"name": "sgd", "momentum": 0.9},
    )

    # picked on the runs page
    dashboard.sign_in(page)
    for job_id in (small, large):
        page.locator(f'tr[data-id="{job_id}"]').get_by_test_id("overlay-pick").check()
    page.get_by_test_id("overlay-open").click()
    expect(page).to_have_url(re.compile(r"#/overlay\?ids="))

    legend = page.get_by_test_id("overlay-legend")
    rows = legend.locator("tbody tr")
    expect(rows).to_have_count(2)
    expect(legend.locator(f'tr[data-id="{small}"]')).to_be_visible()
    expect(legend.locator(f'tr[data-id="{large}"]')).to_be_visible()
    expect(page.get_by_test_id("overlay-chart").locator("canvas").first).to_be_visible()

    # each test's bounds in the legend and marked on the chart
    labels = markers(page, "overlay-chart")
    for key, job_id in zip("AB", (small, large), strict=True):
        bounds = brief_bounds(client, job_id)
        cell = legend.locator(f'tr[data-id="{job_id}"]').get_by_test_id("overlay-bounds")
        low, high = cell.locator("strong").inner_text().split("\u2013")
        assert close_to(low, bounds["base_lr"])
        assert close_to(high, bounds["max_lr"])
        expect(cell).to_contain_text(str(bounds["method"]))
        for end in ("base", "max"):
            mine = [label for label in labels if label.startswith(f"{key} {end} ")]
            assert mine, labels
            assert close_to(mine[0].split()[-1], bounds[f"{end}_lr"]), labels

    # what differs is highlighted, what is the same is not
    differs = page.get_by_test_id("overlay-differs")
    for setting in ("batch size", "momentum", "width"):
        expect(differs).to_contain_text(setting)
    for job_id in (small, large):
        row = legend.locator(f'tr[data-id="{job_id}"]')
        expect(row.get_by_test_id("batch-size")).to_have_class(re.compile(r"\bdiffers\b"))
        expect(row.locator(".chip.differs", has_text="momentum")).to_have_count(1)
        expect(row.locator(".chip.differs", has_text="width")).to_have_count(1)
        expect(row.locator(".chip", has_text="sgd")).not_to_have_class(re.compile(r"\bdiffers\b"))
        expect(row.locator(".chip", has_text="weight decay")).not_to_have_class(
            re.compile(r"\bdiffers\b")
        )

    # drag to zoom (the curves drawn again over that range), reset
    over = page.get_by_test_id("overlay-chart").locator(".u-over")
    box = over.bounding_box()
    assert box is not None
    y = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + box["width"] * 0.5, y)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.8, y, steps=5)
    page.mouse.up()
    expect(page.get_by_test_id("zoom-state")).to_contain_text("zoomed to")
    page.get_by_test_id("zoom-reset").click()
    expect(page.get_by_test_id("zoom-state")).to_have_count(0)

    # a third test added from the team's succeeded range tests
    page.get_by_test_id("overlay-add").select_option(third)
    expect(rows).to_have_count(3)
    expect(legend.locator(f'tr[data-id="{third}"]')).to_be_visible()
    expect(page).to_have_url(re.compile(third))
    markers(page, "overlay-chart")
    dashboard.screenshot(page, "overlay")

    # and one removed
    legend.locator(f'tr[data-id="{large}"]').get_by_test_id("overlay-remove").click()
    expect(rows).to_have_count(2)
    expect(legend.locator(f'tr[data-id="{large}"]')).to_have_count(0)
    expect(page).not_to_have_url(re.compile(large))
    # the two left have the same settings: nothing is highlighted
    expect(differs).to_contain_text("the same settings")
    expect(legend.locator(".differs")).to_have_count(0)

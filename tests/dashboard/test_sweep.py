"""The sweep page in Chromium, against the real API and worker.

A tiny sweep (digits_mlp of width 8, two policies, one seed, two cycles of 25
iterations) opened as soon as it is submitted: the page follows it live to the
end, then shows a row per policy matching the API's table, the comparison chart,
the grid point with its range test and bounds, and its children with their
statuses and links.
"""

from __future__ import annotations

from typing import Any

from playwright.sync_api import Page, expect

from tests.dashboard.conftest import Dashboard
from tests.services import WAIT_S

SWEEP: dict[str, Any] = {
    "workload": "digits_mlp",
    "params": {"width": 8},
    "device": "cpu",
    "policies": ["fixed", "triangular2"],
    "seeds": [0],
    "step_size": 25,
    "cycles": 2,
    "verify": False,
    "range_test": {"num_iter": 30, "start_lr": 1e-3, "end_lr": 1.0},
}
"""A range test and two trainings of 100 iterations, 4 epochs (seconds on one CPU core)."""

NOUN = {"range_test": "range-tests", "training": "trainings"}


def pct(x: float) -> str:
    """A fraction as the dashboard shows it (format.js ``pct``)."""
    return f"{100 * x:.1f}%"


def test_sweep_page_table_chart_and_children(page: Page, dashboard: Dashboard) -> None:
    sweep = dashboard.client.submit_sweep(SWEEP)
    sweep_id = str(sweep.id)
    dashboard.sign_in(page)
    page.goto(f"{dashboard.url}/#/sweeps/{sweep_id}")
    expect(page.get_by_test_id("progress")).to_be_visible()
    expect(page.get_by_test_id("policy-table")).to_be_visible()

    # the page stays open, following the sweep, while it runs to the end
    final = dashboard.client.wait(sweep.id, timeout=WAIT_S)
    assert final.status == "succeeded", final.error
    job = dashboard.client.request("GET", f"/sweeps/{sweep_id}").json()
    result = job["result"]
    expect(page.get_by_test_id("status")).to_have_text("succeeded")
    progress = page.get_by_test_id("progress-text")
    expect(progress).to_have_attribute("data-finished", str(result["children"]))
    expect(progress).to_have_attribute("data-planned", str(result["children"]))
    expect(page.get_by_test_id("count-succeeded")).to_have_attribute(
        "data-count", str(result["counts"]["succeeded"])
    )
    expect(page.get_by_test_id("cancel")).to_have_count(0)

    # a row per policy, as the API's table has it
    table = page.get_by_test_id("policy-table")
    rows = table.locator("tbody tr[data-policy]")
    expect(rows).to_have_count(len(SWEEP["policies"]))
    assert [r["policy"] for r in result["table"]] == SWEEP["policies"]
    for row in result["table"]:
        cells = table.locator(f"tr[data-policy='{row['policy']}']")
        final_acc = row["final_val_accuracy"]
        expect(cells.locator("[data-col=final]")).to_contain_text(pct(final_acc["mean"]))
        expect(cells.locator("[data-col=final]")).to_contain_text(f"(n={final_acc['n']})")
        expect(cells.locator("[data-col=best]")).to_contain_text(
            pct(row["best_val_accuracy"]["mean"])
        )
        expect(cells.locator("[data-col=trainings]")).to_contain_text(
            f"{row['succeeded']}/{row['seeds']}"
        )
        if row["iterations_to_fixed"] is not None:
            expect(cells.locator("[data-col=iterations]")).to_contain_text(
                f"{round(row['iterations_to_fixed']['mean'])}"
            )
    best = max(result["table"], key=lambda r: r["final_val_accuracy"]["mean"])
    expect(table.locator("tr.best")).to_have_attribute("data-policy", best["policy"])

    # the comparison chart: one line per policy
    chart = page.get_by_test_id("comparison-chart")
    expect(chart.locator("canvas")).to_have_count(1)
    legend = chart.locator(".u-legend .u-series")
    expect(legend).to_have_count(1 + len(SWEEP["policies"]))
    for policy in SWEEP["policies"]:
        expect(legend.filter(has_text=policy).first).to_be_visible()

    # the grid point, its range test and bounds
    point = result["points"][0]
    grid = page.get_by_test_id("grid-points")
    expect(grid.get_by_test_id("range-test-link")).to_have_attribute(
        "href", f"#/range-tests/{point['range_test']}"
    )
    bounds = point["bounds"]
    expect(grid.get_by_test_id("point-bounds")).to_contain_text(bounds["method"])

    # the children with their statuses, each linking to its own page
    children = list(dashboard.client.list(parent=sweep.id))
    assert len(children) == result["children"] == 3
    listed = page.get_by_test_id("children").locator("tbody tr")
    expect(listed).to_have_count(len(children))
    for child in children:
        row = page.get_by_test_id("children").locator(f"tr[data-id='{child.id}']")
        expect(row.get_by_test_id("child-status")).to_have_text(child.status)
        expect(row.locator("a")).to_have_attribute("href", f"#/{NOUN[child.kind]}/{child.id}")
        if child.kind == "training":
            assert child.role is not None
            expect(row).to_have_attribute("data-policy", str(child.role["policy"]))

    dashboard.screenshot(page, "sweep")

    # a child's link opens its training page
    training = next(c for c in children if c.kind == "training")
    page.get_by_test_id("children").locator(f"tr[data-id='{training.id}'] a").click()
    expect(page.get_by_test_id("loss-chart")).to_be_visible()
    expect(page.get_by_test_id("status")).to_have_text("succeeded")
    # how it ran: fused with its sibling (both trainings share the model configuration),
    # as the API's result says, with a link to the other member
    fusion = dashboard.client.request("GET", f"/trainings/{training.id}").json()["result"]["fusion"]
    shown = page.get_by_test_id("fusion")
    expect(shown).to_have_attribute("data-fused", str(fusion["fused"]).lower())
    expect(shown).to_have_attribute("data-members", str(fusion["members"]))
    expect(shown).to_contain_text(fusion["reason"])
    for other in fusion["jobs"]:
        expect(shown.locator(f"a[href='#/trainings/{other}']")).to_have_count(1)

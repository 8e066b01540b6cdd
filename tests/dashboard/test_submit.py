"""The submit forms (#/submit/<noun>) in Chromium, against the real API and worker.

The forms are built from the API's OpenAPI document and ``GET /workloads``
(js/forms.js): every field of the request body has an input, a workload's own
parameters follow the workload picked, and only what the user filled in is sent.
The API judges the values: its field errors appear next to the fields, and a
refused form queues nothing.
"""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, Request, expect

from cli.render import cyclic_lr_code
from clr_sweep.errors import Conflict
from tests.dashboard.conftest import Dashboard, PageErrors
from tests.services import WAIT_S

JOB_URL = r"#/{noun}/([0-9a-f-]{{36}})$"
SKIPPED = {
    "range-tests": {"batch_size"},
    "trainings": {"batch_size", "bounds_source"},
    "sweeps": {"batch_size"},
}
"""Body fields the forms leave out on purpose: ``batch_size`` is also ``params.batch_size``
(the form has that one), ``bounds_source`` is read-only (set by the service)."""


def _stop(dashboard: Dashboard, job_id: str) -> None:
    """Cancel a job this test no longer needs (unless it has already ended)."""
    try:
        dashboard.client.cancel(job_id)
    except Conflict:
        pass  # it finished first


def _open_form(page: Page, dashboard: Dashboard, noun: str) -> None:
    dashboard.sign_in(page)
    page.goto(f"{dashboard.url}/#/submit/{noun}")
    expect(page.get_by_test_id("submit")).to_be_visible()


def _field(page: Page, path: str) -> Any:
    return page.get_by_test_id(f"field-{path}")


def _open_more(page: Page, testid: str = "more-settings") -> None:
    details = page.get_by_test_id(testid)
    if details.get_attribute("open") is None:
        details.locator("> summary").click()


def _posts(requests: list[Request], noun: str) -> list[Request]:
    return [r for r in requests if r.method == "POST" and r.url.endswith(f"/{noun}")]


def _job_id(page: Page, noun: str) -> str:
    pattern = re.compile(JOB_URL.format(noun=noun))
    expect(page).to_have_url(pattern)
    match = pattern.search(page.url)
    assert match is not None
    return match.group(1)


def test_a_range_test_submitted_from_the_form_runs_with_the_values_typed(
    page: Page, dashboard: Dashboard
) -> None:
    requests: list[Request] = []
    page.on("request", lambda request: requests.append(request))
    dashboard.sign_in(page)
    page.get_by_test_id("nav-submit-range-test").click()
    expect(page.get_by_test_id("submit")).to_be_visible()

    _field(page, "workload").select_option("digits_mlp")
    expect(page.get_by_test_id("workload-description")).to_contain_text("handwritten digits")
    _field(page, "params.width").fill("16")
    _field(page, "num_iter").fill("30")
    _field(page, "start_lr").fill("0.001")
    _field(page, "end_lr").fill("1")
    _open_more(page)
    _field(page, "device").select_option(label="cpu")
    # the body to be sent, as typed, under "The request"
    _open_more(page, "request")
    expect(page.get_by_test_id("body-preview")).to_contain_text('"num_iter": 30')
    dashboard.screenshot(page, "submit_range_test")
    page.get_by_test_id("submit").click()

    job_id = _job_id(page, "range-tests")
    [post] = _posts(requests, "range-tests")
    # only what was typed, and a key that makes a retried submit safe
    assert post.post_data_json == {
        "workload": "digits_mlp",
        "params": {"width": 16},
        "num_iter": 30,
        "start_lr": 0.001,
        "end_lr": 1,
        "device": "cpu",
    }
    assert re.fullmatch(r"[0-9a-f-]{36}", post.headers["idempotency-key"])
    job = dashboard.client.wait(job_id, timeout=WAIT_S)
    spec = job.spec
    assert (spec["workload"], spec["params"]["width"], spec["num_iter"]) == ("digits_mlp", 16, 30)
    assert (spec["start_lr"], spec["end_lr"], spec["device"]) == (0.001, 1.0, "cpu")
    assert spec["optimizer"]["name"] == "sgd"  # a default the form did not send
    assert job.status == "succeeded"
    assert job.result is not None
    bounds = job.result.bounds
    assert bounds is not None
    # the page the form led to shows what the test found: the line to copy
    found = dashboard.client.request("GET", f"/range-tests/{job_id}/bounds").json()
    expect(page.get_by_test_id("cyclic-line")).to_have_text(cyclic_lr_code(found))

    # a training takes its bounds: the form offers the test, a link can pick it
    page.goto(f"{dashboard.url}/#/submit/trainings?bounds_from.range_test={job_id}")
    expect(_field(page, "bounds_from.range_test")).to_have_value(job_id)
    offered = page.locator(f"datalist option[value='{job_id}']")
    expect(offered).to_have_count(1)
    expect(offered).to_have_text(re.compile(rf"^digits_mlp: .* \({bounds.method}\)"))
    _field(page, "params.width").fill("16")
    _field(page, "cycles").fill("1")
    page.get_by_test_id("submit").click()
    training_id = _job_id(page, "trainings")
    training = dashboard.client.get(training_id)
    _stop(dashboard, training_id)
    source = training.spec["bounds_source"]
    assert (source["range_test"], source["method"]) == (job_id, bounds.method)
    assert training.spec["schedule"]["max_lr"] == bounds.max_lr


def test_the_empty_form_with_a_workload_is_a_valid_submit(page: Page, dashboard: Dashboard) -> None:
    requests: list[Request] = []
    page.on("request", lambda request: requests.append(request))
    _open_form(page, dashboard, "range-tests")
    _field(page, "workload").select_option("synthetic_mlp")
    page.get_by_test_id("submit").click()
    job_id = _job_id(page, "range-tests")
    _stop(dashboard, job_id)
    [post] = _posts(requests, "range-tests")
    assert post.post_data_json == {"workload": "synthetic_mlp"}
    # the API filled in its defaults
    spec = dashboard.client.get(job_id).spec
    assert spec["num_iter"] == 300
    assert spec["params"]["n_features"] > 0


def test_invalid_fields_show_the_api_reasons_next_to_them_and_queue_nothing(
    page: Page, dashboard: Dashboard, page_errors: PageErrors
) -> None:
    page_errors.allow(r"^console error: Failed to load resource: .*status of 422")
    requests: list[Request] = []
    page.on("request", lambda request: requests.append(request))
    _open_form(page, dashboard, "range-tests")
    _field(page, "workload").select_option("digits_mlp")
    _field(page, "params.width").fill("-3")
    _field(page, "num_iter").fill("1")  # the browser would refuse it (min 2): novalidate
    _field(page, "start_lr").fill("1")
    _field(page, "end_lr").fill("0.1")
    page.get_by_test_id("submit").click()

    # the reasons are the API's own, each next to its field
    body = {
        "workload": "digits_mlp",
        "params": {"width": -3},
        "num_iter": 1,
        "start_lr": 1,
        "end_lr": 0.1,
    }
    refused = httpx.post(
        f"{dashboard.url}/range-tests",
        json=body,
        headers={"Authorization": f"Bearer {dashboard.token}"},
        timeout=30,
    )
    assert refused.status_code == 422
    reasons = {e["field"]: e["reason"] for e in refused.json()["errors"]}
    assert set(reasons) == {"params.width", "num_iter", "end_lr"}
    summary = page.get_by_test_id("form-errors")
    expect(summary).to_be_visible()
    expect(summary).to_contain_text("Nothing was queued")
    expect(summary.locator("li")).to_have_count(3)
    for field, reason in reasons.items():
        expect(page.get_by_test_id(f"error-{field}")).to_have_text(reason)
        expect(_field(page, field)).to_have_attribute("aria-invalid", "true")
        expect(summary).to_contain_text(reason)
    assert "start_lr must be below end_lr" in reasons["end_lr"]
    # the first field in the page gets the focus; the others are untouched
    expect(_field(page, "params.width")).to_be_focused()
    expect(page.get_by_test_id("error-start_lr")).to_be_hidden()
    expect(_field(page, "start_lr")).not_to_have_attribute("aria-invalid", "true")
    dashboard.screenshot(page, "submit_error")

    [post] = _posts(requests, "range-tests")  # the API was asked, once
    assert post.post_data_json == body
    expect(page).to_have_url(re.compile(r"#/submit/range-tests$"))
    assert dashboard.client.list_page().items == []

    # fixing one clears its error at the next submit; the others stay
    _field(page, "num_iter").fill("30")
    page.get_by_test_id("submit").click()
    expect(summary.locator("li")).to_have_count(2)
    expect(page.get_by_test_id("error-num_iter")).to_be_hidden()
    expect(_field(page, "num_iter")).not_to_have_attribute("aria-invalid", "true")
    expect(page.get_by_test_id("error-params.width")).to_have_text(reasons["params.width"])
    assert dashboard.client.list_page().items == []


def test_an_error_inside_more_settings_opens_it(
    page: Page, dashboard: Dashboard, page_errors: PageErrors
) -> None:
    page_errors.allow(r"^console error: Failed to load resource: .*status of 422")
    _open_form(page, dashboard, "range-tests")
    # adam takes betas, not momentum: a rule between two optimizer fields
    _field(page, "optimizer.name").select_option("adam")
    _open_more(page, "more-optimizer")
    _field(page, "optimizer.momentum").fill("0.5")
    page.get_by_test_id("more-optimizer").locator("> summary").click()  # closed again
    page.get_by_test_id("submit").click()
    error = page.get_by_test_id("error-optimizer.momentum")
    expect(error).to_contain_text("adam takes no momentum")
    expect(error).to_be_visible()
    expect(_field(page, "optimizer.momentum")).to_be_focused()
    assert dashboard.client.list_page().items == []


def _leaf_paths(schema: dict[str, Any], root: dict[str, Any], prefix: str = "") -> list[str]:
    """The dotted paths of a body schema's inputs (objects with properties: their fields)."""

    def resolve(s: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in s:
            s = root["components"]["schemas"][s["$ref"].rsplit("/", 1)[1]]
        options = [o for o in s.get("anyOf", []) if o.get("type") != "null"]
        return resolve(options[0]) if len(options) == 1 else s

    paths = []
    for name, prop in resolve(schema).get("properties", {}).items():
        path = f"{prefix}{name}"
        target = resolve(prop)
        if "const" in target:
            continue
        if target.get("type") == "object" and target.get("properties"):
            paths.append(path)
            paths += _leaf_paths(target, root, f"{path}.")
        else:
            paths.append(path)
    return paths


@pytest.mark.parametrize("noun", ["range-tests", "trainings", "sweeps"])
def test_every_field_of_the_request_body_has_an_input(
    page: Page, dashboard: Dashboard, noun: str
) -> None:
    openapi = httpx.get(f"{dashboard.url}/openapi.json", timeout=30).json()
    body = openapi["paths"][f"/{noun}"]["post"]["requestBody"]["content"]["application/json"]
    variants = body["schema"].get("oneOf", [body["schema"]])
    [service] = [
        v
        for v in variants
        if "workload" in openapi["components"]["schemas"][v["$ref"].rsplit("/", 1)[1]]["properties"]
    ]
    expected = [
        p
        for p in _leaf_paths(service, openapi)
        if p.split(".")[0] not in SKIPPED[noun] and p != "params"
    ]
    assert len(expected) > 10
    _open_form(page, dashboard, noun)
    for path in expected:
        expect(_field(page, path)).to_have_count(1)
    for path in SKIPPED[noun]:
        expect(_field(page, path)).to_have_count(0)
    # every workload takes a batch size: the form asks for it there
    expect(_field(page, "params.batch_size")).to_have_count(1)

    # the params are the picked workload's, rendered again when it changes
    workloads = {w["name"]: w for w in httpx.get(f"{dashboard.url}/workloads").json()["items"]}
    for name in ("synthetic_mlp", "mnist1d_cnn"):
        _field(page, "workload").select_option(name)
        params = page.get_by_test_id("field-params")
        expect(params.locator("legend")).to_contain_text(name)
        wanted = list(workloads[name]["params"]["properties"])
        inputs = params.locator("[data-testid^='field-params.']")
        expect(inputs).to_have_count(len(wanted))
        for param in wanted:
            schema = workloads[name]["params"]["properties"][param]
            field = _field(page, f"params.{param}")
            expect(field).to_have_attribute("placeholder", str(schema["default"]))
            expect(field).to_have_attribute("max", str(schema["maximum"]))
            expect(params).to_contain_text(schema["description"])


def test_a_training_submitted_from_the_form(page: Page, dashboard: Dashboard) -> None:
    requests: list[Request] = []
    page.on("request", lambda request: requests.append(request))
    _open_form(page, dashboard, "trainings")
    _field(page, "workload").select_option("digits_mlp")
    _field(page, "params.width").fill("8")
    _field(page, "schedule.policy").select_option("triangular")
    _field(page, "schedule.base_lr").fill("0.01")
    _field(page, "schedule.max_lr").fill("0.3")
    _field(page, "schedule.step_size_up").fill("5")
    _field(page, "cycles").fill("1")
    _open_more(page)
    _field(page, "snapshots").fill("0")
    _field(page, "device").select_option("cpu")
    expect(page.get_by_test_id("body-preview")).to_contain_text('"step_size_up": 5')
    page.get_by_test_id("submit").click()

    job_id = _job_id(page, "trainings")
    [post] = _posts(requests, "trainings")
    assert post.post_data_json == {
        "workload": "digits_mlp",
        "params": {"width": 8},
        "device": "cpu",
        "schedule": {"policy": "triangular", "base_lr": 0.01, "max_lr": 0.3, "step_size_up": 5},
        "cycles": 1,
        "snapshots": 0,
    }
    job = dashboard.client.wait(job_id, timeout=WAIT_S)
    assert job.status == "succeeded"
    assert job.spec["schedule"]["step_size_up"] == 5


def test_a_sweep_submitted_from_the_form(page: Page, dashboard: Dashboard) -> None:
    requests: list[Request] = []
    page.on("request", lambda request: requests.append(request))
    _open_form(page, dashboard, "sweeps")
    _field(page, "workload").select_option("digits_mlp")
    _field(page, "params.width").fill("8")
    _field(page, "policies-fixed").check()
    _field(page, "policies-triangular2").check()
    _field(page, "seeds").fill("0, 1")
    _field(page, "cycles").fill("1")
    _open_more(page)
    _field(page, "verify").uncheck()
    _field(page, "range_test.num_iter").fill("30")
    # a list of objects is JSON: one that does not parse is caught before sending
    _field(page, "grid.optimizer").fill('[{"name": "sgd"')
    page.get_by_test_id("submit").click()
    expect(page.get_by_test_id("error-grid.optimizer")).to_contain_text("not valid JSON")
    expect(page.get_by_test_id("form-errors")).to_contain_text("Nothing was sent")
    assert _posts(requests, "sweeps") == []

    _field(page, "grid.optimizer").fill('[{"name": "sgd", "momentum": 0.9}]')
    page.get_by_test_id("submit").click()
    job_id = _job_id(page, "sweeps")
    _stop(dashboard, job_id)
    [post] = _posts(requests, "sweeps")
    assert post.post_data_json == {
        "workload": "digits_mlp",
        "params": {"width": 8},
        "seeds": [0, 1],
        "policies": ["fixed", "triangular2"],
        "cycles": 1,
        "range_test": {"num_iter": 30},
        "verify": False,
        "grid": {"optimizer": [{"name": "sgd", "momentum": 0.9}]},
    }
    spec = dashboard.client.get(job_id).spec
    assert spec["policies"] == ["fixed", "triangular2"]
    assert spec["seeds"] == [0, 1]


def test_a_conflict_is_shown_with_its_reason(
    page: Page, dashboard: Dashboard, page_errors: PageErrors
) -> None:
    # bounds from a range test that has not finished: a 409 naming bounds_from.range_test
    page_errors.allow(r"^console error: Failed to load resource: .*status of 409")
    running = dashboard.client.request(
        "POST",
        "/range-tests",
        json={"source": "client", "model": "m", "dataset": "d", "batch_size": 8},
    ).json()
    _open_form(page, dashboard, "trainings")
    _field(page, "workload").select_option("digits_mlp")
    _field(page, "bounds_from.range_test").fill(running["id"])
    page.get_by_test_id("submit").click()
    summary = page.get_by_test_id("form-errors")
    expect(summary).to_be_visible()
    expect(summary).to_contain_text("Nothing was queued")
    problem = httpx.post(
        f"{dashboard.url}/trainings",
        json={"workload": "digits_mlp", "bounds_from": {"range_test": running["id"]}},
        headers={"Authorization": f"Bearer {dashboard.token}"},
        timeout=30,
    ).json()
    expect(summary).to_contain_text(problem["title"])
    expect(summary).to_contain_text(problem["detail"])
    [error] = problem["errors"]
    expect(page.get_by_test_id(f"error-{error['field']}")).to_have_text(error["reason"])
    dashboard.client.request("POST", f"/jobs/{running['id']}/finish", json={"status": "cancelled"})
    # nothing but the range test was created
    assert [str(j.id) for j in dashboard.client.list_page().items] == [running["id"]]


def test_a_link_can_prefill_the_form(page: Page, dashboard: Dashboard) -> None:
    dashboard.sign_in(page)
    page.goto(
        f"{dashboard.url}/#/submit/trainings?workload=mnist1d_mlp&params.width=24"
        "&bounds_from.range_test=0a6c2f4e-8d2b-4c7e-9b1a-3f5d7e9c1b2a&schedule.policy=one_cycle"
    )
    expect(_field(page, "workload")).to_have_value("mnist1d_mlp")
    expect(_field(page, "params.width")).to_have_value("24")
    expect(_field(page, "bounds_from.range_test")).to_have_value(
        "0a6c2f4e-8d2b-4c7e-9b1a-3f5d7e9c1b2a"
    )
    expect(page.get_by_test_id("body-preview")).to_contain_text('"policy": "one_cycle"')

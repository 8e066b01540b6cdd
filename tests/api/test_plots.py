"""``/range-tests/{id}/plot.png`` and ``plot.svg`` on both databases."""

from __future__ import annotations

import uuid
import xml.etree.ElementTree as ET

import pytest
from fastapi import FastAPI
from sqlalchemy.orm import Session

from api.admission import Admission
from core.services import claim_job, fail_job, finish_job, report_progress
from tests.api.conftest import Caller, TestClient, make_caller
from tests.builders import curve, make_job, make_outcome, make_points

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SVG = "{http://www.w3.org/2000/svg}"


def running_with_points(session: Session, caller: Caller, points: int) -> uuid.UUID:
    job = make_job(session, team=caller.team)
    claimed = claim_job(session, job_id=job.id, worker="gpu0", device="cpu")
    assert claimed is not None
    if points:
        report_progress(
            session, job_id=job.id, attempt=claimed.attempt, **curve(make_points(0, points))
        )
    return job.id


def svg_ids(body: bytes) -> set[str]:
    root = ET.fromstring(body)
    assert root.tag == f"{SVG}svg"
    return {el.attrib["id"] for el in root.iter() if "id" in el.attrib}


class TestPlot:
    def test_plots_drawn_at_once_are_capped_and_the_excess_is_a_503(
        self, test_app: FastAPI, client: TestClient, caller: Caller, session: Session
    ) -> None:
        # Drawing holds a thread and the GIL: uncapped, one team asking for plots
        # filled the thread pool and every other request waited behind the drawings.
        job_id = running_with_points(session, caller, 30)
        renders = Admission(1, max_queue=0, wait_s=0)
        test_app.state.plot_renders = renders
        turn, portal = renders.slot(), client.portal
        assert portal is not None  # the client is started: its event loop runs the app
        portal.call(turn.__aenter__)  # the one drawing turn, taken
        try:
            refused = client.get(f"/range-tests/{job_id}/plot.svg", headers=caller.headers)
        finally:
            portal.call(turn.__aexit__, None, None, None)
        drawn = client.get(f"/range-tests/{job_id}/plot.svg", headers=caller.headers)

        assert refused.status_code == 503, refused.text
        assert refused.headers["Retry-After"]
        assert refused.headers["content-type"] == "application/problem+json"
        assert refused.json()["errors"][0]["field"] == "server"
        assert drawn.status_code == 200
        assert renders.in_use == 0  # the turn was given back once the plot was sent

    def test_running_job_png_is_the_partial_curve_not_cached(
        self, client: TestClient, caller: Caller, session: Session
    ) -> None:
        job_id = running_with_points(session, caller, 30)
        response = client.get(f"/range-tests/{job_id}/plot.png", headers=caller.headers)
        assert response.status_code == 200
        assert response.headers["content-type"] == "image/png"
        assert response.content.startswith(PNG_MAGIC)
        assert int(response.headers["content-length"]) == len(response.content)
        assert response.headers["cache-control"] == "no-cache"
        assert response.headers["etag"].startswith('W/"')

    def test_running_job_svg_has_no_bounds_and_says_how_far_it_got(
        self, client: TestClient, caller: Caller, session: Session
    ) -> None:
        job_id = running_with_points(session, caller, 30)
        response = client.get(f"/range-tests/{job_id}/plot.svg", headers=caller.headers)
        assert response.status_code == 200
        assert response.headers["content-type"] == "image/svg+xml"
        ids = svg_ids(response.content)
        assert {"raw-loss", "loss", "accuracy"} <= ids
        assert "suggested-range" not in ids
        assert b"running: 30 of 100 steps" in response.content

    def test_succeeded_job_draws_the_bounds_and_may_be_cached(
        self, client: TestClient, caller: Caller, session: Session
    ) -> None:
        job_id = running_with_points(session, caller, 80)
        finish_job(session, job_id=job_id, attempt=1, result=make_outcome())
        response = client.get(f"/range-tests/{job_id}/plot.svg", headers=caller.headers)
        assert response.status_code == 200
        ids = svg_ids(response.content)
        assert {"loss", "suggested-range", "marker-max_fraction"} <= ids
        assert b"stopped: diverged" in response.content  # the run's summary, as the CLI's
        assert response.headers["cache-control"] == "private, max-age=86400"

    def test_failed_job_plots_its_partial_curve(
        self, client: TestClient, caller: Caller, session: Session
    ) -> None:
        job_id = running_with_points(session, caller, 12)
        fail_job(session, job_id=job_id, attempt=1, reason="CUDA out of memory")
        response = client.get(f"/range-tests/{job_id}/plot.svg", headers=caller.headers)
        assert response.status_code == 200
        assert b"failed: 12 of 100 steps" in response.content
        assert response.headers["cache-control"] == "private, max-age=86400"

    def test_etag_gives_304_until_the_curve_grows(
        self, client: TestClient, caller: Caller, session: Session
    ) -> None:
        job_id = running_with_points(session, caller, 10)
        url = f"/range-tests/{job_id}/plot.png"
        etag = client.get(url, headers=caller.headers).headers["etag"]
        again = client.get(url, headers={**caller.headers, "If-None-Match": etag})
        assert again.status_code == 304
        assert again.content == b""
        assert again.headers["etag"] == etag
        report_progress(session, job_id=job_id, attempt=1, **curve(make_points(10, 5)))
        grown = client.get(url, headers={**caller.headers, "If-None-Match": etag})
        assert grown.status_code == 200
        assert grown.headers["etag"] != etag
        assert grown.content.startswith(PNG_MAGIC)

    @pytest.mark.parametrize("suffix", ["png", "svg"])
    def test_no_points_yet_is_409_naming_the_status(
        self, client: TestClient, caller: Caller, session: Session, suffix: str
    ) -> None:
        queued = make_job(session, team=caller.team)
        running = running_with_points(session, caller, 0)
        for job_id, status in ((queued.id, "queued"), (running, "running")):
            response = client.get(f"/range-tests/{job_id}/plot.{suffix}", headers=caller.headers)
            assert response.status_code == 409
            assert response.headers["content-type"] == "application/problem+json"
            assert f"is {status} and has no curve points yet" in response.json()["detail"]

    def test_finished_without_points_is_409(
        self, client: TestClient, caller: Caller, session: Session
    ) -> None:
        job_id = running_with_points(session, caller, 0)
        fail_job(session, job_id=job_id, attempt=1, reason="unknown workload")
        response = client.get(f"/range-tests/{job_id}/plot.png", headers=caller.headers)
        assert response.status_code == 409
        assert "is failed and stored no curve points" in response.json()["detail"]

    def test_another_teams_job_is_404(
        self, client: TestClient, caller: Caller, session: Session
    ) -> None:
        other = make_caller(session)
        job_id = running_with_points(session, other, 10)
        for suffix in ("png", "svg"):
            response = client.get(f"/range-tests/{job_id}/plot.{suffix}", headers=caller.headers)
            assert response.status_code == 404
            assert response.headers["content-type"] == "application/problem+json"
        assert client.get(f"/range-tests/{job_id}/plot.png").status_code == 401

    def test_openapi_declares_the_image_types(self, client: TestClient) -> None:
        paths = client.get("/openapi.json").json()["paths"]
        for suffix, media in (("png", "image/png"), ("svg", "image/svg+xml")):
            responses = paths[f"/range-tests/{{job_id}}/plot.{suffix}"]["get"]["responses"]
            assert list(responses["200"]["content"]) == [media]
            assert "application/problem+json" in responses["409"]["content"]

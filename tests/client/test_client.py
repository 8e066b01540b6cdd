"""The sync :class:`clr_sweep.Client` against the real service (PostgreSQL and embedded)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cli.service import free_port
from clr_sweep import (
    Client,
    Conflict,
    ConnectError,
    Event,
    Invalid,
    NotFound,
    Unauthorized,
)
from tests.client.conftest import TINY_RANGE_TEST, TINY_TRAINING, WAIT_S, Server

pytestmark = pytest.mark.worker

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _field(job: Any, name: str) -> Any:
    value = job[name] if isinstance(job, dict) else getattr(job, name)
    return getattr(value, "value", value)


class TestRangeTest:
    def test_submit_wait_with_progress_then_bounds_curve_series_and_plots(
        self, client: Client
    ) -> None:
        submitted = client.submit_range_test(TINY_RANGE_TEST)
        assert _field(submitted, "status") == "queued"
        seen: list[Any] = []
        events: list[Event] = []
        job = client.wait(_field(submitted, "id"), progress=seen.append, on_event=events.append)
        assert _field(job, "status") == "succeeded", _field(job, "error")
        assert seen, "the progress callback was never called"
        assert _field(seen[-1], "status") == "succeeded"
        progress = [_field(j, "progress") for j in seen]
        assert progress == sorted(progress)
        assert events[-1].event == "end"
        assert any(e.event == "curve" for e in events)

        steps = _field(job, "progress")
        bounds = client.bounds(submitted)
        assert str(_field(bounds, "job_id")) == str(_field(job, "id"))
        assert 0 < _field(bounds, "base_lr") < _field(bounds, "max_lr")

        curve = client.curve(_field(job, "id"))
        assert len(curve) == steps == 30
        assert curve.lrs.dtype == np.float64
        assert bool(np.all(np.diff(curve.lrs) > 0))
        assert curve.losses.shape == curve.smoothed_losses.shape == (steps,)
        series = client.series(_field(job, "id"), "curve")
        assert np.array_equal(series["lr"], curve.lrs)
        assert np.array_equal(series["smoothed_loss"], curve.smoothed_losses)

        png = client.plot(_field(job, "id"))
        assert png.startswith(PNG_MAGIC)
        svg = client.plot(_field(job, "id"), "svg", kind="range_test")
        assert b"<svg" in svg[:500]

    def test_events_resume_after_the_last_event_id(self, client: Client) -> None:
        job = client.wait(_field(client.submit_range_test(TINY_RANGE_TEST), "id"))
        events = list(client.events(_field(job, "id")))
        assert [e.event for e in events][0] == "status"
        assert events[-1].event == "end"
        curve = [e for e in events if e.event == "curve"]
        assert sum(len(e.data["values"]["lr"]) for e in curve) == 30
        # resumed after 10 points: only the 20 after them come again
        resumed = list(client.events(_field(job, "id"), last_event_id=f"1:{10}"))
        points = [e.data for e in resumed if e.event == "curve"]
        assert points[0]["start"] == 10
        assert sum(len(p["values"]["lr"]) for p in points) == 20
        assert resumed[-1].last_event_id == "1:30"

    def test_find_bounds_by_configuration(self, client: Client) -> None:
        # a configuration no other test runs, so the latest of it is this test's
        spec = {**TINY_RANGE_TEST, "params": {"width": 24}}
        job = client.wait(_field(client.submit_range_test(spec), "id"))
        found = client.find_bounds(workload="digits_mlp", params={"width": 24})
        assert str(_field(found, "job_id")) == str(_field(job, "id"))
        by_name = client.find_bounds(workload="digits_mlp", **{"params.width": 24})
        assert _field(by_name, "max_lr") == _field(found, "max_lr")


class TestErrors:
    def test_an_unknown_job_is_not_found(self, client: Client) -> None:
        missing = uuid.uuid4()
        with pytest.raises(NotFound) as caught:
            client.get(missing)
        assert caught.value.status == 404
        assert caught.value.type.startswith("urn:clr-sweep:problem:")
        assert caught.value.detail

    def test_an_invalid_spec_names_the_field(self, client: Client) -> None:
        with pytest.raises(Invalid) as caught:
            client.submit_range_test({**TINY_RANGE_TEST, "num_iter": -5})
        assert caught.value.status == 422
        assert "num_iter" in caught.value.fields
        assert "num_iter" in str(caught.value)

    def test_cancelling_a_finished_job_is_a_conflict(self, client: Client) -> None:
        job = client.wait(_field(client.submit_range_test(TINY_RANGE_TEST), "id"))
        with pytest.raises(Conflict) as caught:
            client.cancel(job)
        assert caught.value.status == 409
        assert "succeeded" in caught.value.detail

    def test_a_wrong_token_is_unauthorized(self, server: Server) -> None:
        with (
            server.client(token="clr_not-a-real-token") as client,
            pytest.raises(Unauthorized) as caught,
        ):
            client.get(uuid.uuid4())
        assert caught.value.status == 401

    def test_a_closed_port_names_the_url_and_how_to_start_a_service(self) -> None:
        url = f"http://127.0.0.1:{free_port()}"
        with Client(url, "token", retries=1, backoff=0.01) as client:
            with pytest.raises(ConnectError) as caught:
                client.health()
        assert caught.value.url == url
        message = str(caught.value)
        assert url in message
        assert "clr-sweep serve" in message
        assert "--embedded" in message


class TestCancel:
    def test_cancel_a_running_job(self, client: Client) -> None:
        long = {**TINY_RANGE_TEST, "num_iter": 20_000}
        job = client.submit_range_test(long)
        cancelled = client.cancel(job)
        assert _field(cancelled, "cancel_requested") or _field(cancelled, "status") == "cancelled"
        final = client.wait(job, timeout=WAIT_S)
        assert _field(final, "status") == "cancelled"


class TestTraining:
    def test_training_series_plot_and_model(self, client: Client, tmp_path: Path) -> None:
        job = client.wait(client.submit_training(TINY_TRAINING), timeout=WAIT_S)
        assert _field(job, "status") == "succeeded", _field(job, "error")
        iterations = client.series(job, "iterations")
        assert {"lr", "loss"} <= set(iterations)
        assert iterations["lr"].shape == (_field(job, "total"),)
        assert client.plot(job, "png").startswith(PNG_MAGIC)
        path = client.download_model(job, tmp_path)
        assert path.parent == tmp_path
        assert path.stat().st_size > 0
        import torch

        state = torch.load(path, map_location="cpu", weights_only=True)
        assert isinstance(state, dict)
        assert state
        again = client.download_model(job, tmp_path / "copy.pt")
        assert again.read_bytes() == path.read_bytes()


class TestService:
    def test_workloads_and_health(self, client: Client) -> None:
        workloads = client.workloads()
        items = workloads["items"] if isinstance(workloads, dict) else workloads.items
        names = [_field(w, "name") for w in items]
        assert "digits_mlp" in names
        assert _field(client.health(), "status") == "ok"


class TestList:
    def test_list_follows_pages_newest_first(self, server: Server) -> None:
        started = datetime.now(UTC)
        with server.client() as client:
            ids = []
            for _ in range(3):
                job = client.submit_range_test({**TINY_RANGE_TEST, "num_iter": 20_000})
                ids.append(str(_field(job, "id")))
                client.cancel(job)
            for job_id in ids:
                client.wait(job_id, timeout=WAIT_S)
            listed = [
                str(_field(j, "id"))
                for j in client.list(kind="range_test", created_after=started, page_size=2)
            ]
            assert listed == ids[::-1]
            first = list(client.list(created_after=started, page_size=1, limit=2))
            assert [str(_field(j, "id")) for j in first] == ids[::-1][:2]
            page = client.list_page(created_after=started, page_size=2)
            assert page["next_cursor"] if isinstance(page, dict) else page.next_cursor
            cancelled = list(client.list(status=["cancelled"], created_after=started))
            assert len(cancelled) == 3
            assert list(client.list(kind="training", created_after=started)) == []

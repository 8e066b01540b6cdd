"""The sync :class:`clr_sweep.Client` against the real service (PostgreSQL and embedded)."""

from __future__ import annotations

import stat
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
    login,
)
from clr_sweep.contracts import (
    BoundsRead,
    JobList,
    JobStatus,
    RangeTestRead,
    RangeTestSpec,
    SeriesRead,
)
from tests.client.conftest import TINY_RANGE_TEST, TINY_TRAINING, WAIT_S, Server

pytestmark = pytest.mark.worker

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class TestRangeTest:
    def test_submit_wait_with_progress_then_bounds_curve_series_and_plots(
        self, client: Client
    ) -> None:
        submitted = client.submit_range_test(TINY_RANGE_TEST)
        assert submitted.status == "queued"
        seen: list[Any] = []
        events: list[Event] = []
        job = client.wait(
            submitted.id, progress=seen.append, on_event=events.append, timeout=WAIT_S
        )
        assert job.status == "succeeded", job.error
        assert seen, "the progress callback was never called"
        assert seen[-1].status == "succeeded"
        progress = [j.progress for j in seen]
        assert progress == sorted(progress)
        assert events[-1].event == "end"
        assert any(e.event == "curve" for e in events)

        steps = job.progress
        bounds = client.bounds(submitted)
        assert str(bounds.job_id) == str(job.id)
        assert 0 < bounds.base_lr < bounds.max_lr

        curve = client.curve(job.id)
        assert len(curve) == steps == 30
        assert curve.lrs.dtype == np.float64
        assert bool(np.all(np.diff(curve.lrs) > 0))
        assert curve.losses.shape == curve.smoothed_losses.shape == (steps,)
        series = client.series(job.id, "curve")
        assert np.array_equal(series["lr"], curve.lrs)
        assert np.array_equal(series["smoothed_loss"], curve.smoothed_losses)

        png = client.plot(job.id)
        assert png.startswith(PNG_MAGIC)
        svg = client.plot(job.id, "svg", kind="range_test")
        assert b"<svg" in svg[:500]

    def test_a_spec_model_is_sent_without_its_unset_fields_and_answers_are_typed(
        self, client: Client
    ) -> None:
        spec = RangeTestSpec(
            workload="digits_mlp", params={"width": 16}, num_iter=30, start_lr=1e-3, end_lr=1.0
        )
        submitted = client.submit_range_test(spec)
        assert isinstance(submitted, RangeTestRead)
        assert submitted.status is JobStatus.QUEUED
        # unset fields took the server's defaults
        assert submitted.spec["smoothing"] == RangeTestSpec.model_fields["smoothing"].default
        job = client.wait(submitted.id, timeout=WAIT_S)
        assert isinstance(job, RangeTestRead)
        assert job.result is not None
        assert job.result.summary.steps_run == 30
        again = client.get(job.id)
        assert isinstance(again, RangeTestRead)
        assert again.finished_at == job.finished_at
        listed = client.list_page(page_size=1)
        assert isinstance(listed, JobList)
        bounds = client.bounds(job.id)
        assert isinstance(bounds, BoundsRead)
        assert bounds.suggestions[0].method == bounds.method
        series_events = [e for e in client.events(job.id) if e.event == "curve"]
        assert isinstance(series_events[0].series, SeriesRead)
        assert series_events[0].series.values["lr"] is not None

    def test_events_resume_after_the_last_event_id(self, client: Client) -> None:
        job = client.wait(client.submit_range_test(TINY_RANGE_TEST).id, timeout=WAIT_S)
        events = list(client.events(job.id))
        assert [e.event for e in events][0] == "status"
        assert events[-1].event == "end"
        curve = [e for e in events if e.event == "curve"]
        assert sum(len(e.data["values"]["lr"]) for e in curve) == 30
        # resumed after 10 points: only the 20 after them come again
        resumed = list(client.events(job.id, last_event_id=f"1:{10}"))
        points = [e.data for e in resumed if e.event == "curve"]
        assert points[0]["start"] == 10
        assert sum(len(p["values"]["lr"]) for p in points) == 20
        assert resumed[-1].last_event_id == "1:30"

    def test_find_bounds_by_configuration(self, client: Client) -> None:
        # a configuration no other test runs, so the latest of it is this test's
        spec = {**TINY_RANGE_TEST, "params": {"width": 24}}
        job = client.wait(client.submit_range_test(spec).id, timeout=WAIT_S)
        found = client.find_bounds(workload="digits_mlp", params={"width": 24})
        assert str(found.job_id) == str(job.id)
        by_name = client.find_bounds(workload="digits_mlp", **{"params.width": 24})
        assert by_name.max_lr == found.max_lr


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
        job = client.wait(client.submit_range_test(TINY_RANGE_TEST).id, timeout=WAIT_S)
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

    def test_no_token_is_unauthorized_and_says_how_to_give_one(self, server: Server) -> None:
        with Client(server.url, retries=0) as client, pytest.raises(Unauthorized) as caught:
            client.list_page()
        assert caught.value.status == 401
        assert "CLR_TOKEN" in str(caught.value)

    def test_the_config_file_authenticates(
        self, server: Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        for name in ("CLR_URL", "CLR_TOKEN"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("CLR_CONFIG", str(tmp_path / "clr" / "config.toml"))
        path = login(server.url, server.new_token())
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        with Client() as client:
            assert client.url == server.url
            assert client.list_page(page_size=1).items is not None
        login(server.url, "clr_wrong")
        with Client() as client, pytest.raises(Unauthorized):
            client.list_page()

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
        assert cancelled.cancel_requested or cancelled.status == "cancelled"
        final = client.wait(job, timeout=WAIT_S)
        assert final.status == "cancelled"


class TestQueued:
    def test_wait_tells_a_queued_job_s_place_and_reason(self, postgres_server: Server) -> None:
        with postgres_server.client() as client:
            # the one worker is busy with a long test: the tiny one queues behind it
            long = client.submit_range_test({**TINY_RANGE_TEST, "num_iter": 20_000})
            tiny = client.submit_range_test(TINY_RANGE_TEST)
            queued: list[Any] = []

            def progress(job: Any) -> None:
                if job.status == "queued" and not queued:
                    queued.append(job)
                    client.cancel(long)  # let it run

            final = client.wait(tiny, progress=progress, timeout=WAIT_S)
            assert final.status == "succeeded"
            assert queued, "the tiny job was never seen queued"
            assert queued[0].queue_position >= 1
            assert "jobs.cpu" in queued[0].waiting_reason
            assert client.wait(long, timeout=WAIT_S).status == "cancelled"


class TestTraining:
    def test_training_series_plot_and_model(self, client: Client, tmp_path: Path) -> None:
        job = client.wait(client.submit_training(TINY_TRAINING), timeout=WAIT_S)
        assert job.status == "succeeded", job.error
        iterations = client.series(job, "iterations")
        assert {"lr", "loss"} <= set(iterations)
        assert iterations["lr"].shape == (job.total,)
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
        names = [w.name for w in workloads.items]
        assert "digits_mlp" in names
        assert client.health().status == "ok"
        assert client.ready().status == "ready"
        raw = client.request("GET", "/jobs", params={"limit": 1})
        assert raw.status_code == 200
        assert "items" in raw.json()


class TestList:
    def test_list_follows_pages_newest_first(self, server: Server) -> None:
        started = datetime.now(UTC)
        with server.client() as client:
            ids = []
            for _ in range(3):
                job = client.submit_range_test({**TINY_RANGE_TEST, "num_iter": 20_000})
                ids.append(str(job.id))
                client.cancel(job)
            for job_id in ids:
                client.wait(job_id, timeout=WAIT_S)
            listed = [
                str(j.id)
                for j in client.list(kind="range_test", created_after=started, page_size=2)
            ]
            assert listed == ids[::-1]
            first = list(client.list(created_after=started, page_size=1, limit=2))
            assert [str(j.id) for j in first] == ids[::-1][:2]
            page = client.list_page(created_after=started, page_size=2)
            assert page.next_cursor is not None
            assert len(page.items) == 2
            cancelled = list(client.list(status=["cancelled"], created_after=started))
            assert len(cancelled) == 3
            assert list(client.list(kind="training", created_after=started)) == []


class TestSweep:
    def test_sweep_children_and_plot(self, postgres_server: Server) -> None:
        spec = {
            "workload": "digits_mlp",
            "params": {"width": 8},
            "policies": ["fixed", "triangular2"],
            "seeds": [0],
            "step_size": 5,
            "cycles": 1,
            "verify": False,
            "range_test": {"num_iter": 30, "start_lr": 1e-3, "end_lr": 1.0},
        }
        with postgres_server.client() as client:
            sweep = client.submit_sweep(spec)
            assert sweep.kind == "sweep"
            final = client.wait(sweep, timeout=WAIT_S)
            assert final.status == "succeeded", final.error
            children = list(client.list(parent=sweep, page_size=1))
            kinds = sorted(c.kind for c in children)
            assert kinds == ["range_test", "training", "training"]
            assert client.plot(final).startswith(PNG_MAGIC)

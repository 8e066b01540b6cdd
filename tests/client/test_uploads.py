"""Bring your own curve, end to end: a real ``clr.RangeTest`` and a plain training loop
on a tiny model defined here (no registered workload) stream their points through
:mod:`clr_sweep.uploads` to a real service, which suggests, plots and finds them."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import clr
from clr_sweep import Client, Conflict
from clr_sweep.uploads import (
    JobFinished,
    RangeTestUploader,
    TrainingLogger,
    optimizer_spec,
    range_test_uploader,
    resume,
    training_logger,
)

BATCH = 32


def at(value: Any, *path: str) -> Any:
    """A field of an answer, whether the client gives models or dicts."""
    for name in path:
        value = value[name] if isinstance(value, dict) else getattr(value, name)
    return value


def tiny_problem(seed: int = 0) -> tuple[nn.Module, DataLoader[Any]]:
    """A two-layer MLP and a loader of generated, linearly separable data."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(512, 8, generator=generator)
    y = (x @ torch.randn(8, generator=generator) > 0).long()
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
    loader = DataLoader(TensorDataset(x, y), batch_size=BATCH, shuffle=True, generator=generator)
    return model, loader


def test_a_range_test_run_in_the_teams_loop_gets_the_services_bounds(client: Client) -> None:
    model, loader = tiny_problem()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    run = uuid.uuid4().hex[:8]  # the embedded service's team is shared between tests
    settings = {"start_lr": 1e-4, "end_lr": 10.0, "num_iter": 120}
    with range_test_uploader(
        client,
        model="tiny-mlp",
        dataset="generated",
        batch_size=BATCH,
        optimizer=optimizer,
        tags={"run": run, "width": 16},
        iters_per_epoch=len(loader),
        flush_interval=0.05,
        max_points=25,  # several uploads even for a short test
        **settings,
    ) as upload:
        result = clr.RangeTest(model, optimizer, nn.CrossEntropyLoss()).run(
            loader, callback=upload, should_stop=upload.should_stop, **settings
        )
        upload.finish(result)
    job = client.get(upload.job_id)
    assert at(job, "status") == "succeeded", at(job, "error")
    assert at(job, "spec")["source"] == "client"
    assert at(job, "result", "summary", "steps_run") == result.steps_run
    assert at(job, "result", "summary", "stop_reason") == result.stop_reason
    curve = client.curve(upload.job_id)
    assert curve.lrs.tolist() == pytest.approx(result.lrs.tolist(), rel=1e-12)
    assert curve.losses.tolist() == pytest.approx(result.losses.tolist(), rel=1e-12)
    bounds = client.bounds(upload.job_id)
    expected = clr.suggest_all(result, iters_per_epoch=len(loader))
    assert at(bounds, "default_method") == expected.default.method
    assert at(bounds, "max_lr") == pytest.approx(expected.default.max_lr)
    found = client.find_bounds(
        model="tiny-mlp",
        dataset="generated",
        batch_size=BATCH,
        optimizer=optimizer_spec(optimizer),
        tags={"run": run, "width": 16},
    )
    assert str(at(found, "job_id")) == str(upload.job_id)
    assert client.plot(upload.job_id).startswith(b"\x89PNG")


def test_a_training_logged_from_a_plain_loop_shows_as_a_training(client: Client) -> None:
    model, loader = tiny_problem(1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    scheduler = clr.CyclicLR(
        optimizer, base_lr=0.01, max_lr=0.2, step_size_up=8, mode="triangular2"
    )
    loss_fn = nn.CrossEntropyLoss()
    epochs = 2
    iterations = epochs * len(loader)
    schedule = {"policy": "triangular2", "base_lr": 0.01, "max_lr": 0.2, "step_size_up": 8}
    with training_logger(
        client,
        model="tiny-mlp",
        dataset="generated",
        batch_size=BATCH,
        optimizer=optimizer,
        iterations=iterations,
        schedule=schedule,
        flush_interval=0.05,
    ) as log:
        step = 0
        for epoch in range(1, epochs + 1):
            total = 0.0
            for x, y in loader:
                lr = optimizer.param_groups[0]["lr"]
                loss = loss_fn(model(x), y)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                scheduler.step()
                log.log(
                    step, lr=lr, momentum=optimizer.param_groups[0]["momentum"], loss=loss.item()
                )
                total += loss.item()
                step += 1
            with torch.no_grad():
                x_all, y_all = loader.dataset.tensors  # type: ignore[attr-defined]
                accuracy = (model(x_all).argmax(1) == y_all).float().mean().item()
            log.log_epoch(
                epoch, iteration=step, train_loss=total / len(loader), val_accuracy=accuracy
            )
    job = client.get(log.job_id)
    assert at(job, "kind") == "training"
    assert at(job, "status") == "succeeded", at(job, "error")
    outcome = at(job, "result")
    assert (at(outcome, "iterations"), at(outcome, "epochs")) == (iterations, epochs)
    assert at(outcome, "cycles") == iterations // 16
    assert at(outcome, "final_val_accuracy") == pytest.approx(accuracy)
    lrs = client.series(log.job_id, "iterations")["lr"]
    assert len(lrs) == iterations
    assert lrs[8] == pytest.approx(0.2)  # the top of the first cycle
    assert client.plot(log.job_id).startswith(b"\x89PNG")


def test_a_cancel_on_the_service_stops_the_loop(client: Client) -> None:
    with range_test_uploader(
        client,
        model="tiny-mlp",
        dataset="generated",
        batch_size=BATCH,
        num_iter=1000,
        flush_interval=0.05,
    ) as upload:
        for i in range(10):
            upload.add(1e-4 * 1.01**i, 2.0)
        upload.flush()
        client.cancel(upload.job_id)
        steps = 10
        while not upload.should_stop():
            upload.add(1e-4 * 1.01**steps, 2.0)
            upload.flush()
            steps += 1
            assert steps < 1000, "the uploader never saw the cancel"
    assert upload.job.status == "cancelled"
    assert at(client.get(upload.job_id), "status") == "cancelled"
    assert len(client.curve(upload.job_id)) == 10


def test_a_loop_that_raises_fails_its_job_with_the_error_and_keeps_its_points(
    client: Client,
) -> None:
    with pytest.raises(RuntimeError, match="out of memory"):  # noqa: PT012
        with range_test_uploader(
            client, model="tiny-mlp", dataset="generated", batch_size=BATCH, num_iter=100
        ) as upload:
            for i in range(7):
                upload.add(1e-4 * 1.1**i, 2.0 - i / 10)
            raise RuntimeError("CUDA out of memory")
    job = client.get(upload.job_id)
    assert at(job, "status") == "failed"
    assert at(job, "error") == "RuntimeError: CUDA out of memory"
    assert len(client.curve(upload.job_id)) == 7
    with pytest.raises(Conflict, match="failed"):
        client.request(
            "POST",
            f"/jobs/{upload.job_id}/series/curve",
            json={"start": 7, "values": {"lr": [1.0], "loss": [1.0], "smoothed_loss": [1.0]}},
        )


def test_a_clr_trainer_run_is_logged_through_its_callback(client: Client) -> None:
    model, loader = tiny_problem(2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    cycle = {"base_lr": 0.01, "max_lr": 0.2, "step_size_up": 8}
    scheduler = clr.create_scheduler(optimizer, "triangular", **cycle)
    trainer = clr.Trainer(model, optimizer, nn.CrossEntropyLoss(), scheduler=scheduler)
    iterations = 2 * len(loader)
    with training_logger(
        client,
        model="tiny-mlp",
        dataset="generated",
        batch_size=BATCH,
        optimizer=optimizer,
        iterations=iterations,
        schedule={"policy": "triangular", **cycle},
    ) as log:
        result = trainer.run(loader, val_loader=loader, iterations=iterations, callback=log)
        log.finish(result)
    assert log.job.status == "succeeded"
    outcome = log.job.result
    assert (outcome.iterations, outcome.epochs) == (iterations, len(result.epochs))
    assert outcome.stop_reason == result.stop_reason
    assert outcome.device == result.device
    assert outcome.final_val_accuracy == pytest.approx(result.epochs[-1].val_accuracy)
    series = client.series(log.job_id, "iterations")
    assert series["lr"].tolist() == pytest.approx(list(result.lrs))
    assert series["momentum"].tolist() == pytest.approx(list(result.momenta))


def smoothed(losses: list[float], beta: float = 0.95) -> list[float]:
    """clr.RangeTest's bias-corrected moving average of ``losses``."""
    out, avg = [], 0.0
    for i, loss in enumerate(losses):
        avg = beta * avg + (1 - beta) * loss
        out.append(avg / (1 - beta ** (i + 1)))
    return out


def test_a_killed_range_test_resumes_from_python_and_skips_what_the_service_has(
    client: Client,
) -> None:
    n = 60
    lrs = [1e-4 * 1.15**i for i in range(n)]
    losses = [2.0 - i / 50 + 0.01 * (i % 3) for i in range(n)]
    first = range_test_uploader(
        client,
        model="tiny-mlp",
        dataset="generated",
        batch_size=BATCH,
        tags={"run": uuid.uuid4().hex[:8]},
        start_lr=1e-4,
        end_lr=1e-4 * 1.15 ** (n - 1),
        num_iter=n,
        flush_interval=0.05,
        max_points=10,
    )
    for i in range(25):
        first.add(lrs[i], losses[i])  # the service computes the smoothed loss
    first.flush()
    first.close()  # the process dies: no finish
    with client.resume_upload(first.job_id, flush_interval=0.05, max_points=10) as upload:
        assert isinstance(upload, RangeTestUploader)
        assert upload.points == {"curve": 25}
        for i in range(n):  # the loop starts over; what the service has is not sent again
            loss = losses[i] + (1.0 if i < 25 else 0.0)  # a changed value would be a 409
            upload.add(lrs[i], loss, step=i)
    job = client.get(first.job_id)
    assert at(job, "status") == "succeeded", at(job, "error")
    curve = client.series(first.job_id, "curve")
    assert curve["loss"].tolist() == pytest.approx(losses)
    assert curve["smoothed_loss"].tolist() == pytest.approx(smoothed(losses), rel=1e-9)
    with pytest.raises(JobFinished, match="succeeded"):
        resume(client, first.job_id)


def test_a_killed_training_resumes_from_the_stored_count(client: Client) -> None:
    first = training_logger(
        client,
        model="tiny-mlp",
        dataset="generated",
        batch_size=BATCH,
        iterations=20,
        tags={"run": uuid.uuid4().hex[:8]},
        flush_interval=0.05,
    )
    for i in range(10):
        first.log(i, lr=0.01, loss=2.0 - i / 10)
    first.log_epoch(1, iteration=10, train_loss=1.5, val_accuracy=0.5)
    first.flush()
    first.close()
    log = resume(client, str(first.job_id))
    assert isinstance(log, TrainingLogger)
    with log:
        start = log.points["iterations"]
        assert start == 10
        log.log_epoch(1, iteration=10, train_loss=1.5, val_accuracy=0.5)  # re-logged: skipped
        for i in range(start, 20):
            log.log(i, lr=0.01, loss=2.0 - i / 10)
        log.log_epoch(2, iteration=20, train_loss=1.0, val_accuracy=0.6)
    job = client.get(first.job_id)
    assert at(job, "status") == "succeeded", at(job, "error")
    assert (at(job, "result", "iterations"), at(job, "result", "epochs")) == (20, 2)
    assert client.series(first.job_id, "epochs")["epoch"].tolist() == [1.0, 2.0]


def test_a_failed_job_cannot_be_resumed(client: Client) -> None:
    upload = range_test_uploader(
        client, model="tiny-mlp", dataset="generated", batch_size=BATCH, num_iter=10
    )
    upload.finish(status="failed", error="out of memory")
    with pytest.raises(JobFinished, match="failed: out of memory"):
        client.resume_upload(upload.job_id)

"""Test-only workloads that crash or hang, and the Celery app of a worker that has them.

``python -m celery -A tests.worker.crashing_workloads worker`` runs the real worker
(the app of :mod:`worker.celery_app`, the tasks of :mod:`worker.tasks`) with these
workloads in its registry, registered the way a plug-in registers its own (when
Celery asks this module for its app). A test process that submits jobs naming them
registers them with :func:`registered` for as long as it needs them: registered on
import, they would show in every other test's registry (the OpenAPI enums, say).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from celery import Celery
from torch import nn

from clr.workloads import ParamSpec, TensorBatches, Workload, WorkloadInstance, register_workload
from clr.workloads._registry import _REGISTRY

OOM_MESSAGE = "CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 1.00 GiB total capacity)"
"""What the crashing workloads raise: the start of a real CUDA out-of-memory message."""

CRASH_STEP = 5
"""The training step (1-based forward call) at which the mid-run workloads act."""

HANG_S = 600.0
"""How long the hanging workload's step sleeps: until the test kills its process."""


class _Linear(nn.Module):
    """A linear classifier that raises (or hangs) on forward call ``CRASH_STEP``."""

    def __init__(self, *, hang: bool) -> None:
        super().__init__()
        self.linear = nn.Linear(8, 2)
        self.hang = hang
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls == CRASH_STEP:
            if self.hang:
                time.sleep(HANG_S)
            else:
                raise torch.OutOfMemoryError(OOM_MESSAGE)
        out: torch.Tensor = self.linear(x)
        return out


def _instance(model: nn.Module, seed: int, device: torch.device) -> WorkloadInstance:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(256, 8, generator=gen)
    y = (x[:, 0] > 0).long()
    train = TensorBatches(x.to(device), y.to(device), 16, shuffle=True, seed=seed)
    val = TensorBatches(x.to(device), y.to(device), 256, shuffle=False, seed=seed)
    return WorkloadInstance(
        model=model,
        train_loader=train,
        val_loader=val,
        loss_fn=nn.functional.cross_entropy,
        metric_fn=lambda out, target: (out.argmax(1) == target).float().mean(),
        metric_name="accuracy",
        iters_per_epoch=len(train),
        num_train=256,
        num_val=256,
    )


def _build_oom(_params: dict[str, Any], _seed: int, _device: torch.device) -> WorkloadInstance:
    raise RuntimeError(OOM_MESSAGE)


def _build_crash_at_step(
    _params: dict[str, Any], seed: int, device: torch.device
) -> WorkloadInstance:
    return _instance(_Linear(hang=False), seed, device)


def _build_hang_at_step(
    _params: dict[str, Any], seed: int, device: torch.device
) -> WorkloadInstance:
    return _instance(_Linear(hang=True), seed, device)


_BATCH = ParamSpec("batch_size", int, 16, "training samples per step", 1, 256)

OOM_IN_BUILD = Workload(
    name="test_oom_in_build",
    description="Tests only: the builder raises a CUDA out-of-memory RuntimeError.",
    params=(_BATCH,),
    builder=_build_oom,
)
OOM_AT_STEP = Workload(
    name="test_oom_at_step",
    description=f"Tests only: step {CRASH_STEP} raises torch.OutOfMemoryError.",
    params=(_BATCH,),
    builder=_build_crash_at_step,
)
HANG_AT_STEP = Workload(
    name="test_hang_at_step",
    description=f"Tests only: step {CRASH_STEP} sleeps until the process is killed.",
    params=(_BATCH,),
    builder=_build_hang_at_step,
)


WORKLOADS = (OOM_IN_BUILD, OOM_AT_STEP, HANG_AT_STEP)


def register_all() -> None:
    """Register the test workloads in this process (again: a no-op)."""
    for workload in WORKLOADS:
        if workload.name not in _REGISTRY.names():
            register_workload(workload)


@contextmanager
def registered() -> Iterator[None]:
    """The test workloads registered in this process, removed again afterwards."""
    register_all()
    try:
        yield
    finally:
        with _REGISTRY._lock:
            for workload in WORKLOADS:
                _REGISTRY._workloads.pop(workload.name, None)


def __getattr__(name: str) -> Celery:
    # ``celery -A tests.worker.crashing_workloads`` finds the worker's own app here
    if name in ("app", "celery"):
        from worker.celery_app import get_celery

        register_all()
        return get_celery()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

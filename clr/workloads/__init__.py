"""Registry of named workloads: dataset + model + loss + metric with typed parameters.

Built-in workloads (all offline and deterministic): ``digits_mlp``, ``digits_cnn``,
``mnist1d_mlp``, ``mnist1d_cnn`` and ``synthetic_mlp`` (speed tests only). Other
distributions add workloads through the ``clr_sweep.workloads`` entry-point group;
each entry point resolves to a :class:`Workload`, a list of them, or a zero-argument
callable returning either. They are loaded once, on the first lookup, and a broken
one is logged and skipped. Looking workloads up and validating their parameters
needs no torch; building one imports it.

Example:
    >>> from clr.workloads import get_workload
    >>> inst = get_workload("digits_mlp").build({"width": 32}, seed=0)
    >>> xb, yb = next(iter(inst.train_loader))
    >>> loss = inst.loss_fn(inst.model(xb), yb)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from clr.workloads import _builtin  # noqa: F401  (registers the built-ins)
from clr.workloads._builtin import preload
from clr.workloads._core import ParamSpec, Workload, WorkloadCost, WorkloadInstance
from clr.workloads._registry import (
    ENTRY_POINT_GROUP,
    build_workload,
    get_workload,
    list_workloads,
    register_workload,
)

if TYPE_CHECKING:
    from clr.workloads._batches import TensorBatches

__all__ = [
    "ENTRY_POINT_GROUP",
    "ParamSpec",
    "TensorBatches",
    "Workload",
    "WorkloadCost",
    "WorkloadInstance",
    "build_workload",
    "get_workload",
    "list_workloads",
    "preload",
    "register_workload",
]


def __getattr__(name: str) -> Any:
    # TensorBatches holds tensors: imported on first use, so the registry (names,
    # parameters, validation) is usable without torch.
    if name == "TensorBatches":
        from clr.workloads._batches import TensorBatches

        return TensorBatches
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""What the accuracy benches share: a workload set-up, a range test, a CLR training run.

``bench.suggestion_quality`` and ``bench.verified_bounds`` both measure the final
validation accuracy of a CLR ``triangular2`` training from some bounds; they train
the same way through :func:`train_clr`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.optim import Optimizer

from clr import CyclicLR, RangeTest, RangeTestResult, make_optimizer
from clr.workloads import WorkloadInstance, build_workload


@dataclass(frozen=True)
class Setup:
    """A workload with its parameters and the optimizer that trains it.

    Attributes:
        workload: registered workload name.
        params: workload parameters (missing ones take their defaults).
        optimizer: ``sgd`` (momentum 0.9) or ``adamw``, by :func:`clr.make_optimizer`.
        weight_decay: the optimizer's weight decay (decoupled for AdamW).
    """

    workload: str
    params: Mapping[str, Any] = field(default_factory=dict)
    optimizer: str = "sgd"
    weight_decay: float = 0.0

    def build(self, seed: int) -> WorkloadInstance:
        """The workload built with ``seed``: the same seed, the same initial weights."""
        return build_workload(self.workload, dict(self.params), seed=seed)

    def make_optimizer(self, model: torch.nn.Module, lr: float) -> Optimizer:
        """The optimizer over ``model``'s parameters at learning rate ``lr``."""
        return self.optimizer_for(model.parameters(), lr)

    def optimizer_for(self, params: Iterable[torch.nn.Parameter], lr: float) -> Optimizer:
        """The optimizer over ``params`` at learning rate ``lr`` (a ``clr.verify`` factory)."""
        return make_optimizer(
            self.optimizer, params, lr=lr, momentum=0.9, weight_decay=self.weight_decay
        )


def evaluate(work: WorkloadInstance) -> float:
    """Validation accuracy of ``work.model`` (arg-max of its outputs against the labels)."""
    model = work.model
    model.eval()
    correct, total = 0.0, 0
    with torch.no_grad():
        for xb, yb in work.val_loader:
            correct += float((model(xb).argmax(1) == yb).sum())
            total += int(yb.numel())
    model.train()
    return correct / total


def chance_accuracy(val_loader: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> float:
    """The accuracy of always answering the commonest validation label."""
    labels = torch.cat([yb for _, yb in val_loader])
    return float(torch.bincount(labels).max()) / int(labels.numel())


def run_range_test(
    setup: Setup, seed: int, *, start_lr: float, end_lr: float, num_iter: int
) -> tuple[RangeTestResult, WorkloadInstance]:
    """One LR range test on the freshly built workload; its model is restored afterwards."""
    work = setup.build(seed)
    opt = setup.make_optimizer(work.model, start_lr)
    result = RangeTest(work.model, opt, work.loss_fn, metric_fn=work.metric_fn).run(
        work.train_loader, start_lr=start_lr, end_lr=end_lr, num_iter=num_iter
    )
    return result, work


def train_clr(
    setup: Setup, seed: int, base_lr: float, max_lr: float, step_size: int, stop: int
) -> float | None:
    """Train from the seed's initial weights with CLR ``triangular2`` for ``stop`` iterations.

    Returns:
        The final validation accuracy, or ``None`` when the training loss ended
        non-finite (the run diverged).
    """
    work = setup.build(seed)
    opt = setup.make_optimizer(work.model, base_lr)
    sched = CyclicLR(
        opt, base_lr=base_lr, max_lr=max_lr, step_size_up=step_size, mode="triangular2"
    )
    step = 0
    loss = torch.zeros(())
    while step < stop:
        for xb, yb in work.train_loader:
            opt.zero_grad(set_to_none=True)
            loss = work.loss_fn(work.model(xb), yb)
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
            sched.step()
            step += 1
            if step == stop:
                break
    return evaluate(work) if torch.isfinite(loss) else None

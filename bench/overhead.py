"""Range-test wall time vs a bare training loop, and vs torch-lr-finder.

Setup (issue 2): CPU, the digits MLP at width 32 and 256, 300 steps, the same
model, data and steps for every variant: each repeat starts every variant from
the same weights and optimizer state, and the bare loop sets the same LR
sequence. Variants run interleaved, ``--repeats`` times each, and the medians
are compared, so the ratios come from one run on one (noisy) machine.
Targets: ours / bare <= 1.03; torch-lr-finder measures about 1.17 (width 32)
and 1.05 (width 256) on this setup.

    python -m bench.overhead [--repeats 7] [--steps 300]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import statistics
import time
from collections.abc import Callable

import torch

from clr import RangeTest, sweep_lrs
from clr.workloads import build_workload

START_LR, END_LR = 1e-4, 0.3


class Setup:
    """One model, data and optimizer; every variant starts each repeat from the same state."""

    def __init__(self, width: int) -> None:
        self.work = build_workload("digits_mlp", {"width": width}, seed=0)
        self.opt = torch.optim.SGD(self.work.model.parameters(), lr=START_LR, momentum=0.9)
        self.model_state = copy.deepcopy(self.work.model.state_dict())
        self.opt_state = copy.deepcopy(self.opt.state_dict())

    def reset(self) -> None:
        self.work.model.load_state_dict(self.model_state)
        self.opt.load_state_dict(self.opt_state)


def bare_loop(setup: Setup, steps: int) -> Callable[[], float]:
    """The same sweep written as a plain training loop: set the LR, step, nothing else."""
    model, loss_fn, loader, opt = (
        setup.work.model,
        setup.work.loss_fn,
        setup.work.train_loader,
        setup.opt,
    )
    lrs = sweep_lrs(START_LR, END_LR, steps).tolist()

    def run() -> float:
        setup.reset()
        t0 = time.perf_counter()
        done = 0
        while done < steps:
            for xb, yb in loader:
                opt.param_groups[0]["lr"] = lrs[done]
                opt.zero_grad(set_to_none=True)
                loss = loss_fn(model(xb), yb)
                loss.backward()  # type: ignore[no-untyped-call]
                opt.step()
                done += 1
                if done == steps:
                    break
        return time.perf_counter() - t0

    return run


def ours(setup: Setup, steps: int) -> Callable[[], float]:
    tester = RangeTest(setup.work.model, setup.opt, setup.work.loss_fn)

    def run() -> float:
        setup.reset()
        t0 = time.perf_counter()
        result = tester.run(
            setup.work.train_loader,
            start_lr=START_LR,
            end_lr=END_LR,
            num_iter=steps,
            diverge_th=1e9,
        )
        elapsed = time.perf_counter() - t0
        assert result.steps_run == steps, result.stop_detail
        return elapsed

    return run


def lr_finder(setup: Setup, steps: int) -> Callable[[], float] | None:
    try:
        from torch_lr_finder import LRFinder, TrainDataLoaderIter
    except ImportError:
        return None
    work = setup.work

    class Batches(TrainDataLoaderIter):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__(work.train_loader)

    def run() -> float:
        setup.reset()
        finder = LRFinder(work.model, setup.opt, work.loss_fn, device="cpu")
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            finder.range_test(Batches(), end_lr=END_LR, num_iter=steps, diverge_th=1e9)
            finder.reset()
        elapsed = time.perf_counter() - t0
        assert len(finder.history["loss"]) == steps
        return elapsed

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"range-test overhead, digits MLP, CPU, {args.steps} steps, {args.repeats} interleaved"
        " repeats, ratios = median of per-repeat pairs"
    )
    for width in (32, 256):
        setup = Setup(width)
        variants = {"bare": bare_loop(setup, args.steps), "ours": ours(setup, args.steps)}
        finder = lr_finder(setup, args.steps)
        if finder is not None:
            variants["torch-lr-finder"] = finder
        for run in variants.values():  # warm-up
            run()
        times: dict[str, list[float]] = {name: [] for name in variants}
        names = list(variants)
        for i in range(args.repeats):
            # alternate the order (ABC, CBA, ...) so going first or last favours no one
            for name in names if i % 2 == 0 else names[::-1]:
                times[name].append(variants[name]())
        # Paired ratios: each repeat runs the variants back to back, so a slow spell
        # of the machine hits both sides of a pair; the median pair is the headline.
        paired = {
            name: statistics.median(t / b for t, b in zip(ts, times["bare"], strict=True))
            for name, ts in times.items()
        }
        med = {name: statistics.median(ts) for name, ts in times.items()}
        line = (
            f"width {width:>3}: bare {med['bare'] * 1e3:6.1f} ms  ours {med['ours'] * 1e3:6.1f} ms"
            f"  ours/bare {paired['ours']:.3f}"
        )
        if "torch-lr-finder" in med:
            line += (
                f"  torch-lr-finder {med['torch-lr-finder'] * 1e3:6.1f} ms"
                f"  lr-finder/bare {paired['torch-lr-finder']:.3f}"
                f"  ours/lr-finder {paired['ours'] / paired['torch-lr-finder']:.3f}"
            )
        print(line)


if __name__ == "__main__":
    main()

"""CLR training wall time vs the same bare loop with a fixed LR.

Setup (issue 11): CPU, the digits MLP at width 32 and 256, 300 steps, the same
model, data and steps for every variant: each repeat starts every variant from
the same weights, optimizer state and data order. ``bare`` is a plain
``for`` loop (zero_grad, forward, backward, step) at a fixed LR with no
scheduler; ``clr`` is :class:`clr.Trainer` with a triangular schedule (3 cycles
in 300 steps), so it adds the scheduler step, the LR / momentum trace, the
loss kept on the device and read every 16 steps, and the epoch bookkeeping.
Two more variants tell the trainer's cost from the rest: ``bare+lrs`` is the
bare loop setting the triangular schedule's LRs by hand (the LR values alone
change the arithmetic: denormals, for one), and ``clr+acc`` also computes the
training accuracy of every batch (the per-epoch train accuracy), work the bare
loop does not do. Variants run interleaved, ``--repeats`` times each; each run
is timed by the wall clock and by this thread's CPU time (torch runs on one
thread here, so the CPU time leaves out what other processes on a shared
machine take), and the medians of the per-repeat ratios are reported, so the
ratios come from one run on one machine. On a busy machine those ratios move
by several percent between runs, more than the trainer costs, so a last line
measures that cost alone: the same two loops on a model so small (a 4 -> 2
linear layer, batches of 4) that a step is almost all framework, 2000 steps,
the fastest of the repeats (the least disturbed); the difference per step,
divided by the digits step, is what the trainer adds to it.
Target: clr / bare <= 1.02.

    python -m bench.train_overhead [--repeats 21] [--steps 300]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from clr import Trainer, create_scheduler, make_schedule
from clr.workloads import TensorBatches, build_workload

BASE_LR, MAX_LR = 0.01, 0.1

Timing = tuple[float, float]
"""(wall seconds, CPU seconds of this thread)."""


def clock() -> Timing:
    return time.perf_counter(), time.thread_time()


def since(start: Timing) -> Timing:
    wall, cpu = clock()
    return wall - start[0], cpu - start[1]


class Setup:
    """One model, data and optimizer; every variant starts each repeat from the same state."""

    def __init__(self, width: int) -> None:
        self.work = build_workload("digits_mlp", {"width": width}, seed=0)
        self.opt = torch.optim.SGD(self.work.model.parameters(), lr=BASE_LR, momentum=0.9)
        self.model_state = copy.deepcopy(self.work.model.state_dict())
        self.opt_state = copy.deepcopy(self.opt.state_dict())
        loader = self.work.train_loader
        assert isinstance(loader, TensorBatches)
        self.loader = loader

    def reset(self) -> None:
        self.work.model.load_state_dict(self.model_state)
        self.opt.load_state_dict(self.opt_state)
        self.loader.set_epoch(0)


def bare_loop(setup: Setup, steps: int, *, scheduled_lrs: bool = False) -> Callable[[], Timing]:
    """The plain loop a user would write: a fixed LR (or the schedule's, set by hand)."""
    model, loss_fn, loader, opt = setup.work.model, setup.work.loss_fn, setup.loader, setup.opt
    schedule = make_schedule("triangular", **schedule_args(steps))
    lrs = [schedule.lr_at(i) if scheduled_lrs else BASE_LR for i in range(steps)]
    group = opt.param_groups[0]

    def run() -> Timing:
        setup.reset()
        group["lr"] = BASE_LR
        start = clock()
        done = 0
        while done < steps:
            for xb, yb in loader:
                if scheduled_lrs:
                    group["lr"] = lrs[done]
                opt.zero_grad(set_to_none=True)
                loss = loss_fn(model(xb), yb)
                loss.backward()  # type: ignore[no-untyped-call]
                opt.step()
                done += 1
                if done == steps:
                    break
        return since(start)

    return run


def schedule_args(steps: int) -> dict[str, Any]:
    """Three triangular cycles in ``steps``."""
    return {"base_lr": BASE_LR, "max_lr": MAX_LR, "step_size_up": steps // 6}


def clr_trainer(setup: Setup, steps: int, *, accuracy: bool) -> Callable[[], Timing]:
    """Trainer with a triangular schedule of three cycles over ``steps``."""
    work = setup.work

    def run() -> Timing:
        setup.reset()
        # a fresh scheduler each repeat (a Trainer starts from step 0), built before the clock
        sched = create_scheduler(setup.opt, "triangular", **schedule_args(steps))
        trainer = Trainer(
            work.model,
            setup.opt,
            work.loss_fn,
            metric_fn=work.metric_fn if accuracy else None,
            scheduler=sched,
        )
        start = clock()
        result = trainer.run(setup.loader, iterations=steps)
        elapsed = since(start)
        assert result.iterations == steps, result.iterations
        assert len(result.cycle_ends) == 3, result.cycle_ends
        return elapsed

    return run


def isolated_overhead(repeats: int, steps: int = 2000) -> tuple[float, float]:
    """Fastest CPU seconds per step of the bare loop and of the trainer, on a tiny model."""
    gen = torch.Generator().manual_seed(0)
    loader = TensorBatches(
        torch.randn(64, 4, generator=gen), torch.randint(0, 2, (64,), generator=gen), 4
    )
    model = nn.Linear(4, 2)
    opt = torch.optim.SGD(model.parameters(), lr=BASE_LR, momentum=0.9)
    loss_fn = nn.functional.cross_entropy

    def bare() -> float:
        loader.set_epoch(0)
        start = time.thread_time()
        done = 0
        while done < steps:
            for xb, yb in loader:
                opt.zero_grad(set_to_none=True)
                loss_fn(model(xb), yb).backward()  # type: ignore[no-untyped-call]
                opt.step()
                done += 1
                if done == steps:
                    break
        return time.thread_time() - start

    def clr() -> float:
        loader.set_epoch(0)
        sched = create_scheduler(opt, "triangular", **schedule_args(steps))
        trainer = Trainer(model, opt, loss_fn, scheduler=sched)
        start = time.thread_time()
        trainer.run(loader, iterations=steps)
        return time.thread_time() - start

    bare()
    clr()
    bare_times: list[float] = []
    clr_times: list[float] = []
    for _ in range(repeats):
        bare_times.append(bare())
        clr_times.append(clr())
    return min(bare_times) / steps, min(clr_times) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    if args.steps % 6:
        parser.error("--steps must be a multiple of 6 (three whole cycles)")
    torch.set_num_threads(args.threads)
    print(
        f"CLR training overhead, digits MLP, CPU, {args.steps} steps, {args.repeats} interleaved"
        " repeats, ratios = median of per-repeat pairs"
    )
    bare_steps: dict[int, float] = {}
    for width in (32, 256):
        setup = Setup(width)
        variants = {
            "bare": bare_loop(setup, args.steps),
            "bare+lrs": bare_loop(setup, args.steps, scheduled_lrs=True),
            "clr": clr_trainer(setup, args.steps, accuracy=False),
            "clr+acc": clr_trainer(setup, args.steps, accuracy=True),
        }
        for run in variants.values():  # warm-up
            run()
        times: dict[str, list[Timing]] = {name: [] for name in variants}
        names = list(variants)
        for i in range(args.repeats):
            # alternate the order (ABCD, DCBA, ...) so going first or last favours no one
            for name in names if i % 2 == 0 else names[::-1]:
                times[name].append(variants[name]())
        for k, clock_name in ((0, "wall"), (1, "cpu ")):
            # Paired ratios: each repeat runs the variants back to back, so a slow spell
            # of the machine hits both sides of a pair; the median pair is the headline.
            ratio = {
                name: statistics.median(t[k] / b[k] for t, b in zip(ts, times["bare"], strict=True))
                for name, ts in times.items()
            }
            med = {name: statistics.median(t[k] for t in ts) * 1e3 for name, ts in times.items()}
            per_step = (med["clr"] - med["bare+lrs"]) / args.steps * 1e3
            if k == 1:
                bare_steps[width] = min(t[1] for t in times["bare"]) / args.steps
            print(
                f"width {width:>3} {clock_name}: bare {med['bare']:6.1f} ms"
                f"  bare+lrs/bare {ratio['bare+lrs']:.3f}"
                f"  clr/bare {ratio['clr']:.3f}"
                f"  clr/(bare+lrs) {ratio['clr'] / ratio['bare+lrs']:.3f}"
                f" ({per_step:+.1f} us/step)"
                f"  clr+acc/bare {ratio['clr+acc']:.3f}"
            )
    bare_tiny, clr_tiny = isolated_overhead(args.repeats)
    added = clr_tiny - bare_tiny
    print(
        f"isolated: tiny model, 2000 steps, fastest of {args.repeats}: bare {bare_tiny * 1e6:.1f}"
        f" us/step, clr {clr_tiny * 1e6:.1f} us/step, the trainer adds {added * 1e6:+.1f} us/step"
        + "".join(
            f"; / digits width {w} step ({s * 1e6:.0f} us): {1 + added / s:.3f}"
            for w, s in bare_steps.items()
        )
    )


if __name__ == "__main__":
    main()

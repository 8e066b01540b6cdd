"""One ``CyclicLR.step()`` against ``torch.optim.lr_scheduler.CyclicLR.step()``.

Both wrap the same kind of optimizer (SGD with momentum, one param group) and
cycle momentum, as torch does by default. Interleaved repeats, medians, one run.
Target: ours / torch <= 0.5.

    python -m bench.scheduler_step [--steps 20000] [--repeats 7]
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from typing import Any

import torch

from clr import CyclicLR


def timer(scheduler: torch.optim.lr_scheduler.LRScheduler, steps: int) -> float:
    step = scheduler.step
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - t0) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    kwargs: dict[str, Any] = {
        "base_lr": 1e-3,
        "max_lr": 6e-3,
        "step_size_up": 2000,
        "cycle_momentum": True,
        "base_momentum": 0.8,
        "max_momentum": 0.9,
    }
    results: dict[str, dict[str, list[float]]] = {}
    for mode in ("triangular", "triangular2", "exp_range"):
        params = [torch.nn.Parameter(torch.zeros(4))]
        opt_a = torch.optim.SGD(params, lr=0.1, momentum=0.9)
        opt_b = torch.optim.SGD(params, lr=0.1, momentum=0.9)
        theirs = torch.optim.lr_scheduler.CyclicLR(opt_a, mode=mode, gamma=0.9999, **kwargs)
        mine = CyclicLR(opt_b, mode=mode, gamma=0.9999, **kwargs)
        opt_a.step()  # silence torch's "scheduler.step() before optimizer.step()" warning
        times: dict[str, list[float]] = {"torch": [], "ours": []}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for _ in range(args.repeats):
                times["torch"].append(timer(theirs, args.steps))
                times["ours"].append(timer(mine, args.steps))
        results[mode] = times
    print(f"CyclicLR.step(), median of {args.repeats} x {args.steps} steps")
    for mode, times in results.items():
        t, o = statistics.median(times["torch"]), statistics.median(times["ours"])
        print(
            f"{mode:>11}: torch {t * 1e6:5.2f} us  ours {o * 1e6:5.2f} us  ours/torch {o / t:.2f}"
        )


if __name__ == "__main__":
    main()

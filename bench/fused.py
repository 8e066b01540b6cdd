"""Fused range tests vs the same range tests run one after another (issue 15).

Setup: CPU, K = 1, 4, 16 range tests of one built-in workload (the digits MLP
and the MNIST-1D MLP), member k built with seed k (its own weights and data
order), SGD with momentum 0.9, ``--steps`` steps from 1e-4 to 0.3 (no member
diverges, so every member runs every step). "separate" runs K
:class:`clr.RangeTest`\\ s one after another; "fused" runs one
:class:`clr.FusedRangeTest` over the K members. Both run interleaved,
``--repeats`` times, and the medians are compared, so each ratio comes from one
run on one (noisy) machine:

    ratio = (fused member-steps per second) / (separate member-steps per second)

Target: ratio >= 0.5 * K at K = 16 (8x the throughput of one after another).
"path" is the path the fused members ran on (:attr:`clr.FusedModel.path`):
``stacked`` (batched matrix products over the stacked weights, the backward
written by hand, no autograd graph) for both MLPs, ``vmap`` otherwise. Both
sides run in this process under the same torch thread count (printed first).
"ms/step sep" is one member's step run alone, "ms/step fused" one step of all
K members; "ratio/K" is the fused efficiency (target 0.5).

    python -m bench.fused [--repeats 3] [--steps 200] [--workloads digits_mlp mnist1d_mlp]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from clr import FusedRangeTest, RangeTest, make_optimizer
from clr.workloads import WorkloadInstance, build_workload

START_LR, END_LR = 1e-4, 0.3
KS = (1, 4, 16)


def separate(works: list[WorkloadInstance], steps: int) -> float:
    t0 = time.perf_counter()
    for w in works:
        opt = make_optimizer("sgd", w.model.parameters(), lr=START_LR, momentum=0.9)
        result = RangeTest(w.model, opt, w.loss_fn).run(
            w.train_loader, start_lr=START_LR, end_lr=END_LR, num_iter=steps
        )
        assert result.steps_run == steps, result.stop_detail
    return time.perf_counter() - t0


def fused(works: list[WorkloadInstance], steps: int) -> tuple[float, str]:
    t0 = time.perf_counter()
    test = FusedRangeTest([w.model for w in works], "sgd", works[0].loss_fn, momentum=0.9)
    results = test.run(
        [w.train_loader for w in works], start_lr=START_LR, end_lr=END_LR, num_iter=steps
    )
    assert all(r.steps_run == steps for r in results), [r.stop_detail for r in results]
    return time.perf_counter() - t0, str(test.path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--workloads", nargs="+", default=["digits_mlp", "mnist1d_mlp"])
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.steps} steps")
    print(
        f"{'workload':<12} {'K':>3} {'path':>8} {'separate s':>11} {'fused s':>8} "
        f"{'ms/step sep':>12} {'ms/step fused':>14} {'ratio':>6} {'ratio/K':>8} {'target':>7}"
    )
    for name in args.workloads:
        works = [build_workload(name, seed=k) for k in range(max(KS))]
        separate(works[:1], 20)  # warm-up: first-call costs out of the timings
        fused(works[:2], 20)
        for k in KS:
            sep_times, fused_times = [], []
            path = "-"
            for _ in range(args.repeats):
                sep_times.append(separate(works[:k], args.steps))
                seconds, path = fused(works[:k], args.steps)
                fused_times.append(seconds)
            sep, fus = statistics.median(sep_times), statistics.median(fused_times)
            # Both do k * steps member-steps, so the throughput ratio is the time ratio.
            ratio = sep / fus
            target = f"{0.5 * k:.1f}" if k == max(KS) else "-"
            print(
                f"{name:<12} {k:>3} {path:>8} {sep:>11.3f} {fus:>8.3f} "
                f"{1e3 * sep / (k * args.steps):>12.3f} {1e3 * fus / args.steps:>14.3f} "
                f"{ratio:>6.2f} {ratio / k:>8.2f} {target:>7}"
            )


if __name__ == "__main__":
    main()

"""Which suggestion method gives the best CLR training? (picks clr.suggest's default)

For each workload (the digits ones, and MNIST-1D's for a harder task) and seed:
one LR range test, bounds from every method, then the same model trained from the
same init with CLR ``triangular2`` between
each method's bounds (step_size = 4 epochs, stopped at the end of cycle 4, the
paper's advice), and the final validation accuracy recorded. A method that fails
on a curve scores that run as a miss. The method with the highest mean accuracy
is the one to make ``clr.suggest.DEFAULT_METHOD``.

    python -m bench.suggestion_quality [--seeds 5] [--workloads digits_mlp digits_cnn ...]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from bench._training import Setup, run_range_test, train_clr
from clr import METHODS, SuggestionError, suggest_all


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument(
        "--workloads",
        nargs="+",
        default=["digits_mlp", "digits_cnn", "mnist1d_mlp", "mnist1d_cnn"],
    )
    parser.add_argument("--num-iter", type=int, default=300)
    args = parser.parse_args()
    torch.set_num_threads(1)
    scores: dict[str, dict[str, list[float]]] = {
        w: {m: [] for m in METHODS} for w in args.workloads
    }
    t0 = time.perf_counter()
    for name in args.workloads:
        for seed in range(args.seeds):
            setup = Setup(name)
            result, work = run_range_test(
                setup, seed, start_lr=1e-5, end_lr=10.0, num_iter=args.num_iter
            )
            try:
                bounds = suggest_all(result, iters_per_epoch=work.iters_per_epoch)
            except SuggestionError as exc:
                print(f"{name} seed {seed}: no bounds ({exc})")
                for method in METHODS:
                    scores[name][method].append(0.0)
                continue
            assert bounds.step_size is not None
            assert bounds.stop_iteration is not None
            for method in METHODS:
                if method in bounds.failed:
                    scores[name][method].append(0.0)
                    continue
                s = bounds.get(method)
                acc = train_clr(
                    setup, seed, s.base_lr, s.max_lr, bounds.step_size, bounds.stop_iteration
                )
                acc = 0.0 if acc is None else acc  # a diverged run scores 0
                scores[name][method].append(acc)
                print(
                    f"{name} seed {seed} {method:>12}: base {s.base_lr:.3g} max {s.max_lr:.3g}"
                    f" -> val acc {acc:.4f}"
                )
    print(
        f"\nfinal validation accuracy, CLR triangular2, 4 cycles ({time.perf_counter() - t0:.0f} s)"
    )
    header = f"{'method':>12} | " + " | ".join(f"{w:>18}" for w in args.workloads) + " |      mean"
    print(header)
    print("-" * len(header))
    means: dict[str, float] = {}
    for method in METHODS:
        cells = []
        for name in args.workloads:
            accs = scores[name][method]
            sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
            cells.append(f"{statistics.mean(accs):.4f} ± {sd:.4f}")
        means[method] = statistics.mean(a for w in args.workloads for a in scores[w][method])
        print(
            f"{method:>12} | "
            + " | ".join(f"{c:>18}" for c in cells)
            + f" |    {means[method]:.4f}"
        )
    best = max(means, key=lambda m: means[m])
    print(f"\nbest method by mean final accuracy: {best}")


if __name__ == "__main__":
    main()

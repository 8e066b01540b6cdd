"""Verified bounds with fused rounds vs the same rounds trained one by one (issue 15).

Setup: CPU, the digits MLP (default parameters), :func:`clr.verify.verify_bounds`
with its default optimizer (SGD, momentum 0.9), budget (1.0 full run) and
``--full-run`` iterations per full run, on two candidate sets:

* ``ladder``: a flat range-test curve's ladder (3 candidates, ``max_lr`` 0.1, 1
  and 10: rounds of 3 and then 2 candidates);
* ``four``: 4 pairs with ``max_lr`` 0.01, 0.03, 0.1 and 0.3 (``base_lr`` a
  quarter of it: rounds of 4 and then 2).

"sequential" is ``verify_bounds(..., fuse=False)`` (one :class:`clr.Trainer` per
candidate), "fused" the default (each round one :class:`clr.FusedTrainer` run).
Both run interleaved, ``--repeats`` times after a warm-up, and the medians are
compared, so the ratio comes from one run on one (noisy) machine:

    ratio = sequential wall time / fused wall time

"winner" says whether the two chose the same pair; "rel diff" is the largest
relative difference of a candidate's validation loss between them, and "noise"
the same between two sequential verifications, one of them from initial weights
perturbed by 1e-7 (relative): short runs at a high LR (1 and 10 on the ladder, 0.3
in ``four``) amplify float rounding over a hundred steps, so the fused runs (other
matrix-product kernels) land as far from the sequential ones as such a
perturbation does, while the low-LR candidates agree to 1e-6. The unit tests
(``tests/unit/clr/test_verify.py``) check 1e-4 on runs short enough not to amplify.

Measured (2-core CPU, torch 2.13, three runs): ratio 1.50-1.78 on ``ladder`` and
1.69-1.71 on ``four``, the same winner, "rel diff" within "noise" (1.8e-3 vs
2.2e-3; 4.2e-2 vs 4.2e-2). With K of 2-4 the fused loop's own per-step cost
(about 0.8 ms a step for all members against 0.5 ms a plain step) caps the gain.

    python -m bench.verify_fused [--repeats 5] [--full-run 704]
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable

import torch

from clr.suggest import CurveVerdict
from clr.verify import Candidate, Verification, verify_bounds
from clr.workloads import WorkloadInstance, build_workload

FLAT = CurveVerdict(False, "the loss never moved", (1e-7, 10.0), None)
CASES: dict[str, list[Candidate] | None] = {
    "ladder": None,
    "four": [Candidate(m / 4, m, f"max_lr {m:g}") for m in (0.01, 0.03, 0.1, 0.3)],
}


def build(seed: int) -> WorkloadInstance:
    return build_workload("digits_mlp", seed=seed)


def perturbed(seed: int) -> WorkloadInstance:
    """:func:`build` with its initial weights scaled by ``1 + 1e-7 * noise``."""
    work = build(seed)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in work.model.parameters():
            p.mul_(1 + 1e-7 * torch.randn(p.shape, generator=gen))
    return work


def verify(
    candidates: list[Candidate] | None,
    full_run: int,
    *,
    fuse: bool,
    build_fn: Callable[[int], WorkloadInstance] = build,
) -> Verification:
    return verify_bounds(
        build_fn,
        None,
        FLAT,
        full_run_iterations=full_run,
        seed=0,
        candidates=candidates,
        fuse=fuse,
    )


def timed(
    candidates: list[Candidate] | None, full_run: int, *, fuse: bool
) -> tuple[float, Verification]:
    t0 = time.perf_counter()
    v = verify(candidates, full_run, fuse=fuse)
    return time.perf_counter() - t0, v


def rel_diff(a: Verification, b: Verification) -> float:
    """The largest relative difference of a candidate's validation loss in ``a`` and ``b``."""
    worst = 0.0
    for ra, rb in zip(a.rounds, b.rounds, strict=True):
        for xa, xb in zip(ra.results, rb.results, strict=True):
            if xa.candidate != xb.candidate or (xa.val_loss is None) != (xb.val_loss is None):
                return math.inf
            if xa.val_loss is not None and xb.val_loss is not None:
                worst = max(worst, abs(xa.val_loss - xb.val_loss) / abs(xb.val_loss))
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--full-run", type=int, default=704)
    args = parser.parse_args()
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, digits_mlp, "
        f"full run {args.full_run} iterations, median of {args.repeats}"
    )
    print(
        f"{'case':<7} {'rounds':<14} {'iters':>6} {'path':<8} {'sequential s':>13} "
        f"{'fused s':>8} {'ratio':>6} {'winner':>7} {'rel diff':>9} {'noise':>9}"
    )
    verify(None, args.full_run, fuse=False)  # warm-up: first-call costs out of the timings
    verify(None, args.full_run, fuse=True)
    for name, candidates in CASES.items():
        seq_times, fused_times = [], []
        seq = fused = None
        for _ in range(args.repeats):
            seconds, seq = timed(candidates, args.full_run, fuse=False)
            seq_times.append(seconds)
            seconds, fused = timed(candidates, args.full_run, fuse=True)
            fused_times.append(seconds)
        assert seq is not None
        assert fused is not None
        noisy = verify(candidates, args.full_run, fuse=False, build_fn=perturbed)
        t_seq, t_fused = statistics.median(seq_times), statistics.median(fused_times)
        rounds = " + ".join(f"{k}x{it}" for k, it in fused.plan.rounds)
        paths = {r.execution.rsplit("(", 1)[-1].rstrip(")") for r in fused.rounds if r.fused}
        winner = "same" if fused.winner_index == seq.winner_index else "OTHER"
        print(
            f"{name:<7} {rounds:<14} {fused.iterations_spent:>6} {'/'.join(sorted(paths)):<8} "
            f"{t_seq:>13.3f} {t_fused:>8.3f} {t_seq / t_fused:>6.2f} {winner:>7} "
            f"{rel_diff(fused, seq):>9.1e} {rel_diff(noisy, seq):>9.1e}"
        )


if __name__ == "__main__":
    main()

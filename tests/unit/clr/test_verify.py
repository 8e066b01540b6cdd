"""clr.verify: candidate bounds, the successive-halving plan, selection, and a local run."""

from __future__ import annotations

import dataclasses
import doctest
import importlib
import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from clr import (
    Candidate,
    CandidateResult,
    HalvingPlan,
    OptimizerError,
    Verification,
    VerificationError,
    candidates_for,
    plan_halving,
    select_survivors,
    verify_bounds,
)
from clr.suggest import Curve, CurveVerdict, Suggestion, Suggestions, curve_verdict, suggest_all
from clr.workloads import WorkloadInstance, build_workload

verify_mod = importlib.import_module("clr.verify")

FLAT = CurveVerdict(False, "the loss never moved", (1e-7, 10.0), None)
INFORMATIVE = CurveVerdict(True, "the loss fell", (1e-6, 3.0), None)


def suggestions_of(*pairs: tuple[str, float, float]) -> Suggestions:
    """Suggestions whose items are ``(method, base_lr, max_lr)``, the first the default."""
    items = [Suggestion(m, base, mx, f"{m} says so") for m, base, mx in pairs]
    return Suggestions(items=items, default=items[0], confidence=0.9, noise=0.02)


def decades(candidates: list[Candidate]) -> list[float]:
    return [math.log10(c.max_lr) for c in candidates]


class TestTorchFree:
    def test_planning_loads_no_torch(self):
        code = (
            "import json, sys\n"
            "import clr\n"
            "from clr.verify import candidates_for, plan_halving, select_survivors\n"
            "from clr.suggest import CurveVerdict\n"
            "v = CurveVerdict(False, 'flat', (1e-7, 10.0), 5.0)\n"
            "c = candidates_for(None, v)\n"
            "p = plan_halving(len(c), full_run_iterations=1000)\n"
            "s = select_survivors({0: 1.0, 1: None, 2: 0.5}, 2, candidates=c)\n"
            "torch = sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.'))\n"
            "print(json.dumps({'n': len(c), 'rounds': [list(r) for r in p.rounds], 's': s,"
            " 'torch': torch}))\n"
        )
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=60
        )
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout) == {
            "n": 3,  # the top 3 rungs below the divergence: 0.01, 0.1, 1
            "rounds": [[3, 142], [2, 284]],  # 142 * (3 + 2 * 2) <= 1000
            "s": [2, 0],
            "torch": [],
        }

    def test_docstring_examples(self):
        result = doctest.testmod(verify_mod, optionflags=doctest.ELLIPSIS)
        assert result.failed == 0
        assert result.attempted >= 5


class TestCandidate:
    @pytest.mark.parametrize(
        ("base", "mx", "match"),
        [
            (0.0, 0.1, "base_lr must be a positive finite number, got 0.0"),
            (0.01, math.nan, "max_lr must be a positive finite number, got nan"),
            (0.1, 0.1, "base_lr must be below max_lr, got base_lr=0.1 and max_lr=0.1"),
            (True, 0.1, "base_lr must be a positive finite number, got True"),
        ],
    )
    def test_rejects_impossible_bounds(self, base, mx, match):
        with pytest.raises(ValueError, match=re_escape(match)):
            Candidate(base, mx, "paper")

    def test_to_dict(self):
        assert Candidate(0.025, 0.1, "ladder:0.1").to_dict() == {
            "base_lr": 0.025,
            "max_lr": 0.1,
            "source": "ladder:0.1",
        }


def re_escape(text: str) -> str:
    import re

    return "^" + re.escape(text) + "$"


class TestCandidatesFor:
    def test_informative_curve_explores_around_the_default_first(self):
        s = suggestions_of(
            ("max_fraction", 0.075, 0.3),
            ("paper", 0.01, 0.3),  # same max_lr as the default, a deeper cycle: a new pair
            ("steepest", 0.005, 0.02),
            ("valley", 0.006, 0.025),  # both bounds within 0.15 decades of steepest: the same
            ("min_div_10", 0.0075, 0.03),  # 0.18 decades from steepest: a new one
        )
        got = candidates_for(s, INFORMATIVE)
        assert [c.source for c in got] == [
            "max_fraction",
            "neighbour:x3",
            "neighbour:/3",
            "neighbour:base/10",
        ]
        assert got[0] == Candidate(0.075, 0.3, "max_fraction")
        assert (got[1].base_lr, got[1].max_lr) == pytest.approx((0.9 / 4, 0.9))
        assert (got[2].base_lr, got[2].max_lr) == pytest.approx((0.1 / 4, 0.1))
        assert (got[3].base_lr, got[3].max_lr) == pytest.approx((0.03, 0.3))
        # with room, the other methods follow, each pair once
        more = candidates_for(s, INFORMATIVE, max_candidates=8)
        assert [c.source for c in more][4:] == ["paper", "steepest", "min_div_10"]

    def test_a_deep_default_gets_no_deeper_variant(self):
        got = candidates_for(suggestions_of(("paper", 0.01, 0.1)), INFORMATIVE)
        assert [c.source for c in got] == ["paper", "neighbour:x3", "neighbour:/3"]
        assert all(c.max_lr / c.base_lr == pytest.approx(10.0) for c in got)

    def test_uninformative_curve_takes_the_top_rungs_of_a_ladder(self):
        s = suggestions_of(("max_fraction", 2.5e-7, 1e-6), ("steepest", 2.5e-8, 1e-7))
        got = candidates_for(s, FLAT)
        # the other methods read noise on such a curve: left out
        assert [c.source for c in got] == ["max_fraction", "ladder:0.1", "ladder:1", "ladder:10"]
        for c in got[1:]:
            assert c.base_lr == pytest.approx(c.max_lr / 4)

    def test_no_suggestions_means_a_ladder_alone(self):
        verdict = CurveVerdict(True, "", (1e-5, 1.0), None)  # e.g. every rule failed
        got = candidates_for(None, verdict)
        assert decades(got) == pytest.approx([-1, 0, 1])

    @pytest.mark.parametrize(
        ("diverged_at", "top"),
        [(5.0, 1.0), (1.0, 0.1), (0.0999, 0.01), (3e-4, 1e-4), (5e-5, 1e-5)],
    )
    def test_the_ladder_stays_below_the_divergence(self, diverged_at, top):
        verdict = CurveVerdict(False, "flat, then diverged", (1e-7, diverged_at), diverged_at)
        got = candidates_for(None, verdict)
        assert max(c.max_lr for c in got) < diverged_at
        ladder = [c for c in got if c.source.startswith("ladder:")]
        assert max(c.max_lr for c in ladder) == pytest.approx(top)

    def test_neighbours_above_the_divergence_are_skipped(self):
        verdict = CurveVerdict(True, "", (1e-6, 0.5), 0.5)
        got = candidates_for(suggestions_of(("max_fraction", 0.05, 0.2)), verdict)
        assert all(c.max_lr < 0.5 for c in got)
        assert [c.source for c in got] == [
            "max_fraction",
            "neighbour:/3",
            "neighbour:base/10",
        ]

    def test_max_candidates_keeps_the_highest_rungs(self):
        got = candidates_for(suggestions_of(("max_fraction", 0.075, 0.3)), FLAT, max_candidates=3)
        assert [c.source for c in got] == ["max_fraction", "ladder:1", "ladder:10"]
        assert [c.source for c in candidates_for(None, FLAT, max_candidates=1)] == ["ladder:10"]

    def test_a_rung_that_repeats_a_suggestion_is_dropped(self):
        got = candidates_for(suggestions_of(("max_fraction", 0.025, 0.11)), FLAT)
        assert [c.source for c in got] == ["max_fraction", "ladder:1", "ladder:10"]

    @pytest.mark.parametrize("bad", [0, -1, 2.0, True])
    def test_bad_max_candidates(self, bad):
        with pytest.raises(ValueError, match="max_candidates must be an integer >= 1"):
            candidates_for(None, FLAT, max_candidates=bad)

    def test_from_a_real_flat_curve(self):
        # the GRU of issue 12: flat from 1e-7 to 5, where it blew up; no rule answers
        lrs = np.logspace(-7, 1, 100)
        k = int(np.searchsorted(lrs, 5.0))
        losses = 0.693 * (1 + 0.01 * np.random.default_rng(0).standard_normal(k + 2))
        losses[k:] = [9.0, 60.0]
        curve = Curve(lrs[: k + 2], losses)
        verdict = curve_verdict(curve)
        assert not verdict.informative
        assert verdict.diverged_at == pytest.approx(lrs[k])
        got = candidates_for(None, verdict)
        assert decades(got) == pytest.approx([-2, -1, 0])


class TestPlanHalving:
    @pytest.mark.parametrize("n", range(1, 13))
    @pytest.mark.parametrize("eta", [2, 3])
    @pytest.mark.parametrize("budget_runs", [1.0, 1.5, 3.0])
    def test_budget_is_never_exceeded_and_rounds_shrink(self, n, eta, budget_runs):
        full = 1000
        try:
            plan = plan_halving(n, full_run_iterations=full, budget_runs=budget_runs, eta=eta)
        except VerificationError:
            # only when the first round cannot give each candidate 20 iterations
            sizes, size = [], n
            while size > 1:
                sizes.append(size)
                size = math.ceil(size / eta)
            weight = sum(c * eta**r for r, c in enumerate(sizes))
            assert weight * 20 > math.floor(budget_runs * full)
            return
        assert plan.total_iterations <= plan.budget_iterations == math.floor(budget_runs * full)
        assert plan.total_iterations == sum(c * i for c, i in plan.rounds)
        if n == 1:
            assert plan.rounds == ()
            return
        sizes = [c for c, _ in plan.rounds]
        assert sizes[0] == n
        for a, b in zip(sizes, sizes[1:], strict=False):
            assert b == math.ceil(a / eta)
        assert sizes[-1] > 1  # the lone survivor is not trained
        assert math.ceil(sizes[-1] / eta) == 1
        iters = [i for _, i in plan.rounds]
        assert all(i % 2 == 0 and i >= 20 for i in iters)
        assert all(i <= full for i in iters)
        for a, b in zip(iters, iters[1:], strict=False):
            assert b == min(a * eta, full)
        # the first round is as long as the budget allows (the next even step would not fit)
        weight = sum(c * eta**r for r, c in enumerate(sizes))
        if iters[-1] < full:
            assert (iters[0] + 2) * weight > plan.budget_iterations

    def test_the_default_plan_of_four(self):
        plan = plan_halving(4, full_run_iterations=704)
        assert plan.rounds == ((4, 88), (2, 176))
        assert plan.total_iterations == plan.budget_iterations == 704
        assert plan.total_runs == pytest.approx(1.0)
        assert [plan.keep(r) for r in range(2)] == [2, 1]
        assert plan.to_dict() == {
            "rounds": [
                {"candidates": 4, "iterations": 88},
                {"candidates": 2, "iterations": 176},
            ],
            "total_iterations": 704,
            "budget_iterations": 704,
            "total_runs": 1.0,
            "budget_runs": 1.0,
            "full_run_iterations": 704,
            "eta": 2,
        }

    def test_a_round_is_never_longer_than_the_full_run(self):
        plan = plan_halving(2, full_run_iterations=100, budget_runs=10.0)
        assert plan.rounds == ((2, 100),)

    def test_a_tiny_budget_is_refused_before_anything_runs(self):
        with pytest.raises(VerificationError) as info:
            plan_halving(8, full_run_iterations=100, budget_runs=1.5)
        assert str(info.value) == (
            "budget_runs=1.5 of full_run_iterations=100 (150 iterations) gives each of the 8 "
            "candidates 6 iterations in the first of 3 rounds, below min_iterations=20: it needs "
            "budget_runs >= 4.8, or fewer candidates (at most 3 fit)"
        )
        assert isinstance(info.value, ValueError)
        # ... and the hint is right: 3 fit, 4 do not
        plan_halving(3, full_run_iterations=100, budget_runs=1.5)
        with pytest.raises(VerificationError):
            plan_halving(4, full_run_iterations=100, budget_runs=1.5)
        plan_halving(8, full_run_iterations=100, budget_runs=4.8)

    def test_a_full_run_shorter_than_min_iterations(self):
        with pytest.raises(VerificationError, match="full_run_iterations=10 is below"):
            plan_halving(2, full_run_iterations=10, budget_runs=100.0)

    @pytest.mark.parametrize(
        ("kwargs", "match"),
        [
            ({"n_candidates": 0}, "n_candidates must be an integer >= 1, got 0"),
            ({"full_run_iterations": 0}, "full_run_iterations must be an integer >= 1, got 0"),
            ({"eta": 1}, "eta must be an integer >= 2, got 1"),
            ({"budget_runs": 0.0}, "budget_runs must be a positive finite number, got 0.0"),
            ({"budget_runs": math.inf}, "budget_runs must be a positive finite number, got inf"),
            ({"min_iterations": 1}, "min_iterations must be an integer >= 2, got 1"),
        ],
    )
    def test_bad_arguments_name_themselves(self, kwargs, match):
        args = {"n_candidates": 4, "full_run_iterations": 1000} | kwargs
        n = args.pop("n_candidates")
        with pytest.raises(ValueError, match=re_escape(match)):
            plan_halving(n, **args)

    def test_keep_rejects_a_round_outside_the_plan(self):
        with pytest.raises(IndexError, match=r"round_index must be in \[0, 3\), got 3"):
            plan_halving(8, full_run_iterations=704).keep(3)


class TestSelectSurvivors:
    def test_lowest_loss_first_non_finite_last(self):
        results = {0: 0.9, 1: math.nan, 2: 0.4, 3: None, 4: math.inf, 5: 0.5}
        assert select_survivors(results, 3) == [2, 5, 0]
        assert select_survivors(results, 6) == [2, 5, 0, 1, 3, 4]
        assert select_survivors(results, 10) == [2, 5, 0, 1, 3, 4]

    def test_ties_go_to_the_lower_max_lr(self):
        cands = [
            Candidate(0.25, 1.0, "ladder:1"),
            Candidate(0.0025, 0.01, "ladder:0.01"),
            Candidate(0.025, 0.1, "ladder:0.1"),
        ]
        assert select_survivors({0: 0.5, 1: 0.5, 2: 0.5}, 2, candidates=cands) == [1, 2]
        # among the diverged too
        assert select_survivors({0: None, 2: math.nan}, 1, candidates=cands) == [2]
        # without candidates: the lower index
        assert select_survivors({2: 0.5, 0: 0.5}, 1) == [0]

    def test_losses_within_the_tolerance_are_ties(self):
        cands = [
            Candidate(0.0025, 0.01, "ladder:0.01"),
            Candidate(0.025, 0.1, "ladder:0.1"),
            Candidate(0.25, 1.0, "ladder:1"),
            Candidate(2.5, 10.0, "ladder:10"),
        ]
        # the bench's GRU after 72 iterations: all on the plateau at ln 8, LR 1 a little above
        plateau = {0: 2.0799, 1: 2.0827, 2: 2.1058, 3: None}
        assert select_survivors(plateau, 2, candidates=cands, informative=False) == [2, 1]
        # an informative curve: ties within 1 % go to the lower max_lr, the rest by loss
        assert select_survivors(plateau, 3, candidates=cands) == [0, 1, 2]
        informative = {0: 0.500, 1: 0.504, 2: 0.45, 3: 0.452}
        assert select_survivors(informative, 4, candidates=cands) == [2, 3, 0, 1]
        # beyond the plateau tolerance a loss that moved wins, whatever its max_lr
        moved = {0: 2.08, 1: 1.80, 2: 2.08}
        assert select_survivors(moved, 2, candidates=cands, informative=False) == [1, 2]
        assert select_survivors(moved, 2, candidates=cands) == [1, 0]
        # tolerance 0: exact ties only
        exact = {"candidates": cands, "tolerance": 0.0}
        assert select_survivors(plateau, 1, **exact) == [0]
        assert select_survivors(plateau, 1, informative=False, **exact) == [0]

    def test_bad_arguments(self):
        with pytest.raises(ValueError, match="tolerance must be a finite number >= 0, got -0.1"):
            select_survivors({0: 1.0}, 1, tolerance=-0.1)
        with pytest.raises(ValueError, match="keep must be an integer >= 1, got 0"):
            select_survivors({0: 1.0}, 0)
        with pytest.raises(ValueError, match=r"results name candidates \[5\]"):
            select_survivors({5: 1.0}, 1, candidates=[Candidate(0.1, 1.0, "x")])


class TestVerificationFromRounds:
    def test_winner_is_the_best_of_the_last_round_and_compute_adds_up(self):
        cands = [Candidate(m / 4, m, f"ladder:{m:g}") for m in (1e-3, 1e-2, 1e-1, 1.0)]
        plan = plan_halving(4, full_run_iterations=200, budget_runs=1.5)
        assert plan.rounds == ((4, 36), (2, 72))  # 36 * (4 + 2 * 2) <= 300
        v = Verification.from_rounds(
            cands,
            plan,
            [
                [
                    CandidateResult(0, 36, 1.3, 0.3),
                    CandidateResult(1, 36, 0.9, 0.6),
                    CandidateResult(2, 36, 0.7, 0.7),
                    CandidateResult(3, 12, None, None),  # stopped when its loss blew up
                ],
                [CandidateResult(2, 72, 0.35, 0.9), CandidateResult(1, 72, 0.3, 0.92)],
            ],
        )
        assert [r.kept for r in v.rounds] == [(2, 1), (1,)]
        assert v.winner == cands[1]
        assert v.winner_index == 1
        assert v.iterations_spent == 36 * 3 + 12 + 72 * 2
        assert v.runs_spent == pytest.approx(264 / 200)
        assert v.iterations_spent <= v.budget_iterations == 300
        assert v.warnings == ()
        data = json.loads(json.dumps(v.to_dict()))
        assert data["winner"] == cands[1].to_dict()
        assert data["rounds"][0]["results"][3] == {
            "candidate": 3,
            "iterations": 12,
            "val_loss": None,
            "val_accuracy": None,
        }
        assert data["budget_runs"] == 1.5
        assert data["iterations_spent"] == 264

    def test_one_candidate_needs_no_training(self):
        cand = Candidate(0.025, 0.1, "max_fraction")
        v = Verification.from_rounds([cand], plan_halving(1, full_run_iterations=100), [])
        assert (v.winner, v.iterations_spent, v.rounds) == (cand, 0, ())

    def test_all_diverged_says_so(self):
        cands = [Candidate(2.5, 10.0, "ladder:10"), Candidate(0.25, 1.0, "ladder:1")]
        plan = plan_halving(2, full_run_iterations=100)
        v = Verification.from_rounds(
            cands, plan, [[CandidateResult(0, 8, None), CandidateResult(1, 20, math.nan)]]
        )
        assert v.winner == cands[1]  # the lower max_lr
        [w] = v.warnings
        assert w.startswith("no candidate of the last round (2 of them) ended with a finite")

    def test_more_rounds_than_planned(self):
        plan = plan_halving(2, full_run_iterations=100)
        with pytest.raises(ValueError, match="got 2 rounds for a plan of 1"):
            Verification.from_rounds([Candidate(0.1, 1.0, "x")] * 2, plan, [[], []])


# --------------------------------------------------------------------------- local run

# synthetic_mlp at this size: 16 batches an epoch; with SGD (momentum 0.9) one
# triangular cycle trains it at max_lr 0.1, barely moves it at 1e-3 and below, and
# blows up at 10 (and, given 56 iterations, at 1)
SYNTH = {
    "n_samples": 512,
    "n_features": 16,
    "n_classes": 4,
    "width": 32,
    "depth": 1,
    "batch_size": 32,
}


def build(seed: int) -> WorkloadInstance:
    return build_workload("synthetic_mlp", SYNTH, seed=seed)


class TestVerifyBounds:
    def test_a_flat_curve_is_settled_by_training(self):
        seen: list[tuple[int, CandidateResult]] = []
        v = verify_bounds(
            build,
            None,
            FLAT,
            full_run_iterations=200,
            seed=0,
            min_iterations=10,
            callback=lambda r, res: seen.append((r, res)),
        )
        # the top three rungs (the test never diverged: up to 10), one full run in all
        assert [c.source for c in v.candidates] == ["ladder:0.1", "ladder:1", "ladder:10"]
        assert v.plan.rounds == ((3, 28), (2, 56))
        # the winner has the lowest validation loss of the last round ...
        last = v.rounds[-1].results
        best = min(last, key=lambda r: r.val_loss if r.val_loss is not None else math.inf)
        assert v.winner_index == best.candidate
        assert v.winner.max_lr == pytest.approx(0.1)  # ... and it is the LR that trains
        assert best.val_accuracy is not None
        assert best.val_accuracy > 0.8
        # every round kept the best of its own by validation loss: 0.1 beat the
        # others by more than the plateau's tolerance, so no tie sent it out
        for rnd in v.rounds:
            finite = sorted(
                (r.val_loss, r.candidate) for r in rnd.results if r.val_loss is not None
            )
            assert rnd.kept[0] == finite[0][1]
        # the 10 rung blew up and stopped early, ranked last
        [ten] = [r for r in v.rounds[0].results if r.candidate == 2]
        assert ten.val_loss is None or ten.val_loss > 10
        # compute: what was declared, never more
        assert v.iterations_spent == sum(r.iterations for _, r in seen)
        assert v.iterations_spent <= v.plan.total_iterations <= v.budget_iterations == 200
        assert v.runs_spent <= 1.0
        assert len(seen) == 3 + 2

    def test_every_candidate_starts_from_the_same_weights(self):
        calls: list[torch.Tensor] = []

        def counting_build(seed: int) -> WorkloadInstance:
            inst = build(seed + len(calls))  # a build that does not repeat its init
            calls.append(inst.model[1].weight)
            return inst

        def first_weights(params, lr):
            return torch.optim.SGD(params, lr=lr)

        cands = [Candidate(1e-9, 2e-9, "a"), Candidate(2e-9, 4e-9, "b")]
        v = verify_bounds(
            counting_build,
            None,
            FLAT,
            full_run_iterations=40,
            seed=0,
            candidates=cands,
            optimizer=first_weights,
        )
        # LRs of 1e-9 leave the weights where they started: both runs began from the
        # first build's init, loaded into their own (differently seeded) build
        assert len(calls) == 3
        assert torch.allclose(calls[1], calls[0].detach(), atol=1e-6)
        assert torch.allclose(calls[2], calls[0].detach(), atol=1e-6)
        losses = [r.val_loss for r in v.rounds[0].results]
        assert losses[0] == pytest.approx(losses[1], rel=1e-5)

    def test_a_budget_too_small_trains_nothing(self):
        calls: list[int] = []

        def counting_build(seed: int) -> WorkloadInstance:
            calls.append(seed)
            return build(seed)

        with pytest.raises(VerificationError, match="below min_iterations=20"):
            verify_bounds(counting_build, None, FLAT, full_run_iterations=100)
        assert calls == []

    def test_suggestions_from_a_real_range_test_are_verified(self):
        from clr import RangeTest, make_optimizer

        w = build(0)
        opt = make_optimizer("sgd", w.model.parameters(), lr=1e-5, momentum=0.9)
        result = RangeTest(w.model, opt, w.loss_fn, metric_fn=w.metric_fn).run(
            w.train_loader, start_lr=1e-5, end_lr=10.0, num_iter=100
        )
        s = suggest_all(result)
        verdict = curve_verdict(result)
        assert verdict.informative
        v = verify_bounds(build, s, verdict, full_run_iterations=300, seed=0, min_iterations=10)
        assert v.candidates[0].source == s.default.method
        assert all(c.source.split(":")[0] != "ladder" for c in v.candidates)
        assert v.iterations_spent <= v.budget_iterations
        assert isinstance(v.plan, HalvingPlan)


# --------------------------------------------------------------------------- fused rounds

# digits_mlp at width 16 (22 batches an epoch): rounds of 3 x 10 and 2 x 20
# iterations; 0.1 and 1 train, 1e30 turns the loss non-finite within two steps
DIGITS = {"width": 16}
DIVERGING = [Candidate(0.025, 0.1, "a"), Candidate(0.25, 1.0, "b"), Candidate(1e25, 1e30, "c")]


def digits(seed: int) -> WorkloadInstance:
    return build_workload("digits_mlp", DIGITS, seed=seed)


def batch_norm_digits(seed: int) -> WorkloadInstance:
    """digits_mlp's data with a model that vmap cannot train (batch norm in training mode)."""
    inst = digits(seed)
    torch.manual_seed(seed)
    model = torch.nn.Sequential(
        torch.nn.Flatten(),
        torch.nn.Linear(64, 16),
        torch.nn.BatchNorm1d(16),
        torch.nn.ReLU(),
        torch.nn.Linear(16, 10),
    )
    return dataclasses.replace(inst, model=model)


def run_both(build_fn, **kwargs):
    """verify_bounds fused and unfused, each with the candidates its callback saw."""
    out = []
    for fuse in (True, False):
        seen: list[tuple[int, int]] = []
        v = verify_bounds(
            build_fn,
            None,
            FLAT,
            full_run_iterations=80,
            seed=0,
            min_iterations=10,
            fuse=fuse,
            callback=lambda r, res, seen=seen: seen.append((r, res.candidate)),
            **kwargs,
        )
        out.append((v, seen))
    return out


def losses_of(v: Verification) -> list[list[tuple[int, float | None]]]:
    return [[(r.candidate, r.val_loss) for r in rnd.results] for rnd in v.rounds]


class TestVerifyBoundsFused:
    def test_fused_rounds_give_the_unfused_losses_and_winner(self):
        (fused, seen_fused), (alone, seen_alone) = run_both(digits, candidates=DIVERGING)
        assert fused.plan.rounds == alone.plan.rounds == ((3, 10), (2, 20))
        assert [(r.fused, r.execution) for r in fused.rounds] == [
            (True, "3 candidates fused (stacked)"),
            (True, "2 candidates fused (stacked)"),
        ]
        assert [(r.fused, r.execution) for r in alone.rounds] == [
            (False, "3 candidates one by one: fuse=False"),
            (False, "2 candidates one by one: fuse=False"),
        ]
        # the same candidates, in the same order, each with the unfused run's loss
        f_losses, a_losses = losses_of(fused), losses_of(alone)
        assert [[c for c, _ in rnd] for rnd in f_losses] == [[0, 1, 2], [1, 0]]
        assert [[c for c, _ in rnd] for rnd in a_losses] == [[0, 1, 2], [1, 0]]
        for f_rnd, a_rnd in zip(f_losses, a_losses, strict=True):
            for (_, f_loss), (_, a_loss) in zip(f_rnd, a_rnd, strict=True):
                if a_loss is None:
                    assert f_loss is None
                else:
                    assert f_loss == pytest.approx(a_loss, rel=1e-4)
        for f_rnd, a_rnd in zip(fused.rounds, alone.rounds, strict=True):
            for f_res, a_res in zip(f_rnd.results, a_rnd.results, strict=True):
                if a_res.val_loss is not None:
                    assert f_res.val_accuracy == pytest.approx(a_res.val_accuracy, rel=1e-4)
        # the diverged member was masked and ranked last, as the unfused run was
        [f_bad] = [r for r in fused.rounds[0].results if r.candidate == 2]
        assert f_bad.val_loss is None
        assert f_bad.iterations < 10
        assert fused.rounds[0].kept == alone.rounds[0].kept == (1, 0)
        assert fused.winner_index == alone.winner_index
        assert fused.rounds[-1].kept == alone.rounds[-1].kept
        # the callback saw every candidate once, after its round, in the round's order
        assert seen_fused == seen_alone == [(0, 0), (0, 1), (0, 2), (1, 1), (1, 0)]
        assert fused.iterations_spent == sum(
            r.iterations for rnd in fused.rounds for r in rnd.results
        )
        data = json.loads(json.dumps(fused.to_dict()))
        assert data["rounds"][0]["fused"] is True
        assert data["rounds"][0]["execution"] == "3 candidates fused (stacked)"
        assert data["rounds"][0]["results"][2] == {
            "candidate": 2,
            "iterations": f_bad.iterations,
            "val_loss": None,
            "val_accuracy": None,
        }

    def test_every_member_starts_from_the_same_weights(self):
        calls: list[torch.Tensor] = []

        def counting_build(seed: int) -> WorkloadInstance:
            inst = digits(seed + len(calls))  # a build that does not repeat its init
            calls.append(inst.model[1].weight.detach().clone())
            return inst

        cands = [Candidate(1e-9, 2e-9, "a"), Candidate(2e-9, 4e-9, "b")]
        v = verify_bounds(
            counting_build, None, FLAT, full_run_iterations=40, seed=0, candidates=cands
        )
        assert v.rounds[0].fused is True
        assert len(calls) == 3  # the first build's init, loaded into the other two
        assert not torch.allclose(calls[1], calls[0])
        losses = [r.val_loss for r in v.rounds[0].results]
        assert losses[0] == pytest.approx(losses[1], rel=1e-6)

    def test_a_model_that_does_not_fuse_trains_one_by_one(self):
        cands = DIVERGING[:2]
        (fused, seen), _ = run_both(batch_norm_digits, candidates=cands)
        [rnd] = fused.rounds
        assert rnd.fused is False
        assert rnd.execution.startswith("2 candidates one by one: batch norm in training mode")
        assert all(r.val_loss is not None and math.isfinite(r.val_loss) for r in rnd.results)
        assert seen == [(0, 0), (0, 1)]

    def test_a_custom_factory_trains_one_by_one(self):
        def sgd(params, lr):
            return torch.optim.SGD(params, lr=lr, momentum=0.9)

        (custom, _), _ = run_both(digits, candidates=DIVERGING[:2], optimizer=sgd)
        (default, _), _ = run_both(digits, candidates=DIVERGING[:2])
        [rnd] = custom.rounds
        assert rnd.fused is False
        assert rnd.execution == (
            "2 candidates one by one: a custom optimizer factory cannot be fused "
            "(optimizer_spec can)"
        )
        assert default.rounds[0].fused is True
        for c_res, d_res in zip(rnd.results, default.rounds[0].results, strict=True):
            assert c_res.val_loss == pytest.approx(d_res.val_loss, rel=1e-4)

    def test_an_optimizer_spec_fuses_and_matches_its_unfused_runs(self):
        spec = {"name": "adam", "betas": [0.95, 0.999], "weight_decay": 1e-4}
        cands = [Candidate(1e-3, 4e-3, "a"), Candidate(1e-2, 4e-2, "b")]
        (fused, _), (alone, _) = run_both(digits, candidates=cands, optimizer_spec=spec)
        assert [r.fused for r in fused.rounds] == [True]
        assert [r.fused for r in alone.rounds] == [False]
        for f_res, a_res in zip(fused.rounds[0].results, alone.rounds[0].results, strict=True):
            assert f_res.val_loss == pytest.approx(a_res.val_loss, rel=1e-4)
        # Adam, not the default SGD: the losses differ from SGD's at these bounds
        (sgd, _), _ = run_both(digits, candidates=cands)
        assert fused.rounds[0].results[1].val_loss != pytest.approx(
            sgd.rounds[0].results[1].val_loss, rel=1e-3
        )

    @pytest.mark.parametrize(
        ("kwargs", "error", "match"),
        [
            (
                {"optimizer": lambda p, lr: torch.optim.SGD(p, lr=lr), "optimizer_spec": {}},
                ValueError,
                "pass optimizer or optimizer_spec, not both",
            ),
            ({"optimizer_spec": {"name": "sgd", "lr": 0.1}}, ValueError, r"unknown keys \['lr'\]"),
            ({"optimizer_spec": {"momentum": 0.5}}, ValueError, "must name the optimizer"),
            ({"optimizer_spec": ["sgd"]}, ValueError, "optimizer_spec must be a mapping"),
            ({"optimizer_spec": {"name": "lion"}}, OptimizerError, "optimizer must be one of"),
            ({"optimizer_spec": {"name": "sgd", "momentum": 2.0}}, OptimizerError, "momentum"),
            ({"fuse": 1}, ValueError, "fuse must be a bool, got 1"),
        ],
    )
    def test_bad_arguments_train_nothing(self, kwargs, error, match):
        calls: list[int] = []

        def counting_build(seed: int) -> WorkloadInstance:
            calls.append(seed)
            return digits(seed)

        with pytest.raises(error, match=match):
            verify_bounds(
                counting_build,
                None,
                FLAT,
                full_run_iterations=80,
                min_iterations=10,
                candidates=DIVERGING[:2],
                **kwargs,
            )
        assert calls == []

    def test_rounds_put_together_by_a_service_say_nothing_of_fusion(self):
        cands = DIVERGING[:2]
        plan = plan_halving(2, full_run_iterations=100)
        v = Verification.from_rounds(
            cands, plan, [[CandidateResult(0, 20, 0.5), CandidateResult(1, 20, 0.4)]]
        )
        assert (v.rounds[0].fused, v.rounds[0].execution) == (None, "")
        data = v.to_dict()["rounds"][0]
        assert (data["fused"], data["execution"]) == (None, "")

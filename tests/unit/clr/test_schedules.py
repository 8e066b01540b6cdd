"""Tests of :mod:`clr.schedules`.

Oracles: ``torch.optim.lr_scheduler`` (CyclicLR, OneCycleLR, StepLR, ExponentialLR,
CosineAnnealingWarmRestarts) stepped side by side with ours, and the formulas of
Smith, "Cyclical Learning Rates for Training Neural Networks" (arXiv 1506.01186).
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from torch.optim import lr_scheduler as tls

from clr import schedules
from clr.exceptions import ScheduleError
from clr.schedules import (
    POLICIES,
    SCALE_FNS,
    SHAPES,
    ConstantSchedule,
    CosineWarmRestartsSchedule,
    CyclicLR,
    CyclicSchedule,
    ExponentialDecaySchedule,
    OneCycleSchedule,
    ScheduledLR,
    StepDecaySchedule,
    create_scheduler,
    cycle_at,
    cycle_end,
    cycle_length,
    make_schedule,
    recommend_step_size,
    register_scale_fn,
    total_iterations,
)

TOL = 1e-12
PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FEWER = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --------------------------------------------------------------------------- helpers


def make_optimizer(
    kind: str, lrs: list[float] | None = None, *, momentum: float = 0.5
) -> torch.optim.Optimizer:
    """A tiny optimizer with one param group per entry of ``lrs``."""
    lrs = [0.1] if lrs is None else lrs
    groups: list[dict[str, Any]] = [
        {"params": [torch.nn.Parameter(torch.zeros(2))], "lr": lr} for lr in lrs
    ]
    if kind == "sgd":
        return torch.optim.SGD(groups, lr=0.1, momentum=momentum)
    if kind == "rmsprop":
        return torch.optim.RMSprop(groups, lr=0.1, momentum=momentum)
    if kind == "adam":
        return torch.optim.Adam(groups, lr=0.1, betas=(0.5, 0.777))
    if kind == "adamw":
        return torch.optim.AdamW(groups, lr=0.1, betas=(0.5, 0.777))
    if kind == "adagrad":
        return torch.optim.Adagrad(groups, lr=0.1)
    raise AssertionError(kind)


def lrs_of(opt: torch.optim.Optimizer) -> list[float]:
    return [float(g["lr"]) for g in opt.param_groups]


def momenta_of(opt: torch.optim.Optimizer) -> list[float]:
    return [
        float(g["betas"][0]) if "betas" in g else float(g["momentum"]) for g in opt.param_groups
    ]


def assert_close(ours: list[float], theirs: list[float], what: str, step: int) -> None:
    assert len(ours) == len(theirs), (what, step)
    for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        assert math.isclose(a, b, rel_tol=TOL, abs_tol=TOL), (
            f"{what} of group {i} at step {step}: ours {a!r} != torch {b!r}"
        )


def run(opt: torch.optim.Optimizer, sched: Any, steps: int) -> Iterator[int]:
    """Yield after construction (step 0) and after each of ``steps`` scheduler steps.

    The optimizer steps once, before the first scheduler step: torch only checks
    the order then, and the parameters have no gradients anyway.
    """
    yield 0
    if steps:
        opt.step()
    for t in range(1, steps + 1):
        sched.step()
        yield t


def trajectory(
    opt: torch.optim.Optimizer, sched: Any, steps: int
) -> list[tuple[list[float], list[float]]]:
    return [(lrs_of(opt), momenta_of(opt)) for _ in run(opt, sched, steps)]


def paper_triangular(t: int, base: float, peak: float, stepsize: int) -> float:
    """Smith (2015), section 3.1, verbatim."""
    cycle = math.floor(1 + t / (2 * stepsize))
    x = abs(t / stepsize - 2 * cycle + 1)
    return base + (peak - base) * max(0.0, 1 - x)


def tutorial_cycle(t: int, stepsize: int) -> int:
    """The slip that circulates in tutorials: ``floor((1 + t) / (2 * stepsize))``."""
    return math.floor((1 + t) / (2 * stepsize))


def halve_per_cycle(x: float) -> float:
    """A torch-style one-argument scale function (a plain function)."""
    return float(0.5**x)


SCALE_FN_CHOICES: dict[str, Callable[[float], float] | None] = {
    "none": None,
    "halve": halve_per_cycle,
    "lambda": lambda x: 1.0 / (1.0 + 0.01 * x),
}


@pytest.fixture
def named_scale_fn() -> Iterator[str]:
    """Register a two-argument scale function for one test, then remove it."""
    name = "test_schedules_third_per_cycle"

    @register_scale_fn(name)
    def third(x: float, gamma: float) -> float:  # noqa: ARG001 - the registered signature
        return float((1 / 3) ** (x - 1))

    yield name
    SCALE_FNS.pop(name, None)


# --------------------------------------------------------------------------- 1. CyclicLR vs torch


@st.composite
def cyclic_configs(draw: st.DrawFn) -> dict[str, Any]:
    n = draw(st.integers(1, 3))
    base = [draw(st.floats(1e-5, 0.1)) for _ in range(n)]
    peak = [b + draw(st.floats(0.0, 1.0)) for b in base]
    per_group = draw(st.booleans())
    kwargs: dict[str, Any] = {
        "base_lr": base if per_group or n > 1 else base[0],
        "max_lr": peak if per_group or n > 1 else peak[0],
        "step_size_up": draw(st.integers(1, 50)),
        "step_size_down": draw(st.none() | st.integers(1, 50)),
        "mode": draw(st.sampled_from(["triangular", "triangular2", "exp_range"])),
        "gamma": draw(st.floats(0.9, 1.0, exclude_min=True)),
        "cycle_momentum": draw(st.booleans()),
    }
    if kwargs["cycle_momentum"]:
        base_m = [draw(st.floats(0.0, 0.9)) for _ in range(n)]
        max_m = [b + draw(st.floats(0.001, 0.09)) for b in base_m]
        kwargs["base_momentum"] = base_m if n > 1 else base_m[0]
        kwargs["max_momentum"] = max_m if n > 1 else max_m[0]
    scale = draw(st.sampled_from(sorted(SCALE_FN_CHOICES)))
    if scale != "none":
        kwargs["scale_fn"] = SCALE_FN_CHOICES[scale]
        kwargs["scale_mode"] = draw(st.sampled_from(["cycle", "iterations"]))
    return {
        "optimizer": draw(st.sampled_from(["sgd", "rmsprop", "adam", "adamw"])),
        "n_groups": n,
        "kwargs": kwargs,
    }


class TestCyclicLRMatchesTorch:
    @PROPERTY
    @given(config=cyclic_configs())
    def test_lr_momentum_and_last_lr_equal_torch_for_three_cycles(
        self, config: dict[str, Any]
    ) -> None:
        kwargs = config["kwargs"]
        lrs = [0.3] * config["n_groups"]
        opt_ours = make_optimizer(config["optimizer"], lrs)
        opt_torch = make_optimizer(config["optimizer"], lrs)
        ours = CyclicLR(opt_ours, **kwargs)
        theirs = tls.CyclicLR(opt_torch, **kwargs)
        up = kwargs["step_size_up"]
        down = kwargs["step_size_down"] or up
        steps = 3 * (up + down) + 1
        for t, _ in zip(run(opt_ours, ours, steps), run(opt_torch, theirs, steps), strict=True):
            assert_close(lrs_of(opt_ours), lrs_of(opt_torch), "lr", t)
            assert_close(momenta_of(opt_ours), momenta_of(opt_torch), "momentum", t)
            assert_close(
                [float(x) for x in ours.get_last_lr()],
                [float(x) for x in theirs.get_last_lr()],
                "get_last_lr",
                t,
            )
            if "betas" in opt_ours.param_groups[0]:
                assert [g["betas"][1] for g in opt_ours.param_groups] == [0.777] * len(lrs)
        assert ours.last_epoch == theirs.last_epoch == steps

    def test_first_value_is_base_lr_and_peak_is_max_lr_like_torch(self) -> None:
        opt_ours, opt_torch = make_optimizer("sgd"), make_optimizer("sgd")
        ours = CyclicLR(opt_ours, 0.001, 0.006, step_size_up=4, cycle_momentum=False)
        theirs = tls.CyclicLR(opt_torch, 0.001, 0.006, step_size_up=4, cycle_momentum=False)
        seq_ours = [lrs[0] for lrs, _ in trajectory(opt_ours, ours, 8)]
        seq_torch = [lrs[0] for lrs, _ in trajectory(opt_torch, theirs, 8)]
        expected = [0.001, 0.00225, 0.0035, 0.00475, 0.006, 0.00475, 0.0035, 0.00225, 0.001]
        assert seq_ours == pytest.approx(expected, abs=TOL)
        assert seq_torch == pytest.approx(expected, abs=TOL)

    def test_asymmetric_halves_rise_and_fall_at_their_own_rates(self) -> None:
        opt = make_optimizer("sgd")
        sched = CyclicLR(opt, 0.0, 1.0, step_size_up=2, step_size_down=4)
        seq = [lrs[0] for lrs, _ in trajectory(opt, sched, 7)]
        assert seq == pytest.approx([0.0, 0.5, 1.0, 0.75, 0.5, 0.25, 0.0, 0.5], abs=TOL)

    def test_per_group_bounds_drive_each_group(self) -> None:
        opt = make_optimizer("sgd", [0.1, 0.1])
        sched = CyclicLR(opt, [0.001, 0.01], [0.002, 0.05], step_size_up=2)
        seq = [lrs for lrs, _ in trajectory(opt, sched, 2)]
        assert seq[1] == pytest.approx([0.0015, 0.03], abs=TOL)
        assert seq[2] == pytest.approx([0.002, 0.05], abs=TOL)
        assert sched.base_lrs == [0.001, 0.01]
        assert sched.max_lrs == [0.002, 0.05]

    def test_tensor_lr_stays_a_tensor_like_torch(self) -> None:
        opt = make_optimizer("sgd", [0.1])
        opt.param_groups[0]["lr"] = torch.tensor(0.1)
        lr_tensor = opt.param_groups[0]["lr"]
        sched = CyclicLR(opt, 0.001, 0.006, step_size_up=2)
        assert opt.param_groups[0]["lr"] is lr_tensor
        assert float(lr_tensor) == pytest.approx(0.001, rel=1e-6)  # float32 tensor
        opt.step()
        sched.step()
        assert opt.param_groups[0]["lr"] is lr_tensor
        assert float(lr_tensor) == pytest.approx(0.0035, rel=1e-6)


# --------------------------------------------------------------------------- 2. paper formulas


class TestPaperFormula:
    @pytest.mark.parametrize("stepsize", [1, 2, 4, 7, 2000])
    def test_triangular_equals_paper_at_landmarks(self, stepsize: int) -> None:
        s = CyclicSchedule(base_lr=0.001, max_lr=0.006, step_size_up=stepsize)
        half = stepsize / 2
        landmarks = {
            0: 0.001,
            stepsize: 0.006,
            2 * stepsize: 0.001,
            3 * stepsize: 0.006,
            4 * stepsize: 0.001,
        }
        if stepsize % 2 == 0:
            landmarks |= {int(half): 0.0035, int(3 * half): 0.0035, int(5 * half): 0.0035}
        for t, expected in landmarks.items():
            assert s.lr_at(t) == pytest.approx(expected, abs=TOL), t
            assert paper_triangular(t, 0.001, 0.006, stepsize) == pytest.approx(expected, abs=TOL)

    @PROPERTY
    @given(
        stepsize=st.integers(1, 500),
        t=st.integers(0, 10_000),
        base=st.floats(0.0, 1.0),
        amplitude=st.floats(0.0, 1.0),
    )
    def test_triangular_equals_paper_everywhere(
        self, stepsize: int, t: int, base: float, amplitude: float
    ) -> None:
        s = CyclicSchedule(base_lr=base, max_lr=base + amplitude, step_size_up=stepsize)
        expected = paper_triangular(t, base, base + amplitude, stepsize)
        assert s.lr_at(t) == pytest.approx(expected, abs=1e-12)
        assert cycle_at(t, stepsize) == math.floor(1 + t / (2 * stepsize))

    @pytest.mark.parametrize("stepsize", [2, 5, 100])
    def test_tutorial_cycle_formula_disagrees_while_ours_matches_paper(self, stepsize: int) -> None:
        period = 2 * stepsize
        for k in (1, 2, 3):
            start, last = (k - 1) * period, k * period - 1
            # ours and the paper: cycle k spans [start, last] and begins at a multiple of 2*stepsize
            assert cycle_at(start, stepsize) == k
            assert cycle_at(last, stepsize) == k
            assert cycle_at(last + 1, stepsize) == k + 1
            # the tutorial's index changes one iteration early, at t = 2*stepsize*k - 1 ...
            assert tutorial_cycle(last, stepsize) - tutorial_cycle(last - 1, stepsize) == 1
            # ... and is off by one everywhere else in the cycle
            assert tutorial_cycle(start, stepsize) == k - 1 != cycle_at(start, stepsize)
        # Plugged into the paper's LR formula, the tutorial index loses the first peak.
        t_peak = stepsize
        c_bad = tutorial_cycle(t_peak, stepsize)
        bad = 0.001 + 0.005 * max(0.0, 1 - abs(t_peak / stepsize - 2 * c_bad + 1))
        assert bad == pytest.approx(0.001)
        assert CyclicSchedule(0.001, 0.006, step_size_up=stepsize).lr_at(t_peak) == 0.006

    def test_triangular2_amplitude_halves_each_cycle(self) -> None:
        s = CyclicSchedule(base_lr=0.1, max_lr=1.1, step_size_up=5, mode="triangular2")
        for k in range(1, 6):
            peak_t = 5 + 10 * (k - 1)
            assert s.lr_at(peak_t) == pytest.approx(0.1 + 1.0 / 2 ** (k - 1), abs=TOL), k
            assert s.lr_at(10 * k) == pytest.approx(0.1, abs=TOL), k
            # mid-ramp: half the cycle's amplitude
            assert s.lr_at(peak_t - 2) == pytest.approx(0.1 + 0.6 / 2 ** (k - 1), abs=TOL)

    @pytest.mark.parametrize("gamma", [0.99, 0.9994, 1.0])
    def test_exp_range_peak_scales_by_gamma_to_the_iteration(self, gamma: float) -> None:
        s = CyclicSchedule(base_lr=0.1, max_lr=1.1, step_size_up=50, mode="exp_range", gamma=gamma)
        for t in (50, 150, 250, 350):
            assert s.lr_at(t) == pytest.approx(0.1 + gamma**t, abs=TOL), t
        for t in (0, 25, 77, 199):  # everywhere: triangle times gamma ** t (not ** cycle)
            tri = (paper_triangular(t, 0.1, 1.1, 50) - 0.1) / 1.0
            assert s.lr_at(t) == pytest.approx(0.1 + tri * gamma**t, abs=TOL), t

    def test_exp_range_uses_iterations_not_cycles(self) -> None:
        s = CyclicSchedule(base_lr=0.0, max_lr=1.0, step_size_up=10, mode="exp_range", gamma=0.9)
        assert s.scale_mode == "iterations"
        assert s.lr_at(10) == pytest.approx(0.9**10, abs=TOL)
        assert s.lr_at(10) != pytest.approx(0.9**1)


# --------------------------------------------------------------------------- 3. window shapes


class TestWindowShapes:
    @pytest.mark.parametrize("shape", ["sine", "parabolic"])
    @pytest.mark.parametrize(("up", "down"), [(4, 4), (3, 7), (10, 2)])
    def test_shape_agrees_with_triangle_at_start_peak_and_cycle_end(
        self, shape: str, up: int, down: int
    ) -> None:
        kw: dict[str, Any] = {"base_lr": 0.01, "max_lr": 0.11, "step_size_up": up}
        kw["step_size_down"] = down
        tri, other = CyclicSchedule(**kw), CyclicSchedule(**kw, shape=shape)  # type: ignore[arg-type]
        total = up + down
        for t, expected in ((0, 0.01), (up, 0.11), (total, 0.01), (total + up, 0.11)):
            assert other.lr_at(t) == pytest.approx(expected, abs=TOL), t
            assert tri.lr_at(t) == pytest.approx(expected, abs=TOL), t

    @pytest.mark.parametrize(("up", "down"), [(4, 4), (3, 7), (10, 2)])
    def test_sine_and_parabolic_follow_the_triangle_height(self, up: int, down: int) -> None:
        base, amp = 0.01, 0.1
        kw: dict[str, Any] = {"base_lr": base, "max_lr": base + amp, "step_size_up": up}
        kw["step_size_down"] = down
        tri = CyclicSchedule(**kw)
        sine = CyclicSchedule(**kw, shape="sine")
        para = CyclicSchedule(**kw, shape="parabolic")
        strictly_inside = 0
        for t in range(2 * (up + down) + 1):
            f = (tri.lr_at(t) - base) / amp
            s_val, p_val = sine.lr_at(t), para.lr_at(t)
            assert s_val == pytest.approx(base + amp * (1 - math.cos(math.pi * f)) / 2, abs=TOL)
            assert p_val == pytest.approx(base + amp * f * (2 - f), abs=TOL)
            for v in (s_val, p_val):
                assert base - TOL <= v <= base + amp + TOL
            assert p_val >= tri.lr_at(t) - TOL  # Welch bulges above the triangle
            if 0 < f < 0.5:
                strictly_inside += 1
                assert s_val < tri.lr_at(t)  # Hann starts slower than the triangle
        assert strictly_inside > 0

    def test_cycliclr_shape_argument_reaches_the_optimizer(self) -> None:
        opt = make_optimizer("sgd")
        sched = CyclicLR(opt, 0.0, 1.0, step_size_up=4, shape="sine")
        seq = [lrs[0] for lrs, _ in trajectory(opt, sched, 8)]
        expected = [(1 - math.cos(math.pi * f)) / 2 for f in (0, 0.25, 0.5, 0.75, 1)]
        assert seq[:5] == pytest.approx(expected, abs=TOL)
        assert seq[4:] == pytest.approx(expected[::-1], abs=TOL)

    def test_shape_applies_to_momentum_too(self) -> None:
        opt = make_optimizer("sgd")
        sched = CyclicLR(
            opt, 0.0, 1.0, step_size_up=4, shape="parabolic", base_momentum=0.8, max_momentum=0.9
        )
        traj = trajectory(opt, sched, 4)
        f = 0.25
        assert traj[1][0][0] == pytest.approx(f * (2 - f), abs=TOL)
        assert traj[1][1][0] == pytest.approx(0.9 - 0.1 * f * (2 - f), abs=TOL)
        assert traj[4][1][0] == pytest.approx(0.8, abs=TOL)


# --------------------------------------------------------------------------- 4. state_dict


def _cyclic_kwargs(mode: str, shape: str, cycle_momentum: bool) -> dict[str, Any]:
    kw: dict[str, Any] = {
        "base_lr": [0.001, 0.002],
        "max_lr": [0.01, 0.03],
        "step_size_up": 5,
        "step_size_down": 3,
        "mode": mode,
        "gamma": 0.97,
        "shape": shape,
        "cycle_momentum": cycle_momentum,
    }
    if cycle_momentum:
        kw |= {"base_momentum": [0.8, 0.7], "max_momentum": [0.9, 0.95]}
    return kw


class TestStateDict:
    @FEWER
    @given(
        mode=st.sampled_from(["triangular", "triangular2", "exp_range"]),
        shape=st.sampled_from(SHAPES),
        cycle_momentum=st.booleans(),
        kind=st.sampled_from(["sgd", "adam"]),
        n_before=st.integers(0, 30),
        n_after=st.integers(1, 30),
    )
    def test_resume_from_state_dict_equals_uninterrupted_run(
        self, mode: str, shape: str, cycle_momentum: bool, kind: str, n_before: int, n_after: int
    ) -> None:
        kw = _cyclic_kwargs(mode, shape, cycle_momentum)
        opt_ref = make_optimizer(kind, [0.1, 0.1])
        reference = trajectory(opt_ref, CyclicLR(opt_ref, **kw), n_before + n_after)

        opt_a = make_optimizer(kind, [0.1, 0.1])
        first = CyclicLR(opt_a, **kw)
        for _ in run(opt_a, first, n_before):
            pass
        state = json.loads(json.dumps(first.state_dict()))

        opt_b = make_optimizer(kind, [0.1, 0.1])
        second = CyclicLR(opt_b, **kw)
        second.load_state_dict(state)
        assert second.last_epoch == n_before
        for t in range(1, n_after + 1):
            opt_b.step()
            second.step()
            lrs, moms = reference[n_before + t]
            assert_close(lrs_of(opt_b), lrs, "lr", n_before + t)
            assert_close(momenta_of(opt_b), moms, "momentum", n_before + t)
            assert_close([float(x) for x in second.get_last_lr()], lrs, "last_lr", n_before + t)

    def test_state_dict_is_json_serialisable_and_holds_the_configuration(self) -> None:
        opt = make_optimizer("sgd", [0.1, 0.1])
        sched = CyclicLR(opt, **_cyclic_kwargs("triangular2", "sine", True))
        state = sched.state_dict()
        assert json.loads(json.dumps(state)) == state
        assert state["cycle_momentum"] is True
        assert [c["max_lr"] for c in state["schedules"]] == [0.01, 0.03]
        assert state["schedules"][1]["shape"] == "sine"
        assert state["schedules"][0]["mode"] == "triangular2"
        assert state["schedules"][0]["step_size_down"] == 3

    def test_load_restores_bounds_into_a_differently_built_scheduler(self) -> None:
        opt_a = make_optimizer("sgd")
        a = CyclicLR(opt_a, 0.001, 0.01, step_size_up=4)
        for _ in run(opt_a, a, 3):
            pass
        opt_b = make_optimizer("sgd")
        b = CyclicLR(opt_b, 0.5, 0.9, step_size_up=100)
        b.load_state_dict(a.state_dict())
        opt_a.step()
        a.step()
        opt_b.step()
        b.step()
        assert lrs_of(opt_b) == pytest.approx(lrs_of(opt_a), abs=TOL)
        assert lrs_of(opt_b) == pytest.approx([0.01], abs=TOL)  # t = 4 is the peak
        assert b.max_lrs == [0.01]
        assert b.step_size_up == 4

    @pytest.mark.parametrize("by", ["name", "callable"])
    def test_named_scale_fn_survives_state_dict_by_name(self, named_scale_fn: str, by: str) -> None:
        fn: Any = named_scale_fn if by == "name" else SCALE_FNS[named_scale_fn]
        kw: dict[str, Any] = {"base_lr": 0.0, "max_lr": 0.9, "step_size_up": 3}
        opt_ref = make_optimizer("sgd")
        reference = trajectory(opt_ref, CyclicLR(opt_ref, **kw, scale_fn=fn), 20)
        assert reference[9][0] == pytest.approx([0.9 / 3], abs=TOL)  # second peak, a third

        opt_a = make_optimizer("sgd")
        first = CyclicLR(opt_a, **kw, scale_fn=fn)
        for _ in run(opt_a, first, 8):
            pass
        state = first.state_dict()
        assert state["schedules"][0]["scale_fn"] == named_scale_fn
        state = json.loads(json.dumps(state))

        opt_b = make_optimizer("sgd")
        second = CyclicLR(opt_b, **kw)  # built without it: the name alone restores it
        second.load_state_dict(state)
        for t in range(9, 21):
            opt_b.step()
            second.step()
            assert_close(lrs_of(opt_b), reference[t][0], "lr", t)

    def test_torch_loses_a_plain_scale_function_ours_keeps_a_named_one(
        self, named_scale_fn: str
    ) -> None:
        def third(x: float) -> float:
            return float((1 / 3) ** (x - 1))

        kw: dict[str, Any] = {"base_lr": 0.0, "max_lr": 0.9, "step_size_up": 3}
        kw["cycle_momentum"] = False
        peak_of_cycle_2 = 9  # 0.9 / 3 with the scale function, 0.9 without it

        opt_t = make_optimizer("sgd")
        torch_sched = tls.CyclicLR(opt_t, **kw, scale_fn=third)
        for _ in run(opt_t, torch_sched, 6):
            pass
        torch_state = torch_sched.state_dict()
        assert torch_state["_scale_fn_custom"] is None  # the function is gone
        opt_t2 = make_optimizer("sgd")
        torch_resumed = tls.CyclicLR(opt_t2, **kw)
        torch_resumed.load_state_dict(torch_state)
        for _ in range(peak_of_cycle_2 - 6):
            opt_t2.step()
            torch_resumed.step()
        assert lrs_of(opt_t2) == pytest.approx([0.9], abs=TOL)  # silently lost the decay

        opt_o = make_optimizer("sgd")
        ours = CyclicLR(opt_o, **kw, scale_fn=named_scale_fn)
        for _ in run(opt_o, ours, 6):
            pass
        opt_o2 = make_optimizer("sgd")
        ours_resumed = CyclicLR(opt_o2, **kw)
        ours_resumed.load_state_dict(json.loads(json.dumps(ours.state_dict())))
        for _ in range(peak_of_cycle_2 - 6):
            opt_o2.step()
            ours_resumed.step()
        assert lrs_of(opt_o2) == pytest.approx([0.3], abs=TOL)

    def test_unnamed_scale_fn_is_saved_as_none_and_kept_from_the_constructor(self) -> None:
        kw: dict[str, Any] = {"base_lr": 0.0, "max_lr": 1.0, "step_size_up": 2}
        kw["scale_fn"] = halve_per_cycle
        opt_a = make_optimizer("sgd")
        a = CyclicLR(opt_a, **kw)
        for _ in run(opt_a, a, 3):
            pass
        state = a.state_dict()
        assert state["schedules"][0]["scale_fn"] is None
        json.dumps(state)
        opt_b = make_optimizer("sgd")
        b = CyclicLR(opt_b, **kw)
        b.load_state_dict(state)
        for _ in range(3):  # to t = 6, the peak of cycle 2: 0.5 ** 2
            opt_b.step()
            b.step()
        assert lrs_of(opt_b) == pytest.approx([0.25], abs=TOL)

    def test_load_with_unknown_scale_fn_name_raises_and_changes_nothing(self) -> None:
        opt = make_optimizer("sgd")
        sched = CyclicLR(opt, 0.001, 0.01, step_size_up=4)
        state = sched.state_dict()
        state["schedules"][0]["scale_fn"] = "no_such_scale_fn"
        state["last_epoch"] = 77
        with pytest.raises(ScheduleError, match="no_such_scale_fn"):
            sched.load_state_dict(state)
        assert sched.last_epoch == 0
        assert sched.schedules[0] == CyclicSchedule(0.001, 0.01, step_size_up=4)

    def test_scheduledlr_state_dict_round_trip(self) -> None:
        schedule = StepDecaySchedule(lr=0.1, step_size=3, gamma=0.5)
        opt_a = make_optimizer("sgd")
        a = ScheduledLR(opt_a, schedule)
        for _ in run(opt_a, a, 5):
            pass
        opt_b = make_optimizer("sgd")
        b = ScheduledLR(opt_b, schedule)
        b.load_state_dict(json.loads(json.dumps(a.state_dict())))
        opt_b.step()
        b.step()
        assert b.last_epoch == 6
        assert lrs_of(opt_b) == pytest.approx([0.025], abs=TOL)

    def test_state_dict_does_not_deep_copy_a_scale_fn_owner(self) -> None:
        class Owner:
            def __init__(self) -> None:
                self.lock = __import__("threading").Lock()  # not deep-copyable

            def scale(self, x: float) -> float:
                return float(0.5**x)

        owner = Owner()
        opt = make_optimizer("sgd")
        sched = CyclicLR(opt, 0.0, 1.0, step_size_up=2, scale_fn=owner.scale)
        state = sched.state_dict()
        assert state["schedules"][0]["scale_fn"] is None
        assert json.loads(json.dumps(state))["last_epoch"] == 0

    def test_loading_a_momentum_cycling_state_cycles_adam_beta1(self) -> None:
        opt_a = torch.optim.Adam([torch.nn.Parameter(torch.zeros(2))], lr=0.1)
        cycling = CyclicLR(opt_a, 0.01, 0.1, step_size_up=4, base_momentum=0.8, max_momentum=0.95)
        state = json.loads(json.dumps(cycling.state_dict()))
        opt_b = torch.optim.Adam([torch.nn.Parameter(torch.zeros(2))], lr=0.1)
        plain = CyclicLR(opt_b, 0.01, 0.1, step_size_up=4)  # built without momentum bounds
        plain.load_state_dict(state)
        opt_b.step()
        plain.step()
        assert "momentum" not in opt_b.param_groups[0]
        assert opt_b.param_groups[0]["betas"][0] == pytest.approx(0.95 - 0.15 * 0.25)
        assert opt_b.param_groups[0]["betas"][1] == 0.999

    def test_loading_a_momentum_cycling_state_into_adagrad_is_refused(self) -> None:
        opt_a = torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=0.1, momentum=0.9)
        state = CyclicLR(opt_a, 0.01, 0.1, cycle_momentum=True).state_dict()
        opt_b = torch.optim.Adagrad([torch.nn.Parameter(torch.zeros(2))], lr=0.1)
        plain = CyclicLR(opt_b, 0.01, 0.1)
        with pytest.raises(ScheduleError, match="neither momentum nor betas"):
            plain.load_state_dict(state)


# --------------------------------------------------------------------------- 5. momentum defaults


class TestMomentumDefaults:
    def test_no_momentum_args_leave_the_optimizers_momentum_alone(self) -> None:
        opt = make_optimizer("sgd", momentum=0.5)
        sched = CyclicLR(opt, 0.001, 0.01, step_size_up=3)
        assert sched.cycle_momentum is False
        for _ in run(opt, sched, 7):
            assert momenta_of(opt) == [0.5]

    def test_torch_default_overwrites_the_optimizers_momentum(self) -> None:
        opt = make_optimizer("sgd", momentum=0.5)
        tls.CyclicLR(opt, 0.001, 0.01, step_size_up=3)  # the trap ours avoids
        assert momenta_of(opt) == [0.9]

    @pytest.mark.parametrize("kind", ["sgd", "adam"])
    def test_cycle_momentum_true_without_bounds_uses_torch_defaults(self, kind: str) -> None:
        opt_o, opt_t = make_optimizer(kind), make_optimizer(kind)
        ours = CyclicLR(opt_o, 0.001, 0.01, step_size_up=3, cycle_momentum=True)
        theirs = tls.CyclicLR(opt_t, 0.001, 0.01, step_size_up=3, cycle_momentum=True)
        traj_o, traj_t = trajectory(opt_o, ours, 6), trajectory(opt_t, theirs, 6)
        assert [m[0] for _, m in traj_o] == pytest.approx([m[0] for _, m in traj_t], abs=TOL)
        assert traj_o[0][1] == pytest.approx([0.9], abs=TOL)
        assert traj_o[3][1] == pytest.approx([0.8], abs=TOL)

    def test_cycle_momentum_true_with_one_bound_fills_the_other_like_torch(self) -> None:
        opt_o, opt_t = make_optimizer("sgd"), make_optimizer("sgd")
        kw: dict[str, Any] = {"step_size_up": 2, "cycle_momentum": True, "base_momentum": 0.7}
        ours, theirs = CyclicLR(opt_o, 0.001, 0.01, **kw), tls.CyclicLR(opt_t, 0.001, 0.01, **kw)
        traj_o, traj_t = trajectory(opt_o, ours, 4), trajectory(opt_t, theirs, 4)
        assert [m[0] for _, m in traj_o] == pytest.approx([m[0] for _, m in traj_t], abs=TOL)
        assert traj_o[2][1] == pytest.approx([0.7], abs=TOL)
        assert traj_o[0][1] == pytest.approx([0.9], abs=TOL)

    def test_bounds_alone_turn_momentum_cycling_on(self) -> None:
        opt = make_optimizer("rmsprop")
        sched = CyclicLR(opt, 0.001, 0.01, step_size_up=2, base_momentum=0.6, max_momentum=0.8)
        assert sched.cycle_momentum is True
        traj = trajectory(opt, sched, 4)
        assert [m[0] for _, m in traj] == pytest.approx([0.8, 0.7, 0.6, 0.7, 0.8], abs=TOL)

    def test_cycle_momentum_false_ignores_bounds(self) -> None:
        opt = make_optimizer("sgd", momentum=0.5)
        sched = CyclicLR(
            opt,
            0.001,
            0.01,
            step_size_up=2,
            cycle_momentum=False,
            base_momentum=0.6,
            max_momentum=0.8,
        )
        for _ in run(opt, sched, 4):
            assert momenta_of(opt) == [0.5]

    @pytest.mark.parametrize("kind", ["adam", "adamw"])
    def test_beta1_cycling_touches_only_betas0(self, kind: str) -> None:
        opt = make_optimizer(kind, [0.1, 0.1])
        sched = CyclicLR(
            opt, 0.001, 0.01, step_size_up=2, base_momentum=[0.85, 0.6], max_momentum=0.95
        )
        expected0 = [0.95, 0.9, 0.85, 0.9, 0.95]
        expected1 = [0.95, 0.775, 0.6, 0.775, 0.95]
        for t in run(opt, sched, 4):
            betas = [g["betas"] for g in opt.param_groups]
            assert [b[1] for b in betas] == [0.777, 0.777]
            assert [len(b) for b in betas] == [2, 2]
            assert betas[0][0] == pytest.approx(expected0[t], abs=TOL)
            assert betas[1][0] == pytest.approx(expected1[t], abs=TOL)
            assert "momentum" not in opt.param_groups[0]


# --------------------------------------------------------------------------- 6. validation


def _cyclic(**overrides: Any) -> CyclicLR:
    kw: dict[str, Any] = {"base_lr": 0.001, "max_lr": 0.01, "step_size_up": 4}
    kw |= overrides
    kind = kw.pop("kind", "sgd")
    n = kw.pop("n_groups", 1)
    return CyclicLR(make_optimizer(kind, [0.1] * n), **kw)


class TestValidation:
    @pytest.mark.parametrize("bad", [0, -1, 1.5, float("nan"), float("inf"), "4", True, None])
    def test_step_size_up_must_be_a_positive_integer(self, bad: Any) -> None:
        with pytest.raises(ScheduleError, match="step_size_up"):
            _cyclic(step_size_up=bad)

    @pytest.mark.parametrize("bad", [0, -3, 2.5])
    def test_step_size_down_must_be_a_positive_integer(self, bad: Any) -> None:
        with pytest.raises(ScheduleError, match="step_size_down"):
            _cyclic(step_size_down=bad)

    def test_integral_float_step_size_is_accepted_as_an_int(self) -> None:
        sched = _cyclic(step_size_up=4.0, step_size_down=2.0)
        assert (sched.step_size_up, sched.step_size_down) == (4, 2)
        assert type(sched.step_size_up) is int

    def test_max_lr_below_base_lr_is_rejected(self) -> None:
        with pytest.raises(ScheduleError, match="max_lr"):
            _cyclic(base_lr=0.01, max_lr=0.001)

    @pytest.mark.parametrize(
        ("name", "bad"),
        [("base_lr", -0.1), ("base_lr", float("nan")), ("max_lr", float("nan"))]
        + [("max_lr", float("inf")), ("base_lr", "0.1")],
    )
    def test_negative_or_non_finite_lr_is_rejected(self, name: str, bad: Any) -> None:
        with pytest.raises(ScheduleError, match=name):
            _cyclic(**{name: bad})

    def test_schedule_error_is_a_value_error(self) -> None:
        with pytest.raises(ValueError, match="step_size_up"):
            _cyclic(step_size_up=0)

    def test_unknown_mode_is_rejected(self) -> None:
        with pytest.raises(ScheduleError, match="mode"):
            _cyclic(mode="triangle")

    def test_unknown_mode_is_fine_with_a_scale_fn_like_torch(self) -> None:
        sched = _cyclic(mode="whatever", scale_fn=halve_per_cycle)
        assert sched.schedules[0].lr_at(4) == pytest.approx(0.001 + 0.009 * 0.5, abs=TOL)

    def test_unknown_shape_is_rejected(self) -> None:
        with pytest.raises(ScheduleError, match="shape"):
            _cyclic(shape="square")

    @pytest.mark.parametrize("bad", [0.0, -0.5, float("nan"), True])
    def test_bad_gamma_is_rejected(self, bad: Any) -> None:
        with pytest.raises(ScheduleError, match="gamma"):
            _cyclic(mode="exp_range", gamma=bad)

    def test_bad_scale_mode_is_rejected(self) -> None:
        with pytest.raises(ScheduleError, match="scale_mode"):
            _cyclic(scale_fn=halve_per_cycle, scale_mode="epochs")

    def test_unregistered_scale_fn_name_is_rejected(self) -> None:
        with pytest.raises(ScheduleError, match="scale_fn"):
            _cyclic(scale_fn="not_registered")

    def test_non_callable_scale_fn_is_rejected(self) -> None:
        with pytest.raises(ScheduleError, match="scale_fn"):
            CyclicSchedule(0.001, 0.01, scale_fn=3)  # type: ignore[arg-type]

    @pytest.mark.parametrize(
        ("given", "missing"),
        [({"base_momentum": 0.8}, "max_momentum"), ({"max_momentum": 0.9}, "base_momentum")],
    )
    def test_one_momentum_bound_without_the_other(
        self, given: dict[str, Any], missing: str
    ) -> None:
        with pytest.raises(ScheduleError, match=missing):
            _cyclic(**given)
        with pytest.raises(ScheduleError, match="base_momentum and max_momentum"):
            CyclicSchedule(0.001, 0.01, **given)

    @pytest.mark.parametrize(("name", "bad"), [("base_momentum", 1.0), ("max_momentum", -0.1)])
    def test_momentum_out_of_range_is_rejected(self, name: str, bad: float) -> None:
        kw = {"base_momentum": 0.8, "max_momentum": 0.9} | {name: bad}
        with pytest.raises(ScheduleError, match=name):
            _cyclic(**kw)

    @pytest.mark.parametrize("name", ["base_lr", "max_lr", "base_momentum", "max_momentum"])
    def test_per_group_list_of_wrong_length(self, name: str) -> None:
        kw: dict[str, Any] = {"n_groups": 2, "base_momentum": 0.8, "max_momentum": 0.9}
        kw[name] = [0.001, 0.002, 0.003] if "lr" in name else [0.8, 0.85, 0.9]
        if name == "max_lr":
            kw[name] = [0.1, 0.1, 0.1]
        with pytest.raises(ScheduleError, match=name):
            _cyclic(**kw)

    def test_adagrad_has_neither_momentum_nor_betas(self) -> None:
        opt = make_optimizer("adagrad")
        assert "momentum" not in opt.defaults
        assert "betas" not in opt.defaults

    def test_cycle_momentum_needs_momentum_or_betas_and_leaves_groups_alone(self) -> None:
        opt = make_optimizer("adagrad")
        with pytest.raises(ScheduleError, match="cycle_momentum"):
            CyclicLR(opt, 0.001, 0.01, step_size_up=4, cycle_momentum=True)
        assert lrs_of(opt) == [0.1]
        assert "initial_lr" not in opt.param_groups[0]
        with pytest.raises(ScheduleError, match="cycle_momentum"):
            ScheduledLR(opt, OneCycleSchedule(max_lr=0.1, total_steps=10), cycle_momentum=True)

    def test_adagrad_without_momentum_cycling_is_fine(self) -> None:
        opt = make_optimizer("adagrad")
        sched = CyclicLR(opt, 0.001, 0.01, step_size_up=4)
        opt.step()
        sched.step()
        assert lrs_of(opt) == pytest.approx([0.00325], abs=TOL)

    def test_non_optimizer_is_a_type_error(self) -> None:
        with pytest.raises(TypeError, match="Optimizer"):
            CyclicLR(object(), 0.001, 0.01)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- 7. other policies


class TestOtherPolicies:
    @pytest.mark.parametrize(
        ("kwargs", "message"),
        [
            ({"pct_start": "a"}, "pct_start must be a number in"),
            ({"pct_start": 1.0, "total_steps": 1}, "leaves a phase with no steps"),
            ({"pct_start": 0.25, "total_steps": 4}, "leaves a phase with no steps"),
        ],
    )
    def test_one_cycle_rejects_phases_torch_would_divide_by_zero_on(
        self, kwargs: dict[str, Any], message: str
    ) -> None:
        with pytest.raises(ScheduleError, match=message):
            OneCycleSchedule(**{"max_lr": 1.0, "total_steps": 100, **kwargs})

    @PROPERTY
    @given(
        total_steps=st.integers(2, 300),
        pct_start=st.floats(0.05, 0.95),
        anneal=st.sampled_from(["cos", "linear"]),
        three_phase=st.booleans(),
        div_factor=st.floats(1.0, 100.0),
        final_div_factor=st.floats(1.0, 1e4),
        max_lr=st.lists(st.floats(1e-4, 1.0), min_size=1, max_size=2),
        kind=st.sampled_from(["sgd", "adam"]),
    )
    def test_one_cycle_equals_torch_one_cycle_lr(
        self,
        total_steps: int,
        pct_start: float,
        anneal: str,
        three_phase: bool,
        div_factor: float,
        final_div_factor: float,
        max_lr: list[float],
        kind: str,
    ) -> None:
        end1 = float(pct_start * total_steps) - 1
        end2 = float(2 * pct_start * total_steps) - 2
        assume(end1 > 0)  # zero-length phases divide by zero in torch
        assume((end2 - end1 > 0 and total_steps - 1 - end2 > 0) if three_phase else True)
        assume(total_steps - 1 - end1 > 0)
        common: dict[str, Any] = {
            "total_steps": total_steps,
            "pct_start": pct_start,
            "anneal_strategy": anneal,
            "three_phase": three_phase,
            "div_factor": div_factor,
            "final_div_factor": final_div_factor,
        }
        opt_o = make_optimizer(kind, [0.1] * len(max_lr))
        opt_t = make_optimizer(kind, [0.1] * len(max_lr))
        ours = ScheduledLR(
            opt_o, [OneCycleSchedule(max_lr=m, **common) for m in max_lr], cycle_momentum=True
        )
        theirs = tls.OneCycleLR(opt_t, max_lr=max_lr, **common)
        # torch allows last_epoch == total_steps (one past the end) and raises after it
        for t, _ in zip(
            run(opt_o, ours, total_steps), run(opt_t, theirs, total_steps), strict=True
        ):
            assert_close(lrs_of(opt_o), lrs_of(opt_t), "lr", t)
            assert_close(momenta_of(opt_o), momenta_of(opt_t), "momentum", t)
        with pytest.raises(ValueError, match="total_steps|total steps"):
            theirs.step()
        with pytest.raises(ScheduleError, match="total_steps"):
            ours.step()

    def test_one_cycle_landmarks(self) -> None:
        # pct_start * total_steps - 1 = 24: warm-up ends at step 24, annealing at 99.
        s = OneCycleSchedule(max_lr=1.0, total_steps=100, pct_start=0.25, div_factor=10)
        assert s.lr_at(0) == pytest.approx(0.1, abs=TOL)
        assert s.momentum_at(0) == pytest.approx(0.95, abs=TOL)
        assert s.lr_at(12) == pytest.approx(0.55, abs=TOL)  # half-way up the cosine
        assert s.momentum_at(12) == pytest.approx(0.9, abs=TOL)
        assert s.lr_at(24) == pytest.approx(1.0, abs=TOL)
        assert s.momentum_at(24) == pytest.approx(0.85, abs=TOL)
        assert s.lr_at(99) == pytest.approx(0.1 / 1e4, abs=TOL)
        assert s.momentum_at(99) == pytest.approx(0.95, abs=TOL)
        linear = OneCycleSchedule(1.0, 100, pct_start=0.25, anneal_strategy="linear")
        assert linear.lr_at(12) == pytest.approx(0.04 + 0.96 / 2, abs=TOL)

    def test_one_cycle_without_momentum(self) -> None:
        s = OneCycleSchedule(max_lr=1.0, total_steps=10, base_momentum=None, max_momentum=None)
        assert s.momentum_at(3) is None
        opt = make_optimizer("sgd", momentum=0.5)
        for _ in run(opt, ScheduledLR(opt, s, cycle_momentum=True), 5):
            assert momenta_of(opt) == [0.5]

    @pytest.mark.parametrize(
        ("kw", "name"),
        [
            ({"pct_start": 1.5}, "pct_start"),
            ({"anneal_strategy": "step"}, "anneal_strategy"),
            ({"div_factor": 0.0}, "div_factor"),
            ({"final_div_factor": -1.0}, "final_div_factor"),
            ({"total_steps": 0}, "total_steps"),
            ({"max_momentum": None}, "base_momentum and max_momentum"),
        ],
    )
    def test_one_cycle_validation(self, kw: dict[str, Any], name: str) -> None:
        args: dict[str, Any] = {"max_lr": 0.1, "total_steps": 10} | kw
        with pytest.raises(ScheduleError, match=name):
            OneCycleSchedule(**args)

    @PROPERTY
    @given(
        lr=st.floats(1e-4, 1.0),
        step_size=st.integers(1, 20),
        gamma=st.floats(0.05, 1.0),
        steps=st.integers(1, 120),
    )
    def test_step_decay_equals_torch_step_lr(
        self, lr: float, step_size: int, gamma: float, steps: int
    ) -> None:
        opt_o, opt_t = make_optimizer("sgd", [lr]), make_optimizer("sgd", [lr])
        ours = ScheduledLR(opt_o, StepDecaySchedule(lr=lr, step_size=step_size, gamma=gamma))
        theirs = tls.StepLR(opt_t, step_size=step_size, gamma=gamma)
        for t, _ in zip(run(opt_o, ours, steps), run(opt_t, theirs, steps), strict=True):
            assert_close(lrs_of(opt_o), lrs_of(opt_t), "lr", t)
            assert_close(lrs_of(opt_o), [lr * gamma ** (t // step_size)], "closed form", t)

    @PROPERTY
    @given(lr=st.floats(1e-4, 1.0), gamma=st.floats(0.9, 1.0), steps=st.integers(1, 150))
    def test_exponential_decay_equals_torch_exponential_lr(
        self, lr: float, gamma: float, steps: int
    ) -> None:
        opt_o, opt_t = make_optimizer("sgd", [lr]), make_optimizer("sgd", [lr])
        ours = ScheduledLR(opt_o, ExponentialDecaySchedule(lr=lr, gamma=gamma))
        theirs = tls.ExponentialLR(opt_t, gamma=gamma)
        for t, _ in zip(run(opt_o, ours, steps), run(opt_t, theirs, steps), strict=True):
            assert_close(lrs_of(opt_o), lrs_of(opt_t), "lr", t)

    @PROPERTY
    @given(
        max_lr=st.floats(1e-3, 1.0),
        t_0=st.integers(1, 20),
        t_mult=st.sampled_from([1, 2, 3]),
        eta_frac=st.floats(0.0, 0.5),
        steps=st.integers(1, 150),
    )
    def test_cosine_restarts_equal_torch_warm_restarts(
        self, max_lr: float, t_0: int, t_mult: int, eta_frac: float, steps: int
    ) -> None:
        eta_min = max_lr * eta_frac
        opt_o, opt_t = make_optimizer("sgd", [max_lr]), make_optimizer("sgd", [max_lr])
        ours = ScheduledLR(
            opt_o,
            CosineWarmRestartsSchedule(max_lr=max_lr, T_0=t_0, T_mult=t_mult, eta_min=eta_min),
        )
        theirs = tls.CosineAnnealingWarmRestarts(opt_t, T_0=t_0, T_mult=t_mult, eta_min=eta_min)
        for t, _ in zip(run(opt_o, ours, steps), run(opt_t, theirs, steps), strict=True):
            assert_close(lrs_of(opt_o), lrs_of(opt_t), "lr", t)

    @pytest.mark.parametrize("t_mult", [1, 2])
    def test_cosine_restart_peaks_decay_geometrically(self, t_mult: int) -> None:
        s = CosineWarmRestartsSchedule(max_lr=0.8, T_0=4, T_mult=t_mult, decay=0.5)
        start = 0
        for i in range(5):
            length = 4 * t_mult**i
            assert s.position(start) == (i, 0, length)
            assert s.lr_at(start) == pytest.approx(0.8 * 0.5**i, abs=TOL), i
            # half-way through the restart: half the peak (eta_min = 0)
            assert s.lr_at(start + length // 2) == pytest.approx(0.4 * 0.5**i, abs=TOL), i
            start += length

    def test_constant_schedule_is_constant(self) -> None:
        s = ConstantSchedule(0.05)
        assert [s.lr_at(t) for t in (0, 1, 10**6)] == [0.05, 0.05, 0.05]
        assert s.momentum_at(3) is None
        opt = make_optimizer("sgd", momentum=0.5)
        for _ in run(opt, ScheduledLR(opt, s), 5):
            assert lrs_of(opt) == [0.05]
            assert momenta_of(opt) == [0.5]

    @pytest.mark.parametrize(
        ("factory", "name"),
        [
            (lambda: ConstantSchedule(-1.0), "lr"),
            (lambda: StepDecaySchedule(0.1, step_size=0), "step_size"),
            (lambda: ExponentialDecaySchedule(0.1, gamma=float("nan")), "gamma"),
            (lambda: CosineWarmRestartsSchedule(0.1, T_0=0), "T_0"),
            (lambda: CosineWarmRestartsSchedule(0.1, T_0=5, T_mult=0), "T_mult"),
            (lambda: CosineWarmRestartsSchedule(0.1, T_0=5, decay=1.5), "decay"),
        ],
    )
    def test_other_schedules_validate(self, factory: Callable[[], object], name: str) -> None:
        with pytest.raises(ScheduleError, match=name):
            factory()


# --------------------------------------------------------------------------- 8. helpers


class TestHelpers:
    def test_cycle_length(self) -> None:
        assert cycle_length(2000) == 4000
        assert cycle_length(3, 5) == 8
        with pytest.raises(ScheduleError, match="step_size_down"):
            cycle_length(3, 0)

    def test_cycle_at(self) -> None:
        assert [cycle_at(t, 2) for t in (0, 3, 4, 7, 8)] == [1, 1, 2, 2, 3]
        assert [cycle_at(t, 2, 1) for t in (0, 2, 3, 5, 6)] == [1, 1, 2, 2, 3]
        with pytest.raises(ScheduleError, match="step_size_up"):
            cycle_at(0, 0)

    def test_cycle_end_is_the_last_iteration_of_the_cycle(self) -> None:
        assert cycle_end(3, step_size_up=100) == 599
        assert cycle_end(1, 2, 3) == 4
        s = CyclicSchedule(0.001, 0.006, step_size_up=100)
        end = cycle_end(3, 100)
        assert cycle_at(end, 100) == 3
        assert cycle_at(end + 1, 100) == 4
        assert s.lr_at(end + 1) == pytest.approx(0.001, abs=TOL)
        with pytest.raises(ScheduleError, match="k"):
            cycle_end(0, 100)

    def test_total_iterations(self) -> None:
        assert total_iterations(4, step_size_up=100) == 800
        assert total_iterations(2, 3, 5) == 16
        with pytest.raises(ScheduleError, match="n_cycles"):
            total_iterations(0, 100)

    def test_recommend_step_size(self) -> None:
        assert recommend_step_size(500) == 2000  # 4 epochs by default, the paper's CIFAR-10
        assert recommend_step_size(500, 2) == 1000
        assert recommend_step_size(391, 2.5) == 978
        assert recommend_step_size(3, 0.1) == 1

    @pytest.mark.parametrize(
        ("args", "name"),
        [
            ((0,), "iters_per_epoch"),
            ((-5,), "iters_per_epoch"),
            ((10.5,), "iters_per_epoch"),
            ((100, 0), "epochs_per_half_cycle"),
            ((100, -1), "epochs_per_half_cycle"),
            ((100, float("nan")), "epochs_per_half_cycle"),
            ((100, True), "epochs_per_half_cycle"),
        ],
    )
    def test_recommend_step_size_rejects_bad_inputs(self, args: tuple[Any, ...], name: str) -> None:
        with pytest.raises(ScheduleError, match=name):
            recommend_step_size(*args)

    POLICY_CASES: dict[str, tuple[dict[str, Any], type, int, float]] = {
        "fixed": ({"lr": 0.05}, ConstantSchedule, 7, 0.05),
        "step": ({"lr": 0.1, "step_size": 5, "gamma": 0.5}, StepDecaySchedule, 10, 0.025),
        "exp": ({"lr": 0.1, "gamma": 0.5}, ExponentialDecaySchedule, 3, 0.0125),
        "triangular": (
            {"base_lr": 0.001, "max_lr": 0.01, "step_size_up": 10},
            CyclicSchedule,
            30,
            0.01,
        ),
        "triangular2": (
            {"base_lr": 0.001, "max_lr": 0.01, "step_size_up": 10},
            CyclicSchedule,
            30,
            0.001 + 0.009 / 2,
        ),
        "exp_range": (
            {"base_lr": 0.0, "max_lr": 1.0, "step_size_up": 10, "gamma": 0.9},
            CyclicSchedule,
            10,
            0.9**10,
        ),
        "one_cycle": ({"max_lr": 1.0, "total_steps": 100}, OneCycleSchedule, 0, 0.04),
        "cosine_restarts": (
            {"max_lr": 1.0, "T_0": 10, "decay": 0.5},
            CosineWarmRestartsSchedule,
            10,
            0.5,
        ),
    }

    def test_policy_cases_cover_every_policy(self) -> None:
        assert set(self.POLICY_CASES) == set(POLICIES)

    @pytest.mark.parametrize("policy", POLICIES)
    def test_make_schedule_for_every_policy(self, policy: str) -> None:
        kwargs, cls, t, expected = self.POLICY_CASES[policy]
        schedule = make_schedule(policy, **kwargs)
        assert type(schedule) is cls
        assert schedule.lr_at(t) == pytest.approx(expected, abs=TOL)
        if cls is CyclicSchedule:
            assert schedule.mode == policy  # type: ignore[attr-defined]

    def test_make_schedule_bad_keyword_names_the_policy(self) -> None:
        with pytest.raises(ScheduleError, match="'step'"):
            make_schedule("step", lr=0.1, step_size=2, momentum=0.9)

    def test_make_schedule_unknown_policy(self) -> None:
        with pytest.raises(ScheduleError, match="policy"):
            make_schedule("cosine", lr=0.1)

    def test_create_scheduler_unknown_policy_names_policy(self) -> None:
        with pytest.raises(ScheduleError, match="policy.*'nope'"):
            create_scheduler(make_optimizer("sgd"), "nope", lr=0.1)

    def test_create_scheduler_cycles_momentum_only_when_the_policy_has_it(self) -> None:
        opt = make_optimizer("sgd", momentum=0.5)
        sched = create_scheduler(opt, "one_cycle", max_lr=1.0, total_steps=10)
        assert isinstance(sched, ScheduledLR)
        assert sched.cycle_momentum is True
        assert momenta_of(opt) == pytest.approx([0.95], abs=TOL)
        assert lrs_of(opt) == pytest.approx([0.04], abs=TOL)

        opt2 = make_optimizer("sgd", momentum=0.5)
        create_scheduler(opt2, "triangular", base_lr=0.001, max_lr=0.01, step_size_up=5)
        assert momenta_of(opt2) == [0.5]
        assert lrs_of(opt2) == pytest.approx([0.001], abs=TOL)

        opt3 = make_optimizer("sgd", momentum=0.5)
        create_scheduler(opt3, "one_cycle", max_lr=1.0, total_steps=10, cycle_momentum=False)
        assert momenta_of(opt3) == [0.5]

    def test_create_scheduler_cycle_momentum_true_without_momentum_raises(self) -> None:
        with pytest.raises(ScheduleError, match="cycle_momentum"):
            create_scheduler(make_optimizer("sgd"), "fixed", lr=0.1, cycle_momentum=True)

    def test_scheduledlr_with_one_schedule_per_group(self) -> None:
        opt = make_optimizer("sgd", [0.1, 0.1, 0.1])
        per_group: list[schedules.Schedule] = [
            ConstantSchedule(0.05),
            StepDecaySchedule(0.1, step_size=2, gamma=0.5),
            CyclicSchedule(0.0, 1.0, step_size_up=2),
        ]
        sched = ScheduledLR(opt, per_group)
        assert sched.schedules == per_group
        traj = [lrs for lrs, _ in trajectory(opt, sched, 4)]
        assert traj == [
            pytest.approx([0.05, 0.1, 0.0], abs=TOL),
            pytest.approx([0.05, 0.1, 0.5], abs=TOL),
            pytest.approx([0.05, 0.05, 1.0], abs=TOL),
            pytest.approx([0.05, 0.05, 0.5], abs=TOL),
            pytest.approx([0.05, 0.025, 0.0], abs=TOL),
        ]
        assert sched.get_lr() == pytest.approx([0.05, 0.025, 0.0], abs=TOL)

    def test_scheduledlr_schedule_list_of_wrong_length(self) -> None:
        with pytest.raises(ScheduleError, match="schedules"):
            ScheduledLR(make_optimizer("sgd", [0.1, 0.1]), [ConstantSchedule(0.1)])

    def test_register_scale_fn_rejects_a_second_function_under_a_taken_name(self) -> None:
        with pytest.raises(ScheduleError, match="triangular"):
            register_scale_fn("triangular")(lambda x, gamma: 1.0)  # noqa: ARG005
        assert SCALE_FNS["triangular"] is schedules._triangular_scale
        with pytest.raises(ScheduleError, match="name"):
            register_scale_fn("")

    def test_cycle_method_and_step_sizes(self) -> None:
        opt = make_optimizer("sgd")
        sched = CyclicLR(opt, 0.001, 0.01, step_size_up=3, step_size_down=2)
        assert (sched.step_size_up, sched.step_size_down) == (3, 2)
        cycles = [sched.cycle() for _ in run(opt, sched, 11)]
        assert cycles == [1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 3, 3]


# --------------------------------------------------------------------------- 9. protocol


class TestLRSchedulerProtocol:
    def test_is_an_lr_scheduler(self) -> None:
        sched = _cyclic()
        assert isinstance(sched, tls.LRScheduler)
        assert isinstance(
            ScheduledLR(make_optimizer("sgd"), ConstantSchedule(0.1)), tls.LRScheduler
        )

    def test_stepping_emits_no_warnings_even_before_optimizer_step(self) -> None:
        opt = make_optimizer("sgd")
        sched = CyclicLR(opt, 0.001, 0.01, step_size_up=2, cycle_momentum=True)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for _ in range(10):
                sched.step()  # no optimizer.step(): torch warns here, ours does not
            sched.get_lr()
            sched.get_last_lr()
            sched.step(3)
        assert caught == []
        assert sched.last_epoch == 3
        assert lrs_of(opt) == pytest.approx([0.0055], abs=TOL)

    def test_torch_warns_in_the_same_situation(self) -> None:
        opt = make_optimizer("sgd")
        theirs = tls.CyclicLR(opt, 0.001, 0.01, step_size_up=2, cycle_momentum=True)
        with pytest.warns(UserWarning, match="optimizer.step"):
            theirs.step()

    @pytest.mark.parametrize("resume_at", [0, 3, 10, 17])
    @pytest.mark.parametrize("kind", ["sgd", "adam"])
    def test_resume_via_last_epoch_matches_torch(self, resume_at: int, kind: str) -> None:
        kw: dict[str, Any] = {
            "base_lr": [0.001, 0.002],
            "max_lr": [0.01, 0.02],
            "step_size_up": 4,
            "step_size_down": 3,
            "mode": "triangular2",
            "cycle_momentum": True,
            "base_momentum": 0.8,
            "max_momentum": 0.9,
        }
        opt_ref = make_optimizer(kind, [0.1, 0.1])
        reference = trajectory(opt_ref, tls.CyclicLR(opt_ref, **kw), resume_at + 10)

        # Optimizers as restored from a checkpoint: a first scheduler left ``initial_lr``.
        opt_o, opt_t = make_optimizer(kind, [0.1, 0.1]), make_optimizer(kind, [0.1, 0.1])
        CyclicLR(opt_o, **kw)
        tls.CyclicLR(opt_t, **kw)
        assert [g["initial_lr"] for g in opt_o.param_groups] == [0.001, 0.002]
        for opt in (opt_o, opt_t):
            for g in opt.param_groups:  # whatever the checkpoint left: overwritten on resume
                g["lr"] = 0.5
                if kind == "sgd":
                    g["momentum"] = 0.1
                else:
                    g["betas"] = (0.1, 0.777)
        ours = CyclicLR(opt_o, **kw, last_epoch=resume_at)
        theirs = tls.CyclicLR(opt_t, **kw, last_epoch=resume_at)
        assert ours.last_epoch == theirs.last_epoch == resume_at + 1
        assert ours.base_lrs == theirs.base_lrs == [0.001, 0.002]
        for t, _ in zip(run(opt_o, ours, 8), run(opt_t, theirs, 8), strict=True):
            assert_close(lrs_of(opt_o), lrs_of(opt_t), "lr", t)
            assert_close(momenta_of(opt_o), momenta_of(opt_t), "momentum", t)
            assert_close(lrs_of(opt_o), reference[resume_at + 1 + t][0], "uninterrupted", t)

    def test_resume_via_last_epoch_uses_base_lr_not_initial_lr(self) -> None:
        opt = make_optimizer("sgd")
        opt.param_groups[0]["initial_lr"] = 0.5  # stale: from a different schedule
        sched = CyclicLR(opt, 0.0, 1.0, step_size_up=4, last_epoch=1)
        assert sched.last_epoch == 2
        assert lrs_of(opt) == pytest.approx([0.5], abs=TOL)  # t = 2: half-way up from 0.0
        assert sched.base_lrs == [0.0]
        opt.step()
        sched.step()
        assert lrs_of(opt) == pytest.approx([0.75], abs=TOL)

    def test_resume_via_last_epoch_without_initial_lr_raises_like_torch(self) -> None:
        with pytest.raises(KeyError, match="initial_lr"):
            tls.CyclicLR(make_optimizer("sgd"), 0.001, 0.01, last_epoch=5)
        with pytest.raises(KeyError, match="initial_lr"):
            CyclicLR(make_optimizer("sgd"), 0.001, 0.01, last_epoch=5)

    def test_step_with_epoch_jumps_like_closed_form(self) -> None:
        opt = make_optimizer("sgd")
        sched = CyclicLR(opt, 0.0, 1.0, step_size_up=4)
        sched.step(6)
        assert lrs_of(opt) == pytest.approx([0.5], abs=TOL)
        sched.step()
        assert sched.last_epoch == 7
        assert lrs_of(opt) == pytest.approx([0.25], abs=TOL)

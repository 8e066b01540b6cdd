"""clr.policies: the torch-free schedule math, cycle ends and run lengths."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from clr import policies, schedules
from clr.exceptions import ScheduleError
from clr.policies import (
    CYCLIC_POLICIES,
    POLICIES,
    ConstantSchedule,
    CosineWarmRestartsSchedule,
    CyclicSchedule,
    ExponentialDecaySchedule,
    OneCycleSchedule,
    StepDecaySchedule,
    cycle_ends,
    make_schedule,
    schedule_length,
)

CLR_KW: dict[str, Any] = {"base_lr": 0.001, "max_lr": 0.006, "step_size_up": 5}


class TestTorchFree:
    def test_importing_policies_and_validating_loads_no_torch(self) -> None:
        code = (
            "import json, sys\n"
            "import clr\n"
            "from clr.policies import make_schedule, schedule_length, cycle_ends\n"
            "s = clr.make_schedule('triangular', base_lr=0.001, max_lr=0.01, step_size_up=5)\n"
            "n = clr.schedule_length('exp_range', cycles=2, base_lr=0.001, max_lr=0.01,"
            " step_size_up=5, gamma=0.99)\n"
            "print(json.dumps({'n': n, 'ends': cycle_ends(s, 30),"
            " 'torch': sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')),"
            " 'numpy': 'numpy' in sys.modules}))\n"
        )
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=60
        )
        assert done.returncode == 0, done.stderr
        report = json.loads(done.stdout)
        assert report == {"n": 20, "ends": [10, 20, 30], "torch": [], "numpy": False}

    def test_schedules_reexports_the_same_objects(self) -> None:
        for name in policies.__all__:
            assert getattr(schedules, name) is getattr(policies, name), name


class TestCycleEnds:
    @pytest.mark.parametrize(
        ("schedule", "iterations", "expected"),
        [
            (CyclicSchedule(**CLR_KW), 35, [10, 20, 30]),
            (CyclicSchedule(**CLR_KW, step_size_down=7), 36, [12, 24, 36]),
            (CyclicSchedule(**CLR_KW, mode="triangular2"), 9, []),
            (CyclicSchedule(**CLR_KW, mode="exp_range", gamma=0.9), 20, [10, 20]),
            (CosineWarmRestartsSchedule(max_lr=0.1, T_0=10), 35, [10, 20, 30]),
            (CosineWarmRestartsSchedule(max_lr=0.1, T_0=4, T_mult=3), 60, [4, 16, 52]),
            (OneCycleSchedule(max_lr=0.1, total_steps=50), 50, [50]),
            (OneCycleSchedule(max_lr=0.1, total_steps=50), 49, []),
            (ConstantSchedule(0.1), 100, []),
            (StepDecaySchedule(lr=0.1, step_size=10), 100, []),
            (ExponentialDecaySchedule(lr=0.1, gamma=0.99), 100, []),
        ],
    )
    def test_ends_by_policy(self, schedule: Any, iterations: int, expected: list[int]) -> None:
        assert cycle_ends(schedule, iterations) == expected

    @pytest.mark.parametrize("policy", ["triangular", "triangular2", "exp_range"])
    def test_lr_is_back_at_base_at_every_end(self, policy: str) -> None:
        s = make_schedule(policy, **CLR_KW, gamma=0.95)
        for end in cycle_ends(s, 60):
            assert s.lr_at(end) == pytest.approx(CLR_KW["base_lr"], abs=1e-15)
            assert s.lr_at(end - 1) > CLR_KW["base_lr"]

    def test_sgdr_restarts_at_every_end(self) -> None:
        # the last iteration of a period has its lowest LR; the warm restart follows the end
        s = CosineWarmRestartsSchedule(max_lr=0.1, T_0=4, T_mult=2, eta_min=0.001)
        start = 0
        for end in cycle_ends(s, 100):
            period = [s.lr_at(t) for t in range(start, end)]
            assert min(period) == period[-1] < period[-2]
            assert s.lr_at(end) == pytest.approx(0.1)
            start = end
        assert start == 60

    def test_a_user_schedule_names_its_own_ends(self) -> None:
        class Every7(ConstantSchedule):
            def cycle_ends(self) -> Any:
                return iter(range(7, 10**9, 7))

        assert cycle_ends(Every7(0.1), 30) == [7, 14, 21, 28]

    @pytest.mark.parametrize("bad", [-1, 2.5, True, "10"])
    def test_bad_iterations_are_named(self, bad: Any) -> None:
        with pytest.raises(ScheduleError, match="iterations must be a non-negative integer"):
            cycle_ends(ConstantSchedule(0.1), bad)


class TestScheduleLength:
    def test_cycles(self) -> None:
        assert schedule_length("triangular", cycles=3, **CLR_KW) == 30
        assert schedule_length("triangular2", cycles=4, **CLR_KW, step_size_down=15) == 80
        assert schedule_length("cosine_restarts", cycles=3, max_lr=0.1, T_0=4, T_mult=2) == 28
        assert schedule_length("one_cycle", cycles=1, max_lr=0.1, total_steps=40) == 40

    def test_iterations_and_epochs_on_a_cycle_end(self) -> None:
        assert schedule_length("triangular", iterations=40, **CLR_KW) == 40
        assert schedule_length("triangular", epochs=4, iters_per_epoch=5, **CLR_KW) == 20
        assert schedule_length("one_cycle", max_lr=0.1, total_steps=40) == 40

    def test_mid_cycle_needs_whole_cycles_off(self) -> None:
        with pytest.raises(ScheduleError, match=r"iterations=25 ends mid-cycle.*20 and 30"):
            schedule_length("triangular", iterations=25, **CLR_KW)
        with pytest.raises(ScheduleError, match=r"epochs=3 \(21 iterations\) ends mid-cycle"):
            schedule_length("triangular", epochs=3, iters_per_epoch=7, **CLR_KW)
        with pytest.raises(ScheduleError, match=r"iterations=5 ends mid-cycle.*at 10 iter"):
            schedule_length("exp_range", iterations=5, **CLR_KW, gamma=0.99)
        with pytest.raises(ScheduleError, match=r"iterations=30 ends mid-cycle.*28 and 60"):
            schedule_length("cosine_restarts", iterations=30, max_lr=0.1, T_0=4, T_mult=2)
        with pytest.raises(ScheduleError, match=r"iterations=39 ends mid-cycle.*at 40 iter"):
            schedule_length("one_cycle", iterations=39, max_lr=0.1, total_steps=40)
        assert schedule_length("triangular", iterations=25, whole_cycles=False, **CLR_KW) == 25
        assert (
            schedule_length(
                "one_cycle", iterations=39, whole_cycles=False, max_lr=0.1, total_steps=40
            )
            == 39
        )

    @pytest.mark.parametrize("policy", [p for p in POLICIES if p not in CYCLIC_POLICIES])
    def test_policies_without_cycles(self, policy: str) -> None:
        kwargs: dict[str, Any] = {"fixed": {"lr": 0.1}, "step": {"lr": 0.1, "step_size": 10}}.get(
            policy, {"lr": 0.1, "gamma": 0.99}
        )
        assert schedule_length(policy, iterations=33, **kwargs) == 33
        assert schedule_length(policy, epochs=3, iters_per_epoch=11, **kwargs) == 33
        with pytest.raises(ScheduleError, match=f"cycles is only for.*{policy!r} has no cycles"):
            schedule_length(policy, cycles=2, **kwargs)
        with pytest.raises(ScheduleError, match="needs a length: give iterations or epochs"):
            schedule_length(policy, **kwargs)

    @pytest.mark.parametrize(
        ("kwargs", "match"),
        [
            ({"cycles": 0}, "cycles must be a positive integer, got 0"),
            ({"cycles": 1.5}, "cycles must be a positive integer"),
            ({"iterations": -3}, "iterations must be a positive integer"),
            ({"iterations": True}, "iterations must be a positive integer"),
            ({"epochs": 2}, "iters_per_epoch is required with epochs"),
            ({"epochs": 2, "iters_per_epoch": 0}, "iters_per_epoch must be a positive integer"),
            ({"epochs": 0, "iters_per_epoch": 5}, "epochs must be a positive integer"),
            ({"cycles": 2, "iterations": 20}, "give one of cycles, iterations or epochs"),
            ({"whole_cycles": "yes", "cycles": 1}, "whole_cycles must be true or false"),
            ({}, "policy 'triangular' needs a length: give cycles, iterations or epochs"),
        ],
    )
    def test_bad_lengths_are_named(self, kwargs: dict[str, Any], match: str) -> None:
        with pytest.raises(ScheduleError, match=match):
            schedule_length("triangular", **kwargs, **CLR_KW)

    def test_bad_schedules_are_named(self) -> None:
        with pytest.raises(ScheduleError, match="max_lr must be >= base_lr"):
            schedule_length("triangular", cycles=1, base_lr=0.1, max_lr=0.01, step_size_up=5)
        with pytest.raises(ScheduleError, match="step_size_up must be a positive integer"):
            schedule_length("triangular", cycles=1, base_lr=0.1, max_lr=1, step_size_up=0)
        with pytest.raises(ScheduleError, match="policy must be one of"):
            schedule_length("zigzag", cycles=1)
        with pytest.raises(ScheduleError, match="cycles must be at most 1 for policy 'one_cycle'"):
            schedule_length("one_cycle", cycles=2, max_lr=0.1, total_steps=40)
        with pytest.raises(ScheduleError, match="past the one-cycle total_steps=40"):
            schedule_length("one_cycle", iterations=41, max_lr=0.1, total_steps=40)

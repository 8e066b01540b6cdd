"""A sweep before it runs (its spec and expansion) and after (its table, result and plot)."""

from __future__ import annotations

import math
import statistics
import uuid
from typing import Any

import pytest
from pydantic import ValidationError

from clr.policies import POLICIES, make_schedule
from clr.workloads import get_workload
from core.specs import STORED, RangeTestSpec, field_errors
from core.sweeps import (
    MAX_GRID_POINTS,
    ChildRun,
    NoBounds,
    RangeTestOptions,
    SweepBounds,
    SweepResult,
    SweepSpec,
    build_result,
    build_table,
    choose_bounds,
    grid_points,
    range_test_spec,
    render_sweep_plot,
    schedule_for,
    sweep_plot_panels,
    training_specs,
)
from core.training import TrainingSpec


def sweep(**overrides: Any) -> SweepSpec:
    return SweepSpec.model_validate({"workload": "digits_mlp", **overrides})


def refused(**overrides: Any) -> list[dict[str, str]]:
    with pytest.raises(ValidationError) as caught:
        sweep(**overrides)
    return list(field_errors(caught.value))


def bounds(**overrides: Any) -> SweepBounds:
    data: dict[str, Any] = {
        "base_lr": 0.02,
        "max_lr": 0.08,
        "step_size": 10,
        "fixed_lr": 0.04,
        "iterations": 80,
        "cycles": 4,
        "method": "max_fraction",
        "fixed_lr_from": "steepest",
    }
    data.update(overrides)
    return SweepBounds.model_validate(data)


def suggestion(method: str, base_lr: float, max_lr: float) -> dict[str, Any]:
    return {"method": method, "base_lr": base_lr, "max_lr": max_lr, "rationale": "r"}


def range_test_outcome(*, steepest: float | None = 0.03, step_size: int | None = 88) -> dict:
    items = [suggestion("max_fraction", 0.02, 0.08)]
    if steepest is not None:
        items.append(suggestion("steepest", steepest / 4, steepest))
    return {
        "summary": {
            "stop_reason": "completed",
            "stop_detail": "",
            "steps_run": 300,
            "seconds": 1.0,
            "device": "cpu",
            "start_lr": 1e-5,
            "end_lr": 10.0,
            "num_iter": 300,
            "sweep": "exp",
            "smoothing": 0.95,
            "diverge_th": 5.0,
        },
        "suggestions": {
            "default_method": "max_fraction",
            "default": items[0],
            "items": items,
            "confidence": 0.9,
            "noise": 0.01,
            "step_size": step_size,
        },
    }


class TestSpecDefaults:
    def test_compares_the_papers_policies_over_three_seeds(self) -> None:
        spec = sweep()
        assert spec.policies == list(POLICIES)
        assert spec.seeds == [0, 1, 2]
        assert spec.verify is True
        assert spec.verify_budget == RangeTestSpec.model_fields["verify_budget"].default

    def test_the_range_tests_seed_is_the_first_seed(self) -> None:
        assert sweep(seeds=[7, 3]).seed == 7
        assert sweep(seeds=[7, 3], seed=5).seed == 5

    def test_counts_a_range_test_and_every_training_per_grid_point(self) -> None:
        spec = sweep(seeds=[1, 2], policies=["fixed", "triangular2"], grid={"batch_size": [32, 64]})
        assert spec.total_steps() == 2 * (1 + 2 * 2)

    def test_range_test_options_take_the_range_tests_defaults(self) -> None:
        for name, field in RangeTestOptions.model_fields.items():
            assert field.default == RangeTestSpec.model_fields[name].default, name

    def test_a_stored_spec_reads_back_equal(self) -> None:
        spec = sweep(grid={"batch_size": [32, 64]}, seeds=[5, 6])
        stored = spec.model_dump(mode="json")
        assert SweepSpec.model_validate(stored, context={STORED: True}) == spec

    def test_has_no_estimate_of_its_own(self) -> None:
        assert sweep().estimate() is None

    def test_config_key_covers_the_spec(self) -> None:
        assert sweep().config_key() == sweep().config_key()
        assert sweep().config_key() != sweep(seeds=[0, 1]).config_key()


class TestSpecRefusals:
    def test_empty_policies_names_policies(self) -> None:
        errors = refused(policies=[])
        assert [e["field"] for e in errors] == ["policies"]
        assert "at least one policy" in errors[0]["reason"]

    def test_unknown_policy_names_its_index(self) -> None:
        errors = refused(policies=["fixed", "warmup"])
        assert [e["field"] for e in errors] == ["policies.1"]

    def test_a_repeated_policy_names_the_repeat(self) -> None:
        errors = refused(policies=["fixed", "triangular", "fixed"])
        assert errors == [{"field": "policies.2", "reason": "'fixed' is given twice"}]

    def test_iterations_not_whole_cycles_names_iterations(self) -> None:
        errors = refused(iterations=700, step_size=88)
        assert [e["field"] for e in errors] == ["iterations"]
        assert "528 or 704" in errors[0]["reason"]

    def test_iterations_not_whole_cycles_pass_without_whole_cycles(self) -> None:
        assert sweep(iterations=700, step_size=88, whole_cycles=False).iterations == 700

    def test_odd_iterations_hold_no_whole_cycles(self) -> None:
        assert [e["field"] for e in refused(iterations=701)] == ["iterations"]

    def test_a_single_iteration_names_iterations(self) -> None:
        # its range test (verify_iterations >= 2) would be refused after the 202
        errors = refused(iterations=1, whole_cycles=False)
        assert [e["field"] for e in errors] == ["iterations"]

    def test_cycles_and_iterations_are_one_or_the_other(self) -> None:
        assert [e["field"] for e in refused(cycles=3, iterations=600)] == ["iterations"]

    def test_a_budget_over_the_longest_training_names_step_size(self) -> None:
        errors = refused(step_size=200_000)
        assert [e["field"] for e in errors] == ["step_size"]

    def test_a_grid_over_the_maximum_names_grid(self) -> None:
        sizes = [8, 16, 32, 64, 128]
        errors = refused(grid={"batch_size": sizes, "weight_decay": [0, 1e-4, 1e-3, 1e-2]})
        assert [e["field"] for e in errors] == ["grid"]
        assert f"over {MAX_GRID_POINTS}" in errors[0]["reason"]

    def test_too_many_trainings_name_grid(self) -> None:
        grid = {"batch_size": [16, 32, 64, 128], "weight_decay": [0, 1e-4, 1e-3, 1e-2]}
        errors = refused(grid=grid, seeds=list(range(10)))
        assert [e["field"] for e in errors] == ["grid"]
        assert "1280 trainings" in errors[0]["reason"]

    def test_a_bad_grid_batch_size_names_its_index(self) -> None:
        errors = refused(grid={"batch_size": [32, 0]})
        assert [e["field"] for e in errors] == ["grid.batch_size.1"]

    def test_a_repeated_grid_value_names_it(self) -> None:
        errors = refused(grid={"weight_decay": [0.0, 1e-4, 1e-4]})
        assert [e["field"] for e in errors] == ["grid.weight_decay.2"]

    def test_repeated_seeds_name_the_repeat(self) -> None:
        assert [e["field"] for e in refused(seeds=[3, 3])] == ["seeds.1"]

    def test_too_many_seeds_name_seeds(self) -> None:
        assert [e["field"] for e in refused(seeds=list(range(11)))] == ["seeds"]

    def test_a_backwards_range_names_the_range_tests_end_lr(self) -> None:
        errors = refused(range_test={"start_lr": 1.0, "end_lr": 0.5})
        assert [e["field"] for e in errors] == ["range_test.end_lr"]


class TestGridPoints:
    def test_without_a_grid_the_spec_is_the_one_point(self) -> None:
        [point] = grid_points(sweep(batch_size=32))
        assert (point.index, point.batch_size, point.label) == (0, 32, "bs=32 sgd wd=0")

    def test_is_the_cartesian_product_in_order(self) -> None:
        grid = {
            "batch_size": [32, 64],
            "optimizer": [{"name": "sgd"}, {"name": "adamw"}],
            "weight_decay": [0.0, 5e-4],
        }
        points = grid_points(sweep(grid=grid))
        assert [p.index for p in points] == list(range(8))
        assert points[0].label == "bs=32 sgd wd=0"
        assert points[3].label == "bs=32 adamw wd=0.0005"
        assert points[3].optimizer.weight_decay == 5e-4
        assert points[7].label == "bs=64 adamw wd=0.0005"

    def test_range_test_spec_is_a_valid_range_test_of_the_point(self) -> None:
        spec = sweep(grid={"batch_size": [32]}, seeds=[4, 5], range_test={"num_iter": 50})
        body = range_test_spec(spec, grid_points(spec)[0])
        parsed = RangeTestSpec.model_validate(body)
        assert (parsed.batch_size, parsed.seed, parsed.num_iter) == (32, 4, 50)
        assert parsed.seeds is None

    def test_range_tests_under_seeds_take_them_and_their_first_as_seed(self) -> None:
        spec = sweep(seeds=[4, 5], range_test={"num_iter": 50, "seeds": [7, 8, 9]})
        assert spec.seed == 7  # the range tests' seed; the trainings keep theirs
        assert spec.seeds == [4, 5]
        parsed = RangeTestSpec.model_validate(range_test_spec(spec, grid_points(spec)[0]))
        assert (parsed.seed, parsed.seeds) == (7, [7, 8, 9])
        stored = spec.model_dump(mode="json")
        assert SweepSpec.model_validate(stored, context={STORED: True}) == spec

    @pytest.mark.parametrize(
        ("overrides", "field", "reason"),
        [
            ({"range_test": {"seeds": [7, 7]}}, "range_test.seeds.1", "7 is given twice"),
            ({"range_test": {"seeds": [7]}}, "range_test.seeds", "give 2 to 16 seeds, got 1"),
            ({"range_test": {"seeds": [7, 8]}, "seed": 8}, "seed", "range_test.seeds[0] = 7"),
        ],
    )
    def test_bad_range_test_seeds_name_their_field(
        self, overrides: dict[str, Any], field: str, reason: str
    ) -> None:
        [error] = refused(**overrides)
        assert error["field"] == field
        assert reason in error["reason"]


class TestChooseBounds:
    def point_and_spec(self, **overrides: Any) -> tuple[SweepSpec, Any]:
        spec = sweep(**overrides)
        return spec, grid_points(spec)[0]

    def test_takes_the_default_suggestion_and_its_step_size(self) -> None:
        spec, point = self.point_and_spec()
        chosen = choose_bounds(spec, point, range_test_outcome())
        assert (chosen.base_lr, chosen.max_lr, chosen.method) == (0.02, 0.08, "max_fraction")
        assert (chosen.step_size, chosen.iterations, chosen.cycles) == (88, 4 * 2 * 88, 4)
        assert chosen.verified is False

    def test_fixed_lr_is_steepest_clipped_into_the_bounds(self) -> None:
        spec, point = self.point_and_spec()
        assert choose_bounds(spec, point, range_test_outcome(steepest=0.03)).fixed_lr == 0.03
        assert choose_bounds(spec, point, range_test_outcome(steepest=0.005)).fixed_lr == 0.02
        assert choose_bounds(spec, point, range_test_outcome(steepest=0.5)).fixed_lr == 0.08

    def test_without_steepest_fixed_lr_is_the_geometric_mean(self) -> None:
        spec, point = self.point_and_spec()
        chosen = choose_bounds(spec, point, range_test_outcome(steepest=None))
        assert chosen.fixed_lr == pytest.approx(0.04)
        assert chosen.fixed_lr_from == "geometric_mean"

    def test_a_given_fixed_lr_wins(self) -> None:
        spec, point = self.point_and_spec(fixed_lr=0.1)
        assert choose_bounds(spec, point, range_test_outcome()).fixed_lr == 0.1

    def test_verified_bounds_win(self) -> None:
        spec, point = self.point_and_spec()
        chosen = choose_bounds(spec, point, range_test_outcome(), verified=(0.05, 0.2))
        assert (chosen.base_lr, chosen.max_lr, chosen.verified) == (0.05, 0.2, True)

    def test_without_a_recommendation_the_step_size_is_four_epochs(self) -> None:
        spec, point = self.point_and_spec(batch_size=32)
        chosen = choose_bounds(spec, point, range_test_outcome(step_size=None))
        workload = get_workload("digits_mlp")
        per_epoch = workload.iters_per_epoch(workload.validate_params({"batch_size": 32}))
        assert per_epoch is not None
        assert chosen.step_size == 4 * per_epoch

    def test_iterations_without_step_size_take_the_nearest_whole_cycles(self) -> None:
        spec, point = self.point_and_spec(iterations=1000)
        chosen = choose_bounds(spec, point, range_test_outcome())
        assert (chosen.step_size, chosen.iterations, chosen.cycles) == (100, 1000, 5)

    def test_a_range_test_without_bounds_gives_none(self) -> None:
        spec, point = self.point_and_spec()
        outcome = {**range_test_outcome(), "suggestions": None, "no_bounds_reason": "flat"}
        with pytest.raises(NoBounds, match="flat"):
            choose_bounds(spec, point, outcome)


class TestTrainingSpecs:
    def test_every_policy_and_seed_at_the_same_budget(self) -> None:
        spec = sweep(seeds=[0, 1])
        trainings = training_specs(spec, grid_points(spec)[0], bounds())
        roles = [(r["policy"], r["seed"]) for r, _ in trainings]
        assert roles == [(p, s) for p in POLICIES for s in (0, 1)]
        lengths = {TrainingSpec.model_validate(body).iteration_count() for _, body in trainings}
        assert lengths == {80}

    def test_cyclic_policies_end_on_the_budgets_cycle_ends(self) -> None:
        spec = sweep(seeds=[0])
        for role, body in training_specs(spec, grid_points(spec)[0], bounds()):
            ends = TrainingSpec.model_validate(body).cycle_ends()
            if role["policy"] in ("triangular", "triangular2", "exp_range", "cosine_restarts"):
                assert ends == [20, 40, 60, 80], role
            elif role["policy"] == "one_cycle":
                assert ends == [80]

    def test_the_trainings_train_the_points_configuration(self) -> None:
        spec = sweep(grid={"batch_size": [32], "optimizer": [{"name": "adamw"}]}, seeds=[9])
        _, body = training_specs(spec, grid_points(spec)[0], bounds())[0]
        parsed = TrainingSpec.model_validate(body)
        assert (parsed.batch_size, parsed.optimizer.name, parsed.seed) == (32, "adamw", 9)

    @pytest.mark.parametrize(
        ("policy", "step", "expected"),
        [
            ("fixed", 79, 0.04),
            ("step", 0, 0.08),
            ("step", 79, 0.02),  # decayed twice, to base_lr
            ("exp", 80, 0.02),  # ends at base_lr
            ("triangular", 10, 0.08),
            ("one_cycle", 0, 0.02),  # starts at base_lr
            ("cosine_restarts", 0, 0.08),
        ],
    )
    def test_each_policy_uses_the_bounds(self, policy: str, step: int, expected: float) -> None:
        schedule = schedule_for(policy, bounds())
        args = {k: v for k, v in schedule.items() if k != "policy"}
        assert make_schedule(policy, **args).lr_at(step) == pytest.approx(expected)

    def test_exp_ranges_amplitude_halves_every_cycle(self) -> None:
        args = {k: v for k, v in schedule_for("exp_range", bounds()).items() if k != "policy"}
        s = make_schedule("exp_range", **args)
        first, second = s.lr_at(10) - 0.02, s.lr_at(30) - 0.02
        assert second / first == pytest.approx(0.5)


# --------------------------------------------------------------------------- the table


def training(
    policy: str,
    seed: int,
    curve: list[float],
    *,
    grid: int = 0,
    status: str = "succeeded",
    every: int = 10,
) -> ChildRun:
    iterations = [every * (i + 1) for i in range(len(curve))]
    result = None
    if status == "succeeded":
        result = {
            "stop_reason": "completed",
            "iterations": iterations[-1],
            "epochs": len(curve),
            "cycles": 2,
            "cycle_ends": [20, 40] if policy != "fixed" else [],
            "seconds": 1.0,
            "device": "cpu",
            "policy": policy,
            "schedule": {},
            "final_train_loss": 0.1,
            "final_val_loss": 0.2,
            "final_val_accuracy": curve[-1],
            "best_val_accuracy": max(curve),
            "best_val_iteration": iterations[curve.index(max(curve))],
        }
    return ChildRun(
        job_id=uuid.uuid4(),
        role={"grid": grid, "policy": policy, "seed": seed},
        status=status,
        result=result,
        error="diverged" if status == "failed" else None,
        iteration=iterations,
        val_accuracy=curve,
    )


TWO = sweep(policies=["fixed", "triangular2"], seeds=[0, 1])
FIXED = [[0.5, 0.6, 0.7, 0.8], [0.5, 0.7, 0.8, 0.9]]  # final mean 0.85
CLR = [[0.6, 0.86, 0.8, 0.9], [0.7, 0.9, 0.85, 0.95]]  # reach 0.85 at 20 and 20


def finished_runs() -> list[ChildRun]:
    return [training("fixed", s, c) for s, c in enumerate(FIXED)] + [
        training("triangular2", s, c) for s, c in enumerate(CLR)
    ]


class TestBuildTable:
    def test_means_and_stds_over_seeds(self) -> None:
        fixed, clr = build_table(TWO, finished_runs()).rows
        assert fixed.final_val_accuracy is not None
        assert fixed.final_val_accuracy.mean == pytest.approx(0.85)
        assert fixed.final_val_accuracy.std == pytest.approx(statistics.stdev([0.8, 0.9]))
        assert clr.best_val_accuracy is not None
        assert clr.best_val_accuracy.mean == pytest.approx(0.925)
        assert (clr.succeeded, clr.failed, clr.counts) == (2, 0, {"succeeded": 2})

    def test_iterations_to_reach_the_fixed_policys_final_accuracy(self) -> None:
        fixed, clr = build_table(TWO, finished_runs()).rows
        assert fixed.fixed_accuracy == clr.fixed_accuracy == pytest.approx(0.85)
        # fixed: seed 0 never reaches 0.85, seed 1 at 40
        assert fixed.reached_fixed == 1
        assert fixed.iterations_to_fixed is not None
        assert fixed.iterations_to_fixed.mean == 40
        assert fixed.iterations_to_fixed.std is None
        assert clr.iterations_to_fixed is not None
        assert (clr.iterations_to_fixed.mean, clr.reached_fixed) == (20, 2)
        assert clr.ratio_to_fixed == pytest.approx(0.5)
        assert fixed.ratio_to_fixed == pytest.approx(1.0)

    def test_mean_curve_with_a_band_on_a_common_axis(self) -> None:
        curves = build_table(TWO, finished_runs()).curves
        assert [c.policy for c in curves] == ["fixed", "triangular2"]
        clr = curves[1]
        assert clr.iteration == [10, 20, 30, 40]
        assert clr.mean == pytest.approx([0.65, 0.88, 0.825, 0.925])
        assert clr.std[0] == pytest.approx(statistics.stdev([0.6, 0.7]))
        assert clr.n == [2, 2, 2, 2]
        assert clr.cycle_ends == [20, 40]

    def test_partial_table_while_trainings_run(self) -> None:
        runs = [
            training("fixed", 0, FIXED[0]),
            training("fixed", 1, [0.5, 0.7], status="running"),
            training("triangular2", 0, [0.6], status="running"),
        ]
        fixed, clr = build_table(TWO, runs).rows
        assert fixed.counts == {"succeeded": 1, "running": 1}
        assert fixed.fixed_accuracy == pytest.approx(0.8)
        assert clr.final_val_accuracy is None
        assert clr.iterations_to_fixed is None
        curve = build_table(TWO, runs).curves[0]
        assert (curve.iteration, curve.n) == ([10, 20, 30, 40], [2, 2, 1, 1])

    def test_failed_seeds_are_counted_not_averaged(self) -> None:
        runs = [*finished_runs(), training("triangular2", 2, [0.1, 0.1], status="failed")]
        clr = build_table(TWO, runs).rows[1]
        assert (clr.succeeded, clr.failed) == (2, 1)
        assert clr.final_val_accuracy is not None
        assert clr.final_val_accuracy.n == 2

    def test_without_fixed_there_is_no_target(self) -> None:
        spec = sweep(policies=["triangular2"], seeds=[0, 1])
        [row] = build_table(spec, finished_runs()).rows
        assert (row.fixed_accuracy, row.iterations_to_fixed, row.ratio_to_fixed) == (None,) * 3

    def test_rows_per_grid_point(self) -> None:
        spec = sweep(policies=["fixed"], seeds=[0], grid={"batch_size": [32, 64]})
        runs = [training("fixed", 0, [0.5], grid=0), training("fixed", 0, [0.9], grid=1)]
        rows = build_table(spec, runs).rows
        assert [(r.label, r.fixed_accuracy) for r in rows] == [
            ("bs=32 sgd wd=0", 0.5),
            ("bs=64 sgd wd=0", 0.9),
        ]


class TestBuildResult:
    def test_counts_failures_and_bounds(self) -> None:
        test = ChildRun(uuid.uuid4(), {"grid": 0, "stage": "range_test"}, "succeeded")
        failed = training("triangular2", 2, [0.1], status="failed")
        result = build_result(
            TWO, [test, *finished_runs(), failed], bounds={0: bounds()}, complete=True
        )
        assert result.counts == {"succeeded": 5, "failed": 1}
        assert result.children == 1 + 2 * 2
        assert [(f.job_id, f.reason) for f in result.failures] == [(failed.job_id, "diverged")]
        [point] = result.points
        assert (point.range_test, point.range_test_status) == (test.job_id, "succeeded")
        assert point.bounds == bounds()
        assert SweepResult.model_validate(result.to_json_dict()) == result

    def test_a_point_without_bounds_is_a_failure(self) -> None:
        test = ChildRun(uuid.uuid4(), {"grid": 0, "stage": "range_test"}, "succeeded")
        result = build_result(TWO, [test], no_bounds={0: "the range test found no bounds: flat"})
        assert result.complete is False
        assert [(f.job_id, f.role) for f in result.failures] == [
            (test.job_id, {"grid": 0, "stage": "range_test"})
        ]
        assert result.points[0].no_bounds_reason is not None
        assert [r.succeeded for r in result.table] == [0, 0]


class TestPlot:
    @pytest.mark.parametrize(("fmt", "magic"), [("png", b"\x89PNG"), ("svg", b"<svg")])
    def test_renders(self, fmt: str, magic: bytes) -> None:
        result = build_result(TWO, finished_runs(), bounds={0: bounds()})
        image = render_sweep_plot(result, format=fmt)
        assert magic in image[:400]

    def test_one_panel_per_grid_point_with_a_line_per_policy(self) -> None:
        from clr.plots import plot_sweep

        spec = sweep(policies=["fixed", "triangular2"], seeds=[0], grid={"batch_size": [32, 64]})
        runs = [training(p, 0, [0.5, 0.7], grid=g) for g in (0, 1) for p in spec.policies]
        panels = sweep_plot_panels(build_result(spec, runs))
        figure = plot_sweep(panels)
        assert len(figure.axes) == 2
        gids = {line.get_gid() for line in figure.axes[1].get_lines()}
        assert {"mean-fixed", "mean-triangular2", "cycle-ends-triangular2", "fixed-target"} <= gids

    def test_nothing_to_plot_is_refused(self) -> None:
        with pytest.raises(ValueError, match="no curve"):
            render_sweep_plot(build_result(TWO, []))

    def test_the_band_spans_one_std(self) -> None:
        from clr.plots import plot_sweep

        curve = {"label": "p", "iteration": [1, 2], "mean": [0.5, 0.6], "std": [0.1, 0.1]}
        figure = plot_sweep([{"title": "t", "target": None, "curves": [curve]}])
        [band] = [c for c in figure.axes[0].collections if c.get_gid() == "band-p"]
        ys = band.get_paths()[0].vertices[:, 1]
        assert (min(ys), max(ys)) == (pytest.approx(0.4), pytest.approx(0.7))
        assert not math.isnan(ys.sum())

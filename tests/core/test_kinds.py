"""The registry of job kinds: what a kind declares, and the range test's own."""

from __future__ import annotations

import math

import pytest

from core.errors import InvalidJobSpec
from core.kinds import (
    BAND,
    CURVE,
    RANGE_TEST,
    JobKind,
    all_kinds,
    get_kind,
    register_kind,
    registered_kind,
    unregister_kind,
)
from core.series import SeriesPoints
from core.settings import Settings
from core.specs import JobResult, JobSpec, RangeTestOutcome, RangeTestSpec


def toy(**overrides: object) -> JobKind:
    values: dict[str, object] = {
        "name": "toy",
        "noun": "toys",
        "title": "toy",
        "spec": JobSpec,
        "result": JobResult,
        "runner": "tests.core.test_kinds:never_run",
    }
    values.update(overrides)
    return JobKind(**values)  # type: ignore[arg-type]


class TestRegistry:
    def test_the_range_test_is_registered_with_its_spec_result_and_curve(self) -> None:
        kind = get_kind("range_test")
        assert kind is RANGE_TEST
        assert (kind.spec, kind.result, kind.noun) == (
            RangeTestSpec,
            RangeTestOutcome,
            "range-tests",
        )
        assert kind.series == (CURVE, BAND)
        assert kind.series_spec("curve") is CURVE
        assert kind.series_spec("epochs") is None
        assert not kind.resumable
        assert kind.task_name == "range_test.run"

    def test_the_band_is_a_series_of_range_tests_under_seeds_only(self) -> None:
        plain = RangeTestSpec.model_validate({"workload": "digits_mlp"}).model_dump(mode="json")
        seeded = RangeTestSpec.model_validate({"workload": "digits_mlp", "seeds": [0, 1]})
        assert RANGE_TEST.series_of(plain) == (CURVE,)
        assert RANGE_TEST.series_of(seeded.model_dump(mode="json")) == (CURVE, BAND)
        assert RANGE_TEST.series_of({"source": "client"}) == (CURVE,)
        assert RANGE_TEST.series_spec("band") is BAND  # read as empty without seeds

    def test_every_kind_has_a_spec_a_result_and_its_own_name_and_noun(self) -> None:
        kinds = all_kinds()
        assert RANGE_TEST in kinds
        for kind in kinds:
            assert issubclass(kind.spec, JobSpec)
            assert issubclass(kind.result, JobResult)
        assert len({k.name for k in kinds}) == len({k.noun for k in kinds}) == len(kinds)

    def test_an_unknown_kind_is_an_invalid_spec_naming_the_known_ones(self) -> None:
        with pytest.raises(InvalidJobSpec) as info:
            get_kind("nope")
        assert info.value.errors[0]["field"] == "kind"
        assert "unknown job kind 'nope'; known kinds: " in info.value.detail
        assert "range_test" in info.value.detail

    def test_registered_kind_lasts_for_its_block_even_when_it_raises(self) -> None:
        kind = toy()
        seen: list[JobKind] = []

        def use_and_fail() -> None:
            with registered_kind(kind):
                seen.extend([get_kind("toy"), all_kinds()[-1]])
                raise RuntimeError

        with pytest.raises(RuntimeError):
            use_and_fail()
        assert seen == [kind, kind]
        assert kind not in all_kinds()
        with pytest.raises(InvalidJobSpec):
            get_kind("toy")

    def test_registering_a_name_again_replaces_the_kind(self) -> None:
        first, second = toy(), toy(title="toy two")
        register_kind(first)
        try:
            register_kind(second)
            assert get_kind("toy") is second
            assert [k.name for k in all_kinds()].count("toy") == 1
        finally:
            unregister_kind("toy")


class TestJobKind:
    def test_the_runner_must_name_module_and_function(self) -> None:
        with pytest.raises(ValueError, match="runner must be 'module:function'"):
            toy(runner="tests.core.test_kinds.never_run")

    def test_a_series_may_be_declared_once(self) -> None:
        with pytest.raises(ValueError, match="declares a series twice"):
            toy(series=(CURVE, CURVE))

    def test_a_kind_with_request_examples_hashes(self) -> None:
        # the API caches the schemas it derives from a kind by the kind
        kind = toy(examples=({"steps": 3},))
        assert hash(kind) == hash(toy(examples=({"steps": 4},)))
        # the examples only document the kind: the same kind with others is the same kind
        assert kind == toy(examples=({"steps": 4},))
        assert kind != toy(examples=({"steps": 3},), resumable=True)
        assert {kind: 1}[toy(examples=({"steps": 3},))] == 1

    def test_the_time_limit_comes_from_the_named_setting(self, settings: Settings) -> None:
        assert RANGE_TEST.time_limit_s(settings) == settings.job_time_limit_s
        longer = settings.model_copy(update={"job_time_limit_s": 7})
        assert toy(time_limit_setting="job_time_limit_s").time_limit_s(longer) == 7


class TestCurve:
    """The range test's ``curve`` series: what a worker's points must hold."""

    def test_lists_must_have_equal_lengths(self) -> None:
        with pytest.raises(ValueError, match="field 'loss' has 1 values, the others 2"):
            SeriesPoints.of(CURVE, 0, {"lr": [1.0, 2.0], "loss": [1.0], "smoothed_loss": [1, 1]})

    def test_accuracies_too(self) -> None:
        with pytest.raises(ValueError, match="field 'accuracy' has 3 values, the others 1"):
            SeriesPoints.of(
                CURVE, 0, {"lr": [1.0], "loss": [1.0], "smoothed_loss": [1.0], "accuracy": [1] * 3}
            )

    @pytest.mark.parametrize(
        ("start", "values", "message"),
        [
            (-1, {"lr": [1.0], "loss": [1.0], "smoothed_loss": [1.0]}, "start must be"),
            (0, {"lr": [], "loss": [], "smoothed_loss": []}, "carries 1 to 100000 points, got 0"),
            (0, {"lr": [1.0], "loss": [math.nan], "smoothed_loss": [1.0]}, "'loss' has a non-fin"),
            (0, {"lr": [1.0], "loss": [1.0]}, "field 'smoothed_loss' is missing"),
        ],
    )
    def test_bad_points_are_refused_naming_the_field(
        self, start: int, values: dict[str, list[float]], message: str
    ) -> None:
        with pytest.raises(ValueError, match=message):
            SeriesPoints.of(CURVE, start, values)

    def test_accuracy_is_optional(self) -> None:
        points = SeriesPoints.of(
            CURVE, 10, {"lr": [0.1, 0.2], "loss": [2, 1.9], "smoothed_loss": [2, 1.95]}
        )
        assert (points.name, points.start, points.size) == ("curve", 10, 2)
        assert points.values == {
            "lr": [0.1, 0.2],
            "loss": [2.0, 1.9],
            "smoothed_loss": [2.0, 1.95],
            "accuracy": None,
        }

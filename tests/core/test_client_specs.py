"""The specs of jobs a team runs in its own loop: their configuration keys."""

from __future__ import annotations

from typing import Any

import pytest

from core.client_specs import ClientRangeTestSpec, is_client_spec, tag_text
from core.errors import InvalidJobSpec
from core.services import parse_job_spec


def spec(**overrides: Any) -> ClientRangeTestSpec:
    data: dict[str, Any] = {
        "source": "client",
        "model": "resnet-tiny",
        "dataset": "cifar",
        "batch_size": 128,
        "tags": {"run": "a", "seed": 1},
    }
    data.update(overrides)
    parsed = parse_job_spec("range_test", data)
    assert isinstance(parsed, ClientRangeTestSpec)
    return parsed


@pytest.mark.parametrize(
    ("value", "text"),
    [(1, "1"), (1.0, "1"), ("1", "1"), ("1.50", "1.5"), (0.25, "0.25"), ("a", "a"), ("NaN", "NaN")],
)
def test_a_tag_compares_as_text_and_numbers_by_value(value: Any, text: str) -> None:
    assert tag_text(value) == text


def test_the_key_covers_the_configuration_not_how_the_test_ran() -> None:
    key = spec().config_key()
    assert spec(tags={"seed": "1", "run": "a"}).config_key() == key  # order, text or number
    assert spec(num_iter=50, start_lr=1e-3, end_lr=1.0, iters_per_epoch=10).config_key() == key
    for other in (
        {"model": "resnet-small"},
        {"dataset": "cifar100"},
        {"batch_size": 64},
        {"optimizer": {"name": "adam"}},
        {"optimizer": {"name": "sgd", "momentum": 0.5}},
        {"metric": "accuracy"},
        {"tags": {"run": "a"}},
        {"tags": {"run": "b", "seed": 1}},
    ):
        assert spec(**other).config_key() != key, other


def test_a_client_key_never_equals_a_workloads() -> None:
    workload = parse_job_spec("range_test", {"workload": "digits_mlp"})
    assert not is_client_spec(workload)
    assert is_client_spec(spec())
    assert is_client_spec(spec().model_dump(mode="json"))
    assert spec().configuration()["source"] == "client"
    assert workload.config_key() != spec().config_key()


def test_a_client_range_test_takes_no_seeds() -> None:
    # the band across seeds is the service's: a team's own loop uploads one curve
    with pytest.raises(InvalidJobSpec) as info:
        spec(seeds=[0, 1])
    assert [e["field"] for e in info.value.errors] == ["seeds"]

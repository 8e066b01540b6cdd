"""The domain's specs, results and statuses are the contracts' (declared once).

Every kind's spec subclasses its contract and adds no field; the result
documents, the statuses and the policy names are the contracts' own, and what
the contracts copy from ``clr`` (policy names, suggestion methods) agrees with it.
"""

from __future__ import annotations

import typing

import pytest
from pydantic import BaseModel

import clr_sweep.contracts as contracts
from clr import METHODS
from clr.policies import POLICIES
from core import models, specs, sweeps, training
from core.kinds import JobKind, all_kinds


def contract_of(model: type[BaseModel]) -> type[BaseModel]:
    """The first class of ``model``'s bases that :mod:`clr_sweep.contracts` declares."""
    for base in model.__mro__:
        if base.__module__.startswith("clr_sweep.contracts"):
            found: type[BaseModel] = base
            return found
    raise AssertionError(f"{model.__name__} subclasses no contract")


@pytest.mark.parametrize("kind", all_kinds(), ids=lambda k: k.name)
def test_every_kinds_spec_subclasses_its_contract_and_adds_no_field(kind: JobKind) -> None:
    contract = contract_of(kind.spec)
    assert contract.__name__ == kind.spec.__name__
    assert getattr(contracts, contract.__name__) is contract
    assert list(kind.spec.model_fields) == list(contract.model_fields)
    if kind.client_spec is not None:  # the spec of a job the team runs in its own loop
        client = contract_of(kind.client_spec)
        assert getattr(contracts, client.__name__) is client
        assert list(kind.client_spec.model_fields) == list(client.model_fields)


@pytest.mark.parametrize("kind", all_kinds(), ids=lambda k: k.name)
def test_every_kinds_result_and_read_are_the_contracts(kind: JobKind) -> None:
    assert getattr(contracts, kind.result.__name__) is kind.result
    assert kind.read is not None
    assert getattr(contracts, kind.read.__name__) is kind.read
    shown = kind.result_view or kind.result
    assert typing.get_args(kind.read.model_fields["result"].annotation)[0] is shown
    assert typing.get_args(kind.read.model_fields["kind"].annotation) == (kind.name,)


def test_the_domain_re_exports_the_contracts_classes() -> None:
    assert models.JobStatus is contracts.JobStatus
    assert specs.OptimizerSpec is contracts.OptimizerSpec
    assert specs.RangeTestOutcome is contracts.RangeTestOutcome
    assert training.ScheduleSpec is contracts.ScheduleSpec
    assert training.TrainingOutcome is contracts.TrainingOutcome
    assert sweeps.SweepGrid is contracts.SweepGrid
    assert sweeps.SweepResult is contracts.SweepResult
    assert {s.value for s in models.FINISHED_STATUSES} == {"succeeded", "failed", "cancelled"}


def test_the_contracts_policy_and_method_names_are_clrs() -> None:
    assert contracts.POLICY_NAMES == POLICIES
    assert set(contracts.POLICY_ARGUMENTS) == set(POLICIES)
    methods = typing.get_args(contracts.BoundsFrom.model_fields["method"].annotation)[0]
    assert typing.get_args(methods) == (contracts.VERIFIED_METHOD, *METHODS)

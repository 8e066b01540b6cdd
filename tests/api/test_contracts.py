"""The OpenAPI document's bodies are the contracts' classes, so API and client cannot drift.

For every registered kind, the body of ``POST /<noun>`` has exactly the fields
of the kind's contract spec (and of its client spec, for a kind a team may run in
its own loop), and ``GET /<noun>/{id}`` answers the contract's
read class; every component named like a contract class has exactly that
class's fields. The workload enum is the one thing the API adds (the contract
cannot know the registry).
"""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

import clr_sweep.contracts as contracts
from api.app import create_app
from clr.workloads import list_workloads
from core.kinds import JobKind, all_kinds
from core.settings import Settings

DOC: dict[str, Any] = create_app(Settings(_env_file=None, database_url="sqlite://")).openapi()
SCHEMAS: dict[str, Any] = DOC["components"]["schemas"]


def component(ref: str) -> dict[str, Any]:
    found: dict[str, Any] = SCHEMAS[ref.rsplit("/", 1)[-1]]
    return found


def contract_of(model: type[BaseModel]) -> type[BaseModel]:
    for base in model.__mro__:
        if base.__module__.startswith("clr_sweep.contracts"):
            found: type[BaseModel] = base
            return found
    raise AssertionError(f"{model.__name__} subclasses no contract")


def properties(model: type[BaseModel]) -> set[str]:
    return {field.alias or name for name, field in model.model_fields.items()}


def request_bodies(kind: JobKind) -> dict[str, dict[str, Any]]:
    """The components ``POST /<noun>`` accepts, by name (one, or one per ``source``)."""
    content = DOC["paths"][f"/{kind.noun}"]["post"]["requestBody"]["content"]
    schema = content["application/json"]["schema"]
    refs = [s["$ref"] for s in schema.get("oneOf", [schema])]
    return {ref.rsplit("/", 1)[-1]: component(ref) for ref in refs}


@pytest.mark.parametrize("kind", all_kinds(), ids=lambda k: k.name)
def test_a_kinds_request_bodies_have_the_contracts_fields(kind: JobKind) -> None:
    specs = [kind.spec] if kind.client_spec is None else [kind.spec, kind.client_spec]
    bodies = request_bodies(kind)
    assert len(bodies) == len(specs)
    for spec, (name, body) in zip(specs, bodies.items(), strict=True):
        contract = contract_of(spec)
        assert set(body["properties"]) == properties(contract), name
    service = next(iter(bodies.values()))
    assert service["properties"]["workload"]["enum"] == list_workloads()
    assert "enum" not in contract_of(kind.spec).model_json_schema()["properties"]["workload"]


@pytest.mark.parametrize("kind", all_kinds(), ids=lambda k: k.name)
def test_a_kinds_read_is_the_contracts_read(kind: JobKind) -> None:
    assert kind.read is not None
    assert getattr(contracts, kind.read.__name__) is kind.read
    content = DOC["paths"][f"/{kind.noun}/{{job_id}}"]["get"]["responses"]["200"]["content"]
    ref = content["application/json"]["schema"]["$ref"]
    assert ref.rsplit("/", 1)[-1] == kind.read.__name__
    assert set(component(ref)["properties"]) == properties(kind.read)


def test_a_job_of_any_kind_is_one_of_the_contracts_reads() -> None:
    content = DOC["paths"]["/jobs/{job_id}"]["get"]["responses"]["200"]["content"]
    schema = content["application/json"]["schema"]
    named = {ref.rsplit("/", 1)[-1] for ref in schema["discriminator"]["mapping"].values()}
    assert named == {"RangeTestRead", "TrainingRead", "SweepRead"}
    page = DOC["paths"]["/jobs"]["get"]["responses"]["200"]["content"]["application/json"]
    assert page["schema"]["$ref"].rsplit("/", 1)[-1] == "JobList"


def test_every_component_named_like_a_contract_has_its_fields() -> None:
    compared = []
    for name, schema in SCHEMAS.items():
        model = getattr(contracts, name, None)
        if isinstance(model, type) and issubclass(model, BaseModel):
            assert set(schema.get("properties", {})) == properties(model), name
            compared.append(name)
    for expected in ("Problem", "FieldErrorDoc", "OptimizerSpec", "BoundsRead", "SweepResult"):
        assert expected in compared
    problem = DOC["paths"]["/range-tests"]["post"]["responses"]["422"]["content"]
    refs = {c["schema"]["$ref"] for c in problem.values() if "schema" in c}
    assert refs == {"#/components/schemas/Problem"}

"""``/bounds``: the latest suggestion for a configuration, without a job id.

A configuration is what decides which bounds suit a job (see
:meth:`core.specs.RangeTestSpec.configuration`): the workload, its params (the
batch size among them), the optimizer with its hyperparameters, and the metric
the bounds read. A range test the team ran in its own loop (``"source":
"client"``) is found by its own names instead: ``model``, ``dataset``,
``batch_size``, the optimizer, the metric and its ``tags``
(``tags.run=a`` or ``tags={"run":"a"}``; compared as text, numbers by value).
Each may be given as JSON (``params={"width":128}``,
``optimizer={"name":"adam"}``) or spelled out (``params.width=128``,
``optimizer=adam``, ``optimizer.momentum=0.9``); omitted ones take their
defaults. Any other query parameter is refused, naming it: a lookup that
ignored one would answer for another configuration.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request

from api.deps import CurrentTeamDep, SessionDep
from api.routes._responses import AUTH, INVALID, problem
from api.schemas import BoundsRead, bounds_read
from api.schemas.text import (
    TEXT_PATTERN,
    check_method,
    has_control_characters,
    json_depth,
    method_enum,
    workload_enum,
)
from clr.workloads import get_workload, list_workloads
from core import services
from core.errors import FieldError, InvalidInput
from core.specs import OptimizerSpec, RangeTestSpec

__all__ = ["MAX_JSON_DEPTH", "router"]

MAX_JSON_DEPTH = 4
"""Deepest nesting of ``params`` / ``optimizer`` JSON (``betas`` is a list in an object: 2)."""

_OPTIMIZER_FIELDS = tuple(name for name in OptimizerSpec.model_fields if name != "name")
_DECLARED = frozenset(
    {
        "workload",
        "params",
        "optimizer",
        "batch_size",
        "metric",
        "method",
        "model",
        "dataset",
        "tags",
    }
)

router = APIRouter(tags=["bounds"])


def _params_parameters() -> list[dict[str, Any]]:
    """OpenAPI declarations of ``params.<name>`` for every registered workload's params."""
    merged: dict[str, dict[str, Any]] = {}
    for workload in list_workloads():
        for param in get_workload(workload).params:
            schema = param.json_schema()
            seen = merged.get(param.name)
            if seen is None:
                merged[param.name] = {k: v for k, v in schema.items() if k != "default"}
                continue
            if seen.get("type") != schema["type"]:
                seen.pop("type", None)
            for bound, pick in (("minimum", min), ("maximum", max)):
                if bound in seen and bound in schema:
                    seen[bound] = pick(seen[bound], schema[bound])
                else:
                    seen.pop(bound, None)
            seen.pop("enum", None)
    return [
        {
            "name": f"params.{name}",
            "in": "query",
            "required": False,
            "description": f"The workload's `{name}` parameter (instead of `params` JSON)",
            "schema": schema,
        }
        for name, schema in sorted(merged.items())
    ]


class _Problems:
    """Every rejected query parameter, reported at once."""

    def __init__(self) -> None:
        self.errors: list[FieldError] = []

    def add(self, field: str, reason: str) -> None:
        self.errors.append({"field": field, "reason": reason})

    def raise_any(self) -> None:
        if self.errors:
            detail = "; ".join(f"{e['field']}: {e['reason']}" for e in self.errors)
            raise InvalidInput(detail, errors=self.errors)


def _json_object(problems: _Problems, name: str, text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    # Depth first: json.loads recurses, and a few thousand brackets exhaust the stack.
    if json_depth(text) > MAX_JSON_DEPTH:
        problems.add(name, f"is nested deeper than {MAX_JSON_DEPTH} levels")
        return None
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        problems.add(name, "must be a JSON object")
        return None
    return value


def _scalar(text: str) -> Any:
    """A spelled-out value: a JSON number or boolean when it reads as one, else the text."""
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return value if isinstance(value, bool | int | float) else text


def _optimizer_value(field: str, text: str) -> Any:
    if field == "betas":
        inner = text.strip().removeprefix("[").removesuffix("]")
        return [_scalar(part.strip()) for part in inner.split(",")]
    return _scalar(text)


def _configuration(
    problems: _Problems,
    items: Iterable[tuple[str, str]],
    *,
    params_json: dict[str, Any] | None,
    optimizer_text: str | None,
    tags_json: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Params, optimizer and tags from their JSON forms and the ``params.x`` /
    ``optimizer.x`` / ``tags.x`` keys."""
    params: dict[str, Any] = dict(params_json or {})
    tags: dict[str, Any] = dict(tags_json or {})
    optimizer: dict[str, Any] = {}
    if optimizer_text is not None:
        if optimizer_text.lstrip().startswith(("{", "[")):
            optimizer = _json_object(problems, "optimizer", optimizer_text) or {}
        else:
            optimizer = {"name": optimizer_text}
    seen: set[str] = set()
    for key, value in items:
        if key in seen:
            problems.add(key, "is given more than once")
            continue
        seen.add(key)
        if key in _DECLARED:
            continue
        if has_control_characters(value):
            problems.add(key, "must not contain control characters")
            continue
        prefix, _, name = key.partition(".")
        if prefix == "params" and name:
            if name in params:
                problems.add(key, "is also given in params; give it once")
            params[name] = _scalar(value)
        elif prefix == "tags" and name:
            if name in tags:
                problems.add(key, "is also given in tags; give it once")
            tags[name] = value  # compared as text (numbers by value)
        elif prefix == "optimizer" and name in ("name", *_OPTIMIZER_FIELDS):
            if name in optimizer:
                problems.add(key, "is also given in optimizer; give it once")
            optimizer[name] = _optimizer_value(name, value)
        elif key in RangeTestSpec.model_fields:
            problems.add(
                key,
                "does not change which bounds suit a configuration; leave it out "
                "(a configuration is workload, params, optimizer and metric)",
            )
        else:
            problems.add(
                key,
                "unknown query parameter; expected workload, params or params.<name>, "
                "batch_size, optimizer or optimizer.<name>, metric, method (or, for a "
                "range test run in the team's own loop, model, dataset, tags or tags.<name>)",
            )
    spec: dict[str, Any] = {}
    if params:
        spec["params"] = params
    if optimizer:
        spec["optimizer"] = optimizer
    if tags:
        spec["tags"] = tags
    return spec


@router.get(
    "/bounds",
    response_model=BoundsRead,
    responses={
        **AUTH,
        **problem(
            404,
            "No successful range test of this configuration yet; the detail lists the "
            "workload's configurations that have bounds",
        ),
        **problem(409, "The latest range test of this configuration found no bounds"),
        **INVALID,
    },
    openapi_extra={
        "parameters": [
            *_params_parameters(),
            *(
                {
                    "name": f"optimizer.{field}",
                    "in": "query",
                    "required": False,
                    "description": f"The optimizer's `{field}` (instead of `optimizer` JSON)"
                    + ("; two numbers, comma-separated" if field == "betas" else ""),
                    "schema": {"type": "string", "maxLength": 64, "pattern": TEXT_PATTERN},
                }
                for field in _OPTIMIZER_FIELDS
            ),
        ]
    },
)
def find_bounds(
    request: Request,
    session: SessionDep,
    team: CurrentTeamDep,
    workload: Annotated[
        str | None,
        Query(
            max_length=64,
            json_schema_extra=workload_enum,
            description="A registered workload (or give `model` instead)",
        ),
    ] = None,
    model: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=128,
            pattern=TEXT_PATTERN,
            description="The model of a range test the team ran in its own loop "
            '(`"source": "client"`), instead of `workload`',
        ),
    ] = None,
    dataset: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=128,
            pattern=TEXT_PATTERN,
            description="With `model`: the dataset it was tested on",
        ),
    ] = None,
    tags: Annotated[
        str | None,
        Query(
            max_length=8192,
            pattern=TEXT_PATTERN,
            description='With `model`: its tags as a JSON object (`{"run": "a"}`), or '
            "spelled out as `tags.<name>=<value>`",
        ),
    ] = None,
    params: Annotated[
        str | None,
        Query(
            max_length=8192,
            pattern=TEXT_PATTERN,
            description='The workload\'s params as a JSON object (`{"width": 128}`)',
        ),
    ] = None,
    optimizer: Annotated[
        str | None,
        Query(
            max_length=8192,
            pattern=TEXT_PATTERN,
            description='An optimizer name (`adam`) or a JSON object (`{"name": "adam"}`)',
        ),
    ] = None,
    batch_size: Annotated[int | None, Query(ge=1)] = None,
    metric: Annotated[Literal["loss", "accuracy"] | None, Query()] = None,
    method: Annotated[
        str | None,
        Query(max_length=64, json_schema_extra=method_enum),
    ] = None,
) -> BoundsRead:
    """The bounds of the team's latest successful range test of this configuration: a
    workload's, or (with `model`) one the team ran in its own loop."""
    check_method(method)
    problems = _Problems()
    params_json = _json_object(problems, "params", params)
    tags_json = _json_object(problems, "tags", tags)
    spec: dict[str, Any] = _configuration(
        problems,
        request.query_params.multi_items(),
        params_json=params_json,
        optimizer_text=optimizer,
        tags_json=tags_json,
    )
    client = model is not None
    if client and workload is not None:
        problems.add("model", "give workload or model, not both")
    elif not client and workload is None:
        problems.add(
            "workload",
            "give workload (a registered workload) or model (a range test run in the "
            "team's own loop, with dataset and batch_size)",
        )
    if client:
        if "params" in spec:
            problems.add(
                "params", "a configuration run in the team's own loop has tags, not params"
            )
        spec.update(model=model)
        if dataset is not None:
            spec["dataset"] = dataset
    else:
        for name, value in (("dataset", dataset), ("tags", spec.get("tags"))):
            if value is not None:
                problems.add(
                    name, "applies to a range test run in the team's own loop (with model)"
                )
        spec["workload"] = workload
    problems.raise_any()
    if batch_size is not None:
        spec["batch_size"] = batch_size
    if metric is not None:
        spec["metric"] = metric
    if client:
        bounds = services.find_client_bounds(session, team=team, spec=spec)
    else:
        bounds = services.find_bounds(session, team=team, spec=spec)
    return bounds_read(bounds, method=method)

"""``/workloads``: what a range test can run."""

from __future__ import annotations

from fastapi import APIRouter

from api.schemas import WorkloadList, WorkloadRead
from clr.workloads import get_workload, list_workloads

__all__ = ["router"]

router = APIRouter(tags=["workloads"])


@router.get("/workloads", response_model=WorkloadList)
def get_workloads() -> WorkloadList:
    """Every registered workload with its parameters' JSON schema."""
    items = []
    for name in list_workloads():
        workload = get_workload(name)
        items.append(
            WorkloadRead(
                name=workload.name,
                description=workload.description,
                task=workload.task,
                params=workload.param_schema(),
            )
        )
    return WorkloadList(items=items)

"""Registered workloads and their parameters."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

__all__ = ["WorkloadList", "WorkloadRead"]


class WorkloadRead(BaseModel):
    """A workload a range test can run, with its parameters as a JSON schema."""

    name: str
    description: str
    task: str
    params: dict[str, Any]


class WorkloadList(BaseModel):
    """Every registered workload, by name."""

    items: list[WorkloadRead]

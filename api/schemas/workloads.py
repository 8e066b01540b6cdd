"""Registered workloads and their parameters (:mod:`clr_sweep.contracts`' bodies)."""

from clr_sweep.contracts import WorkloadList, WorkloadRead

__all__ = ["WorkloadList", "WorkloadRead"]

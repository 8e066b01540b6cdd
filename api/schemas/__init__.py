"""Request and response bodies of the API."""

from api.schemas.bounds import BoundsRead, SuggestionRead
from api.schemas.health import Health, Readiness
from api.schemas.range_tests import (
    CurveRead,
    IsoDateTime,
    JobList,
    RangeTestCreate,
    RangeTestRead,
)
from api.schemas.workloads import WorkloadList, WorkloadRead

__all__ = [
    "BoundsRead",
    "CurveRead",
    "Health",
    "IsoDateTime",
    "JobList",
    "RangeTestCreate",
    "RangeTestRead",
    "Readiness",
    "SuggestionRead",
    "WorkloadList",
    "WorkloadRead",
]

"""Request and response bodies of the API."""

from api.schemas.bounds import BoundsRead, SuggestionRead
from api.schemas.health import Health, Readiness
from api.schemas.jobs import IsoDateTime, JobReadBase, SeriesRead
from api.schemas.range_tests import CurveRead, RangeTestList, RangeTestRead
from api.schemas.workloads import WorkloadList, WorkloadRead

__all__ = [
    "BoundsRead",
    "CurveRead",
    "Health",
    "IsoDateTime",
    "JobReadBase",
    "RangeTestList",
    "RangeTestRead",
    "Readiness",
    "SeriesRead",
    "SuggestionRead",
    "WorkloadList",
    "WorkloadRead",
]

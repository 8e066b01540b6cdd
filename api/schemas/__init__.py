"""Request and response bodies of the API.

The bodies themselves are :mod:`clr_sweep.contracts`' (shared with the client);
this package adds what needs the service: the read schemas of kinds registered
without one, the conversions from the services' results, and the OpenAPI
enums read from the registries (:mod:`api.schemas.text`).
"""

from api.schemas.bounds import BoundsRead, SuggestionRead, bounds_read
from api.schemas.health import Health, Readiness
from api.schemas.jobs import IsoDateTime, JobRead, SeriesRead, series_read
from api.schemas.range_tests import CurveRead, RangeTestList, RangeTestRead, curve_read
from api.schemas.workloads import WorkloadList, WorkloadRead

__all__ = [
    "BoundsRead",
    "CurveRead",
    "Health",
    "IsoDateTime",
    "JobRead",
    "RangeTestList",
    "RangeTestRead",
    "Readiness",
    "SeriesRead",
    "SuggestionRead",
    "WorkloadList",
    "WorkloadRead",
    "bounds_read",
    "curve_read",
    "series_read",
]

"""clr-sweep's Python client: submit range tests, trainings and sweeps to the service,
follow them, and fetch their bounds, curves, plots and models.

The package is light: it imports neither torch nor the service's own packages
(``pip install clr-sweep``; the service and its workers are the ``service`` extra).

Example::

    from clr_sweep import Client

    with Client() as client:
        job = client.submit_range_test({"workload": "digits_mlp", "num_iter": 100})
        job = client.wait(job.id, progress=lambda j: print(f"{j.progress}/{j.total}"))
        print(client.bounds(job.id).max_lr)
"""

from clr_sweep._async import AsyncClient
from clr_sweep._base import Curve
from clr_sweep._http import RetryPolicy
from clr_sweep.client import Client
from clr_sweep.config import login, logout
from clr_sweep.errors import (
    ClientError,
    Conflict,
    ConnectError,
    FieldError,
    Invalid,
    NotFound,
    ProblemError,
    ProtocolError,
    ServiceUnavailable,
    Timeout,
    Unauthorized,
)
from clr_sweep.events import Event

__all__ = [
    "AsyncClient",
    "Client",
    "ClientError",
    "Conflict",
    "ConnectError",
    "Curve",
    "Event",
    "FieldError",
    "Invalid",
    "NotFound",
    "ProblemError",
    "ProtocolError",
    "RetryPolicy",
    "ServiceUnavailable",
    "Timeout",
    "Unauthorized",
    "login",
    "logout",
]

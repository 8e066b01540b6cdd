"""A sweep's own route: its plot (validation accuracy against iteration, per policy).

Creating, listing, reading, cancelling and following sweeps are derived from the
kind registry (:func:`api.routes.jobs.kind_router`); a sweep's children are
``GET /jobs?parent={id}``.
"""

from __future__ import annotations

from fastapi import APIRouter

from api.routes._plots import add_plot_routes
from core import services
from core.sweeps import SWEEP

__all__ = ["router"]

router = APIRouter(prefix=f"/{SWEEP.noun}", tags=[f"{SWEEP.title}s"])


add_plot_routes(
    router,
    kind=SWEEP.name,
    load=services.load_sweep_plot,
    render=services.render_sweep_plot,
    summary="Validation accuracy vs iteration per policy (mean over seeds, a one-std band), "
    "one panel per grid point, cycle ends marked",
    shows="The plot: every policy's validation accuracy against iteration, the mean over its "
    "seeds with a band of one standard deviation and the fixed policy's final accuracy as a "
    "dashed line; the trainings finished so far while the sweep runs",
    empty="No training of the sweep has a validation accuracy (yet); the detail names its status",
)

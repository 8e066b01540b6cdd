"""Services: the domain's verbs, shared by the API and the workers.

Each takes the session first and keyword-only arguments, flushes when it needs
ids and never commits; the caller's unit of work does.
"""

from sweep.services.follow import JobUpdate, poll_job
from sweep.services.jobs import (
    Bounds,
    CurveSlice,
    JobAck,
    JobPage,
    ReconcileReport,
    acknowledge_cancel,
    cancel_job,
    claim_job,
    fail_job,
    find_bounds,
    finish_job,
    get_bounds,
    get_job,
    heartbeat,
    list_jobs,
    note_worker_lost,
    parse_job_spec,
    read_curve,
    reconcile,
    report_progress,
    submit_job,
)
from sweep.services.plots import RangeTestPlot, load_range_test_plot, render_range_test_plot
from sweep.services.teams import (
    IssuedToken,
    authenticate,
    create_team,
    create_token,
    get_team,
    hash_token,
    list_tokens,
    revoke_token,
)

__all__ = [
    "Bounds",
    "CurveSlice",
    "IssuedToken",
    "JobAck",
    "JobPage",
    "JobUpdate",
    "RangeTestPlot",
    "ReconcileReport",
    "acknowledge_cancel",
    "authenticate",
    "cancel_job",
    "claim_job",
    "create_team",
    "create_token",
    "fail_job",
    "find_bounds",
    "finish_job",
    "get_bounds",
    "get_job",
    "get_team",
    "hash_token",
    "heartbeat",
    "list_jobs",
    "list_tokens",
    "load_range_test_plot",
    "note_worker_lost",
    "parse_job_spec",
    "poll_job",
    "read_curve",
    "reconcile",
    "render_range_test_plot",
    "report_progress",
    "revoke_token",
    "submit_job",
]

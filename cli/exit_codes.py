"""The exit codes of every ``clr-sweep`` command: what a script can trust.

One enum, shown in ``clr-sweep --help`` (:data:`EPILOG`) and in docs/cli.md. A
command that follows a job (``submit --wait``, ``wait``) exits with the job's
outcome; every command exits with the kind of the error that stopped it.
"""

from __future__ import annotations

import signal
from enum import IntEnum

__all__ = ["EPILOG", "ExitCode"]


class ExitCode(IntEnum):
    """How a command ended (the process's exit status)."""

    OK = 0
    """Done; a followed job succeeded."""
    ERROR = 1
    """Anything else: an unexpected error (a bug: please report it)."""
    INVALID = 2
    """Invalid input: a bad option (the command line's own check) or the API's 400/422,
    naming the field."""
    JOB_FAILED = 3
    """The followed job failed (its error is printed, and in ``--json`` in ``error``)."""
    JOB_CANCELLED = 4
    """The followed job was cancelled (by someone else: Ctrl-C exits 130)."""
    NOT_FOUND = 5
    """No such job (or workload) for this team: the API's 404."""
    UNREACHABLE = 6
    """No service answered at the URL (connection refused, DNS, timeout)."""
    UNAUTHORIZED = 7
    """The token is missing, wrong or revoked: the API's 401/403."""
    CONFLICT = 8
    """The job is not in a state for this (bounds of a running test, cancel of a
    finished job, a range test without bounds): the API's 409."""
    BUSY = 9
    """The service is overloaded or at the team's cap of active jobs (503/429, still
    refused after the client's retries): try again later."""
    NEEDS_SERVICE = 10
    """The command runs the library or the service here (a local range test, ``schedule``,
    ``serve``, ``--embedded``) and this install lacks them: ``pip install
    'clr-sweep[service]'``."""
    INTERRUPTED = 128 + signal.SIGINT
    """Ctrl-C (SIGINT): a job the command submitted was cancelled; ``wait`` on an
    existing job only stops watching it. SIGTERM exits 143 and SIGHUP 129 the same way."""


def _epilog() -> str:
    rows = [f"{code.value:>3}  {code.name.lower().replace('_', ' ')}" for code in ExitCode]
    # typer's rich help keeps the lines as they are
    return "Exit codes:\n" + "\n".join(rows) + "\nDetails: docs/cli.md"


EPILOG = _epilog()
"""The exit code table for ``--help``."""

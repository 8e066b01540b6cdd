"""Repositories: all the SQL of the domain, SQLAlchemy 2.0 style.

Each works in the caller's session and transaction and never commits.
"""

from sweep.repositories.jobs import JobRepository, ResendRule
from sweep.repositories.teams import TeamRepository, TokenRepository
from sweep.repositories.workers import WorkerRepository

__all__ = [
    "JobRepository",
    "ResendRule",
    "TeamRepository",
    "TokenRepository",
    "WorkerRepository",
]

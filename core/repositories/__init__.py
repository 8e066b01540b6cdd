"""Repositories: all the SQL of the domain, SQLAlchemy 2.0 style.

Each works in the caller's session and transaction and never commits.
"""

from core.repositories.artifacts import ArtifactRepository
from core.repositories.jobs import JobRepository, ResendRule
from core.repositories.teams import TeamRepository, TokenRepository
from core.repositories.workers import WorkerRepository

__all__ = [
    "ArtifactRepository",
    "JobRepository",
    "ResendRule",
    "TeamRepository",
    "TokenRepository",
    "WorkerRepository",
]

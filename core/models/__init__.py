"""ORM models: teams, API tokens, jobs, series chunks and the worker registry.

Alembic (``migrations/``) is the only way the schema changes; a test checks
that these models and the migrations agree.
"""

from core.models.artifact import Artifact, ArtifactChunk, ArtifactState, ArtifactStore
from core.models.base import NAMING_CONVENTION, Base, JSONType, TimestampMixin, UTCDateTime
from core.models.job import FINISHED_STATUSES, Job, JobStatus, SeriesChunk
from core.models.team import TOKEN_PREFIX_LENGTH, ApiToken, Team
from core.models.worker import Worker

__all__ = [
    "FINISHED_STATUSES",
    "NAMING_CONVENTION",
    "TOKEN_PREFIX_LENGTH",
    "ApiToken",
    "Artifact",
    "ArtifactChunk",
    "ArtifactState",
    "ArtifactStore",
    "Base",
    "JSONType",
    "Job",
    "JobStatus",
    "SeriesChunk",
    "Team",
    "TimestampMixin",
    "UTCDateTime",
    "Worker",
]

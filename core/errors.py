"""Errors the domain raises on purpose, each with the HTTP status it means.

The API renders every :class:`DomainError` as ``application/problem+json``
(RFC 9457) through one handler; :meth:`DomainError.to_problem` is that body.

The tree::

    DomainError                    base; status 400
    ├── Unauthorized (401)         no token, an unknown one, or a revoked one
    ├── NotFound (404)
    │   ├── ArtifactNotFound       no ready artifact of that name for the job
    │   ├── JobNotFound            no such job for this team (other teams' jobs too)
    │   │   └── NoBoundsForConfiguration   no range test of that configuration has bounds
    │   ├── TeamNotFound
    │   └── TokenNotFound
    ├── Conflict (409)
    │   ├── JobConflict            the job's status does not allow the action
    │   ├── NotReady               the job has not produced what was asked for yet
    │   └── TeamNameTaken
    ├── ArtifactTooLarge (413)     an artifact grew past CLR_MAX_ARTIFACT_BYTES
    ├── TooManyRequests (429)      carries ``headers`` (``Retry-After``)
    │   └── TooManyActiveJobs      the team has its cap of queued and running jobs
    └── InvalidInput (422)         carries ``errors``: [{"field", "reason"}]
        ├── InvalidJobSpec         the job spec (or its kind) is not acceptable
        │   └── JobTooLarge        the job's estimated memory or run time is over a cap
        └── IdempotencyConflict    an Idempotency-Key reused with another request
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, TypedDict

__all__ = [
    "ArtifactNotFound",
    "ArtifactTooLarge",
    "Conflict",
    "DomainError",
    "FieldError",
    "IdempotencyConflict",
    "InvalidInput",
    "InvalidJobSpec",
    "JobCancelled",
    "JobConflict",
    "JobNotFound",
    "JobTooLarge",
    "NoBoundsForConfiguration",
    "NotAClientJob",
    "NotFound",
    "NotReady",
    "TeamNameTaken",
    "TeamNotFound",
    "TokenNotFound",
    "TooManyActiveJobs",
    "TooManyRequests",
    "Unauthorized",
    "UploadConflict",
]


class FieldError(TypedDict):
    """One problem with one input: ``{"field": "start_lr", "reason": "..."}``."""

    field: str
    reason: str


class DomainError(Exception):
    """A request the domain refuses, with what to tell the caller.

    Attributes:
        status: the HTTP status code it maps to.
        title: a short, fixed summary of the kind of problem.
        code: a stable machine-readable name (the problem's ``type`` suffix).
        detail: a sentence about this occurrence.
        errors: one ``{"field", "reason"}`` per rejected input, possibly empty.
    """

    status: ClassVar[int] = 400
    title: ClassVar[str] = "Bad request"
    code: ClassVar[str] = "bad-request"

    def __init__(
        self,
        detail: str,
        *,
        errors: Sequence[FieldError] = (),
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors: list[FieldError] = list(errors)
        self.headers: dict[str, str] = dict(headers or {})
        """Response headers the error calls for (``Retry-After``)."""

    def to_problem(self) -> dict[str, Any]:
        """The ``application/problem+json`` body of this error."""
        body: dict[str, Any] = {
            "type": f"urn:clr-sweep:problem:{self.code}",
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        if self.errors:
            body["errors"] = [dict(e) for e in self.errors]
        return body


class Unauthorized(DomainError):
    """The caller did not prove which team it acts for."""

    status = 401
    title = "Unauthorized"
    code = "unauthorized"


class NotFound(DomainError):
    """Something named by the request does not exist for the caller."""

    status = 404
    title = "Not found"
    code = "not-found"


class JobNotFound(NotFound):
    """No job with that id belongs to the caller's team."""

    title = "Job not found"
    code = "job-not-found"


class NoBoundsForConfiguration(JobNotFound):
    """No successful range test of the asked configuration has bounds.

    Attributes:
        configurations: the workload's configurations that do have bounds, newest
            first (each as :meth:`core.specs.RangeTestSpec.configuration` gives it).
    """

    title = "No bounds for this configuration"
    code = "no-bounds-for-configuration"

    def __init__(
        self,
        detail: str,
        *,
        configurations: Sequence[Mapping[str, Any]] = (),
        errors: Sequence[FieldError] = (),
    ) -> None:
        super().__init__(detail, errors=errors)
        self.configurations = [dict(c) for c in configurations]


class TeamNotFound(NotFound):
    """No team with that name or id."""

    title = "Team not found"
    code = "team-not-found"


class TokenNotFound(NotFound):
    """No token with that id belongs to the team."""

    title = "Token not found"
    code = "token-not-found"


class Conflict(DomainError):
    """The request is valid but the current state does not allow it."""

    status = 409
    title = "Conflict"
    code = "conflict"


class JobConflict(Conflict):
    """The job's status does not allow the action (cancelling a finished job, ...)."""

    title = "Job conflict"
    code = "job-conflict"


class NotAClientJob(JobConflict):
    """The job is run by the service's workers: it takes no uploads from a team."""

    title = "Not a client job"
    code = "not-a-client-job"


class JobCancelled(JobConflict):
    """The job was cancelled: its client should stop sending."""

    title = "Job cancelled"
    code = "cancelled"


class UploadConflict(JobConflict):
    """Uploaded points leave a gap after the stored ones, or differ from them."""

    title = "Upload conflict"
    code = "upload-conflict"


class NotReady(Conflict):
    """The job has not produced what was asked for yet; ask again later."""

    title = "Not ready"
    code = "not-ready"


class TeamNameTaken(Conflict):
    """Another team already has that name."""

    title = "Team name taken"
    code = "team-name-taken"


class TooManyRequests(DomainError):
    """The caller is over a rate or a cap; ``headers`` say when to try again."""

    status = 429
    title = "Too many requests"
    code = "too-many-requests"


class TooManyActiveJobs(TooManyRequests):
    """The team already has as many queued and running jobs as it may."""

    title = "Too many active jobs"
    code = "too-many-active-jobs"


class InvalidInput(DomainError):
    """Some input is not acceptable; ``errors`` names each field and why."""

    status = 422
    title = "Invalid input"
    code = "invalid-input"


class InvalidJobSpec(InvalidInput):
    """The job spec, or its kind, is not acceptable."""

    title = "Invalid job spec"
    code = "invalid-job-spec"


class JobTooLarge(InvalidJobSpec):
    """The job's estimated memory or run time is over a configured cap."""

    title = "Job too large"
    code = "job-too-large"


class IdempotencyConflict(InvalidInput):
    """An ``Idempotency-Key`` was reused with a different request."""

    title = "Idempotency-Key reused"
    code = "idempotency-conflict"


class ArtifactNotFound(NotFound):
    """The job has no ready artifact of that name (or it went while being read)."""

    title = "Artifact not found"
    code = "artifact-not-found"


class ArtifactTooLarge(DomainError):
    """An artifact grew past the configured cap (``CLR_MAX_ARTIFACT_BYTES``).

    Attributes:
        name: the artifact's name.
        size: the bytes it would have held with the refused write.
        limit: the cap, in bytes.
    """

    status = 413
    title = "Artifact too large"
    code = "artifact-too-large"

    def __init__(self, detail: str, *, name: str, size: int, limit: int) -> None:
        super().__init__(detail)
        self.name = name
        self.size = size
        self.limit = limit

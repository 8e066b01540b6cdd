"""A training's stored weights: the final model and the snapshot ensemble's members.

A training's worker stores the final weights as artifact ``model`` and the
ensemble's snapshots as ``snapshot-1`` (the oldest kept) to ``snapshot-<k>``
(:mod:`worker.kinds.training`). :func:`find_training_model` checks, in the
caller's transaction, that the team may have one and that it exists;
:func:`stream_training_model` then streams its bytes chunk by chunk, each chunk
read in a short transaction of its own, so a download of a large model holds no
transaction (nor a connection) while it is sent.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker

from core.artifacts import ArtifactStream, artifact_info, stream_artifact
from core.errors import ArtifactNotFound, JobConflict, NotReady
from core.models import JobStatus, Team
from core.services.jobs import get_job
from core.settings import Settings
from core.training import TrainingOutcome, TrainingSpec

__all__ = [
    "MODEL_ARTIFACT",
    "TrainingModel",
    "find_training_model",
    "model_artifact_name",
    "stream_training_model",
]

MODEL_ARTIFACT = "model"
"""The artifact holding a training's final weights (a ``torch.save``'d state dict)."""


def model_artifact_name(snapshot: int | None = None) -> str:
    """The artifact of the final weights, or of the ensemble's ``snapshot``-th member."""
    return MODEL_ARTIFACT if snapshot is None else f"snapshot-{snapshot}"


@dataclass(frozen=True)
class TrainingModel:
    """Weights of a training that may be downloaded.

    Attributes:
        job_id: the training.
        name: the artifact (``model``, ``snapshot-2``).
        size: its bytes.
        sha256: their hex digest.
        filename: what a download saves it as.
    """

    job_id: uuid.UUID
    name: str
    size: int
    sha256: str | None
    filename: str


def _filename(workload: str | None, job_id: uuid.UUID, name: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", workload or "training")
    return f"{stem}-{job_id.hex[:8]}-{name}.pt"


def find_training_model(
    session: Session, *, team: Team, job_id: uuid.UUID, snapshot: int | None = None
) -> TrainingModel:
    """The final weights of one of the team's succeeded trainings, or a snapshot's.

    Args:
        session: the caller's unit of work.
        team: the team asking.
        job_id: the training.
        snapshot: the ensemble's ``snapshot``-th member (1 is the oldest kept)
            instead of the final weights.

    Raises:
        JobNotFound: no such training for this team (another kind's id too).
        NotReady: the training is queued or running (409).
        JobConflict: it failed or was cancelled: it stored no final weights (409).
        ArtifactNotFound: no such snapshot (``errors`` names ``snapshot``), or the
            weights are not stored (404).
    """
    job = get_job(session, team=team, job_id=job_id, kind=TrainingSpec.kind)
    status = JobStatus(job.status)
    if status in (JobStatus.QUEUED, JobStatus.RUNNING):
        raise NotReady(f"training {job.id} is {status}; its model is stored once it has succeeded")
    if status != JobStatus.SUCCEEDED or job.result is None:
        raise JobConflict(f"training {job.id} {status}: it stored no final model")
    if snapshot is not None:
        kept = TrainingOutcome.model_validate(job.result).ensemble_size
        if not 1 <= snapshot <= kept:
            reason = (
                f"training {job.id} kept {kept} snapshots (1 to {kept})"
                if kept
                else f"training {job.id} kept no snapshots (its ensemble is off or it ran "
                "fewer than 2 cycles)"
            )
            raise ArtifactNotFound(reason, errors=[{"field": "snapshot", "reason": reason}])
    name = model_artifact_name(snapshot)
    artifact = artifact_info(session, job.id, name)
    return TrainingModel(
        job_id=job.id,
        name=name,
        size=artifact.size,
        sha256=artifact.sha256,
        filename=_filename(job.workload, job.id, name),
    )


def stream_training_model(
    factory: sessionmaker[Session], settings: Settings, model: TrainingModel
) -> ArtifactStream:
    """The bytes of ``model`` (:func:`find_training_model`'s), a chunk at a time.

    Raises:
        ArtifactNotFound: it is no longer stored.
    """
    return stream_artifact(factory, settings, model.job_id, model.name)

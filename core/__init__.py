"""core: the clr-sweep domain shared by the API and the workers.

Settings, the database (engine, sessions, ORM models, Alembic helpers), the job
specs both sides agree on, the repositories (all SQL) and the services (the job
lifecycle: submit, claim, heartbeat, progress, finish, cancel, reconcile). It
imports clr, SQLAlchemy and pydantic; never a web framework or a task queue
(an import-linter contract enforces it): a job leaves through the pluggable
sender in :mod:`core.db`.
"""

# Every kind registers on import, and core.training, core.sweeps and core.kinds import one
# another: loading the registry first lets any of them be imported first.
import core.kinds  # noqa: E402, F401

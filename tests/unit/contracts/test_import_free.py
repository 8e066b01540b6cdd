"""``clr_sweep.contracts`` loads neither torch nor the service: a client installs light.

A fresh interpreter imports the package and reports which top-level modules
it loaded; none of the service's (nor ``clr``, nor the domain) may be among
them. import-linter checks the imports statically; this checks what importing
really loads (an indirect import through a third-party package counts too).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

FORBIDDEN = (
    "torch",
    "sqlalchemy",
    "clr",
    "core",
    "api",
    "worker",
    "cli",
    "fastapi",
    "starlette",
    "celery",
    "kombu",
    "redis",
    "alembic",
    "psycopg",
    "matplotlib",
)

SCRIPT = textwrap.dedent(
    """
    import json, sys

    import clr_sweep.contracts as contracts

    contracts.RangeTestSpec(workload="my_model", start_lr=1e-4, end_lr=1.0)
    contracts.TrainingSpec(workload="my_model", schedule={"policy": "triangular2"})
    contracts.SweepSpec(workload="my_model", step_size=10)
    print(json.dumps(sorted({name.split(".")[0] for name in sys.modules})))
    """
)


def test_importing_the_contracts_loads_no_torch_no_service_and_no_domain() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    loaded = set(json.loads(done.stdout.strip().splitlines()[-1]))
    assert "clr_sweep" in loaded
    assert "pydantic" in loaded
    assert sorted(loaded & set(FORBIDDEN)) == []

"""The API process never imports torch (about 275 MB resident, seconds of import).

The API validates specs against the workload registry, reads stored curves and
bounds and draws plots: none of that needs a model. A fresh interpreter builds
the app the way ``clr-sweep api`` does (:func:`cli.service.build_api`) and
answers a request of each kind, then reports whether torch was imported. The
``clr`` names it does not use must still import on demand.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from sqlalchemy.orm import Session

import clr
from core.db import create_db_engine
from core.services import claim_job, create_token, finish_job, report_progress
from tests import database
from tests.builders import curve, make_job, make_outcome, make_points, make_team, spec_data

SCRIPT = textwrap.dedent(
    """
    import json, sys, warnings

    from cli.service import build_api
    from core.settings import get_settings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from starlette.testclient import TestClient

    job_id, token, spec = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    auth = {"Authorization": f"Bearer {token}"}
    app = build_api(get_settings())
    with TestClient(app) as client:
        answers = {
            "workloads": client.get("/workloads").status_code,
            "submit": client.post("/range-tests", json=spec, headers=auth).status_code,
            "bad_param": client.post(
                "/range-tests", json={**spec, "params": {"width": 0}}, headers=auth
            ).status_code,
            "job": client.get(f"/range-tests/{job_id}", headers=auth).status_code,
            "list": client.get("/range-tests", headers=auth).status_code,
            "curve": client.get(f"/range-tests/{job_id}/curve", headers=auth).status_code,
            "bounds": client.get(f"/range-tests/{job_id}/bounds", headers=auth).status_code,
        }
        plot = client.get(f"/range-tests/{job_id}/plot.png", headers=auth)
        answers["plot"] = plot.status_code
        answers["plot_is_png"] = plot.content.startswith(b"\\x89PNG")
        # a curve run in the team's own loop: the API suggests its bounds itself
        own = client.post(
            "/range-tests",
            json={"source": "client", "model": "m", "dataset": "d", "batch_size": 8,
                  "start_lr": 1e-4, "end_lr": 1.0, "num_iter": 100},
            headers=auth,
        ).json()["id"]
        lrs = [1e-4 * 1e4 ** (i / 99) for i in range(100)]
        losses = [2.0 - 1.5 * i / 60 if i < 60 else 0.5 + (i - 60) ** 2 / 100 for i in range(100)]
        values = {"lr": lrs, "loss": losses, "smoothed_loss": losses}
        answers["upload"] = client.post(
            f"/jobs/{own}/series/curve", json={"start": 0, "values": values}, headers=auth
        ).status_code
        answers["finish"] = client.post(
            f"/jobs/{own}/finish", json={"status": "succeeded"}, headers=auth
        ).json()["status"]
    torch = sorted(name for name in sys.modules if name.split(".")[0] == "torch")
    print(json.dumps({"answers": answers, "torch": torch[:5]}))
    """
)


@pytest.fixture
def embedded_db(tmp_path: Path) -> tuple[dict[str, str], str, str]:
    """An embedded-mode data folder with a migrated SQLite database; a finished job.

    Returns the service's environment, the job id and a token of its team.
    """
    url = f"sqlite:///{tmp_path / 'clr-sweep.db'}"
    database.migrate(url)
    engine = create_db_engine(url)
    try:
        with Session(engine, expire_on_commit=False) as session:
            team = make_team(session)
            secret = create_token(session, team=team, name="tests").secret
            job = make_job(session, team=team)
            claimed = claim_job(session, job_id=job.id, worker="w", device="cpu")
            assert claimed is not None
            report_progress(session, job_id=job.id, attempt=1, **curve(make_points(0, 80)))
            assert finish_job(session, job_id=job.id, attempt=1, result=make_outcome())
            session.commit()
    finally:
        engine.dispose()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLR_")}
    env.update(CLR_DATA_DIR=str(tmp_path), CLR_DATABASE_URL=url, MPLBACKEND="Agg")
    return env, str(job.id), secret


def test_the_api_answers_every_kind_of_request_without_importing_torch(
    embedded_db: tuple[dict[str, str], str, str],
) -> None:
    env, job_id, token = embedded_db
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, job_id, token, json.dumps(spec_data())],
        env=env,
        capture_output=True,
        text=True,
        timeout=100,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["answers"] == {
        "workloads": 200,
        "submit": 202,
        "bad_param": 422,
        "job": 200,
        "list": 200,
        "curve": 200,
        "bounds": 200,
        "plot": 200,
        "plot_is_png": True,
        "upload": 200,
        "finish": "succeeded",
    }
    assert report["torch"] == [], f"the API imported torch: {report['torch']}"


def test_every_public_clr_name_still_imports() -> None:
    # the lazy names resolve to the objects of their modules, and dir() lists them
    from clr.range_test import RangeTest
    from clr.schedules import CyclicLR

    assert clr.RangeTest is RangeTest
    assert clr.CyclicLR is CyclicLR
    for name in clr.__all__:
        assert getattr(clr, name) is not None, name
    assert set(clr.__all__) <= set(dir(clr))
    with pytest.raises(AttributeError, match="no_such_name"):
        _ = clr.no_such_name

"""`clr-sweep db upgrade`, `team create` and `token create | list | revoke` against a real
SQLite database (and the API on it)."""

from __future__ import annotations

import json
import re

import pytest
from typer.testing import CliRunner

from cli.exit_codes import ExitCode
from cli.main import app
from cli.service import build_api
from core.db import make_engine, make_session_factory, session_scope
from core.migrate import is_at_head
from core.services import authenticate
from core.settings import Settings, get_settings
from tests.api.conftest import TestClient

runner = CliRunner()


@pytest.fixture
def settings(tmp_path, monkeypatch) -> Settings:
    monkeypatch.setenv("COLUMNS", "160")  # whole table rows, one per line
    monkeypatch.setenv("CLR_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("CLR_DATABASE_URL", raising=False)
    get_settings.cache_clear()
    yield get_settings()
    get_settings.cache_clear()


class TestServiceCommands:
    def test_db_upgrade_migrates_a_new_data_dir_to_head(self, settings):
        result = runner.invoke(app, ["db", "upgrade"])
        assert result.exit_code == 0, result.output
        engine = make_engine(settings)
        try:
            assert is_at_head(engine)
        finally:
            engine.dispose()

    def test_team_and_token_creation_gives_a_working_token(self, settings):
        assert runner.invoke(app, ["db", "upgrade"]).exit_code == 0
        created = runner.invoke(app, ["team", "create", "vision"])
        assert created.exit_code == 0, created.output
        issued = runner.invoke(app, ["token", "create", "--team", "vision"])
        assert issued.exit_code == 0, issued.output
        secret = issued.stdout.strip().splitlines()[-1]
        assert secret.startswith("clr_")
        as_json = runner.invoke(app, ["token", "create", "--team", "vision", "--json"])
        doc = json.loads(as_json.stdout)
        assert (doc["team"], doc["name"]) == ("vision", "cli")
        assert doc["secret"].startswith("clr_")
        assert doc["secret"] != secret
        engine = make_engine(settings)
        try:
            with session_scope(make_session_factory(engine)) as session:
                assert authenticate(session, token=secret).name == "vision"
        finally:
            engine.dispose()

    @pytest.mark.usefixtures("settings")
    def test_a_taken_team_name_is_a_conflict_with_the_reason(self):
        assert runner.invoke(app, ["db", "upgrade"]).exit_code == 0
        assert runner.invoke(app, ["team", "create", "vision"]).exit_code == 0
        again = runner.invoke(app, ["team", "create", "vision", "--json"])
        assert again.exit_code == ExitCode.CONFLICT
        assert "already exists" in again.stderr
        assert json.loads(again.stdout)["error"]["status"] == 409

    @pytest.mark.usefixtures("settings")
    def test_a_token_for_an_unknown_team_is_not_found(self):
        assert runner.invoke(app, ["db", "upgrade"]).exit_code == 0
        result = runner.invoke(app, ["token", "create", "--team", "nobody"])
        assert result.exit_code == ExitCode.NOT_FOUND
        assert "no team named 'nobody'" in result.output


class TestTokenListAndRevoke:
    def test_list_shows_no_secret_and_a_revoked_token_is_refused_at_once(self, settings):
        assert runner.invoke(app, ["db", "upgrade"]).exit_code == 0
        assert runner.invoke(app, ["team", "create", "vision"]).exit_code == 0
        issued = runner.invoke(app, ["token", "create", "--team", "vision", "--name", "ci"])
        secret = issued.output.strip().splitlines()[-1]
        api = TestClient(build_api(settings))
        headers = {"Authorization": f"Bearer {secret}"}
        assert api.get("/range-tests", headers=headers).status_code == 200

        listed = runner.invoke(app, ["token", "list", "--team", "vision"])
        assert listed.exit_code == 0, listed.output
        assert secret not in listed.output
        as_json = runner.invoke(app, ["token", "list", "--team", "vision", "--json"])
        (item,) = json.loads(as_json.stdout)["items"]
        assert (item["name"], item["revoked_at"]) == ("ci", None)
        assert secret.startswith(item["prefix"])
        assert secret[:8] in listed.output
        (row,) = [line for line in listed.output.splitlines() if " ci " in line]
        token_id = re.search(r"[0-9a-f]{8}-[0-9a-f-]{27}", row)
        assert token_id is not None, listed.output
        assert row.rstrip(" │").endswith("-")  # not revoked

        revoked = runner.invoke(app, ["token", "revoke", token_id[0], "--team", "vision"])
        assert revoked.exit_code == 0, revoked.output
        assert "revoked" in revoked.output
        refused = api.get("/range-tests", headers=headers)
        assert refused.status_code == 401
        assert "revoked" in refused.json()["detail"]
        relisted = runner.invoke(app, ["token", "list", "--team", "vision"])
        (row,) = [line for line in relisted.output.splitlines() if " ci " in line]
        assert not row.rstrip(" │").endswith("-")  # its revocation time

    @pytest.mark.usefixtures("settings")
    def test_revoking_another_teams_or_a_malformed_id_exits_2(self):
        assert runner.invoke(app, ["db", "upgrade"]).exit_code == 0
        for team in ("vision", "audio"):
            assert runner.invoke(app, ["team", "create", team]).exit_code == 0
        assert runner.invoke(app, ["token", "create", "--team", "vision"]).exit_code == 0
        listed = runner.invoke(app, ["token", "list", "--team", "vision"])
        token_id = re.search(r"[0-9a-f]{8}-[0-9a-f-]{27}", listed.output)
        assert token_id is not None
        other = runner.invoke(app, ["token", "revoke", token_id[0], "--team", "audio"])
        assert other.exit_code == ExitCode.NOT_FOUND
        assert "not found" in other.output
        malformed = runner.invoke(app, ["token", "revoke", "nope", "--team", "vision"])
        assert malformed.exit_code == ExitCode.INVALID
        assert "not a token id" in malformed.output

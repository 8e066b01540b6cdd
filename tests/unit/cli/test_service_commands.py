"""`clr-sweep db upgrade`, `team create` and `token create` against a real SQLite database."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from cli.main import app
from sweep.db import make_engine, make_session_factory, session_scope
from sweep.migrate import is_at_head
from sweep.services import authenticate
from sweep.settings import Settings, get_settings

runner = CliRunner()


@pytest.fixture
def settings(tmp_path, monkeypatch) -> Settings:
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
        secret = issued.output.strip().splitlines()[-1]
        assert secret.startswith("clr_")
        engine = make_engine(settings)
        try:
            with session_scope(make_session_factory(engine)) as session:
                assert authenticate(session, token=secret).name == "vision"
        finally:
            engine.dispose()

    @pytest.mark.usefixtures("settings")
    def test_a_taken_team_name_exits_2_with_the_reason(self):
        assert runner.invoke(app, ["db", "upgrade"]).exit_code == 0
        assert runner.invoke(app, ["team", "create", "vision"]).exit_code == 0
        again = runner.invoke(app, ["team", "create", "vision"])
        assert again.exit_code == 2
        assert "already exists" in again.output

    @pytest.mark.usefixtures("settings")
    def test_a_token_for_an_unknown_team_exits_2(self):
        assert runner.invoke(app, ["db", "upgrade"]).exit_code == 0
        result = runner.invoke(app, ["token", "create", "--team", "nobody"])
        assert result.exit_code == 2
        assert "no team named 'nobody'" in result.output

"""Settings: embedded defaults, URL normalisation, impossible combinations, caching."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from core.settings import REDIS_VISIBILITY_MARGIN_S, Settings, get_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # no CLR_* variable or .env file of the machine leaks into these tests
    for name in list(os.environ):
        if name.startswith("CLR_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


class TestDefaults:
    def test_embedded_mode_keeps_everything_in_the_data_dir(self, tmp_path: Path) -> None:
        settings = Settings(_env_file=None)
        assert settings.data_dir == tmp_path / ".clr-sweep"
        assert settings.db_url == f"sqlite:///{tmp_path}/.clr-sweep/clr-sweep.db"
        assert settings.broker == "filesystem://"
        assert settings.broker_transport_options == {
            "data_folder_in": f"{tmp_path}/.clr-sweep/broker/queue",
            "data_folder_out": f"{tmp_path}/.clr-sweep/broker/queue",
            "control_folder": f"{tmp_path}/.clr-sweep/broker/control",
            "polling_interval": 0.1,
        }

    def test_timing_defaults(self) -> None:
        settings = Settings(_env_file=None)
        assert (settings.heartbeat_interval_s, settings.heartbeat_timeout_s) == (5, 60)
        assert settings.queued_resend_after_s == 30
        assert settings.queued_resend_max_s == 600
        assert settings.worker_prune_after_s == 86_400
        assert settings.max_attempts == 3
        assert settings.job_time_limit_s == 6 * 3600

    def test_relative_data_dir_is_made_absolute(self, tmp_path: Path) -> None:
        assert Settings(_env_file=None, data_dir=Path("data")).data_dir == tmp_path / "data"


class TestEnvironment:
    def test_reads_clr_prefixed_variables(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("CLR_MAX_ATTEMPTS", "5")
        monkeypatch.setenv("CLR_BROKER_URL", "redis://127.0.0.1:6379/0")
        monkeypatch.setenv("CLR_JOB_TIME_LIMIT_S", "100")
        settings = Settings(_env_file=None)
        assert settings.max_attempts == 5
        assert settings.broker == "redis://127.0.0.1:6379/0"
        assert settings.broker_transport_options == {
            "visibility_timeout": 100 + REDIS_VISIBILITY_MARGIN_S,
            "socket_timeout": 5.0,
            "socket_connect_timeout": 5.0,
        }

    def test_reads_a_dotenv_file_and_ignores_unknown_names(self, tmp_path: Path) -> None:
        (tmp_path / ".env").write_text("CLR_MAX_ATTEMPTS=7\nCLR_UNKNOWN=1\nOTHER=2\n")
        assert Settings().max_attempts == 7

    def test_blank_urls_mean_the_defaults(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("CLR_DATABASE_URL", "  ")
        monkeypatch.setenv("CLR_BROKER_URL", "")
        settings = Settings(_env_file=None)
        assert settings.database_url is None
        assert settings.db_url.startswith("sqlite:///")
        assert settings.broker == "filesystem://"

    def test_get_settings_is_cached(self, monkeypatch: pytest.MonkeyPatch) -> None:
        get_settings.cache_clear()
        monkeypatch.setenv("CLR_MAX_ATTEMPTS", "4")
        try:
            first = get_settings()
            monkeypatch.setenv("CLR_MAX_ATTEMPTS", "9")
            assert get_settings() is first
            assert first.max_attempts == 4
        finally:
            get_settings.cache_clear()


class TestDatabaseUrl:
    @pytest.mark.parametrize(
        ("given", "expected"),
        [
            ("postgres://u:p@db:5432/clr", "postgresql+psycopg://u:p@db:5432/clr"),
            ("postgresql://u@db/clr", "postgresql+psycopg://u@db/clr"),
            ("postgresql+psycopg://u@db/clr", "postgresql+psycopg://u@db/clr"),
            ("sqlite:////var/lib/clr.db", "sqlite:////var/lib/clr.db"),
            ("sqlite+pysqlite:///rel.db", "sqlite+pysqlite:///rel.db"),
        ],
    )
    def test_normalises_to_the_psycopg_driver(self, given: str, expected: str) -> None:
        settings = Settings(_env_file=None, database_url=given)
        assert settings.database_url == expected
        assert settings.db_url == expected

    @pytest.mark.parametrize(
        "given", ["mysql://u@db/clr", "postgresql+psycopg2://u@db/clr", "not a url"]
    )
    def test_other_databases_are_refused_naming_the_variable(self, given: str) -> None:
        with pytest.raises(ValidationError, match="CLR_DATABASE_URL must be a postgresql"):
            Settings(_env_file=None, database_url=given)


class TestImpossibleCombinations:
    def test_heartbeat_timeout_must_exceed_interval(self) -> None:
        with pytest.raises(
            ValidationError, match="CLR_HEARTBEAT_TIMEOUT_S must exceed CLR_HEARTBEAT_INTERVAL_S"
        ):
            Settings(_env_file=None, heartbeat_interval_s=10, heartbeat_timeout_s=10)

    def test_resend_cap_below_the_first_wait_is_refused(self) -> None:
        with pytest.raises(
            ValidationError,
            match="CLR_QUEUED_RESEND_MAX_S must be at least CLR_QUEUED_RESEND_AFTER_S",
        ):
            Settings(_env_file=None, queued_resend_after_s=30, queued_resend_max_s=29)

    def test_pruning_workers_before_they_are_offline_is_refused(self) -> None:
        with pytest.raises(
            ValidationError, match="CLR_WORKER_PRUNE_AFTER_S must exceed CLR_HEARTBEAT_TIMEOUT_S"
        ):
            Settings(_env_file=None, heartbeat_timeout_s=60, worker_prune_after_s=60)

    def test_timeout_just_above_interval_is_accepted(self) -> None:
        settings = Settings(_env_file=None, heartbeat_interval_s=10, heartbeat_timeout_s=10.5)
        assert settings.heartbeat_timeout_s == 10.5

    @pytest.mark.parametrize(
        ("field", "value"),
        [
            ("heartbeat_interval_s", 0),
            ("queued_resend_after_s", -1),
            ("queued_resend_max_s", 0),
            ("worker_prune_after_s", float("nan")),
            ("max_attempts", 0),
            ("job_time_limit_s", 0),
            ("heartbeat_timeout_s", float("inf")),
        ],
    )
    def test_out_of_range_values_are_refused(self, field: str, value: float) -> None:
        with pytest.raises(ValidationError) as info:
            Settings(_env_file=None, **{field: value})
        assert info.value.errors()[0]["loc"] == (field,)

"""docker-compose.yml, the Dockerfile and the installed package, read without Docker.

No Docker engine runs here, so these tests read the files: the compose services,
their order and healthchecks, the GPU reservation, the commands (the ones
``tests/deploy/commands.py`` lists, parsed by the real CLI), the settings the
environment names, and the image's build steps. The last class builds the wheel
and checks that an installed copy finds its migrations, as the image's
``clr-sweep db upgrade`` must.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import typer
import yaml

import cli.main
from core.migrate import head_revision
from core.settings import Settings
from tests.deploy.commands import API_PORT, CONSOLE_SCRIPT, SERVICE_COMMANDS

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, Any] = COMPOSE["services"]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
APP_SERVICES = sorted(SERVICE_COMMANDS)
LONG_RUNNING = sorted(set(SERVICE_COMMANDS) - {"migrate"})


def _interpolate(value: str) -> str:
    """Compose's ``${NAME:-default}`` with the defaults (the host's variables ignored)."""
    return re.sub(r"\$\{(\w+)(?::?-([^}]*))?\}", lambda m: m.group(2) or "", value)


def _environment(service: str) -> dict[str, str]:
    env = SERVICES[service].get("environment", {})
    if isinstance(env, list):  # the "NAME=value" form
        env = dict(item.split("=", 1) for item in env)
    return {name: _interpolate(str(value)) for name, value in env.items()}


def _settings_kwargs(env: dict[str, str]) -> dict[str, Any]:
    """``CLR_<NAME>`` variables as ``Settings`` keyword arguments."""
    return {name.removeprefix("CLR_").lower(): value for name, value in env.items()}


def _packages() -> list[str]:
    """The top-level packages ``pip install .`` installs (pyproject's find include)."""
    include: list[str] = PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]
    return [pattern.rstrip("*") for pattern in include]


def _dockerfile() -> list[tuple[str, str]]:
    """The Dockerfile's instructions as (KEYWORD, arguments), continuations joined."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in (ROOT / "Dockerfile").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, args = (pending + line).partition(" ")
        instructions.append((keyword.upper(), args.strip()))
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"
    return instructions


def _dockerignored(path: str) -> bool:
    """Whether .dockerignore keeps ``path`` (or a folder above it) out of the context."""
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    parts = path.strip("/").split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        alternatives = [pattern, pattern[3:]] if pattern.startswith("**/") else [pattern]
        if any(fnmatch.fnmatch(c, p) for c in candidates for p in alternatives):
            ignored = not negated
    return ignored


class TestServices:
    def test_every_service_is_there(self):
        assert {"postgres", "redis", "migrate", "api", "worker", "reaper"} <= set(SERVICES)

    def test_the_project_services_are_exactly_those_with_a_known_command(self):
        built_here = {name for name, service in SERVICES.items() if "build" in service}
        assert built_here == set(SERVICE_COMMANDS)

    @pytest.mark.parametrize("name", APP_SERVICES)
    def test_every_project_service_runs_the_image_built_from_this_folder(self, name):
        build = SERVICES[name]["build"]
        context = build if isinstance(build, str) else build.get("context", ".")
        dockerfile = (
            "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
        )
        assert (ROOT / context / dockerfile).resolve() == ROOT / "Dockerfile"

    def test_postgres_is_healthy_only_once_it_accepts_connections(self):
        check = SERVICES["postgres"]["healthcheck"]["test"]
        assert "pg_isready" in " ".join(check)

    def test_redis_is_healthy_only_once_it_answers_ping(self):
        check = SERVICES["redis"]["healthcheck"]["test"]
        assert "redis-cli ping" in " ".join(check)

    def test_redis_persists_with_an_append_only_file_on_a_volume(self):
        redis = SERVICES["redis"]
        command = redis["command"]
        assert command[command.index("--appendonly") + 1] == "yes"
        assert any(str(volume).endswith(":/data") for volume in redis["volumes"])

    @pytest.mark.parametrize(
        ("service", "mount"),
        [
            ("postgres", "/var/lib/postgresql/data"),
            ("redis", "/data"),
        ],
    )
    def test_stateful_services_keep_their_data_in_named_volumes(self, service, mount):
        named = set(COMPOSE.get("volumes") or {})
        sources = [
            str(v).split(":")[0] for v in SERVICES[service]["volumes"] if f":{mount}" in str(v)
        ]
        assert sources, f"{service} has no volume at {mount}"
        assert set(sources) <= named


class TestOrdering:
    def test_migrate_is_one_shot(self):
        assert SERVICES["migrate"].get("restart", "no") in ("no", "on-failure")

    def test_migrate_waits_for_a_healthy_postgres(self):
        depends = SERVICES["migrate"]["depends_on"]
        assert depends["postgres"]["condition"] == "service_healthy"

    @pytest.mark.parametrize("name", LONG_RUNNING)
    def test_long_running_services_wait_for_the_migration_to_succeed(self, name):
        depends = SERVICES[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully"
        assert depends["postgres"]["condition"] == "service_healthy"
        assert depends["redis"]["condition"] == "service_healthy"

    @pytest.mark.parametrize("name", LONG_RUNNING)
    def test_long_running_services_restart(self, name):
        assert SERVICES[name].get("restart") in ("always", "unless-stopped", "on-failure")


class TestCommands:
    @pytest.mark.parametrize("name", APP_SERVICES)
    def test_each_service_runs_its_listed_command(self, name):
        assert SERVICES[name]["command"] == SERVICE_COMMANDS[name]

    @pytest.mark.parametrize("name", APP_SERVICES)
    def test_each_command_parses_with_the_real_cli(self, name):
        # Parsed as the console script would, without running anything: groups are
        # walked through their sub-commands, and the last one parses its own
        # arguments (an unknown option, a missing or extra argument raise a usage
        # error). Duck-typed: typer >= 0.25 vendors its own copy of click.
        argv = list(SERVICE_COMMANDS[name])
        command: Any = typer.main.get_command(cli.main.app)
        parent: Any = None
        info_name = CONSOLE_SCRIPT
        while hasattr(command, "commands"):
            assert argv, f"{name}: `{info_name}` needs a sub-command"
            parent = command.context_class(command, info_name=info_name, parent=parent)
            info_name = argv.pop(0)
            sub = command.commands.get(info_name)
            assert sub is not None, (
                f"{name}: `{CONSOLE_SCRIPT}` has no command {info_name!r} "
                f"(it has {sorted(command.commands)})"
            )
            command = sub
        with command.make_context(info_name, argv, parent=parent) as ctx:
            assert ctx.command is command

    def test_the_api_publishes_the_port_it_listens_on(self):
        command = SERVICES["api"]["command"]
        port = command[command.index("--port") + 1]
        assert port == str(API_PORT)
        published = [str(p).rsplit(":", 1)[-1] for p in SERVICES["api"]["ports"]]
        assert port in published

    def test_the_api_is_healthy_only_when_ready(self):
        check = " ".join(SERVICES["api"]["healthcheck"]["test"])
        assert f"127.0.0.1:{API_PORT}/readyz" in check or f"localhost:{API_PORT}/readyz" in check
        # python:3.11-slim has no curl or wget: the check must run with Python itself
        assert check.startswith(("CMD python", "CMD-SHELL python"))
        assert "urllib.request" in check


class TestGpuReservation:
    def _devices(self) -> list[dict[str, Any]]:
        devices: list[dict[str, Any]] = SERVICES["worker"]["deploy"]["resources"]["reservations"][
            "devices"
        ]
        return devices

    def test_the_worker_reserves_nvidia_gpus(self):
        (device,) = self._devices()
        assert device["driver"] == "nvidia"
        assert "gpu" in device["capabilities"]
        assert "count" in device or "device_ids" in device

    def test_the_worker_reserves_every_gpu_it_runs_on(self):
        command = SERVICES["worker"]["command"]
        gpus = command[command.index("--gpus") + 1].split(",")
        (device,) = self._devices()
        if "device_ids" in device:
            reserved = len(device["device_ids"])
        else:
            reserved = 10**6 if device["count"] == "all" else int(device["count"])
        # the container numbers its GPUs from 0, whatever their ids on the host
        assert all(0 <= int(gpu) < reserved for gpu in gpus)

    @pytest.mark.parametrize("name", ["api", "migrate", "reaper", "postgres", "redis"])
    def test_only_the_worker_holds_a_gpu(self, name):
        assert "devices" not in str(SERVICES[name].get("deploy", {}))


class TestEnvironment:
    @pytest.mark.parametrize("name", APP_SERVICES)
    def test_every_variable_is_a_setting(self, name):
        fields = {f"CLR_{field.upper()}" for field in Settings.model_fields}
        assert set(_environment(name)) <= fields

    @pytest.mark.parametrize("name", APP_SERVICES)
    def test_every_service_uses_postgres_and_redis(self, name):
        settings = Settings(_env_file=None, **_settings_kwargs(_environment(name)))
        postgres = _environment("postgres")
        db = urlsplit(settings.db_url)
        assert db.scheme == "postgresql+psycopg"
        assert (db.hostname, db.port) == ("postgres", 5432)
        assert (db.username, db.password) == (
            postgres["POSTGRES_USER"],
            postgres["POSTGRES_PASSWORD"],
        )
        assert db.path == "/" + postgres["POSTGRES_DB"]
        broker = urlsplit(settings.broker)
        assert (broker.scheme, broker.hostname) == ("redis", "redis")

    @pytest.mark.parametrize("name", APP_SERVICES)
    def test_every_service_agrees_on_the_settings(self, name):
        assert _environment(name) == _environment("api")

    def test_redis_redelivers_only_after_the_job_time_limit(self):
        settings = Settings(_env_file=None, **_settings_kwargs(_environment("worker")))
        assert "CLR_JOB_TIME_LIMIT_S" in _environment("worker")
        assert settings.broker_transport_options["visibility_timeout"] > settings.job_time_limit_s


class TestDockerfile:
    def test_the_base_image_is_the_projects_python(self):
        (base,) = [args for keyword, args in _dockerfile() if keyword == "FROM"]
        python = PYPROJECT["tool"]["mypy"]["python_version"]
        assert base == f"python:{python}-slim"

    def test_torch_is_installed_before_anything_else(self):
        installs = [
            (i, args)
            for i, (keyword, args) in enumerate(_dockerfile())
            if keyword == "RUN" and "pip install" in args
        ]
        assert installs, "the Dockerfile installs nothing"
        assert "torch==" in installs[0][1]
        project = [i for i, args in installs if re.search(r"pip install (-\S+ )*\.(\s|$)", args)]
        assert len(project) == 1, "the project is installed once, with `pip install .`"
        assert installs[0][0] < project[0]

    def test_torch_is_the_version_the_tests_run(self):
        args = {
            a.split("=")[0]: a.split("=", 1)[1] for k, a in _dockerfile() if k == "ARG" and "=" in a
        }
        makefile_pin = re.search(r"torch==([\w.+]+)", (ROOT / "Makefile").read_text())
        assert makefile_pin is not None
        assert args["TORCH_VERSION"] == makefile_pin.group(1)

    def test_the_entrypoint_is_the_console_script(self):
        (entrypoint,) = [yaml.safe_load(a) for k, a in _dockerfile() if k == "ENTRYPOINT"]
        assert entrypoint == [CONSOLE_SCRIPT]
        assert CONSOLE_SCRIPT in PYPROJECT["project"]["scripts"]

    def test_it_runs_as_a_user_other_than_root(self):
        instructions = _dockerfile()
        users = [i for i, (k, _) in enumerate(instructions) if k == "USER"]
        assert users, "the image runs as root"
        assert instructions[users[-1]][1] not in ("root", "0")
        assert all(k != "RUN" for k, _ in instructions[users[-1] :])

    def test_it_copies_every_package_and_the_migrations(self):
        copied = {
            source.strip("/")
            for keyword, args in _dockerfile()
            if keyword == "COPY"
            for source in args.split()[:-1]
            if not source.startswith("--")
        }
        assert set(_packages()) | {"migrations", "pyproject.toml", "README.md"} <= copied

    def test_nothing_it_copies_is_dockerignored(self):
        sources = [
            source
            for keyword, args in _dockerfile()
            if keyword == "COPY"
            for source in args.split()[:-1]
            if not source.startswith("--")
        ]
        assert sources
        for source in sources:
            assert (ROOT / source).exists(), source
            assert not _dockerignored(source), f"{source} is in .dockerignore"

    def test_the_files_the_pages_serve_are_in_the_context(self):
        from api.routes.dashboard import DASHBOARD_DIR, FILES
        from api.routes.docs import ASSETS, VENDOR_DIR

        served = [*FILES.values(), DASHBOARD_DIR / "index.html"]
        served += [VENDOR_DIR / name for name in ASSETS]
        for path in served:
            relative = str(path.relative_to(ROOT))
            assert not _dockerignored(relative), f"{relative} is in .dockerignore"
        # an image the dashboard might add is kept too
        assert not _dockerignored("api/static/dashboard/img/logo.svg")

    @pytest.mark.parametrize(
        "path",
        [
            ".venv/bin/python",
            ".git/HEAD",
            ".env",
            ".clr-sweep/clr-sweep.db",
            "core/__pycache__/db.cpython-311.pyc",
            "range_test.png",
        ],
    )
    def test_local_state_stays_out_of_the_context(self, path):
        assert _dockerignored(path)


@pytest.fixture(scope="module")
def installed_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel of this checkout installed (not editable) into a folder of its own."""
    pytest.importorskip("setuptools")
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "src"
    source.mkdir()
    # a copy, so the build's build/ and *.egg-info never land in the checkout
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    for folder in {*_packages(), "migrations"}:
        shutil.copytree(
            ROOT / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__")
        )
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    built = subprocess.run(
        [
            *pip,
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            str(source),
            "-w",
            str(tmp / "dist"),
        ],
        capture_output=True,
        text=True,
        cwd=tmp,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = (tmp / "dist").glob("*.whl")
    site = tmp / "site"
    installed = subprocess.run(
        [*pip, "install", "--no-deps", "--target", str(site), str(wheel)],
        capture_output=True,
        text=True,
        cwd=tmp,
    )
    assert installed.returncode == 0, installed.stderr
    return site


class TestInstalledPackage:
    """``pip install .`` (not editable) must ship what ``clr-sweep db upgrade`` reads."""

    def _run(self, site: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CLR_")}
        env |= {"PYTHONPATH": str(site), "CLR_DATA_DIR": str(tmp_path / "data")}
        return subprocess.run(
            [sys.executable, *args],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            timeout=120,
        )

    def test_the_installed_copy_finds_its_migrations(self, installed_site, tmp_path):
        probe = "import core, core.migrate as m; print(core.__file__); print(m.head_revision())"
        result = self._run(installed_site, tmp_path, "-c", probe)
        assert result.returncode == 0, result.stderr
        location, head = result.stdout.split()
        assert Path(location).is_relative_to(installed_site), (
            "the probe imported the checkout, not the wheel"
        )
        assert head == head_revision()

    def test_db_upgrade_from_the_installed_copy_reaches_head(self, installed_site, tmp_path):
        result = self._run(installed_site, tmp_path, "-m", "cli", "db", "upgrade")
        assert result.returncode == 0, result.stderr
        assert (tmp_path / "data" / "clr-sweep.db").is_file()
        assert "database at head" in result.stdout

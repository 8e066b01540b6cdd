"""``/docs`` and ``/redoc`` work offline: every asset they load comes from the API itself."""

from __future__ import annotations

import base64
import hashlib
import re
import shutil
import subprocess
import sys
import zipfile
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from api.app import create_app
from api.routes.dashboard import DASHBOARD_DIR
from api.routes.dashboard import FILES as DASHBOARD_FILES
from api.routes.docs import ASSETS, VENDOR_DIR
from core.settings import Settings
from tests.api.conftest import TestClient

REPO = Path(__file__).resolve().parents[2]
PAGES = ("/docs", "/redoc")
MEDIA_TYPES = {".js": "text/javascript", ".css": "text/css", ".png": "image/png"}


class _Refs(HTMLParser):
    """Every URL a page makes the browser load or follow, and its inline scripts."""

    URL_ATTRS = frozenset({"src", "href", "spec-url", "action", "data", "poster", "srcset"})

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.inline_scripts: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [v for k, v in attrs if k in self.URL_ATTRS and v is not None]
        self._in_script = tag == "script" and not any(k == "src" for k, _ in attrs)
        if self._in_script:
            self.inline_scripts.append("")

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.inline_scripts[-1] += data


def _refs(html: str) -> _Refs:
    parser = _Refs()
    parser.feed(html)
    # Swagger UI reads the OpenAPI document's URL from its init script
    for script in parser.inline_scripts:
        parser.urls += re.findall(r"""\burl:\s*['"]([^'"]+)['"]""", script)
    return parser


@pytest.fixture
def client(tmp_path: Path) -> TestClient:
    """The app, not started (the pages touch no database)."""
    settings = Settings(_env_file=None, data_dir=tmp_path, database_url="sqlite://")
    return TestClient(create_app(settings))


@pytest.mark.parametrize("page", PAGES)
def test_page_loads_nothing_from_another_origin(client: TestClient, page: str) -> None:
    response = client.get(page)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    html = response.text
    refs = _refs(html)
    assert len(refs.urls) >= 3  # a bundle, a favicon and the OpenAPI document at least
    for url in refs.urls:
        parts = urlsplit(url)
        assert (parts.scheme, parts.netloc) == ("", ""), url
        assert url.startswith("/"), url
    # no absolute URL anywhere in the page, not even in a comment or a script
    assert re.search(r"https?://|//fonts\.", html) is None
    assert "fonts.googleapis" not in html


@pytest.mark.parametrize("page", PAGES)
def test_every_url_a_page_loads_is_served(client: TestClient, page: str) -> None:
    refs = _refs(client.get(page).text)
    for url in refs.urls:
        response = client.get(url)
        assert response.status_code == 200, url
        if url == "/openapi.json":
            assert response.headers["content-type"] == "application/json"
            continue
        name = url.removeprefix("/docs/assets/")
        assert name in ASSETS, url
        suffix = Path(name).suffix
        assert response.headers["content-type"].split(";")[0] == MEDIA_TYPES[suffix]
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.content == (VENDOR_DIR / name).read_bytes()
    # the page's bundle is among them
    bundle = "swagger-ui-bundle.js" if page == "/docs" else "redoc.standalone.js"
    assert any(url.endswith(bundle) for url in refs.urls)


@pytest.mark.parametrize("page", PAGES)
def test_content_security_policy_allows_only_this_origin(client: TestClient, page: str) -> None:
    response = client.get(page)
    csp = response.headers["content-security-policy"]
    directives = {
        d.split()[0]: d.split()[1:] for d in (part.strip() for part in csp.split(";")) if d
    }
    assert directives["default-src"] == ["'none'"]
    hashes = [
        "'sha256-" + base64.b64encode(hashlib.sha256(s.encode()).digest()).decode() + "'"
        for s in _refs(response.text).inline_scripts
    ]
    # scripts: this origin, plus exactly the page's inline scripts by hash
    assert directives["script-src"] == ["'self'", *hashes]
    assert (page == "/docs") == bool(hashes)  # Swagger UI has an init script, ReDoc none
    for name, sources in directives.items():
        for source in sources:
            assert source in {"'self'", "'none'", "'unsafe-inline'", "data:", "blob:"} or (
                source.startswith("'sha256-") and name == "script-src"
            ), (name, source)
    assert "'unsafe-inline'" not in directives["script-src"]
    assert "'unsafe-eval'" not in csp


def test_only_the_listed_assets_are_served(client: TestClient) -> None:
    for url in (
        "/docs/assets/swagger-ui-dist-5.35.0/LICENSE",
        "/docs/assets/nope/swagger-ui-bundle.js",
        "/docs/assets/..%2F..%2Fapp.py/x",
        "/docs/assets/swagger-ui-dist-5.35.0/..%2F..%2F..%2Fapp.py",
    ):
        response = client.get(url)
        assert response.status_code == 404, url
        assert response.headers["content-type"] == "application/problem+json"


def test_a_listed_asset_missing_from_the_install_is_a_404(
    client: TestClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # e.g. a Docker image whose .dockerignore drops *.png: a 404, not a 500
    monkeypatch.setattr("api.routes.docs.VENDOR_DIR", tmp_path / "empty")
    response = client.get("/docs/assets/swagger-ui-dist-5.35.0/favicon-32x32.png")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"


def test_docs_pages_are_not_in_the_openapi_document(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert not [p for p in paths if p.startswith(("/docs", "/redoc"))]


def test_vendored_files_match_their_recorded_checksums() -> None:
    notes = (VENDOR_DIR / "VERSIONS.md").read_text()
    recorded = {
        name: digest for digest, name in re.findall(r"^([0-9a-f]{64})  (\S+)$", notes, re.M)
    }
    on_disk = {
        str(p.relative_to(VENDOR_DIR)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in VENDOR_DIR.glob("*/*")
    }
    assert recorded == on_disk
    for name in ASSETS:
        assert name in on_disk
        assert (VENDOR_DIR / name).parent.joinpath("LICENSE").is_file()


def test_the_wheel_ships_the_assets(tmp_path: Path) -> None:
    # build from a copy so no build/ or *.egg-info lands in the checkout
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    for package in ("clr", "cli", "api", "core", "worker", "migrations"):
        shutil.copytree(REPO / package, src / package, ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path / "out"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
        + ["-w", str(out), str(src)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    [wheel] = out.glob("*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        for name in ASSETS:
            member = f"api/static/vendor/{name}"
            assert member in names
            assert z.read(member) == (VENDOR_DIR / name).read_bytes()
        for license_file in (
            "swagger-ui-dist-5.35.0/LICENSE",
            "redoc-2.5.4/LICENSE",
            "uplot-1.6.32/LICENSE",
        ):
            assert f"api/static/vendor/{license_file}" in names
        assert "api/static/vendor/VERSIONS.md" in names
        # the dashboard: its page and every file it serves
        for path in [DASHBOARD_DIR / "index.html", *DASHBOARD_FILES.values()]:
            member = str(path.relative_to(REPO))
            assert member in names
            assert z.read(member) == path.read_bytes()

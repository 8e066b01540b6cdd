"""The dashboard's page and files as served by the API (no browser: tests/dashboard has those).

``GET /`` is the page: no inline script or style, a Content-Security-Policy that
allows this origin only, never cached. Its files are served under
``/ui/<build>/`` with their media type and a year's cache (the build id changes
with any of them); nothing else is served there, however the path is spelled.
"""

from __future__ import annotations

import fnmatch
import re
import tomllib
from html.parser import HTMLParser
from pathlib import Path, PurePosixPath

import pytest

from api.app import create_app
from api.routes.dashboard import BUILD, DASHBOARD_DIR, FILES
from api.routes.docs import VENDOR_DIR
from core.settings import Settings
from tests.api.conftest import TestClient

REPO = Path(__file__).resolve().parents[2]
PREFIX = f"ui/{BUILD}/"
MEDIA_TYPES = {
    ".js": "text/javascript",
    ".css": "text/css",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}
IMMUTABLE = "public, max-age=31536000, immutable"


class _Page(HTMLParser):
    """The URLs a page loads, its scripts and anything inline that the CSP would block."""

    def __init__(self) -> None:
        super().__init__()
        self.loads: list[str] = []
        self.scripts: list[dict[str, str | None]] = []
        self.inline_script = ""
        self.inline_handlers: list[str] = []
        self.style_attributes: list[str] = []
        self.style_elements = 0
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        named = dict(attrs)
        self.inline_handlers += [k for k, _ in attrs if k.startswith("on")]
        if "style" in named:
            self.style_attributes.append(tag)
        if tag == "style":
            self.style_elements += 1
        if tag == "script":
            self.scripts.append(named)
            self._in_script = True
        if tag in ("script", "img", "iframe") and named.get("src"):
            self.loads.append(str(named["src"]))
        if tag == "link" and named.get("href"):
            self.loads.append(str(named["href"]))

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.inline_script += data


@pytest.fixture
def client(tmp_path: Path) -> TestClient:
    """The app, not started (the dashboard's routes touch no database)."""
    settings = Settings(_env_file=None, data_dir=tmp_path, database_url="sqlite://")
    return TestClient(create_app(settings))


def _page(client: TestClient) -> _Page:
    parser = _Page()
    parser.feed(client.get("/").text)
    return parser


def _directives(csp: str) -> dict[str, list[str]]:
    return {d.split()[0]: d.split()[1:] for d in (p.strip() for p in csp.split(";")) if d}


def test_the_page_is_html_with_a_strict_content_security_policy(client: TestClient) -> None:
    response = client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["referrer-policy"] == "no-referrer"
    csp = _directives(response.headers["content-security-policy"])
    assert csp["default-src"] == ["'none'"]
    assert csp["script-src"] == ["'self'"]
    assert csp["style-src"] == ["'self'"]
    assert csp["connect-src"] == ["'self'"]
    assert csp["frame-ancestors"] == ["'none'"]
    assert csp["form-action"] == ["'none'"]
    assert csp["base-uri"] == ["'none'"]
    # no inline code, no eval, and no host but this one anywhere in the policy
    for name, sources in csp.items():
        for source in sources:
            assert source in {"'self'", "'none'", "data:", "blob:"}, (name, source)


def test_the_page_has_no_inline_script_or_style(client: TestClient) -> None:
    page = _page(client)
    assert page.scripts, "the page loads its script"
    for script in page.scripts:
        assert str(script.get("src", "")).startswith(PREFIX), script
        assert script.get("type") == "module", script
    assert page.inline_script.strip() == ""
    assert page.inline_handlers == []
    assert page.style_attributes == []
    assert page.style_elements == 0
    assert "{{BUILD}}" not in client.get("/").text


def test_every_file_the_page_loads_is_served_under_the_build(client: TestClient) -> None:
    loads = [url for url in _page(client).loads if not url.startswith("data:")]
    assert f"{PREFIX}js/app.js" in loads
    assert f"{PREFIX}app.css" in loads
    for url in loads:
        assert url.startswith(PREFIX), url  # relative: the page works behind a path prefix
        name = url.removeprefix(PREFIX)
        assert name in FILES, url
        response = client.get(f"/{url}")
        assert response.status_code == 200, url
        assert response.content == FILES[name].read_bytes()


def test_every_dashboard_file_is_served_with_its_media_type_and_cached_for_good(
    client: TestClient,
) -> None:
    on_disk = {
        str(p.relative_to(DASHBOARD_DIR))
        for p in DASHBOARD_DIR.rglob("*")
        if p.is_file() and p.suffix in MEDIA_TYPES
    }
    assert on_disk <= set(FILES)
    assert {"js/app.js", "js/forms.js", "js/pages/submit.js", "css/submit.css"} <= set(FILES)
    for name, path in FILES.items():
        response = client.get(f"/{PREFIX}{name}")
        assert response.status_code == 200, name
        assert response.headers["content-type"].split(";")[0] == MEDIA_TYPES[path.suffix], name
        assert response.headers["cache-control"] == IMMUTABLE, name
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.content == path.read_bytes(), name


_IMPORT = re.compile(
    r"""^\s*import\s+(?:\{([^}]*)\}|(\w+))\s+from\s+['"]([^'"]+)['"]""", re.MULTILINE
)
_EXPORT = re.compile(
    r"^export\s+(?:async\s+)?(?:function\*?|const|let|class)\s+(\w+)", re.MULTILINE
)
_EXPORT_LIST = re.compile(r"^export\s*\{([^}]*)\}", re.MULTILINE)


def _exports(source: str) -> set[str]:
    names = set(_EXPORT.findall(source))
    for group in _EXPORT_LIST.findall(source):
        names |= {part.split(" as ")[-1].strip() for part in group.split(",") if part.strip()}
    if re.search(r"^export\s+default\b", source, re.MULTILINE):
        names.add("default")
    return names


def test_every_module_imports_files_and_names_that_exist() -> None:
    # a missing file or export stops the whole page at load: caught here, not in a browser
    for name, path in FILES.items():
        if path.suffix != ".js" or name.startswith("vendor/"):
            continue
        source = path.read_text()
        for names, default, target in _IMPORT.findall(source):
            resolved = str(PurePosixPath(name).parent.joinpath(target))
            resolved = str(PurePosixPath(*_normalise(resolved.split("/"))))
            assert resolved in FILES, f"{name} imports {target}, which is not served"
            wanted = {n.split(" as ")[0].strip() for n in names.split(",") if n.strip()}
            if default:
                wanted.add("default")
            missing = wanted - _exports(FILES[resolved].read_text())
            assert not missing, f"{name} imports {sorted(missing)} from {target}, which lacks them"


def _normalise(parts: list[str]) -> list[str]:
    out: list[str] = []
    for part in parts:
        if part == "..":
            out.pop()
        elif part not in ("", "."):
            out.append(part)
    return out


def test_the_stylesheet_imports_files_that_are_served() -> None:
    imports = re.findall(r"""@import\s+url\(["']?([^"')]+)["']?\)""", FILES["app.css"].read_text())
    assert imports
    for target in imports:
        assert target in FILES, target


@pytest.mark.parametrize(
    "path",
    [
        "nope.js",
        "index.html",  # the page is served at / only
        "js/app.py",
        "vendor/uplot-1.6.32/LICENSE",
        "vendor/uplot-1.6.32/nope.js",
        "../app.py",
        "..%2Fapp.py",
        "%2e%2e/%2e%2e/app.py",
        "%2e%2e%2f%2e%2e%2fapp.py",
        "js/..%2f..%2f..%2froutes%2fdashboard.py",
        "js%2fapp.js%00",
    ],
)
def test_nothing_else_is_served_however_it_is_spelled(client: TestClient, path: str) -> None:
    response = client.get(f"/{PREFIX}{path}")
    assert response.status_code == 404, path
    assert response.headers["content-type"] == "application/problem+json"


def test_a_file_of_an_older_build_is_served_but_not_kept(client: TestClient) -> None:
    # a tab opened before an upgrade still loads its modules; the next load gets the new build
    response = client.get("/ui/0123456789ab/js/app.js")
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-cache"
    assert response.content == FILES["js/app.js"].read_bytes()


def test_the_chart_library_is_the_vendored_version() -> None:
    served = {name.split("/")[1] for name in FILES if name.startswith("vendor/")}
    assert served == {"uplot-1.6.32"}
    notes = (VENDOR_DIR / "VERSIONS.md").read_text()
    assert re.search(r"^\| `uplot-1\.6\.32/` \| `uplot` \| 1\.6\.32\b.*\| MIT", notes, re.MULTILINE)
    esm = FILES["vendor/uplot-1.6.32/uPlot.esm.js"].read_text()
    assert "(v1.6.32)" in esm[:500]
    assert (VENDOR_DIR / "uplot-1.6.32" / "LICENSE").is_file()
    # the modules load it from the same folder the API serves
    assert "'../vendor/uplot-1.6.32/uPlot.esm.js'" in FILES["js/charts.js"].read_text()


def _package_data(package: str) -> list[str]:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    patterns: list[str] = config["tool"]["setuptools"]["package-data"][package]
    return patterns


def _glob_matches(path: str, pattern: str) -> bool:
    # setuptools' globs: `*` stays within one folder
    parts, wanted = path.split("/"), pattern.split("/")
    return len(parts) == len(wanted) and all(
        fnmatch.fnmatchcase(p, w) for p, w in zip(parts, wanted, strict=True)
    )


def test_the_wheel_would_ship_every_dashboard_file() -> None:
    # the package data globs, not a wheel build (tests/api/test_docs.py builds one):
    # a file in a new folder that no glob covers would be missing from an install
    patterns = _package_data("api")
    api_dir = DASHBOARD_DIR.parent.parent
    shipped = [*FILES.values(), DASHBOARD_DIR / "index.html"]
    for path in shipped:
        relative = str(path.relative_to(api_dir))
        assert any(_glob_matches(relative, p) for p in patterns), relative

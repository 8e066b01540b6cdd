"""The team dashboard: ``GET /`` and its files under ``/ui/<build>/``.

The dashboard is plain ES modules and one stylesheet in ``api/static/dashboard``
(no build step: what is in the repository is what the browser runs) and the
vendored chart library (uPlot, ``api/static/vendor``). It reads the public API
only, with the team token the user signs in with (kept in ``sessionStorage``
and sent as ``Authorization: Bearer``; never in a URL).

Every file is served under a ``<build>`` path segment, a hash of all of them
computed at start-up: the browser may keep a file for a year, and a new version
of the dashboard has new URLs. ``index.html`` names the build in its script and
stylesheet URLs and is never cached.

The page's Content-Security-Policy allows scripts, styles and connections to this
origin only, no inline script or style, no frames, no form posts anywhere: an
injected ``<script>`` or event handler does not run, and the page can talk to no
other host.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse, HTMLResponse

from api.routes.docs import VENDOR_DIR

__all__ = ["BUILD", "CSP", "DASHBOARD_DIR", "FILES", "router"]

DASHBOARD_DIR = Path(__file__).resolve().parent.parent / "static" / "dashboard"
"""The dashboard's own files inside the installed ``api`` package."""

_CHART_LIBRARY = "uplot-1.6.32"

_MEDIA_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}


def _files() -> dict[str, Path]:
    """Every file the dashboard may load: its URL path under the build -> the file."""
    files = {
        str(p.relative_to(DASHBOARD_DIR)): p
        for p in sorted(DASHBOARD_DIR.rglob("*"))
        if p.is_file() and p.suffix in _MEDIA_TYPES
    }
    vendor = VENDOR_DIR / _CHART_LIBRARY
    for p in sorted(vendor.glob("*")):
        if p.suffix in _MEDIA_TYPES:
            files[f"vendor/{_CHART_LIBRARY}/{p.name}"] = p
    return files


FILES = _files()
"""The files served under ``/ui/<build>/`` (nothing else is)."""


def _build_id() -> str:
    digest = hashlib.sha256()
    for name, path in FILES.items():
        digest.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    digest.update((DASHBOARD_DIR / "index.html").read_bytes())
    return digest.hexdigest()[:12]


BUILD = _build_id()
"""The hash of the dashboard's files: their URL prefix changes with any of them."""

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; font-src 'self'; manifest-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
"""The dashboard page's Content-Security-Policy: this origin only, nothing inline."""

_PAGE_HEADERS = {
    "Content-Security-Policy": CSP,
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
_FILE_HEADERS = {
    "Cache-Control": "public, max-age=31536000, immutable",
    "X-Content-Type-Options": "nosniff",
}

_INDEX = (DASHBOARD_DIR / "index.html").read_text().replace("{{BUILD}}", BUILD)

router = APIRouter(include_in_schema=False)


@router.get("/")
def dashboard() -> HTMLResponse:
    """The dashboard's page (sign in, runs, a job's charts, forms)."""
    return HTMLResponse(_INDEX, headers=_PAGE_HEADERS)


@router.get("/ui/{build}/{path:path}")
def dashboard_file(build: str, path: str) -> FileResponse:
    """One of the dashboard's files (404 for anything else).

    A file asked for under another build (a tab opened before an upgrade) is
    served as it is now, but not kept: the next load gets the new build's URLs.
    """
    file = FILES.get(path)
    if file is None:
        raise HTTPException(status_code=404, detail=f"no dashboard file {path!r}")
    media_type = _MEDIA_TYPES[file.suffix]
    headers = _FILE_HEADERS if build == BUILD else {**_FILE_HEADERS, "Cache-Control": "no-cache"}
    return FileResponse(file, media_type=media_type, headers=headers)

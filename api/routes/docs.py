"""``/docs`` (Swagger UI) and ``/redoc`` (ReDoc), served offline from vendored assets.

FastAPI's default pages load Swagger UI, ReDoc and Google Fonts from CDNs, so
they are blank without internet. These pages are FastAPI's own HTML
(``get_swagger_ui_html`` / ``get_redoc_html``, without the fonts) pointing at a
pinned copy of each bundle that ships in the wheel (``api/static/vendor``, see
its ``VERSIONS.md``) and is served here under ``/docs/assets/``. Each page
carries a Content-Security-Policy that lets it load nothing from another
origin: scripts from this origin only, plus Swagger UI's inline init script by
its hash (no ``'unsafe-inline'`` for scripts).
"""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path

from fastapi import APIRouter, HTTPException, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse

__all__ = ["ASSETS", "ASSET_PREFIX", "VENDOR_DIR", "router"]

VENDOR_DIR = Path(__file__).resolve().parent.parent / "static" / "vendor"
"""Where the vendored bundles live inside the installed ``api`` package."""

ASSET_PREFIX = "/docs/assets"
"""URL prefix of the vendored files (each under its ``<package>-<version>/`` folder)."""

_SWAGGER = "swagger-ui-dist-5.35.0"
_REDOC = "redoc-2.5.4"
_SWAGGER_JS = f"{_SWAGGER}/swagger-ui-bundle.js"
_SWAGGER_CSS = f"{_SWAGGER}/swagger-ui.css"
_FAVICON = f"{_SWAGGER}/favicon-32x32.png"
_REDOC_JS = f"{_REDOC}/redoc.standalone.js"

_JS = "text/javascript; charset=utf-8"
ASSETS: dict[str, str] = {
    _SWAGGER_JS: _JS,
    _SWAGGER_CSS: "text/css; charset=utf-8",
    _FAVICON: "image/png",
    _REDOC_JS: _JS,
}
"""The files the pages load (path under :data:`VENDOR_DIR` -> media type); nothing else."""

# The versioned folder name changes with every upgrade, so a cached copy is never stale.
_ASSET_HEADERS = {
    "Cache-Control": "public, max-age=31536000, immutable",
    "X-Content-Type-Options": "nosniff",
}

_INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.DOTALL)

router = APIRouter(include_in_schema=False)


def _csp(html: str) -> str:
    """A Content-Security-Policy for ``html`` that allows only this origin.

    Inline scripts are allowed by their sha256 only. Styles may be inline:
    ReDoc's styled-components insert ``<style>`` elements and FastAPI's ReDoc
    page has one. Swagger UI's CSS draws icons from ``data:`` SVGs; ReDoc runs
    its search index in a worker made from a ``blob:`` URL.
    """
    hashes = " ".join(
        "'sha256-" + base64.b64encode(hashlib.sha256(script.encode()).digest()).decode() + "'"
        for script in _INLINE_SCRIPT.findall(html)
    )
    return (
        "default-src 'none'; "
        f"script-src 'self'{' ' + hashes if hashes else ''}; "
        "style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self'; "
        "connect-src 'self'; worker-src 'self' blob:; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )


def _page(page: HTMLResponse) -> HTMLResponse:
    html = bytes(page.body).decode()
    return HTMLResponse(
        html,
        headers={"Content-Security-Policy": _csp(html), "X-Content-Type-Options": "nosniff"},
    )


def _urls(request: Request) -> tuple[str, str]:
    """``(openapi_url, asset_prefix)`` as the browser must ask for them, behind any root path."""
    root = str(request.scope.get("root_path", "")).rstrip("/")
    return root + str(request.app.openapi_url), root + ASSET_PREFIX


@router.get("/docs")
def swagger_ui(request: Request) -> HTMLResponse:
    """Swagger UI for this API, from the vendored bundle."""
    openapi_url, assets = _urls(request)
    return _page(
        get_swagger_ui_html(
            openapi_url=openapi_url,
            title=f"{request.app.title} - Swagger UI",
            swagger_js_url=f"{assets}/{_SWAGGER_JS}",
            swagger_css_url=f"{assets}/{_SWAGGER_CSS}",
            swagger_favicon_url=f"{assets}/{_FAVICON}",
            # the default validator badge would send the spec's URL to validator.swagger.io
            swagger_ui_parameters={"validatorUrl": None},
        )
    )


@router.get("/redoc")
def redoc(request: Request) -> HTMLResponse:
    """ReDoc for this API, from the vendored bundle, without Google Fonts."""
    openapi_url, assets = _urls(request)
    return _page(
        get_redoc_html(
            openapi_url=openapi_url,
            title=f"{request.app.title} - ReDoc",
            redoc_js_url=f"{assets}/{_REDOC_JS}",
            redoc_favicon_url=f"{assets}/{_FAVICON}",
            with_google_fonts=False,
        )
    )


@router.get(ASSET_PREFIX + "/{package}/{name}")
def asset(package: str, name: str) -> FileResponse:
    """One vendored file the pages load (404 for anything else)."""
    key = f"{package}/{name}"
    media_type = ASSETS.get(key)
    path = VENDOR_DIR / key
    # a copy built without the file (an image whose .dockerignore drops *.png) answers
    # 404 for it, not FileResponse's 500
    if media_type is None or not path.is_file():
        raise HTTPException(status_code=404, detail=f"no docs asset {key!r}")
    return FileResponse(path, media_type=media_type, headers=_ASSET_HEADERS)

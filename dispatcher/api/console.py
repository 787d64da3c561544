"""The web admin console: static files from `dispatcher/console/`, served under `/admin`.

These routes need no key: the page holds nothing of a tenant's. The console
asks `/v1` for everything it shows, with the key its user pastes in. Only
files that are in the package folder are served, by name, never by a path
built from the request; every answer carries a strict Content-Security-Policy,
so the page runs its own script and style alone and cannot be framed.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from aiohttp import web

from dispatcher.errors import NotFound

routes = web.RouteTableDef()

FOLDER = Path(__file__).resolve().parent.parent / "console"
INDEX = "index.html"
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".json": "application/json",
}
# A plain file name with a known extension: no separator, no dot-dot, no hidden file.
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*(?:\.[A-Za-z0-9_-]+)*\.[a-z]+")
CSP = "; ".join(
    (
        "default-src 'self'",
        "connect-src 'self'",
        "img-src 'self' data:",
        "style-src 'self'",
        "script-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
}


def _shipped() -> frozenset[str]:
    """The names of the files the package ships in its console folder."""
    if not FOLDER.is_dir():
        return frozenset()
    return frozenset(
        path.name
        for path in FOLDER.iterdir()
        if path.is_file() and path.suffix in CONTENT_TYPES and NAME.fullmatch(path.name)
    )


def _answer(request: web.Request, name: str) -> web.Response:
    if not NAME.fullmatch(name) or name not in _shipped():
        raise NotFound("no such console file")
    # Read at each request (the files are small): an upgrade in place is served at once.
    try:
        body = (FOLDER / name).read_bytes()
    except FileNotFoundError:
        raise NotFound("no such console file") from None
    etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
    headers = {**HEADERS, "ETag": etag}
    if etag in {tag.strip() for tag in request.headers.get("If-None-Match", "").split(",")}:
        return web.Response(status=304, headers=headers)
    headers["Content-Type"] = CONTENT_TYPES[Path(name).suffix]
    return web.Response(body=body, headers=headers)


@routes.get("/admin")
@routes.get("/admin/")
async def index(request: web.Request) -> web.Response:
    return _answer(request, INDEX)


@routes.get("/admin/{file}")
async def static(request: web.Request) -> web.Response:
    return _answer(request, request.match_info["file"])

"""Job events as they happen: WebSocket and Server-Sent Events."""

from __future__ import annotations

from aiohttp import web

routes = web.RouteTableDef()

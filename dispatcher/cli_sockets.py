"""Listening sockets for `serve` and `listen`, bound before anything else starts.

Bound first, so that a busy port is one line and an exit before any database
is opened, key minted or line logged; and listening before the first line
that says so, so that whoever reads that line and connects is never refused.
"""

from __future__ import annotations

import errno
import socket

from dispatcher.cli_args import Failure

BACKLOG = 128


def listening(host: str, port: int, *, host_hint: str, port_hint: str) -> list[socket.socket]:
    """A listening socket for each address `host` names (as asyncio's create_server binds)."""
    try:
        found = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except (OSError, UnicodeError) as exc:
        raise Failure(_cannot(host, port, exc, host_hint)) from exc
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(found):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            # Port 0 on a name with several addresses: one free port for all of them.
            chosen = sockets[0].getsockname()[1] if len(sockets) > 1 else address[1]
            sock.bind((address[0], chosen, *address[2:]))
            sock.listen(BACKLOG)
    except OSError as exc:
        for sock in sockets:
            sock.close()
        hint = host_hint if exc.errno == errno.EADDRNOTAVAIL else port_hint
        raise Failure(_cannot(host, port, exc, hint)) from exc
    return sockets


def url(host: str, sock: socket.socket) -> str:
    """`http://host:port` of a bound socket (the port it got when asked for 0)."""
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{bound}"


def _cannot(host: str, port: int, exc: Exception, hint: str) -> str:
    reason = str(getattr(exc, "strerror", None) or exc)
    reason = reason[:1].lower() + reason[1:]
    if getattr(exc, "errno", None) == errno.EACCES:
        reason += ", as ports below 1024 are for privileged users"
    where = f"[{host}]" if ":" in host else host
    return f"cannot listen on {where}:{port}: {reason} ({hint})"

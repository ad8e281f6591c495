"""Request safety: a body-size limit (413 before parsing), security headers, bearer tokens."""

from __future__ import annotations

import hmac
import json
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["DOCS_PATHS", "SECURITY_HEADERS", "BodyLimit", "authorise", "security_headers"]

# Security headers of every response (the dashboard loads only its own files; reports embed
# their figures as data: URIs and carry an inline style sheet). The API docs pages load their
# assets from a CDN, so they are left out.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
        "script-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
}
DOCS_PATHS = ("/docs", "/redoc", "/openapi.json")
_BEARER = HTTPBearer(auto_error=False)


def authorise(
    request: Request,
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_BEARER)],
) -> None:
    """Dependency of every API route: the configured bearer token, compared in constant time.

    Parameters
    ----------
    request
        The request (its app carries the :class:`~dlbacktrace.apps.server.config.ServerConfig`).
    creds
        The ``Authorization: Bearer`` credentials, if any.
    """
    token = request.app.state.config.token
    if token is None:
        return
    if creds is None or not hmac.compare_digest(creds.credentials.encode(), token.encode()):
        raise HTTPException(401, "missing or wrong bearer token",
                            headers={"WWW-Authenticate": "Bearer"})


async def security_headers(request: Request, call_next: Any) -> Any:
    """HTTP middleware: add :data:`SECURITY_HEADERS` to every response but the API docs.

    Parameters
    ----------
    request
        The request.
    call_next
        The rest of the application.
    """
    response = await call_next(request)
    if not request.url.path.startswith(DOCS_PATHS):
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
    return response


class BodyLimit:
    """ASGI middleware: refuse bodies over ``limit`` bytes (413), declared or streamed."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            await _too_large(send, self.limit)
            return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                await _too_large(send, self.limit)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


async def _too_large(send: Send, limit: int) -> None:
    body = json.dumps({"detail": f"request body too large (limit {limit} bytes)"}).encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})

"""The FastAPI app of ``dlbacktrace serve``: REST API, OpenAPI docs and the dashboard page.

Safety rules: binds loopback unless a bearer token is configured; request bodies larger than
``max_body`` get 413 before they are parsed; malformed input (images, non-UTF-8 text, bad
tables, shapes the model rejects) gets a 4xx naming the problem; explanations run in worker
threads behind the service's lock; an unexpected error fails that request only (500).
``create_app`` only wires these together: the routes live in :mod:`.routes` by concern.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from dlbacktrace.apps.server.config import ServerConfig
from dlbacktrace.apps.server.requests import request_model
from dlbacktrace.apps.server.routes import explain, meta, records
from dlbacktrace.apps.server.routes.dashboard import add_dashboard
from dlbacktrace.apps.server.security import BodyLimit, security_headers
from dlbacktrace.apps.server.service import ExplainService

__all__ = ["create_app"]

logger = logging.getLogger(__name__)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    """Any other error fails this request only, without leaking its message."""
    logger.exception("request %s %s failed", request.method, request.url.path)
    return JSONResponse({"detail": f"internal error: {type(exc).__name__}"}, status_code=500)


def create_app(service: ExplainService, config: ServerConfig | None = None) -> Any:
    """The ASGI app serving ``service``; ``config.check()`` refuses unsafe settings.

    Parameters
    ----------
    service
        The model to serve (and its audit log).
    config
        Host, bearer token and body limit (default: loopback, no token, 10 MiB).
    """
    from dlbacktrace import __version__

    config = config or ServerConfig()
    config.check()
    api = FastAPI(
        title="dlbacktrace",
        version=__version__,
        description="Deterministic relevance backtracing (DLBacktrace) for one model. "
        "POST /explain with JSON or a multipart file upload.",
    )
    api.state.service = service
    api.state.config = config
    api.state.request_model = request_model()
    api.middleware("http")(security_headers)
    api.add_exception_handler(Exception, _unexpected)
    for routes in (meta, explain, records):
        api.include_router(routes.router)
    add_dashboard(api)
    api.add_middleware(BodyLimit, limit=config.max_body)
    return api

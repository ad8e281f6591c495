"""``POST /explain``: one input as JSON or a file upload, explained in a worker thread."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from dlbacktrace.apps.server.requests import (
    batch_from_form,
    batch_from_json,
    client_error,
    multipart_schema,
)
from dlbacktrace.apps.server.routes.state import AUTH, Service
from dlbacktrace.engine.errors import DLBacktraceError

__all__ = ["router"]

router = APIRouter()


def _body_doc() -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/ExplainRequest"}},
                "multipart/form-data": {"schema": multipart_schema()},
            },
        }
    }


@router.post("/explain", dependencies=AUTH, openapi_extra=_body_doc(),
             responses={400: {"description": "bad input"}, 413: {"description": "too large"}})
async def explain(request: Request, service: Service) -> dict[str, Any]:
    """Explain one input (JSON body, or a multipart file upload)."""
    ctype = request.headers.get("content-type", "")
    if ctype.startswith("multipart/form-data"):
        batch, options = await batch_from_form(request, service)
    elif ctype.startswith("application/json"):
        batch, options = batch_from_json(await request.body(), request.app.state.request_model,
                                         service)
    else:
        raise client_error("send application/json or multipart/form-data", 415)
    figures = options.pop("figures")
    try:
        result = await run_in_threadpool(service.explain, batch, **options)
        return await run_in_threadpool(result.to_json, figures)
    except DLBacktraceError as exc:
        raise client_error(f"{type(exc).__name__}: {exc}", 422) from exc

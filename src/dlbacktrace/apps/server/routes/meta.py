"""Liveness and what the served model accepts."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from dlbacktrace.apps.server.routes.state import AUTH, Service

__all__ = ["router"]

router = APIRouter()


@router.get("/health")
def health(request: Request, service: Service) -> dict[str, Any]:
    """Liveness, and which model is served (only without a token: /health needs none)."""
    if request.app.state.config.token is not None:
        return {"status": "ok"}
    return {"status": "ok", "model": service.description, "audit": service.audit is not None}


@router.get("/model", dependencies=AUTH)
def model_info(service: Service) -> dict[str, Any]:
    """What the dashboard needs to build its forms."""
    loaded = service.loaded
    return {"description": service.description, "task": loaded.task,
            "labels": loaded.labels, "feature_names": loaded.feature_names,
            "accepts_text": loaded.tokenizer is not None}

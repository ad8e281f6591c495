"""What every route gets from the app: the served model and the bearer-token check."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from dlbacktrace.apps.server.security import authorise
from dlbacktrace.apps.server.service import ExplainService

__all__ = ["AUTH", "Service", "get_service"]

AUTH = [Depends(authorise)]


def get_service(request: Request) -> ExplainService:
    """The service the app serves (set by ``create_app``).

    Parameters
    ----------
    request
        The request being answered.
    """
    return request.app.state.service


Service = Annotated[ExplainService, Depends(get_service)]

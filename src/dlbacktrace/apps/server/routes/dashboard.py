"""The dashboard: one page and its static files (no API of its own)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

__all__ = ["STATIC", "add_dashboard"]

STATIC = Path(__file__).resolve().parent.parent / "static"

router = APIRouter()


@router.get("/", include_in_schema=False)
def index() -> FileResponse:
    return FileResponse(STATIC / "index.html", media_type="text/html")


def add_dashboard(api: FastAPI) -> None:
    """Serve the dashboard page at ``/`` and its files under ``/static``.

    Parameters
    ----------
    api
        The app to add them to.
    """
    api.include_router(router)
    api.mount("/static", StaticFiles(directory=STATIC), name="static")

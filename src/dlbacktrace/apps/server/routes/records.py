"""The audit log over HTTP: browse, read, report and re-verify stored explanations."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse

from dlbacktrace.apps.server.requests import client_error
from dlbacktrace.apps.server.routes.state import AUTH, Service
from dlbacktrace.apps.server.service import ExplainService, record_report

__all__ = ["MAX_ID", "router"]

MAX_ID = 2**62
RecordId = Annotated[int, PathParam(ge=1, le=MAX_ID, description="Audit record id.")]

router = APIRouter(dependencies=AUTH)


def _store(service: ExplainService) -> Any:
    if service.audit is None:
        raise client_error("the audit log is disabled on this server", 404)
    return service.audit


def _record(service: ExplainService, record_id: int) -> Any:
    from dlbacktrace.audit import AuditError

    try:
        return _store(service).get(record_id)
    except AuditError as exc:
        raise client_error(str(exc), 404) from exc


@router.get("/explanations")
def list_explanations(service: Service, limit: int = Query(50, ge=1, le=500),
                      offset: int = Query(0, ge=0, le=MAX_ID)) -> dict[str, Any]:
    """Browse the audit log, newest first."""
    store = _store(service)
    return {"total": store.count(), "records": [r.summary() for r in store.list(limit, offset)]}


@router.get("/explanations/{record_id}")
def get_explanation(service: Service, record_id: RecordId,
                    figures: bool = False) -> dict[str, Any]:
    """One stored explanation: summary, content and per-input rows."""
    from dlbacktrace.report.views import explanation_rows, ledger

    rec = _record(service, record_id)
    content = rec.content
    info = content.get("input") or {}
    inputs = rec.inputs()
    exp = rec.explanation()
    rows = explanation_rows(exp, info.get("kind", "tensor"), args=inputs.args,
                            kwargs=inputs.kwargs, names=info.get("names"),
                            tokens=info.get("tokens"), feature_names=info.get("feature_names"),
                            labels=info.get("labels"), figures=figures)
    return {**rec.summary(), "record_id": rec.id, "content": content, "ledger": ledger(exp),
            "rows": rows}


@router.get("/explanations/{record_id}/report", response_class=HTMLResponse)
def get_report(service: Service, record_id: RecordId) -> HTMLResponse:
    """The record as a self-contained HTML report."""
    return HTMLResponse(record_report(_record(service, record_id)))


@router.post("/explanations/{record_id}/verify")
def verify(service: Service, record_id: RecordId) -> dict[str, Any]:
    """Recompute the record with the served model and compare bit for bit."""
    _record(service, record_id)
    return service.verify(record_id).to_dict()

"""``dlbacktrace serve``: one model behind the REST API and dashboard (needs ``server``)."""

from __future__ import annotations

from typing import Annotated

import typer

from dlbacktrace.apps.cli.common import (
    DEFAULT_AUDIT,
    AuditOpt,
    FactoryOpt,
    ModelOpt,
    TaskOpt,
    WeightsOpt,
    console,
    load,
    reported_errors,
)

__all__ = ["serve"]


def serve(
    model: ModelOpt = ...,
    task: TaskOpt = None,
    weights: WeightsOpt = None,
    factory: FactoryOpt = None,
    host: Annotated[str, typer.Option(help="Interface to bind; not loopback needs --token.")]
    = "127.0.0.1",
    port: Annotated[int, typer.Option()] = 8000,
    token: Annotated[str | None, typer.Option(
        envvar="DLBACKTRACE_TOKEN", help="Bearer token required on every API call.")] = None,
    audit: AuditOpt = str(DEFAULT_AUDIT),
    max_upload_mb: Annotated[float, typer.Option(help="Largest accepted request body.")] = 10.0,
) -> None:
    """Serve one model: REST API, OpenAPI docs at /docs and a dashboard at /."""
    import uvicorn

    from dlbacktrace.apps.server.app import create_app
    from dlbacktrace.apps.server.config import ServerConfig
    from dlbacktrace.apps.server.service import ExplainService
    from dlbacktrace.audit import AuditStore

    with reported_errors():
        loaded = load(model, task, weights, factory)
        store = AuditStore(audit)
        config = ServerConfig(host=host, token=token, max_body=int(max_upload_mb * 2**20))
        application = create_app(ExplainService(loaded, audit=store, source="server"), config)
    console.print(f"Serving {loaded.spec.describe() if loaded.spec else model} on "
                  f"http://{host}:{port}/ (API docs at /docs)")
    uvicorn.run(application, host=host, port=port, log_level="warning")

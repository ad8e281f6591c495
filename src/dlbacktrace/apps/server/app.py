"""The FastAPI app of ``dlbacktrace serve``: REST API, OpenAPI docs and the dashboard page.

Safety rules: binds loopback unless a bearer token is configured; request bodies larger than
``max_body`` get 413 before they are parsed; malformed input (images, non-UTF-8 text, bad
tables, shapes the model rejects) gets a 4xx naming the problem; explanations run in worker
threads behind the service's lock; an unexpected error fails that request only (500).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
import json
import logging
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dlbacktrace.apps.server.service import ExplainService
from dlbacktrace.engine.errors import DLBacktraceError, InputError, TargetError
from dlbacktrace.io.inputs import (
    InputBatch,
    InputFileError,
    decode_text,
    image_batch,
    load_image,
    text_batch,
)

__all__ = ["ServerConfig", "create_app"]

logger = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "static"
MAX_ROWS = 64
MAX_TEXT_CHARS = 20_000
MAX_ID = 2**62
RecordId = Annotated[int, PathParam(ge=1, le=MAX_ID, description="Audit record id.")]
_BEARER = HTTPBearer(auto_error=False)


class ServerConfigError(DLBacktraceError, ValueError):
    """The server would be unsafe or cannot start with these settings."""


@dataclass(frozen=True)
class ServerConfig:
    """Where the server listens and what it accepts."""

    host: str = "127.0.0.1"
    token: str | None = None
    max_body: int = 10 * 2**20

    def check(self) -> None:
        if not _is_loopback(self.host) and not self.token:
            raise ServerConfigError(
                f"binding {self.host!r} exposes the model beyond this machine; set a bearer "
                "token (--token or DLBACKTRACE_TOKEN) or bind 127.0.0.1"
            )
        if self.token is not None and len(self.token) < 16:
            raise ServerConfigError("the bearer token must be at least 16 characters long")
        if self.max_body < 1024:
            raise ServerConfigError("max_body must be at least 1 KiB")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


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


# A class index: anything outside a 32-bit range is a client error (422), not a server error.
CLASS_RANGE = (-(2**31), 2**31 - 1)
ClassIndex = Annotated[int, Field(ge=CLASS_RANGE[0], le=CLASS_RANGE[1])]


class ExplainRequest(BaseModel):
    """A JSON explain request: one kind of input plus the explanation options."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["image", "text", "table", "tensor"]
    text: str | list[str] | None = Field(
        None, description="Text, or up to 64 texts (kind=text).")
    row: list[float] | dict[str, float] | None = Field(
        None, description="One table row: values in feature order, or feature -> value.")
    rows: list[list[float]] | None = Field(None, description="Up to 64 table rows.")
    image_base64: str | None = Field(None, description="A PNG or JPEG file, base64-encoded.")
    tensor: list[Any] | None = Field(None, description="Model input as nested lists (batch "
                                     "first).")
    target: ClassIndex | list[ClassIndex] | Literal["positive", "negative"] | None = None
    mode: Literal["default", "contrast"] = "default"
    figures: bool = Field(True, description="Embed heat-map PNGs in the response (images).")


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


def _bad(message: str, status: int = 400) -> HTTPException:
    return HTTPException(status_code=status, detail=message)


def _table_batch(rows: list[list[float]], names: list[str] | None) -> InputBatch:
    import torch

    from dlbacktrace.io.inputs import table_batch

    try:
        import pandas as pd
    except ImportError:  # pragma: no cover - pandas is in the server extras' environment
        values = torch.tensor(rows, dtype=torch.float32)
        return InputBatch("table", (values,), names=[f"row {i}" for i in range(len(rows))],
                          feature_names=names)
    widths = {len(r) for r in rows}
    if len(widths) != 1:
        raise InputFileError("table rows differ in length")
    width = widths.pop()
    if names is not None and len(names) != width:
        raise InputFileError(f"a row needs {len(names)} values ({', '.join(names)}), got {width}")
    return table_batch(pd.DataFrame(rows, columns=names or [f"x{i}" for i in range(width)]))


def build_batch(req: ExplainRequest, service: ExplainService) -> InputBatch:
    """Turn a validated request into model inputs (raises InputFileError on bad content)."""
    import numpy as np
    import torch

    loaded = service.loaded
    if req.kind == "image":
        if not req.image_base64:
            raise InputFileError("kind=image needs image_base64")
        try:
            raw = base64.b64decode(req.image_base64, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise InputFileError(f"image_base64 is not valid base64: {exc}") from exc
        return image_batch([load_image(raw, "image")], ["image"], preprocess=loaded.preprocess)
    if req.kind == "text":
        texts = [req.text] if isinstance(req.text, str) else list(req.text or [])
        if not texts or len(texts) > MAX_ROWS or any(len(t) > MAX_TEXT_CHARS for t in texts):
            raise InputFileError(f"kind=text needs 1 to {MAX_ROWS} texts of at most "
                                 f"{MAX_TEXT_CHARS} characters")
        return text_batch(texts, loaded.tokenizer)
    if req.kind == "table":
        names = loaded.feature_names
        if isinstance(req.row, dict):
            if names is None:
                names = list(req.row)
            missing = [n for n in names if n not in req.row]
            extra = [k for k in req.row if k not in names]
            if missing or extra:
                raise InputFileError(f"row keys do not match the features: missing {missing}, "
                                     f"unknown {extra}")
            rows = [[req.row[n] for n in names]]
        elif req.row is not None:
            rows = [list(req.row)]
        else:
            rows = [list(r) for r in req.rows or []]
        if not rows or len(rows) > MAX_ROWS or not rows[0]:
            raise InputFileError(f"kind=table needs row or 1 to {MAX_ROWS} rows")
        return _table_batch(rows, names)
    if req.tensor is None:
        raise InputFileError("kind=tensor needs tensor")
    try:
        array = np.asarray(req.tensor, dtype=np.float32)
    except (ValueError, TypeError) as exc:
        raise InputFileError(f"tensor is not a rectangular array of numbers: {exc}") from exc
    if array.ndim < 1 or array.shape[0] == 0 or array.shape[0] > MAX_ROWS:
        raise InputFileError(f"tensor needs a batch dimension of 1 to {MAX_ROWS}")
    return InputBatch("tensor", (torch.from_numpy(array),),
                      names=[f"#{i}" for i in range(array.shape[0])])


async def _multipart(request: Request, service: ExplainService) -> tuple[InputBatch, dict]:
    """A file upload (``file``) with form fields ``kind``, ``target``, ``mode``, ``figures``."""
    from dlbacktrace.io.inputs import detect_kind, read_input

    try:
        form = await request.form(max_files=1, max_fields=10)
    except Exception as exc:
        raise _bad(f"malformed multipart body: {exc}") from exc
    upload = form.get("file")
    if upload is None or isinstance(upload, str):
        raise _bad("multipart requests need a 'file' field with the input file")
    raw = await upload.read()
    name = PurePath((upload.filename or "upload").replace("\\", "/")).name or "upload"
    fields = {k: v for k, v in form.items() if isinstance(v, str)}
    try:
        kind = fields.get("kind") or detect_kind(name)
        if kind == "image":
            batch = image_batch([load_image(raw, name)], [name],
                                preprocess=service.loaded.preprocess)
        elif kind == "text":
            batch = text_batch([decode_text(raw, name)], service.loaded.tokenizer)
            batch.names = [name]
        elif kind in ("table", "tensor"):
            import tempfile

            suffix = PurePath(name).suffix.lower()
            allowed = (".csv", ".parquet") if kind == "table" else (".npy", ".safetensors")
            if suffix not in allowed:
                raise InputFileError(f"a {kind} upload must be one of {allowed}")
            with tempfile.TemporaryDirectory() as tmp:  # our own name: no path from the client
                path = Path(tmp) / f"upload{suffix}"
                path.write_bytes(raw)
                batch = read_input(path, service.loaded, kind=kind)
            if batch.size > MAX_ROWS:
                raise InputFileError(f"at most {MAX_ROWS} rows per request")
        else:
            raise InputFileError(f"unknown kind {kind!r}")
    except InputFileError as exc:
        raise _bad(str(exc)) from exc
    options: dict[str, Any] = {"mode": fields.get("mode", "default"),
                               "figures": fields.get("figures", "true").lower() != "false"}
    target = fields.get("target")
    if target not in (None, ""):
        if target in ("positive", "negative"):
            options["target"] = target
        else:
            try:
                options["target"] = int(target)
                if not CLASS_RANGE[0] <= options["target"] <= CLASS_RANGE[1]:
                    raise ValueError("out of range")
            except ValueError:
                raise _bad("target must be an integer, positive or negative") from None
    if options["mode"] not in ("default", "contrast"):
        raise _bad("mode must be default or contrast")
    return batch, options


def create_app(service: ExplainService, config: ServerConfig | None = None) -> Any:
    """The ASGI app serving ``service``; ``config.check()`` refuses unsafe settings."""
    config = config or ServerConfig()
    config.check()
    api = FastAPI(
        title="dlbacktrace",
        version=_version(),
        description="Deterministic relevance backtracing (DLBacktrace) for one model. "
        "POST /explain with JSON or a multipart file upload.",
    )
    def authorise(
        creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_BEARER)],
    ) -> None:
        if config.token is None:
            return
        if creds is None or not hmac.compare_digest(creds.credentials.encode(),
                                                    config.token.encode()):
            raise HTTPException(401, "missing or wrong bearer token",
                                headers={"WWW-Authenticate": "Bearer"})

    auth = [Depends(authorise)]

    @api.middleware("http")
    async def _security_headers(request: Request, call_next: Any) -> Any:
        response = await call_next(request)
        if not request.url.path.startswith(DOCS_PATHS):
            for name, value in SECURITY_HEADERS.items():
                response.headers.setdefault(name, value)
        return response

    @api.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("request %s %s failed", request.method, request.url.path)
        return JSONResponse({"detail": f"internal error: {type(exc).__name__}"}, status_code=500)

    @api.get("/health")
    def health() -> dict[str, Any]:
        """Liveness, and which model is served (only without a token: /health needs none)."""
        if config.token is not None:
            return {"status": "ok"}
        return {"status": "ok", "model": service.description,
                "audit": service.audit is not None}

    @api.get("/model", dependencies=auth)
    def model_info() -> dict[str, Any]:
        """What the dashboard needs to build its forms."""
        loaded = service.loaded
        return {"description": service.description, "task": loaded.task,
                "labels": loaded.labels, "feature_names": loaded.feature_names,
                "accepts_text": loaded.tokenizer is not None}

    body_doc = {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/ExplainRequest"}},
                "multipart/form-data": {"schema": {
                    "type": "object", "required": ["file"],
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "kind": {"type": "string", "enum": ["image", "text", "table", "tensor"]},
                        "target": {"type": "string"},
                        "mode": {"type": "string", "enum": ["default", "contrast"]},
                        "figures": {"type": "string", "enum": ["true", "false"]},
                    },
                }},
            },
        }
    }

    @api.post("/explain", dependencies=auth, openapi_extra=body_doc,
              responses={400: {"description": "bad input"}, 413: {"description": "too large"}})
    async def explain(request: Request) -> dict[str, Any]:
        """Explain one input (JSON body, or a multipart file upload)."""
        ctype = request.headers.get("content-type", "")
        if ctype.startswith("multipart/form-data"):
            batch, options = await _multipart(request, service)
        elif ctype.startswith("application/json"):
            try:
                data = json.loads(await request.body())
            except (ValueError, UnicodeDecodeError) as exc:
                raise _bad(f"body is not valid JSON: {exc}", 400) from exc
            except RecursionError as exc:
                raise _bad("body is nested too deeply to be a request", 400) from exc
            try:
                req = ExplainRequest.model_validate(data)
            except Exception as exc:
                raise _bad(f"invalid request: {exc}", 422) from exc
            try:
                batch = build_batch(req, service)
            except InputError as exc:
                raise _bad(str(exc)) from exc
            options = {"mode": req.mode, "target": req.target, "figures": req.figures}
        else:
            raise _bad("send application/json or multipart/form-data", 415)
        figures = options.pop("figures")
        try:
            result = await run_in_threadpool(service.explain, batch, **options)
            return await run_in_threadpool(result.to_json, figures)
        except (InputError, TargetError) as exc:
            raise _bad(f"{type(exc).__name__}: {exc}", 422) from exc
        except DLBacktraceError as exc:
            raise _bad(f"{type(exc).__name__}: {exc}", 422) from exc

    def _store() -> Any:
        if service.audit is None:
            raise _bad("the audit log is disabled on this server", 404)
        return service.audit

    @api.get("/explanations", dependencies=auth)
    def list_explanations(limit: int = Query(50, ge=1, le=500),
                          offset: int = Query(0, ge=0, le=MAX_ID)) -> dict[str, Any]:
        """Browse the audit log, newest first."""
        store = _store()
        return {"total": store.count(),
                "records": [r.summary() for r in store.list(limit, offset)]}

    def _record(record_id: int) -> Any:
        from dlbacktrace.audit import AuditError

        try:
            return _store().get(record_id)
        except AuditError as exc:
            raise _bad(str(exc), 404) from exc

    @api.get("/explanations/{record_id}", dependencies=auth)
    def get_explanation(record_id: RecordId, figures: bool = False) -> dict[str, Any]:
        """One stored explanation: summary, content and per-input rows."""
        from dlbacktrace.report.views import explanation_rows, ledger

        rec = _record(record_id)
        content = rec.content
        info = content.get("input") or {}
        inputs = rec.inputs()
        exp = rec.explanation()
        rows = explanation_rows(exp, info.get("kind", "tensor"), args=inputs.args,
                                kwargs=inputs.kwargs, names=info.get("names"),
                                tokens=info.get("tokens"),
                                feature_names=info.get("feature_names"),
                                labels=info.get("labels"), figures=figures)
        return {**rec.summary(), "record_id": rec.id, "content": content,
                "ledger": ledger(exp), "rows": rows}

    @api.get("/explanations/{record_id}/report", dependencies=auth,
             response_class=HTMLResponse)
    def get_report(record_id: RecordId) -> HTMLResponse:
        """The record as a self-contained HTML report."""
        from dlbacktrace.apps.server.service import record_report

        return HTMLResponse(record_report(_record(record_id)))

    @api.post("/explanations/{record_id}/verify", dependencies=auth)
    def verify(record_id: RecordId) -> dict[str, Any]:
        """Recompute the record with the served model and compare bit for bit."""
        from dlbacktrace.audit import verify_record

        _record(record_id)
        with service._lock:
            return verify_record(_store(), record_id, service.bt).to_dict()

    @api.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    api.mount("/static", StaticFiles(directory=STATIC), name="static")
    api.add_middleware(BodyLimit, limit=config.max_body)
    return api


def _version() -> str:
    from dlbacktrace import __version__

    return __version__

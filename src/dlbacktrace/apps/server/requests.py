"""Explain requests, JSON or multipart, turned into an input batch and explanation options.

The JSON request model is built from the registered input kinds (each declares the fields it
reads), so a new kind is accepted by the server without editing this module.
"""

from __future__ import annotations

import json
from pathlib import PurePath
from typing import Annotated, Any, Literal

from fastapi import HTTPException, Request
from pydantic import BaseModel, ConfigDict, Field, create_model

from dlbacktrace.apps.server.service import ExplainService
from dlbacktrace.engine.errors import InputError
from dlbacktrace.io.batch import InputBatch, InputFileError
from dlbacktrace.io.kinds import RequestLimits, detect_kind, get_kind, registered_kinds

__all__ = [
    "CLASS_RANGE",
    "LIMITS",
    "batch_from_form",
    "batch_from_json",
    "client_error",
    "multipart_schema",
    "request_model",
]

LIMITS = RequestLimits(max_rows=64, max_text_chars=20_000)
# A class index: anything outside a 32-bit range is a client error (422), not a server error.
CLASS_RANGE = (-(2**31), 2**31 - 1)
ClassIndex = Annotated[int, Field(ge=CLASS_RANGE[0], le=CLASS_RANGE[1])]


def client_error(message: str, status: int = 400) -> HTTPException:
    """A 4xx answer naming the problem.

    Parameters
    ----------
    message
        What is wrong with the request.
    status
        The HTTP status (400 bad input, 404, 415, 422).
    """
    return HTTPException(status_code=status, detail=message)


def request_model() -> type[BaseModel]:
    """The JSON explain request: ``kind``, the registered kinds' fields, then the options."""
    names = tuple(registered_kinds())
    fields: dict[str, Any] = {"kind": (Literal[names], ...)}  # type: ignore[valid-type]
    for kind in registered_kinds().values():
        for name, spec in kind.request_fields.items():
            fields[name] = (spec.type, Field(spec.default, description=spec.description))
    fields["target"] = (
        ClassIndex | list[ClassIndex] | Literal["positive", "negative"] | None, None)
    fields["mode"] = (Literal["default", "contrast"], "default")
    fields["figures"] = (bool, Field(True, description="Embed heat-map PNGs in the response "
                                                       "(images)."))
    return create_model("ExplainRequest", __config__=ConfigDict(extra="forbid"),
                        __doc__="A JSON explain request: one kind of input plus the "
                        "explanation options.", **fields)


def multipart_schema() -> dict[str, Any]:
    """OpenAPI schema of the multipart form (a file plus the options as strings)."""
    return {
        "type": "object", "required": ["file"],
        "properties": {
            "file": {"type": "string", "format": "binary"},
            "kind": {"type": "string", "enum": list(registered_kinds())},
            "target": {"type": "string"},
            "mode": {"type": "string", "enum": ["default", "contrast"]},
            "figures": {"type": "string", "enum": ["true", "false"]},
        },
    }


def batch_from_json(raw: bytes, model: type[BaseModel],
                    service: ExplainService) -> tuple[InputBatch, dict[str, Any]]:
    """Parse and validate a JSON body, then build its input with the kind's ``from_request``.

    Parameters
    ----------
    raw
        The request body.
    model
        The request model (:func:`request_model`).
    service
        The served model (its tokenizer, preprocess and feature names).
    """
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise client_error(f"body is not valid JSON: {exc}", 400) from exc
    except RecursionError as exc:
        raise client_error("body is nested too deeply to be a request", 400) from exc
    try:
        req = model.model_validate(data)
    except Exception as exc:
        raise client_error(f"invalid request: {exc}", 422) from exc
    try:
        batch = get_kind(req.kind).from_request(req, service.loaded, LIMITS)
    except InputError as exc:
        raise client_error(str(exc)) from exc
    return batch, {"mode": req.mode, "target": req.target, "figures": req.figures}


async def batch_from_form(request: Request,
                          service: ExplainService) -> tuple[InputBatch, dict[str, Any]]:
    """A file upload (``file``) with form fields ``kind``, ``target``, ``mode``, ``figures``.

    Parameters
    ----------
    request
        The multipart request.
    service
        The served model.
    """
    try:
        form = await request.form(max_files=1, max_fields=10)
    except Exception as exc:
        raise client_error(f"malformed multipart body: {exc}") from exc
    upload = form.get("file")
    if upload is None or isinstance(upload, str):
        raise client_error("multipart requests need a 'file' field with the input file")
    raw = await upload.read()
    name = PurePath((upload.filename or "upload").replace("\\", "/")).name or "upload"
    fields = {k: v for k, v in form.items() if isinstance(v, str)}
    try:
        kind = fields.get("kind") or detect_kind(name)
        if kind not in registered_kinds():
            raise InputFileError(f"unknown kind {kind!r}")
        batch = get_kind(kind).from_upload(raw, name, service.loaded)
        if batch.size > LIMITS.max_rows:
            raise InputFileError(f"at most {LIMITS.max_rows} rows per request")
    except InputFileError as exc:
        raise client_error(str(exc)) from exc
    return batch, _form_options(fields)


def _form_options(fields: dict[str, str]) -> dict[str, Any]:
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
                raise client_error("target must be an integer, positive or negative") from None
    if options["mode"] not in ("default", "contrast"):
        raise client_error("mode must be default or contrast")
    return options

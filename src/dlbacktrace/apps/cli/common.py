"""What every command shares: the consoles, error handling, option types and model loading.

The CLI is the only part of the package that prints; it prints through these consoles.
"""

from __future__ import annotations

import json
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from dlbacktrace.engine.errors import DLBacktraceError, InputError, TargetError

__all__ = [
    "DEFAULT_AUDIT",
    "AuditOpt",
    "DbOpt",
    "FactoryOpt",
    "GgufOpt",
    "ModelOpt",
    "TaskOpt",
    "WeightsOpt",
    "check_outputs",
    "console",
    "err_console",
    "load",
    "parse_class_names",
    "parse_target",
    "reported_errors",
    "write_json",
]

DEFAULT_AUDIT = Path("dlbacktrace-audit.db")
console = Console()
err_console = Console(stderr=True)


@contextmanager
def reported_errors() -> Iterator[None]:
    """Known errors become one red line and exit status 2 instead of a traceback."""
    try:
        yield
    except DLBacktraceError as exc:
        err_console.print(f"[red]error:[/red] {type(exc).__name__}: {exc}", soft_wrap=True)
        raise typer.Exit(2) from None


@contextmanager
def third_party_warnings_silenced() -> Iterator[None]:
    """Warnings raised while the command runs are not printed (the baselines' libraries warn
    about every call); the CLI owns its process, and the filters are restored afterwards."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def check_outputs(*paths: Path | None) -> None:
    """Fail before any computation if an output cannot be written (its folder is missing).

    Parameters
    ----------
    *paths
        Output files; ``None`` entries are skipped.
    """
    for path in paths:
        if path is not None and not path.parent.is_dir():
            raise typer.BadParameter(f"cannot write {path}: folder {path.parent} does not exist")


MODEL_HELP = (
    "package.module:factory, file.py:factory, a .pt2 archive, a Hugging Face folder "
    "(with --task), a .gguf file, or weights (.safetensors/.pt, with --factory). A factory "
    "returns a model, or (model, preprocess) where preprocess takes one PIL.Image and returns "
    "the model's input tensor for it (C x H x W); without it images become C x H x W floats "
    "in [0, 1]."
)
ModelOpt = Annotated[str, typer.Option("--model", "-m", help=MODEL_HELP)]
GgufOpt = Annotated[str | None, typer.Option(
    "--gguf-file",
    help="A GGUF model file (then --model is not needed), or its file name inside the "
    "--model folder. Loaded with transformers' gguf_file= and de-quantised to float32 "
    "(needs the gguf package); the task defaults to causal-lm.",
)]
TaskOpt = Annotated[str | None, typer.Option(
    help="Hugging Face task: sequence-classification, causal-lm, token-classification, ...")]
WeightsOpt = Annotated[Path | None, typer.Option(
    help="Weights for a factory: .safetensors, or a .pt state dict (loaded weights_only).")]
FactoryOpt = Annotated[str | None, typer.Option(
    help="package.module:factory that builds the model when --model is a weights file.")]
AuditOpt = Annotated[str, typer.Option(
    "--audit", help="Audit log: a SQLite path or an SQLAlchemy URL.")]
DbOpt = Annotated[str, typer.Option("--db", help="Audit log: a SQLite path or SQLAlchemy URL.")]


def load(model: str | None, task: str | None, weights: Path | None, factory: str | None,
         gguf_file: str | None = None) -> Any:
    """The model named by the ``--model/--task/--weights/--factory/--gguf-file`` options.

    Parameters
    ----------
    model, task, weights, factory, gguf_file
        As for :func:`~dlbacktrace.io.loading.parse_model_spec` (``model`` may be ``None``
        when ``gguf_file`` is a file).
    """
    from dlbacktrace.io.loading import ModelLoadError, load_model

    if not model and gguf_file is None:
        raise ModelLoadError("give --model (or --gguf-file FILE for a GGUF model)")
    return load_model(model or "", task=task, weights=str(weights) if weights else None,
                      factory=factory, gguf_file=gguf_file)


def _class_index(piece: str, labels: list[str] | None) -> int | None:
    """The index of class name ``piece`` (exact match first, then ignoring case), or None."""
    if not labels:
        return None
    if piece in labels:
        return labels.index(piece)
    folded = [k for k, name in enumerate(labels) if name.casefold() == piece.casefold()]
    return folded[0] if len(folded) == 1 else None


def parse_target(text: str | None, labels: list[str] | None = None) -> Any:
    """``--target``: a class index or name, a comma list of them (one per row), or
    ``positive``/``negative`` for single-logit models.

    A class name (from the model's ``id2label``/``labels`` or ``--class-names``) wins over
    the single-logit meaning: on a model whose classes are named negative/positive,
    ``positive`` is that class's index. Integers are always indices.

    Parameters
    ----------
    text
        The option's value (``None``: the predicted class).
    labels
        The model's class names, if it has them.
    """
    if text is None:
        return None
    values: list[int] = []
    for piece in (p.strip() for p in text.split(",")):
        try:
            index: int | None = int(piece)  # digits are always an index, never a name
        except ValueError:
            index = _class_index(piece, labels)
        if index is None:
            if piece in ("positive", "negative") and "," not in text:
                return piece
            names = f"a class name ({', '.join(labels)}), " if labels else ""
            raise TargetError(
                f"--target must be a class index, {names}a comma list of them, or "
                f"positive/negative (single-logit models); got {piece!r}"
            )
        values.append(index)
    return values[0] if len(values) == 1 else values


def parse_class_names(text: str | None) -> list[str] | None:
    """``--class-names``: a comma list of class names, in class-index order.

    Parameters
    ----------
    text
        The option's value (``None``: the model's own names).
    """
    if text is None:
        return None
    names = [n.strip() for n in text.split(",")]
    if any(not n for n in names) or len(set(names)) != len(names):
        raise InputError(
            f"--class-names must be distinct non-empty names separated by commas; got {text!r}"
        )
    return names


def write_json(items: list[Any], out: Path | None) -> None:
    """One item as a JSON object (several as a list) to ``out``, or to stdout.

    Parameters
    ----------
    items
        JSON-ready results.
    out
        The file to write, or ``None`` for stdout.
    """
    payload = json.dumps(items[0] if len(items) == 1 else items, indent=2) + "\n"
    if out:
        out.write_text(payload, encoding="utf-8")
    else:
        sys.stdout.write(payload)

"""Load a model from a description that can be stored and replayed (CLI, server, audit verify).

A :class:`ModelSpec` says *how* a model was obtained, never contains the model itself, and
round-trips through JSON, so an audit record can load the same model again later. Nothing a
user gives is ever unpickled: factories are imported Python code (the user's own), weights come
from safetensors or from ``torch.load(..., weights_only=True)``, ``.pt2`` archives go through
``torch.export.load`` and Hugging Face folders through ``from_pretrained`` (offline).

Spec strings accepted by :func:`parse_model_spec` (the CLI's ``--model``):

* ``package.module:factory`` or ``path/to/file.py:factory`` - the factory returns a model, or
  ``(model, preprocess)`` where ``preprocess`` maps a PIL image (or a table/tensor) to a tensor;
* ``model.pt2`` - a ``torch.export`` archive (export it from the model in eval mode);
* a folder with ``config.json`` - a local Hugging Face model, with ``task``
  (``sequence-classification``, ``causal-lm``, ``token-classification``, ``image-classification``);
* a ``.gguf`` file (or a folder plus ``gguf_file=``, the file's name in it) - a GGUF model that
  ``transformers`` de-quantises to float32 (needs the ``gguf`` package; task ``causal-lm`` unless
  given); the spec stores the folder and the file name, so audit records reload it;
* weights (``.safetensors``, or ``.pt``/``.pth`` state dicts) plus ``factory=``.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from dlbacktrace.engine.errors import DLBacktraceError

__all__ = [
    "HF_TASKS",
    "LoadedModel",
    "ModelLoadError",
    "ModelSpec",
    "load_model",
    "parse_model_spec",
]

HF_TASKS = {
    "sequence-classification": "AutoModelForSequenceClassification",
    "causal-lm": "AutoModelForCausalLM",
    "token-classification": "AutoModelForTokenClassification",
    "image-classification": "AutoModelForImageClassification",
    "feature-extraction": "AutoModel",
}
KINDS = ("factory", "export", "hf")


class ModelLoadError(DLBacktraceError, ValueError):
    """The model description is wrong or the model could not be loaded from it."""


@dataclass(frozen=True)
class ModelSpec:
    """How to load a model: JSON-serialisable, stored in audit records for re-verification.

    ``kind``: ``"factory"`` (``source`` = ``module:function`` or ``file.py:function``,
    optional ``weights``), ``"export"`` (``source`` = a ``.pt2`` file) or ``"hf"`` (``source`` =
    a local folder, ``task`` required). ``kwargs`` are passed to the factory.
    """

    kind: str
    source: str
    weights: str | None = None
    task: str | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelSpec:
        unknown = set(data) - {"kind", "source", "weights", "task", "kwargs"}
        if unknown:
            raise ModelLoadError(f"unknown model spec fields: {sorted(unknown)}")
        return cls(**{**data, "kwargs": dict(data.get("kwargs") or {})})

    def describe(self) -> str:
        text = f"{self.kind}: {self.source}"
        if self.weights:
            text += f" + weights {self.weights}"
        if self.task:
            text += f" (task {self.task})"
        return text


@dataclass
class LoadedModel:
    """A model ready to explain, with what is needed to turn raw inputs into model inputs."""

    model: torch.nn.Module
    spec: ModelSpec | None = None
    preprocess: Callable[[Any], Any] | None = None
    tokenizer: Any = None
    labels: list[str] | None = None
    feature_names: list[str] | None = None

    @property
    def task(self) -> str | None:
        return self.spec.task if self.spec is not None else None


def parse_model_spec(
    text: str,
    *,
    task: str | None = None,
    weights: str | None = None,
    factory: str | None = None,
    kwargs: dict[str, Any] | None = None,
    gguf_file: str | None = None,
) -> ModelSpec:
    """Turn the CLI's ``--model`` (plus ``--task/--weights/--factory/--gguf-file``) into a
    :class:`ModelSpec`.

    File paths are resolved to absolute paths so a stored spec still loads from another
    working directory.

    Parameters
    ----------
    text
        The model description (see the module docstring); may be empty with ``gguf_file``.
    task
        The Hugging Face task of a folder or GGUF file.
    weights
        Weights for a factory.
    factory
        The factory that builds the model when ``text`` is a weights file.
    kwargs
        Passed to the factory or to ``from_pretrained``.
    gguf_file
        A GGUF file, or its name inside the folder ``text``.
    """
    kwargs = dict(kwargs or {})
    path = Path(text)
    suffix = path.suffix.lower()
    if gguf_file is not None or suffix == ".gguf":
        if weights is not None or factory is not None:
            raise ModelLoadError("a GGUF file holds its own weights; leave out --weights/--factory")
        return _gguf_spec(text, gguf_file, task, kwargs)
    if suffix in (".safetensors", ".pt", ".pth", ".bin"):
        if not factory:
            raise ModelLoadError(
                f"{text!r} holds weights only; pass the code that builds the model with "
                "--factory package.module:function (weights are loaded into it)"
            )
        return ModelSpec("factory", _resolve_factory(factory), str(_existing(path)), None, kwargs)
    if suffix == ".pt2":
        return ModelSpec("export", str(_existing(path)), None, None, kwargs)
    if path.is_dir():
        if not (path / "config.json").is_file():
            ggufs = sorted(p.name for p in path.glob("*.gguf"))
            hint = f" (for its GGUF file add --gguf-file {ggufs[0]})" if ggufs else ""
            raise ModelLoadError(
                f"folder {text!r} has no config.json; a Hugging Face model folder is expected"
                + hint
            )
        if task is None:
            raise ModelLoadError(
                f"a Hugging Face model folder needs --task, one of {sorted(HF_TASKS)}"
            )
        if task not in HF_TASKS:
            raise ModelLoadError(f"unknown task {task!r}; choose one of {sorted(HF_TASKS)}")
        return ModelSpec("hf", str(path.resolve()), weights, task, kwargs)
    if ":" in text:
        if weights is not None:
            weights = str(_existing(Path(weights)))
        return ModelSpec("factory", _resolve_factory(text), weights, task, kwargs)
    raise ModelLoadError(
        f"cannot tell how to load {text!r}: expected package.module:function, "
        "file.py:function, a .pt2 archive, weights with --factory, or a Hugging Face folder"
    )


GGUF_MAGIC = b"GGUF"


def _gguf_spec(text: str, gguf_file: str | None, task: str | None,
               kwargs: dict[str, Any]) -> ModelSpec:
    """The spec of a GGUF model: ``text`` is the file, or the folder holding ``gguf_file``."""
    if gguf_file is None:
        file = Path(text)
    elif not text:
        file = Path(gguf_file)
    elif Path(text).suffix.lower() == ".gguf":
        raise ModelLoadError("give the GGUF file once: as --model FILE or as --gguf-file FILE")
    else:
        folder = Path(text)
        if not folder.is_dir():
            raise ModelLoadError(
                f"with --gguf-file, --model must be the folder holding it; {text!r} is not a "
                "folder (or give --gguf-file the file's path alone)"
            )
        file = folder / gguf_file
        given = Path(gguf_file)
        if not file.is_file() and given.is_file() and given.resolve().parent == folder.resolve():
            file = given
        if not file.is_file():
            raise ModelLoadError(f"no GGUF file {gguf_file!r} in folder {text!r}")
    file = _existing(file)
    with file.open("rb") as handle:
        if handle.read(4) != GGUF_MAGIC:
            raise ModelLoadError(f"{file} is not a GGUF file (it does not start with 'GGUF')")
    task = task or "causal-lm"
    if task not in HF_TASKS:
        raise ModelLoadError(f"unknown task {task!r}; choose one of {sorted(HF_TASKS)}")
    return ModelSpec("hf", str(file.parent), None, task, {**kwargs, "gguf_file": file.name})


def _existing(path: Path) -> Path:
    if not path.is_file():
        raise ModelLoadError(f"file not found: {path}")
    return path.resolve()


def _resolve_factory(text: str) -> str:
    module, sep, func = text.rpartition(":")
    if not sep or not module or not func:
        raise ModelLoadError(f"factory must look like package.module:function, got {text!r}")
    if module.endswith(".py"):
        return f"{_existing(Path(module))}:{func}"
    return text


def _import_factory(source: str) -> Callable[..., Any]:
    module_name, _, func_name = source.rpartition(":")
    try:
        if module_name.endswith(".py"):
            path = Path(module_name)
            name = "_dlbacktrace_factory_" + hashlib.sha256(str(path).encode()).hexdigest()[:12]
            module = sys.modules.get(name)
            if module is None:
                spec = importlib.util.spec_from_file_location(name, path)
                if spec is None or spec.loader is None:
                    raise ModelLoadError(f"cannot import {path}")
                module = importlib.util.module_from_spec(spec)
                sys.modules[name] = module
                spec.loader.exec_module(module)
        else:
            module = importlib.import_module(module_name)
    except ModelLoadError:
        raise
    except Exception as exc:
        raise ModelLoadError(f"cannot import {module_name!r}: {type(exc).__name__}: {exc}") from exc
    func = getattr(module, func_name, None)
    if not callable(func):
        raise ModelLoadError(f"{module_name!r} has no callable {func_name!r}")
    return func


def _load_state_dict(path: str) -> dict[str, torch.Tensor]:
    if path.endswith(".safetensors"):
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        _existing(Path(path))
        try:
            return load_file(path)
        except (SafetensorError, OSError) as exc:
            raise ModelLoadError(f"{path} is not a readable safetensors file: {exc}") from exc
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # weights_only refuses anything but tensors and plain containers
        raise ModelLoadError(
            f"{path} is not a plain state dict loadable with weights_only=True "
            f"(pickled objects are never loaded): {exc}"
        ) from exc
    if not isinstance(state, dict):
        raise ModelLoadError(f"{path} does not hold a state dict (got {type(state).__name__})")
    return state


def _load_factory(spec: ModelSpec) -> LoadedModel:
    built = _import_factory(spec.source)(**spec.kwargs)
    preprocess = None
    if isinstance(built, tuple):
        if len(built) != 2:
            raise ModelLoadError("a factory returns a model or (model, preprocess)")
        built, preprocess = built
    if inspect.isclass(built) or not isinstance(built, torch.nn.Module):
        raise ModelLoadError(
            f"factory {spec.source} returned {type(built).__name__}, not an nn.Module"
        )
    if spec.weights:
        state = _load_state_dict(spec.weights)
        try:
            built.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise ModelLoadError(f"weights {spec.weights} do not fit the model: {exc}") from exc
    labels = getattr(built, "labels", None)
    features = getattr(built, "feature_names", None)
    return LoadedModel(
        built.eval(), spec, preprocess, None,
        [str(x) for x in labels] if labels else None,
        [str(x) for x in features] if features else None,
    )


def _load_export(spec: ModelSpec) -> LoadedModel:
    try:
        program = torch.export.load(spec.source)
    except Exception as exc:
        raise ModelLoadError(f"{spec.source} is not a torch.export archive: {exc}") from exc
    module = program.module()
    # The unlifted module refuses train()/eval() (its graph is fixed in the mode it was
    # exported in). Backtrace sets eval mode on any model, so give back nn.Module's own methods:
    # the archive must have been exported from the model in eval mode.
    for sub in module.modules():
        sub.__dict__.pop("train", None)
        sub.__dict__.pop("eval", None)
    return LoadedModel(module, spec)


def _load_hf(spec: ModelSpec) -> LoadedModel:
    try:
        import transformers
    except ImportError as exc:
        raise ModelLoadError(
            "loading a Hugging Face folder needs transformers: pip install 'dlbacktrace[hf]'"
        ) from exc
    cls = getattr(transformers, HF_TASKS.get(spec.task or "", ""), None)
    if cls is None:
        raise ModelLoadError(f"unknown task {spec.task!r}; choose one of {sorted(HF_TASKS)}")
    gguf_file = spec.kwargs.get("gguf_file")
    options = dict(spec.kwargs)
    if gguf_file is not None:
        if importlib.util.find_spec("gguf") is None:
            raise ModelLoadError("loading a GGUF file needs the gguf package: pip install gguf")
        # De-quantised to float32: the engine's sweeps assume full-precision weights.
        options.setdefault("dtype", torch.float32)
    try:
        model = cls.from_pretrained(spec.source, local_files_only=True, **options)
    except Exception as exc:
        what = f"{spec.source}/{gguf_file}" if gguf_file else spec.source
        raise ModelLoadError(f"cannot load {what} as {spec.task}: {exc}") from exc
    tokenizer = None
    preprocess = None
    tokenizer_options = {"gguf_file": gguf_file} if gguf_file else {}
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(
            spec.source, local_files_only=True, **tokenizer_options
        )
    except Exception:  # image models have an image processor instead of a tokenizer
        try:
            processor = transformers.AutoImageProcessor.from_pretrained(
                spec.source, local_files_only=True
            )
            preprocess = lambda image: processor(images=image, return_tensors="pt")[  # noqa: E731
                "pixel_values"
            ][0]
        except Exception:
            pass
    id2label = getattr(model.config, "id2label", None) or {}
    labels = [str(id2label[i]) for i in sorted(id2label)] if id2label else None
    return LoadedModel(model.eval(), spec, preprocess, tokenizer, labels)


def load_model(spec: ModelSpec | str, **parse_kwargs: Any) -> LoadedModel:
    """Load the model a spec (or a spec string, see :func:`parse_model_spec`) describes."""
    if isinstance(spec, str):
        spec = parse_model_spec(spec, **parse_kwargs)
    if spec.kind == "factory":
        return _load_factory(spec)
    if spec.kind == "export":
        return _load_export(spec)
    if spec.kind == "hf":
        return _load_hf(spec)
    raise ModelLoadError(f"unknown model spec kind {spec.kind!r}; expected one of {KINDS}")

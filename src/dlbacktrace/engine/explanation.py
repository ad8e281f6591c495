"""The result of one explanation: relevance per input, its ledger, and the context to show it.

An :class:`Explanation` is what every view consumes (plots, HTML, DataFrames, reports, the
audit store), the way SHAP's ``Explanation`` feeds every SHAP plot: besides the maps it carries
the input data, feature names, tokens and class names it was computed with, so a view needs
nothing else. Rows slice like a batch (``exp[i]``, ``exp[i:j]``). Saved as a single ``.npz``
(arrays plus a JSON header, :mod:`dlbacktrace.engine.fileformat`); loading never unpickles.

The display methods (:meth:`Explanation.plot`, :meth:`Explanation._repr_html_`,
:meth:`Explanation.to_dataframe`) import ``dlbacktrace.viz`` or pandas only when called, so the
engine itself depends on torch and NumPy alone.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch

from dlbacktrace.engine.errors import InputError
from dlbacktrace.engine.fileformat import read_archive, with_npz_suffix, write_archive

FORMAT_VERSION = 1
# ``absorbed`` of a row slice: the per-node amounts are batch totals and cannot be split by row,
# so a slice keeps its rows' absorbed relevance (``absorbed_rows``) under this one key.
ROWS_ABSORBED = "(rows)"

Maps = dict[str, torch.Tensor]
RowIndex = int | slice | Sequence[int] | torch.Tensor | np.ndarray


@dataclass(repr=False)
class Explanation:
    """Relevance of every input for one (batched) explained output, with its context.

    ``mode="default"``: ``relevance`` is the unsigned relevance (how strongly each feature
    influenced the output, in either direction). ``mode="contrast"``: ``relevance`` is the
    signed map (signed shares, DESIGN.md 2.1), ``positive = max(relevance, 0)`` (evidence for)
    and ``negative = max(−relevance, 0)`` (evidence against), so ``relevance = positive −
    negative`` exactly, and ``total = positive + negative = |relevance|``.
    ``seed`` is the relevance placed on the output (contrast: the selection times the
    output's value). Integer token-id inputs get one value per token.

    Context (all optional, never used by the arithmetic): ``inputs_by_name`` holds the explained
    input data (detached; the engine's own copies of float inputs, references to integer
    ones, never written); ``feature_names_by_name`` one name per feature of a row of an input
    (row-major over the dimensions after the batch dimension); ``tokens`` one list of token
    strings per batch row, aligned with the token-id input ``token_input``; ``output_names``
    the name of each output class (the last output dimension).
    """

    mode: str
    input_names: list[str]
    total_by_name: Maps
    net_by_name: Maps | None
    absorbed: dict[str, float]
    seed: torch.Tensor
    target: torch.Tensor | None
    output: torch.Tensor
    layers: Maps = field(default_factory=dict)
    layers_net: Maps = field(default_factory=dict)
    single_input: bool = True
    # Absorbed relevance per batch row, and a last slot for amounts the sweep could not
    # attribute to one row (float64, ``[B + 1]``); None for outputs without a batch dimension.
    absorbed_rows: torch.Tensor | None = None
    inputs_by_name: Maps = field(default_factory=dict)
    feature_names_by_name: dict[str, list[str]] = field(default_factory=dict)
    tokens: list[list[str]] | None = None
    token_input: str | None = None
    output_names: list[str] | None = None

    def __post_init__(self) -> None:
        if self.tokens is not None and self.token_input is None:
            self.token_input = self._guess_token_input()

    # ---- maps -------------------------------------------------------------------------------
    def _pack(self, by_name: dict[str, Any]) -> Any:
        values = tuple(by_name.get(n) for n in self.input_names)
        return values[0] if self.single_input else values

    @property
    def relevance_by_name(self) -> Maps:
        if self.mode == "contrast":
            return dict(self.net_by_name or {})
        return dict(self.total_by_name)

    @property
    def relevance(self) -> torch.Tensor | tuple[torch.Tensor, ...]:
        return self._pack(self.relevance_by_name)

    @property
    def total(self) -> torch.Tensor | tuple[torch.Tensor, ...]:
        return self._pack(self.total_by_name)

    def _half(self, sign: float) -> Maps | None:
        if self.net_by_name is None:
            return None
        return {n: (sign * self.net_by_name[n]).clamp_min(0) for n in self.input_names}

    @property
    def positive_by_name(self) -> Maps | None:
        """``max(relevance, 0)`` per input in contrast mode (evidence for); None otherwise."""
        return self._half(1.0)

    @property
    def negative_by_name(self) -> Maps | None:
        """``max(−relevance, 0)`` per input in contrast mode (evidence against)."""
        return self._half(-1.0)

    @property
    def positive(self) -> torch.Tensor | tuple[torch.Tensor, ...] | None:
        half = self._half(1.0)
        return None if half is None else self._pack(half)

    @property
    def negative(self) -> torch.Tensor | tuple[torch.Tensor, ...] | None:
        half = self._half(-1.0)
        return None if half is None else self._pack(half)

    # ---- context ----------------------------------------------------------------------------
    @property
    def inputs(self) -> torch.Tensor | tuple[torch.Tensor | None, ...] | None:
        """The explained input data, packed like :attr:`relevance` (None where not kept)."""
        return self._pack(self.inputs_by_name) if self.inputs_by_name else None

    @property
    def feature_names(self) -> list[str] | tuple[list[str] | None, ...] | None:
        """Feature names, packed like :attr:`relevance` (None where not given)."""
        if not self.feature_names_by_name:
            return None
        return self._pack(self.feature_names_by_name)

    @property
    def batch_size(self) -> int | None:
        """Rows of the explained output (its leading dimension); None for a scalar output."""
        return int(self.output.shape[0]) if self.output.dim() >= 1 else None

    def __len__(self) -> int:
        rows = self.batch_size
        if rows is None:
            raise TypeError("this explanation has no batch dimension")
        return rows

    def batched(self, value: torch.Tensor) -> bool:
        """Whether ``value`` has this explanation's batch dimension first (rows slice it).

        Parameters
        ----------
        value
            A map, input or output of this explanation.
        """
        rows = self.batch_size
        return rows is not None and value.dim() >= 1 and value.shape[0] == rows

    def _guess_token_input(self) -> str | None:
        """``input_ids`` if explained, else the first integer input (token ids)."""
        if "input_ids" in self.input_names:
            return "input_ids"
        for name in self.input_names:
            value = self.inputs_by_name.get(name)
            if value is not None and not value.is_floating_point():
                return name
        return self.input_names[0] if len(self.input_names) == 1 else None

    def feature_labels(self, input: str | None = None, row: int = 0) -> list[str]:
        """A label for every feature of one row of ``input``, in flattened order.

        Tokens of the token input, then the given feature names, else ``x0, x1, …`` for one
        feature dimension and ``"c,h,w"`` index strings for several.

        Parameters
        ----------
        input
            The input's name; None for the only (or first) input.
        row
            The batch row (tokens differ by row).
        """
        name = self.input_name(input)
        rel = self.relevance_by_name[name]
        shape = tuple(rel.shape[1:]) if self.batched(rel) else tuple(rel.shape)
        size = int(np.prod(shape)) if shape else 1
        if self.tokens is not None and name == self.token_input:
            return list(self.tokens[row])
        if name in self.feature_names_by_name:
            return list(self.feature_names_by_name[name])
        if len(shape) <= 1:
            return [f"x{i}" for i in range(size)]
        return [",".join(map(str, ix)) for ix in np.ndindex(*shape)]

    def input_name(self, input: str | None) -> str:
        """The name of an explained input: ``input`` checked, or the first one for None.

        Parameters
        ----------
        input
            An input name or None.
        """
        if input is None:
            return self.input_names[0]
        if input not in self.input_names:
            raise KeyError(f"unknown input {input!r}; inputs: {self.input_names}")
        return input

    def output_name(self, index: int) -> str:
        """The name of output class ``index`` (its number when no names were given).

        Parameters
        ----------
        index
            Position along the output's last dimension.
        """
        names = self.output_names
        return names[index] if names and 0 <= index < len(names) else str(index)

    # ---- ledger -----------------------------------------------------------------------------
    @property
    def total_absorbed(self) -> float:
        return float(sum(self.absorbed.values()))

    @property
    def total_input_relevance(self) -> float:
        """``Σ relevance`` over every input (signed in contrast mode)."""
        maps = self.relevance_by_name.values()
        return float(sum(float(t.sum(dtype=torch.float64)) for t in maps))

    @property
    def conservation_error(self) -> float:
        """``|Σ relevance + Σ absorbed − Σ seed| / Σ|seed|`` (DESIGN.md 2.4).

        Default mode's seed is non-negative; contrast mode's is signed (seed ⊙ output).
        """
        expected = float(self.seed.sum(dtype=torch.float64))
        scale = float(self.seed.abs().sum(dtype=torch.float64))
        got = self.total_input_relevance + self.total_absorbed
        return abs(got - expected) / max(scale, 1e-300)

    @property
    def unattributed_absorbed(self) -> float:
        """Absorbed relevance that could not be attributed to one batch row (0 normally)."""
        return 0.0 if self.absorbed_rows is None else float(self.absorbed_rows[-1])

    @property
    def row_conservation_error(self) -> torch.Tensor | None:
        """The ledger of every batch row: ``|Σ relevance_b + absorbed_b − Σ seed_b| / Σ|seed_b|``.

        Rows are told apart by the leading dimension of each value; relevance of an input
        without the batch dimension, and :attr:`unattributed_absorbed`, belong to no row, so
        a row's error then shows what it is missing. None without a batch dimension.
        """
        if self.absorbed_rows is None:
            return None
        rows = self.absorbed_rows.shape[0] - 1
        seed = self.seed.detach().to(torch.float64).reshape(rows, -1)
        expected = seed.sum(1) if self.mode == "contrast" else seed.abs().sum(1)
        got = self.absorbed_rows[:-1].detach().cpu().clone()
        for t in self.relevance_by_name.values():
            if t.dim() > 0 and t.shape[0] == rows:
                got += t.detach().to(torch.float64).reshape(rows, -1).sum(1).cpu()
        scale = seed.abs().sum(1).cpu().clamp_min(1e-300)
        return (got - expected.cpu()).abs() / scale

    # ---- rows -------------------------------------------------------------------------------
    def _row_index(self, index: RowIndex) -> torch.Tensor:
        rows = len(self)
        if isinstance(index, (int, np.integer)) and not isinstance(index, bool):
            i = int(index) + rows if index < 0 else int(index)
            if not 0 <= i < rows:
                raise IndexError(f"row {index} out of range for {rows} rows")
            return torch.tensor([i])
        if isinstance(index, slice):
            return torch.arange(rows)[index]
        picked = torch.as_tensor(np.asarray(index) if not isinstance(index, torch.Tensor)
                                 else index).cpu()
        if picked.dtype == torch.bool:
            if picked.shape != (rows,):
                raise IndexError(f"a boolean row mask needs {rows} entries")
            return picked.nonzero()[:, 0]
        picked = picked.long().reshape(-1)
        if picked.numel() and not bool(((picked >= -rows) & (picked < rows)).all()):
            raise IndexError(f"row index out of range for {rows} rows")
        return picked % rows if picked.numel() else picked

    def __getitem__(self, index: RowIndex) -> Explanation:
        """The explanation of some batch rows, as if those rows had been explained alone.

        ``exp[i]`` keeps the batch dimension (it equals ``exp[i:i + 1]``), so every view works
        on it unchanged. Maps, inputs and layers without the batch dimension are kept whole
        (layers: left out). The per-node ``absorbed`` amounts are batch totals; a proper
        subset of rows keeps its rows' share under the single key ``"(rows)"`` (relevance the
        sweep could not attribute to a row, normally 0, stays with the whole batch).

        Parameters
        ----------
        index
            A row number, a slice, a sequence or tensor of row numbers, or a boolean mask.
        """
        idx = self._row_index(index)
        rows = len(self)
        whole = idx.numel() == rows and torch.equal(idx, torch.arange(rows))

        def take(t: torch.Tensor) -> torch.Tensor:
            return t.index_select(0, idx.to(t.device)) if self.batched(t) else t

        def take_maps(maps: Maps | None, drop_unbatched: bool = False) -> Maps | None:
            if maps is None:
                return None
            return {k: take(v) for k, v in maps.items()
                    if not (drop_unbatched and not self.batched(v))}

        if whole or self.absorbed_rows is None:
            absorbed, absorbed_rows = dict(self.absorbed), self.absorbed_rows
        else:
            picked = self.absorbed_rows[:-1].index_select(0, idx.to(self.absorbed_rows.device))
            absorbed_rows = torch.cat([picked, picked.new_zeros(1)])
            absorbed = {ROWS_ABSORBED: float(picked.sum())} if picked.numel() else {}
        return dataclasses.replace(
            self,
            total_by_name=take_maps(self.total_by_name),
            net_by_name=take_maps(self.net_by_name),
            absorbed=absorbed,
            absorbed_rows=absorbed_rows,
            seed=take(self.seed),
            target=None if self.target is None else take(self.target),
            output=take(self.output),
            layers=take_maps(self.layers, drop_unbatched=True),
            layers_net=take_maps(self.layers_net, drop_unbatched=True),
            inputs_by_name=take_maps(self.inputs_by_name),
            tokens=None if self.tokens is None else [self.tokens[int(i)] for i in idx],
        )

    @classmethod
    def concat(cls, parts: Sequence[Explanation]) -> Explanation:
        """The rows of several explanations of one model and mode, as one explanation.

        The inverse of row slicing: batched maps are concatenated along the batch dimension,
        per-node ``absorbed`` amounts and the unattributed slot are summed, context fields are
        taken from the first part (tokens concatenated).

        Parameters
        ----------
        parts
            Explanations with the same mode and inputs, maps equal in shape after dim 0.
        """
        if not parts:
            raise ValueError("concat needs at least one explanation")
        first = parts[0]
        for p in parts[1:]:
            if (p.mode, p.input_names) != (first.mode, first.input_names):
                raise ValueError("concat needs explanations of the same mode and inputs")

        def cat(get: Callable[[Explanation], Any]) -> Any:
            values = [get(p) for p in parts]
            if values[0] is None:
                return None
            return torch.cat(values) if first.batched(values[0]) else values[0]

        def cat_maps(get: Callable[[Explanation], Maps | None]) -> Maps | None:
            maps = get(first)
            if maps is None:
                return None
            shared = [k for k in maps if all(k in (get(p) or {}) for p in parts)]
            return {k: cat(lambda p, k=k: get(p)[k]) for k in shared}

        absorbed: dict[str, float] = {}
        for p in parts:
            for k, v in p.absorbed.items():
                absorbed[k] = absorbed.get(k, 0.0) + v
        absorbed_rows = None
        if all(p.absorbed_rows is not None for p in parts):
            rest = sum(p.absorbed_rows[-1:] for p in parts)
            absorbed_rows = torch.cat([p.absorbed_rows[:-1] for p in parts] + [rest])
        tokens = None
        if all(p.tokens is not None for p in parts):
            tokens = [row for p in parts for row in p.tokens]
        return dataclasses.replace(
            first,
            total_by_name=cat_maps(lambda p: p.total_by_name),
            net_by_name=cat_maps(lambda p: p.net_by_name),
            absorbed=absorbed,
            absorbed_rows=absorbed_rows,
            seed=cat(lambda p: p.seed),
            target=cat(lambda p: p.target),
            output=cat(lambda p: p.output),
            layers=cat_maps(lambda p: p.layers),
            layers_net=cat_maps(lambda p: p.layers_net),
            inputs_by_name=cat_maps(lambda p: p.inputs_by_name),
            tokens=tokens,
        )

    def to(self, device: torch.device | str) -> Explanation:
        """A copy with every tensor on ``device`` (e.g. ``"cpu"`` before storing many results).

        Parameters
        ----------
        device
            The target device.
        """
        def move(maps: Maps | None) -> Maps | None:
            return None if maps is None else {k: v.to(device) for k, v in maps.items()}

        return dataclasses.replace(
            self,
            total_by_name=move(self.total_by_name), net_by_name=move(self.net_by_name),
            seed=self.seed.to(device), output=self.output.to(device),
            target=None if self.target is None else self.target.to(device),
            layers=move(self.layers), layers_net=move(self.layers_net),
            inputs_by_name=move(self.inputs_by_name),
            absorbed_rows=None if self.absorbed_rows is None else self.absorbed_rows.to(device),
        )

    # ---- views ------------------------------------------------------------------------------
    def __repr__(self) -> str:
        def shape(t: torch.Tensor) -> str:
            return "(" + ", ".join(map(str, t.shape)) + ")"

        maps = self.relevance_by_name
        shown = [f"{n}: {shape(maps[n])}" for n in self.input_names[:4] if n in maps]
        if len(self.input_names) > 4:
            shown.append(f"… {len(self.input_names) - 4} more")
        parts = [
            f"mode={self.mode!r}",
            f"rows={self.batch_size}",
            "relevance={" + ", ".join(shown) + "}",
            f"output={shape(self.output)}",
        ]
        if self.target is not None and self.target.numel():
            first = [self.output_name(int(t)) for t in self.target.reshape(-1)[:3]]
            more = ", …" if self.target.numel() > 3 else ""
            parts.append("target=[" + ", ".join(first)[:60] + more + "]")
        parts.append(f"conservation_error={self.conservation_error:.2g}")
        context = [name for name, present in (
            ("inputs", bool(self.inputs_by_name)),
            ("feature_names", bool(self.feature_names_by_name)),
            ("tokens", self.tokens is not None),
            ("output_names", self.output_names is not None),
        ) if present]
        if self.layers:
            parts.append(f"layers={len(self.layers)}")
        if context:
            parts.append("context=" + "+".join(context))
        return "Explanation(" + ", ".join(parts) + ")"

    def plot(self, row: int = 0, *, input: str | None = None, kind: str | None = None,
             ax: Any = None, max_display: int = 10) -> Any:
        """Draw one row: image heat map, feature bars or waterfall, or token highlights.

        ``kind=None`` picks from what the explanation holds (tokens, then image-shaped maps,
        then features); see :func:`dlbacktrace.viz.explanation.plot_explanation`. Returns the
        matplotlib ``Figure`` (no pyplot, nothing shown).

        Parameters
        ----------
        row
            The batch row to draw.
        input
            The input to draw; None for the first.
        kind
            ``"image"``, ``"contrast"``, ``"bar"``, ``"waterfall"``, ``"tokens"`` or None.
        ax
            An existing matplotlib Axes to draw on (not for ``"contrast"``).
        max_display
            Bars and waterfall: the most features shown (the rest summed into one).
        """
        from dlbacktrace.viz.explanation import plot_explanation

        return plot_explanation(self, row=row, input=input, kind=kind, ax=ax,
                                max_display=max_display)

    def _repr_html_(self) -> str:
        from dlbacktrace.viz.html import explanation_html

        return explanation_html(self)

    def to_dataframe(self) -> Any:
        """Long-format pandas table: one line per batch row × input × feature.

        Columns: ``row`` (-1 for an input without the batch dimension), ``input``, ``index``
        (flattened position in the row), ``feature`` (token, given name or index label),
        ``value`` (the input value, when kept), ``relevance`` (signed in contrast mode), then
        ``positive``/``negative`` in contrast mode, and ``target`` / ``target_name`` when the
        rows have one explained class each.
        """
        import pandas as pd

        frames = []
        targets = self.target.reshape(-1).cpu() if self.target is not None else None
        per_row_target = targets is not None and targets.numel() == (self.batch_size or -1)
        for name in self.input_names:
            rel = self.relevance_by_name[name].detach()
            batched = self.batched(rel)
            rows = rel.shape[0] if batched else 1
            flat = rel.reshape(rows, -1).cpu().double().numpy()
            size = flat.shape[1]
            row_ids = np.repeat(np.arange(rows) if batched else np.array([-1]), size)
            if self.tokens is not None and name == self.token_input and batched:
                labels = [t for r in range(rows) for t in self.feature_labels(name, r)]
            else:
                labels = self.feature_labels(name) * rows
            if len(labels) != rows * size:
                raise InputError(f"{len(labels) // max(rows, 1)} labels for {size} features "
                                 f"of input {name!r}")
            cols: dict[str, Any] = {
                "row": row_ids, "input": name, "index": np.tile(np.arange(size), rows),
                "feature": labels,
            }
            value = self.inputs_by_name.get(name)
            if value is not None and value.numel() == flat.size:
                cols["value"] = value.detach().reshape(-1).cpu().numpy()
            cols["relevance"] = flat.reshape(-1)
            if self.mode == "contrast":
                cols["positive"] = np.clip(cols["relevance"], 0, None)
                cols["negative"] = np.clip(-cols["relevance"], 0, None)
            if per_row_target and batched:
                chosen = targets.numpy()[row_ids]
                cols["target"] = chosen
                if self.output_names:
                    cols["target_name"] = [self.output_name(int(t)) for t in chosen]
            frames.append(pd.DataFrame(cols))
        return pd.concat(frames, ignore_index=True)

    # ---- conversion and storage -------------------------------------------------------------
    def to_numpy(self) -> dict[str, Any]:
        """All maps as NumPy arrays, keyed like the attributes."""
        out: dict[str, Any] = {
            "relevance": {n: t.detach().cpu().numpy() for n, t in self.relevance_by_name.items()},
            "total": {n: t.detach().cpu().numpy() for n, t in self.total_by_name.items()},
            "seed": self.seed.detach().cpu().numpy(),
            "output": self.output.detach().cpu().numpy(),
            "target": None if self.target is None else self.target.cpu().numpy(),
            "absorbed": dict(self.absorbed),
        }
        for name in ("positive", "negative"):
            half = self._half(1.0 if name == "positive" else -1.0)
            out[name] = None if half is None else {n: t.cpu().numpy() for n, t in half.items()}
        out["layers"] = {n: t.detach().cpu().numpy() for n, t in self.layers.items()}
        return out

    def save(self, path: str | Path | IO[bytes]) -> Path | None:
        """Write a ``.npz`` (arrays + JSON header; no pickle), context fields included.

        Parameters
        ----------
        path
            A file name (``.npz`` is appended unless given; written atomically) or a writable
            binary file object.

        Returns
        -------
        The path written, or None for a file object.
        """
        arrays: dict[str, np.ndarray] = {}

        def put(prefix: str, maps: Maps) -> list[str]:
            names = list(maps)
            for i, name in enumerate(names):
                arrays[f"{prefix}/{i}"] = maps[name].detach().cpu().numpy()
            return names

        header = {
            "format": FORMAT_VERSION,
            "mode": self.mode,
            "input_names": self.input_names,
            "single_input": self.single_input,
            "absorbed": self.absorbed,
            "total": put("total", self.total_by_name),
            "net": put("net", self.net_by_name) if self.net_by_name is not None else None,
            "layers": put("layers", self.layers),
            "layers_net": put("layers_net", self.layers_net),
            "inputs": put("inputs", self.inputs_by_name),
            "feature_names": self.feature_names_by_name,
            "tokens": self.tokens,
            "token_input": self.token_input,
            "output_names": self.output_names,
        }
        arrays["seed"] = self.seed.detach().cpu().numpy()
        arrays["output"] = self.output.detach().cpu().numpy()
        if self.target is not None:
            arrays["target"] = self.target.cpu().numpy()
        if self.absorbed_rows is not None:
            arrays["absorbed_rows"] = self.absorbed_rows.detach().cpu().numpy()
        if isinstance(path, (str, Path)):
            path = with_npz_suffix(path)
        return write_archive(path, arrays, header)

    @classmethod
    def load(cls, path: str | Path | bytes | IO[bytes]) -> Explanation:
        """Read a file written by :meth:`save` (files without context fields load too).

        Parameters
        ----------
        path
            A file name, the archive's bytes, or a readable binary file object.
        """
        header, data = read_archive(Path(path) if isinstance(path, str) else path)
        if header.get("format") != FORMAT_VERSION:
            raise ValueError(f"unsupported explanation format {header.get('format')!r}")

        def get(prefix: str, names: list[str] | None) -> Maps | None:
            if names is None:
                return None
            return {n: torch.from_numpy(data[f"{prefix}/{i}"]) for i, n in enumerate(names)}

        return cls(
            mode=header["mode"],
            input_names=header["input_names"],
            total_by_name=get("total", header["total"]) or {},
            net_by_name=get("net", header["net"]),
            absorbed={k: float(v) for k, v in header["absorbed"].items()},
            seed=torch.from_numpy(data["seed"]),
            target=torch.from_numpy(data["target"]) if "target" in data else None,
            output=torch.from_numpy(data["output"]),
            layers=get("layers", header["layers"]) or {},
            layers_net=get("layers_net", header["layers_net"]) or {},
            single_input=header["single_input"],
            absorbed_rows=(
                torch.from_numpy(data["absorbed_rows"]) if "absorbed_rows" in data else None
            ),
            inputs_by_name=get("inputs", header.get("inputs")) or {},
            feature_names_by_name=header.get("feature_names") or {},
            tokens=header.get("tokens"),
            token_input=header.get("token_input"),
            output_names=header.get("output_names"),
        )

"""The result of one explanation: relevance per input, contrast maps, ledger, per-layer maps.

Saved as a single ``.npz`` (arrays plus a JSON header); loading never unpickles.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

FORMAT_VERSION = 1


@dataclass
class Explanation:
    """Relevance of every input for one (batched) explained output.

    ``mode="default"``: ``relevance`` is the unsigned relevance (how strongly each feature
    influenced the output, in either direction). ``mode="contrast"``: ``relevance`` is the
    signed map (signed shares, DESIGN.md 2.1), ``positive = max(relevance, 0)`` (evidence for)
    and ``negative = max(−relevance, 0)`` (evidence against), so ``relevance = positive −
    negative`` exactly, and ``total = positive + negative = |relevance|``.
    ``seed`` is the relevance placed on the output (contrast: the selection times the
    output's value). Integer token-id inputs get one value per token.
    """

    mode: str
    input_names: list[str]
    total_by_name: dict[str, torch.Tensor]
    net_by_name: dict[str, torch.Tensor] | None
    absorbed: dict[str, float]
    seed: torch.Tensor
    target: torch.Tensor | None
    output: torch.Tensor
    layers: dict[str, torch.Tensor] = field(default_factory=dict)
    layers_net: dict[str, torch.Tensor] = field(default_factory=dict)
    single_input: bool = True
    # Absorbed relevance per batch row, and a last slot for amounts the sweep could not
    # attribute to one row (float64, ``[B + 1]``); None for outputs without a batch dimension.
    absorbed_rows: torch.Tensor | None = None

    # ---- maps -------------------------------------------------------------------------------
    def _pack(self, by_name: dict[str, torch.Tensor]) -> torch.Tensor | tuple[torch.Tensor, ...]:
        values = tuple(by_name[n] for n in self.input_names)
        return values[0] if self.single_input else values

    @property
    def relevance_by_name(self) -> dict[str, torch.Tensor]:
        if self.mode == "contrast":
            return dict(self.net_by_name or {})
        return dict(self.total_by_name)

    @property
    def relevance(self) -> torch.Tensor | tuple[torch.Tensor, ...]:
        return self._pack(self.relevance_by_name)

    @property
    def total(self) -> torch.Tensor | tuple[torch.Tensor, ...]:
        return self._pack(self.total_by_name)

    def _half(self, sign: float) -> dict[str, torch.Tensor] | None:
        if self.net_by_name is None:
            return None
        return {n: (sign * self.net_by_name[n]).clamp_min(0) for n in self.input_names}

    @property
    def positive(self) -> torch.Tensor | tuple[torch.Tensor, ...] | None:
        half = self._half(1.0)
        return None if half is None else self._pack(half)

    @property
    def negative(self) -> torch.Tensor | tuple[torch.Tensor, ...] | None:
        half = self._half(-1.0)
        return None if half is None else self._pack(half)

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

    def save(self, path: str | Path) -> Path:
        """Write a ``.npz`` file (arrays + JSON header; no pickle)."""
        path = Path(path)
        if path.suffix != ".npz":
            path = path.with_suffix(path.suffix + ".npz") if path.suffix else path.with_suffix(
                ".npz"
            )
        arrays: dict[str, np.ndarray] = {}

        def put(prefix: str, maps: dict[str, torch.Tensor]) -> list[str]:
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
        }
        arrays["seed"] = self.seed.detach().cpu().numpy()
        arrays["output"] = self.output.detach().cpu().numpy()
        if self.target is not None:
            arrays["target"] = self.target.cpu().numpy()
        if self.absorbed_rows is not None:
            arrays["absorbed_rows"] = self.absorbed_rows.detach().cpu().numpy()
        arrays["__header__"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
        with path.open("wb") as fh:
            np.savez_compressed(fh, **arrays)
        return path

    @classmethod
    def load(cls, path: str | Path) -> Explanation:
        with np.load(Path(path), allow_pickle=False) as data:
            header = json.loads(bytes(data["__header__"]).decode())
            if header.get("format") != FORMAT_VERSION:
                raise ValueError(f"unsupported explanation format {header.get('format')!r}")

            def get(prefix: str, names: list[str] | None) -> dict[str, torch.Tensor] | None:
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
                target=torch.from_numpy(data["target"]) if "target" in data.files else None,
                output=torch.from_numpy(data["output"]),
                layers=get("layers", header["layers"]) or {},
                layers_net=get("layers_net", header["layers_net"]) or {},
                single_input=header["single_input"],
                absorbed_rows=(
                    torch.from_numpy(data["absorbed_rows"])
                    if "absorbed_rows" in data.files else None
                ),
            )

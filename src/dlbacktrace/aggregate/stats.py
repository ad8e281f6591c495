"""Exact, mergeable running statistics of relevance, kept per explained class.

Every quantity is a plain float64 sum (count, sum, sum of squares, sum of |x|, and in contrast
mode the sums of the positive and negative halves). Sums of per-batch partials, merged in batch
order, give the same bits whichever process computed each batch and in whichever order batches
finished; means and spreads are derived only at the end.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from dlbacktrace.engine.errors import InputError

FIELDS = ("sum", "sumsq", "sumabs")
CONTRAST_FIELDS = ("pos", "neg")


@dataclass
class ClassMoments:
    """Per-class sums of one relevance group; arrays are ``[n_classes, *shape]`` float64.

    Parameters
    ----------
    count
        ``[K]`` int64 rows per class.
    sums
        ``"sum"``, ``"sumsq"``, ``"sumabs"`` (and in contrast mode ``"pos"``, ``"neg"``) ->
        ``[K, *shape]`` float64 sums.
    """

    count: np.ndarray  # [K] int64: rows per class
    sums: dict[str, np.ndarray]

    @classmethod
    def empty(cls, n_classes: int, shape: tuple[int, ...], contrast: bool) -> ClassMoments:
        """All-zero statistics.

        Parameters
        ----------
        n_classes
            Number of classes ``K``.
        shape
            The shape of one row's relevance.
        contrast
            Also keep the sums of the positive and negative halves.
        """
        names = FIELDS + (CONTRAST_FIELDS if contrast else ())
        return cls(
            np.zeros(n_classes, dtype=np.int64),
            {n: np.zeros((n_classes, *shape), dtype=np.float64) for n in names},
        )

    @classmethod
    def from_batch(
        cls,
        relevance: torch.Tensor,
        classes: torch.Tensor,
        n_classes: int,
        positive: torch.Tensor | None = None,
        negative: torch.Tensor | None = None,
    ) -> ClassMoments:
        """Partial sums of one batch: ``relevance`` is ``[B, *shape]``, ``classes`` is ``[B]``.

        Parameters
        ----------
        relevance
            ``[B, *shape]`` relevance (the net map in contrast mode).
        classes
            ``[B]`` class of each row, in ``0..n_classes - 1``.
        n_classes
            Number of classes ``K``.
        positive, negative
            ``[B, *shape]`` positive and negative halves (contrast mode); both or neither.
        """
        rel = _float64(relevance)
        idx = classes.detach().cpu().numpy().astype(np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= n_classes):
            raise InputError(f"class index out of range 0..{n_classes - 1}")
        # Rows sorted by class (stable), then one reduceat per field: a fixed summation order
        # that does not depend on threads, so every process computes the same bits.
        order = np.argsort(idx, kind="stable")
        count = np.bincount(idx, minlength=n_classes).astype(np.int64)
        present = np.flatnonzero(count)
        starts = np.concatenate([[0], np.cumsum(count)[:-1]])[present]

        def per_class(values: np.ndarray) -> np.ndarray:
            out = np.zeros((n_classes, *values.shape[1:]), dtype=np.float64)
            if len(order):
                out[present] = np.add.reduceat(values[order], starts, axis=0)
            return out

        sums = {
            "sum": per_class(rel), "sumsq": per_class(rel * rel), "sumabs": per_class(np.abs(rel))
        }
        if positive is not None and negative is not None:
            sums["pos"] = per_class(_float64(positive))
            sums["neg"] = per_class(_float64(negative))
        return cls(count, sums)

    def merge(self, other: ClassMoments) -> None:
        """Add ``other`` into ``self`` (in place).

        Parameters
        ----------
        other
            Statistics of the same classes, mode and shape.
        """
        if set(self.sums) != set(other.sums) or self.count.shape != other.count.shape:
            raise InputError("cannot merge statistics of different classes or modes")
        for name, arr in self.sums.items():
            if arr.shape != other.sums[name].shape:
                raise InputError(
                    f"cannot merge statistics of shape {arr.shape[1:]} and "
                    f"{other.sums[name].shape[1:]} (inputs changed shape between batches?)"
                )
            arr += other.sums[name]
        self.count += other.count

    # ---- derived ------------------------------------------------------------------------------
    @property
    def contrast(self) -> bool:
        """Whether the positive and negative halves are kept (contrast mode)."""
        return "pos" in self.sums

    def _n(self, per_class: bool) -> np.ndarray:
        n = self.count if per_class else np.array(self.count.sum())
        return n.astype(np.float64).reshape(n.shape + (1,) * (self.sums["sum"].ndim - 1))

    def _total(self, name: str, per_class: bool) -> np.ndarray:
        arr = self.sums[name]
        return arr if per_class else arr.sum(axis=0)

    def mean(self, name: str = "sum", per_class: bool = True) -> np.ndarray:
        """Mean of a summed field per row (NaN for a class with no rows).

        Parameters
        ----------
        name
            The field: ``"sum"`` (mean relevance), ``"sumabs"``, ``"sumsq"``, ``"pos"`` or
            ``"neg"``.
        per_class
            ``[K, *shape]`` per class if true, else ``[*shape]`` over all rows.
        """
        n = self._n(per_class)
        with np.errstate(invalid="ignore", divide="ignore"):
            return self._total(name, per_class) / n

    def std(self, per_class: bool = True) -> np.ndarray:
        """Sample standard deviation of the relevance (NaN below two rows).

        Parameters
        ----------
        per_class
            ``[K, *shape]`` per class if true, else ``[*shape]`` over all rows.
        """
        n = self._n(per_class)
        s, ss = self._total("sum", per_class), self._total("sumsq", per_class)
        with np.errstate(invalid="ignore", divide="ignore"):
            var = (ss - s * s / n) / (n - 1)
        return np.sqrt(np.clip(var, 0.0, None))


def _float64(t: torch.Tensor) -> np.ndarray:
    return t.detach().to("cpu", torch.float64).numpy()

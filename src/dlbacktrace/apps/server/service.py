"""One loaded model served to many callers: explain, record in the audit log, summarise.

Shared by the CLI and the web server so both give the same answers and the same audit records.
One lock serialises explanations (a ``Backtrace`` caches captured graphs and ``|w|`` and is not
thread-safe); reading and decoding inputs happens outside the lock.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from dlbacktrace.engine.backtrace import Backtrace
from dlbacktrace.engine.explanation import Explanation
from dlbacktrace.io.batch import InputBatch
from dlbacktrace.io.digests import weights_digest
from dlbacktrace.io.loading import LoadedModel

__all__ = ["ExplainResult", "ExplainService", "record_report"]


@dataclass
class ExplainResult:
    """An explanation of an input batch with its context (fingerprint, options, audit id)."""

    explanation: Explanation
    batch: InputBatch
    options: dict[str, Any]
    fingerprint: dict[str, str]
    model_info: dict[str, Any]
    labels: list[str] | None = None
    record_id: int | None = None
    _rows: dict[bool, list[dict[str, Any]]] = field(default_factory=dict, repr=False)

    def rows(self, figures: bool = True) -> list[dict[str, Any]]:
        from dlbacktrace.report.views import explanation_rows

        if figures not in self._rows:
            b = self.batch
            # inputs and feature names come from the explanation's context; text rows show the
            # unpadded tokens of each row (the explanation's are per padded position); the
            # model's labels (a config's id2label) need not match its outputs, so they are
            # given here rather than validated as the explanation's output names
            self._rows[figures] = explanation_rows(
                self.explanation, b.kind, names=b.names, tokens=b.tokens, labels=self.labels,
                figures=figures,
            )
        return self._rows[figures]

    def to_json(self, figures: bool = False) -> dict[str, Any]:
        from dlbacktrace.report.views import ledger

        return {
            "record_id": self.record_id,
            "kind": self.batch.kind,
            "mode": self.explanation.mode,
            "options": self.options,
            "model": self.model_info,
            "input_digest": self.batch.digest,
            "conservation_error": float(self.explanation.conservation_error),
            "ledger": ledger(self.explanation),
            "rows": self.rows(figures),
        }

    def report_html(self, title: str | None = None) -> str:
        from dlbacktrace.report.render import explanation_report

        b = self.batch
        return explanation_report(
            self.explanation, b.kind, rows=self.rows(True), model=self.model_info,
            config=self.options, record_id=self.record_id, title=title,
        )


class ExplainService:
    """Explain input batches with one model; record each call when an audit store is given."""

    def __init__(
        self, loaded: LoadedModel, *, audit: Any = None, source: str = "cli",
        attention: str = "value",
    ) -> None:
        self.loaded = loaded
        self.audit = audit
        self.source = source
        self.bt = Backtrace(loaded.model, attention=attention)
        self._lock = threading.Lock()
        self._weights: str | None = None

    @property
    def busy(self) -> bool:
        """Whether an explanation or a verification is running now."""
        return self._lock.locked()

    @property
    def description(self) -> str:
        spec = self.loaded.spec
        return spec.describe() if spec is not None else type(self.loaded.model).__name__

    def explain(
        self,
        batch: InputBatch,
        *,
        target: Any = None,
        mode: str = "default",
        scale: float = 1.0,
        position: int | None = None,
    ) -> ExplainResult:
        """Explain every row of ``batch`` in one call (and store one audit record).

        Parameters
        ----------
        batch
            The inputs, as read by an :class:`~dlbacktrace.io.kinds.InputKind`.
        target
            Class index (or one per row), ``"positive"``/``"negative"``; default predicted.
        mode
            ``default`` or ``contrast``.
        scale
            Seed scale, as for :meth:`~dlbacktrace.Backtrace.explain`.
        position
            Sequence position to explain (sequence outputs).
        """
        from dlbacktrace.audit.fingerprint import model_fingerprint

        options: dict[str, Any] = {"mode": mode, "attention": self.bt.attention_for(mode)}
        if target is not None:
            options["target"] = target
        if scale != 1.0:
            options["scale"] = scale
        if position is not None:
            options["position"] = position
        with self._lock:
            exp = self.bt.explain(
                *batch.args, target=target, mode=mode, scale=scale, position=position,
                feature_names=batch.feature_names if batch.args else None, **batch.kwargs,
            )
            if self._weights is None:
                self._weights = weights_digest(self.loaded.model)
            fingerprint = model_fingerprint(
                self.bt, batch.args, batch.kwargs, weights=self._weights
            )
            record_id = None
            if self.audit is not None:
                record_id = self.audit.record(
                    self.bt, exp, batch.args, batch.kwargs, options=options,
                    spec=self.loaded.spec, source=self.source, weights=self._weights,
                    input_info=self._input_info(batch),
                )
        model_info = {
            "description": self.description,
            "class": type(self.loaded.model).__name__,
            "graph_sha256": fingerprint["graph"],
            "weights_sha256": fingerprint["weights"],
        }
        return ExplainResult(exp, batch, options, fingerprint, model_info,
                             self.loaded.labels, record_id)

    def verify(self, record_id: int) -> Any:
        """Recompute a stored record with the served model and compare bit for bit.

        Runs behind the same lock as :meth:`explain` (the ``Backtrace`` is shared).

        Parameters
        ----------
        record_id
            The audit record to recompute.

        Returns
        -------
        VerifyResult
            See :func:`~dlbacktrace.audit.verify_record`.
        """
        from dlbacktrace.audit import AuditError, verify_record

        if self.audit is None:
            raise AuditError("this service has no audit log to verify against")
        with self._lock:
            return verify_record(self.audit, record_id, self.bt)

    def _input_info(self, batch: InputBatch) -> dict[str, Any]:
        info: dict[str, Any] = {"kind": batch.kind, "names": batch.names}
        if batch.tokens is not None:
            info["tokens"] = batch.tokens
        if batch.feature_names is not None:
            info["feature_names"] = batch.feature_names
        if self.loaded.labels:
            info["labels"] = self.loaded.labels
        return info


def record_report(record: Any) -> str:
    """An HTML report rebuilt from an audit record alone (no model needed).

    Parameters
    ----------
    record
        An :class:`~dlbacktrace.audit.AuditRecord`.
    """
    from dlbacktrace.report.render import explanation_report

    content = record.content
    info = content.get("input") or {}
    inputs = record.inputs()
    model = {
        "description": content["model"].get("description"),
        "graph_sha256": content["model"]["fingerprint"]["graph"],
        "weights_sha256": content["model"]["fingerprint"]["weights"],
        "record hash": record.hash,
        "recorded at": record.created_at,
    }
    return explanation_report(
        record.explanation(),
        info.get("kind", "tensor"),
        args=inputs.args,
        kwargs=inputs.kwargs,
        names=info.get("names"),
        tokens=info.get("tokens"),
        feature_names=info.get("feature_names"),
        labels=info.get("labels"),
        model=model,
        config=content.get("options"),
        record_id=record.id,
        versions=content.get("versions"),
        title=f"DLBacktrace audit record #{record.id}",
    )

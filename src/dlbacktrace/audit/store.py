"""The audit store: an append-only, hash-chained log of explanations in any SQL database.

Records are of three kinds (``content["kind"]``): ``explanation`` (one ``Backtrace.explain``
call; records without a kind, schema 1, are explanations), ``generation`` (every token of a
language model's answer, :mod:`dlbacktrace.audit.generations`) and ``aggregate`` (a global
explanation of a data set, :mod:`dlbacktrace.audit.aggregates`).

SQLite by default (WAL journal, ``BEGIN IMMEDIATE`` write transactions, full sync, triggers that
refuse UPDATE and DELETE); any SQLAlchemy URL works too. PostgreSQL gets the same guarantees:
a trigger refuses UPDATE, DELETE and TRUNCATE, and writers take a transaction-scoped advisory
lock, so they append one after the other. Each append is one transaction: a record is either
fully committed (content, blobs, hash) or absent. The unique ``prev_hash`` column makes a forked
chain impossible even where the database has no write lock (the loser retries).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from dlbacktrace.audit.chain import GENESIS, blob_digest, canonical_json, chain_hash
from dlbacktrace.audit.codec import (
    StoredInputs,
    decode_explanation,
    decode_global,
    decode_inputs,
    encode_explanation,
    encode_inputs,
    relevance_digest,
)
from dlbacktrace.audit.fingerprint import model_fingerprint, module_fingerprint, versions
from dlbacktrace.engine.errors import DLBacktraceError
from dlbacktrace.engine.explanation import Explanation
from dlbacktrace.io.digests import weights_digest

__all__ = ["KINDS", "AuditError", "AuditRecord", "AuditStore", "SCHEMA_VERSION", "explain_options"]

SCHEMA_VERSION = 2  # 2: records have a "kind"
KINDS = ("explanation", "generation", "aggregate")
# Any 64-bit key of our own: the advisory lock that serialises writers (and schema set-up).
_PG_LOCK = 0x646C6274
_RETRIES = 20
EXPLAIN_OPTIONS = ("target", "mode", "scale", "output", "position", "attention", "layers")


class AuditError(DLBacktraceError):
    """The audit log cannot be opened, a record is missing, or a record cannot be replayed."""


def _sqlalchemy() -> Any:
    try:
        import sqlalchemy
    except ImportError as exc:
        raise AuditError(
            "the audit log needs SQLAlchemy: pip install 'dlbacktrace[server]'"
        ) from exc
    return sqlalchemy


def _jsonable(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def explain_options(kw: dict[str, Any]) -> tuple[dict[str, Any], torch.Tensor | None]:
    """Split ``Backtrace.explain`` keywords into JSON options and a custom seed tensor.

    Parameters
    ----------
    kw
        Keywords of ``Backtrace.explain``; only the explain options that are not None
        (``target``, ``mode``, ``scale``, ``output``, ``position``, ``attention``, ``layers``)
        and ``seed`` are read.

    Returns
    -------
    ``(options, seed)``: the options with tensors turned into lists, and the seed (or None).
    """
    options = {k: _jsonable(kw[k]) for k in EXPLAIN_OPTIONS if kw.get(k) is not None}
    return options, kw.get("seed")


@dataclass
class AuditRecord:
    """One stored explanation: its content (JSON), blobs and chain hashes.

    Parameters
    ----------
    id
        The record's id (increasing in chain order).
    created_at
        The ISO timestamp of the record.
    prev_hash
        The previous record's hash.
    hash
        This record's hash.
    content_json
        The hashed content as canonical JSON.
    explanation_blob
        The encoded explanation.
    inputs_blob
        The encoded inputs.
    """

    id: int
    created_at: str
    prev_hash: str
    hash: str
    content_json: str
    explanation_blob: bytes
    inputs_blob: bytes

    @property
    def content(self) -> dict[str, Any]:
        """The record's content, parsed."""
        return json.loads(self.content_json)

    @property
    def kind(self) -> str:
        """``explanation``, ``generation`` or ``aggregate``."""
        return self.content.get("kind", "explanation")

    def explanation(self) -> Explanation:
        """The stored explanation, decoded (a generation's: one row per generated token)."""
        if self.kind == "aggregate":
            raise AuditError(f"record {self.id} is an aggregate: use global_explanation()")
        return decode_explanation(self.explanation_blob)

    def global_explanation(self) -> Any:
        """The stored :class:`~dlbacktrace.aggregate.GlobalExplanation` of an aggregate."""
        if self.kind != "aggregate":
            raise AuditError(f"record {self.id} is an {self.kind}, not an aggregate")
        return decode_global(self.explanation_blob)

    def inputs(self) -> StoredInputs:
        """The stored inputs (positional, keyword, constants and seed), decoded."""
        return decode_inputs(self.inputs_blob)

    def summary(self) -> dict[str, Any]:
        """The record's main facts (id, time, model, input, mode, prediction, hash) as a dict."""
        c = self.content
        return {
            "id": self.id,
            "created_at": self.created_at,
            "kind": c.get("kind", "explanation"),
            "source": c.get("source"),
            "model": (c.get("model") or {}).get("description"),
            "input_kind": (c.get("input") or {}).get("kind"),
            "input_names": (c.get("input") or {}).get("names"),
            "mode": c.get("options", {}).get("mode", "default"),
            "target": c.get("target"),
            "prediction": (c.get("output") or {}).get("prediction"),
            "conservation_error": (c.get("relevance") or {}).get("conservation_error"),
            "hash": self.hash,
        }


# SQLAlchemy dialects the store accepts in a URL (``dialect`` or ``dialect+driver``).
URL_SCHEMES = ("sqlite", "postgresql", "mysql", "mariadb", "oracle", "mssql")


def _url(location: str | Path, create: bool = True) -> str:
    text = str(location)
    if "://" in text:
        scheme = text.split("://", 1)[0].split("+", 1)[0]
        if scheme not in URL_SCHEMES:
            raise AuditError(
                f"unknown audit URL scheme {scheme!r} in {text!r}: give a SQLite path or an "
                f"SQLAlchemy URL ({', '.join(URL_SCHEMES)})"
            )
        return text
    path = Path(text).expanduser()
    if not create:
        if not path.is_file():
            raise AuditError(f"no audit log at {path}")
        return f"sqlite:///{path.resolve()}"
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path.resolve()}"


class AuditStore:
    """Open (and create) an audit log at a SQLite path or any SQLAlchemy URL.

    Parameters
    ----------
    location
        A SQLite file path or an SQLAlchemy URL (``sqlite``, ``postgresql``, ``mysql``,
        ``mariadb``, ``oracle``, ``mssql``).
    create
        Create the SQLite file (and its folder) if missing; ``create=False`` opens an existing
        SQLite log only (reading commands never create one).
    """

    def __init__(self, location: str | Path, create: bool = True) -> None:
        sa = _sqlalchemy()
        self.url = _url(location, create)
        self._sqlite = self.url.startswith("sqlite")
        self.engine = sa.create_engine(self.url, future=True)
        if self._sqlite:
            self._configure_sqlite(sa)
        metadata = sa.MetaData()
        self.table = sa.Table(
            "dlbacktrace_audit",
            metadata,
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
            sa.Column("created_at", sa.String(40), nullable=False),
            sa.Column("prev_hash", sa.String(64), nullable=False, unique=True),
            sa.Column("hash", sa.String(64), nullable=False, unique=True),
            sa.Column("content", sa.Text, nullable=False),
            sa.Column("explanation", sa.LargeBinary, nullable=False),
            sa.Column("inputs", sa.LargeBinary, nullable=False),
        )
        try:
            if self.engine.dialect.name == "postgresql":
                self._create_postgresql(metadata)
            else:
                metadata.create_all(self.engine)
            if self._sqlite:
                with self.engine.begin() as conn:
                    for action in ("UPDATE", "DELETE"):
                        conn.exec_driver_sql(
                            f"CREATE TRIGGER IF NOT EXISTS dlbacktrace_audit_no_{action.lower()} "
                            f"BEFORE {action} ON dlbacktrace_audit BEGIN "
                            "SELECT RAISE(ABORT, 'the audit log is append-only'); END"
                        )
        except sa.exc.SQLAlchemyError as exc:
            raise AuditError(f"cannot open the audit log at {self.url}: {exc}") from exc

    def _create_postgresql(self, metadata: Any) -> None:
        """The table and a trigger refusing UPDATE, DELETE and TRUNCATE, set up once under the
        writers' lock (several processes may open a fresh database at the same time)."""
        with self.engine.begin() as conn:
            conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_PG_LOCK})")
            metadata.create_all(conn)
            conn.exec_driver_sql(
                "CREATE OR REPLACE FUNCTION dlbacktrace_audit_append_only() RETURNS trigger "
                "LANGUAGE plpgsql AS $$ BEGIN "
                "RAISE EXCEPTION 'the audit log is append-only'; END $$"
            )
            for name, events, level in (("no_change", "UPDATE OR DELETE", "ROW"),
                                        ("no_truncate", "TRUNCATE", "STATEMENT")):
                exists = conn.exec_driver_sql(
                    "SELECT 1 FROM pg_trigger WHERE tgname = %(name)s "
                    "AND tgrelid = 'dlbacktrace_audit'::regclass",
                    {"name": f"dlbacktrace_audit_{name}"},
                ).scalar()
                if not exists:
                    conn.exec_driver_sql(
                        f"CREATE TRIGGER dlbacktrace_audit_{name} BEFORE {events} ON "
                        f"dlbacktrace_audit FOR EACH {level} "
                        "EXECUTE FUNCTION dlbacktrace_audit_append_only()"
                    )

    def _configure_sqlite(self, sa: Any) -> None:
        @sa.event.listens_for(self.engine, "connect")
        def _connect(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # SQLAlchemy's "begin" below opens transactions
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        @sa.event.listens_for(self.engine, "begin")
        def _begin(conn: Any) -> None:
            # Writers take the write lock up front (no lock upgrade deadlocks); readers never
            # wait for it in WAL mode.
            write = conn.get_execution_options().get("dlbacktrace_write", False)
            conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    def close(self) -> None:
        """Release the database connections."""
        self.engine.dispose()

    def __enter__(self) -> AuditStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- writing --------------------------------------------------------------------------------
    def append(self, content: dict[str, Any], explanation_blob: bytes, inputs_blob: bytes) -> int:
        """Append one record in one transaction; returns its id.

        Retried when another writer took the same chain position.

        Parameters
        ----------
        content
            The record's content; the blobs' digests are added under ``"blobs"`` and its
            ``"timestamp"`` (if any) becomes ``created_at``.
        explanation_blob
            The encoded explanation.
        inputs_blob
            The encoded inputs.
        """
        sa = _sqlalchemy()
        content = dict(content)
        content["blobs"] = {
            "explanation": blob_digest(explanation_blob),
            "inputs": blob_digest(inputs_blob),
        }
        text = canonical_json(content)
        last_error: Exception | None = None
        for _ in range(_RETRIES):
            try:
                with self.engine.connect().execution_options(
                    dlbacktrace_write=True
                ) as conn, conn.begin():
                    if conn.dialect.name == "postgresql":  # one writer at a time, as SQLite
                        conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_PG_LOCK})")
                    head = conn.execute(
                        sa.select(self.table.c.hash).order_by(self.table.c.id.desc()).limit(1)
                    ).scalar()
                    prev = head or GENESIS
                    result = conn.execute(
                        self.table.insert().values(
                            created_at=content.get("timestamp") or _now(),
                            prev_hash=prev,
                            hash=chain_hash(prev, text),
                            content=text,
                            explanation=explanation_blob,
                            inputs=inputs_blob,
                        )
                    )
                    return int(result.inserted_primary_key[0])
            except sa.exc.IntegrityError as exc:  # another writer took this chain position
                last_error = exc
        raise AuditError(f"could not append to the audit log: {last_error}")

    def record(
        self,
        bt: Any,
        explanation: Explanation,
        args: tuple = (),
        kwargs: dict[str, Any] | None = None,
        *,
        options: dict[str, Any] | None = None,
        seed: torch.Tensor | None = None,
        spec: Any = None,
        source: str = "api",
        input_info: dict[str, Any] | None = None,
        weights: str | None = None,
    ) -> int:
        """Store ``explanation`` (made by ``bt`` from ``args``/``kwargs``) with its context.

        Parameters
        ----------
        bt
            The ``Backtrace`` that made the explanation.
        explanation
            The explanation to store.
        args, kwargs
            The model inputs it was made from (positional, and keyword: tensors and constants).
        options
            The explain options (see :func:`explain_options`); ``mode`` defaults to the
            explanation's.
        seed
            The custom seed tensor, if one was used.
        spec
            A :class:`~dlbacktrace.io.loading.ModelSpec`: what lets ``verify`` reload the model
            later; without it, verify needs the model passed in.
        source
            What made the record (``"api"``, ``"demo"``, ...).
        input_info
            Extra facts about the input, stored with its digest and shapes.
        weights
            A known digest of the model's weights, reused instead of hashing them again.

        Returns
        -------
        The new record's id.
        """
        kwargs = dict(kwargs or {})
        tensors = {k: v for k, v in kwargs.items() if isinstance(v, torch.Tensor)}
        consts = {k: v for k, v in kwargs.items() if not isinstance(v, torch.Tensor)}
        stored = StoredInputs(tuple(args), tensors, consts, seed)
        from dlbacktrace.io.digests import tensor_digest

        options = dict(options or {})
        options.setdefault("mode", explanation.mode)
        output = explanation.output
        prediction = (
            output.argmax(dim=-1).reshape(output.shape[0], -1)[:, -1].tolist()
            if output.dim() >= 2 and output.shape[-1] > 1
            else None
        )
        fingerprint = model_fingerprint(bt, tuple(args), kwargs, weights=weights)
        content = {
            **_header("explanation", source, spec, bt.model, fingerprint),
            "input": {
                "digest": tensor_digest(tuple(args), kwargs),
                "shapes": [list(a.shape) for a in args]
                + [[k, list(v.shape)] for k, v in tensors.items()],
                **(input_info or {}),
            },
            "target": None if explanation.target is None else explanation.target.tolist(),
            "options": options,
            "output": {"shape": list(output.shape), "prediction": prediction},
            "relevance": {
                "digest": relevance_digest(explanation),
                "input_names": list(explanation.input_names),
                "dtype": str(next(iter(explanation.total_by_name.values())).dtype),
                "conservation_error": float(explanation.conservation_error),
                "absorbed_total": explanation.total_absorbed,
            },
        }
        return self.append(content, encode_explanation(explanation), encode_inputs(stored))

    def explain(
        self, bt: Any, *inputs: Any, spec: Any = None, source: str = "api", **kw: Any
    ) -> tuple[Explanation, int]:
        """``bt.explain(*inputs, **kw)`` and record it; returns ``(explanation, record_id)``.

        Parameters
        ----------
        bt
            The ``Backtrace`` to explain with.
        *inputs
            Positional model inputs.
        spec
            The model's ``ModelSpec``, so the record can be verified without the model.
        source
            What made the record.
        **kw
            Explain options and seed (stored as options) and model keyword inputs.
        """
        explanation = bt.explain(*inputs, **kw)
        model_kwargs = {k: v for k, v in kw.items() if k not in (*EXPLAIN_OPTIONS, "seed")}
        options, seed = explain_options(kw)
        options.setdefault("attention", bt.attention_for(kw.get("mode"), kw.get("attention")))
        record_id = self.record(
            bt,
            explanation,
            tuple(inputs),
            model_kwargs,
            options=options,
            seed=seed,
            spec=spec,
            source=source,
        )
        return explanation, record_id

    def record_generation(
        self,
        model: torch.nn.Module,
        generation: Any,
        *,
        options: dict[str, Any] | None = None,
        spec: Any = None,
        source: str = "api",
        weights: str | None = None,
    ) -> int:
        """Store a generation: prompt and generated ids, options, relevance matrix.

        Parameters
        ----------
        model
            The causal language model that generated and was explained.
        generation
            Its :class:`~dlbacktrace.tasks.text.GenerationExplanation`, explained on its own
            (one prompt per call): the replay explains this one sequence alone.
        options
            The explanation options used (``SequenceOptions`` fields; the defaults fill the
            others) and the generation settings (``max_new_tokens``, ``do_sample``, ``seed``).
        spec
            The model's ``ModelSpec`` (verify then reloads model and tokenizer from it).
        source
            What made the record.
        weights
            A known digest of the model's weights.

        Returns
        -------
        The new record's id.
        """
        from dlbacktrace.audit.generations import generation_parts

        parts, blob, inputs_blob = generation_parts(generation, options)
        fingerprint = module_fingerprint(model, weights=weights)
        content = {**_header("generation", source, spec, model, fingerprint), **parts}
        return self.append(content, blob, inputs_blob)

    def explain_generation(
        self, model: torch.nn.Module, tokenizer: Any, prompt: Any, *, spec: Any = None,
        source: str = "api", **kw: Any,
    ) -> tuple[Any, list[int]]:
        """``explain_generation(model, tokenizer, prompt, **kw)`` and record every prompt's
        generation; returns ``(result, record_ids)``.

        Several prompts are explained one after the other, not in shared batches: a record
        replays one sequence alone, and rows batched with other sequences (padded to their
        width) need not give the same last bits.

        Parameters
        ----------
        model, tokenizer, prompt
            As for :func:`dlbacktrace.tasks.text.explain_generation`.
        spec
            The model's ``ModelSpec``, so the records can be verified without the model.
        source
            What made the records.
        **kw
            ``explain_generation`` keywords (explanation options and generation settings).
        """
        from dlbacktrace.tasks.text import explain_generation
        from dlbacktrace.tasks.text.prompts import split_prompts

        prompts = split_prompts(prompt)
        if prompts is None:
            result = explain_generation(model, tokenizer, prompt, **kw)
            gens = [result]
        else:
            result = gens = [explain_generation(model, tokenizer, p, **kw) for p in prompts]
        options = {"max_new_tokens": 32, "do_sample": False, "seed": 0, **kw}
        weights = weights_digest(model)
        ids = [self.record_generation(model, g, options=options, spec=spec, source=source,
                                      weights=weights) for g in gens]
        return result, ids

    def record_aggregate(
        self,
        model: torch.nn.Module,
        g: Any,
        data: torch.Tensor,
        *,
        labels: Any = None,
        options: dict[str, Any] | None = None,
        spec: Any = None,
        source: str = "api",
        data_file: str | Path | None = None,
    ) -> int:
        """Store an aggregate: the data, the options and the global explanation.

        Parameters
        ----------
        model
            The model that was explained (or its ``Backtrace``).
        g
            The :class:`~dlbacktrace.aggregate.GlobalExplanation`.
        data
            The ``[rows, ...]`` tensor it was computed from (kept in the record).
        labels
            The true class of each row, if the aggregate was given them.
        options
            The ``aggregate()`` keywords used (``target``, ``mode``, ``batch_size``,
            ``feature_names``, ``class_names``, ``layers``, ``layer_units``, ``sample_size``).
        spec
            The model's ``ModelSpec``.
        source
            What made the record.
        data_file
            The file the data was read from (its name and SHA-256 are kept).

        Returns
        -------
        The new record's id.
        """
        from dlbacktrace.audit.aggregates import aggregate_parts

        model = getattr(model, "model", model)  # a Backtrace
        parts, blob, inputs_blob = aggregate_parts(g, data, labels, options, data_file)
        fingerprint = module_fingerprint(model, weights=g.fingerprint.get("model"))
        content = {**_header("aggregate", source, spec, model, fingerprint), **parts}
        return self.append(content, blob, inputs_blob)

    def aggregate(
        self, model: Any, data: Any, *, labels: Any = None, spec: Any = None,
        source: str = "api", **kw: Any,
    ) -> tuple[Any, int]:
        """``aggregate(model, data, labels=labels, **kw)`` and record it; returns
        ``(global_explanation, record_id)``.

        Parameters
        ----------
        model
            The model or its ``Backtrace``.
        data
            A tensor or NumPy array (other data sources cannot be stored in a record).
        labels
            One true class per row, or None.
        spec
            The model's ``ModelSpec``.
        source
            What made the record.
        **kw
            ``aggregate()`` keywords among those a record keeps (see :meth:`record_aggregate`).
        """
        from dlbacktrace.aggregate import aggregate
        from dlbacktrace.audit.aggregates import check_recordable

        check_recordable(kw, data)
        data = torch.as_tensor(data)
        g = aggregate(model, data, labels=labels, **kw)
        options = {"mode": "default", "batch_size": 256, **kw}
        record_id = self.record_aggregate(model, g, data, labels=labels, options=options,
                                          spec=spec, source=source)
        return g, record_id

    # ---- reading --------------------------------------------------------------------------------
    def _row(self, row: Any) -> AuditRecord:
        return AuditRecord(
            int(row.id),
            row.created_at,
            row.prev_hash,
            row.hash,
            row.content,
            bytes(row.explanation),
            bytes(row.inputs),
        )

    def get(self, record_id: int) -> AuditRecord:
        """One record by id; raises ``AuditError`` if there is none.

        Parameters
        ----------
        record_id
            The record's id.
        """
        sa = _sqlalchemy()
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(self.table).where(self.table.c.id == record_id)).first()
        if row is None:
            raise AuditError(f"no audit record with id {record_id}")
        return self._row(row)

    def list(self, limit: int = 50, offset: int = 0) -> list[AuditRecord]:
        """A page of records, newest first.

        Parameters
        ----------
        limit
            At most this many records (default 50).
        offset
            Records skipped from the newest (default 0).
        """
        sa = _sqlalchemy()
        query = sa.select(self.table).order_by(self.table.c.id.desc()).limit(limit).offset(offset)
        with self.engine.connect() as conn:
            return [self._row(r) for r in conn.execute(query)]

    def count(self) -> int:
        """The number of records."""
        sa = _sqlalchemy()
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(self.table)).scalar())

    def iter_records(self, batch: int = 200) -> Iterator[AuditRecord]:
        """All records, oldest first, read in batches.

        Parameters
        ----------
        batch
            Records read per query (default 200).
        """
        sa = _sqlalchemy()
        last = 0
        while True:
            query = (
                sa.select(self.table)
                .where(self.table.c.id > last)
                .order_by(self.table.c.id)
                .limit(batch)
            )
            with self.engine.connect() as conn:
                rows = [self._row(r) for r in conn.execute(query)]
            if not rows:
                return
            yield from rows
            last = rows[-1].id


def _header(kind: str, source: str, spec: Any, model: Any, fingerprint: dict[str, str]
            ) -> dict[str, Any]:
    """The content fields every record kind shares: schema, kind, time, versions, model."""
    return {
        "schema": SCHEMA_VERSION,
        "kind": kind,
        "timestamp": _now(),
        "source": source,
        "versions": versions(),
        "model": {
            "spec": spec.to_dict() if spec is not None else None,
            "description": spec.describe() if spec is not None else type(model).__name__,
            "class": type(model).__name__,
            "fingerprint": fingerprint,
        },
    }


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="microseconds")

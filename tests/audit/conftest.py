"""The audit tests run on SQLite and on a real PostgreSQL server.

``postgres_server`` starts a throwaway PostgreSQL (``initdb`` + ``pg_ctl`` in a temporary
folder, on a free local port; as an unprivileged user when the tests run as root, since
PostgreSQL refuses to run as root) once per test process. Without the binaries or the driver
the PostgreSQL variants skip, unless ``DLBACKTRACE_REQUIRE_POSTGRES=1`` (set by ``make test``,
hence CI) turns that into a failure.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest

BACKENDS = ("sqlite", "postgresql")


def _binaries() -> Path | None:
    found = shutil.which("initdb")
    candidates = [Path(found).resolve().parent] if found else []
    versions = glob.glob("/usr/lib/postgresql/*/bin")
    candidates += sorted((Path(p) for p in versions), key=lambda p: int(p.parent.name)
                         if p.parent.name.isdigit() else 0, reverse=True)
    for folder in candidates:
        if (folder / "initdb").is_file() and (folder / "pg_ctl").is_file():
            return folder
    return None


def _unavailable(reason: str) -> None:
    if os.environ.get("DLBACKTRACE_REQUIRE_POSTGRES") == "1":
        pytest.fail(f"DLBACKTRACE_REQUIRE_POSTGRES=1 but {reason}")
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def postgres_server():
    """A running throwaway PostgreSQL; yields its SQLAlchemy URL without a database name."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        _unavailable("the PostgreSQL driver is not installed (pip install 'psycopg[binary]')")
    binaries = _binaries()
    if binaries is None:
        _unavailable("PostgreSQL binaries (initdb, pg_ctl) not found on PATH or under "
                     "/usr/lib/postgresql/*/bin (Debian: apt-get install postgresql)")
    folder = Path(tempfile.mkdtemp(prefix="dlbacktrace-pg-"))
    prefix: list[str] = []
    if os.geteuid() == 0:  # initdb and postgres refuse to run as root
        shutil.chown(folder, "nobody")
        prefix = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
    data, port = folder / "data", _free_port()
    pg_ctl = [*prefix, str(binaries / "pg_ctl"), "-D", str(data)]
    try:
        subprocess.run([*prefix, str(binaries / "initdb"), "-D", str(data), "-U", "postgres",
                        "--auth=trust", "-E", "UTF8", "--no-sync"],
                       check=True, capture_output=True, timeout=120)
        options = f"-p {port} -c listen_addresses=127.0.0.1 -k {folder} -c fsync=off"
        subprocess.run([*pg_ctl, "-o", options, "-w", "-t", "60", "-l", str(folder / "log"),
                        "start"], check=True, capture_output=True, timeout=120)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        log = (folder / "log").read_text() if (folder / "log").is_file() else ""
        shutil.rmtree(folder, ignore_errors=True)
        detail = getattr(exc, "stderr", b"") or b""
        pytest.fail(f"could not start PostgreSQL: {exc}\n{detail.decode(errors='replace')}"
                    f"\n{log}")
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}"
    finally:
        subprocess.run([*pg_ctl, "-m", "immediate", "-w", "stop"], capture_output=True,
                       timeout=120)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture()
def new_location(backend, request, tmp_path):
    """A factory of empty audit-log locations on the test's back end."""
    made: list[str] = []
    if backend == "postgresql":
        import sqlalchemy as sa

        server = request.getfixturevalue("postgres_server")
        admin = sa.create_engine(f"{server}/postgres", isolation_level="AUTOCOMMIT")

    def make() -> str:
        if backend == "sqlite":
            return str(tmp_path / f"audit-{len(made)}-{uuid.uuid4().hex[:6]}.db")
        name = f"audit_{uuid.uuid4().hex[:12]}"
        with admin.connect() as conn:
            conn.exec_driver_sql(f"CREATE DATABASE {name}")
        made.append(name)
        return f"{server}/{name}"

    yield make
    if backend == "postgresql":
        with admin.connect() as conn:
            for name in made:
                conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.dispose()


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    """Each test that uses it runs once on SQLite and once on PostgreSQL."""
    return request.param


@pytest.fixture()
def tamper():
    """``tamper(store, sql, **params)``: run a forbidden statement behind the store's back
    (the append-only triggers switched off for it), as an attacker with database access."""
    import sqlalchemy as sa

    def run(store, sql: str, **params):
        with store.engine.begin() as conn:
            if conn.dialect.name == "sqlite":
                conn.exec_driver_sql("DROP TRIGGER IF EXISTS dlbacktrace_audit_no_update")
                conn.exec_driver_sql("DROP TRIGGER IF EXISTS dlbacktrace_audit_no_delete")
            else:
                conn.exec_driver_sql("ALTER TABLE dlbacktrace_audit DISABLE TRIGGER USER")
            result = conn.execute(sa.text(sql), params)
            rows = result.fetchall() if result.returns_rows else None
            if conn.dialect.name != "sqlite":
                conn.exec_driver_sql("ALTER TABLE dlbacktrace_audit ENABLE TRIGGER USER")
        return rows

    return run

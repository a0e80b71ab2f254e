"""Make and drop throwaway MariaDB databases loaded with Valar's schema (tests and benchmarks).

Nothing here touches a database it did not create: every name starts with ``vf_test_`` and a
random suffix, and only names this process created are dropped.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pymysql

SCHEMA_SQL = Path(__file__).parent / "resources" / "testdb.sql"

START_HINT = (
    "start it with `start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd` "
    "(or set VALARFAST_TEST_MYSQL_HOST / _PORT / _USER / _PASSWORD)"
)

# the lines of testdb.sql that create the database and user `valartest`/`kaletest`: not ours
_FOREIGN_STATEMENT = re.compile(
    r"^\s*(DROP DATABASE|CREATE DATABASE|DROP USER|CREATE USER|GRANT|USE)\b", re.IGNORECASE
)


def server_settings() -> dict[str, Any]:
    """Where the test server is: 127.0.0.1:3306 as root with no password unless overridden."""
    return {
        "host": os.environ.get("VALARFAST_TEST_MYSQL_HOST", "127.0.0.1"),
        "port": int(os.environ.get("VALARFAST_TEST_MYSQL_PORT", "3306")),
        "user": os.environ.get("VALARFAST_TEST_MYSQL_USER", "root"),
        "password": os.environ.get("VALARFAST_TEST_MYSQL_PASSWORD", ""),
    }


class ServerUnreachable(RuntimeError):
    pass


def admin_connection(database: str | None = None, **extra: Any) -> pymysql.connections.Connection:
    """A plain PyMySQL connection to the test server; ServerUnreachable says how to start it."""
    s = server_settings()
    try:
        return pymysql.connect(
            database=database, charset="utf8mb4", autocommit=True, connect_timeout=5, **s, **extra
        )
    except pymysql.err.OperationalError as e:
        raise ServerUnreachable(
            f"MariaDB is not reachable at {s['host']}:{s['port']} as {s['user']!r} ({e}); "
            + START_HINT
        ) from e


def schema_statements() -> list[str]:
    """The CREATE TABLE / INSERT statements of testdb.sql, without its database and user lines."""
    text = SCHEMA_SQL.read_text(encoding="utf-8")
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.DOTALL)
    text = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("--"))
    out = []
    for stmt in text.split(";"):
        if stmt.strip() and not _FOREIGN_STATEMENT.match(stmt):
            out.append(stmt.strip())
    return out


def create_valar_database(prefix: str = "vf_test") -> str:
    """Create a fresh database with Valar's 57 tables (and ``ref_four``); return its name."""
    name = f"{prefix}_{secrets.token_hex(4)}"
    conn = admin_connection()
    try:
        with conn.cursor() as cur:
            cur.execute(
                f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_520_ci"
            )
            cur.execute(f"USE `{name}`")
            for stmt in schema_statements():
                cur.execute(stmt)
            cur.execute("SET FOREIGN_KEY_CHECKS=1")
    except BaseException:
        with conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
        raise
    finally:
        conn.close()
    return name


def drop_database(name: str) -> None:
    """Drop a database this process created (refuses any name without the test prefix)."""
    if not name.startswith(("vf_test_", "vf_bench_")):
        raise ValueError(f"refusing to drop {name!r}: not a database made by valarfast's tests")
    _admin_execute(f"DROP DATABASE IF EXISTS `{name}`")


def kill_connection(thread_id: int) -> None:
    """``KILL CONNECTION`` a server thread (a connection of ours) from an admin session."""
    _admin_execute(f"KILL CONNECTION {int(thread_id)}")


def _admin_execute(sql: str) -> None:
    """Run one statement on a short-lived admin connection."""
    conn = admin_connection()
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
    finally:
        conn.close()


def config_for(database: str) -> dict[str, Any]:
    """A valarfast config mapping for a database on the test server."""
    return {"database": database, **server_settings()}


@contextmanager
def scratch_database(prefix: str = "vf_test") -> Iterator[tuple[str, dict[str, Any]]]:
    """A fresh Valar database for a block: yields ``(name, config)``, dropped on exit."""
    name = create_valar_database(prefix)
    try:
        yield name, config_for(name)
    finally:
        drop_database(name)


@contextmanager
def sandbox_database(**fill: Any) -> Iterator[tuple[str, dict[str, Any], Any]]:
    """A scratch database filled by ``valarfast.sandbox.fill(**fill)``: ``(name, config, box)``."""
    import valarfast
    from valarfast import sandbox

    with scratch_database() as (name, config):
        with valarfast.opened(config):
            box = sandbox.fill(**fill)
        yield name, config, box


@contextmanager
def bound_database(database_class: type, seed: Any = None) -> Iterator[Any]:
    """A scratch database opened with ``database_class`` (a peewee database built here, e.g. one
    that counts statements) and bound to the model's proxy for the block; ``seed()`` runs first
    with writing enabled. The previous binding is restored and the database dropped on exit."""
    from valarfast import guard, metamodel

    with scratch_database() as (name, _):
        database = database_class(name, charset="utf8mb4", **server_settings())
        previous = metamodel.database_proxy.obj
        metamodel.database_proxy.initialize(database)
        try:
            if seed is not None:
                with guard.writes_enabled():
                    seed()
            yield database
        finally:
            metamodel.database_proxy.initialize(previous)
            database.close()

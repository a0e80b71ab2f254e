"""Fixtures that run a test on both engines: MariaDB (the real target) and SQLite (embedded).

``any_engine_db`` is parametrized by engine and gives a config mapping for a new database with
Valar's tables and testdb.sql's rows (``refs`` 4, ``ref_four``): on MariaDB loaded from testdb.sql
(dropped afterwards), on SQLite made by valarfast from the model in a temporary file. A test
that takes it runs twice, ``[mysql]`` and ``[sqlite]``. ``fresh_any_engine_db`` is the same, new
for each test (for tests that write).

Imported by conftest.py, so any test module can use them.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dbtools
import pytest

ENGINES = ("mysql", "sqlite")

_INSERT = re.compile(r"^\s*INSERT\s+INTO\b", re.IGNORECASE)


def testdb_rows() -> list[str]:
    """The INSERT statements of testdb.sql (portable SQL: plain literals, no MySQL syntax)."""
    return [s for s in dbtools.schema_statements() if _INSERT.match(s)]


def sqlite_valar(path: Path) -> dict[str, Any]:
    """Make a SQLite Valar at ``path`` (schema by valarfast, testdb.sql's rows); its config."""
    from valarfast import guard
    from valarfast.connection import Valar

    config = {"database": str(path), "engine": "sqlite"}
    with Valar(config) as valar, guard.writes_enabled(), valar.atomic():
        for stmt in testdb_rows():
            valar.database.execute_sql(stmt)
    return config


def _make(engine: str, request: pytest.FixtureRequest, tmp: Path) -> Iterator[dict[str, Any]]:
    if engine == "mysql":
        request.getfixturevalue("mariadb")  # fails (never skips) with how to start it
        name = dbtools.create_valar_database()
        try:
            yield dbtools.config_for(name)
        finally:
            dbtools.drop_database(name)
    else:
        yield sqlite_valar(tmp / "valar.sqlite")


@pytest.fixture(scope="module", params=ENGINES)
def any_engine_db(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    """A config for a Valar database on each engine, shared by the tests of a module."""
    yield from _make(request.param, request, tmp_path_factory.mktemp("any_engine"))


@pytest.fixture(params=ENGINES)
def fresh_any_engine_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """Like any_engine_db, but new for each test."""
    yield from _make(request.param, request, tmp_path)

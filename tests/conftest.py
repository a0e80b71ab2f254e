"""Shared fixtures: a real MariaDB database with Valar's schema, made for the session, dropped."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

import dbtools


@pytest.fixture(scope="session")
def mariadb() -> dict[str, Any]:
    """The test server's settings; fails (never skips) with how to start it when it is down."""
    try:
        dbtools.admin_connection().close()
    except dbtools.ServerUnreachable as e:
        pytest.fail(str(e), pytrace=False)
    return dbtools.server_settings()


@pytest.fixture(scope="session")
def valar_db(mariadb: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """A config mapping for a fresh database loaded with testdb.sql; dropped after the session."""
    name = dbtools.create_valar_database()
    try:
        yield dbtools.config_for(name)
    finally:
        dbtools.drop_database(name)


@pytest.fixture()
def fresh_valar_db(mariadb: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Like valar_db but new for each test (for tests that write)."""
    name = dbtools.create_valar_database()
    try:
        yield dbtools.config_for(name)
    finally:
        dbtools.drop_database(name)

# the same test on MariaDB and on SQLite: any_engine_db, fresh_any_engine_db (sqlite helper)
from engines_fixtures import any_engine_db, fresh_any_engine_db  # noqa: E402, F401

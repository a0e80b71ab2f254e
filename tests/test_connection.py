"""Valar, opened, new_model, valarpy_info and the write switch against MariaDB.

Includes valarpy 3.0's own connection tests, restated for valarfast: connection from a dict, a
path, the environment variable and a list of paths; reconnect; new_model; opened; write
enable/disable; truncate/drop refused.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import peewee
import pytest

import valarfast
from valarfast.connection import GlobalConnection, Valar, new_model, opened, valarpy_info
from valarfast.errors import (
    ConnectFailedError,
    NotConnectedError,
    UnsupportedOperationError,
    WriteNotEnabledError,
)


@pytest.fixture()
def config_path(valar_db: dict[str, Any], tmp_path: Path) -> Path:
    p = tmp_path / "connection.json"
    p.write_text(json.dumps(valar_db))
    return p


def count_refs() -> int:
    return len(list(new_model().Refs.select()))


def test_from_dict(valar_db: dict[str, Any]) -> None:
    with Valar(valar_db):
        assert count_refs() == 1


def test_from_path(config_path: Path) -> None:
    with Valar(config_path):
        assert count_refs() == 1
    with Valar(str(config_path)):
        assert count_refs() == 1


def test_from_env_var(config_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VALARPY_CONFIG", str(config_path))
    with Valar():
        assert count_refs() == 1


def test_from_list(config_path: Path, tmp_path: Path) -> None:
    with Valar([None, tmp_path / "missing.json", config_path]):
        assert count_refs() == 1


def test_reconnect(valar_db: dict[str, Any]) -> None:
    with Valar(valar_db) as valar:
        from valarfast.model import Refs

        first = valar.database.execute_sql("SELECT CONNECTION_ID()").fetchone()[0]
        assert list(Refs) is not None
        valar.reconnect()
        second = valar.database.execute_sql("SELECT CONNECTION_ID()").fetchone()[0]
        assert first != second
        assert len(list(Refs)) == 1
        valar.reconnect(hard=True)
        assert new_model().conn is valar
        assert len(list(Refs)) == 1


def test_open_close_idempotent_and_unbinds(valar_db: dict[str, Any]) -> None:
    valar = Valar(valar_db)
    model = new_model()
    valar.open()
    db = valar.database
    valar.open()  # no-op
    assert valar.database is db and model.conn is valar
    assert GlobalConnection._peewee_database is db
    valar.close()
    valar.close()
    assert model.conn is None and not valar.is_open
    with pytest.raises(NotConnectedError, match="open one"):
        model.Refs.select().count()
    with pytest.raises(NotConnectedError):
        valar.database  # noqa: B018
    with pytest.raises(NotConnectedError):
        model.atomic()


def test_models_importable_before_connecting(valar_db: dict[str, Any]) -> None:
    from valarfast.model import Refs  # imported with no connection open

    with opened(valar_db):
        assert Refs.select().count() == 1


def test_opened_yields_model_and_closes(valar_db: dict[str, Any]) -> None:
    with valarfast.opened(valar_db) as model:
        assert model is new_model()
        assert len(list(model.Refs.select())) == 1
        conn = model.conn
        assert isinstance(conn, Valar) and conn.is_open
    assert model.conn is None and not conn.is_open


def test_opened_closes_on_exception(valar_db: dict[str, Any]) -> None:
    with pytest.raises(ZeroDivisionError), opened(valar_db) as model:
        conn = model.conn
        _ = 1 / 0
    assert model.conn is None and not conn.is_open
    with pytest.raises(NotConnectedError):
        model.Refs.select().count()


def test_open_failure_is_clean(valar_db: dict[str, Any]) -> None:
    bad = dict(valar_db, database="vf_test_no_such_database")
    with pytest.raises(ConnectFailedError, match="vf_test_no_such_database") as info:
        Valar(bad).open()
    assert isinstance(info.value.__cause__, peewee.OperationalError)  # the driver's error kept
    assert new_model().conn is None


def test_write_enable_disable(fresh_valar_db: dict[str, Any]) -> None:
    with opened(fresh_valar_db) as model:
        with pytest.raises(WriteNotEnabledError):
            model.Refs.create(name="nope")
        with pytest.raises(WriteNotEnabledError):
            model.conn.database.execute_sql("INSERT INTO refs (name) VALUES ('raw')")
        model.conn.backend.enable_write()
        try:
            assert model.conn.backend.is_write_enabled()
            model.Refs.create(name="yes")
        finally:
            model.conn.backend.disable_write()
        with pytest.raises(WriteNotEnabledError):
            model.Refs(name="again").save()
        assert sorted(r.name for r in model.Refs.select()) == ["ref_four", "yes"]


def test_truncate_and_drop_refused(valar_db: dict[str, Any]) -> None:
    with opened(valar_db) as model:
        model.conn.backend.enable_write()
        try:
            with pytest.raises(UnsupportedOperationError):
                model.Refs.truncate_table()
            with pytest.raises(UnsupportedOperationError):
                model.Refs.drop_table()
        finally:
            model.conn.backend.disable_write()
        assert model.Refs.select().count() == 1


def test_valarpy_info(config_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VALARPY_CONFIG", str(config_path))
    lines = list(valarpy_info())
    assert lines[0] == f"valarfast version {valarfast.__version__}"
    assert lines[1:3] == ["Connecting...", "Connected."]
    assert lines[-1] == "All valarpy queries succeeded."
    rows = dict(line.split() for line in lines[4:-1])
    assert rows["Refs"] == "1" and rows["Runs"] == "0"
    assert len(rows) == 57  # every table of testdb.sql
    assert new_model().conn is None


def test_sqlite_engine(tmp_path: Path) -> None:
    with Valar({"database": str(tmp_path / "v.sqlite"), "engine": "sqlite"}) as v:
        db = v.database
        assert db.execute_sql("PRAGMA foreign_keys").fetchone() == (1,)
        assert db.execute_sql("SELECT 'valar' REGEXP '^v.l'").fetchone() == (1,)
        with pytest.raises(WriteNotEnabledError):
            db.execute_sql("CREATE TABLE t (x)")

"""The SQLite schema valarfast makes from the model: it agrees with MariaDB's Valar and the model,
it is made once, and files that are not a valarfast Valar are refused untouched."""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dbtools
import peewee
import pytest

from valarfast import metamodel, model, sqlite_schema
from valarfast.connection import Valar, valarpy_info
from valarfast.errors import WriteNotEnabledError
from valarfast.sqlite_schema import SqliteSchemaError


@pytest.fixture()
def restore_binding() -> Iterator[None]:
    previous = metamodel.database_proxy.obj, model.conn
    yield
    metamodel.database_proxy.initialize(previous[0])
    model.conn = previous[1]


@pytest.fixture(scope="module")
def sqlite_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("schema") / "valar.sqlite"
    previous = metamodel.database_proxy.obj, model.conn
    try:
        Valar({"database": str(path), "engine": "sqlite"}).open().close()
    finally:
        metamodel.database_proxy.initialize(previous[0])
        model.conn = previous[1]
    return path


def _sqlite_rows(path: Path, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(path)
    try:
        return [tuple(r) for r in conn.execute(sql, params).fetchall()]
    finally:
        conn.close()


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- the file against MariaDB's Valar (testdb.sql) ------------------------------------------------


def _mysql_schema(name: str) -> dict[str, Any]:
    conn = dbtools.admin_connection(name)
    out: dict[str, Any] = {"columns": {}, "unique": {}, "fks": {}}
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT TABLE_NAME, COLUMN_NAME, IS_NULLABLE, COLUMN_DEFAULT, COLUMN_KEY, EXTRA "
                "FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = %s "
                "ORDER BY TABLE_NAME, ORDINAL_POSITION",
                (name,),
            )
            for table, column, nullable, default, key, _ in cur.fetchall():
                out["columns"].setdefault(table, []).append(
                    (column, nullable == "YES", _default(default), key == "PRI")
                )
            cur.execute(
                "SELECT TABLE_NAME, INDEX_NAME, COLUMN_NAME FROM information_schema.STATISTICS "
                "WHERE TABLE_SCHEMA = %s AND NON_UNIQUE = 0 AND INDEX_NAME <> 'PRIMARY' "
                "ORDER BY TABLE_NAME, INDEX_NAME, SEQ_IN_INDEX",
                (name,),
            )
            keys: dict[tuple[str, str], list[str]] = {}
            for table, index, column in cur.fetchall():
                keys.setdefault((table, index), []).append(column)
            for (table, _), cols in keys.items():
                out["unique"].setdefault(table, set()).add(tuple(cols))
            cur.execute(
                "SELECT k.TABLE_NAME, k.COLUMN_NAME, k.REFERENCED_TABLE_NAME, "
                "k.REFERENCED_COLUMN_NAME, r.DELETE_RULE "
                "FROM information_schema.KEY_COLUMN_USAGE k "
                "JOIN information_schema.REFERENTIAL_CONSTRAINTS r "
                "ON r.CONSTRAINT_SCHEMA = k.TABLE_SCHEMA AND r.CONSTRAINT_NAME = k.CONSTRAINT_NAME "
                "AND r.TABLE_NAME = k.TABLE_NAME "
                "WHERE k.TABLE_SCHEMA = %s AND k.REFERENCED_TABLE_NAME IS NOT NULL",
                (name,),
            )
            for table, column, ref_table, ref_column, rule in cur.fetchall():
                out["fks"].setdefault(table, set()).add(
                    (column, ref_table, ref_column, _rule(rule))
                )
    finally:
        conn.close()
    return out


def _default(value: Any) -> str | None:
    """A column default, normalized across engines (None: no default or NULL)."""
    if value is None or str(value).upper() == "NULL":
        return None
    text = str(value).strip().lower()
    return text[:-2] if text.endswith("()") else text


def _rule(rule: Any) -> str:
    text = str(rule or "").upper()
    return "NO ACTION" if text in ("", "RESTRICT", "NO ACTION") else text


def _sqlite_schema(path: Path) -> dict[str, Any]:
    out: dict[str, Any] = {"columns": {}, "unique": {}, "fks": {}, "types": {}}
    tables = [
        r[0]
        for r in _sqlite_rows(
            path, "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
        )
        if r[0] not in ("sqlite_sequence", sqlite_schema.META_TABLE)
    ]
    for t in tables:
        info = _sqlite_rows(path, f'PRAGMA table_info("{t}")')
        out["columns"][t] = [
            (name, not notnull, _default(default), bool(pk))
            for _, name, _, notnull, default, pk in info
        ]
        out["types"][t] = {name: decl for _, name, decl, *_ in info}
        for _, index, unique, origin, _ in _sqlite_rows(path, f'PRAGMA index_list("{t}")'):
            if unique and origin != "pk":
                cols = tuple(r[2] for r in _sqlite_rows(path, f'PRAGMA index_info("{index}")'))
                out["unique"].setdefault(t, set()).add(cols)
        for row in _sqlite_rows(path, f'PRAGMA foreign_key_list("{t}")'):
            _, _, ref_table, column, ref_column, _, on_delete, _ = row
            out["fks"].setdefault(t, set()).add((column, ref_table, ref_column, _rule(on_delete)))
    return out


def test_sqlite_file_agrees_with_mariadb_valar(valar_db: dict[str, Any], sqlite_file: Path) -> None:
    mysql = _mysql_schema(valar_db["database"])
    lite = _sqlite_schema(sqlite_file)
    assert sorted(lite["columns"]) == sorted(mysql["columns"])  # the same 57 tables
    assert len(lite["columns"]) == 57
    for table in mysql["columns"]:
        # the same columns; their position follows the model (valarpy's order), not the DDL file
        assert sorted(lite["columns"][table]) == sorted(mysql["columns"][table]), table
        assert lite["unique"].get(table, set()) == mysql["unique"].get(table, set()), table
        assert lite["fks"].get(table, set()) == mysql["fks"].get(table, set()), table


def test_column_types_follow_the_mapping(sqlite_file: Path) -> None:
    types = _sqlite_schema(sqlite_file)["types"]
    for m in model.MODELS_BY_TABLE.values():
        for f in m._meta.sorted_fields:
            mysql = str(f.field_type).replace(sqlite_schema.AUTO_SUFFIX, "")
            expected = sqlite_schema.SQLITE_TYPES[mysql].storage
            assert types[m._meta.table_name][f.column_name] == expected, (m.__name__, f.name)
    # every MySQL-only type the model uses is mapped; the key is a rowid alias
    ddl = "\n".join(sqlite_schema.schema_statements())
    assert "ENUM" not in ddl and "UNSIGNED" not in ddl and "LONGBLOB" not in ddl
    assert '"id" INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT' in ddl


def test_enum_check_has_exactly_the_choices(sqlite_file: Path) -> None:
    (sql,) = _sqlite_rows(
        sqlite_file, "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'plate_types'"
    )[0:1]
    assert "\"opacity\" COLLATE BINARY IN ('opaque', 'transparent')" in sql[0]
    for value, ok in (("opaque", True), ("transparent", True), ("Opaque", False), ("", False)):
        conn = sqlite3.connect(sqlite_file)
        try:
            conn.execute("BEGIN")
            conn.execute("INSERT INTO suppliers (id, name) VALUES (1, 's')")
            stmt = (
                "INSERT INTO plate_types (name, supplier_id, n_rows, n_columns, well_shape, "
                "opacity) VALUES ('p', 1, 8, 12, 'round', ?)"
            )
            if ok:
                conn.execute(stmt, (value,))
            else:
                with pytest.raises(sqlite3.IntegrityError, match="CHECK"):
                    conn.execute(stmt, (value,))
        finally:
            conn.rollback()
            conn.close()


def test_an_unmapped_type_is_named() -> None:
    class Odd(metamodel.BaseModel):
        id = metamodel.UnsignedIntegerAutoField()
        when = peewee.TimeField()

        class Meta:
            table_name = "odd"

    with pytest.raises(SqliteSchemaError, match=r"Odd\.when.*'TIME'"):
        sqlite_schema.table_statements(Odd)


# --- made once, with a marker; foreign files refused ----------------------------------------------


def test_schema_made_once_with_a_marker(tmp_path: Path, restore_binding: None) -> None:
    path = tmp_path / "v.sqlite"
    with Valar({"database": str(path), "engine": "sqlite"}) as v:
        db = v.database
        assert db.execute_sql("PRAGMA foreign_keys").fetchone() == (1,)
        assert len(db.get_tables()) == 57 + 2  # + the marker and sqlite_sequence
        assert model.Refs.select().count() == 0
        with pytest.raises(WriteNotEnabledError):  # the guard is on for the user
            model.Refs.create(name="x")
    marker = dict(_sqlite_rows(path, "SELECT key, value FROM valarfast_meta"))
    assert marker["schema_sha1"] == sqlite_schema.schema_sha1()
    assert marker["valarfast_version"] == __import__("valarfast").__version__
    before = _digest(path)
    with Valar({"database": str(path), "engine": "sqlite"}) as v:
        assert model.Refs.select().count() == 0
    assert _digest(path) == before  # reopening writes nothing


def test_empty_file_gets_the_schema(tmp_path: Path, restore_binding: None) -> None:
    path = tmp_path / "empty.sqlite"
    path.touch()
    with Valar({"database": str(path), "engine": "sqlite"}):
        assert model.Refs.select().count() == 0


FOREIGN_FILES = {
    "not a database": (b"hello, I am a text file\n" * 100, r"not a usable SQLite database"),
    "other tables": (None, r"other tables \(notes\).*not a Valar made by valarfast"),
    "other model": ("other-sha1", r"made by valarfast 0\.0\.1, which differs"),
}


@pytest.mark.parametrize("kind", sorted(FOREIGN_FILES))
def test_foreign_files_refused_untouched(tmp_path: Path, restore_binding: None, kind: str) -> None:
    path = tmp_path / "f.sqlite"
    content, message = FOREIGN_FILES[kind]
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is None:
        conn = sqlite3.connect(path)
        conn.execute("CREATE TABLE notes (x TEXT)")
        conn.commit()
        conn.close()
    else:
        Valar({"database": str(path), "engine": "sqlite"}).open().close()
        conn = sqlite3.connect(path)
        conn.execute("UPDATE valarfast_meta SET value = ? WHERE key = 'schema_sha1'", (content,))
        conn.execute("UPDATE valarfast_meta SET value = '0.0.1' WHERE key = 'valarfast_version'")
        conn.commit()
        conn.close()
    before = _digest(path)
    with pytest.raises(SqliteSchemaError, match=message):
        Valar({"database": str(path), "engine": "sqlite"}).open()
    assert _digest(path) == before


def test_two_connections_to_a_new_file_make_one_schema(tmp_path: Path) -> None:
    path = str(tmp_path / "race.sqlite")
    a = sqlite3.connect(path, isolation_level=None)
    b = sqlite3.connect(path, isolation_level=None)
    try:
        first = sqlite_schema.ensure_schema(a)
        second = sqlite_schema.ensure_schema(b)
        assert first == second
        tables = [r[0] for r in a.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        assert len(tables) == len(set(tables)) == 59
    finally:
        a.close()
        b.close()


def test_valarpy_info_on_a_sqlite_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, restore_binding: None
) -> None:
    db = tmp_path / "v.sqlite"
    config = tmp_path / "connection.json"
    config.write_text(json.dumps({"database": str(db), "engine": "sqlite"}))
    monkeypatch.setenv("VALARPY_CONFIG", str(config))
    lines = list(valarpy_info())
    assert lines[-1] == "All valarpy queries succeeded."
    counts = dict(line.split() for line in lines if re.fullmatch(r"[A-Z]\w+ +\d+", line.strip()))
    assert len(counts) == 57 and set(counts.values()) == {"0"}

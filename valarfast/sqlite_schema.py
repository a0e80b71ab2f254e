"""Valar's schema on SQLite, made from the model classes: the type mapping and the DDL.

MySQL-only column types become SQLite types with ``CHECK`` constraints, so that a value MariaDB
would refuse (strict mode) is refused on SQLite too, and the model and the file agree:

=====================================  ====================================================
MySQL (``field_type`` in the model)    SQLite column
=====================================  ====================================================
``*INT [UNSIGNED]``, ``BOOL``          ``INTEGER CHECK (col BETWEEN min AND max)`` (the MySQL range)
``... AUTO_INCREMENT`` primary key     ``INTEGER PRIMARY KEY AUTOINCREMENT`` (ids never reused)
``DOUBLE`` / ``DOUBLE UNSIGNED``       ``REAL`` / ``REAL CHECK (col >= 0)``
``CHAR(n)``, ``VARCHAR(n)``            ``TEXT COLLATE NOCASE CHECK (length(col) <= n)``
``TEXT``, ``MEDIUMTEXT``               ``TEXT COLLATE NOCASE``
``ENUM('a', ...)``                     ``TEXT COLLATE NOCASE CHECK (col COLLATE BINARY IN (...))``
``DATE``, ``DATETIME``                 ``DATE``, ``DATETIME`` (ISO text, as peewee writes it)
``TIMESTAMP``                          ``DATETIME`` (``DEFAULT CURRENT_TIMESTAMP`` kept, in UTC)
``BINARY(n)``, ``VARBINARY(n)``        ``BLOB CHECK (typeof(col) = 'blob' AND length(col) <= n)``
``BLOB``, ``MEDIUMBLOB``, ``LONGBLOB`` ``BLOB CHECK (typeof(col) = 'blob')``
=====================================  ====================================================

Text columns use ``COLLATE NOCASE`` because Valar's collation ignores case (ASCII only on SQLite;
MariaDB also ignores trailing spaces, SQLite does not). Foreign keys keep their ``ON DELETE``;
every unique key and index of the model becomes an index.

The file carries a marker table, ``valarfast_meta`` (key -> value): ``schema_sha1`` (a digest of
the DDL below, so a file made from another model is detected), ``valarfast_version`` and
``created``. :func:`ensure_schema` runs at every connect (see ``engines.ValarSqliteDatabase``):
an empty file gets the schema (valarfast's own write, in one transaction, not subject to the
user's write guard); a file with a matching marker is used as is; anything else is refused with
:class:`SqliteSchemaError`, and nothing is written.

>>> stmts = schema_statements()
>>> stmts[0].startswith('CREATE TABLE "annotations"')
True
>>> column_sql(__import__("valarfast.model").model.Sensors.data_type)[:40]
'"data_type" TEXT NOT NULL COLLATE NOCASE'
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import lru_cache

import peewee

from valarfast.errors import ValarError

__all__ = [
    "META_TABLE",
    "SQLITE_DDL_TYPES",
    "SQLITE_TYPES",
    "SqliteSchemaError",
    "SqliteType",
    "column_sql",
    "ensure_schema",
    "read_marker",
    "schema_sha1",
    "schema_statements",
    "table_statements",
]

META_TABLE = "valarfast_meta"
SQLITE_HEADER = b"SQLite format 3\x00"


class SqliteSchemaError(ValarError):
    """A SQLite file that is not (or no longer) a Valar this valarfast can use as is."""


@dataclass(frozen=True)
class SqliteType:
    """How one MySQL ``field_type`` is stored: a SQLite type and a CHECK over ``{col}``/``{n}``.

    >>> SQLITE_TYPES["TINYINT UNSIGNED"].check
    '{col} BETWEEN 0 AND 255'
    """

    storage: str
    check: str | None = None
    text: bool = False  # compared case-insensitively, like Valar's collation


def _int(lo: int, hi: int) -> SqliteType:
    return SqliteType("INTEGER", f"{{col}} BETWEEN {lo} AND {hi}")


def _signed(bits: int) -> SqliteType:
    return _int(-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)


_BLOB = "typeof({col}) = 'blob'"

#: MySQL ``field_type`` (without ``AUTO_INCREMENT``) -> its SQLite column
SQLITE_TYPES: Mapping[str, SqliteType] = {
    "BOOL": _signed(8),  # MySQL's BOOL is TINYINT(1)
    "TINYINT": _signed(8),
    "SMALLINT": _signed(16),
    "MEDIUMINT": _signed(24),
    "INT": _signed(32),
    "INTEGER": _signed(32),
    "BIGINT": _signed(64),
    "TINYINT UNSIGNED": _int(0, 2**8 - 1),
    "SMALLINT UNSIGNED": _int(0, 2**16 - 1),
    "MEDIUMINT UNSIGNED": _int(0, 2**24 - 1),
    "INT UNSIGNED": _int(0, 2**32 - 1),
    "BIGINT UNSIGNED": SqliteType("INTEGER", "{col} >= 0"),  # SQLite integers stop at 2^63 - 1
    "DOUBLE": SqliteType("REAL"),
    "FLOAT": SqliteType("REAL"),
    "DOUBLE UNSIGNED": SqliteType("REAL", "{col} >= 0"),
    "CHAR": SqliteType("TEXT", "length({col}) <= {n}", text=True),
    "VARCHAR": SqliteType("TEXT", "length({col}) <= {n}", text=True),
    "TEXT": SqliteType("TEXT", text=True),
    "MEDIUMTEXT": SqliteType("TEXT", text=True),
    "ENUM": SqliteType("TEXT", "{col} COLLATE BINARY IN ({choices})", text=True),
    "DATE": SqliteType("DATE"),
    "DATETIME": SqliteType("DATETIME"),
    "TIMESTAMP": SqliteType("DATETIME"),
    "BINARY": SqliteType("BLOB", _BLOB + " AND length({col}) <= {n}"),
    "VARBINARY": SqliteType("BLOB", _BLOB + " AND length({col}) <= {n}"),
    "BLOB": SqliteType("BLOB", _BLOB),
    "MEDIUMBLOB": SqliteType("BLOB", _BLOB),
    "LONGBLOB": SqliteType("BLOB", _BLOB),
}

AUTO_SUFFIX = " AUTO_INCREMENT"

#: ``field_type`` -> SQLite type name only: the ``field_types`` of ``ValarSqliteDatabase``, so
#: that peewee's own DDL (``Model.create_table()``) uses the same storage types as this module
SQLITE_DDL_TYPES: Mapping[str, str] = {
    **{name: kind.storage for name, kind in SQLITE_TYPES.items()},
    **{name + AUTO_SUFFIX: "INTEGER" for name, kind in SQLITE_TYPES.items()
       if kind.storage == "INTEGER" and name != "BOOL"},
}  # fmt: skip


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _where(field: peewee.Field) -> str:
    return f"{field.model.__name__}.{field.name}"


def _sqlite_type(field: peewee.Field) -> tuple[SqliteType, bool]:
    """The SQLite column for ``field`` and whether it is an auto-increment key."""
    mysql = str(field.field_type).upper()
    auto = mysql.endswith(AUTO_SUFFIX)
    base = mysql[: -len(AUTO_SUFFIX)] if auto else mysql
    if base not in SQLITE_TYPES:
        raise SqliteSchemaError(
            f"{_where(field)}: no SQLite mapping for the MySQL type {mysql!r}; "
            f"add it to valarfast.sqlite_schema.SQLITE_TYPES"
        )
    return SQLITE_TYPES[base], auto


def _check(field: peewee.Field, kind: SqliteType) -> str | None:
    if kind.check is None:
        return None
    modifiers = field.get_modifiers() or []
    values = {"col": _q(field.column_name), "n": modifiers[0] if modifiers else None}
    if "{choices}" in kind.check:
        values["choices"] = ", ".join(_literal(c) for c in field.choices)
    if "{n}" in kind.check and values["n"] is None:
        raise SqliteSchemaError(f"{_where(field)}: {field.field_type} needs a length")
    expr = kind.check.format(**values)
    return f"{values['col']} IS NULL OR ({expr})" if field.null else expr


def _defaults(field: peewee.Field) -> list[str]:
    """The DEFAULT clauses of the field's SQL constraints (the only kind Valar's model has)."""
    out = []
    for c in field.constraints or []:
        sql = str(getattr(c, "sql", c)).strip()
        if not sql.upper().startswith("DEFAULT "):
            raise SqliteSchemaError(
                f"{_where(field)}: the constraint {sql!r} has no SQLite equivalent here"
            )
        out.append(sql)
    return out


def column_sql(field: peewee.Field) -> str:
    """The SQLite column definition of one model field.

    >>> from valarfast.model import Wells
    >>> column_sql(Wells.well_index)
    '"well_index" INTEGER NOT NULL CHECK ("well_index" BETWEEN 0 AND 65535)'
    """
    kind, auto = _sqlite_type(field)
    words = [_q(field.column_name), kind.storage]
    if not field.null:
        words.append("NOT NULL")
    if field.primary_key:
        words.append("PRIMARY KEY AUTOINCREMENT" if auto else "PRIMARY KEY")
    elif auto:
        raise SqliteSchemaError(f"{_where(field)}: AUTO_INCREMENT on a column that is not the key")
    words.extend(_defaults(field))
    if kind.text:
        words.append("COLLATE NOCASE")
    check = _check(field, kind)
    if check is not None:
        words.append(f"CHECK ({check})")
    return " ".join(words)


def _foreign_key(field: peewee.ForeignKeyField) -> str:
    sql = (
        f"FOREIGN KEY ({_q(field.column_name)}) REFERENCES "
        f"{_q(field.rel_model._meta.table_name)} ({_q(field.rel_field.column_name)})"
    )
    if field.on_delete:
        sql += f" ON DELETE {field.on_delete}"
    if field.on_update:
        sql += f" ON UPDATE {field.on_update}"
    return sql


def _index_columns(model: type[peewee.Model]) -> list[tuple[tuple[str, ...], bool]]:
    """(column names, unique) of every unique field, indexed field and Meta.indexes entry."""
    found: list[tuple[tuple[str, ...], bool]] = []
    for field in model._meta.sorted_fields:
        if field.primary_key:
            continue
        if field.unique or field.index:
            found.append(((field.column_name,), bool(field.unique)))
    for entry in model._meta.indexes:
        if not (isinstance(entry, tuple) and len(entry) == 2 and isinstance(entry[0], tuple)):
            raise SqliteSchemaError(
                f"{model.__name__}: index {entry!r} is not of the form ((field, ...), unique)"
            )
        names, unique = entry
        columns = tuple(model._meta.fields[n].column_name for n in names)
        found.append((columns, bool(unique)))
    out: list[tuple[tuple[str, ...], bool]] = []
    for item in found:
        if item not in out:
            out.append(item)
    return out


def table_statements(model: type[peewee.Model]) -> list[str]:
    """CREATE TABLE and CREATE INDEX statements of one model class."""
    meta = model._meta
    if not isinstance(meta.primary_key, peewee.Field) or isinstance(
        meta.primary_key, peewee.CompositeKey
    ):
        raise SqliteSchemaError(f"{model.__name__}: only single-column primary keys are supported")
    table = meta.table_name
    parts = [column_sql(f) for f in meta.sorted_fields]
    parts.extend(
        _foreign_key(f) for f in meta.sorted_fields if isinstance(f, peewee.ForeignKeyField)
    )
    out = [f"CREATE TABLE {_q(table)} (\n  " + ",\n  ".join(parts) + "\n)"]
    for columns, unique in _index_columns(model):
        name = f"{table}__{'__'.join(columns)}{'__unique' if unique else ''}"
        out.append(
            f"CREATE {'UNIQUE ' if unique else ''}INDEX {_q(name)} ON {_q(table)} "
            f"({', '.join(_q(c) for c in columns)})"
        )
    return out


def _default_models() -> list[type[peewee.Model]]:
    from valarfast import model

    return [model.MODELS_BY_TABLE[t] for t in sorted(model.MODELS_BY_TABLE)]


def schema_statements(models: Iterable[type[peewee.Model]] | None = None) -> list[str]:
    """Every statement that makes Valar's tables on SQLite (default: all of ``valarfast.model``)."""
    chosen = _default_models() if models is None else list(models)
    return [s for m in chosen for s in table_statements(m)]


def schema_sha1(statements: Sequence[str] | None = None) -> str:
    """Hex SHA-1 of the DDL: equal digests mean the same tables, columns, checks and indexes."""
    text = "\n;\n".join(schema_statements() if statements is None else statements)
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


@lru_cache(maxsize=1)
def _current() -> tuple[tuple[str, ...], str]:
    statements = tuple(schema_statements())
    return statements, schema_sha1(statements)


def _version() -> str:
    import valarfast

    return str(valarfast.__version__)


# --- the file ------------------------------------------------------------------------------------


def _file_name(conn: sqlite3.Connection) -> str:
    try:
        for _, name, path in conn.execute("PRAGMA database_list"):
            if name == "main":
                return str(path) or ":memory:"
    except sqlite3.Error:
        pass
    return "the SQLite database"


def read_marker(conn: sqlite3.Connection) -> dict[str, str] | None:
    """The ``valarfast_meta`` rows of an open sqlite3 connection, or None when there is none."""
    found = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (META_TABLE,)
    ).fetchone()
    if found is None:
        return None
    return {str(k): str(v) for k, v in conn.execute(f"SELECT key, value FROM {META_TABLE}")}


def _user_tables(conn: sqlite3.Connection) -> list[str]:
    rows = conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' "
        "ESCAPE '\\'"
    ).fetchall()
    return [r[0] for r in rows]


def _create(conn: sqlite3.Connection) -> None:
    statements, digest = _current()
    conn.execute("BEGIN IMMEDIATE")  # one writer: a second process waits, then sees the tables
    try:
        if not _user_tables(conn):
            for stmt in statements:
                conn.execute(stmt)
            conn.execute(f"CREATE TABLE {META_TABLE} (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
            conn.executemany(
                f"INSERT INTO {META_TABLE} (key, value) VALUES (?, ?)",
                [("schema_sha1", digest), ("valarfast_version", _version()), ("created", now)],
            )
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def ensure_schema(conn: sqlite3.Connection) -> dict[str, str]:
    """Make Valar's tables in an empty file, or check a valarfast file's marker; return the marker.

    Raises :class:`SqliteSchemaError` (one line, nothing written) for a file that is not a SQLite
    database, a database with other tables, or one made from another version of the model.
    """
    where = _file_name(conn)
    try:
        tables = _user_tables(conn)
        if not tables:
            _create(conn)
        marker = read_marker(conn)
    except sqlite3.DatabaseError as e:
        if isinstance(e, sqlite3.OperationalError):  # locked, read-only, disk full: as is
            raise
        raise SqliteSchemaError(f"{where} is not a usable SQLite database ({e})") from e
    if marker is None:
        raise SqliteSchemaError(
            f"{where} is a SQLite database with other tables ({', '.join(sorted(tables)[:3])}"
            f"{', ...' if len(tables) > 3 else ''}), not a Valar made by valarfast; "
            "use an empty or new file"
        )
    if marker.get("schema_sha1") != _current()[1]:
        raise SqliteSchemaError(
            f"{where} holds a Valar schema made by valarfast "
            f"{marker.get('valarfast_version', '?')}, which differs from this valarfast's "
            f"({_version()}) model; rebuild it (valarfast demo --force for the sandbox)"
        )
    return marker

"""The generated model against the real schema: every table, column, type, key and index.

Reads MariaDB's information_schema for a database loaded from testdb.sql, and for a database
made by the model's own ``create_table()``; both must agree with the model.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dbtools
import peewee
import pytest

from valarfast import guard, metamodel, model
from valarfast.errors import NotConnectedError

ROOT = Path(__file__).resolve().parent.parent
GEN = ROOT / "scripts" / "gen_model.py"


class GuardedMySQL(guard.GuardedDatabaseMixin, peewee.MySQLDatabase):
    """What the connection helper's Valar will bind; made here so this test stands alone."""


def _database(config: dict[str, Any]) -> GuardedMySQL:
    settings = dict(config)
    return GuardedMySQL(settings.pop("database"), charset="utf8mb4", **settings)


@pytest.fixture()
def bound(valar_db: dict[str, Any]) -> Iterator[GuardedMySQL]:
    """The model bound to the session database (restores the proxy after)."""
    db = _database(valar_db)
    previous = metamodel.database_proxy.obj
    metamodel.database_proxy.initialize(db)
    try:
        yield db
    finally:
        metamodel.database_proxy.initialize(previous)
        db.close()


# --- reading information_schema ----------------------------------------------------------------


def _columns(database: str) -> dict[tuple[str, str], dict[str, Any]]:
    conn = dbtools.admin_connection()
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT table_name, column_name, column_type, is_nullable, column_key, "
                "column_default, extra FROM information_schema.columns WHERE table_schema = %s",
                (database,),
            )
            rows = cur.fetchall()
    finally:
        conn.close()
    return {
        (r[0], r[1]): {
            "type": r[2].lower(),
            "nullable": r[3] == "YES",
            "key": r[4],
            "default": r[5],
            "extra": r[6].lower(),
        }
        for r in rows
    }


def _indexes(database: str) -> dict[str, Counter[tuple[tuple[str, ...], bool]]]:
    """table -> multiset of (columns, unique), primary keys left out."""
    conn = dbtools.admin_connection()
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT table_name, index_name, non_unique, column_name FROM "
                "information_schema.statistics WHERE table_schema = %s AND index_name != 'PRIMARY' "
                "ORDER BY table_name, index_name, seq_in_index",
                (database,),
            )
            rows = cur.fetchall()
    finally:
        conn.close()
    grouped: dict[tuple[str, str], tuple[list[str], bool]] = {}
    for table, index, non_unique, column in rows:
        grouped.setdefault((table, index), ([], not non_unique))[0].append(column)
    out: dict[str, Counter[tuple[tuple[str, ...], bool]]] = {}
    for (table, _), (cols, unique) in grouped.items():
        out.setdefault(table, Counter())[(tuple(cols), unique)] += 1
    return out


def _foreign_keys(database: str) -> dict[tuple[str, str], tuple[str, str, str]]:
    """(table, column) -> (referenced table, referenced column, delete rule)."""
    conn = dbtools.admin_connection()
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT k.table_name, k.column_name, k.referenced_table_name, "
                "k.referenced_column_name, r.delete_rule "
                "FROM information_schema.key_column_usage k "
                "JOIN information_schema.referential_constraints r ON "
                "r.constraint_schema = k.constraint_schema "
                "AND r.constraint_name = k.constraint_name "
                "AND r.table_name = k.table_name WHERE k.table_schema = %s "
                "AND k.referenced_table_name IS NOT NULL",
                (database,),
            )
            rows = cur.fetchall()
    finally:
        conn.close()
    return {(r[0], r[1]): (r[2], r[3], r[4]) for r in rows}


def _normalize_type(column_type: str) -> str:
    # MariaDB shows display widths (smallint(5)); they mean nothing for the values
    if column_type == "tinyint(1)":  # BOOL
        return column_type
    return re.sub(r"^(tinyint|smallint|mediumint|int|bigint)\(\d+\)", r"\1", column_type)


def _expected_type(field: peewee.Field) -> str:
    """The information_schema column_type the model's field stands for."""
    base = str(field.field_type).replace(" AUTO_INCREMENT", "").lower()
    if base == "bool":
        return "tinyint(1)"
    if isinstance(field, metamodel.EnumField):
        return "enum(" + ",".join(m for m in field.get_modifiers()) + ")"
    modifiers = field.get_modifiers()
    if modifiers and not isinstance(field, peewee.ForeignKeyField):
        return f"{base}({','.join(map(str, modifiers))})"
    return base


def _expected_default(field: peewee.Field) -> str | None:
    for constraint in field.constraints or []:
        text = str(getattr(constraint, "sql", constraint))
        if text.upper().startswith("DEFAULT "):
            value = text[len("DEFAULT ") :]
            return "current_timestamp()" if value.upper() == "CURRENT_TIMESTAMP" else value
    return "NULL" if field.null else None


def _model_indexes(m: type[metamodel.BaseModel]) -> Counter[tuple[tuple[str, ...], bool]]:
    out: Counter[tuple[tuple[str, ...], bool]] = Counter()
    for f in m._meta.sorted_fields:
        if f.unique and not f.primary_key:
            out[((f.column_name,), True)] += 1
    for fields, unique in m._meta.indexes:
        out[(tuple(m._meta.combined[f].column_name for f in fields), unique)] += 1
    return out


def _without_redundant(indexes: Counter[tuple[tuple[str, ...], bool]]) -> Counter[Any]:
    """Drop plain keys on exactly the columns of another key (the model leaves those out)."""
    unique_cols = {cols for (cols, unique) in indexes if unique}
    out: Counter[Any] = Counter()
    for (cols, unique), n in indexes.items():
        if unique:
            out[(cols, unique)] += n
        elif cols not in unique_cols:
            out[(cols, unique)] = 1
    return out


def _check_database_matches_model(database: str) -> None:
    columns = _columns(database)
    tables = {t for t, _ in columns}
    assert tables == set(model.MODELS_BY_TABLE), "tables differ between the database and model"
    fks = _foreign_keys(database)
    indexes = _indexes(database)
    problems = []
    for table, m in model.MODELS_BY_TABLE.items():
        fields = {f.column_name: f for f in m._meta.sorted_fields}
        db_cols = {c for t, c in columns if t == table}
        if set(fields) != db_cols:
            problems.append(f"{table}: columns {sorted(db_cols)} vs fields {sorted(fields)}")
            continue
        for name, f in fields.items():
            info = columns[(table, name)]
            got = _normalize_type(info["type"])
            if got != _expected_type(f):
                problems.append(f"{table}.{name}: type {got} vs model {_expected_type(f)}")
            if info["nullable"] != bool(f.null):
                problems.append(f"{table}.{name}: nullable {info['nullable']} vs model {f.null}")
            if (info["key"] == "PRI") != bool(f.primary_key):
                problems.append(f"{table}.{name}: primary key mismatch")
            if f.primary_key and "auto_increment" not in info["extra"]:
                problems.append(f"{table}.{name}: not auto_increment")
            if info["default"] != _expected_default(f):
                want_default = _expected_default(f)
                problems.append(f"{table}.{name}: default {info['default']!r} vs {want_default!r}")
            fk = fks.get((table, name))
            if isinstance(f, peewee.ForeignKeyField):
                rule = f.on_delete or "RESTRICT"
                want = (f.rel_model._meta.table_name, f.rel_field.column_name, rule)
                if fk != want:
                    problems.append(f"{table}.{name}: foreign key {fk} vs model {want}")
            elif fk is not None:
                problems.append(f"{table}.{name}: foreign key {fk} missing in the model")
        if _without_redundant(indexes.get(table, Counter())) != _model_indexes(m):
            problems.append(
                f"{table}: indexes {sorted(indexes.get(table, Counter()))} vs model "
                f"{sorted(_model_indexes(m))}"
            )
    assert not problems, "\n".join(problems)


# --- tests ---------------------------------------------------------------------------------------


def test_regenerating_gives_the_same_file() -> None:
    out = subprocess.run(
        [sys.executable, str(GEN), "--check"], capture_output=True, text=True, cwd=ROOT
    )
    assert out.returncode == 0, out.stderr
    sys.path.insert(0, str(GEN.parent))
    try:
        import gen_model
    finally:
        sys.path.remove(str(GEN.parent))
    assert gen_model.generate() == (ROOT / "valarfast" / "model.py").read_text(encoding="utf-8")
    text = (ROOT / "valarfast" / "model.py").read_text(encoding="utf-8")
    assert "GENERATED by scripts/gen_model.py from tests/resources/testdb.sql" in text


def test_57_tables_and_valarpy_class_names() -> None:
    assert len(model.MODELS_BY_TABLE) == 57
    for table, m in model.MODELS_BY_TABLE.items():
        assert m.__name__ == "".join(p.capitalize() for p in table.split("_"))
        assert m._meta.table_name == table
        assert getattr(model, m.__name__) is m
        assert m.__name__ in model.__all__
    for name in ("Refs", "Users", "Runs", "Wells", "WellFeatures", "StimulusFrames", "SensorData",
                 "AssayPositions", "ControlTypes", "Stimuli", "Rois"):
        assert issubclass(getattr(model, name), metamodel.BaseModel)


def test_foreign_key_fields_drop_id_and_backrefs_do_not_clash() -> None:
    assert model.Batches.supplier.column_name == "supplier_id"
    assert model.WellFeatures.well.rel_model is model.Wells
    assert model.WellFeatures.type.rel_model is model.Features
    assert model.Locations.part_of.rel_model is model.Locations  # self-reference kept
    assert model.Locations.part_of.on_delete == "SET NULL"
    assert model.Wells.run.on_delete == "CASCADE"
    assert model.MandosObjectTags.object.column_name == "object"
    seen: dict[type, set[str]] = {}
    for m in model.MODELS_BY_TABLE.values():
        for f in m._meta.sorted_fields:
            if isinstance(f, peewee.ForeignKeyField):
                names = seen.setdefault(f.rel_model, set())
                assert f.backref not in names, f"{m.__name__}.{f.name}: backref {f.backref} clashes"
                names.add(f.backref)
                assert f.backref not in f.rel_model._meta.fields
                accessor = getattr(f.rel_model, f.backref)
                assert accessor.field is f, f"{f.backref} on {f.rel_model.__name__} is overwritten"


def test_field_names_do_not_shadow_model_attributes() -> None:
    for m in model.MODELS_BY_TABLE.values():
        for f in m._meta.sorted_fields:
            if f.name == "id":
                continue
            for base in (metamodel.BaseModel, peewee.Model):
                assert not hasattr(base, f.name), f"{m.__name__}.{f.name} shadows {base.__name__}"


def test_loaded_schema_matches_the_model(valar_db: dict[str, Any]) -> None:
    _check_database_matches_model(valar_db["database"])


def test_create_table_makes_the_same_schema(mariadb: dict[str, Any]) -> None:
    name = f"vf_test_ct_{__import__('secrets').token_hex(4)}"
    conn = dbtools.admin_connection()
    with conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{name}` COLLATE utf8mb4_unicode_520_ci")
    conn.close()
    db = GuardedMySQL(name, charset="utf8mb4", **dbtools.server_settings())
    previous = metamodel.database_proxy.obj
    try:
        metamodel.database_proxy.initialize(db)
        with guard.writes_enabled():
            db.create_tables(list(model.MODELS_BY_TABLE.values()))
        _check_database_matches_model(name)
    finally:
        metamodel.database_proxy.initialize(previous)
        db.close()
        dbtools.drop_database(name)


def test_every_model_selects(bound: GuardedMySQL) -> None:
    for m in model.MODELS_BY_TABLE.values():
        rows = list(m.select().limit(2))
        assert all(isinstance(r, m) for r in rows)
        assert m.select().count() == len(list(m.select()))
    assert model.Refs.get_by_id(4).name == "ref_four"


def test_query_without_connection_says_how_to_connect() -> None:
    previous = metamodel.database_proxy.obj
    metamodel.database_proxy.initialize(None)
    try:
        for call in (
            lambda: model.Refs.select().count(),
            lambda: list(model.Runs.select()),
            lambda: model.Refs.fetch(4),
            lambda: model.Refs.fetch_all(["ref_four"]),
            lambda: metamodel.database_proxy.execute_sql("SELECT 1"),
            lambda: metamodel.database_proxy.atomic().__enter__(),
            model.atomic,
            model.rolling_back,
        ):
            how = r"valarfast\.opened\(\).*Valar\(config\)\.open\(\)"
            with pytest.raises(NotConnectedError, match=how):
                call()
        assert not metamodel.database_proxy.is_initialized
        assert not hasattr(metamodel.database_proxy, "__wrapped__")  # dunders stay AttributeError
    finally:
        metamodel.database_proxy.initialize(previous)


def test_model_imports_in_a_fresh_interpreter_without_a_server() -> None:
    code = (
        "import valarfast.model as m, valarfast.metamodel as mm\n"
        "assert m.conn is None and mm.database_proxy.obj is None\n"
        "try:\n    m.Runs.select().count()\nexcept m.NotConnectedError as e:\n    print('ok', e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ok no open connection")


def test_exceptions_are_exported_everywhere() -> None:
    import valarfast
    from valarfast import errors

    for name in ("ValarLookupError", "ValarTableTypeError", "UnsupportedOperationError",
                 "WriteNotEnabledError"):
        cls = getattr(errors, name)
        assert getattr(valarfast, name) is cls
        assert getattr(model, name) is cls
        assert getattr(metamodel, name) is cls


def test_sstring_and_data() -> None:
    assert model.ControlTypes(id=1).sstring == "ct1"
    assert model.Refs(id=4).sstring == "ref.4"
    assert model.Stimuli(id=7).sstring == "stim.7"
    assert model.Rois(id=3).sstring == "roi.3"
    assert model.WellFeatures(id=9).sstring == "wf9"
    assert model.Runs(id=2).sstring == "r2"
    w = model.Wells(id=5, run=3, well_index=1)
    assert w.get_data()["run"] == 3 and w._data == w.get_data()
    # valarpy semantics: only the values the row holds (n has a default), not None for the rest
    assert set(w.get_data()) == {"id", "run", "well_index", "n"}


def test_descriptions() -> None:
    desc = {d["name"]: d for d in model.Sensors.get_desc_list()}
    assert desc["id"]["primary"] and desc["id"]["type"] == "AUTO"  # valarpy's (peewee's) names
    assert desc["name"]["unique"] and desc["name"]["type"] == "VARCHAR"
    assert desc["data_type"]["choices"][-1] == "other" and not desc["data_type"]["nullable"]
    assert desc["blob_type"]["nullable"]
    wf = {d["name"]: d for d in model.WellFeatures.get_desc_list()}
    assert wf["floats"]["type"] == "BLOB" and wf["sha1"]["type"] == "BINARY"
    assert wf["well"]["type"] == "INT" and wf["well"]["constraints"] == 0
    # the exact MySQL types and constraint text are in get_schema
    wf_schema = model.WellFeatures.get_schema().splitlines()
    assert "floats LONGBLOB NOT NULL" in wf_schema and "sha1 BINARY(40) NOT NULL" in wf_schema
    assert any(
        line.startswith("well_id MEDIUMINT UNSIGNED")
        and "REFERENCES wells (id) ON DELETE CASCADE" in line
        for line in wf_schema
    )
    sensors_id = model.Sensors.get_schema().splitlines()[0]
    assert sensors_id.startswith("id TINYINT UNSIGNED AUTO_INCREMENT")
    schema = model.Runs.get_schema().splitlines()
    assert len(schema) == len(model.Runs._meta.sorted_fields)
    assert "tag VARCHAR(100) NOT NULL UNIQUE DEFAULT ''" in schema
    frame = model.Sensors.get_desc()
    import pandas as pd

    assert isinstance(frame, pd.DataFrame) and isinstance(frame, metamodel.TableDescriptionFrame)
    assert list(frame["name"]) == [d["name"] for d in model.Sensors.get_desc_list()]
    assert model.Runs.get_indexing_cols() == ["name", "tag"]
    assert model.Refs.get_indexing_cols() == ["name"]
    assert model.Wells.get_indexing_cols() == []


def test_get_desc_without_pandas_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    metamodel._table_description_frame.cache_clear()
    monkeypatch.setitem(sys.modules, "pandas", None)  # what an absent package looks like
    try:
        with pytest.raises(ImportError, match=r"pip install valarfast\[pandas\]"):
            model.Refs.get_desc()
        assert model.Refs.get_desc_list()  # the rest works without pandas
    finally:
        metamodel._table_description_frame.cache_clear()


def test_enum_field_ddl_and_sqlite_mapping() -> None:
    db = peewee.SqliteDatabase(":memory:", field_types=metamodel.SQLITE_AFFINITY)
    ctx = db.get_sql_context()
    assert ctx.sql(model.Sensors.data_type.ddl_datatype(ctx)).query()[0] == "TEXT"
    mysql = peewee.MySQLDatabase(None)
    ctx = mysql.get_sql_context()
    sql = ctx.sql(model.PlateTypes.opacity.ddl_datatype(ctx)).query()[0]
    assert sql == "ENUM('opaque', 'transparent')"
    models = list(model.MODELS_BY_TABLE.values())
    with guard.writes_enabled(), db.bind_ctx(models):  # the model builds on SQLite that way
        db.create_tables(models)
    assert len(db.get_tables()) == 57
    used = {str(f.field_type) for m in models for f in m._meta.sorted_fields}
    assert used <= set(metamodel.SQLITE_AFFINITY), used - set(metamodel.SQLITE_AFFINITY)

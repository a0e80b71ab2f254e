"""valarpy 3 code keeps working under ``import valarfast as valarpy``: the gaps found by running
valarpy's own test suite (renamed) against valarfast, each checked here on a real MariaDB.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import valarfast as valarpy
from valarfast import guard
from valarfast.errors import NotConnectedError, UnsupportedOperationError, WriteNotEnabledError


@pytest.fixture()
def model(valar_db: dict[str, Any]) -> Iterator[ModuleType]:
    with valarpy.opened(valar_db) as m:
        yield m


@pytest.fixture()
def config_file(valar_db: dict[str, Any], tmp_path: Path) -> Path:
    path = tmp_path / "connection.json"
    path.write_text(json.dumps(valar_db), encoding="utf-8")
    return path


# --- Valar.singleton ---------------------------------------------------------------------------


def test_singleton_builds_an_unopened_valar_that_opens_as_a_context(config_file: Path) -> None:
    v = valarpy.Valar.singleton(config_file)
    assert isinstance(v, valarpy.Valar) and not v.is_open
    with v as same:
        assert same is v and v.is_open
        from valarfast.model import Refs

        assert [r.name for r in Refs.select()] == ["ref_four"]
    assert not v.is_open
    from valarfast import model as m

    assert m.conn is None


def test_singleton_checks_the_config_like_the_constructor(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        valarpy.Valar.singleton(tmp_path / "nothing-here.json")
    with pytest.raises(ValueError, match="pasword"):
        valarpy.Valar.singleton({"database": "valar", "pasword": "x"})


# --- field order ------------------------------------------------------------------------------


def test_fields_come_primary_key_first_then_by_column_name(model: ModuleType) -> None:
    cursor = model.conn.database.execute_sql(
        "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = %s",
        (model.conn.settings.database,),
    )
    in_db: dict[str, set[str]] = {}
    for table_name, column_name in cursor.fetchall():
        in_db.setdefault(table_name, set()).add(column_name)
    tables = [
        c for c in vars(model).values()
        if isinstance(c, type) and issubclass(c, model.BaseModel) and c is not model.BaseModel
    ]  # fmt: skip
    assert len(tables) >= 57
    for table in tables:
        columns = [f.column_name for f in table._meta.sorted_fields]
        pk = [f.column_name for f in table._meta.sorted_fields if f.primary_key]
        assert columns[: len(pk)] == pk, table.__name__
        assert columns[len(pk) :] == sorted(columns[len(pk) :]), table.__name__
        assert set(columns) == in_db[table._meta.table_name], table.__name__  # none lost


def test_tuples_come_back_in_valarpy_column_order(model: ModuleType) -> None:
    names = [d["name"] for d in model.Features.get_desc_list()]
    assert names == ["id", "created", "data_type", "description", "dimensions", "name"]
    row = model.Refs.select().where(model.Refs.name == "ref_four").tuples().get()
    ref_names = [f.name for f in model.Refs._meta.sorted_fields]
    assert ref_names[0] == "id" and ref_names[1:] == sorted(ref_names[1:])
    assert row[ref_names.index("id")] == 4 and row[ref_names.index("name")] == "ref_four"


# --- get_data ------------------------------------------------------------------------------


def test_get_data_of_a_new_row_holds_only_what_was_given_or_defaulted() -> None:
    from valarfast.model import Features, Refs

    assert Refs(id=3, name="three").get_data() == {"id": 3, "name": "three"}
    assert Refs().get_data() == {}
    # a column default declared in the model counts as given, as in peewee
    assert Features(name="x").get_data() == {"name": "x", "data_type": "float"}


def test_get_data_of_a_fetched_row_holds_every_column(model: ModuleType) -> None:
    ref = model.Refs.fetch("ref_four")
    data = ref.get_data()
    assert set(data) == {f.name for f in model.Refs._meta.sorted_fields}
    assert data["id"] == ref.id and data["name"] == "ref_four" and data == ref._data
    data["name"] = "changed"  # a copy: the row is untouched
    assert ref.name == "ref_four"


# --- descriptions -------------------------------------------------------------------------


def test_desc_list_uses_valarpy_type_names_and_constraint_counts() -> None:
    from valarfast.model import Features, WellFeatures

    first = Features.get_desc_list()[0]
    assert first == {
        "name": "id",
        "type": "AUTO",
        "nullable": False,
        "choices": None,
        "primary": True,
        "unique": False,
        "constraints": 0,
    }
    by_name = {d["name"]: d for d in Features.get_desc_list()}
    assert by_name["name"]["type"] == "VARCHAR" and by_name["name"]["unique"]
    assert by_name["data_type"]["type"] == "ENUM" and "float" in by_name["data_type"]["choices"]
    assert by_name["created"]["constraints"] == 1  # DEFAULT CURRENT_TIMESTAMP
    wf = {d["name"]: d for d in WellFeatures.get_desc_list()}
    assert wf["well"]["type"] == "INT" and wf["sha1"]["type"] == "BINARY"
    assert all(isinstance(d["constraints"], int) for d in wf.values())


def test_get_desc_frame_and_schema_lines() -> None:
    from valarfast.model import Features

    frame = Features.get_desc()
    assert list(frame.columns) == [
        "name", "type", "nullable", "choices", "primary", "unique", "constraints",
    ]  # fmt: skip
    assert list(frame["name"]) == [d["name"] for d in Features.get_desc_list()]
    schema = Features.get_schema()
    assert Features.get_schema_lines() == schema  # the older valarpy name
    lines = schema.split("\n")
    assert len(lines) == len(Features._meta.sorted_fields)
    assert lines[0] == "id TINYINT UNSIGNED AUTO_INCREMENT NOT NULL PRIMARY KEY"


# --- the rest of valarpy's tested flow, once end to end ------------------------------------------


def test_valarpy_style_session(
    config_file: Path, fresh_valar_db: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("VALARPY_CONFIG", raising=False)
    with pytest.raises(LookupError):
        valarpy.Valar()
    monkeypatch.setenv("VALARPY_CONFIG", str(config_file))
    with valarpy.Valar() as v:
        from valarfast.model import Refs

        assert len(list(Refs)) == 1
        v.reconnect()
        assert len(list(Refs.select())) == 1
    with valarpy.opened(fresh_valar_db) as m:
        assert not guard.is_write_enabled()
        with pytest.raises(WriteNotEnabledError):
            m.Refs.create(name="ref_five")
        m.conn.backend.enable_write()
        try:
            m.Refs.create(name="ref_five")
        finally:
            m.conn.backend.disable_write()
        assert sorted(r.name for r in m.Refs.select()) == ["ref_five", "ref_four"]
        for refused in (m.Refs.truncate_table, m.Refs.drop_table):
            with pytest.raises(UnsupportedOperationError):
                refused()
        assert m.Refs.select().count() == 2
    with pytest.raises(NotConnectedError, match="open one"):
        list(m.Refs.select())  # closed: a clear error, never a stale connection

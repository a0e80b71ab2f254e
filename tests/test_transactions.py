"""atomic() and rolling_back(): commit, rollback, savepoints, decorators, against MariaDB."""

from __future__ import annotations

from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest

from valarfast import guard
from valarfast.connection import opened


@pytest.fixture(scope="module")
def model(mariadb: dict[str, Any]) -> Iterator[ModuleType]:
    import dbtools

    name = dbtools.create_valar_database()
    try:
        with opened(dbtools.config_for(name)) as m, guard.writes_enabled():
            yield m
    finally:
        dbtools.drop_database(name)


@pytest.fixture(autouse=True)
def clean(model: ModuleType) -> Iterator[None]:
    yield
    model.Refs.delete().where(model.Refs.name != "ref_four").execute()


def names(model: ModuleType) -> list[str]:
    return sorted(r.name for r in model.Refs.select() if r.name != "ref_four")


def other_session_names(model: ModuleType) -> list[str]:
    """What a second connection sees (i.e. what is committed)."""
    import dbtools

    conn = dbtools.admin_connection(model.conn.settings.database)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT name FROM refs WHERE name <> 'ref_four' ORDER BY name")
            return [r[0] for r in cur.fetchall()]
    finally:
        conn.close()


def test_atomic_commits(model: ModuleType) -> None:
    with model.atomic():
        model.Refs.create(name="t1")
        assert other_session_names(model) == []  # not yet committed
    assert other_session_names(model) == ["t1"]


def test_atomic_rolls_back_on_exception(model: ModuleType) -> None:
    with pytest.raises(RuntimeError, match="boom"), model.atomic():
        model.Refs.create(name="t1")
        raise RuntimeError("boom")
    assert names(model) == []


def test_nested_savepoint_rolls_back_only_inner(model: ModuleType) -> None:
    with model.atomic():
        model.Refs.create(name="outer")
        with pytest.raises(KeyError), model.atomic():
            model.Refs.create(name="inner")
            raise KeyError("x")
        model.Refs.create(name="after")
    assert names(model) == ["after", "outer"]


def test_yielded_commit_and_rollback(model: ModuleType) -> None:
    with model.atomic() as txn:
        model.Refs.create(name="kept")
        txn.commit()
        assert other_session_names(model) == ["kept"]
        model.Refs.create(name="dropped")
        txn.rollback()
    assert names(model) == ["kept"]
    with model.atomic(), model.atomic() as sp:
        model.Refs.create(name="sp")
        sp.rollback()
    assert names(model) == ["kept"]


def test_rolling_back_always_rolls_back(model: ModuleType) -> None:
    with model.rolling_back() as txn:
        model.Refs.create(name="r1")
        assert names(model) == ["r1"]
        assert hasattr(txn, "commit") and hasattr(txn, "rollback")
    assert names(model) == []
    assert other_session_names(model) == []
    with pytest.raises(ValueError), model.rolling_back():
        model.Refs.create(name="r2")
        raise ValueError
    assert names(model) == []


def test_rolling_back_nested_in_atomic(model: ModuleType) -> None:
    with model.atomic():
        model.Refs.create(name="outer")
        with model.rolling_back():
            model.Refs.create(name="inner")
        assert names(model) == ["outer"]
    assert other_session_names(model) == ["outer"]


def test_decorators(model: ModuleType) -> None:
    @model.conn.atomic()
    def make(name: str, fail: bool = False) -> str:
        model.Refs.create(name=name)
        if fail:
            raise RuntimeError(name)
        return name

    @model.conn.rolling_back()
    def try_out(name: str) -> list[str]:
        model.Refs.create(name=name)
        return names(model)

    assert make("d1") == "d1"
    assert make("d2") == "d2"  # reusable
    with pytest.raises(RuntimeError):
        make("d3", fail=True)
    assert try_out("d4") == ["d1", "d2", "d4"]
    assert try_out("d5") == ["d1", "d2", "d5"]
    assert names(model) == ["d1", "d2"]


def test_model_functions_delegate(model: ModuleType) -> None:
    assert not model.conn.database.in_transaction()
    with model.atomic():
        assert model.conn.database.in_transaction()
    with model.rolling_back():
        model.Refs.create(name="m")
    assert names(model) == []

"""The write guard: the flag, the SQL classifier, and on a real server that nothing is sent.

"Nothing is sent" is checked with the session's own status counters (``Questions`` and every
``Com_*``), read on the same connection before and after each refused call, and with the rows.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import dbtools
import peewee
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from valarfast import guard, metamodel, model
from valarfast.errors import UnsupportedOperationError, WriteNotEnabledError

# --- the flag ------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _writes_off() -> Iterator[None]:
    guard.disable_write()
    yield
    guard.disable_write()


def test_flag_defaults_off_and_switches() -> None:
    assert not guard.is_write_enabled()
    guard.enable_write()
    assert guard.is_write_enabled()
    guard.disable_write()
    assert not guard.is_write_enabled()


def test_scoped_form_restores_the_previous_state() -> None:
    with guard.writes_enabled():
        assert guard.is_write_enabled()
        with guard.writes_enabled():
            assert guard.is_write_enabled()
        assert guard.is_write_enabled()
    assert not guard.is_write_enabled()
    guard.enable_write()
    with guard.writes_enabled():
        pass
    assert guard.is_write_enabled()  # was on before: stays on
    guard.disable_write()
    with pytest.raises(RuntimeError), guard.writes_enabled():
        raise RuntimeError("boom")
    assert not guard.is_write_enabled()  # restored on an exception too


def test_scoped_form_as_decorator() -> None:
    @guard.writes_enabled()
    def f() -> bool:
        return guard.is_write_enabled()

    assert f() and f()
    assert not guard.is_write_enabled()


def test_flag_is_process_wide() -> None:
    seen: list[bool] = []
    guard.enable_write()
    t = threading.Thread(target=lambda: seen.append(guard.is_write_enabled()))
    t.start()
    t.join()
    assert seen == [True]


# --- the classifier ------------------------------------------------------------------------------

READS = [
    "SELECT 1",
    "select * from refs where name = 'DELETE FROM refs'",
    "  \n\tSELECT 1",
    "/* DELETE */ SELECT 1",
    "-- UPDATE x\nSELECT 1",
    "# comment\nSELECT 1",
    "SELECT 1;",
    "SELECT 1; SELECT 2",
    "(SELECT 1) UNION (SELECT 2)",
    "SELECT * FROM refs FOR UPDATE",
    "SELECT * FROM refs LOCK IN SHARE MODE",
    "SELECT 1 INTO @x",
    "SELECT `delete` FROM t",
    'SELECT "it\'s; DELETE FROM refs"',
    "SELECT 'a''; DELETE FROM refs; --'",
    "SELECT 'a\\'; DELETE FROM refs'",
    "WITH x AS (SELECT 1) SELECT * FROM x",
    "WITH RECURSIVE x (n) AS (SELECT 1 UNION SELECT n + 1 FROM x WHERE n < 3) SELECT * FROM x",
    "with a as (select 1), b as (select 2) select * from a, b",
    "SHOW TABLES",
    "SHOW SESSION STATUS LIKE 'Com_%'",
    "DESCRIBE refs",
    "DESC refs",
    "EXPLAIN SELECT * FROM refs",
    "EXPLAIN DELETE FROM refs",
    "BEGIN",
    "START TRANSACTION",
    "START TRANSACTION READ ONLY",
    "COMMIT",
    "ROLLBACK",
    "ROLLBACK TO SAVEPOINT `s1`",
    "SAVEPOINT `s1`;",
    "RELEASE SAVEPOINT `s1`;",
    "SET autocommit = 0",
    "SET SESSION sql_mode = 'STRICT_ALL_TABLES'",
    "SET @@session.time_zone = '+00:00'",
    "SET NAMES utf8mb4",
    "SET TRANSACTION ISOLATION LEVEL READ COMMITTED",
    "SET @x = 1",
    "PRAGMA table_info(\"refs\")",
    b"SELECT 1",
]

WRITES = [
    "DELETE FROM refs",
    "delete from refs",
    "  /* SELECT */ DELETE FROM refs",
    "-- SELECT\nUPDATE refs SET name = 'x'",
    "INSERT INTO refs (name) VALUES ('x')",
    "REPLACE INTO refs (id, name) VALUES (4, 'x')",
    "DROP TABLE refs",
    "TRUNCATE refs",
    "TRUNCATE TABLE refs",
    "ALTER TABLE refs ADD COLUMN x INT",
    "CREATE TABLE x (id INT)",
    "RENAME TABLE refs TO x",
    "GRANT ALL ON *.* TO x",
    "LOAD DATA INFILE '/tmp/x' INTO TABLE refs",
    "CALL some_procedure()",
    "DO sleep(1)",
    "HANDLER refs OPEN",
    "LOCK TABLES refs WRITE",
    "ANALYZE TABLE refs",
    "OPTIMIZE TABLE refs",
    "FLUSH TABLES",
    "KILL 1",
    "USE mysql",
    "SELECT 1; DELETE FROM refs",
    "SELECT 1;DELETE FROM refs",
    "SELECT * FROM refs INTO OUTFILE '/tmp/x'",
    "SELECT * FROM refs INTO DUMPFILE '/tmp/x'",
    "WITH x AS (SELECT 1) DELETE FROM refs",
    "WITH x AS (SELECT 1) UPDATE refs SET name = 'a'",
    "WITH x AS (SELECT 1) INSERT INTO refs (name) SELECT 'a'",
    "WITH x AS (SELECT 1)",
    "EXPLAIN ANALYZE DELETE FROM refs",
    "ANALYZE DELETE FROM refs",
    "/*!40000 DELETE FROM refs */",
    "/*M!100000 DELETE FROM refs */",
    "SELECT 1 /*! ; DELETE FROM refs */",
    "SET GLOBAL max_connections = 1",
    "SET @@global.max_connections = 1",
    "SET PASSWORD = PASSWORD('x')",
    "SET ROLE admin",
    "SET DEFAULT ROLE admin FOR x",
    "SET STATEMENT max_statement_time = 1 FOR DELETE FROM refs",
    "SELECT 'unterminated",
    "SELECT 1 /* unterminated",
    "PRAGMA journal_mode = WAL",
    "",
    "   ",
    "-- only a comment",
    "RELEASE x",
    "START SLAVE",
    "XA START 'x'",
    "(DELETE FROM refs)",
    "`refs`",
]


@pytest.mark.parametrize("sql", READS)
def test_reads_pass(sql: str | bytes) -> None:
    assert guard.is_read_sql(sql)
    guard.check_sql(sql)  # does not raise with writing off


@pytest.mark.parametrize("sql", WRITES)
def test_writes_are_refused(sql: str) -> None:
    assert not guard.is_read_sql(sql)
    with pytest.raises(WriteNotEnabledError, match="writing is disabled"):
        guard.check_sql(sql)
    with guard.writes_enabled():
        guard.check_sql(sql)  # allowed while writing is on


def test_non_string_is_not_a_read() -> None:
    assert not guard.is_read_sql(None)  # type: ignore[arg-type]
    assert not guard.is_read_sql(42)  # type: ignore[arg-type]


_WRITE_STATEMENTS = st.sampled_from(
    ["DELETE FROM refs", "UPDATE refs SET name='x'", "INSERT INTO refs VALUES (1)",
     "DROP TABLE refs", "TRUNCATE refs", "ALTER TABLE refs DROP name"]
)
_NOISE = st.lists(
    st.sampled_from(["", " ", "\n", "\t", "/* x */", "/* SELECT 1; */", "-- SELECT\n", "# c\n"]),
    max_size=4,
).map("".join)


@settings(max_examples=150, deadline=None)
@given(
    reads=st.lists(st.sampled_from(["SELECT 1", "SHOW TABLES", "BEGIN", "SELECT ';'"]), max_size=3),
    write=_WRITE_STATEMENTS,
    noise=_NOISE,
    position=st.integers(min_value=0, max_value=3),
    upper=st.booleans(),
)
def test_a_write_anywhere_in_a_batch_is_refused(
    reads: list[str], write: str, noise: str, position: int, upper: bool
) -> None:
    statements = list(reads)
    statements.insert(min(position, len(statements)), noise + (write.upper() if upper else write))
    assert not guard.is_read_sql(";".join(statements))


@settings(max_examples=100, deadline=None)
@given(text=st.text(max_size=40))
def test_string_literals_never_make_a_write(text: str) -> None:
    literal = "'" + text.replace("\\", "\\\\").replace("'", "''") + "'"
    assert guard.is_read_sql(f"SELECT {literal}")
    assert not guard.is_read_sql(f"DELETE FROM refs WHERE name = {literal}")


# --- on the server -------------------------------------------------------------------------------


class GuardedMySQL(guard.GuardedDatabaseMixin, peewee.MySQLDatabase):
    """What the connection helper's Valar binds; made here so this test stands alone."""


@pytest.fixture(scope="module")
def db(mariadb: dict[str, Any]) -> Iterator[GuardedMySQL]:
    """A private database for this module (its tests enable writing), bound to the model."""
    with dbtools.bound_database(GuardedMySQL, seed=_seed) as database:
        yield database


def _seed() -> None:
    model.Suppliers.create(name="acme")


def _status(db: GuardedMySQL) -> dict[str, int]:
    rows = db.execute_sql(
        "SHOW SESSION STATUS WHERE Variable_name = 'Questions' OR Variable_name LIKE 'Com\\_%%'"
    ).fetchall()
    return {k: int(v) for k, v in rows if str(v).isdigit()}


def _rows(db: GuardedMySQL) -> tuple[Any, ...]:
    return (
        db.execute_sql("SELECT id, name FROM refs ORDER BY id").fetchall(),
        db.execute_sql("SELECT id, name FROM suppliers ORDER BY id").fetchall(),
    )


def _assert_nothing_sent(db: GuardedMySQL, call: Callable[[], Any], error: type[Exception]) -> None:
    before_rows = _rows(db)
    before = _status(db)
    with pytest.raises(error):
        call()
    after = _status(db)
    changed = {k: (before[k], after[k]) for k in before if before[k] != after.get(k)}
    # the only statement the server saw since the first SHOW is the second SHOW
    show, questions = before["Com_show_status"], before["Questions"]
    assert changed == {"Com_show_status": (show, show + 1), "Questions": (questions, questions + 1)}
    assert _rows(db) == before_rows


def _ref() -> Any:
    return model.Refs.get_by_id(4)


def _renamed(ref: Any) -> Any:
    ref.name = "changed"
    return ref


# each takes the row Refs 4, fetched before the counters are read (that read is allowed)
ORM_WRITES: dict[str, Callable[[Any], Any]] = {
    "save": lambda ref: _renamed(ref).save(),
    "save_new": lambda ref: model.Refs(name="new").save(),
    "delete_instance": lambda ref: ref.delete_instance(),
    "delete_instance_recursive": lambda ref: ref.delete_instance(recursive=True),
    "create": lambda ref: model.Refs.create(name="new"),
    "insert": lambda ref: model.Refs.insert(name="new"),
    "insert_execute": lambda ref: model.Refs.insert(name="new").execute(),
    "insert_many": lambda ref: model.Refs.insert_many([{"name": "a"}, {"name": "b"}]).execute(),
    "insert_from": lambda ref: model.Refs.insert_from(
        model.Suppliers.select(model.Suppliers.name), [model.Refs.name]
    ).execute(),
    "replace": lambda ref: model.Refs.replace(id=4, name="x").execute(),
    "replace_many": lambda ref: model.Refs.replace_many([{"id": 4, "name": "x"}]).execute(),
    "update": lambda ref: model.Refs.update(name="x").execute(),
    "update_where": lambda ref: model.Refs.update(name="x").where(model.Refs.id == 4).execute(),
    "delete": lambda ref: model.Refs.delete().execute(),
    "bulk_create": lambda ref: model.Refs.bulk_create([model.Refs(name="a"), model.Refs(name="b")]),
    "bulk_update": lambda ref: model.Refs.bulk_update([_renamed(ref)], fields=[model.Refs.name]),
    "set_by_id": lambda ref: model.Refs.set_by_id(4, {"name": "x"}),
    "set_by_id_insert": lambda ref: model.Refs.set_by_id(None, {"name": "x"}),
    "delete_by_id": lambda ref: model.Refs.delete_by_id(4),
    "get_or_create_existing": lambda ref: model.Refs.get_or_create(name="ref_four"),
    "get_or_create_new": lambda ref: model.Refs.get_or_create(name="brand new"),
    "suppliers_update": lambda ref: model.Suppliers.update(description="x").execute(),
}


@pytest.mark.parametrize("method", sorted(ORM_WRITES))
def test_orm_write_refused_and_nothing_sent(db: GuardedMySQL, method: str) -> None:
    ref = _ref()
    _assert_nothing_sent(db, lambda: ORM_WRITES[method](ref), WriteNotEnabledError)


@pytest.mark.parametrize("method", sorted(ORM_WRITES))
def test_orm_write_works_when_enabled(db: GuardedMySQL, method: str) -> None:
    """The overrides pass their arguments through: each write runs (then is rolled back)."""
    before = _rows(db)
    counters = ("Com_insert", "Com_insert_select", "Com_update", "Com_delete", "Com_replace")
    with guard.writes_enabled(), db.atomic() as transaction:
        ref = _ref()
        status = _status(db)
        ORM_WRITES[method](ref)
        writes = sum(_status(db)[k] - status[k] for k in counters)
        transaction.rollback()
    # building an insert runs nothing; get_or_create finds the existing row
    assert (writes > 0) == (method not in ("insert", "get_or_create_existing"))
    assert _rows(db) == before


@pytest.mark.parametrize(
    "sql",
    [
        "DELETE FROM refs",
        "UPDATE refs SET name = 'x'",
        "INSERT INTO refs (name) VALUES ('x')",
        "DROP TABLE refs",
        "TRUNCATE refs",
        "SELECT 1; DELETE FROM refs",
        "/*!40000 DELETE FROM refs */",
        "WITH x AS (SELECT 1) DELETE FROM refs",
        "SELECT * FROM refs INTO OUTFILE '/tmp/vf_guard_test'",
    ],
)
def test_raw_sql_write_refused_and_nothing_sent(db: GuardedMySQL, sql: str) -> None:
    _assert_nothing_sent(db, lambda: db.execute_sql(sql), WriteNotEnabledError)
    proxy = metamodel.database_proxy
    _assert_nothing_sent(db, lambda: proxy.execute_sql(sql), WriteNotEnabledError)


def test_query_built_while_enabled_is_refused_when_run_after(db: GuardedMySQL) -> None:
    with guard.writes_enabled():
        query = model.Refs.update(name="late").where(model.Refs.id == 4)
    _assert_nothing_sent(db, query.execute, WriteNotEnabledError)


@pytest.mark.parametrize(
    "call",
    [
        lambda: model.Refs.drop_table(),
        lambda: model.Refs.truncate_table(),
        lambda: model.Refs.raw("SELECT * FROM refs"),
        lambda: model.Refs._meta.database.drop_tables([model.Refs]),
    ],
    ids=["drop_table", "truncate_table", "raw", "database.drop_tables"],
)
def test_always_unsupported_even_with_writing_on(db: GuardedMySQL, call: Callable[[], Any]) -> None:
    _assert_nothing_sent(db, call, UnsupportedOperationError)
    with guard.writes_enabled():
        _assert_nothing_sent(db, call, UnsupportedOperationError)


def test_instance_delete_never_builds_a_table_delete(db: GuardedMySQL) -> None:
    ref = _ref()
    _assert_nothing_sent(db, lambda: ref.delete(), TypeError)
    with guard.writes_enabled():
        _assert_nothing_sent(db, lambda: ref.delete(), TypeError)
        with pytest.raises(TypeError, match="delete_instance"):
            ref.delete()
    assert model.Refs.select().count() >= 1


def test_reads_and_transactions_pass_with_writing_off(db: GuardedMySQL) -> None:
    with db.atomic():
        with db.atomic():  # a savepoint: SAVEPOINT / RELEASE SAVEPOINT pass the guard
            assert model.Refs.fetch("ref_four").id == 4
        with pytest.raises(WriteNotEnabledError), db.atomic():
            model.Refs.update(name="x").execute()
    assert model.Refs.get_by_id(4).name == "ref_four"
    assert db.execute_sql("SHOW TABLES").fetchall()
    assert db.execute_sql("EXPLAIN SELECT * FROM refs").fetchall()


def test_writes_work_when_enabled_and_roll_back(db: GuardedMySQL) -> None:
    with guard.writes_enabled(), db.atomic() as outer:
        created = model.Refs.create(name="tmp_ref")
        with db.atomic() as inner:  # savepoint with both layers active
            model.Refs.update(description="d").where(model.Refs.id == created.id).execute()
            inner.rollback()
        assert model.Refs.get_by_id(created.id).description is None
        outer.rollback()
    assert model.Refs.get_or_none(model.Refs.name == "tmp_ref") is None


def test_values_checked_before_writing(db: GuardedMySQL) -> None:
    with guard.writes_enabled():
        with pytest.raises(ValueError, match="not one of"):
            model.Sensors.create(name="s", data_type="complex128")
        with pytest.raises(ValueError, match="longer than the column's 50"):
            model.Refs.create(name="x" * 51)
    assert model.Sensors.select().count() == 0

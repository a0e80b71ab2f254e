"""The fetch family, list_where and friends on real rows in MariaDB."""

from __future__ import annotations

import datetime
import math
from collections.abc import Iterator
from typing import Any

import dbtools
import numpy as np
import peewee
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from valarfast import guard, model
from valarfast.errors import ValarLookupError, ValarTableTypeError
from valarfast.model import Experiments, Refs, Runs, Users, Wells


class CountingMySQL(peewee.MySQLDatabase):
    """Records every statement that reaches the driver (after the guard)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sent: list[tuple[str, Any]] = []

    def execute_sql(self, sql: str, params: Any = None, *args: Any, **kwargs: Any) -> Any:
        self.sent.append((sql, params))
        return super().execute_sql(sql, params, *args, **kwargs)


class GuardedMySQL(guard.GuardedDatabaseMixin, CountingMySQL):
    """What the connection helper's Valar binds; made here so this test stands alone."""


REF_NAMES = ["ref_five", "a%b_c", "it's", "ref%", "x_y"]


@pytest.fixture(scope="module")
def db(mariadb: dict[str, Any]) -> Iterator[GuardedMySQL]:
    """A private database with a few rows (written with writing enabled), bound to the model."""
    with dbtools.bound_database(GuardedMySQL, seed=_seed) as database:
        yield database


def _seed() -> None:
    for n in REF_NAMES:
        Refs.create(name=n)
    alice = Users.create(username="alice", first_name="A", last_name="L")
    Users.create(username="bob", first_name="B", last_name="M")
    sauron = model.Saurons.create(name="S1")
    config = model.SauronConfigs.create(
        sauron=sauron, datetime_changed=datetime.datetime(2020, 1, 1), description="c"
    )
    project = model.Projects.create(name="proj", creator=alice)
    battery = model.Batteries.create(name="bat", length=10, assays_sha1=b"\x01" * 20)
    exp = Experiments.create(
        name="exp", creator=alice, project=project, battery=battery, default_acclimation_sec=1
    )
    plate = model.Plates.create(person_plated=alice)
    when = datetime.datetime(2021, 5, 6, 7, 8, 9)
    common = dict(experiment=exp, plate=plate, experimentalist=alice, sauron_config=config,
                  datetime_run=when, description="d")
    r1 = Runs.create(name="run-one", tag="tag-1", **common)
    Runs.create(name=None, tag="tag-2", **common)
    Runs.create(name="tag-1", tag="tag-3", **common)  # its name is r1's tag
    for i in range(3):
        Wells.create(run=r1, well_index=i, n=i)


@pytest.fixture()
def sent(db: GuardedMySQL) -> list[tuple[str, Any]]:
    db.sent.clear()
    return db.sent


# --- fetch / fetch_or_none -----------------------------------------------------------------------


def test_fetch_by_id_int_float_numpy(db: GuardedMySQL, sent: list[Any]) -> None:
    assert Refs.fetch(4).name == "ref_four"
    assert Refs.fetch(4.0).name == "ref_four"
    assert Refs.fetch(np.int64(4)).name == "ref_four"
    assert Refs.fetch(np.uint16(4)).name == "ref_four"
    assert Refs.fetch(np.float32(4.0)).name == "ref_four"
    assert len(sent) == 5
    assert all("4" not in sql for sql, _ in sent)  # the id travels as a parameter


def test_fetch_instance_is_returned_without_a_query(db: GuardedMySQL, sent: list[Any]) -> None:
    ref = Refs(id=12345, name="not even saved")
    assert Refs.fetch(ref) is ref
    assert Refs.fetch_or_none(ref) is ref
    assert sent == []


def test_fetch_by_unique_string(db: GuardedMySQL, sent: list[Any]) -> None:
    assert Refs.fetch("ref_four").id == 4
    assert Users.fetch("bob").username == "bob"
    assert Runs.fetch("run-one").tag == "tag-1"  # by name
    assert Runs.fetch("tag-2").name is None  # by tag
    assert Runs.fetch("tag-1").name == "run-one"  # r1's tag and r3's name: the lowest id wins
    assert all("ref_four" not in sql and "bob" not in sql for sql, _ in sent)
    assert any(params and "ref_four" in params for _, params in sent)


def test_exact_match_follows_the_collation(db: GuardedMySQL) -> None:
    # Valar's utf8mb4_unicode_520_ci: case and trailing spaces do not count (as in valarpy)
    assert Refs.fetch("REF_FOUR").id == 4
    assert Refs.fetch("ref_four ").id == 4
    assert [r.id for r in Refs.fetch_all(["REF_FOUR", "ref_four", "Ref_Five"])] == [
        4, 4, Refs.fetch("ref_five").id]


def test_misses(db: GuardedMySQL) -> None:
    assert Refs.fetch_or_none(999) is None
    assert Refs.fetch_or_none("no such ref") is None
    with pytest.raises(ValarLookupError, match=r"Refs.*refs.*'no such ref'") as e:
        Refs.fetch("no such ref")
    assert isinstance(e.value, KeyError)
    with pytest.raises(ValarLookupError, match=r"refs.*999"):
        Refs.fetch(999)
    with pytest.raises(KeyError):
        Runs.fetch("nothing", like=True)


def test_wrong_model(db: GuardedMySQL) -> None:
    user = Users.fetch("alice")
    with pytest.raises(ValarTableTypeError, match=r"Refs.*Users"):
        Refs.fetch(user)
    with pytest.raises(TypeError):  # ValarTableTypeError is a TypeError
        Refs.fetch_or_none(user)
    with pytest.raises(ValarTableTypeError):
        Refs.fetch_all([4, user])


@pytest.mark.parametrize("thing", [None, b"ref_four", [4], {"id": 4}, True, object(), 3j])
def test_wrong_types(db: GuardedMySQL, thing: Any) -> None:
    with pytest.raises(TypeError, match=r"Refs\.fetch"):
        Refs.fetch(thing)
    with pytest.raises(TypeError):
        Refs.fetch_or_none(thing)


@pytest.mark.parametrize("thing", [1.5, math.nan, math.inf])
def test_non_whole_float_ids(db: GuardedMySQL, thing: float) -> None:
    with pytest.raises(ValueError, match="not a valid id"):
        Refs.fetch(thing)


def test_like_and_regex_together_is_an_error(db: GuardedMySQL, sent: list[Any]) -> None:
    with pytest.raises(ValueError, match="not both"):
        Refs.fetch("ref", like=True, regex=True)
    assert sent == []


def test_string_on_a_table_without_text_keys(db: GuardedMySQL) -> None:
    with pytest.raises(TypeError, match="Wells has no unique text column"):
        Wells.fetch("x")
    assert Wells.fetch(Wells.select().first().id).run.name == "run-one"


def test_like_is_a_literal_substring(db: GuardedMySQL) -> None:
    assert Refs.fetch("four", like=True).name == "ref_four"
    assert Refs.fetch("FOUR", like=True).name == "ref_four"  # case follows the collation
    assert Refs.fetch("b_c", like=True).name == "a%b_c"
    assert Refs.fetch_or_none("f_ve", like=True) is None  # '_' is not a wildcard
    assert Refs.fetch_or_none("%four", like=True) is None  # '%' is not a wildcard
    assert Refs.fetch("ef%", like=True).name == "ref%"
    assert Refs.fetch("t's", like=True).name == "it's"
    assert Runs.fetch("ag-2", like=True).tag == "tag-2"


def test_regex(db: GuardedMySQL) -> None:
    assert Refs.fetch("^ref_f", regex=True).name == "ref_four"
    assert Refs.fetch("ive$", regex=True).name == "ref_five"
    assert Refs.fetch("^x.y$", regex=True).name == "x_y"
    assert Refs.fetch_or_none("^nomatch", regex=True) is None
    assert Runs.fetch("^tag-[23]$", regex=True).tag == "tag-2"


INJECTIONS = [
    "x' OR '1'='1",
    "' OR 1=1 -- ",
    "'; DELETE FROM refs; --",
    "ref_four' -- ",
    "ref_four\\' OR 1=1 #",
    "') OR ('1'='1",
    '" OR ""="',
    "1; DROP TABLE refs",
    "\\",
]


@pytest.mark.parametrize("thing", INJECTIONS)
def test_injection_strings_match_nothing_and_change_nothing(db: GuardedMySQL, thing: str) -> None:
    counts = {t: m.select().count() for t, m in (("refs", Refs), ("runs", Runs), ("users", Users))}
    status = dict(db.execute_sql("SHOW SESSION STATUS LIKE 'Com\\_%%'").fetchall())
    assert Refs.fetch_or_none(thing) is None
    assert Runs.fetch_or_none(thing) is None
    assert Refs.fetch_or_none(thing, like=True) is None
    assert Refs.fetch_all_or_none([thing, 4])[0] is None
    try:
        found = Refs.fetch_or_none(thing, regex=True)
    except peewee.DatabaseError:
        found = None  # not a valid regular expression: the server says so, nothing runs
    assert found is None or thing in ("\\",)
    after = dict(db.execute_sql("SHOW SESSION STATUS LIKE 'Com\\_%%'").fetchall())
    for key in ("Com_delete", "Com_update", "Com_insert", "Com_drop_table", "Com_delete_multi"):
        assert after[key] == status[key], key
    assert counts == {t: m.select().count() for t, m in (("refs", Refs), ("runs", Runs),
                                                        ("users", Users))}


@settings(max_examples=40, deadline=None)
@given(text=st.text(st.characters(blacklist_categories=("Cs",)), max_size=30))
def test_any_text_is_only_ever_a_value(db: GuardedMySQL, text: str) -> None:
    before = Refs.select().count(), Runs.select().count()
    found = Refs.fetch_or_none(text)
    assert found is None or found.name in ["ref_four", *REF_NAMES]
    contains = Refs.fetch_or_none(text, like=True)
    assert contains is None or contains.name in ["ref_four", *REF_NAMES]
    first, second = Runs.fetch_all_or_none([text, text])
    assert first is second  # the same row object (or None) for a duplicate
    assert (Refs.select().count(), Runs.select().count()) == before


# --- fetch_all -----------------------------------------------------------------------------------


def test_fetch_all_order_duplicates_and_misses(db: GuardedMySQL, sent: list[Any]) -> None:
    ref_five = Refs.fetch("ref_five")
    sent.clear()
    things = ["ref_five", 4, "missing", 4, ref_five, 999, "ref_four", 4.0, "ref_five"]
    got = Refs.fetch_all_or_none(things)
    assert [r.name if r else None for r in got] == [
        "ref_five", "ref_four", None, "ref_four", "ref_five", None, "ref_four", "ref_four",
        "ref_five",
    ]
    assert got[4] is ref_five
    assert len(sent) == 2  # ids and strings: two queries
    with pytest.raises(ValarLookupError, match=r"'missing', 999"):
        Refs.fetch_all(things)


def test_fetch_all_query_counts(db: GuardedMySQL, sent: list[Any]) -> None:
    refs = list(Refs.select())
    sent.clear()
    assert Refs.fetch_all(refs) == refs
    assert len(sent) == 0
    assert [r.id for r in Refs.fetch_all([4, 4, refs[1]])] == [4, 4, refs[1].id]
    assert len(sent) == 1
    sent.clear()
    assert [r.name for r in Refs.fetch_all(["ref_four", "ref_five", "ref_four"])] == [
        "ref_four", "ref_five", "ref_four"]
    assert len(sent) == 1
    sent.clear()
    assert Refs.fetch_all([]) == [] and Refs.fetch_all_or_none(iter([])) == []
    assert len(sent) == 0


def test_fetch_all_strings_over_two_columns(db: GuardedMySQL) -> None:
    got = Runs.fetch_all(["tag-3", "run-one", "tag-1", "tag-2"])
    assert [r.tag for r in got] == ["tag-3", "tag-1", "tag-1", "tag-2"]


def test_fetch_all_bad_input(db: GuardedMySQL) -> None:
    with pytest.raises(TypeError, match="list"):
        Refs.fetch_all("ref_four")
    with pytest.raises(TypeError):
        Refs.fetch_all(4)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="NoneType"):
        Refs.fetch_all([4, None])
    with pytest.raises(ValueError):
        Refs.fetch_all([4.5])


def test_fetch_all_join_fn(db: GuardedMySQL, sent: list[Any]) -> None:
    def join(query: peewee.ModelSelect) -> peewee.ModelSelect:
        return query.select_extend(Experiments).join(Experiments)

    runs = Runs.fetch_all(["run-one", 2], join_fn=join)
    assert len(sent) == 2
    assert [r.experiment.name for r in runs] == ["exp", "exp"]
    assert len(sent) == 2  # the experiments came with the runs


# --- fetch_to_query, list_where ------------------------------------------------------------------


def test_fetch_to_query(db: GuardedMySQL, sent: list[Any]) -> None:
    r1 = Runs.fetch("run-one")
    sent.clear()
    where = Runs.fetch_to_query([2, "tag-3", r1])
    assert len(sent) == 1  # only the string needed a query
    assert sorted(r.id for r in Runs.select().where(*where)) == sorted([2, 3, r1.id])
    where = Runs.fetch_to_query([Runs.tag != "tag-2", 2, r1.id])
    assert [r.id for r in Runs.select().where(*where)] == [r1.id]
    assert [r.id for r in Runs.select().where(*Runs.fetch_to_query(2))] == [2]
    assert [r.id for r in Runs.select().where(*Runs.fetch_to_query(np.array([2, 3])))] == [2, 3]
    assert [r.id for r in Runs.select().where(*Runs.fetch_to_query([]))] == []
    with pytest.raises(ValarLookupError, match="nope"):
        Runs.fetch_to_query(["nope"])
    with pytest.raises(ValarTableTypeError):
        Runs.fetch_to_query([Users.fetch("bob")])


def test_list_where(db: GuardedMySQL) -> None:
    r1 = Runs.fetch("run-one")
    assert [w.well_index for w in Wells.list_where(run=r1)] == [0, 1, 2]
    assert [w.well_index for w in Wells.list_where(Wells.n > 0, run=r1.id)] == [1, 2]
    assert [w.well_index for w in Wells.list_where(well_index=[0, 2])] == [0, 2]
    assert [w.well_index for w in Wells.list_where(well_index=np.arange(1, 3))] == [1, 2]
    assert [w.well_index for w in Wells.list_where(well_index=range(2))] == [0, 1]
    assert [r.tag for r in Runs.list_where(name=None)] == ["tag-2"]
    assert Wells.list_where(run_id=r1.id, n=1)[0].well_index == 1  # column names work too
    assert len(Refs.list_where()) == Refs.select().count()
    assert Refs.list_where(name="'; DELETE FROM refs; --") == []
    with pytest.raises(ValueError, match="Wells has no field 'colour'"):
        Wells.list_where(colour="red")


def test_get_data_of_a_fetched_row(db: GuardedMySQL, sent: list[Any]) -> None:
    well = Wells.list_where(well_index=1)[0]
    sent.clear()
    data = well.get_data()
    assert data["run"] == Runs.fetch("run-one").id and data["n"] == 1 and data["well_index"] == 1
    assert isinstance(data["created"], datetime.datetime)
    assert well._data == data
    assert well.sstring == f"w{well.id}"
    assert Refs.fetch(4).sstring == "ref.4"

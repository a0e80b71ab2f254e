"""The engine-independent contract (spec sections 3 to 6 and 10) on MariaDB and on SQLite alike.

Every test here runs twice through ``any_engine_db`` (``[mysql]`` and ``[sqlite]``) against a real
database opened with ``valarfast.opened``: the fetch family, the write guard (nothing reaches the
driver), what the database itself refuses, transactions, and the batch API on a sandbox.
References are computed here, independently: plain SQL through the driver, numpy per row.
"""

from __future__ import annotations

import datetime
import sqlite3
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import dbtools
import numpy as np
import peewee
import pytest

from valarfast import batch, guard, metamodel, sandbox
from valarfast.connection import opened
from valarfast.errors import (
    NotConnectedError,
    UnsupportedOperationError,
    ValarLookupError,
    ValarTableTypeError,
    WriteNotEnabledError,
)

REF_NAMES = ["ref_five", "a%b_c", "it's", "ref%", "x_y"]


class Ctx:
    """What the module fixture made: the model, its config, and the rows it wrote."""

    def __init__(self, model: ModuleType, config: dict[str, Any], box: sandbox.Sandbox) -> None:
        self.model = model
        self.config = config
        self.box = box
        self.engine = config.get("engine", "mysql")

    def other_connection(self, sql: str) -> list[tuple[Any, ...]]:
        """Rows of ``sql`` seen by a second, independent connection (i.e. committed data)."""
        if self.engine == "sqlite":
            conn = sqlite3.connect(self.config["database"])
            try:
                return [tuple(r) for r in conn.execute(sql).fetchall()]
            finally:
                conn.close()
        mconn = dbtools.admin_connection(self.config["database"])
        try:
            with mconn.cursor() as cur:
                cur.execute(sql)
                return [tuple(r) for r in cur.fetchall()]
        finally:
            mconn.close()


@pytest.fixture(scope="module")
def ctx(any_engine_db: dict[str, Any]) -> Iterator[Ctx]:
    with opened(any_engine_db) as model:
        with guard.writes_enabled():
            _seed(model)
        box = sandbox.fill(
            runs=3, wells_per_run=8, frames=600, seed=5, ragged=9, missing_wells=1,
            featureless_runs=1, assays=2, assay_frames=150, sensor_values=40,
        )  # fmt: skip
        yield Ctx(model, any_engine_db, box)


def _seed(model: ModuleType) -> None:
    for n in REF_NAMES:
        model.Refs.create(name=n)
    alice = model.Users.create(username="alice", first_name="A", last_name="L")
    model.Users.create(username="bob", first_name="B", last_name="M")
    sauron = model.Saurons.create(name="S1")
    config = model.SauronConfigs.create(
        sauron=sauron, datetime_changed=datetime.datetime(2020, 1, 1), description="c"
    )
    project = model.Projects.create(name="proj", creator=alice)
    battery = model.Batteries.create(name="bat", length=10, assays_sha1=b"\x01" * 20)
    exp = model.Experiments.create(
        name="exp", creator=alice, project=project, battery=battery, default_acclimation_sec=1
    )
    plate = model.Plates.create(person_plated=alice)
    common = dict(experiment=exp, plate=plate, experimentalist=alice, sauron_config=config,
                  datetime_run=datetime.datetime(2021, 5, 6, 7, 8, 9), description="d")  # fmt: skip
    r1 = model.Runs.create(name="run-one", tag="tag-1", **common)
    model.Runs.create(name=None, tag="tag-2", **common)
    model.Runs.create(name="tag-1", tag="tag-3", **common)  # its name is r1's tag
    for i in range(3):
        model.Wells.create(run=r1, well_index=i, n=i)


# --- section 5: the fetch family ------------------------------------------------------------------


def test_fetch_by_id_and_exact_string(ctx: Ctx) -> None:
    Refs = ctx.model.Refs
    assert Refs.fetch(4).name == "ref_four"  # from testdb.sql, on both engines
    assert Refs.fetch(4.0).id == 4 and Refs.fetch(np.int64(4)).id == 4
    assert Refs.fetch("ref_four").id == 4
    assert Refs.fetch("REF_Four").id == 4  # Valar's collation ignores case
    assert Refs.fetch("it's").name == "it's"
    ref = Refs.fetch(4)
    assert Refs.fetch(ref) is ref


def test_fetch_like_is_a_literal_substring(ctx: Ctx) -> None:
    Refs = ctx.model.Refs
    assert Refs.fetch("a%b", like=True).name == "a%b_c"
    assert Refs.fetch("ref%", like=True).name == "ref%"  # % matches itself, not anything
    assert Refs.fetch_or_none("a_b", like=True) is None
    assert Refs.fetch("_FOU", like=True).name == "ref_four"


def test_fetch_regex(ctx: Ctx) -> None:
    Refs, Runs = ctx.model.Refs, ctx.model.Runs
    assert Refs.fetch("^ref_f", regex=True).name == "ref_four"
    assert Refs.fetch("^REF_FI", regex=True).name == "ref_five"  # case-insensitive, as MariaDB
    assert Refs.fetch("^x.y$", regex=True).name == "x_y"
    assert Refs.fetch_or_none("^nomatch", regex=True) is None
    assert Runs.fetch("^tag-[23]$", regex=True).tag == "tag-2"


def test_fetch_bad_input(ctx: Ctx) -> None:
    m = ctx.model
    with pytest.raises(ValarLookupError, match="nope"):
        m.Refs.fetch("nope")
    assert m.Refs.fetch_or_none(123456) is None
    with pytest.raises(ValarTableTypeError):
        m.Refs.fetch(m.Users.fetch("alice"))
    with pytest.raises(ValueError, match="not both"):
        m.Refs.fetch("x", like=True, regex=True)
    for thing in (None, b"ref_four", [4], 4.5):
        with pytest.raises((TypeError, ValueError)):
            m.Refs.fetch(thing)


@pytest.mark.parametrize("thing", ["x' OR '1'='1", "'; DELETE FROM refs; --", "ref_four' -- "])
def test_injection_strings_match_nothing_and_change_nothing(ctx: Ctx, thing: str) -> None:
    Refs = ctx.model.Refs
    before = Refs.select().count()
    assert Refs.fetch_or_none(thing) is None
    assert Refs.fetch_or_none(thing, like=True) is None
    assert Refs.fetch_all_or_none([thing, 4])[0] is None
    assert Refs.select().count() == before


def test_fetch_all_order_duplicates_and_misses(ctx: Ctx) -> None:
    Refs = ctx.model.Refs
    found = Refs.fetch_all_or_none(["x_y", 4, "nope", "x_y", 999999, "REF_FOUR"])
    assert [None if r is None else r.name for r in found] == [
        "x_y", "ref_four", None, "x_y", None, "ref_four"
    ]  # fmt: skip
    with pytest.raises(ValarLookupError, match="nope"):
        Refs.fetch_all([4, "nope"])
    runs = ctx.model.Runs.fetch_all(["tag-1", "run-one"])
    assert runs[0].id == runs[1].id  # name 'tag-1' vs tag 'tag-1': the lowest id wins


def test_fetch_to_query_and_list_where(ctx: Ctx) -> None:
    m = ctx.model
    r1 = m.Runs.fetch("run-one")
    query = m.Runs.select().where(*m.Runs.fetch_to_query(["tag-2", r1.id]))
    assert sorted(r.tag for r in query) == ["tag-1", "tag-2"]
    assert len(m.Wells.list_where(run=r1)) == 3
    assert [w.well_index for w in m.Wells.list_where(m.Wells.well_index > 0, run=r1.id)] == [1, 2]
    assert m.Wells.list_where(run=[r1.id], n=None) == []


def test_data_and_descriptions(ctx: Ctx) -> None:
    ref = ctx.model.Refs.fetch(4)
    data = ref.get_data()
    assert data["name"] == "ref_four" and data == ref._data
    assert data["datetime_downloaded"] == datetime.datetime(2019, 1, 29, 12, 48, 12)
    assert ref.sstring == "ref.4"
    assert isinstance(data["created"], datetime.datetime)


# --- section 4: the write guard -------------------------------------------------------------------


@pytest.fixture()
def sent(ctx: Ctx, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Statements that got past the guard to peewee's Database.execute_sql (i.e. the driver)."""
    seen: list[str] = []
    original = peewee.Database.execute_sql

    def recording(self: Any, sql: str, params: Any = None, *args: Any, **kwargs: Any) -> Any:
        seen.append(sql)
        return original(self, sql, params, *args, **kwargs)

    monkeypatch.setattr(peewee.Database, "execute_sql", recording)
    return seen


WRITES: dict[str, Callable[[ModuleType, Any], Any]] = {
    "save": lambda m, ref: setattr(ref, "name", "changed") or ref.save(),
    "save_new": lambda m, ref: m.Refs(name="new").save(),
    "create": lambda m, ref: m.Refs.create(name="new"),
    "insert": lambda m, ref: m.Refs.insert(name="new").execute(),
    "insert_many": lambda m, ref: m.Refs.insert_many([{"name": "a"}, {"name": "b"}]).execute(),
    "replace": lambda m, ref: m.Refs.replace(id=4, name="x").execute(),
    "update": lambda m, ref: m.Refs.update(name="x").execute(),
    "delete": lambda m, ref: m.Refs.delete().execute(),
    "delete_instance": lambda m, ref: ref.delete_instance(),
    "bulk_create": lambda m, ref: m.Refs.bulk_create([m.Refs(name="a")]),
    "set_by_id": lambda m, ref: m.Refs.set_by_id(4, {"name": "x"}),
    "delete_by_id": lambda m, ref: m.Refs.delete_by_id(4),
    "get_or_create": lambda m, ref: m.Refs.get_or_create(name="brand new"),
}


@pytest.mark.parametrize("method", sorted(WRITES))
def test_orm_writes_refused_before_any_sql(ctx: Ctx, sent: list[str], method: str) -> None:
    ref = ctx.model.Refs.fetch(4)
    sent.clear()
    with pytest.raises(WriteNotEnabledError):
        WRITES[method](ctx.model, ref)
    assert sent == []
    assert ctx.model.Refs.fetch(4).name == "ref_four"


@pytest.mark.parametrize(
    "sql",
    ["DELETE FROM refs", "UPDATE refs SET name = 'x'", "INSERT INTO refs (name) VALUES ('x')",
     "CREATE TABLE t (x INT)", "DROP TABLE refs", "SELECT 1; DELETE FROM refs"],
)  # fmt: skip
def test_raw_sql_writes_refused_before_any_sql(ctx: Ctx, sent: list[str], sql: str) -> None:
    count = ctx.model.Refs.select().count()
    sent.clear()
    with pytest.raises(WriteNotEnabledError):
        ctx.model.conn.database.execute_sql(sql)
    assert sent == []
    assert ctx.model.Refs.select().count() == count
    assert sent and sent[-1].startswith("SELECT")  # the recorder does see what is sent


def test_always_unsupported(ctx: Ctx) -> None:
    with guard.writes_enabled():
        for call in (ctx.model.Refs.drop_table, ctx.model.Refs.truncate_table):
            with pytest.raises(UnsupportedOperationError):
                call()
        with pytest.raises(UnsupportedOperationError):
            ctx.model.Refs.raw("SELECT 1")
    assert ctx.model.Refs.fetch(4).name == "ref_four"


def test_backend_switch_and_reads_with_writing_off(ctx: Ctx) -> None:
    backend = ctx.model.conn.backend
    assert not backend.is_write_enabled()
    with ctx.model.rolling_back():
        backend.enable_write()
        try:
            ctx.model.Refs.create(name="while enabled")
        finally:
            backend.disable_write()
        assert ctx.model.Refs.fetch("while enabled").name == "while enabled"
        with pytest.raises(WriteNotEnabledError):
            ctx.model.Refs.create(name="after")
    assert ctx.model.Refs.fetch_or_none("while enabled") is None


# (what, a write MariaDB in strict mode refuses): the SQLite file must refuse it too
REFUSED: dict[str, Callable[[ModuleType], Any]] = {
    "enum value not a choice": lambda m: m.Sensors.insert(
        name="s", data_type="nope", blob_type="assay_start"
    ).execute(),
    "negative unsigned": lambda m: m.Wells.insert(
        run=m.Runs.fetch("run-one"), well_index=-1
    ).execute(),
    "unsigned out of range": lambda m: m.Features.insert(
        id=256, name="f", description="d", dimensions="x", data_type="float"
    ).execute(),
    "varchar too long": lambda m: m.Refs.insert(name="x" * 51).execute(),
    "foreign key to nothing": lambda m: m.Wells.insert(run=999999, well_index=1).execute(),
    "null in a not null column": lambda m: m.Refs.insert(name=None).execute(),
    "duplicate unique": lambda m: m.Refs.insert(name="x_y").execute(),
}


@pytest.mark.parametrize("what", sorted(REFUSED))
def test_database_refuses_what_mariadb_refuses(ctx: Ctx, what: str) -> None:
    with guard.writes_enabled(), ctx.model.rolling_back(), pytest.raises(peewee.DatabaseError):
        REFUSED[what](ctx.model)


def test_cascade_and_timestamp_default(ctx: Ctx) -> None:
    m = ctx.model
    with guard.writes_enabled(), m.rolling_back():
        r1 = m.Runs.fetch("run-one")
        assert m.Wells.select().where(m.Wells.run == r1).count() == 3
        ref = m.Refs.create(name="stamped")
        created = m.Refs.get_by_id(ref.id).created
        assert isinstance(created, datetime.datetime)
        m.Runs.delete().where(m.Runs.id == r1.id).execute()
        assert m.Wells.select().where(m.Wells.run == r1.id).count() == 0  # ON DELETE CASCADE
    assert m.Wells.select().where(m.Wells.run == r1.id).count() == 3


# --- section 3: transactions ----------------------------------------------------------------------


@pytest.fixture()
def writing(ctx: Ctx) -> Iterator[ModuleType]:
    with guard.writes_enabled():
        yield ctx.model
        ctx.model.Refs.delete().where(ctx.model.Refs.name.startswith("tx-")).execute()


def _committed(ctx: Ctx) -> list[str]:
    rows = ctx.other_connection("SELECT name FROM refs WHERE name LIKE 'tx-%' ORDER BY name")
    return [r[0] for r in rows]


def test_atomic_commits_and_rolls_back(ctx: Ctx, writing: ModuleType) -> None:
    with writing.atomic():
        writing.Refs.create(name="tx-a")
    assert _committed(ctx) == ["tx-a"]
    with pytest.raises(RuntimeError), writing.atomic():
        writing.Refs.create(name="tx-b")
        raise RuntimeError("boom")
    assert _committed(ctx) == ["tx-a"]


def test_nested_savepoint_rolls_back_only_inner(ctx: Ctx, writing: ModuleType) -> None:
    with writing.atomic():
        writing.Refs.create(name="tx-outer")
        with pytest.raises(KeyError), writing.atomic():
            writing.Refs.create(name="tx-inner")
            raise KeyError("inner")
        with writing.atomic() as sp:
            writing.Refs.create(name="tx-inner2")
            sp.rollback()
    assert _committed(ctx) == ["tx-outer"]


def test_rolling_back_always_rolls_back(ctx: Ctx, writing: ModuleType) -> None:
    with writing.rolling_back():
        writing.Refs.create(name="tx-gone")
        assert writing.Refs.fetch("tx-gone").name == "tx-gone"
    assert _committed(ctx) == []
    assert writing.Refs.fetch_or_none("tx-gone") is None


# --- section 10: batch queries on the sandbox -----------------------------------------------------


def _raw(ctx: Ctx, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    db = ctx.model.conn.database
    return list(db.execute_sql(sql.replace("?", db.param), list(params)).fetchall())


def test_well_features_match_a_per_row_decode(ctx: Ctx) -> None:
    box = ctx.box
    runs = [r for r in box.run_ids if r not in box.featureless_runs]
    feature = box.feature_ids["MI"]
    m = batch.well_features(runs=list(reversed(runs)), feature="MI")
    expected_wells = [w for r in reversed(runs) for w in box.well_ids[r]]
    assert m.well_ids.tolist() == expected_wells
    blobs = dict(_raw(ctx, "SELECT well_id, floats FROM well_features WHERE type_id = ?", feature))
    width = max(len(b) // 4 for b in blobs.values())
    assert m.values.shape == (len(expected_wells), width) and m.values.dtype == np.float32
    for i, w in enumerate(expected_wells):
        ref = np.frombuffer(bytes(blobs[w]), ">f4").astype(np.float32) if w in blobs else None
        n = 0 if ref is None else len(ref)
        assert m.lengths[i] == n
        if ref is not None:
            assert (m.values[i, :n].view(np.uint32) == ref.view(np.uint32)).all()
        assert np.isnan(m.values[i, n:]).all()
    assert set(box.missing_wells) <= set(expected_wells)


def test_well_features_by_wells_out_and_fill(ctx: Ctx) -> None:
    box = ctx.box
    wells = [box.missing_wells[0], box.well_ids[box.run_ids[0]][-1]]
    shape = batch.well_features_shape(wells=wells, feature="MI")
    out = np.empty(shape, dtype=np.float32)
    m = batch.well_features(wells=wells, feature="MI", out=out, fill=-1.0)
    assert m.values is out or np.shares_memory(m.values, out)
    assert m.lengths[0] == 0 and (out[0] == -1.0).all()
    assert m.lengths[1] > 0


def test_batch_unknown_and_empty_runs(ctx: Ctx) -> None:
    with pytest.raises(ValarLookupError, match="987654"):
        batch.well_features(runs=[987654], feature="MI")
    with pytest.raises(ValarLookupError):
        batch.well_features(runs=list(ctx.box.featureless_runs), feature="MI")
    with pytest.raises(ValarLookupError, match="no-such-feature"):
        batch.well_features(runs=[ctx.box.run_ids[0]], feature="no-such-feature")


def test_stimulus_frames_match_a_per_row_decode(ctx: Ctx) -> None:
    box = ctx.box
    sf = batch.stimulus_frames(box.battery_id)
    rows = _raw(ctx, "SELECT assay_id, stimulus_id, frames FROM stimulus_frames")
    starts = dict(
        _raw(ctx, "SELECT assay_id, start FROM assay_positions WHERE battery_id = ?",
             box.battery_id)
    )  # fmt: skip
    assert sorted(sf.stimulus_ids.tolist()) == sorted(box.stimulus_ids)
    for assay, stimulus, blob in rows:
        if assay not in starts:
            continue
        ref = (np.frombuffer(bytes(blob), np.int8).astype(np.int16) + 128).astype(np.uint8)
        k = sf.stimulus_ids.tolist().index(stimulus)
        start = starts[assay]
        np.testing.assert_array_equal(sf.values[k, start : start + len(ref)], ref)


@pytest.mark.parametrize("sensor", ["sandbox_microphone", "sandbox_camera_millis",
                                    "sandbox_humidity", "sandbox_sauronx_version"])  # fmt: skip
def test_sensor_data_typed(ctx: Ctx, sensor: str) -> None:
    box = ctx.box
    result = batch.sensor_data(list(box.run_ids), sensor)
    sid = box.sensor_ids[sensor]
    stored = dict(_raw(ctx, "SELECT run_id, floats FROM sensor_data WHERE sensor_id = ?", sid))
    data_type = sandbox.SENSORS[[s[0] for s in sandbox.SENSORS].index(sensor)][1]
    for run, values in result.by_run().items():
        assert sandbox.encode_sensor(values, data_type) == bytes(stored[run])


# --- section 3: no connection ---------------------------------------------------------------------


def test_closed_connection_says_how_to_open(ctx: Ctx) -> None:
    from valarfast import model as model_module

    previous = metamodel.database_proxy.obj, model_module.conn
    try:
        with opened(ctx.config) as model:
            assert model.Refs.fetch(4).name == "ref_four"
        assert model.conn is None
        with pytest.raises(NotConnectedError, match="open one"):
            model.Refs.fetch(4)
    finally:
        metamodel.database_proxy.initialize(previous[0])
        model_module.conn = previous[1]


# --- writing through the sandbox on a fresh database of each engine -------------------------------


def test_a_second_fill_appends(fresh_any_engine_db: dict[str, Any]) -> None:
    with opened(fresh_any_engine_db):
        first = sandbox.fill(runs=1, wells_per_run=4, frames=50, seed=1, assays=1)
        second = sandbox.fill(runs=2, wells_per_run=4, frames=70, seed=2, assays=1)
        assert not guard.is_write_enabled()
        assert set(first.run_ids).isdisjoint(second.run_ids)
        a = batch.well_features(runs=list(first.run_ids), feature="MI")
        b = batch.well_features(runs=list(second.run_ids), feature="MI")
    assert a.values.shape == (4, 50) and b.values.shape == (8, 70)


def test_the_same_seed_gives_the_same_matrix_on_both_engines(
    mariadb: dict[str, Any], tmp_path: Any
) -> None:
    """Batch results do not depend on the engine: MariaDB and SQLite agree bit for bit."""
    from engines_fixtures import sqlite_valar

    name = dbtools.create_valar_database()
    results = []
    try:
        for config in (dbtools.config_for(name), sqlite_valar(tmp_path / "v.sqlite")):
            with opened(config):
                box = sandbox.fill(runs=2, wells_per_run=6, frames=300, seed=42, missing_wells=1)
                m = batch.well_features(runs=list(box.run_ids), feature="MI")
                sf = batch.stimulus_frames(box.battery_id)
                sd = batch.sensor_data(list(box.run_ids), "sandbox_camera_millis")
                results.append((m, sf, sd))
    finally:
        dbtools.drop_database(name)
    (m1, sf1, sd1), (m2, sf2, sd2) = results
    assert (m1.values.view(np.uint32) == m2.values.view(np.uint32)).all()
    assert m1.lengths.tolist() == m2.lengths.tolist()
    np.testing.assert_array_equal(sf1.values, sf2.values)
    for x, y in zip(sd1.values, sd2.values, strict=True):
        np.testing.assert_array_equal(x, y)

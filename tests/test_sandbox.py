"""valarfast.sandbox: deterministic by seed, a realistic chain, Valar's encodings, scoped writes."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import dbtools
import numpy as np
import pytest

from valarfast import blobs, guard, sandbox
from valarfast.connection import Valar
from valarfast.errors import NotConnectedError

KW = {"runs": 2, "wells_per_run": 5, "frames": 64, "seed": 3, "missing_wells": 1}


def dump(name: str) -> dict[str, Any]:
    """Every row of the tables the sandbox fills, without creation timestamps."""
    tables = {
        "users": "id, username, first_name, last_name",
        "plates": "id, plate_type_id, person_plated_id, datetime_plated",
        "runs": "id, experiment_id, plate_id, datetime_run, tag, name",
        "wells": "id, run_id, well_index, well_group",
        "well_features": "id, well_id, type_id, floats, sha1",
        "stimulus_frames": "id, assay_id, stimulus_id, frames, frames_sha1",
        "assay_positions": "id, battery_id, assay_id, start",
        "sensor_data": "id, run_id, sensor_id, floats, floats_sha1",
    }
    conn = dbtools.admin_connection(name)
    try:
        with conn.cursor() as cur:
            out = {}
            for table, cols in tables.items():
                cur.execute(f"SELECT {cols} FROM {table} ORDER BY id")
                out[table] = cur.fetchall()
            return out
    finally:
        conn.close()


@pytest.fixture()
def two_dbs(mariadb: dict[str, Any]) -> Iterator[tuple[str, str]]:
    names = (dbtools.create_valar_database(), dbtools.create_valar_database())
    try:
        yield names
    finally:
        for n in names:
            dbtools.drop_database(n)


def fill_in(name: str, **kw: Any) -> sandbox.Sandbox:
    with Valar(dbtools.config_for(name)) as valar:
        valar.open()
        return sandbox.fill(**kw)


def test_same_seed_same_database(two_dbs: tuple[str, str]) -> None:
    a, b = two_dbs
    sa, sb = fill_in(a, **KW), fill_in(b, **KW)
    assert sa == sb
    assert dump(a) == dump(b)
    other = fill_in(a, **{**KW, "seed": 4})  # a second fill adds to the first, new ids
    assert other.run_ids == (3, 4)
    assert dump(a)["well_features"][: len(dump(b)["well_features"])] == dump(b)["well_features"]


def test_chain_and_encodings(fresh_valar_db: dict[str, Any]) -> None:
    with Valar(fresh_valar_db) as valar:
        valar.open()
        s = sandbox.fill(**KW, featureless_runs=1)
    rows = dump(fresh_valar_db["database"])
    assert len(rows["runs"]) == 2 and len(rows["wells"]) == 10
    assert s.featureless_runs == (s.run_ids[1],)
    assert len(s.missing_wells) == 1 and s.n_well_features == 4 * 2  # 4 wells x MI, cd(10)
    lengths = set()
    for _, well, _, blob, sha1 in rows["well_features"]:
        values = np.frombuffer(blob, ">f4")
        lengths.add(len(values))
        assert sha1 == hashlib.sha1(blob).hexdigest().encode()
        assert np.isnan(values[0]) and (values[1:][~np.isnan(values[1:])] < 0).any()
        assert well not in s.missing_wells
    assert len(lengths) > 1 and max(lengths) <= 64  # ragged
    for _, _, _, frames, sha1 in rows["stimulus_frames"]:
        assert sha1 == hashlib.sha1(frames).digest()
        decoded = blobs.decode(frames, "unsigned_byte")
        assert sandbox.encode_frames(decoded) == frames
    assert rows["assay_positions"][0][3] == 0
    assert len(rows["sensor_data"]) == 2 * len(sandbox.SENSORS)


@pytest.mark.parametrize("data_type", ["byte", "short", "int", "long", "float", "double",
                                       "unsigned_byte", "unsigned_short", "unsigned_int",
                                       "unsigned_long"])  # fmt: skip
def test_sensor_encoding_round_trips_through_the_kernels(data_type: str) -> None:
    dtype = blobs.dtype_for(data_type)
    if dtype.kind == "f":
        values = np.array([0.0, -1.5, np.inf, 3e38 if dtype.itemsize == 4 else 1e300], dtype)
    else:
        info = np.iinfo(dtype)
        values = np.array([info.min, info.max, 0, 1], dtype)
    blob = sandbox.encode_sensor(values, data_type)
    assert len(blob) == values.nbytes
    np.testing.assert_array_equal(blobs.decode(blob, data_type), values)


def test_writes_are_scoped(fresh_valar_db: dict[str, Any]) -> None:
    assert not guard.is_write_enabled()
    with Valar(fresh_valar_db) as valar:
        valar.open()
        sandbox.fill(runs=1, wells_per_run=2, frames=8, seed=1)
        assert not guard.is_write_enabled()
        guard.enable_write()
        try:
            sandbox.fill(runs=1, wells_per_run=2, frames=8, seed=2)
            assert guard.is_write_enabled()  # restored to what it was
        finally:
            guard.disable_write()


def test_bad_arguments_are_refused_before_writing(fresh_valar_db: dict[str, Any]) -> None:
    with Valar(fresh_valar_db) as valar:
        valar.open()
        for kw, message in [
            ({"runs": 0}, "runs"),
            ({"frames": 10, "ragged": 10}, "ragged"),
            ({"wells_per_run": 4, "missing_wells": 5}, "missing_wells"),
            ({"features": ("MI", "nope")}, "nope"),
            ({"features": "MI"}, "not a str"),
        ]:
            with pytest.raises(ValueError, match=message):
                sandbox.fill(**kw)
    assert dump(fresh_valar_db["database"])["runs"] == ()


def test_needs_an_open_connection() -> None:
    from valarfast import metamodel

    saved = metamodel.database_proxy.obj  # unbind whatever another module may hold, then restore
    metamodel.database_proxy.initialize(None)
    try:
        with pytest.raises(NotConnectedError, match="opened"):
            sandbox.fill(runs=1)
    finally:
        metamodel.database_proxy.initialize(saved)

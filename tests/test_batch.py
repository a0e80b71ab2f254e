"""valarfast.batch against a real MariaDB filled by valarfast.sandbox (reads only in this module).

The reference is plain numpy on rows fetched with plain PyMySQL: one blob at a time.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import dbtools
import numpy as np
import pytest

from valarfast import batch, guard, model, sandbox
from valarfast.connection import Valar
from valarfast.errors import (
    BlobDecodeError,
    ConnectionLostError,
    NotConnectedError,
    ValarError,
    ValarLookupError,
)

FRAMES = 3000


@pytest.fixture(scope="module")
def filled_db(mariadb: dict[str, Any]) -> Iterator[tuple[sandbox.Sandbox, str]]:
    """3 runs x 12 wells (2 missing a row each; the last run has no well features)."""
    fill = {"runs": 3, "wells_per_run": 12, "frames": FRAMES, "seed": 11, "ragged": 7}
    with dbtools.sandbox_database(**fill, missing_wells=2, featureless_runs=1) as (name, _, box):
        yield box, name


@pytest.fixture()
def filled(filled_db: tuple[sandbox.Sandbox, str]) -> Iterator[tuple[Valar, sandbox.Sandbox, str]]:
    """The module's sandbox, with a connection of this test's own bound to the model."""
    summary, name = filled_db
    valar = Valar(dbtools.config_for(name)).open()
    try:
        yield valar, summary, name
    finally:
        valar.close()


def reference(name: str, well_ids: list[int], feature_id: int) -> list[np.ndarray | None]:
    """Each well's row decoded on its own with numpy (None: no row)."""
    conn = dbtools.admin_connection(name)
    try:
        with conn.cursor() as cur:
            found = {}
            for w in well_ids:
                cur.execute(
                    "SELECT floats FROM well_features WHERE well_id = %s AND type_id = %s",
                    (w, feature_id),
                )
                row = cur.fetchone()
                found[w] = None if row is None else np.frombuffer(row[0], ">f4").astype("<f4")
    finally:
        conn.close()
    return [found[w] for w in well_ids]


def assert_bitwise(m: batch.WellFeatureMatrix, refs: list[np.ndarray | None], fill: float) -> None:
    width = m.values.shape[1]
    fill_bits = np.float32(fill).view(np.uint32)
    for i, ref in enumerate(refs):
        n = 0 if ref is None else len(ref)
        assert m.lengths[i] == n
        if ref is not None:
            np.testing.assert_array_equal(m.values[i, :n].view(np.uint32), ref.view(np.uint32))
        assert (m.values[i, n:width].view(np.uint32) == fill_bits).all()


def data_runs(summary: sandbox.Sandbox) -> list[int]:
    return [r for r in summary.run_ids if r not in summary.featureless_runs]


def test_bit_for_bit_with_numpy(filled: Any) -> None:
    _, summary, name = filled
    runs = data_runs(summary)
    m = batch.well_features(runs=runs, feature="MI")
    wells = [w for r in runs for w in summary.well_ids[r]]
    assert m.values.dtype == np.float32 and m.values.flags.c_contiguous
    assert m.well_ids.tolist() == wells
    refs = reference(name, wells, summary.feature_ids["MI"])
    assert m.values.shape == (len(wells), max(len(r) for r in refs if r is not None))
    assert_bitwise(m, refs, math.nan)
    assert np.isnan(m.values[:, 0]).any() and (m.values < 0).any()  # the data has both
    assert m.run_ids.tolist() == [r for r in runs for _ in summary.well_ids[r]]
    assert m.well_indices.tolist() == list(range(1, 13)) * len(runs)
    assert m.feature_name == "MI" and m.feature_id == summary.feature_ids["MI"]


def test_ordering_follows_runs_as_given_and_wells_as_given(filled: Any) -> None:
    _, summary, name = filled
    r1, r2 = data_runs(summary)
    m = batch.well_features(runs=[r2, r1], feature="cd(10)")
    assert m.well_ids.tolist() == list(summary.well_ids[r2]) + list(summary.well_ids[r1])
    picked = [summary.well_ids[r1][5], summary.well_ids[r2][0], summary.well_ids[r1][1]]
    w = batch.well_features(wells=picked, feature="cd(10)")
    assert w.well_ids.tolist() == picked
    assert_bitwise(w, reference(name, picked, summary.feature_ids["cd(10)"]), math.nan)


def test_accepts_what_fetch_accepts(filled: Any) -> None:
    _, summary, _ = filled
    r1, r2 = data_runs(summary)
    run2 = model.Runs.fetch(r2)
    tag1 = model.Runs.fetch(r1).tag
    feature = model.Features.fetch("MI")
    a = batch.well_features(runs=[tag1, run2], feature=feature)
    b = batch.well_features(runs=[np.int64(r1), r2], feature=int(feature.id))
    np.testing.assert_array_equal(a.values.view(np.uint32), b.values.view(np.uint32))
    one = batch.well_features(runs=r1, feature="MI")
    assert one.well_ids.tolist() == list(summary.well_ids[r1])


def test_ragged_rows_are_padded_with_fill(filled: Any) -> None:
    _, summary, name = filled
    runs = data_runs(summary)
    m = batch.well_features(runs=runs, feature="MI", fill=-7.5)
    present = m.lengths[m.lengths > 0]
    assert len(set(present.tolist())) > 1  # ragged for real
    wells = m.well_ids.tolist()
    assert_bitwise(m, reference(name, wells, summary.feature_ids["MI"]), -7.5)


def test_missing_wells_are_fill_rows_with_length_zero(filled: Any) -> None:
    _, summary, _ = filled
    m = batch.well_features(runs=data_runs(summary), feature="MI")
    missing = np.isin(m.well_ids, summary.missing_wells)
    assert missing.sum() == 4
    assert (m.lengths[missing] == 0).all()
    assert np.isnan(m.values[missing]).all()
    assert (m.lengths[~missing] > FRAMES - 8).all()


def test_unknown_run_feature_or_well_raises_naming_it(filled: Any) -> None:
    _, summary, _ = filled
    out = np.full((24, FRAMES), 3.0, np.float32)
    with pytest.raises(ValarLookupError, match="no-such-run"):
        batch.well_features(runs=[summary.run_ids[0], "no-such-run"], feature="MI", out=out)
    with pytest.raises(ValarLookupError, match="990099"):
        batch.well_features(runs=[990099], feature="MI")
    with pytest.raises(ValarLookupError, match="nonexistent-feature"):
        batch.well_features(runs=summary.run_ids[:1], feature="nonexistent-feature", out=out)
    with pytest.raises(ValarLookupError, match="123456"):
        batch.well_features(wells=[summary.well_ids[summary.run_ids[0]][0], 123456], feature="MI")
    assert (out == 3.0).all()


def test_run_without_features_raises(filled: Any) -> None:
    _, summary, _ = filled
    (empty,) = summary.featureless_runs
    with pytest.raises(ValarLookupError, match=rf"\[{empty}\].*'MI'"):
        batch.well_features(runs=[data_runs(summary)[0], empty], feature="MI")
    with pytest.raises(ValarLookupError, match="none of the 2 wells"):
        batch.well_features(wells=list(summary.well_ids[empty][:2]), feature="MI")


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda n, w: np.zeros((n, w), np.float64), "dtype float32"),
        (lambda n, w: np.zeros((n + 1, w), np.float32), "shape"),
        (lambda n, w: np.zeros((n, w - 1), np.float32), "at least"),
        (lambda n, w: np.zeros((n, w), np.float32, order="F"), "C-contiguous"),
        (lambda n, w: np.zeros(n * w, np.float32), "2-D"),
        (lambda n, w: [[0.0] * w] * n, "numpy array"),
        (lambda n, w: np.broadcast_to(np.float32(0), (n, w)), "C-contiguous|read-only"),
    ],
)
def test_out_misuse_is_refused_before_writing(filled: Any, make: Any, message: str) -> None:
    _, summary, _ = filled
    runs = data_runs(summary)
    n, w = batch.well_features_shape(runs=runs, feature="MI")
    out = make(n, w)
    before = np.array(out, copy=True)
    with pytest.raises(ValueError, match=message):
        batch.well_features(runs=runs, feature="MI", out=out)
    np.testing.assert_array_equal(np.asarray(out), before)


def test_read_only_out_is_refused(filled: Any) -> None:
    _, summary, _ = filled
    runs = data_runs(summary)
    out = np.zeros(batch.well_features_shape(runs=runs, feature="MI"), np.float32)
    out.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        batch.well_features(runs=runs, feature="MI", out=out)


def test_out_is_filled_in_place_and_may_be_wider(filled: Any) -> None:
    _, summary, _ = filled
    runs = data_runs(summary)
    plain = batch.well_features(runs=runs, feature="MI")
    n, w = plain.values.shape
    out = np.zeros((n, w + 5), np.float32)
    m = batch.well_features(runs=runs, feature="MI", out=out)
    assert m.values is out
    np.testing.assert_array_equal(out[:, :w].view(np.uint32), plain.values.view(np.uint32))
    assert np.isnan(out[:, w:]).all()


def test_shape_and_plan_read_nothing_and_rows_subset(filled: Any) -> None:
    _, summary, _ = filled
    runs = data_runs(summary)
    plan = batch.plan_well_features(runs=runs, feature="MI")
    full = batch.read_well_features(plan)
    assert plan.shape == full.values.shape == batch.well_features_shape(runs=runs, feature="MI")
    assert len(plan.sha1s) == plan.shape[0]
    assert all(s is None or len(s) == 40 for s in plan.sha1s)
    assert (plan.ids[plan.present] > 0).all() and (np.delete(plan.ids, plan.present) == -1).all()
    out = np.full(plan.shape, 9.0, np.float32)
    rows = [0, 5, 13]
    batch.read_well_features(plan, out=out, rows=rows)
    np.testing.assert_array_equal(out[rows].view(np.uint32), full.values[rows].view(np.uint32))
    assert (np.delete(out, rows, axis=0) == 9.0).all()


def test_to_frame_is_a_view(filled: Any) -> None:
    _, summary, _ = filled
    m = batch.well_features(runs=data_runs(summary)[:1], feature="MI")
    df = m.to_frame()
    assert df.shape == m.values.shape
    assert df.index.tolist() == m.well_ids.tolist()
    assert np.shares_memory(df.to_numpy(), m.values)


def test_progress_bar(filled: Any, capsys: Any) -> None:
    _, summary, _ = filled
    m = batch.well_features(runs=data_runs(summary), feature="MI", progress=True)
    assert m.values.shape[0] == 24
    assert "well features" in capsys.readouterr().err


def test_reads_pass_the_write_guard_and_work_in_transactions(filled: Any) -> None:
    valar, summary, _ = filled
    runs = data_runs(summary)
    assert not guard.is_write_enabled()
    outside = batch.well_features(runs=runs, feature="MI")
    with valar.rolling_back():
        inside = batch.well_features(runs=runs, feature="MI")
        again = batch.well_features(runs=runs, feature="cd(10)")  # the connection is reusable
        assert model.Runs.fetch(runs[0]).id == runs[0]
    np.testing.assert_array_equal(outside.values.view(np.uint32), inside.values.view(np.uint32))
    assert again.values.shape[0] == 24


def test_exactly_one_of_runs_or_wells(filled: Any) -> None:
    with pytest.raises(TypeError, match="exactly one"):
        batch.well_features(feature="MI")
    with pytest.raises(TypeError, match="exactly one"):
        batch.well_features(runs=[1], wells=[1], feature="MI")
    with pytest.raises(ValueError, match="more than once"):
        batch.well_features(runs=[data_runs(filled[1])[0]] * 2, feature="MI")


def test_stimulus_frames_match_numpy(filled: Any) -> None:
    _, summary, name = filled
    sf = batch.stimulus_frames(summary.battery_id)
    conn = dbtools.admin_connection(name)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT length FROM batteries WHERE id = %s", (summary.battery_id,))
            (length,) = cur.fetchone()
            cur.execute(
                "SELECT ap.assay_id, ap.start, sf.stimulus_id, sf.frames FROM assay_positions ap "
                "JOIN stimulus_frames sf ON sf.assay_id = ap.assay_id WHERE ap.battery_id = %s",
                (summary.battery_id,),
            )
            rows = cur.fetchall()
    finally:
        conn.close()
    expected = np.zeros((len(summary.stimulus_ids), length), np.uint8)
    for _assay, start, stim, blob in rows:
        frames = (np.frombuffer(blob, np.int8).astype(np.int16) + 128).astype(np.uint8)
        expected[summary.stimulus_ids.index(stim), start : start + len(frames)] = frames
    assert sf.values.dtype == np.uint8
    np.testing.assert_array_equal(sf.values, expected)
    assert sf.stimulus_ids.tolist() == sorted(summary.stimulus_ids)
    assert sf.assay_ids.tolist() == list(summary.assay_ids)
    assert sf.starts[0] == 0 and (np.diff(sf.starts) == sf.assay_lengths[:-1]).all()
    assert sf.values.max() == 255 and sf.values.min() == 0
    # assays laid end to end in the given order
    a1, a2 = summary.assay_ids[1], summary.assay_ids[0]
    by_assays = batch.stimulus_frames(assays=[a1, a2])
    n1 = sf.assay_lengths[1]
    np.testing.assert_array_equal(by_assays.values[:, :n1], sf.values[:, sf.starts[1] :][:, :n1])
    assert by_assays.starts.tolist() == [0, n1]
    assert sf.to_frame().index.tolist() == list(sf.stimulus_names)


def test_sensor_data_typed_by_data_type(filled: Any) -> None:
    _, summary, name = filled
    expected_dtypes = {
        "unsigned_byte": np.uint8,
        "float": np.float32,
        "short": np.int16,
        "long": np.int64,
        "unsigned_int": np.uint32,
        "unsigned_short": np.uint16,
        "double": np.float64,
    }
    conn = dbtools.admin_connection(name)
    try:
        for sensor, data_type, _, _ in sandbox.SENSORS:
            sd = batch.sensor_data(summary.run_ids, sensor)
            assert sd.data_type == data_type and sd.run_ids.tolist() == list(summary.run_ids)
            for run, got in sd.by_run().items():
                with conn.cursor() as cur:
                    cur.execute(
                        "SELECT floats FROM sensor_data WHERE run_id = %s AND sensor_id = %s",
                        (run, summary.sensor_ids[sensor]),
                    )
                    (blob,) = cur.fetchone()
                if data_type == "utf8_char":
                    assert got == blob.decode("utf-8") and "µ" in got
                    continue
                assert isinstance(got, np.ndarray) and got.dtype == expected_dtypes[data_type]
                assert sandbox.encode_sensor(got, data_type) == blob  # round trip, exact
                if got.dtype.kind in "iu":
                    info = np.iinfo(got.dtype)
                    assert got[:2].tolist() == [info.min, info.max]
    finally:
        conn.close()
    with pytest.raises(ValarLookupError, match="no-such-sensor"):
        batch.sensor_data(summary.run_ids, "no-such-sensor")


def test_not_connected_is_clear() -> None:
    from valarfast import metamodel

    saved = metamodel.database_proxy.obj  # unbind whatever another module may hold, then restore
    metamodel.database_proxy.initialize(None)
    try:
        with pytest.raises(NotConnectedError, match="opened"):
            batch.well_features(runs=[1], feature="MI")
    finally:
        metamodel.database_proxy.initialize(saved)


# ----------------------------------------------------------- tests that write: their own database


@pytest.fixture()
def fresh(fresh_valar_db: dict[str, Any]) -> Iterator[tuple[Valar, str]]:
    valar = Valar(fresh_valar_db).open()
    try:
        yield valar, fresh_valar_db["database"]
    finally:
        valar.close()


def test_corrupt_blob_raises_naming_well_and_feature_and_leaves_out(fresh: Any) -> None:
    _, name = fresh
    summary = sandbox.fill(runs=1, wells_per_run=4, frames=50, seed=2, ragged=0)
    (run,) = summary.run_ids
    bad_well = summary.well_ids[run][2]
    conn = dbtools.admin_connection(name)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "UPDATE well_features SET floats = CONCAT(floats, X'00ff') "
                "WHERE well_id = %s AND type_id = %s",
                (bad_well, summary.feature_ids["MI"]),
            )
    finally:
        conn.close()
    out = np.full((4, 50), 5.0, np.float32)
    with pytest.raises(BlobDecodeError, match=rf"well {bad_well}, feature 'MI'.*202 bytes"):
        batch.well_features(runs=[run], feature="MI", out=out)
    assert (out == 5.0).all()
    ok = batch.well_features(runs=[run], feature="cd(10)")  # the other feature is fine
    assert ok.values.shape == (4, 50)


def test_many_runs(fresh: Any) -> None:
    _, name = fresh
    summary = sandbox.fill(runs=25, wells_per_run=6, frames=40, seed=5, features=("MI",))
    runs = list(reversed(summary.run_ids))
    m = batch.well_features(runs=runs, feature="MI")
    wells = [w for r in runs for w in summary.well_ids[r]]
    assert m.well_ids.tolist() == wells
    assert_bitwise(m, reference(name, wells, summary.feature_ids["MI"]), math.nan)


def test_lost_connection_before_first_row_reconnects_once(fresh: Any, caplog: Any) -> None:
    valar, _ = fresh
    summary = sandbox.fill(runs=1, wells_per_run=3, frames=30, seed=4, features=("MI",), ragged=0)
    before = batch.well_features(runs=summary.run_ids, feature="MI")
    kill(valar)
    after = batch.well_features(runs=summary.run_ids, feature="MI")
    np.testing.assert_array_equal(before.values.view(np.uint32), after.values.view(np.uint32))
    # lost between the metadata query and the streamed query: the stream itself reconnects
    plan = batch.plan_well_features(runs=summary.run_ids, feature="MI")
    kill(valar)
    with caplog.at_level("INFO", logger="valarfast"):
        streamed = batch.read_well_features(plan)
    assert "connection lost before the first row; reconnecting once" in caplog.text
    np.testing.assert_array_equal(before.values.view(np.uint32), streamed.values.view(np.uint32))


def test_lost_connection_inside_a_transaction_is_raised(fresh: Any) -> None:
    valar, _ = fresh
    summary = sandbox.fill(runs=1, wells_per_run=3, frames=30, seed=4, features=("MI",), ragged=0)
    lost = pytest.raises(ConnectionLostError, match="streaming rows inside a transaction")
    with lost, valar.atomic():
        plan = batch.plan_well_features(runs=summary.run_ids, feature="MI")
        kill(valar)
        batch.read_well_features(plan)
    again = batch.well_features(runs=summary.run_ids, feature="MI")  # usable afterwards
    assert again.values.shape == (3, 30)


def kill(valar: Valar) -> None:
    dbtools.kill_connection(valar.database.connection().thread_id())


def test_two_rows_for_one_well_and_feature_are_refused(fresh: Any) -> None:
    _, name = fresh
    summary = sandbox.fill(runs=1, wells_per_run=3, frames=20, seed=6, features=("MI",))
    well = summary.well_ids[summary.run_ids[0]][1]
    conn = dbtools.admin_connection(name)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "INSERT INTO well_features (well_id, type_id, floats, sha1) "
                "SELECT well_id, type_id, floats, sha1 FROM well_features WHERE well_id = %s",
                (well,),
            )
    finally:
        conn.close()
    with pytest.raises(ValarError, match=rf"\[{well}\] have several well_features rows"):
        batch.well_features(runs=summary.run_ids, feature="MI")


def test_same_results_on_sqlite(tmp_path: Any) -> None:
    """The embedded engine: the same sandbox and the same batch code, plain cursor."""
    import sqlite3

    path = tmp_path / "sandbox.sqlite"
    with Valar({"database": str(path), "engine": "sqlite"}) as valar:
        valar.open()
        summary = sandbox.fill(runs=2, wells_per_run=5, frames=300, seed=8, missing_wells=1)
        m = batch.well_features(runs=list(reversed(summary.run_ids)), feature="cd(10)")
        sd = batch.sensor_data(summary.run_ids, "sandbox_camera_millis")
    conn = sqlite3.connect(path)
    try:
        refs = []
        for w in m.well_ids.tolist():
            row = conn.execute(
                "SELECT floats FROM well_features WHERE well_id = ? AND type_id = ?",
                (w, summary.feature_ids["cd(10)"]),
            ).fetchone()
            refs.append(None if row is None else np.frombuffer(row[0], ">f4").astype("<f4"))
    finally:
        conn.close()
    assert m.well_ids.tolist() == [
        w for r in reversed(summary.run_ids) for w in summary.well_ids[r]
    ]
    assert_bitwise(m, refs, math.nan)
    assert all(isinstance(v, np.ndarray) and v.dtype == np.uint32 for v in sd.values)


# ------------------------------------------- the width learnt while streaming (out=None, no cache)


def test_growing_rows_bit_exact_for_every_length_pattern() -> None:
    """GrowingRows (no database): any order of lengths gives the plain numpy result."""
    from valarfast.growing import GrowingRows

    rng = np.random.default_rng(3)
    patterns = {
        "uniform": [300] * 8,
        "first shorter": [5, 300, 299, 300, 1, 300, 300, 298],
        "increasing": list(range(1, 60)),
        "decreasing": list(range(60, 0, -1)),
        "past the reserve late": [10] * 20 + [900],
        "empty rows": [0, 0, 7, 0, 3],
        "all empty": [0, 0, 0],
    }
    for name, lengths in patterns.items():
        arrays = [rng.standard_normal(n).astype(np.float32) for n in lengths]
        arrays[0][:1] = np.nan
        order = rng.permutation(len(lengths)).tolist() if name == "first shorter" else None
        g = GrowingRows(len(lengths) + 1, "float")  # one row never written
        for i in order or range(len(lengths)):
            assert g.write(i, arrays[i].astype(">f4").tobytes()) == lengths[i]
        m, got = g.finish(fill=-2.0)
        width = max(lengths)
        assert m.shape == (len(lengths) + 1, width) and m.flags.c_contiguous, name
        assert m.flags.owndata and m.dtype == np.float32, name
        assert got.tolist() == [*lengths, 0], name
        expected = np.full((len(lengths) + 1, width), -2.0, np.float32)
        for i, a in enumerate(arrays):
            expected[i, : len(a)] = a
        np.testing.assert_array_equal(m.view(np.uint32), expected.view(np.uint32), err_msg=name)


def test_growing_rows_bounds_the_copying_and_keeps_hints_honest() -> None:
    from valarfast.growing import GrowingRows

    n = 200
    g = GrowingRows(n, "float")
    for i in range(n):  # the worst order: every row longer than all before
        g.write(i, np.arange(i + 1, dtype=">f4").tobytes())
    m, _ = g.finish(fill=0.0)
    assert g.moved <= 3 * m.nbytes  # not quadratic
    assert g.widenings <= 16 + 12  # exact ones, then by half at least
    np.testing.assert_array_equal(m[-1], np.arange(n, dtype=np.float32))
    np.testing.assert_array_equal(m[10], np.r_[np.arange(11), np.zeros(n - 11)].astype(np.float32))
    h = GrowingRows(2, "float", width_hint=50)  # a hint wider than the data: still exact
    h.write(1, b"\x3f\x80\x00\x00")
    m, lengths = h.finish()
    assert m.shape == (2, 1) and lengths.tolist() == [0, 1] and np.isnan(m[0, 0])


def test_growing_rows_corrupt_blob_raises_and_close_drops() -> None:
    from valarfast.growing import GrowingRows

    g = GrowingRows(2, "float")
    g.write(0, b"\x00" * 8)
    with pytest.raises(BlobDecodeError, match=r"multiple of 4|not a multiple"):
        g.write(1, b"\x00" * 10)
    g.close()
    with pytest.raises(ValueError, match=">= 0"):
        GrowingRows(-1, "float")


def _edit_blobs(name: str, sql: str, params: tuple[Any, ...]) -> None:
    conn = dbtools.admin_connection(name)
    try:
        with conn.cursor() as cur:
            cur.execute(sql, params)
    finally:
        conn.close()


def _same_both_ways(runs: list[int], name: str, feature_id: int) -> batch.WellFeatureMatrix:
    """The learnt-width read, the sized read into out=, and numpy agree bit for bit."""
    grown = batch.well_features(runs=runs, feature="MI")
    shape = batch.well_features_shape(runs=runs, feature="MI")
    assert grown.values.shape == shape and grown.values.flags.c_contiguous
    out = np.empty(shape, np.float32)
    sized = batch.well_features(runs=runs, feature="MI", out=out)
    np.testing.assert_array_equal(grown.values.view(np.uint32), out.view(np.uint32))
    assert grown.lengths.tolist() == sized.lengths.tolist()
    assert_bitwise(grown, reference(name, grown.well_ids.tolist(), feature_id), math.nan)
    return grown


def test_first_row_shorter_and_a_row_past_the_reserve(fresh: Any) -> None:
    _, name = fresh
    summary = sandbox.fill(runs=2, wells_per_run=5, frames=60, seed=9, ragged=0, features=("MI",))
    fid = summary.feature_ids["MI"]
    wells = [w for r in summary.run_ids for w in summary.well_ids[r]]
    _edit_blobs(
        name,
        "UPDATE well_features SET floats = SUBSTRING(floats, 1, 12) WHERE well_id = %s",
        (wells[0],),
    )
    _edit_blobs(  # three times as long: past the 25 % address-space reserve
        name,
        "UPDATE well_features SET floats = CONCAT(floats, floats, floats) WHERE well_id = %s",
        (wells[7],),
    )
    m = _same_both_ways(list(summary.run_ids), name, fid)
    assert m.lengths[0] == 3 and m.lengths[7] == 180 and m.values.shape == (10, 180)


def test_lengths_increasing_row_after_row(fresh: Any) -> None:
    _, name = fresh
    summary = sandbox.fill(runs=2, wells_per_run=8, frames=80, seed=10, ragged=0, features=("MI",))
    _edit_blobs(
        name,
        "UPDATE well_features wf JOIN (SELECT MIN(id) AS low FROM well_features) f "
        "SET wf.floats = SUBSTRING(wf.floats, 1, 4 * 5 * (wf.id - f.low + 1))",
        (),
    )
    m = _same_both_ways(list(summary.run_ids), name, summary.feature_ids["MI"])
    assert sorted(m.lengths.tolist()) == [5 * k for k in range(1, 17)]


def test_corrupt_blob_mid_stream_without_out_returns_nothing(fresh: Any) -> None:
    _, name = fresh
    summary = sandbox.fill(runs=1, wells_per_run=6, frames=40, seed=12, ragged=3)
    (run,) = summary.run_ids
    bad_well = summary.well_ids[run][4]  # rows before it are decoded already
    _edit_blobs(
        name,
        "UPDATE well_features SET floats = CONCAT(floats, X'01') "
        "WHERE well_id = %s AND type_id = %s",
        (bad_well, summary.feature_ids["MI"]),
    )
    result = None
    with pytest.raises(
        BlobDecodeError, match=rf"well {bad_well}, feature 'MI'.*nothing is returned"
    ):
        result = batch.well_features(runs=[run], feature="MI")
    assert result is None
    ok = batch.well_features(runs=[run], feature="cd(10)")  # the connection is still usable
    assert ok.values.shape[0] == 6


def test_unsized_plan_is_read_whole_only(filled: Any) -> None:
    _, summary, _ = filled
    runs = data_runs(summary)
    plan = batch.plan_well_features(runs=runs, feature="MI", sized=False)
    assert not plan.sized and (plan.lengths == 0).all()
    with pytest.raises(ValueError, match="sized=False"):
        _ = plan.shape
    with pytest.raises(ValueError, match="sized=False plan takes no out="):
        batch.read_well_features(plan, out=np.zeros((24, FRAMES), np.float32))
    whole = batch.read_well_features(plan)
    sized = batch.read_well_features(batch.plan_well_features(runs=runs, feature="MI"))
    np.testing.assert_array_equal(whole.values.view(np.uint32), sized.values.view(np.uint32))
    assert whole.lengths.tolist() == sized.lengths.tolist()

"""The cache under ``batch.stimulus_frames`` and ``batch.sensor_data`` (real MariaDB and SQLite).

Hits, misses, a changed hash on the server, a damaged entry, bit-exact against an uncached
fetch, and no ``LENGTH()`` asked for rows the cache already holds.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dbtools
import numpy as np
import pytest

import valarfast
from valarfast import batch, sandbox
from valarfast.cache import BlobCache, CacheCorruptionWarning, CacheKey, namespace_for


@pytest.fixture(scope="module")
def filled(mariadb: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """A database of our own: 2 runs, a battery of 3 assays (about 400-500 frames each)."""
    fill = {"runs": 2, "wells_per_run": 4, "frames": 1_000, "seed": 3, "features": ("MI",)}
    with dbtools.sandbox_database(**fill) as (name, config, box):
        yield {"config": config, "box": box, "name": name}


def _entries(directory: Path, kind: str) -> list[Path]:
    return sorted(directory.glob(f"*/{kind}/*/*.vfc"))


def _same(a: Any, b: Any) -> None:
    assert a.values.dtype == b.values.dtype == np.uint8
    assert np.array_equal(a.values, b.values)
    for name in ("stimulus_ids", "assay_ids", "starts", "assay_lengths"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    assert a.stimulus_names == b.stimulus_names and a.battery_id == b.battery_id


class _Statements(logging.Handler):
    """The SQL peewee runs (its DEBUG log), to check which queries a fetch made."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.sql: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if isinstance(record.msg, tuple) and record.msg:
            self.sql.append(str(record.msg[0]))


@pytest.fixture
def statements() -> Iterator[_Statements]:
    handler = _Statements()
    logger = logging.getLogger("peewee")
    old = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old)


@pytest.mark.mariadb
def test_stimulus_frames_cold_warm_bit_exact(
    filled: dict[str, Any], tmp_path: Path, statements: _Statements
) -> None:
    box = filled["box"]
    with valarfast.opened(filled["config"]) as model:
        plain = batch.stimulus_frames(box.battery_id, cache=False)
        n_rows = len(box.assay_ids) * len(box.stimulus_ids)
        cold = batch.stimulus_frames(box.battery_id, cache=tmp_path)
        assert len(_entries(tmp_path, "stimulus_frames")) == n_rows
        statements.sql.clear()
        warm = batch.stimulus_frames(box.battery_id, cache=tmp_path)
        assert statements.sql and not [s for s in statements.sql if "LENGTH(" in s]
        by_assays = batch.stimulus_frames(assays=list(box.assay_ids)[::-1], cache=tmp_path)
        plain_by_assays = batch.stimulus_frames(assays=list(box.assay_ids)[::-1], cache=False)
        for got in (cold, warm):
            _same(got, plain)
        _same(by_assays, plain_by_assays)
        # prove the warm rows come from disk: rewrite one entry (same key, same length)
        cache = BlobCache(tmp_path).with_namespace(namespace_for(model.conn.database))
        sf_id, sha1, nbytes = _first_row(filled["name"])
        key = CacheKey("stimulus_frames", sf_id, sha1, "unsigned_byte")
        assert cache.known_items(key, np.uint8) == nbytes
        cache.write(key, np.full(nbytes, 7, np.uint8))
        marked = batch.stimulus_frames(box.battery_id, cache=tmp_path)
        changed = np.flatnonzero((marked.values != plain.values).any(axis=1))
        assert len(changed) == 1
        assert (marked.values[changed[0], marked.starts[0] : marked.starts[0] + nbytes] == 7).all()


def _first_row(name: str) -> tuple[int, bytes, int]:
    conn = dbtools.admin_connection(database=name)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT sf.id, sf.frames_sha1, LENGTH(sf.frames) FROM stimulus_frames sf "
                "JOIN assay_positions ap ON ap.assay_id = sf.assay_id "
                "ORDER BY ap.start, sf.id LIMIT 1"
            )
            sf_id, sha1, nbytes = cur.fetchone()
    finally:
        conn.close()
    return int(sf_id), bytes(sha1), int(nbytes)


@pytest.mark.mariadb
def test_stimulus_frames_partial_hit_and_damaged_entry(
    filled: dict[str, Any], tmp_path: Path
) -> None:
    box = filled["box"]
    with valarfast.opened(filled["config"]):
        plain = batch.stimulus_frames(box.battery_id, cache=False)
        batch.stimulus_frames(box.battery_id, cache=tmp_path)
        paths = _entries(tmp_path, "stimulus_frames")
        for path in paths[::3]:
            path.unlink()  # misses: fetched (LENGTH() asked for these only) and stored again
        damaged = paths[1]
        data = bytearray(damaged.read_bytes())
        data[-1] ^= 0xFF
        damaged.write_bytes(bytes(data))
        with pytest.warns(CacheCorruptionWarning):
            got = batch.stimulus_frames(box.battery_id, cache=tmp_path)
        _same(got, plain)
        assert len(_entries(tmp_path, "stimulus_frames")) == len(paths)
        assert BlobCache(tmp_path).verify().bad == []


@pytest.mark.mariadb
def test_stimulus_frames_changed_on_the_server_are_refetched(
    mariadb: dict[str, Any], tmp_path: Path
) -> None:
    name = dbtools.create_valar_database()
    try:
        config = dbtools.config_for(name)
        with valarfast.opened(config):
            box = sandbox.fill(runs=1, wells_per_run=2, frames=100, seed=8, features=("MI",))
            before = batch.stimulus_frames(box.battery_id, cache=tmp_path)
        sf_id, _, nbytes = _first_row(name)
        new = bytes(range(256)) * (nbytes // 2 // 256 + 1)
        new = new[: nbytes // 2]  # shorter, other values: the rest of the span becomes 0
        conn = dbtools.admin_connection(database=name)
        try:
            with conn.cursor() as cur:
                cur.execute(
                    "UPDATE stimulus_frames SET frames = %s, frames_sha1 = UNHEX(SHA1(%s)) "
                    "WHERE id = %s",
                    (new, new, sf_id),
                )
        finally:
            conn.close()
        with valarfast.opened(config):
            after = batch.stimulus_frames(box.battery_id, cache=tmp_path)
            plain = batch.stimulus_frames(box.battery_id, cache=False)
        _same(after, plain)
        rows = np.flatnonzero((after.values != before.values).any(axis=1))
        assert len(rows) == 1
        start = int(after.starts[0])
        expected = (np.frombuffer(new, np.int8).astype(np.int16) + 128).astype(np.uint8)
        assert np.array_equal(after.values[rows[0], start : start + len(new)], expected)
        assert not after.values[rows[0], start + len(new) : start + nbytes].any()
    finally:
        dbtools.drop_database(name)


@pytest.mark.mariadb
def test_sensor_data_warm_fetch_asks_no_length(
    filled: dict[str, Any], tmp_path: Path, statements: _Statements
) -> None:
    runs = list(filled["box"].run_ids)
    with valarfast.opened(filled["config"]):
        for name, data_type, _, _ in sandbox.SENSORS:
            if data_type == "utf8_char":
                continue
            plain = batch.sensor_data(runs, name, cache=False)
            batch.sensor_data(runs, name, cache=tmp_path)
            statements.sql.clear()
            warm = batch.sensor_data(runs, name, cache=tmp_path)
            assert statements.sql and not [s for s in statements.sql if "LENGTH(" in s], name
            for a, b in zip(warm.values, plain.values, strict=True):
                assert isinstance(a, np.ndarray) and isinstance(b, np.ndarray)
                assert a.dtype == b.dtype and a.tobytes() == b.tobytes()
        # one entry gone: LENGTH() for that row only, and it is stored again
        victim = _entries(tmp_path, "sensor_data")[0]
        victim.unlink()
        statements.sql.clear()
        for name, data_type, _, _ in sandbox.SENSORS:
            if data_type != "utf8_char":
                batch.sensor_data(runs, name, cache=tmp_path)
        assert len([s for s in statements.sql if "LENGTH(" in s]) == 1
        assert victim.exists()


def test_stimulus_frames_and_sensor_data_on_sqlite(tmp_path: Path) -> None:
    config = {"engine": "sqlite", "database": str(tmp_path / "valar.sqlite")}
    cache_dir = tmp_path / "cache"
    with valarfast.opened(config):
        box = sandbox.fill(runs=2, wells_per_run=3, frames=200, seed=4, features=("MI",))
        plain = batch.stimulus_frames(box.battery_id, cache=False)
        for _ in range(2):
            _same(batch.stimulus_frames(box.battery_id, cache=cache_dir), plain)
        name = next(s[0] for s in sandbox.SENSORS if s[1] == "double")
        sensor_plain = batch.sensor_data(list(box.run_ids), name, cache=False)
        for _ in range(2):
            got = batch.sensor_data(list(box.run_ids), name, cache=cache_dir)
            for a, b in zip(got.values, sensor_plain.values, strict=True):
                assert isinstance(a, np.ndarray) and isinstance(b, np.ndarray)
                assert a.tobytes() == b.tobytes()
    assert len(_entries(cache_dir, "stimulus_frames")) == len(box.assay_ids) * len(box.stimulus_ids)
    assert len(_entries(cache_dir, "sensor_data")) == 2

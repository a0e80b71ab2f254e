"""The cache under ``batch.well_features`` on real MariaDB: bit-exact with an uncached fetch."""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dbtools
import numpy as np
import pytest

import valarfast
from valarfast import batch, sandbox
from valarfast.cache import BlobCache, CacheCorruptionWarning, make_keys, namespace_for

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.mariadb


@pytest.fixture(scope="module")
def filled(mariadb: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """A database of our own: 2 runs x 8 wells x up to 20,000 frames (ragged, one well missing)."""
    fill = {"runs": 2, "wells_per_run": 8, "frames": 20_000, "seed": 11, "missing_wells": 1}
    with dbtools.sandbox_database(**fill, features=("MI",)) as (name, config, box):
        yield {"config": config, "runs": list(box.run_ids), "name": name}


def _bits(m: Any) -> np.ndarray:
    return np.asarray(m.values).view(np.uint32)


def _fetch(filled: dict[str, Any], cache: Any) -> Any:
    return batch.well_features(runs=filled["runs"], feature="MI", cache=cache)


def _entries(directory: Path) -> list[Path]:
    return sorted(directory.rglob("*.vfc"))


def _any_entry(directory: Path) -> bool:
    """Whether an entry exists, while another process may be clearing (removing folders)."""
    try:
        return bool(_entries(directory))
    except FileNotFoundError:  # a shard folder went away between listing and scanning it
        return False


def test_cold_then_warm_is_bit_exact_and_served_from_disk(
    filled: dict[str, Any], tmp_path: Path
) -> None:
    with valarfast.opened(filled["config"]) as model:
        plain = _fetch(filled, False)
        cold = _fetch(filled, tmp_path)
        assert len(_entries(tmp_path)) == int((plain.lengths > 0).sum()) == 14
        warm = _fetch(filled, tmp_path)
        for got in (cold, warm):
            assert np.array_equal(_bits(got), _bits(plain))
            assert np.array_equal(got.well_ids, plain.well_ids)
            assert np.array_equal(got.lengths, plain.lengths)
        # prove the warm rows come from disk: rewrite one entry (same key) with other values
        cache = BlobCache(tmp_path).with_namespace(namespace_for(model.conn.database))
        plan = batch.plan_well_features(runs=filled["runs"], feature="MI")
        i = int(plan.present[3])
        key = make_keys("well_features", plan.ids, plan.sha1s, "float")[i]
        assert key is not None
        cache.write(key, np.full(int(plan.lengths[i]), 42.0, np.float32))
        marked = _fetch(filled, tmp_path)
        assert (marked.values[i, : plan.lengths[i]] == 42.0).all()
        assert np.isnan(marked.values[i, plan.lengths[i] :]).all()  # padding still the fill


def test_lengths_from_the_cache_match_the_server(filled: dict[str, Any], tmp_path: Path) -> None:
    with valarfast.opened(filled["config"]) as model:
        _fetch(filled, tmp_path)
        for path in _entries(tmp_path)[::3]:
            path.unlink()  # some lengths known locally, the others asked for with LENGTH()
        cache = BlobCache(tmp_path).with_namespace(namespace_for(model.conn.database))
        lookup = cache.length_lookup("well_features", "float", np.float32)
        server = batch.plan_well_features(runs=filled["runs"], feature="MI")
        mixed = batch.plan_well_features(runs=filled["runs"], feature="MI", known_bytes=lookup)
        known = [lookup(int(i), d) for i, d in zip(server.ids, server.sha1s, strict=True)]
        assert 0 < sum(k is not None for k in known) < len(known)
        assert np.array_equal(mixed.lengths, server.lengths)
        assert np.array_equal(mixed.ids, server.ids) and mixed.sha1s == server.sha1s


def test_partial_hit_and_out_and_fill(filled: dict[str, Any], tmp_path: Path) -> None:
    with valarfast.opened(filled["config"]):
        plain = batch.well_features(runs=filled["runs"], feature="MI", cache=False, fill=-1.0)
        _fetch(filled, tmp_path)
        for path in _entries(tmp_path)[::2]:
            path.unlink()
        out = np.full((plain.values.shape[0], plain.values.shape[1] + 3), 9.0, np.float32)
        got = batch.well_features(
            runs=filled["runs"], feature="MI", cache=tmp_path, out=out, fill=-1.0
        )
        assert got.values is out
        assert np.array_equal(out[:, : plain.values.shape[1]].view(np.uint32), _bits(plain))
        assert (out[:, plain.values.shape[1] :] == -1.0).all()
        assert len(_entries(tmp_path)) == 14  # the missing ones were stored again


def test_changed_hash_on_server_is_refetched(mariadb: dict[str, Any], tmp_path: Path) -> None:
    name = dbtools.create_valar_database()
    try:
        config = dbtools.config_for(name)
        with valarfast.opened(config):
            box = sandbox.fill(runs=1, wells_per_run=4, frames=500, seed=5, features=("MI",))
            runs = list(box.run_ids)
            before = batch.well_features(runs=runs, feature="MI", cache=tmp_path)
        new = np.arange(300, dtype=">f4")
        conn = dbtools.admin_connection(database=name)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT MIN(id) FROM well_features")
                (row_id,) = cur.fetchone()
                sha = hashlib.sha1(new.tobytes()).hexdigest().encode()
                cur.execute(
                    "UPDATE well_features SET floats = %s, sha1 = %s WHERE id = %s",
                    (new.tobytes(), sha, row_id),
                )
        finally:
            conn.close()
        with valarfast.opened(config):
            after = batch.well_features(runs=runs, feature="MI", cache=tmp_path)
            plain = batch.well_features(runs=runs, feature="MI", cache=False)
        assert np.array_equal(_bits(after), _bits(plain))
        changed = [i for i in range(4) if not np.array_equal(_bits(after)[i], _bits(before)[i])]
        assert len(changed) == 1 and after.lengths[changed[0]] == 300
        assert (after.values[changed[0], :300] == np.arange(300)).all()
    finally:
        dbtools.drop_database(name)


def test_a_row_changed_after_the_hash_query_is_an_error(
    filled: dict[str, Any], tmp_path: Path
) -> None:
    import dataclasses

    from valarfast.errors import ValarError

    with valarfast.opened(filled["config"]):
        plan = batch.plan_well_features(runs=filled["runs"], feature="MI")
        i = int(plan.present[2])
        sha1s = list(plan.sha1s)
        sha1s[i] = b"0" * 40  # as if the row changed between the two queries
        stale = dataclasses.replace(plan, sha1s=tuple(sha1s))
        with pytest.raises(ValarError, match="changed between"):
            batch.read_well_features(stale)
        # through the cache: rows decoded before the error may be stored, the changed one never
        cache = BlobCache(tmp_path)
        keys = make_keys("well_features", stale.ids, stale.sha1s, "float")
        matrix = np.zeros(stale.shape, np.float32)
        with (
            pytest.raises(ValarError, match="changed between"),
            cache.storing(keys, matrix, stale.lengths) as on_row,
        ):
            batch.read_well_features(stale, out=matrix, on_row=on_row)
        assert cache.verify().bad == []
        assert not cache.path_for(keys[i]).exists()  # type: ignore[arg-type]
        plain = _fetch(filled, False)
        for k, key in enumerate(keys):  # what was stored is right
            if key is not None and cache.path_for(key).exists():
                row = np.empty(int(stale.lengths[k]), np.float32)
                assert cache.read_into(key, row) == row.size
                assert np.array_equal(row.view(np.uint32), _bits(plain)[k, : row.size])


def test_corrupt_and_truncated_entries_are_refetched(
    filled: dict[str, Any], tmp_path: Path
) -> None:
    with valarfast.opened(filled["config"]):
        plain = _fetch(filled, False)
        _fetch(filled, tmp_path)
        first, second = _entries(tmp_path)[:2]
        data = bytearray(first.read_bytes())
        data[500] ^= 0x01
        first.write_bytes(bytes(data))
        second.write_bytes(second.read_bytes()[:-1])
        with pytest.warns(CacheCorruptionWarning) as caught:
            got = _fetch(filled, tmp_path)
        assert len(caught) == 2
        assert np.array_equal(_bits(got), _bits(plain))
        assert BlobCache(tmp_path).verify().bad == []  # both were stored again, sound


def test_eviction_at_the_size_limit(filled: dict[str, Any], tmp_path: Path) -> None:
    with valarfast.opened(filled["config"]):
        plain = _fetch(filled, False)
        limit = plain.values.nbytes // 3
        for _ in range(3):
            got = _fetch(filled, BlobCache(tmp_path, max_bytes=limit))
            assert np.array_equal(_bits(got), _bits(plain))
            assert BlobCache(tmp_path).info().total_bytes <= limit


def test_no_cache_unless_asked(filled: dict[str, Any], tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    with valarfast.opened(filled["config"]):
        _fetch(filled, None)  # the config has no cache keys: off
    assert not _entries(tmp_path)


def test_config_keys_turn_the_cache_on(filled: dict[str, Any], tmp_path: Path) -> None:
    config = {**filled["config"], "cache_dir": str(tmp_path), "cache_max_bytes": "1G"}
    with valarfast.opened(config):
        plain = _fetch(filled, False)
        assert not _entries(tmp_path)
        got = _fetch(filled, None)
    assert len(_entries(tmp_path)) == 14 and np.array_equal(_bits(got), _bits(plain))
    BlobCache(tmp_path).clear()
    with valarfast.opened({**config, "cache": False}):
        _fetch(filled, None)
    assert not _entries(tmp_path)
    with (
        pytest.raises(ValueError, match="cache size"),
        valarfast.opened({**filled["config"], "cache": True, "cache_max_bytes": "lots"}),
    ):
        _fetch(filled, None)


def test_sensor_data_through_the_cache(filled: dict[str, Any], tmp_path: Path) -> None:
    with valarfast.opened(filled["config"]):
        for name, data_type, _, _ in sandbox.SENSORS:
            plain = batch.sensor_data(filled["runs"], name, cache=False)
            cold = batch.sensor_data(filled["runs"], name, cache=tmp_path)
            warm = batch.sensor_data(filled["runs"], name, cache=tmp_path)
            for got in (cold, warm):
                for a, b in zip(got.values, plain.values, strict=True):
                    if isinstance(b, np.ndarray):
                        assert isinstance(a, np.ndarray) and a.dtype == b.dtype
                        assert a.tobytes() == b.tobytes()
                    else:
                        assert a == b
            stored = list((tmp_path).rglob(f"*.{data_type}.vfc"))
            assert len(stored) == (0 if data_type == "utf8_char" else len(filled["runs"]))


def test_sqlite_engine(tmp_path: Path) -> None:
    config = {"engine": "sqlite", "database": str(tmp_path / "valar.sqlite")}
    cache_dir = tmp_path / "cache"
    with valarfast.opened(config) as model:
        box = sandbox.fill(runs=2, wells_per_run=6, frames=3_000, seed=2, features=("MI",))
        runs = list(box.run_ids)
        plain = batch.well_features(runs=runs, feature="MI", cache=False)
        cold = batch.well_features(runs=runs, feature="MI", cache=cache_dir)
        warm = batch.well_features(runs=runs, feature="MI", cache=cache_dir)
        assert namespace_for(model.conn.database).startswith("valar-")
    for got in (cold, warm):
        assert np.array_equal(_bits(got), _bits(plain))
    assert len(_entries(cache_dir)) == 12


_FETCHER = textwrap.dedent(
    """
    import hashlib, json, sys
    import numpy as np, valarfast
    from valarfast import batch
    from valarfast.cache import BlobCache
    config, runs = json.loads(sys.argv[1]), json.loads(sys.argv[2])
    directory, loops = sys.argv[3], int(sys.argv[4])
    with valarfast.opened(config):
        print("ready", flush=True)
        for _ in range(loops):
            if loops > 1:
                BlobCache(directory).clear()
            m = batch.well_features(runs=runs, feature="MI", cache=directory)
    print(hashlib.sha1(m.values.view(np.uint32).tobytes()).hexdigest(), flush=True)
    """
)


def _fetcher(filled: dict[str, Any], directory: Path, loops: int) -> subprocess.Popen[str]:
    args = [json.dumps(filled["config"]), json.dumps(filled["runs"]), str(directory), str(loops)]
    return subprocess.Popen(
        [sys.executable, "-c", _FETCHER, *args], stdout=subprocess.PIPE, text=True, cwd=ROOT
    )


def _digest(m: Any) -> str:
    return hashlib.sha1(_bits(m).tobytes()).hexdigest()


def test_kill_during_a_fetch_then_clean_rerun(filled: dict[str, Any], tmp_path: Path) -> None:
    proc = _fetcher(filled, tmp_path, loops=1_000_000)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    deadline = time.monotonic() + 20
    while not _any_entry(tmp_path) and time.monotonic() < deadline:
        time.sleep(0.005)
    time.sleep(0.031)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert BlobCache(tmp_path).verify().bad == []  # no half entry
    with valarfast.opened(filled["config"]), warnings.catch_warnings():
        warnings.simplefilter("error")
        got = _fetch(filled, tmp_path)
        assert np.array_equal(_bits(got), _bits(_fetch(filled, False)))
    assert BlobCache(tmp_path).info().temp_files == 0


def test_two_processes_fetch_into_one_cache(filled: dict[str, Any], tmp_path: Path) -> None:
    procs = [_fetcher(filled, tmp_path, loops=1) for _ in range(2)]
    outputs = [p.communicate(timeout=60)[0].split() for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    with valarfast.opened(filled["config"]):
        expected = _digest(_fetch(filled, False))
    assert [o[-1] for o in outputs] == [expected, expected]
    assert BlobCache(tmp_path).verify().bad == []
    with valarfast.opened(filled["config"]):
        assert _digest(_fetch(filled, tmp_path)) == expected

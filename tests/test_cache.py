"""The blob cache's storage on real files: hits, misses, versions, damage, crashes, races, LRU."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

from valarfast import cache_cli
from valarfast.cache import (
    BlobCache,
    CacheCorruptionWarning,
    CacheKey,
    default_directory,
    parse_size,
    resolve_cache,
)

ROOT = Path(__file__).resolve().parent.parent


def _keys(n: int, version: bytes = b"v1", kind: str = "well_features") -> list[CacheKey]:
    return [CacheKey(kind, 1000 + i, version + bytes([i % 256]) * 8, "float") for i in range(n)]


def _ragged(n: int, width: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A float32 matrix with NaN padding, odd NaN payloads, -0.0, inf and subnormals; lengths."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(0, width + 1, n)
    lengths[0] = width
    bits = rng.integers(0, 2**32, (n, width), dtype=np.uint64).astype(np.uint32)
    m = bits.view(np.float32).copy()
    m[0, :4] = np.array([-0.0, np.inf, 1e-45, np.nan], dtype=np.float32)
    for i, k in enumerate(lengths):
        m[i, k:] = np.nan
    return m, lengths


def _bits(a: np.ndarray) -> np.ndarray:
    return a.view(np.uint32)


def test_write_then_read_is_bit_exact(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path)
    m, lengths = _ragged(12, 300)
    keys = _keys(12)
    assert cache.store_rows(keys, m, lengths) == 12
    out = np.full_like(m, np.nan)
    missing = cache.fill_from_cache(keys, out, lengths=lengths)
    assert missing.tolist() == []
    assert np.array_equal(_bits(out), _bits(m))
    assert cache.hits == 12


def test_miss_and_partial_hit_fill_only_cached_rows(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path)
    m, lengths = _ragged(10, 200, seed=1)
    keys = _keys(10)
    cache.store_rows(keys, m, lengths, indices=[1, 4, 7])
    out = np.full_like(m, 5.0)
    missing = cache.fill_from_cache(keys, out, lengths=lengths, fill=np.nan)
    assert missing.tolist() == [0, 2, 3, 5, 6, 8, 9]
    for i in (1, 4, 7):
        k = lengths[i]
        assert np.array_equal(_bits(out[i, :k]), _bits(m[i, :k]))
        assert (out[i, k:] == 5.0).all()  # past the row's length: untouched
    assert (out[missing] == 5.0).all()  # missing rows: untouched
    empty = BlobCache(tmp_path / "other")
    assert empty.fill_from_cache(keys, out, lengths=lengths).tolist() == list(range(10))


def test_read_without_expected_length_and_longer_row(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path)
    key = CacheKey("sensor_data", 3, b"h", "unsigned_short")
    cache.write(key, np.arange(40, dtype=np.uint16))
    row = np.zeros(50, np.uint16)
    assert cache.read_into(key, row) == 40
    assert row[:40].tolist() == list(range(40)) and not row[40:].any()
    assert cache.read_into(key, np.zeros(39, np.uint16)) is None  # does not fit: miss
    assert cache.read_into(key, row, expected_items=41) is None  # other length: miss
    assert cache.read_into(key, np.zeros(40, np.int16)) is None  # other dtype: miss


def test_changed_hash_is_a_miss_then_replaced(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path)
    old, new = (
        CacheKey("well_features", 9, b"a" * 40, "float"),
        CacheKey("well_features", 9, b"b" * 40, "float"),
    )
    cache.write(old, np.ones(8, np.float32))
    row = np.zeros(8, np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a new version is not damage: no warning
        assert cache.read_into(new, row, expected_items=8) is None
    cache.write(new, np.full(8, 2.0, np.float32))
    assert cache.read_into(old, row, expected_items=8) is None
    assert cache.read_into(new, row, expected_items=8) == 8 and (row == 2.0).all()
    assert len(list(tmp_path.rglob("*.vfc"))) == 1  # the new version replaced the old


def test_lengths_from_headers_only_for_the_same_version(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path)
    key = CacheKey("sensor_data", 21, b"v" * 20, "short")
    cache.write(key, np.arange(6, dtype=np.int16))
    lookup = cache.length_lookup("sensor_data", "short", np.int16)
    assert cache.known_items(key, np.int16) == 6 and lookup(21, b"v" * 20) == 12
    others = [
        lookup(21, b"v" * 19),  # a prefix of the hash is another version
        lookup(21, b"v" * 21),
        lookup(21, None),
        lookup(22, b"v" * 20),
        lookup(-1, b"v" * 20),
        cache.length_lookup("sensor_data", "short", np.uint16)(21, b"v" * 20),  # other dtype
        cache.length_lookup("sensor_data", "shorts", np.int16)(21, b"v" * 20),
        cache.length_lookup("sensor_datum", "short", np.int16)(21, b"v" * 20),
    ]
    assert others == [None] * len(others)
    with pytest.raises(ValueError, match="type_name"):
        cache.length_lookup("sensor_data", "no such/type", np.int16)


def test_read_array_allocates_from_the_header(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path)
    key = CacheKey("sensor_data", 4, b"h" * 20, "double")
    values = np.array([1.5, -0.0, np.inf, np.nan, 5e-324])
    cache.write(key, values)
    got = cache.read_array(key, np.float64)
    assert got is not None and got.tobytes() == values.tobytes()
    assert cache.read_array(CacheKey("sensor_data", 4, b"g" * 20, "double"), np.float64) is None
    assert cache.read_array(CacheKey("sensor_data", 5, b"h" * 20, "double"), np.float64) is None
    path = cache.path_for(key)
    data = bytearray(path.read_bytes())
    data[30] ^= 0x01  # the header: its length cannot be trusted, the entry is reported
    path.write_bytes(bytes(data))
    with pytest.warns(CacheCorruptionWarning, match="header checksum"):
        assert cache.read_array(key, np.float64) is None
    assert not path.exists()
    cache.write(key, values)
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x01  # the payload
    path.write_bytes(bytes(data))
    with pytest.warns(CacheCorruptionWarning, match="payload checksum"):
        assert cache.read_array(key, np.float64) is None
    assert not path.exists()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert BlobCache(tmp_path, enabled=False).read_array(key, np.float64) is None


def _one_entry(tmp_path: Path, n: int = 64) -> tuple[BlobCache, CacheKey, Path]:
    cache = BlobCache(tmp_path)
    key = CacheKey("stimulus_frames", 5, b"x" * 20, "unsigned_byte")
    cache.write(key, np.arange(n, dtype=np.uint8))
    return cache, key, cache.path_for(key)


@pytest.mark.parametrize(
    ("where", "what"),
    [(200, "payload"), (130, "payload"), (20, "header"), (0, "magic"), (126, "padding")],
)
def test_corrupt_entry_warns_is_removed_and_never_returned(
    tmp_path: Path, where: int, what: str
) -> None:
    cache, key, path = _one_entry(tmp_path, n=256)
    data = bytearray(path.read_bytes())
    data[where] ^= 0x40
    path.write_bytes(bytes(data))
    row = np.full(256, 7, np.uint8)
    if what == "padding":  # bytes outside header fields and payload do not matter
        assert cache.read_into(key, row, expected_items=256) == 256
        return
    with pytest.warns(CacheCorruptionWarning, match="corrupt cache entry"):
        assert cache.read_into(key, row, expected_items=256, fill=7) is None
    assert (row == 7).all()  # what was read into the row was reset to the fill
    assert not path.exists()


@pytest.mark.parametrize("cut", [0, 50, 128, 129, 128 + 63])
def test_truncated_entry_warns_and_is_removed(tmp_path: Path, cut: int) -> None:
    cache, key, path = _one_entry(tmp_path)
    path.write_bytes(path.read_bytes()[:cut])
    for expected in (64, None):
        if not path.exists():
            cache.write(key, np.arange(64, dtype=np.uint8))
            path.write_bytes(path.read_bytes()[:cut])
        row = np.zeros(64, np.uint8)
        with pytest.warns(CacheCorruptionWarning):
            assert cache.read_into(key, row, expected_items=expected, fill=0) is None
        assert not row.any() and not path.exists()


@pytest.mark.parametrize("damage", ["swap blocks", "zero block", "tail bit", "two flips"])
def test_checksum_catches_block_damage(tmp_path: Path, damage: str) -> None:
    cache = BlobCache(tmp_path)
    key = CacheKey("sensor_data", 77, b"d", "double")
    values = np.random.default_rng(4).standard_normal(5 * 512 + 3)  # 5 blocks of 4 KiB + a tail
    cache.write(key, values)
    path = cache.path_for(key)
    data = bytearray(path.read_bytes())
    payload = memoryview(data)[128:]
    if damage == "swap blocks":
        payload[4096:8192], payload[8192:12288] = (
            bytes(payload[8192:12288]),
            bytes(payload[4096:8192]),
        )
    elif damage == "zero block":
        payload[12288:16384] = bytes(4096)
    elif damage == "tail bit":
        payload[-2] ^= 0x10
    else:  # the same bit flipped in two blocks
        payload[100] ^= 0x08
        payload[4196] ^= 0x08
    path.write_bytes(bytes(data))
    row = np.zeros(values.size)
    with pytest.warns(CacheCorruptionWarning, match="checksum"):
        assert cache.read_into(key, row, expected_items=values.size, fill=0.0) is None
    assert not row.any()


def test_overlong_entry_is_corrupt(tmp_path: Path) -> None:
    cache, key, path = _one_entry(tmp_path)
    path.write_bytes(path.read_bytes() + b"\0")
    with pytest.warns(CacheCorruptionWarning, match="size"):
        assert cache.read_into(key, np.zeros(64, np.uint8), expected_items=64) is None


def test_verify_and_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cache = BlobCache(tmp_path)
    m, lengths = _ragged(6, 100, seed=2)
    keys = _keys(6)
    cache.store_rows(keys, m, lengths)
    bad = cache.path_for(keys[2])
    bad.write_bytes(bad.read_bytes()[:-3])
    foreign = tmp_path / "notes.txt"
    foreign.write_text("not ours")
    assert cache_cli.main(["--dir", str(tmp_path), "info"]) == 0
    out = capsys.readouterr().out
    assert "entries     6" in out and "well_features" in out
    assert cache_cli.main(["--dir", str(tmp_path), "verify"]) == 1
    out = capsys.readouterr().out
    assert "5 ok, 1 bad" in out and str(bad) in out and not bad.exists()
    assert cache_cli.main(["--dir", str(tmp_path), "verify"]) == 0
    assert cache_cli.main(["--dir", str(tmp_path), "clear"]) == 0
    assert "removed 5 files" in capsys.readouterr().out
    assert foreign.exists() and not list(tmp_path.rglob("*.vfc"))  # only our files go
    assert cache.info().entries == 0


def test_eviction_keeps_recently_used(tmp_path: Path) -> None:
    entry = 128 + 1000 * 4
    cache = BlobCache(tmp_path, max_bytes=10 * entry)
    keys = _keys(10)
    m = np.ones((10, 1000), np.float32)
    cache.store_rows(keys, m, [1000] * 10)
    assert cache.info().entries == 10
    for i, key in enumerate(keys):  # make ages explicit: key 0 oldest
        os.utime(cache.path_for(key), (1_000_000 + i, 1_000_000 + i))
    row = np.empty(1000, np.float32)
    assert cache.read_into(keys[0], row, expected_items=1000) == 1000  # a hit makes 0 the newest
    more = _keys(4, version=b"v2", kind="sensor_data")
    cache.store_rows(more, np.ones((4, 1000), np.float32), [1000] * 4)
    info = cache.info()
    assert info.total_bytes <= 10 * entry
    assert cache.path_for(keys[0]).exists()  # recently used survives
    assert not cache.path_for(keys[1]).exists()  # least recently used went first
    assert all(cache.path_for(k).exists() for k in more)


def test_disabled_cache_is_inert(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path, enabled=False)
    key = _keys(1)[0]
    assert cache.write(key, np.ones(3, np.float32)) is False
    assert cache.read_into(key, np.ones(3, np.float32)) is None
    assert not list(tmp_path.iterdir())


def test_settings_and_resolution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_directory() == tmp_path / "xdg" / "valarfast"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/path")
    assert default_directory() == Path.home() / ".cache" / "valarfast"
    assert BlobCache.from_settings({"database": "valar"}) is None
    assert BlobCache.from_settings({"cache": "off", "cache_dir": str(tmp_path)}) is None
    found = BlobCache.from_settings({"cache_dir": str(tmp_path), "cache_max_bytes": "2G"})
    assert found is not None and found.directory == tmp_path and found.max_bytes == 2 * 2**30
    assert resolve_cache(False, {"cache": True}) is None
    resolved = resolve_cache(None, {"cache_dir": str(tmp_path)}, namespace="db-1")
    assert resolved is not None and resolved.namespace == "db-1"
    assert resolve_cache(tmp_path) is not None
    with pytest.raises(ValueError, match="cache size"):
        parse_size("lots")
    with pytest.raises(ValueError, match="positive"):
        parse_size(0)
    with pytest.raises(ValueError, match="'cache' must be true or false"):
        BlobCache.from_settings({"cache": "maybe"})
    with pytest.raises(TypeError, match="cache="):
        resolve_cache(3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="namespace"):
        BlobCache(tmp_path, namespace="../escape")


def test_bad_arguments_are_named(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path)
    key = _keys(1)[0]
    with pytest.raises(ValueError, match="kind"):
        CacheKey("well features/..", 1, b"", "float")
    with pytest.raises(ValueError, match="digest"):
        CacheKey("well_features", 1, b"x" * 65, "float")
    with pytest.raises(TypeError, match="row_id"):
        CacheKey("well_features", "1", b"", "float")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="contiguous"):
        cache.read_into(key, np.zeros((4, 4), np.float32)[:, 0])
    frozen = np.zeros(4, np.float32)
    frozen.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        cache.read_into(key, frozen)
    with pytest.raises(ValueError, match="does not fit"):
        cache.read_into(key, np.zeros(4, np.float32), expected_items=5)
    with pytest.raises(ValueError, match="3 keys"):
        cache.fill_from_cache(_keys(3), np.zeros((2, 4), np.float32))


_WRITER = textwrap.dedent(
    """
    import sys, numpy as np
    from valarfast.cache import BlobCache, CacheKey
    directory = sys.argv[1]
    seed, rounds, base = (int(a) for a in sys.argv[2:5])
    cache = BlobCache(directory)
    order = np.random.default_rng(seed).permutation(40)
    print("ready", flush=True)
    for _ in range(rounds):
        for i in order:
            row = np.full(base + int(i), float(i), np.float32)
            cache.write(CacheKey("well_features", int(i), b"h%d" % i, "float"), row)
    """
)


def _writer(directory: Path, seed: int, rounds: int, base: int = 50_000) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(directory), str(seed), str(rounds), str(base)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )


def _check_all(cache: BlobCache, base: int = 50_000) -> int:
    hits = 0
    for i in range(40):
        row = np.zeros(base + i, np.float32)
        key = CacheKey("well_features", i, b"h%d" % i, "float")
        if cache.read_into(key, row, expected_items=base + i) is not None:
            assert (row == float(i)).all()
            hits += 1
    return hits


def test_kill_during_writes_leaves_no_half_entry(tmp_path: Path) -> None:
    base = 1_000_000  # 4 MB rows: most of the writer's time is spent inside a write
    proc = _writer(tmp_path, seed=1, rounds=10_000, base=base)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    deadline = time.monotonic() + 20
    while len(list(tmp_path.rglob("*.vfc"))) < 5 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.0537)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    cache = BlobCache(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no entry may be damaged
        _check_all(cache, base)
    report = cache.verify()
    assert report.bad == [] and report.checked >= 5
    assert cache.info().temp_files == 0  # the dead writer's temporary file (if any) was swept
    # a clean re-run completes the cache and everything reads back exactly
    assert _writer(tmp_path, seed=2, rounds=1, base=base).wait() == 0
    assert _check_all(cache, base) == 40


def test_two_processes_fill_the_same_cache_at_once(tmp_path: Path) -> None:
    procs = [_writer(tmp_path, seed=s, rounds=3) for s in (3, 4)]
    cache = BlobCache(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        while any(p.poll() is None for p in procs):  # read while both write: never a bad row
            _check_all(cache)
    assert [p.wait() for p in procs] == [0, 0]
    assert _check_all(cache) == 40
    assert cache.verify().bad == [] and cache.info().temp_files == 0

"""A local cache of decoded blob rows, versioned by the server's hash: never stale, never corrupt.

One file per row: ``<root>/<namespace>/<kind>/<xx>/<row_id>.<type_name>.vfc`` holding a 128-byte
header (magic, format version, row id, type name, numpy dtype, item count, the server's hash of
the row, a checksum of the payload (:func:`payload_checksum`) and a crc32 of the header)
followed by the decoded native array. A read is one ``readv`` of header and payload straight
into the caller's matrix row; a hit is returned only when the header, the server hash, the size
and the payload checksum all match. A corrupt or truncated entry gives a
:class:`CacheCorruptionWarning`, is deleted and counts as a miss. Writes go to a temporary file
in the same directory and are renamed into place, so a crash leaves no half entry and two
processes may fill the same cache at once (no fsync: a power cut can leave an entry whose
checksum fails, which is then refetched). A hit touches the entry's mtime; when the cache grows
past ``max_bytes`` the least recently used entries go.

>>> import numpy as np, tempfile
>>> cache = BlobCache(tempfile.mkdtemp())
>>> key = CacheKey("well_features", 7, b"server-hash", "float")
>>> cache.write(key, np.arange(3, dtype=np.float32))
True
>>> row = np.full(5, np.nan, dtype=np.float32)
>>> cache.read_into(key, row)
3
>>> row
array([ 0.,  1.,  2., nan, nan], dtype=float32)
>>> cache.read_into(CacheKey("well_features", 7, b"new-hash", "float"), row) is None
True
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import queue
import re
import secrets
import struct
import threading
import time
import warnings
import weakref
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

__all__ = [
    "DEFAULT_MAX_BYTES",
    "SETTINGS_KEYS",
    "BlobCache",
    "CacheCorruptionWarning",
    "CacheInfo",
    "CacheKey",
    "VerifyReport",
    "cache_for_database",
    "default_directory",
    "make_keys",
    "namespace_for",
    "parse_size",
    "payload_checksum",
    "resolve_cache",
]

DEFAULT_MAX_BYTES = 10 * 2**30
#: config keys read by :meth:`BlobCache.from_settings` (the connection config accepts them)
SETTINGS_KEYS = ("cache", "cache_dir", "cache_max_bytes")

_MAGIC = b"VFCACHE\x00"
_VERSION = 1
_HEADER_SIZE = 128
# magic, version, header size, row id, item count, payload crc32, type name, dtype, hash len, hash
_FIELDS = struct.Struct("<8sHHQQI16s8sB64s")
_HEADER_CRC = struct.Struct("<I")
_PAD = _HEADER_SIZE - _FIELDS.size - _HEADER_CRC.size
_MAX_DIGEST = 64
_BLOCK = 4096  # payload checksum granularity (bytes)
_ENTRY_SUFFIX = ".vfc"
_TEMP_SUFFIX = ".tmp"
_TEMP_MAX_AGE = 3600.0  # seconds after which a leftover temporary file is removed
_EVICT_TO = 0.9  # eviction stops at this fraction of max_bytes
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_ENTRY_NAME = re.compile(r"^(\d+)\.([A-Za-z0-9_]+)\.vfc$")
_TEMP_NAME = re.compile(r"^\..+\.(\d+)\.[0-9a-f]+\.tmp$")
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}
_TRUE_WORDS = {
    "1": True,
    "true": True,
    "yes": True,
    "on": True,
    "0": False,
    "false": False,
    "no": False,
    "off": False,
}


# bytes in each cache directory as of this process's last scan, plus what it wrote since (other
# processes' writes are seen at the next scan: the size limit is a soft limit)
_USAGE: dict[str, int] = {}


class CacheCorruptionWarning(UserWarning):
    """A cache entry failed its checks; it was deleted and the row is fetched again."""


@dataclass(frozen=True)
class CacheKey:
    """What identifies one cached row: table, row id, the server's hash (a version tag), type.

    >>> CacheKey("sensor_data", 12, bytes(20), "unsigned_short").row_id
    12
    """

    kind: str
    row_id: int
    digest: bytes
    type_name: str

    def __post_init__(self) -> None:
        for what, value in (("kind", self.kind), ("type_name", self.type_name)):
            if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z0-9_]{1,16}", value):
                raise ValueError(f"cache key {what} must be 1-16 letters, digits or '_': {value!r}")
        if isinstance(self.row_id, bool) or not isinstance(self.row_id, (int, np.integer)):
            raise TypeError(f"cache key row_id must be an int, not {type(self.row_id).__name__}")
        if not 0 <= int(self.row_id) < 2**63:
            raise ValueError(f"cache key row_id out of range: {self.row_id}")
        if not isinstance(self.digest, (bytes, bytearray)) or len(self.digest) > _MAX_DIGEST:
            raise ValueError(
                f"cache key digest must be at most {_MAX_DIGEST} bytes: {self.digest!r}"
            )


@dataclass(frozen=True)
class CacheInfo:
    """What ``valarfast cache info`` shows."""

    directory: Path
    enabled: bool
    max_bytes: int
    entries: int
    total_bytes: int
    temp_files: int
    by_kind: dict[str, tuple[int, int]] = field(default_factory=dict)  # kind -> (entries, bytes)
    oldest: float | None = None
    newest: float | None = None


@dataclass(frozen=True)
class VerifyReport:
    """What ``valarfast cache verify`` found: entries checked, and the bad ones (removed)."""

    checked: int
    bad: list[tuple[Path, str]]
    temp_removed: int

    @property
    def ok(self) -> int:
        return self.checked - len(self.bad)


class _Entry(NamedTuple):
    path: Path
    size: int
    mtime: float


class _Corrupt(Exception):
    """Internal: an entry failed a check (the message says which)."""


def default_directory() -> Path:
    """``$XDG_CACHE_HOME/valarfast``, or ``~/.cache/valarfast`` when that is unset or relative.

    >>> default_directory().name
    'valarfast'
    """
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "valarfast"


def parse_size(value: int | str) -> int:
    """A size in bytes from an int or a string such as ``"500M"``, ``"20 GB"``, ``"1.5GiB"``.

    >>> parse_size("2K"), parse_size(10), parse_size("1.5 GiB")
    (2048, 10, 1610612736)
    """
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise TypeError(f"a cache size must be an int or a string like '20G', not {value!r}")
    if isinstance(value, int):
        size = value
    else:
        match = _SIZE.match(value)
        if match is None:
            raise ValueError(f"cannot read a cache size from {value!r} (try '500M' or '20G')")
        size = int(float(match.group(1)) * _SIZE_UNITS[match.group(2).lower()])
    if size <= 0:
        raise ValueError(f"a cache size must be positive, not {value!r}")
    return size


def _parse_flag(value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE_WORDS:
        return _TRUE_WORDS[value.strip().lower()]
    raise ValueError(f"config key 'cache' must be true or false, not {value!r}")


def namespace_for(database: Any) -> str:
    """A directory name for the server and database behind a peewee database (ids are per database).

    MySQL/MariaDB: the server's ``@@hostname``, ``@@port`` and the database name (stable across
    tunnels and local ports); SQLite: the file's absolute path. Returned as a short hex digest.
    """
    if "sqlite" in type(database).__name__.lower():
        name, identity = (
            Path(str(database.database)).stem,
            "sqlite:" + os.path.abspath(str(database.database)),
        )
    else:
        row = database.execute_sql("SELECT @@hostname, @@port, DATABASE()").fetchone()
        name, identity = str(row[2]), "mysql:{}:{}/{}".format(*row)
    tag = hashlib.sha1(identity.encode()).hexdigest()[:12]
    return f"{re.sub(r'[^A-Za-z0-9_.-]', '_', name)[:40]}-{tag}"


def payload_checksum(data: memoryview | bytes) -> int:
    """The 32-bit checksum of an entry's payload: crc32 of the 64-bit sums of its 4 KiB blocks.

    Three to four times faster than a crc32 of every byte (numpy sums each block, zlib hashes
    the short vector of sums, then the tail): any single-bit error, a lost, zeroed or misplaced
    block, and a truncation change it; only changes that cancel inside one block modulo 2**64
    could pass (accidental damage does not do that).

    >>> payload_checksum(bytes(5000)) == payload_checksum(bytes(4999) + b"\\x01")
    False
    """
    view = memoryview(data).cast("B")
    full = view.nbytes - view.nbytes % _BLOCK
    crc = 0
    if full:
        words = np.frombuffer(view, dtype="<u8", count=full // 8)
        crc = zlib.crc32(words.reshape(-1, _BLOCK // 8).sum(axis=1, dtype=np.uint64))
    return zlib.crc32(view[full:], crc)


def _row_bytes(row: np.ndarray, what: str) -> memoryview:
    """The bytes of a 1-D C-contiguous array, without a copy; ValueError naming the problem."""
    if not isinstance(row, np.ndarray):
        raise TypeError(f"{what} must be a numpy array, not {type(row).__name__}")
    if row.ndim != 1 or not row.flags.c_contiguous:
        raise ValueError(
            f"{what} must be a 1-D contiguous array (a matrix row), got shape {row.shape}"
        )
    return memoryview(row).cast("B")  # type: ignore[arg-type]


def _read_fully(fd: int, buffers: list[Any]) -> int:
    """readv until the buffers are full or the file ends; the number of bytes read."""
    total = 0
    views = [memoryview(b).cast("B") for b in buffers]
    while views:
        n = os.readv(fd, views)
        if n == 0:
            break
        total += n
        while views and n >= views[0].nbytes:
            n -= views[0].nbytes
            views.pop(0)
        if views and n:
            views[0] = views[0][n:]
    return total


class BlobCache:
    """Decoded blob rows on local disk, keyed by :class:`CacheKey`, in one namespace.

    ``directory=None`` means :func:`default_directory`. ``namespace`` separates servers and
    databases (see :func:`namespace_for`). ``enabled=False`` makes every read a miss and every
    write a no-op. ``max_bytes`` is a soft limit: checked after each batch of writes.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str] | None = None,
        *,
        max_bytes: int | str = DEFAULT_MAX_BYTES,
        enabled: bool = True,
        namespace: str = "default",
    ) -> None:
        self.directory = (
            Path(directory).expanduser() if directory is not None else default_directory()
        )
        self.max_bytes = parse_size(max_bytes)
        self.enabled = bool(enabled)
        if not _NAME.match(namespace):
            raise ValueError(f"cache namespace must be a plain name, not {namespace!r}")
        self.namespace = namespace
        self.hits = 0
        self.misses = 0

    def __repr__(self) -> str:
        state = "on" if self.enabled else "off"
        return (
            f"BlobCache({str(self.directory)!r}, namespace={self.namespace!r}, "
            f"max_bytes={self.max_bytes}, {state})"
        )

    @classmethod
    def from_settings(
        cls, settings: Mapping[str, Any], *, namespace: str = "default"
    ) -> BlobCache | None:
        """The cache a config asks for, or None: on when ``cache`` is true or ``cache_dir`` is set.

        >>> BlobCache.from_settings({"database": "valar"}) is None
        True
        >>> BlobCache.from_settings({"cache": True, "cache_max_bytes": "1G"}).max_bytes
        1073741824
        """
        directory = settings.get("cache_dir")
        if directory is not None and not isinstance(directory, (str, os.PathLike)):
            raise TypeError(f"config key 'cache_dir' must be a path, not {directory!r}")
        on = _parse_flag(settings["cache"]) if "cache" in settings else directory is not None
        if not on:
            return None
        return cls(
            directory,
            max_bytes=settings.get("cache_max_bytes", DEFAULT_MAX_BYTES),
            namespace=namespace,
        )

    def with_namespace(self, namespace: str) -> BlobCache:
        """The same cache directory and limits, for another server/database."""
        return BlobCache(
            self.directory, max_bytes=self.max_bytes, enabled=self.enabled, namespace=namespace
        )

    # ------------------------------------------------------------------ one entry
    def path_for(self, key: CacheKey) -> Path:
        """Where an entry lives (the hash is in the header, so a new version replaces the old)."""
        return Path(self._entry_path(key.kind, int(key.row_id), key.type_name))

    def _entry_path(self, kind: str, row_id: int, type_name: str) -> str:
        # a string, not a Path: this runs once or twice per row of every warm fetch
        root = os.path.join(self.directory, self.namespace)
        return f"{root}/{kind}/{row_id & 0xFF:02x}/{row_id}.{type_name}{_ENTRY_SUFFIX}"

    def read_into(
        self,
        key: CacheKey,
        out_row: np.ndarray,
        *,
        expected_items: int | None = None,
        fill: Any = None,
    ) -> int | None:
        """Read an entry straight into ``out_row``; the items written, or None on a miss.

        With ``expected_items`` (known from the server's blob length) header and payload come in
        one ``readv``; an entry of another length is a miss. Items past the entry are untouched.
        On a miss nothing is changed, except after a failed check where the bytes read are reset
        to ``fill`` when given. A corrupt or truncated entry warns and is deleted.
        """
        got = self._read_unchecked(key, out_row, expected_items, fill)
        if got is None:
            return None
        n_items, want = got
        if payload_checksum(_row_bytes(out_row[:n_items], "out_row")) != want:
            self._crc_failed(key, out_row, n_items, fill)
            return None
        self.hits += 1
        return n_items

    def _read_unchecked(
        self, key: CacheKey, out_row: np.ndarray, expected_items: int | None, fill: Any
    ) -> tuple[int, int] | None:
        """Everything of a read but the payload crc: (items read, the crc the header wants)."""
        out = _row_bytes(out_row, "out_row")
        if not out_row.flags.writeable:
            raise ValueError("out_row is read-only")
        itemsize = out_row.dtype.itemsize
        if expected_items is not None and not 0 <= expected_items <= out_row.shape[0]:
            raise ValueError(
                f"expected_items={expected_items} does not fit a row of {out_row.shape[0]}"
            )
        if not self.enabled:
            self.misses += 1
            return None
        path = self._entry_path(key.kind, int(key.row_id), key.type_name)
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            self.misses += 1
            return None
        except OSError as e:
            warnings.warn(
                f"cannot open cache entry {path}: {e}", CacheCorruptionWarning, stacklevel=3
            )
            self.misses += 1
            return None
        written = 0
        try:
            head = bytearray(_HEADER_SIZE)
            extra = bytearray(1)
            if expected_items is not None:
                written = expected_items
                got = _read_fully(fd, [head, out[: expected_items * itemsize], extra])
                n_items = self._check_header(head, key, out_row, got, path)
                if n_items != expected_items:
                    raise _Stale()
            else:
                got = _read_fully(fd, [head])
                n_items = self._check_header(head, key, out_row, got, path)
                if n_items > out_row.shape[0]:
                    raise _Stale()
                written = n_items
                got += _read_fully(fd, [out[: n_items * itemsize], extra])
            if got != _HEADER_SIZE + n_items * itemsize:
                raise _Corrupt(
                    f"size {got} bytes, the header says {_HEADER_SIZE + n_items * itemsize}"
                )
            with contextlib.suppress(OSError):
                os.utime(fd)  # least-recently-used bookkeeping: a hit is a use
        except _Stale:
            self._reset(out_row, written, fill)
            self.misses += 1
            return None
        except (_Corrupt, OSError) as e:
            self._reset(out_row, written, fill)
            self._discard(path, str(e))
            self.misses += 1
            return None
        finally:
            os.close(fd)
        return n_items, self._payload_crc(head)

    def _crc_failed(self, key: CacheKey, out_row: np.ndarray, n_items: int, fill: Any) -> None:
        self._reset(out_row, n_items, fill)
        self._discard(self.path_for(key), "payload checksum mismatch")
        self.misses += 1

    def known_items(self, key: CacheKey, dtype: Any) -> int | None:
        """The item count of the entry for ``key`` (same hash, same dtype), from its header only.

        Lets a caller skip asking the server for a blob's length (MariaDB reads the whole blob
        to compute ``LENGTH()``). The payload is checked later, when the row is read.
        """
        return self._known(
            key.kind,
            int(key.row_id),
            bytes(key.digest),
            _padded(key.type_name, 16),
            _dtype_tag(dtype),
        )

    def _known(
        self, kind: str, row_id: int, digest: bytes, type_tag: bytes, dtype_tag: bytes
    ) -> int | None:
        """:meth:`known_items` on raw fields: one open and one 128-byte read, no objects made."""
        if not self.enabled:
            return None
        try:
            fd = os.open(
                self._entry_path(kind, row_id, type_tag.rstrip(b"\0").decode()), os.O_RDONLY
            )
        except OSError:
            return None  # missing (or unreadable: the read reports it)
        try:
            head = os.read(fd, _HEADER_SIZE)
            fields = self._unpack(head, len(head))
        except (OSError, _Corrupt):
            return None  # damaged: the read reports and removes it
        finally:
            os.close(fd)
        _, _, _, got_id, n_items, _, type_name, dtype_str, digest_len, got_digest = fields
        if (
            got_id != row_id
            or type_name != type_tag
            or dtype_str != dtype_tag
            or digest_len != len(digest)
            or got_digest[:digest_len] != digest
        ):
            return None
        return int(n_items)

    def read_array(self, key: CacheKey, dtype: Any) -> np.ndarray | None:
        """A new array of ``dtype`` holding the entry for ``key``, or None on a miss.

        For rows read one by one whose length the caller does not know (no ``LENGTH()`` asked).

        >>> import numpy as np, tempfile
        >>> cache = BlobCache(tempfile.mkdtemp())
        >>> key = CacheKey("sensor_data", 3, b"h", "short")
        >>> _ = cache.write(key, np.arange(4, dtype=np.int16))
        >>> cache.read_array(key, np.int16), cache.read_array(key, np.int32)
        (array([0, 1, 2, 3], dtype=int16), None)
        """
        n_items = self.known_items(key, dtype)
        if n_items is None:  # a damaged entry is reported and removed by a read into no room
            self.read_into(key, np.empty(0, dtype=dtype))
            return None
        values = np.empty(n_items, dtype=dtype)
        return values if self.read_into(key, values, expected_items=n_items) is not None else None

    def length_lookup(
        self, kind: str, type_name: str, dtype: Any
    ) -> Callable[[int, bytes | None], int | None]:
        """``lookup(row_id, server_hash) -> blob bytes or None`` over :meth:`known_items`.

        >>> import numpy as np, tempfile
        >>> cache = BlobCache(tempfile.mkdtemp())
        >>> _ = cache.write(CacheKey("well_features", 3, b"h", "float"), np.ones(5, np.float32))
        >>> lookup = cache.length_lookup("well_features", "float", np.float32)
        >>> lookup(3, b"h"), lookup(3, b"other"), lookup(4, b"h")
        (20, None, None)
        """
        CacheKey(kind, 0, b"", type_name)  # checks kind and type_name once
        itemsize = np.dtype(dtype).itemsize
        type_tag, dtype_tag = _padded(type_name, 16), _dtype_tag(dtype)

        def lookup(row_id: int, digest: bytes | None) -> int | None:
            if digest is None or not 0 <= row_id < 2**63 or len(digest) > _MAX_DIGEST:
                return None
            n = self._known(kind, int(row_id), bytes(digest), type_tag, dtype_tag)
            return None if n is None else n * itemsize

        return lookup

    def write(self, key: CacheKey, row: np.ndarray) -> bool:
        """Store a decoded 1-D row atomically; False (and a warning) when the disk refuses."""
        payload = _row_bytes(row, "row")
        if not self.enabled:
            return False
        path = self.path_for(key)
        header = self._header(key, row, payload_checksum(payload))
        temp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(6)}{_TEMP_SUFFIX}")
        try:
            try:
                fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileNotFoundError:
                os.makedirs(self.directory, mode=0o700, exist_ok=True)  # private: lab data
                os.makedirs(temp.parent, mode=0o700, exist_ok=True)
                fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                views = [memoryview(header), payload]
                while views:
                    n = os.writev(fd, views)
                    while views and n >= views[0].nbytes:
                        n -= views[0].nbytes
                        views.pop(0)
                    if views and n:
                        views[0] = views[0][n:]
            finally:
                os.close(fd)
            os.replace(temp, path)
        except OSError as e:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            warnings.warn(
                f"cannot write cache entry {path}: {e}", CacheCorruptionWarning, stacklevel=2
            )
            return False
        key_dir = str(self.directory)
        if key_dir in _USAGE:
            _USAGE[key_dir] += len(header) + payload.nbytes
        return True

    # ------------------------------------------------------------------ many rows (batch)
    def fill_from_cache(
        self,
        keys: Sequence[CacheKey | None],
        matrix: np.ndarray,
        *,
        lengths: Sequence[int] | np.ndarray | None = None,
        fill: Any = None,
        pad: bool = False,
    ) -> np.ndarray:
        """Fill the rows of ``matrix`` the cache holds; return the indices (int64) still missing.

        ``keys[i]`` describes row ``i`` (None: not cacheable, always missing); ``lengths[i]`` is
        the item count the server reports for it. With ``pad`` the rest of each row filled
        from the cache is set to ``fill``. Rows not filled are left as they were.

        >>> import numpy as np, tempfile
        >>> cache = BlobCache(tempfile.mkdtemp())
        >>> keys = [CacheKey("well_features", i, b"h", "float") for i in (1, 2)]
        >>> m = np.zeros((2, 3), np.float32)
        >>> cache.fill_from_cache(keys, m, lengths=[3, 3])
        array([0, 1])
        """
        self._check_matrix(keys, matrix)
        if pad and fill is None:
            raise ValueError("pad=True needs a fill value")
        missing: list[int] = []
        for i, key in enumerate(keys):
            expected = None if lengths is None else int(lengths[i])
            got = (
                None
                if key is None
                else self.read_into(key, matrix[i], expected_items=expected, fill=fill)
            )
            if got is None:
                missing.append(i)
            elif pad and got < matrix.shape[1]:
                matrix[i, got:] = fill
        # (a worker thread for the crc, overlapping the next read, was measured slower: 94 vs 78 ms)
        return np.asarray(missing, dtype=np.int64)

    def store_rows(
        self,
        keys: Sequence[CacheKey | None],
        matrix: np.ndarray,
        lengths: Sequence[int] | np.ndarray,
        indices: Sequence[int] | np.ndarray | None = None,
    ) -> int:
        """Store rows ``indices`` (default all) of ``matrix``, each cut to its length; then evict.

        Returns the number of entries written.
        """
        self._check_matrix(keys, matrix)
        if not self.enabled:
            return 0
        chosen = range(len(keys)) if indices is None else indices
        written = 0
        for i in chosen:
            key = keys[int(i)]
            if key is not None:
                written += self.write(key, matrix[int(i), : int(lengths[int(i)])])
        if written:
            self.evict_if_needed()
        return written

    @contextlib.contextmanager
    def storing(
        self,
        keys: Sequence[CacheKey | None],
        matrix: np.ndarray,
        lengths: Sequence[int] | np.ndarray,
    ) -> Iterator[Callable[[int], None]]:
        """Store rows while they are fetched: call the yielded function with a row's index once
        the row is final; a background thread writes it. A clean exit waits for the writes (then
        evicts); an exception drops what is still queued (no half entry either way).

        >>> import numpy as np, tempfile
        >>> cache = BlobCache(tempfile.mkdtemp())
        >>> m = np.ones((2, 4), np.float32)
        >>> keys = [CacheKey("well_features", 1, b"h", "float"), None]
        >>> with cache.storing(keys, m, [4, 4]) as add:
        ...     add(0); add(1)
        >>> cache.info().entries
        1
        """
        self._check_matrix(keys, matrix)
        if not self.enabled:
            yield lambda i: None
            return
        writer = _RowWriter(self, keys, matrix, lengths)
        try:
            yield writer
        except BaseException:
            writer.close(cancel=True)
            raise
        writer.close(cancel=False)
        if writer.written:
            self.evict_if_needed()

    @staticmethod
    def _check_matrix(keys: Sequence[CacheKey | None], matrix: np.ndarray) -> None:
        if not isinstance(matrix, np.ndarray) or matrix.ndim != 2 or not matrix.flags.c_contiguous:
            raise ValueError("matrix must be a 2-D C-contiguous numpy array")
        if len(keys) != matrix.shape[0]:
            raise ValueError(f"{len(keys)} keys for a matrix of {matrix.shape[0]} rows")

    # ------------------------------------------------------------------ whole cache
    def info(self) -> CacheInfo:
        """Entries, bytes (in total and per table) and leftover temporary files, all namespaces."""
        entries, temps = self._scan(sweep=False)
        by_kind: dict[str, tuple[int, int]] = {}
        for e in entries:
            count, size = by_kind.get(e.path.parent.parent.name, (0, 0))
            by_kind[e.path.parent.parent.name] = (count + 1, size + e.size)
        mtimes = [e.mtime for e in entries]
        return CacheInfo(
            self.directory,
            self.enabled,
            self.max_bytes,
            len(entries),
            sum(e.size for e in entries),
            len(temps),
            dict(sorted(by_kind.items())),
            min(mtimes, default=None),
            max(mtimes, default=None),
        )

    def clear(self) -> tuple[int, int]:
        """Delete every entry and temporary file (only files this cache made); (files, bytes)."""
        entries, temps = self._scan(sweep=False)
        removed = freed = 0
        for path, size in [(e.path, e.size) for e in entries] + [(t, 0) for t in temps]:
            try:
                os.unlink(path)
                removed += 1
                freed += size
            except FileNotFoundError:
                pass
        self._remove_empty_dirs()
        _USAGE[str(self.directory)] = 0
        return removed, freed

    def verify(self) -> VerifyReport:
        """Check every entry's header, size and crc; delete bad ones and stale temp files."""
        entries, temps = self._scan(sweep=False)
        bad = []
        for e in entries:
            problem = self._verify_file(e.path)
            if problem is not None:
                bad.append((e.path, problem))
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(e.path)
        removed = sum(self._sweep_temp(t, force=False) for t in temps)
        return VerifyReport(len(entries), bad, removed)

    def evict(self, target_bytes: int | None = None) -> int:
        """Delete least recently used entries down to ``target_bytes``; return the bytes freed."""
        entries, _ = self._scan(sweep=True)
        total = sum(e.size for e in entries)
        target = int(self.max_bytes * _EVICT_TO) if target_bytes is None else target_bytes
        freed = 0
        for e in sorted(entries, key=lambda e: e.mtime):
            if total - freed <= target:
                break
            try:
                os.unlink(e.path)
                freed += e.size
            except FileNotFoundError:
                freed += e.size  # another process removed it
        _USAGE[str(self.directory)] = total - freed
        return freed

    # ------------------------------------------------------------------ internals
    def evict_if_needed(self) -> None:
        """Evict (least recently used first) when this process knows the cache is over its limit."""
        known = _USAGE.get(str(self.directory))
        if known is None:  # first writes of this process here: learn the usage once
            entries, _ = self._scan(sweep=True)
            known = _USAGE[str(self.directory)] = sum(e.size for e in entries)
        if known > self.max_bytes:
            self.evict()

    @staticmethod
    def _header(key: CacheKey, row: np.ndarray, payload_crc: int) -> bytes:
        fields = _FIELDS.pack(
            _MAGIC,
            _VERSION,
            _HEADER_SIZE,
            int(key.row_id),
            row.shape[0],
            payload_crc,
            key.type_name.encode(),
            row.dtype.str.encode(),
            len(key.digest),
            bytes(key.digest),
        )
        return fields + _HEADER_CRC.pack(zlib.crc32(fields)) + bytes(_PAD)

    @staticmethod
    def _unpack(head: bytes | bytearray, got: int) -> tuple[Any, ...]:
        if got < _HEADER_SIZE:
            raise _Corrupt(f"truncated: {got} bytes, shorter than the header")
        fields = _FIELDS.unpack_from(head)
        if fields[0] != _MAGIC:
            raise _Corrupt("not a valarfast cache entry (bad magic)")
        if fields[1] != _VERSION or fields[2] != _HEADER_SIZE:
            raise _Corrupt(f"unknown format version {fields[1]}")
        (crc,) = _HEADER_CRC.unpack_from(head, _FIELDS.size)
        if zlib.crc32(memoryview(head)[: _FIELDS.size]) != crc:
            raise _Corrupt("header checksum mismatch")
        return fields

    def _check_header(
        self, head: bytearray, key: CacheKey, out_row: np.ndarray, got: int, path: str | Path
    ) -> int:
        _, _, _, row_id, n_items, _, type_name, dtype, digest_len, digest = self._unpack(head, got)
        if row_id != int(key.row_id) or type_name.rstrip(b"\0").decode() != key.type_name:
            raise _Corrupt(f"entry is for row {row_id} ({type_name!r}), not for {key}")
        if dtype.rstrip(b"\0").decode() != out_row.dtype.str:
            raise _Stale()  # decoded as another native type (another machine or a type change)
        if digest[:digest_len] != bytes(key.digest):
            raise _Stale()
        return int(n_items)

    @staticmethod
    def _payload_crc(head: bytearray) -> int:
        return int(_FIELDS.unpack_from(head)[5])

    @staticmethod
    def _reset(out_row: np.ndarray, written: int, fill: Any) -> None:
        if written and fill is not None:
            out_row[:written] = fill

    def _discard(self, path: str | Path, reason: str) -> None:
        warnings.warn(
            f"corrupt cache entry {path} ({reason}): removed, fetching it again",
            CacheCorruptionWarning,
            stacklevel=3,
        )
        with contextlib.suppress(OSError):
            os.unlink(path)

    def _verify_file(self, path: Path) -> str | None:
        try:
            data = path.read_bytes()
        except OSError as e:
            return f"unreadable: {e}"
        try:
            fields = self._unpack(data[:_HEADER_SIZE], len(data))
        except _Corrupt as e:
            return str(e)
        match = _ENTRY_NAME.match(path.name)
        if match is None or int(match.group(1)) != fields[3]:
            return f"file name does not match row {fields[3]}"
        try:
            itemsize = np.dtype(fields[7].rstrip(b"\0").decode()).itemsize
        except TypeError:
            return f"unknown dtype {fields[7]!r}"
        if len(data) != _HEADER_SIZE + fields[4] * itemsize:
            return f"size {len(data)} bytes, the header says {_HEADER_SIZE + fields[4] * itemsize}"
        if payload_checksum(memoryview(data)[_HEADER_SIZE:]) != fields[5]:
            return "payload checksum mismatch"
        return None

    def _walk(self) -> Iterator[tuple[str, str]]:
        for dirpath, _dirs, files in os.walk(self.directory):
            for name in files:
                yield dirpath, name

    def _scan(self, *, sweep: bool) -> tuple[list[_Entry], list[Path]]:
        """All entries (every namespace) and temp files; ``sweep`` removes stale temporaries."""
        entries: list[_Entry] = []
        temps: list[Path] = []
        for dirpath, name in self._walk():
            path = Path(dirpath, name)
            if _ENTRY_NAME.match(name):
                try:
                    st = os.stat(path)
                except FileNotFoundError:
                    continue
                entries.append(_Entry(path, st.st_size, st.st_mtime))
            elif _TEMP_NAME.match(name) and not (sweep and self._sweep_temp(path, force=False)):
                temps.append(path)
        return entries, temps

    @staticmethod
    def _sweep_temp(path: Path, *, force: bool) -> bool:
        """Remove a temporary file left by a dead writer (or an old one); True if removed."""
        match = _TEMP_NAME.match(path.name)
        try:
            age = time.time() - os.stat(path).st_mtime
        except FileNotFoundError:
            return True
        dead = False
        if match is not None:
            pid = int(match.group(1))
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                dead = True
            except (PermissionError, OverflowError):
                pass
        if force or dead or age > _TEMP_MAX_AGE:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            return True
        return False

    def _remove_empty_dirs(self) -> None:
        for dirpath, _dirs, _files in os.walk(self.directory, topdown=False):
            if Path(dirpath) == self.directory:
                continue
            try:
                os.rmdir(dirpath)
            except OSError as e:
                if e.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOENT):
                    raise


class _RowWriter:
    """Writes matrix rows to a cache from a background thread, in the order they are queued."""

    def __init__(
        self,
        cache: BlobCache,
        keys: Sequence[CacheKey | None],
        matrix: np.ndarray,
        lengths: Sequence[int] | np.ndarray,
    ) -> None:
        self.cache, self.keys, self.matrix, self.lengths = cache, keys, matrix, lengths
        self.written = 0
        self._queue: queue.SimpleQueue[int | None] = queue.SimpleQueue()
        self._cancel = False
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="valarfast-cache", daemon=True)
        self._thread.start()

    def __call__(self, i: int) -> None:
        if self.keys[i] is not None:
            self._queue.put(i)

    def _run(self) -> None:
        while (i := self._queue.get()) is not None and not self._cancel:
            key = self.keys[i]
            assert key is not None
            try:
                self.written += self.cache.write(key, self.matrix[i, : int(self.lengths[i])])
            except BaseException as e:  # handed to the caller by close()
                self._error = e
                return

    def close(self, *, cancel: bool) -> None:
        self._cancel = cancel
        self._queue.put(None)
        self._thread.join()
        if self._error is not None and not cancel:
            raise self._error


def _padded(text: str, size: int) -> bytes:
    """A header text field as ``struct`` packs it (NUL-padded)."""
    return text.encode().ljust(size, b"\0")


def _dtype_tag(dtype: Any) -> bytes:
    return _padded(np.dtype(dtype).str, 8)


class _Stale(Exception):
    """Internal: the entry is sound but holds another version (hash, length or dtype)."""


def resolve_cache(
    cache: BlobCache | bool | str | os.PathLike[str] | None,
    settings: Mapping[str, Any] | None = None,
    *,
    namespace: str = "default",
) -> BlobCache | None:
    """What a batch function's ``cache=`` argument means: the cache to use, or None.

    None: whatever the config says (off unless ``cache``/``cache_dir`` is set); False: off;
    True: the configured cache or the default directory; a path: a cache there; a BlobCache: itself.

    >>> resolve_cache(False) is None
    True
    >>> resolve_cache(True).directory == default_directory()
    True
    """
    if cache is None:
        return BlobCache.from_settings(settings or {}, namespace=namespace)
    if cache is False:
        return None
    if cache is True:
        found = BlobCache.from_settings({**(settings or {}), "cache": True}, namespace=namespace)
        return found
    if isinstance(cache, BlobCache):
        return cache
    if isinstance(cache, (str, os.PathLike)):
        return BlobCache(cache, namespace=namespace)
    raise TypeError(
        f"cache= takes True, False, None, a path or a BlobCache, not {type(cache).__name__}"
    )


_NAMESPACES: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()


def cache_for_database(
    cache: BlobCache | bool | str | os.PathLike[str] | None, database: Any
) -> BlobCache | None:
    """What the batch functions call: ``cache=`` plus the open connection's config -> a cache.

    The config's cache keys are read from ``valarfast.model.conn.settings.cache`` when the
    connection layer keeps them there (else the config has none). The namespace (one query,
    remembered per database object) is asked for only when a cache is in use.
    """
    if cache is False:
        return None
    settings: Mapping[str, Any] = {}
    try:
        from valarfast import model

        settings = getattr(getattr(model.conn, "settings", None), "cache", None) or {}
    except ImportError:
        pass
    chosen = resolve_cache(cache, settings)
    if chosen is None or chosen.namespace != "default":
        return chosen
    namespace = _NAMESPACES.get(database)
    if namespace is None:
        namespace = _NAMESPACES[database] = namespace_for(database)
    return chosen.with_namespace(namespace)


def make_keys(
    kind: str, row_ids: Sequence[int] | np.ndarray, digests: Sequence[bytes | None], type_name: str
) -> list[CacheKey | None]:
    """One key per row (None where there is no row or no hash: such a row is never cached).

    >>> make_keys("well_features", [4, 5], [b"ab", None], "float")[1] is None
    True
    """
    return [
        None if d is None or int(i) < 0 else CacheKey(kind, int(i), bytes(d), type_name)
        for i, d in zip(row_ids, digests, strict=True)
    ]

"""Valar's blobs -> numpy arrays: the type table, every check, allocation; kernels do the rest.

Type names are those of ``sensors.data_type``. Blobs are big-endian; ``unsigned_*`` types were
stored as JVM signed values (v - 2**(bits-1)), so their top bit is flipped back. Stimulus frames
are ``unsigned_byte``. ``unsigned_float`` / ``unsigned_double`` have no signed twin in the JVM:
they are plain big-endian float32 / float64. Values move as unsigned integers, so NaN payloads,
signalling NaNs, -0.0, subnormals and infinities survive bit for bit.

>>> decode(b"\\x3f\\x80\\x00\\x00\\xff\\x80\\x00\\x00", "float").tolist()
[1.0, -inf]
>>> decode(bytes([0x80, 0x7F, 0x00]), "unsigned_byte").tolist()
[0, 255, 128]
>>> matrix, lengths = decode_batch([b"\\x00\\x01", None, b"\\x00\\x02\\x00\\x03"], "short")
>>> matrix.tolist(), lengths.tolist()
([[1, 0], [0, 0], [2, 3]], [1, 0, 2])

Every input is checked before the first byte is written: on error the caller's ``out`` is
untouched. The compiled kernels run when built (``BACKEND == "compiled"``); otherwise a numpy
fallback with identical results (``"numpy"``), which ``VALARFAST_REQUIRE_COMPILED=1`` forbids.
"""

from __future__ import annotations

import importlib
import os
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, NamedTuple, NoReturn

import numpy as np

from valarfast._buildhash import source_hash
from valarfast.errors import BlobDecodeError

__all__ = [
    "BACKEND",
    "STREAM_BYTES",
    "THREADS",
    "THREAD_BYTES",
    "TYPE_NAMES",
    "RowWriter",
    "backend_info",
    "decode",
    "decode_batch",
    "decode_into_row",
    "dtype_for",
    "fill_row",
    "pad_rows",
    "set_backend",
]


class TypeSpec(NamedTuple):
    """How one ``sensors.data_type`` is stored and decoded."""

    name: str
    dtype: np.dtype
    width: int  # bytes an item
    flip: bool  # JVM-signed storage of an unsigned type: flip the top bit
    default_fill: float | int


def _spec(name: str, dtype: str, flip: bool = False) -> TypeSpec:
    dt = np.dtype(dtype)
    return TypeSpec(name, dt, dt.itemsize, flip, np.nan if dt.kind == "f" else 0)


#: sensors.data_type -> how to decode it (utf8_char is text: decode() only)
_TYPES: dict[str, TypeSpec] = {
    s.name: s
    for s in (
        _spec("byte", "int8"),
        _spec("short", "int16"),
        _spec("int", "int32"),
        _spec("long", "int64"),
        _spec("float", "float32"),
        _spec("double", "float64"),
        _spec("unsigned_byte", "uint8", True),
        _spec("unsigned_short", "uint16", True),
        _spec("unsigned_int", "uint32", True),
        _spec("unsigned_long", "uint64", True),
        _spec("unsigned_float", "float32"),
        _spec("unsigned_double", "float64"),
    )
}
TEXT_TYPE = "utf8_char"
#: type name -> (width, flip, dtype): decode()'s kernel arguments, unpacked in one step
_DECODE_ARGS: dict[str, tuple[int, bool, np.dtype]] = {
    name: (s.width, s.flip, s.dtype) for name, s in _TYPES.items()
}
TYPE_NAMES: tuple[str, ...] = (*_TYPES, TEXT_TYPE)
_UINT_OF_WIDTH: dict[int, np.dtype[Any]] = {
    1: np.dtype("u1"),
    2: np.dtype("u2"),
    4: np.dtype("u4"),
    8: np.dtype("u8"),
}

#: outputs larger than this many bytes are written with non-temporal stores (bypass the caches)
STREAM_BYTES = int(os.environ.get("VALARFAST_STREAM_BYTES", 16 << 20))

#: batches whose output is larger than this are decoded by THREADS threads (disjoint row ranges)
THREAD_BYTES = int(os.environ.get("VALARFAST_THREAD_BYTES", 32 << 20))
#: 2 when the machine has 2+ CPUs; VALARFAST_THREADS=1 turns the second thread off
THREADS = min(2, int(os.environ.get("VALARFAST_THREADS", min(2, os.cpu_count() or 1))))

# ---------------------------------------------------------------- backend selection

_REQUIRE_ENV = "VALARFAST_REQUIRE_COMPILED"
_SRC_DIR = Path(__file__).resolve().parent.parent / "src_ext"
_REBUILD = "rebuild it: `pip install -e .` (or `make build`) in the source tree"


def _stale_reason(kernels: ModuleType) -> str | None:
    """Why the compiled module must not be used (its sources changed), or None."""
    built = getattr(kernels, "SOURCE_HASH", "")
    if (_SRC_DIR / "_kernels.pyx").is_file():
        current, where = source_hash(_SRC_DIR), f"the sources in {_SRC_DIR}"
    else:
        try:
            info = importlib.import_module("valarfast._build_info")
        except ImportError:
            return "valarfast/_build_info.py is missing"
        current, where = getattr(info, "SOURCE_HASH", ""), "valarfast/_build_info.py"
    if built != current:
        return f"valarfast._kernels was built from other sources than {where} (stale build)"
    return None


def _load_compiled() -> ModuleType:
    kernels = importlib.import_module("valarfast._kernels")
    reason = _stale_reason(kernels)
    if reason:
        raise ImportError(f"{reason}; {_REBUILD}")
    return kernels


def _load_backend() -> tuple[ModuleType, str]:
    required = os.environ.get(_REQUIRE_ENV, "").strip() not in ("", "0")
    try:
        return _load_compiled(), "compiled"
    except ImportError as e:
        if required:
            raise ImportError(f"{_REQUIRE_ENV}=1 but the compiled kernels are unusable: {e}") from e
        warnings.warn(
            f"valarfast: compiled blob kernels unavailable ({e}); using the slower numpy fallback",
            RuntimeWarning,
            stacklevel=3,
        )
        return importlib.import_module("valarfast._npkernels"), "numpy"


_K, BACKEND = _load_backend()


def set_backend(name: str) -> str:
    """Switch to ``"compiled"`` or ``"numpy"`` (tests, benchmarks); returns the previous name.

    >>> set_backend(set_backend("numpy")) in ("compiled", "numpy")
    True
    """
    global _K, BACKEND
    loaders = {
        "compiled": _load_compiled,
        "numpy": lambda: importlib.import_module("valarfast._npkernels"),
    }
    if name not in loaders:
        raise ValueError(f"unknown backend {name!r}; expected one of {sorted(loaders)}")
    previous = BACKEND
    _K, BACKEND = loaders[name](), name
    return previous


def backend_info() -> dict[str, Any]:
    """What decodes: backend, vector code, debug build, source hash.

    >>> sorted(backend_info())
    ['backend', 'debug', 'simd', 'source_hash']
    """
    return {
        "backend": BACKEND,
        "simd": _K.simd(),
        "debug": bool(_K.DEBUG),
        "source_hash": _K.SOURCE_HASH,
    }


# ---------------------------------------------------------------- checks


def _type_spec(type_name: str) -> TypeSpec:
    spec = _TYPES.get(type_name) if isinstance(type_name, str) else None
    if spec is None:
        if type_name == TEXT_TYPE:
            raise ValueError(f"{TEXT_TYPE!r} is text: use decode(blob, {TEXT_TYPE!r}) to get a str")
        raise ValueError(
            f"unknown blob type {type_name!r}; expected one of {', '.join(TYPE_NAMES)}"
        )
    return spec


def dtype_for(type_name: str) -> np.dtype:
    """The native numpy dtype a ``sensors.data_type`` decodes to.

    >>> dtype_for("unsigned_short")
    dtype('uint16')
    """
    return _type_spec(type_name).dtype


def _describe(blob: Any) -> str:
    return type(blob).__name__


# status code from the kernels -> (exception class, message template)
_STATUS_ERRORS: dict[int, tuple[type[Exception], str]] = {
    -1: (
        TypeError,
        "{where}: expected bytes, bytearray, memoryview, another C-contiguous buffer or None; "
        "got {kind}",
    ),
    -2: (TypeError, "{where}: cannot read the {kind} as one C-contiguous buffer ({cause})"),
    -3: (
        BlobDecodeError,
        "{where}: {nbytes} bytes is not a multiple of {width} (the size of one {type_name!r} item)",
    ),
    -4: (BlobDecodeError, "{where}: {items} items do not fit in the {room} items of out"),
    -5: (ValueError, "{where}: out must be a writable C-contiguous array of {dtype}"),
    -6: (IndexError, "{where} is outside the {room} rows of out"),
}


def _status_error(code: int, where: str, blob: Any, spec: TypeSpec, **extra: Any) -> Exception:
    """The exception for a kernel status code (never raised by the kernels themselves)."""
    cls, template = _STATUS_ERRORS[code]
    nbytes = _K.blob_nbytes(blob) if code in (-3, -4) else 0
    fields = {
        "where": where,
        "kind": _describe(blob),
        "cause": extra.pop("cause", None),
        "nbytes": nbytes,
        "items": nbytes // spec.width,
        "width": spec.width,
        "type_name": spec.name,
        "dtype": spec.dtype,
        "room": extra.pop("room", "?"),
    }
    return cls(template.format(**fields))


# (test on out, message) in order; the first failing one is reported
_OUT_CHECKS: tuple[tuple[Any, str], ...] = (
    (lambda out, spec, ndim: isinstance(out, np.ndarray), "out must be a numpy array, not {kind}"),
    (
        lambda out, spec, ndim: out.dtype == spec.dtype,
        "out has dtype {out.dtype}; {spec.name!r} decodes to {spec.dtype}",
    ),
    (lambda out, spec, ndim: out.ndim == ndim, "out must have {ndim} dimension(s), not {out.ndim}"),
    (lambda out, spec, ndim: out.flags.c_contiguous, "out must be C-contiguous"),
    (lambda out, spec, ndim: out.flags.writeable, "out is read-only"),
)


def _require_out(out: Any, spec: TypeSpec, ndim: int) -> None:
    """Cheap checks of type, dtype and ndim; the kernels refuse a read-only or strided out
    (status -5, nothing written) and :func:`_check_out` then names the problem."""
    if not (
        type(out) is np.ndarray
        and out.ndim == ndim
        and (out.dtype is spec.dtype or out.dtype == spec.dtype)
    ):
        _check_out(out, spec, ndim)  # raises, unless a subclass that passes every check


def _check_out(out: Any, spec: TypeSpec, ndim: int) -> np.ndarray:
    for test, message in _OUT_CHECKS:
        if not test(out, spec, ndim):
            error = TypeError if "numpy array" in message else ValueError
            raise error(message.format(out=out, spec=spec, ndim=ndim, kind=type(out).__name__))
    return out


def _fill_bits(spec: TypeSpec, fill: Any) -> int:
    """The native bit pattern (as an unsigned int) of the fill value, checked to be exact."""
    value = spec.default_fill if fill is None else fill
    if spec.dtype.kind in "iu":
        info = np.iinfo(spec.dtype)
        exact = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
        if not exact or not info.min <= int(value) <= info.max:
            raise ValueError(
                f"fill={fill!r} is not an integer in [{info.min}, {info.max}] for {spec.name!r}"
            )
    elif not isinstance(value, (int, float, np.integer, np.floating)) or isinstance(value, bool):
        raise ValueError(f"fill={fill!r} is not a number for {spec.name!r}")
    with np.errstate(over="ignore"):
        scalar = np.asarray(value).astype(spec.dtype, casting="unsafe")
    return int(scalar.view(_UINT_OF_WIDTH[spec.width])[()])


#: the allocator of decode()'s new arrays (looked up once; called by the kernel)
_empty = np.empty


def _stream(nbytes: int) -> bool:
    return nbytes > STREAM_BYTES


# ---------------------------------------------------------------- decoding


def decode(blob: Any, dtype: str, *, out: np.ndarray | None = None) -> Any:
    """Decode one blob into a new native array (or into ``out``, of exactly its length).

    ``None`` gives an empty array. ``utf8_char`` gives a ``str`` (no ``out``).

    >>> decode(b"\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x2a", "long")
    array([42])
    >>> decode("hi".encode(), "utf8_char")
    'hi'
    """
    try:
        width, flip, native = _DECODE_ARGS[dtype]
    except (KeyError, TypeError):  # TypeError: an unhashable type name
        if dtype == TEXT_TYPE:
            return _decode_text(blob, out)
        spec = _type_spec(dtype)  # raises for an unknown name
        width, flip, native = spec.width, spec.flip, spec.dtype
    if out is not None and not (out.__class__ is np.ndarray and out.dtype is native):
        _require_out(out, _TYPES[dtype], 1)
    # one kernel call: checks the blob (and out), allocates np.empty(n, native) if out is None,
    # decodes; an int is a status code (nothing written)
    result = _K.decode_blob(blob, out, width, flip, STREAM_BYTES, _empty, native)
    if result.__class__ is int:
        _raise_decode_error(result, blob, _TYPES[dtype], out)
    return result


def _raise_decode_error(code: int, blob: Any, spec: TypeSpec, out: Any) -> NoReturn:
    """Name what :func:`decode` found wrong (the kernel wrote nothing)."""
    if code in (-5, -7):
        _check_out(out, spec, 1)  # raises for a strided, read-only or n-D out
    if code == -7:
        n = _K.blob_nbytes(blob) // spec.width
        raise ValueError(f"out has shape {out.shape}; the blob holds {n} {spec.name!r} items")
    raise _status_error(code, "blob", blob, spec)


def _decode_text(blob: Any, out: Any) -> str:
    if out is not None:
        raise ValueError(f"{TEXT_TYPE!r} decodes to a str: out= is not accepted")
    if blob is None:
        return ""
    try:
        raw = bytes(memoryview(blob).cast("B")) if not isinstance(blob, bytes) else blob
    except TypeError as e:
        raise TypeError(
            f"blob: expected bytes-like or None for {TEXT_TYPE!r}, got {_describe(blob)}"
        ) from e
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BlobDecodeError(f"blob: not valid UTF-8 text at byte {e.start}: {e.reason}") from e


def decode_into_row(blob: Any, type_name: str, out_row: np.ndarray, *, stream: bool = False) -> int:
    """Decode one blob into the start of the 1-D row ``out_row``; returns the items written.

    The rest of the row is not touched (see :func:`fill_row` / :func:`pad_rows`); ``None``
    writes nothing and returns 0. Checked before writing. ``stream=True`` uses non-temporal
    stores (for rows of a matrix larger than the caches).

    >>> row = np.zeros(4, np.float32)
    >>> decode_into_row(b"\\x40\\x00\\x00\\x00", "float", row), row.tolist()
    (1, [2.0, 0.0, 0.0, 0.0])
    """
    spec = _TYPES.get(type_name) or _type_spec(type_name)
    _require_out(out_row, spec, 1)
    written: int = _K.decode_row(blob, out_row, spec.width, spec.flip, stream)
    if written < 0:
        if written == -5:
            _check_out(out_row, spec, 1)
        raise _status_error(written, "row", blob, spec, room=len(out_row))
    return written


class RowWriter:
    """Decodes blobs into the rows of one 2-D matrix checked once: for rows arriving one by one
    from a cursor (cheaper per row than :func:`decode_into_row`, which checks its row each call).

    ``write(i, blob)`` decodes into the start of row i and returns the items written (the rest
    of the row is not touched: pad with :func:`pad_rows`). The matrix's buffer is held until
    ``close()`` (or the end of a ``with`` block).

    >>> m = np.full((2, 3), np.nan, np.float32)
    >>> with RowWriter(m, "float") as w:
    ...     w.write(1, b"\\x3f\\x80\\x00\\x00")
    1
    >>> m[1].tolist()
    [1.0, nan, nan]
    """

    def __init__(self, out: np.ndarray, type_name: str, *, stream: bool | None = None) -> None:
        self.spec = _type_spec(type_name)
        self.out = _check_out(out, self.spec, 2)
        nrows, ncols = out.shape
        streaming = _stream(out.nbytes) if stream is None else stream
        self._kernel = _K.RowWriter(out, nrows, ncols, self.spec.width, self.spec.flip, streaming)
        self._write = self._kernel.write

    def write(self, i: int, blob: Any) -> int:
        """Decode ``blob`` into the start of row ``i``; the number of items written."""
        n: int = self._write(i, blob)
        if n < 0:
            room = self.out.shape[0] if n == -6 else self.out.shape[1]
            raise _status_error(n, f"row {i}", blob, self.spec, room=room)
        return n

    def close(self) -> None:
        """Release the matrix (further writes raise)."""
        self._kernel.close()

    def __enter__(self) -> RowWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def fill_row(out_row: np.ndarray, start: int, type_name: str, fill: Any = None) -> None:
    """Write the fill value (NaN for floats, 0 for integers by default) into ``out_row[start:]``.

    >>> row = np.ones(3, np.float64); fill_row(row, 1, "double"); row.tolist()
    [1.0, nan, nan]
    """
    spec = _type_spec(type_name)
    _check_out(out_row, spec, 1)
    if not 0 <= start <= out_row.shape[0]:
        raise ValueError(f"start={start} is outside the row's {out_row.shape[0]} items")
    _K.fill(out_row, start, spec.width, _fill_bits(spec, fill))


def pad_rows(out: np.ndarray, lengths: Any, type_name: str, fill: Any = None) -> None:
    """Fill row i of the 2-D ``out`` from item ``lengths[i]`` on (one kernel call).

    >>> m = np.zeros((2, 3), np.int16); pad_rows(m, [1, 3], "short", fill=-1); m.tolist()
    [[0, -1, -1], [0, 0, 0]]
    """
    spec = _type_spec(type_name)
    _check_out(out, spec, 2)
    starts = np.ascontiguousarray(lengths, dtype=np.int64)
    if starts.shape != (out.shape[0],):
        raise ValueError(f"lengths has shape {starts.shape}; out has {out.shape[0]} rows")
    bad = np.flatnonzero((starts < 0) | (starts > out.shape[1]))
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"lengths[{i}]={starts[i]} is outside [0, {out.shape[1]}]")
    _K.fill_rows(out, starts, out.shape[1], spec.width, _fill_bits(spec, fill))


def decode_batch(
    blobs: Sequence[Any], dtype: str, *, out: np.ndarray | None = None, fill: Any = None
) -> tuple[np.ndarray, np.ndarray]:
    """Decode a sequence of blobs (``None`` = missing row) into one 2-D matrix.

    Returns ``(matrix, lengths)``: row i holds blob i's items, then the fill value (NaN for
    floats, 0 for integers by default); ``lengths`` (int64) says how many items are real.
    ``out`` must have ``len(blobs)`` rows and at least the longest blob's columns.
    All rows are gathered and checked first, then decoded in one kernel call without the GIL.

    >>> m, n = decode_batch([b"\\x3f\\x80\\x00\\x00", b""], "float", fill=-1.0)
    >>> m.tolist(), n.tolist()
    ([[1.0], [-1.0]], [1, 0])
    """
    spec = _type_spec(dtype)
    pattern = _fill_bits(spec, fill)
    rows = blobs if isinstance(blobs, (list, tuple)) else list(blobs)
    nbytes = np.empty(len(rows), np.int64)
    batch = _K.BlobBatch(rows, nbytes)
    if batch.bad_index >= 0:
        i = batch.bad_index
        raise _status_error(batch.bad_code, f"row {i}", rows[i], spec, cause=batch.bad_error)
    np.maximum(nbytes, 0, out=nbytes)  # None -> 0 bytes
    ragged = np.flatnonzero(nbytes % spec.width)
    if ragged.size:
        i = int(ragged[0])
        raise _status_error(-3, f"row {i}", rows[i], spec)
    lengths = nbytes // spec.width
    ncols = int(lengths.max()) if lengths.size else 0
    if out is None:
        out = np.empty((len(rows), ncols), spec.dtype)
    else:
        _require_out(out, spec, 2)
        if out.shape[0] != len(rows) or out.shape[1] < ncols:
            raise ValueError(
                f"out has shape {out.shape}; need ({len(rows)}, >= {ncols}) for these blobs"
            )
    args = (batch, out, out.shape[1], spec.width, spec.flip, pattern, _stream(out.nbytes))
    if THREADS > 1 and len(rows) > 1 and out.nbytes > THREAD_BYTES:
        status = _decode_in_two_threads(args, len(rows))
    else:
        status = _K.decode_matrix(*args)
    if status == -5:
        _check_out(out, spec, 2)
    if status != 0:
        raise _status_error(status, "batch", None, spec)
    return out, lengths


def _decode_in_two_threads(args: tuple[Any, ...], nrows: int) -> int:
    """Decode the first half of the rows in a helper thread, the rest here (GIL released in
    both); every row writes the same number of bytes, so halves by rows are balanced. Each
    kernel call checks the whole batch before writing, so both fail alike or neither does."""
    half = nrows // 2
    statuses: list[int] = []
    helper = threading.Thread(
        target=lambda: statuses.append(_K.decode_matrix(*args, 0, half)),
        name="valarfast-decode",
    )
    helper.start()
    try:
        mine = _K.decode_matrix(*args, half, nrows)
    finally:
        helper.join()
    if not statuses:
        raise RuntimeError("valarfast: the decoding thread failed (see the message above)")
    return statuses[0] or mine

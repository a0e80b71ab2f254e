"""Pure-numpy stand-in for the compiled ``valarfast._kernels`` (same names, same results).

Used only where the extension is missing or stale (and refused when VALARFAST_REQUIRE_COMPILED=1).
Values move as unsigned integers, never through floats, so results are bit-identical to the
compiled kernels.

>>> import numpy as np
>>> out = np.empty(2, np.uint16)
>>> decode_row(b"\\x00\\x01\\xff\\xff", out, 2, True, False), out.tolist()
(2, [32769, 32767])
"""

from __future__ import annotations

from typing import Any

import numpy as np

SOURCE_HASH = ""
DEBUG = False
GIL_RELEASE_BYTES = 16384

OK = 0
ERR_NOT_BUFFER = -1
ERR_BUFFER = -2
ERR_RAGGED = -3
ERR_TOO_LONG = -4
ERR_OUT = -5
ERR_ROW = -6
ERR_SIZE = -7

_BIG: dict[int, np.dtype[Any]] = {
    1: np.dtype("u1"),
    2: np.dtype(">u2"),
    4: np.dtype(">u4"),
    8: np.dtype(">u8"),
}
_NATIVE: dict[int, np.dtype[Any]] = {
    1: np.dtype("u1"),
    2: np.dtype("=u2"),
    4: np.dtype("=u4"),
    8: np.dtype("=u8"),
}


def simd() -> str:
    """No vector code of our own: numpy's."""
    return "numpy"


def set_simd(enabled: bool) -> str:
    """Nothing to switch; for symmetry with the compiled module."""
    return simd()


def _source(blob: Any) -> memoryview | int:
    """A C-contiguous byte view of blob, or a status code."""
    try:
        view = memoryview(blob)
    except TypeError:
        return ERR_NOT_BUFFER
    if not view.c_contiguous:
        return ERR_BUFFER
    if view.nbytes == 0:
        return memoryview(b"")
    return view.cast("B") if view.ndim != 1 or view.format != "B" else view


def _target(out: Any, width: int) -> np.ndarray | int:
    """`out` as a writable flat array of native unsigned ints of `width` bytes, or ERR_OUT."""
    try:
        view = memoryview(out)
    except TypeError:
        return ERR_OUT
    if view.readonly or not view.c_contiguous or view.itemsize != width:
        return ERR_OUT
    if view.nbytes == 0:
        return np.empty(0, _NATIVE[width])
    return np.frombuffer(view.cast("B"), dtype=_NATIVE[width])


def _decode(src: memoryview, width: int, flip: bool) -> np.ndarray:
    values = np.frombuffer(src, dtype=_BIG[width]).astype(_NATIVE[width])
    if flip:
        values ^= _NATIVE[width].type(1 << (8 * width - 1))
    return values


def _fill(dst: np.ndarray, pattern: int) -> None:
    dst[...] = dst.dtype.type(pattern)


def blob_nbytes(blob: Any) -> int:
    """Byte length of a row (0 for None) or a status code < 0."""
    if blob is None:
        return 0
    src = _source(blob)
    return src if isinstance(src, int) else src.nbytes


def decode_row(blob: Any, out: Any, width: int, flip: bool, stream: bool) -> int:
    """Decode one blob into the start of `out`; items written or a status code < 0."""
    if blob is None:
        return 0
    src = _source(blob)
    if isinstance(src, int):
        return src
    if src.nbytes % width:
        return ERR_RAGGED
    dst = _target(out, width)
    if isinstance(dst, int):
        return dst
    n = src.nbytes // width
    if n > dst.size:
        return ERR_TOO_LONG
    dst[:n] = _decode(src, width, flip)
    return n


def decode_blob(
    blob: Any, out: Any, width: int, flip: bool, stream_bytes: int, empty: Any, dtype: Any
) -> Any:
    """Decode a whole blob into the 1-D `out` of exactly its items, or into ``empty(n, dtype)``
    if `out` is None; that array, or a status code < 0 (ERR_SIZE: out of another length)."""
    src = memoryview(b"") if blob is None else _source(blob)
    if isinstance(src, int):
        return src
    if src.nbytes % width:
        return ERR_RAGGED
    n = src.nbytes // width
    if out is None:
        out = empty(n, dtype)
    dst = _target(out, width)
    if isinstance(dst, int):
        return dst
    if memoryview(out).ndim != 1 or dst.size != n:
        return ERR_SIZE
    dst[:] = _decode(src, width, flip)
    return out


def fill(out: Any, start: int, width: int, pattern: int) -> int:
    """Write `pattern` into items start.. of `out`; a status code."""
    dst = _target(out, width)
    if isinstance(dst, int):
        return dst
    if start < 0 or start > dst.size:
        return ERR_TOO_LONG
    _fill(dst[start:], pattern)
    return OK


class BlobBatch:
    """The rows of a batch as byte views; see the compiled module."""

    def __init__(self, rows: Any, nbytes: np.ndarray) -> None:
        self.views: list[memoryview | None] = []
        self.bad_index = -1
        self.bad_code = OK
        self.bad_error: BaseException | None = None
        rows = list(rows)
        if len(nbytes) != len(rows):
            raise ValueError(f"nbytes has {len(nbytes)} entries for {len(rows)} rows")
        for i, row in enumerate(rows):
            src = None if row is None else _source(row)
            if isinstance(src, int):
                self.bad_index, self.bad_code = i, src
                nbytes[i] = -1
                return
            self.views.append(src)
            nbytes[i] = -1 if src is None else src.nbytes

    def __len__(self) -> int:
        return len(self.views)


def decode_matrix(
    batch: BlobBatch,
    out: Any,
    ncols: int,
    width: int,
    flip: bool,
    pattern: int,
    stream: bool,
    start: int = 0,
    stop: int = -1,
) -> int:
    """Decode rows start..stop of `batch` into the (n, ncols) `out`, padding with `pattern`."""
    stop = len(batch.views) if stop < 0 else stop
    if batch.bad_index >= 0 or ncols < 0 or not 0 <= start <= stop <= len(batch.views):
        return ERR_BUFFER
    for view in batch.views:
        if view is not None and (view.nbytes > ncols * width or view.nbytes % width):
            return ERR_TOO_LONG if view.nbytes > ncols * width else ERR_RAGGED
    dst = _target(out, width)
    if isinstance(dst, int) or dst.size != len(batch.views) * ncols:
        return ERR_OUT
    matrix = dst.reshape(len(batch.views), ncols)
    for i in range(start, stop):
        view = batch.views[i]
        n = 0 if view is None else view.nbytes // width
        if view is not None and n:
            matrix[i, :n] = _decode(view, width, flip)
        _fill(matrix[i, n:], pattern)
    return OK


def fill_rows(out: Any, lengths: np.ndarray, ncols: int, width: int, pattern: int) -> int:
    """Pad row i of the (n, ncols) `out` from item lengths[i] on; a status code."""
    if np.any((lengths < 0) | (lengths > ncols)):
        return ERR_TOO_LONG
    dst = _target(out, width)
    if isinstance(dst, int) or dst.size != len(lengths) * ncols:
        return ERR_OUT
    matrix = dst.reshape(len(lengths), ncols)
    for i, start in enumerate(lengths.tolist()):
        _fill(matrix[i, start:], pattern)
    return OK


class RowWriter:
    """Decodes blobs into rows of one (nrows, ncols) matrix; see the compiled module."""

    def __init__(self, out: Any, nrows: int, ncols: int, width: int, flip: bool, stream: bool):
        dst = _target(out, width)
        if isinstance(dst, int) or nrows < 0 or ncols < 0 or dst.size != nrows * ncols:
            raise ValueError(f"out is not a writable C-contiguous {nrows} x {ncols} matrix")
        self.nrows, self.ncols, self.width, self.flip = nrows, ncols, width, flip
        self.matrix: np.ndarray | None = dst.reshape(nrows, ncols)

    def close(self) -> None:
        self.matrix = None

    def write(self, i: int, blob: Any) -> int:
        if self.matrix is None:
            return ERR_OUT
        if not 0 <= i < self.nrows:
            return ERR_ROW
        return decode_row(blob, self.matrix[i], self.width, self.flip, False)

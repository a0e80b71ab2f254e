"""A row matrix whose width is learnt from the rows themselves, as they arrive from a cursor.

:class:`GrowingRows` decodes blobs into the rows of one C-contiguous matrix without knowing the
longest row in advance (so the server is not asked for ``LENGTH()``, which makes it read every
blob an extra time). The width starts at the first row's length (or a hint). The buffer reserves
a quarter more address space than that (untouched pages cost no memory), so a longer row widens
the matrix in place: the rows already written move to the new row stride, last first. Past the
reserve the buffer is enlarged with ``realloc`` (the kernel remaps the pages: no copy, no second
matrix in memory, but the new pages may fault in 4 KiB at a time: slower). Rows of a run have
(nearly) the same length, so widening happens a few times, early, on a few rows. Should widening
get expensive (rows growing late or steadily), the stride grows by half at least and the rows are
packed to the exact width once, at the end; the copying is then bounded by about three matrices
in total, still in one buffer.

>>> g = GrowingRows(2, "float")
>>> g.write(0, b"\\x3f\\x80\\x00\\x00")
1
>>> g.write(1, b"\\x40\\x00\\x00\\x00" * 3)  # longer: widens
3
>>> m, lengths = g.finish(fill=0.0)
>>> m.tolist(), lengths.tolist()
([[1.0, 0.0, 0.0], [2.0, 2.0, 2.0]], [1, 3])
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import blobs

__all__ = ["GrowingRows"]

#: widening exactly is allowed while the bytes moved so far stay below this share of the matrix
EXACT_MOVE_SHARE = 1.0
#: ... and for this many widenings at most (each one moves the rows written so far)
EXACT_WIDENINGS = 16
#: otherwise the stride grows by at least this factor (and rows are packed once at the end)
GROWTH_FACTOR = 1.5
#: address space reserved beyond the first stride, as a share of it (never touched unless used)
RESERVE_SHARE = 0.25


class GrowingRows:
    """``nrows`` rows of ``type_name`` items, written once each in any order, width learnt.

    ``write(i, blob)`` decodes a blob into row i and returns its items; ``finish(fill)`` pads
    every row after its length (rows never written are all ``fill``) and returns
    ``(matrix, lengths)`` with the matrix exactly as wide as the longest row. ``width_hint``:
    a starting width (a guess; a wrong one costs time, never correctness).
    Errors from the kernel (a blob not a multiple of the item size, ...) propagate; after one,
    drop the object: the matrix is not returned.
    """

    def __init__(self, nrows: int, type_name: str, *, width_hint: int = 0) -> None:
        if nrows < 0 or width_hint < 0:
            raise ValueError(f"nrows={nrows} and width_hint={width_hint} must be >= 0")
        self.type_name = type_name
        self.dtype = blobs.dtype_for(type_name)
        self.itemsize = self.dtype.itemsize
        self.nrows = nrows
        self.lengths = np.zeros(nrows, dtype=np.int64)
        self.stride = 0  # items between row starts in the buffer
        self.longest = 0  # items of the longest row written
        self.moved = 0  # bytes moved by widening so far
        self.widenings = 0
        self._hint = width_hint
        self._buf: np.ndarray | None = None
        self._writer: blobs.RowWriter | None = None
        self._room = -1  # bytes that fit in one row at the current stride (-1: no buffer yet)

    def write(self, i: int, blob: Any) -> int:
        """Decode ``blob`` into row ``i`` (widening first if it is longer than the stride)."""
        nbytes = len(blob) if isinstance(blob, bytes) else _nbytes(blob)
        if nbytes > self._room:
            self._widen(-(-nbytes // self.itemsize))
        assert self._writer is not None
        n = self._writer.write(i, blob)
        self.lengths[i] = n
        if n > self.longest:
            self.longest = n
        return n

    def finish(self, fill: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """The (nrows, longest) matrix, padded with ``fill``, and the lengths; closes the writer."""
        self._release()
        width = self.longest
        if self._buf is None:
            self._buf = np.empty(self.nrows * width, dtype=self.dtype)
        elif self.stride != width:  # widened by more than needed: pack the rows, first first
            self._move_rows(self.stride, width, reverse=False)
        buf, self._buf = self._buf, None
        buf.resize((self.nrows, width), refcheck=False)  # realloc: shrinks in place (the reserve)
        if width:
            blobs.pad_rows(buf, self.lengths, self.type_name, fill)
        return buf, self.lengths

    def close(self) -> None:
        """Drop the matrix (after an error)."""
        self._release()
        self._buf = None

    # ------------------------------------------------------------------------------ internals

    def _widen(self, items: int) -> None:
        self._release()
        if self._buf is None:
            stride = max(items, self._hint)
            reserve = stride + int(stride * RESERVE_SHARE) + 16
            self._buf = np.empty(self.nrows * reserve, dtype=self.dtype)
        else:
            written = int(self.lengths.sum()) * self.itemsize
            exact = (
                self.widenings < EXACT_WIDENINGS
                and self.moved + written <= EXACT_MOVE_SHARE * self.nrows * items * self.itemsize
            )
            stride = items if exact else max(items, int(self.stride * GROWTH_FACTOR))
            if self.nrows * stride > self._buf.size:  # past the reserve: realloc remaps
                self._buf.resize(self.nrows * stride, refcheck=False)
            self._move_rows(self.stride, stride, reverse=True)
            self.moved += written
            self.widenings += 1
        self.stride = stride
        self._room = stride * self.itemsize
        rows = self._buf[: self.nrows * stride].reshape(self.nrows, stride)
        self._writer = blobs.RowWriter(rows, self.type_name)

    def _move_rows(self, old: int, new: int, *, reverse: bool) -> None:
        """Move each written row from stride ``old`` to ``new`` (last row first when widening)."""
        buf = self._buf
        assert buf is not None
        rows = np.flatnonzero(self.lengths)
        for i in rows[::-1].tolist() if reverse else rows.tolist():
            n = int(self.lengths[i])
            if i:
                buf[i * new : i * new + n] = buf[i * old : i * old + n]  # numpy handles overlap

    def _release(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def _nbytes(blob: Any) -> int:
    if blob is None:
        return 0
    try:
        return memoryview(blob).nbytes
    except TypeError:
        return 0  # not a buffer: the kernel reports it

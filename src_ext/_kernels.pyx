# cython: language_level=3, embedsignature=True
"""Compiled blob kernels of valarfast: big-endian blobs -> native rows and matrices.

Kernels compute; ``valarfast.blobs`` checks and allocates (``decode_blob`` calls the allocator
and dtype that ``valarfast.blobs`` hands it, to save a round trip). Each function re-checks
what it must to never write out of bounds, and reports a bad input by a negative status code
(mapped to a message by ``valarfast.blobs``) *before* writing anything. The GIL is released
for work above ``GIL_RELEASE_BYTES``.
"""

cimport cython
from cpython.buffer cimport (
    PyBUF_C_CONTIGUOUS,
    PyBUF_SIMPLE,
    PyBUF_WRITABLE,
    PyBuffer_Release,
    PyObject_CheckBuffer,
    PyObject_GetBuffer,
)
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_GET_SIZE
from cpython.ref cimport Py_INCREF, Py_XDECREF, PyObject
from libc.stdint cimport int64_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free
from libc.string cimport memcpy, memset

from byteorder cimport VF_HAVE_AVX2_CODE, decode_span, vf_cpu_has_avx2

cdef extern from *:
    """
    #ifndef VALARFAST_SOURCE_HASH
    #define VALARFAST_SOURCE_HASH "unknown"
    #endif
    #ifndef VALARFAST_DEBUG_BUILD
    #define VALARFAST_DEBUG_BUILD 0
    #endif
    """
    const char *VALARFAST_SOURCE_HASH
    const int VALARFAST_DEBUG_BUILD

cdef extern from "Python.h":
    object PySequence_Fast(object o, const char *message)
    Py_ssize_t PySequence_Fast_GET_SIZE(object o)
    PyObject *PySequence_Fast_GET_ITEM(object o, Py_ssize_t i)

#: sha256 of src_ext/ as setup.py saw it (valarfast refuses a module whose sources changed)
SOURCE_HASH = VALARFAST_SOURCE_HASH.decode("ascii")
#: built with VALARFAST_DEBUG=1 (-O0 -g, line tracing)
DEBUG = bool(VALARFAST_DEBUG_BUILD)
cdef enum:
    # status codes; valarfast.blobs maps them to messages
    ST_OK = 0
    ST_NOT_BUFFER = -1  # row is neither None nor an object with the buffer protocol
    ST_BUFFER = -2      # buffer export failed (not C-contiguous, ...)
    ST_RAGGED = -3      # byte length not a multiple of the item size
    ST_TOO_LONG = -4    # row longer than the output
    ST_OUT = -5         # output not a writable C-contiguous buffer of that item size
    ST_ROW = -6         # row index outside the matrix
    ST_SIZE = -7        # output not 1-D of exactly the blob's items
    # below this many bytes of work, keeping the GIL is cheaper than releasing it (~0.1 us)
    GIL_BYTES = 16384

OK, ERR_NOT_BUFFER, ERR_BUFFER, ERR_RAGGED, ERR_TOO_LONG, ERR_OUT, ERR_ROW, ERR_SIZE = (
    ST_OK, ST_NOT_BUFFER, ST_BUFFER, ST_RAGGED, ST_TOO_LONG, ST_OUT, ST_ROW, ST_SIZE
)
GIL_RELEASE_BYTES = GIL_BYTES

cdef bint _use_avx2 = vf_cpu_has_avx2() != 0


def simd():
    """The vector code in use: ``"avx2"`` or ``"scalar"``."""
    return "avx2" if _use_avx2 else "scalar"


def set_simd(bint enabled):
    """Use AVX2 when the CPU has it (True, the default) or force scalar code (for tests)."""
    global _use_avx2
    _use_avx2 = enabled and VF_HAVE_AVX2_CODE and vf_cpu_has_avx2() != 0
    return simd()


cdef inline void fill_span(unsigned char *dst, Py_ssize_t nitems, int width,
                           uint64_t pattern) noexcept nogil:
    """Write the native `width`-byte value `pattern` nitems times (dst may be unaligned)."""
    cdef Py_ssize_t i
    cdef unsigned char b
    cdef uint16_t v16
    cdef uint32_t v32
    if nitems <= 0:
        return
    if pattern == 0:
        memset(dst, 0, <size_t>(nitems * width))
    elif width == 1:
        b = <unsigned char>pattern
        memset(dst, b, <size_t>nitems)
    elif width == 2:
        v16 = <uint16_t>pattern
        for i in range(nitems):
            memcpy(dst + 2 * i, &v16, 2)
    elif width == 4:
        v32 = <uint32_t>pattern
        for i in range(nitems):
            memcpy(dst + 4 * i, &v32, 4)
    else:
        for i in range(nitems):
            memcpy(dst + 8 * i, &pattern, 8)


cdef int get_out(object out, Py_buffer *view, int width) except -1:
    """Export `out` writable and C-contiguous; 0 on success, ST_OUT (nothing held) otherwise."""
    try:
        PyObject_GetBuffer(out, view, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS)
    except (BufferError, TypeError, ValueError):
        return ST_OUT
    if view.itemsize != width:
        PyBuffer_Release(view)
        return ST_OUT
    return ST_OK


cdef struct Borrowed:
    const unsigned char *buf  # the row's bytes (NULL for None)
    Py_ssize_t len            # their number, or a status < 0 (nothing held)
    bint held                 # view holds an export: release it with give_back()
    Py_buffer view


cdef inline int borrow(object blob, Borrowed *src) except -1:
    """Point src at a row's bytes: an exact bytes directly, None as 0 bytes, another object
    through a C-contiguous buffer export. A bad row sets src.len to ST_NOT_BUFFER / ST_BUFFER
    (nothing held). Returns 0; -1 only with an unexpected exception (e.g. MemoryError)."""
    src.held = False
    src.buf = NULL
    src.len = 0
    if PyBytes_CheckExact(blob):
        src.buf = <const unsigned char *>PyBytes_AS_STRING(blob)
        src.len = PyBytes_GET_SIZE(blob)
    elif blob is None:
        pass
    elif not PyObject_CheckBuffer(blob):
        src.len = ST_NOT_BUFFER
    else:
        try:
            PyObject_GetBuffer(blob, &src.view, PyBUF_C_CONTIGUOUS)
        except (BufferError, TypeError, ValueError):
            src.len = ST_BUFFER
            return 0
        src.held = True
        src.buf = <const unsigned char *>src.view.buf
        src.len = src.view.len
    return 0


cdef inline void give_back(Borrowed *src) noexcept:
    """Release what borrow() holds (idempotent)."""
    if src.held:
        src.held = False
        PyBuffer_Release(&src.view)


def blob_nbytes(object blob):
    """Byte length of a row (0 for None), or a status < 0: ST_NOT_BUFFER / ST_BUFFER."""
    cdef Borrowed src
    borrow(blob, &src)
    give_back(&src)
    return src.len


@cython.cdivision(True)
def decode_row(object blob, object out, int width, bint flip, bint stream):
    """Decode one blob into the start of `out`; the number of items written, or a status < 0.

    Nothing is written unless the blob is valid and fits; the rest of `out` is not touched.
    ``None`` writes nothing and returns 0.
    """
    cdef Borrowed src
    cdef Py_buffer out_view
    cdef Py_ssize_t n
    cdef int status
    if blob is None:
        return 0
    borrow(blob, &src)
    n = src.len
    if n < 0:
        return n
    try:
        if n % width != 0:
            return ST_RAGGED
        status = get_out(out, &out_view, width)
        if status != ST_OK:
            return status
        try:
            if n > out_view.len:
                return ST_TOO_LONG
            if n >= GIL_BYTES:
                with nogil:
                    decode_span(src.buf, <unsigned char *>out_view.buf, n, width, flip,
                                _use_avx2, stream)
            else:
                decode_span(src.buf, <unsigned char *>out_view.buf, n, width, flip, _use_avx2,
                            False)
        finally:
            PyBuffer_Release(&out_view)
    finally:
        give_back(&src)
    return n // width


@cython.cdivision(True)
def decode_blob(object blob, object out, int width, bint flip, Py_ssize_t stream_bytes,
                object empty, object dtype):
    """Decode a whole blob into `out` (1-D, exactly the blob's items) or, if `out` is None,
    into a new array ``empty(nitems, dtype)``; returns that array, or a status int < 0 with
    nothing written (ST_SIZE: `out` is not 1-D of exactly that length). ``None`` is an empty
    blob. Stores are non-temporal above `stream_bytes`. One call for `valarfast.blobs.decode`.
    """
    cdef Borrowed src
    cdef Py_buffer out_view
    cdef Py_ssize_t n
    cdef int status
    borrow(blob, &src)
    n = src.len
    if n < 0:
        return n
    try:
        if n % width != 0:
            return ST_RAGGED
        if out is None:
            out = empty(n // width, dtype)
        status = get_out(out, &out_view, width)
        if status != ST_OK:
            return status
        try:
            if out_view.ndim != 1 or out_view.len != n:
                return ST_SIZE
            if n >= GIL_BYTES:
                with nogil:
                    decode_span(src.buf, <unsigned char *>out_view.buf, n, width, flip,
                                _use_avx2, n > stream_bytes)
            else:
                decode_span(src.buf, <unsigned char *>out_view.buf, n, width, flip, _use_avx2,
                            False)
        finally:
            PyBuffer_Release(&out_view)
    finally:
        give_back(&src)
    return out


@cython.cdivision(True)
def fill(object out, Py_ssize_t start, int width, uint64_t pattern):
    """Write `pattern` (the value's native bits) into items start.. of `out`; a status code."""
    cdef Py_buffer view
    cdef Py_ssize_t nitems
    cdef int status = get_out(out, &view, width)
    if status != ST_OK:
        return status
    try:
        nitems = view.len // width - start
        if start < 0 or nitems < 0:
            return ST_TOO_LONG
        if nitems * width >= GIL_BYTES:
            with nogil:
                fill_span(<unsigned char *>view.buf + start * width, nitems, width, pattern)
        else:
            fill_span(<unsigned char *>view.buf + start * width, nitems, width, pattern)
    finally:
        PyBuffer_Release(&view)
    return ST_OK


cdef class BlobBatch:
    """The rows of a batch, gathered once: a pointer and byte length per row, references held.

    ``BlobBatch(rows, nbytes)`` fills the int64 array ``nbytes`` with each row's byte length
    (-1 for ``None``). It stops at the first row that is not a C-contiguous buffer, setting
    ``bad_index``, ``bad_code`` (ST_NOT_BUFFER / ST_BUFFER) and ``bad_error`` (the exception).
    """

    cdef Py_ssize_t n
    cdef const unsigned char **ptrs
    cdef Py_ssize_t *sizes
    cdef PyObject **refs
    cdef Py_buffer *views
    cdef unsigned char *held
    cdef readonly Py_ssize_t bad_index
    cdef readonly int bad_code
    cdef readonly object bad_error

    def __cinit__(self, object rows, int64_t[::1] nbytes):
        cdef object seq = PySequence_Fast(rows, "blobs must be a sequence")
        cdef Py_ssize_t i, n = PySequence_Fast_GET_SIZE(seq)
        cdef PyObject *item
        self.bad_index = -1
        self.bad_code = ST_OK
        self.bad_error = None
        if nbytes.shape[0] != n:
            raise ValueError(f"nbytes has {nbytes.shape[0]} entries for {n} rows")
        self.n = n
        self.ptrs = <const unsigned char **>calloc(max(n, 1), sizeof(void *))
        self.sizes = <Py_ssize_t *>calloc(max(n, 1), sizeof(Py_ssize_t))
        self.refs = <PyObject **>calloc(max(n, 1), sizeof(PyObject *))
        if self.ptrs == NULL or self.sizes == NULL or self.refs == NULL:
            raise MemoryError()
        for i in range(n):
            item = PySequence_Fast_GET_ITEM(seq, i)
            obj = <object>item
            if PyBytes_CheckExact(obj):
                self.ptrs[i] = <const unsigned char *>PyBytes_AS_STRING(obj)
                self.sizes[i] = PyBytes_GET_SIZE(obj)
                Py_INCREF(obj)
                self.refs[i] = item
            elif obj is None:
                self.sizes[i] = -1
            elif not PyObject_CheckBuffer(obj):
                self.bad_index, self.bad_code = i, ST_NOT_BUFFER
                nbytes[i] = -1
                return
            else:
                if self.views == NULL:
                    self.views = <Py_buffer *>calloc(n, sizeof(Py_buffer))
                    self.held = <unsigned char *>calloc(n, 1)
                    if self.views == NULL or self.held == NULL:
                        raise MemoryError()
                try:
                    PyObject_GetBuffer(obj, &self.views[i], PyBUF_C_CONTIGUOUS)
                except (BufferError, TypeError, ValueError) as e:
                    self.bad_index, self.bad_code, self.bad_error = i, ST_BUFFER, e
                    nbytes[i] = -1
                    return
                self.held[i] = 1
                self.ptrs[i] = <const unsigned char *>self.views[i].buf
                self.sizes[i] = self.views[i].len
            nbytes[i] = self.sizes[i]

    def __dealloc__(self):
        cdef Py_ssize_t i
        if self.refs != NULL:
            for i in range(self.n):
                Py_XDECREF(self.refs[i])
        if self.views != NULL and self.held != NULL:
            for i in range(self.n):
                if self.held[i]:
                    PyBuffer_Release(&self.views[i])
        free(self.refs)
        free(self.held)
        free(self.views)
        free(<void *>self.ptrs)
        free(self.sizes)

    def __len__(self):
        return self.n


@cython.cdivision(True)
def decode_matrix(BlobBatch batch not None, object out, Py_ssize_t ncols, int width, bint flip,
                  uint64_t pattern, bint stream, Py_ssize_t start=0, Py_ssize_t stop=-1):
    """Decode rows start..stop (default: all) of `batch` into the same rows of the C-contiguous
    (n, ncols) `out`, padding with `pattern`; GIL released. Every row of the batch is checked
    first: returns 0, or a status < 0 with nothing written. Two threads may decode disjoint
    row ranges of one batch at once."""
    cdef Py_buffer view
    cdef Py_ssize_t i, size, nitems, total = 0
    cdef Py_ssize_t rowbytes = ncols * width
    cdef unsigned char *dst
    cdef bint avx2 = _use_avx2
    cdef int status
    if stop < 0:
        stop = batch.n
    if batch.bad_index >= 0 or ncols < 0 or not 0 <= start <= stop <= batch.n:
        return ST_BUFFER
    for i in range(batch.n):  # re-check before the first write: never a partial result
        size = batch.sizes[i]
        if size > rowbytes:
            return ST_TOO_LONG
        if size > 0 and size % width != 0:
            return ST_RAGGED
        total += size if size > 0 else 0
    status = get_out(out, &view, width)
    if status != ST_OK:
        return status
    try:
        if view.len != batch.n * rowbytes:
            return ST_OUT
        dst = <unsigned char *>view.buf
        if view.len >= GIL_BYTES or total >= GIL_BYTES:
            with nogil:
                for i in range(start, stop):
                    size = batch.sizes[i] if batch.sizes[i] > 0 else 0
                    decode_span(batch.ptrs[i], dst + i * rowbytes, size, width, flip, avx2,
                                stream)
                    nitems = ncols - size // width
                    fill_span(dst + i * rowbytes + size, nitems, width, pattern)
        else:
            for i in range(start, stop):
                size = batch.sizes[i] if batch.sizes[i] > 0 else 0
                decode_span(batch.ptrs[i], dst + i * rowbytes, size, width, flip, avx2, False)
                fill_span(dst + i * rowbytes + size, ncols - size // width, width, pattern)
    finally:
        PyBuffer_Release(&view)
    return ST_OK


cdef class RowWriter:
    """Decodes blobs into rows of one C-contiguous (nrows, ncols) matrix whose buffer it holds
    (checked once, so a row costs no buffer export). ``write(i, blob)`` returns the items
    written into the start of row i, or a status < 0 with nothing written (ST_ROW: i out of
    range). ``close()`` releases the matrix; so does garbage collection."""

    cdef Py_buffer view
    cdef bint held
    cdef readonly Py_ssize_t nrows
    cdef readonly Py_ssize_t ncols
    cdef int width
    cdef bint flip
    cdef bint stream

    def __cinit__(self, object out, Py_ssize_t nrows, Py_ssize_t ncols, int width, bint flip,
                  bint stream):
        self.held = False
        if get_out(out, &self.view, width) != ST_OK:
            raise ValueError("out must be a writable C-contiguous buffer of that item size")
        self.held = True
        if nrows < 0 or ncols < 0 or self.view.len != nrows * ncols * width:
            self.close()
            raise ValueError(f"out holds {self.view.len} bytes, not {nrows} x {ncols} items")
        self.nrows, self.ncols, self.width, self.flip, self.stream = (
            nrows, ncols, width, flip, stream
        )

    def close(self):
        if self.held:
            self.held = False
            PyBuffer_Release(&self.view)

    def __dealloc__(self):
        self.close()

    @cython.cdivision(True)
    def write(self, Py_ssize_t i, object blob):
        cdef Borrowed src
        cdef unsigned char *dst
        cdef Py_ssize_t n
        if not self.held:
            return ST_OUT
        if i < 0 or i >= self.nrows:
            return ST_ROW
        if blob is None:
            return 0
        borrow(blob, &src)
        n = src.len
        if n < 0:
            return n
        try:
            if n % self.width != 0:
                return ST_RAGGED
            if n > self.ncols * self.width:
                return ST_TOO_LONG
            dst = <unsigned char *>self.view.buf + i * self.ncols * self.width
            if n >= GIL_BYTES:
                with nogil:
                    decode_span(src.buf, dst, n, self.width, self.flip, _use_avx2, self.stream)
            else:
                decode_span(src.buf, dst, n, self.width, self.flip, _use_avx2, False)
        finally:
            give_back(&src)
        return n // self.width


@cython.boundscheck(False)
@cython.wraparound(False)
def fill_rows(object out, const int64_t[::1] lengths, Py_ssize_t ncols, int width,
              uint64_t pattern):
    """Pad row i of the C-contiguous (n, ncols) `out` from item lengths[i] on; a status code."""
    cdef Py_buffer view
    cdef Py_ssize_t i, start, n = lengths.shape[0]
    cdef unsigned char *dst
    for i in range(n):
        if lengths[i] < 0 or lengths[i] > ncols:
            return ST_TOO_LONG
    cdef int status = get_out(out, &view, width)
    if status != ST_OK:
        return status
    try:
        if view.len != n * ncols * width:
            return ST_OUT
        dst = <unsigned char *>view.buf
        with nogil:
            for i in range(n):
                start = <Py_ssize_t>lengths[i]
                fill_span(dst + (i * ncols + start) * width, ncols - start, width, pattern)
    finally:
        PyBuffer_Release(&view)
    return ST_OK

"""Differential tests: every backend of valarfast.blobs against a plain numpy reference, bit-exact.

Backends: the compiled kernels with AVX2, the compiled kernels forced to scalar code, and the
numpy fallback; each with and without non-temporal stores. Comparisons go through unsigned
integer views, so NaN payloads, signalling NaNs, -0.0 and subnormals count.
"""

from __future__ import annotations

import array
import struct
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from valarfast import _kernels, blobs

NUMERIC = [
    "byte",
    "short",
    "int",
    "long",
    "float",
    "double",
    "unsigned_byte",
    "unsigned_short",
    "unsigned_int",
    "unsigned_long",
    "unsigned_float",
    "unsigned_double",
]
WIDTH = {"byte": 1, "short": 2, "int": 4, "long": 8, "float": 4, "double": 8}
WIDTH |= {f"unsigned_{k}": v for k, v in WIDTH.items()}
NATIVE = {
    "byte": "i1",
    "short": "i2",
    "int": "i4",
    "long": "i8",
    "float": "f4",
    "double": "f8",
    "unsigned_byte": "u1",
    "unsigned_short": "u2",
    "unsigned_int": "u4",
    "unsigned_long": "u8",
    "unsigned_float": "f4",
    "unsigned_double": "f8",
}

# float bit patterns that break float-arithmetic decoders
SPECIAL32 = [
    0x7FC00000,
    0x7F800001,
    0x7FA00001,
    0xFFBFFFFF,
    0x80000000,
    0x00000001,
    0x807FFFFF,
    0x7F800000,
    0xFF800000,
    0x00800000,
    0x7FFFFFFF,
]
SPECIAL64 = [
    0x7FF8000000000000,
    0x7FF0000000000001,
    0x7FF4000000000000,
    0x8000000000000000,
    0x0000000000000001,
    0x800FFFFFFFFFFFFF,
    0x7FF0000000000000,
    0xFFF8DEADBEEF0001,
]


def reference(data: bytes, type_name: str) -> np.ndarray:
    """Plain numpy: big-endian signed integers, plus 2**(bits-1) (mod 2**bits) for unsigned_*."""
    w = WIDTH[type_name]
    stored = np.frombuffer(data, dtype=f">i{w}").astype(f"i{w}").view(f"u{w}")
    if type_name.startswith("unsigned_") and NATIVE[type_name][0] == "u":
        stored = stored + np.array(2 ** (8 * w - 1), dtype=f"u{w}")
    return stored.astype(f"u{w}").view(NATIVE[type_name])


def bits(a: np.ndarray) -> np.ndarray:
    return a.view(f"u{a.dtype.itemsize}")


def same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(bits(a), bits(b))


BACKENDS = ["avx2", "scalar", "numpy"]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> Iterator[str]:
    previous = blobs.set_backend("numpy" if request.param == "numpy" else "compiled")
    _kernels.set_simd(request.param == "avx2")
    try:
        yield request.param
    finally:
        _kernels.set_simd(True)
        blobs.set_backend(previous)


@pytest.fixture(params=[False, True], ids=["cached", "streamed-2threads"])
def stream(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    if request.param:  # every output counts as large: streaming stores, two threads
        monkeypatch.setattr(blobs, "STREAM_BYTES", 0)
        monkeypatch.setattr(blobs, "THREAD_BYTES", 0)
        monkeypatch.setattr(blobs, "THREADS", 2)
    return bool(request.param)


@st.composite
def blob_bytes(draw: st.DrawFn, type_name: str, max_items: int = 80) -> bytes:
    """Random items mixed with special float patterns, of length 0, 1, odd, ..."""
    w = WIDTH[type_name]
    n = draw(st.integers(0, max_items))
    raw = bytearray(draw(st.binary(min_size=n * w, max_size=n * w)))
    specials = SPECIAL32 if w == 4 else SPECIAL64 if w == 8 else []
    for i in range(n):
        if specials and draw(st.integers(0, 3)) == 0:
            raw[i * w : (i + 1) * w] = draw(st.sampled_from(specials)).to_bytes(w, "big")
    return bytes(raw)


def as_input(data: bytes, kind: str, offset: int) -> Any:
    """The same bytes as a bytes / bytearray / (unaligned) memoryview / numpy / array row."""
    if kind == "bytes":
        return data
    if kind == "bytearray":
        return bytearray(data)
    if kind == "numpy":
        return np.frombuffer(data, np.uint8).copy()
    if kind == "array":
        return array.array("B", data)
    buf = bytearray(offset + len(data))
    buf[offset:] = data
    return memoryview(buf)[offset:]


KINDS = st.sampled_from(["bytes", "bytearray", "memoryview", "numpy", "array"])
SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@SETTINGS
@given(data=st.data(), type_name=st.sampled_from(NUMERIC), kind=KINDS, offset=st.integers(0, 7))
def test_decode_matches_reference(
    backend: str, stream: bool, data: st.DataObject, type_name: str, kind: str, offset: int
) -> None:
    raw = data.draw(blob_bytes(type_name))
    expected = reference(raw, type_name)
    got = blobs.decode(as_input(raw, kind, offset), type_name)
    assert same(got, expected)
    out = np.full(len(expected), 7, dtype=NATIVE[type_name])
    assert blobs.decode(as_input(raw, kind, offset), type_name, out=out) is out
    assert same(out, expected)


@SETTINGS
@given(data=st.data(), type_name=st.sampled_from(NUMERIC), offset=st.integers(0, 7))
def test_decode_into_row_writes_prefix_only(
    backend: str, data: st.DataObject, type_name: str, offset: int
) -> None:
    raw = data.draw(blob_bytes(type_name))
    expected = reference(raw, type_name)
    extra = data.draw(st.integers(0, 9))
    row = np.arange(len(expected) + extra).astype(NATIVE[type_name])
    tail = row[len(expected) :].copy()
    assert blobs.decode_into_row(as_input(raw, "memoryview", offset), type_name, row) == len(
        expected
    )
    assert same(row[: len(expected)], expected)
    assert same(row[len(expected) :], tail)


@SETTINGS
@given(data=st.data(), type_name=st.sampled_from(NUMERIC), use_out=st.booleans())
def test_batch_matches_reference(
    backend: str, stream: bool, data: st.DataObject, type_name: str, use_out: bool
) -> None:
    nrows = data.draw(st.integers(0, 7))
    rows = [data.draw(st.none() | blob_bytes(type_name, 40)) for _ in range(nrows)]
    kinds = [data.draw(KINDS) for _ in rows]
    inputs = [
        None if r is None else as_input(r, k, i % 8)
        for i, (r, k) in enumerate(zip(rows, kinds, strict=True))
    ]
    is_float = NATIVE[type_name][0] == "f"
    if is_float:
        fills: st.SearchStrategy[Any] = st.floats(width=32)
    else:
        info = np.iinfo(NATIVE[type_name])
        fills = st.integers(int(info.min), int(info.max))
    fill = data.draw(st.none() | fills)
    decoded = [
        np.empty(0, NATIVE[type_name]) if r is None else reference(r, type_name) for r in rows
    ]
    ncols = max((len(d) for d in decoded), default=0) + (
        data.draw(st.integers(0, 3)) if use_out else 0
    )
    out = np.full((nrows, ncols), 5, dtype=NATIVE[type_name]) if use_out else None
    matrix, lengths = blobs.decode_batch(inputs, type_name, out=out, fill=fill)
    if use_out:
        assert matrix is out
    assert matrix.shape == (nrows, ncols) and matrix.dtype == np.dtype(NATIVE[type_name])
    assert lengths.dtype == np.int64 and lengths.tolist() == [len(d) for d in decoded]
    default = np.nan if is_float else 0
    pad = np.array(default if fill is None else fill, dtype=NATIVE[type_name])
    for i, d in enumerate(decoded):
        assert same(matrix[i, : len(d)], d)
        assert np.array_equal(bits(matrix[i, len(d) :]), np.full(ncols - len(d), bits(pad)[()]))


def test_large_and_streamed_batches_match(backend: str) -> None:
    """Rows of odd lengths into a matrix above the streaming threshold (head/tail paths)."""
    rng = np.random.default_rng(7)
    for type_name, n in [("float", 1_000_003), ("unsigned_short", 2_000_001), ("double", 600_001)]:
        w = WIDTH[type_name]
        rows = [rng.integers(0, 256, (n - 17 * i) * w, dtype=np.uint8).tobytes() for i in range(5)]
        rows[2] = None  # type: ignore[call-overload]
        matrix, lengths = blobs.decode_batch(rows, type_name)
        assert matrix.nbytes > blobs.STREAM_BYTES
        for i, r in enumerate(rows):
            if r is not None:
                assert same(matrix[i, : lengths[i]], reference(r, type_name))
        assert np.isnan(matrix[2]).all() if w != 2 else not matrix[2].any()
        assert same(blobs.decode(rows[0], type_name), reference(rows[0], type_name))


def test_special_floats_survive_bit_for_bit(backend: str) -> None:
    raw32 = b"".join(v.to_bytes(4, "big") for v in SPECIAL32 * 9)
    raw64 = b"".join(v.to_bytes(8, "big") for v in SPECIAL64 * 9)
    assert bits(blobs.decode(raw32, "float")).tolist() == SPECIAL32 * 9
    assert bits(blobs.decode(raw64, "double")).tolist() == SPECIAL64 * 9
    m, _ = blobs.decode_batch([raw32, raw32[:4]], "float")
    assert bits(m[1])[0] == SPECIAL32[0] and bits(m[0]).tolist() == SPECIAL32 * 9


def test_unsigned_types_undo_the_jvm_offset(backend: str) -> None:
    for type_name, fmt in [
        ("unsigned_byte", "b"),
        ("unsigned_short", "h"),
        ("unsigned_int", "i"),
        ("unsigned_long", "q"),
    ]:
        w = WIDTH[type_name]
        values = [0, 1, 2 ** (8 * w - 1), 2 ** (8 * w) - 1, 12345 % 2 ** (8 * w)]
        stored = struct.pack(">" + fmt * len(values), *(v - 2 ** (8 * w - 1) for v in values))
        assert blobs.decode(stored, type_name).tolist() == values


def test_frame_bytes_are_value_minus_128(backend: str) -> None:
    frames = bytes(range(256))  # stored signed byte s -> frame s + 128
    expected = [(s if s < 128 else s - 256) + 128 for s in range(256)]
    assert blobs.decode(frames, "unsigned_byte").tolist() == expected


@SETTINGS
@given(data=st.data(), type_name=st.sampled_from(NUMERIC))
def test_row_writer_matches_reference(backend: str, data: st.DataObject, type_name: str) -> None:
    nrows = data.draw(st.integers(1, 6))
    rows = [data.draw(st.none() | blob_bytes(type_name, 30)) for _ in range(nrows)]
    decoded = [
        np.empty(0, NATIVE[type_name]) if r is None else reference(r, type_name) for r in rows
    ]
    ncols = max(len(d) for d in decoded) + data.draw(st.integers(0, 2))
    out = np.full((nrows, ncols), 3, dtype=NATIVE[type_name])
    order = data.draw(st.permutations(range(nrows)))
    with blobs.RowWriter(out, type_name, stream=data.draw(st.booleans())) as writer:
        for i in order:
            raw = rows[i]
            written = writer.write(i, None if raw is None else as_input(raw, "memoryview", i % 8))
            assert written == len(decoded[i])
    for i, d in enumerate(decoded):
        assert same(out[i, : len(d)], d)
        assert (out[i, len(d) :] == 3).all()


def no_alloc(n: int, dtype: Any) -> np.ndarray:
    raise AssertionError("decode_blob allocated although out was given or the blob was bad")


@SETTINGS
@given(
    data=st.data(),
    type_name=st.sampled_from(NUMERIC),
    kind=KINDS,
    offset=st.integers(0, 7),
    use_out=st.booleans(),
)
def test_decode_blob_matches_reference(
    backend: str, data: st.DataObject, type_name: str, kind: str, offset: int, use_out: bool
) -> None:
    """The one-call kernel of decode(): a new array from `empty`, or exactly `out`, bit-exact."""
    raw = data.draw(st.none() | blob_bytes(type_name))
    expected = reference(raw or b"", type_name)
    spec = blobs._TYPES[type_name]
    blob = None if raw is None else as_input(raw, kind, offset)
    stream_bytes = data.draw(st.sampled_from([0, 1 << 24]))
    out = np.full(len(expected), 9, dtype=NATIVE[type_name]) if use_out else None
    empty = no_alloc if use_out else np.empty
    got = blobs._K.decode_blob(blob, out, spec.width, spec.flip, stream_bytes, empty, spec.dtype)
    assert isinstance(got, np.ndarray)
    if use_out:
        assert got is out
    assert same(got, expected)


def test_large_single_blob_streamed_and_unaligned(
    backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """decode() above the GIL and streaming thresholds, from an unaligned source (head/tail)."""
    monkeypatch.setattr(blobs, "STREAM_BYTES", 0)
    rng = np.random.default_rng(11)
    for type_name, n in [("float", 100_003), ("unsigned_short", 70_001), ("double", 30_001)]:
        raw = rng.integers(0, 256, n * WIDTH[type_name], dtype=np.uint8).tobytes()
        src = as_input(raw, "memoryview", 3)
        assert same(blobs.decode(src, type_name), reference(raw, type_name))
        out = np.zeros(n + 1, NATIVE[type_name])[1:]  # unaligned start of the output
        assert blobs.decode(raw, type_name, out=out) is out
        assert same(out, reference(raw, type_name))


BAD_DECODE_BLOB = [
    ("str", "abcd", lambda: np.zeros(1, np.float32), -1),
    ("int", 42, lambda: np.zeros(1, np.float32), -1),
    ("strided", memoryview(b"\x00" * 16)[::2], lambda: np.zeros(2, np.float32), -2),
    ("ragged", b"\x00" * 6, lambda: np.zeros(1, np.float32), -3),
    ("out too long", b"\x00" * 8, lambda: np.zeros(3, np.float32), -7),
    ("out too short", b"\x00" * 8, lambda: np.zeros(1, np.float32), -7),
    ("None, out not empty", None, lambda: np.zeros(1, np.float32), -7),
    ("out 2-D", b"\x00" * 8, lambda: np.zeros((1, 2), np.float32), -7),
    ("out item size", b"\x00" * 8, lambda: np.zeros(2, np.float64), -5),
    ("out strided", b"\x00" * 8, lambda: np.zeros(4, np.float32)[::2], -5),
    ("out read-only", b"\x00" * 8, lambda: np.frombuffer(b"\x01" * 8, np.float32), -5),
    ("out not a buffer", b"\x00" * 8, lambda: [0.0, 0.0], -5),
]


@pytest.mark.parametrize(
    ("what", "blob", "make_out", "status"), BAD_DECODE_BLOB, ids=[b[0] for b in BAD_DECODE_BLOB]
)
def test_decode_blob_reports_before_writing(
    backend: str, what: str, blob: Any, make_out: Any, status: int
) -> None:
    out = make_out()
    before = np.array(out, copy=True)
    kernels = blobs._K  # compiled or the numpy fallback
    assert kernels.decode_blob(blob, out, 4, False, 0, no_alloc, np.dtype(np.float32)) == status
    assert np.array_equal(np.asarray(out), before)
    if status in (-1, -2, -3):  # a bad blob: nothing allocated either
        assert kernels.decode_blob(blob, None, 4, False, 0, no_alloc, np.float32) == status
    assert kernels.ERR_SIZE == -7

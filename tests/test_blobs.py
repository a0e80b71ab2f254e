"""valarfast.blobs / valarfast.utils: the front's checks, error messages, backend proof, threads."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from valarfast import _kernels, blobs, utils
from valarfast.errors import BlobDecodeError

F32 = struct.pack(">3f", 1.0, -2.5, 3.25)


@pytest.fixture(params=["compiled", "numpy"])
def backend(request: pytest.FixtureRequest) -> Any:
    previous = blobs.set_backend(request.param)
    yield request.param
    blobs.set_backend(previous)


# ---------------------------------------------------------------- the compiled backend is real


def test_compiled_backend_is_active_when_required() -> None:
    """VALARFAST_REQUIRE_COMPILED=1 (as CI sets it): the compiled kernels must load, fresh."""
    code = "import valarfast.blobs as b, json; print(json.dumps(b.backend_info()))"
    env = dict(os.environ, VALARFAST_REQUIRE_COMPILED="1")
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd="/", check=False
    )
    assert result.returncode == 0, result.stderr
    assert '"backend": "compiled"' in result.stdout
    assert _kernels.SOURCE_HASH == blobs.backend_info()["source_hash"] != ""
    if os.environ.get("VALARFAST_REQUIRE_COMPILED") == "1":
        assert blobs.BACKEND == "compiled"


def test_stale_build_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = Path(blobs.__file__).resolve().parent.parent / "src_ext"
    copy = tmp_path / "src_ext"
    shutil.copytree(src, copy, ignore=shutil.ignore_patterns("*.c", "*.html"))
    monkeypatch.setattr(blobs, "_SRC_DIR", copy)
    assert blobs._stale_reason(_kernels) is None
    (copy / "_kernels.pyx").write_text((copy / "_kernels.pyx").read_text() + "\n# edited\n")
    assert "stale build" in (blobs._stale_reason(_kernels) or "")
    with pytest.raises(ImportError, match="rebuild"):
        blobs._load_compiled()
    with pytest.raises(ImportError, match="rebuild"):
        blobs.set_backend("compiled")


def test_unknown_backend() -> None:
    with pytest.raises(ValueError, match="unknown backend"):
        blobs.set_backend("fortran")


# ---------------------------------------------------------------- types and values


def test_dtype_for_every_type_name() -> None:
    expected = {
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
    assert {k: blobs.dtype_for(k) for k in expected} == {
        k: np.dtype(v) for k, v in expected.items()
    }
    assert set(blobs.TYPE_NAMES) == {*expected, "utf8_char"}


@pytest.mark.parametrize("name", ["flaot", "", "FLOAT", None, ">f4"])
def test_unknown_type_name(name: Any, backend: str) -> None:
    with pytest.raises(ValueError, match="unknown blob type"):
        blobs.decode(F32, name)
    with pytest.raises(ValueError, match="unknown blob type"):
        blobs.decode_batch([F32], name)


def test_text(backend: str) -> None:
    assert blobs.decode("zebrafish ✓".encode(), "utf8_char") == "zebrafish ✓"
    assert blobs.decode(bytearray(b"ab"), "utf8_char") == "ab"
    assert blobs.decode(None, "utf8_char") == ""
    with pytest.raises(BlobDecodeError, match="UTF-8"):
        blobs.decode(b"\xff\xfe", "utf8_char")
    with pytest.raises(ValueError, match="str"):
        blobs.decode(b"ab", "utf8_char", out=np.empty(2, np.uint8))
    with pytest.raises(ValueError, match="text"):
        blobs.decode_batch([b"ab"], "utf8_char")
    with pytest.raises(ValueError, match="text"):
        blobs.dtype_for("utf8_char")


def test_none_decodes_to_empty(backend: str) -> None:
    assert blobs.decode(None, "float").shape == (0,)
    row = np.ones(3, np.float32)
    assert blobs.decode_into_row(None, "float", row) == 0 and row.tolist() == [1, 1, 1]
    m, n = blobs.decode_batch([None, None], "int")
    assert m.shape == (2, 0) and n.tolist() == [0, 0]
    m, n = blobs.decode_batch([], "double")
    assert m.shape == (0, 0) and n.shape == (0,)
    m, n = blobs.decode_batch(iter([F32, None]), "float")  # any iterable
    assert np.isnan(m[1]).all() and n.tolist() == [3, 0]


def test_utils_keep_valarpy_values_and_dtypes(backend: str) -> None:
    rng = np.random.default_rng(3)
    raw = rng.integers(0, 256, 4 * 501, dtype=np.uint8).tobytes()
    floats = utils.blob_to_float_array(raw)
    valarpy_way = np.array([z[0] for z in struct.iter_unpack(">f", raw)])
    assert floats.dtype == valarpy_way.dtype == np.float64
    np.testing.assert_array_equal(floats, valarpy_way)  # NaN == NaN here
    frames = utils.blob_to_byte_array(raw)
    expected = np.array([z[0] + 128 for z in struct.iter_unpack(">b", raw)])
    assert frames.dtype == expected.dtype and frames.tolist() == expected.tolist()


def test_fill_row_and_pad_rows(backend: str) -> None:
    m = np.zeros((3, 4), np.float32)
    blobs.pad_rows(m, [4, 1, 0], "float")
    assert np.isnan(m).sum() == 3 + 4 and m[1, 0] == 0
    blobs.pad_rows(m, np.array([0, 0, 2]), "float", fill=-1.0)
    assert (m[:2] == -1).all() and m[2, 2:].tolist() == [-1, -1]
    row = np.zeros(5, np.uint8)
    blobs.fill_row(row, 2, "unsigned_byte", fill=255)
    assert row.tolist() == [0, 0, 255, 255, 255]
    with pytest.raises(ValueError, match="outside"):
        blobs.fill_row(row, 6, "unsigned_byte")
    with pytest.raises(ValueError, match=r"lengths\[1\]=5"):
        blobs.pad_rows(m, [0, 5, 0], "float")
    with pytest.raises(ValueError, match="rows"):
        blobs.pad_rows(m, [0, 0], "float")


# ---------------------------------------------------------------- bad input, nothing written


def sentinel(shape: tuple[int, ...], dtype: Any = np.float32) -> np.ndarray:
    return np.arange(int(np.prod(shape)), dtype=dtype).reshape(shape) + 100


BAD_ROWS = [
    ("not a multiple", F32[:5], BlobDecodeError, r"row 2: 5 bytes is not a multiple of 4"),
    ("str", "abc", TypeError, r"row 2: expected bytes.*got str"),
    ("int", 42, TypeError, r"row 2: .*got int"),
    ("list", [1, 2], TypeError, r"row 2: .*got list"),
    ("strided", memoryview(F32 * 2)[::2], TypeError, r"row 2: cannot read the memoryview"),
]


@pytest.mark.parametrize(
    ("what", "bad", "error", "message"), BAD_ROWS, ids=[b[0] for b in BAD_ROWS]
)
def test_bad_batch_row_is_named_and_out_untouched(
    what: str, bad: Any, error: type[Exception], message: str, backend: str
) -> None:
    out = sentinel((4, 3))
    before = out.copy()
    with pytest.raises(error, match=message):
        blobs.decode_batch([F32, None, bad, F32], "float", out=out)
    assert np.array_equal(out, before)


@pytest.mark.parametrize(
    ("what", "bad", "error", "message"), BAD_ROWS, ids=[b[0] for b in BAD_ROWS]
)
def test_bad_single_blob(
    what: str, bad: Any, error: type[Exception], message: str, backend: str
) -> None:
    message = message.replace("row 2", "blob")
    row = sentinel((8,))
    with pytest.raises(error, match=message):
        blobs.decode(bad, "float")
    with pytest.raises(error, match=message.replace("blob", "row")):
        blobs.decode_into_row(bad, "float", row)
    assert np.array_equal(row, sentinel((8,)))


BAD_OUTS = [
    ("dtype", lambda: np.zeros((2, 3), np.float64), ValueError, "dtype float64"),
    ("byte order", lambda: np.zeros((2, 3), ">f4"), ValueError, "dtype >f4"),
    ("rows", lambda: np.zeros((3, 3), np.float32), ValueError, r"shape \(3, 3\)"),
    ("columns", lambda: np.zeros((2, 2), np.float32), ValueError, r"shape \(2, 2\)"),
    ("ndim", lambda: np.zeros(6, np.float32), ValueError, "2 dimension"),
    ("fortran", lambda: np.zeros((3, 2), np.float32).T, ValueError, "C-contiguous"),
    ("read-only", lambda: np.zeros((2, 3), np.float32).view(), ValueError, "read-only"),
    ("not numpy", lambda: bytearray(24), TypeError, "numpy array"),
]


@pytest.mark.parametrize(
    ("what", "make", "error", "message"), BAD_OUTS, ids=[b[0] for b in BAD_OUTS]
)
def test_bad_out_for_batch(
    what: str, make: Any, error: type[Exception], message: str, backend: str
) -> None:
    out = make()
    if what == "read-only":
        out.flags.writeable = False
    before = bytes(memoryview(out).cast("B")) if isinstance(out, bytearray) else out.copy()
    with pytest.raises(error, match=message):
        blobs.decode_batch([F32, F32[:8]], "float", out=out)
    after = bytes(memoryview(out).cast("B")) if isinstance(out, bytearray) else out
    assert np.array_equal(np.asarray(after), np.asarray(before))


@pytest.mark.parametrize(
    ("make", "error", "message"),
    [
        (lambda: np.zeros(4, np.float32), ValueError, r"shape \(4,\); the blob holds 3 'float'"),
        (lambda: np.zeros(2, np.float32), ValueError, r"shape \(2,\)"),
        (lambda: np.zeros((1, 3), np.float32), ValueError, "1 dimension"),
        (lambda: np.zeros(6, np.float32)[::2], ValueError, "C-contiguous"),
        (lambda: np.zeros(3, np.float64), ValueError, "dtype float64"),
        (lambda: np.zeros(3, ">f4"), ValueError, "dtype >f4"),
        (lambda: np.zeros(3, np.int32), ValueError, "dtype int32"),
        (lambda: bytearray(12), TypeError, "numpy array"),
    ],
)
def test_bad_out_for_decode_leaves_it_untouched(
    make: Any, error: type[Exception], message: str, backend: str
) -> None:
    out = make()
    before = bytes(out) if isinstance(out, bytearray) else out.copy()
    with pytest.raises(error, match=message):
        blobs.decode(F32, "float", out=out)
    assert (out == before) if isinstance(out, bytearray) else np.array_equal(out, before)
    frozen = np.zeros(3, np.float32)
    frozen.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        blobs.decode(F32, "float", out=frozen)
    with pytest.raises(ValueError, match=r"shape \(1,\); the blob holds 0"):
        blobs.decode(None, "float", out=np.zeros(1, np.float32))
    empty = np.zeros(0, np.float32)
    assert blobs.decode(None, "float", out=empty) is empty


class _Subclass(np.ndarray):
    pass


def test_decode_into_an_ndarray_subclass(backend: str) -> None:
    out = np.zeros(3, np.float32).view(_Subclass)
    assert blobs.decode(F32, "float", out=out) is out
    assert out.tolist() == [1.0, -2.5, 3.25]
    assert blobs.decode(F32, "unsigned_float").tolist() == [1.0, -2.5, 3.25]


def test_bad_out_for_single_and_row(backend: str) -> None:
    with pytest.raises(ValueError, match=r"shape \(4,\)"):
        blobs.decode(F32, "float", out=np.zeros(4, np.float32))
    with pytest.raises(ValueError, match="dtype int32"):
        blobs.decode(F32, "float", out=np.zeros(3, np.int32))
    with pytest.raises(ValueError, match="dtype uint16"):
        blobs.decode_into_row(F32[:4], "short", np.zeros(3, np.uint16))
    row = np.zeros(2, np.float32)
    with pytest.raises(BlobDecodeError, match="3 items do not fit in the 2 items"):
        blobs.decode_into_row(F32, "float", row)
    assert row.tolist() == [0, 0]
    strided = np.zeros(8, np.float32)[::2]
    with pytest.raises(ValueError, match="C-contiguous"):
        blobs.decode_into_row(F32, "float", strided)
    frozen = np.zeros(3, np.float32)
    frozen.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        blobs.decode_into_row(F32, "float", frozen)
    with pytest.raises(ValueError, match="1 dimension"):
        blobs.decode_into_row(F32, "float", np.zeros((1, 3), np.float32))


@pytest.mark.parametrize(
    ("type_name", "fill"),
    [
        ("int", 1.5),
        ("unsigned_byte", -1),
        ("byte", 128),
        ("short", "x"),
        ("float", "nan"),
        ("long", True),
        ("unsigned_long", 2**64),
    ],
)
def test_bad_fill(type_name: str, fill: Any, backend: str) -> None:
    out = sentinel((1, 1), blobs.dtype_for(type_name))
    with pytest.raises(ValueError, match="fill="):
        blobs.decode_batch([None], type_name, fill=fill, out=out)
    assert out[0, 0] == 100


def test_fill_values_are_exact(backend: str) -> None:
    m, _ = blobs.decode_batch(
        [None], "unsigned_long", out=np.zeros((1, 2), np.uint64), fill=2**64 - 1
    )
    assert m.tolist() == [[2**64 - 1] * 2]
    payload = np.array([0x7FA00001], np.uint32).view(np.float32)[0]  # a signalling NaN
    m, _ = blobs.decode_batch([None], "float", out=np.zeros((1, 2), np.float32), fill=payload)
    assert m.view(np.uint32).tolist() == [[0x7FA00001] * 2]


# ---------------------------------------------------------------- threads


def test_two_threads_decode_at_once(backend: str) -> None:
    rng = np.random.default_rng(11)
    rows = [rng.integers(0, 256, 4 * 60_000 + 8 * i, dtype=np.uint8).tobytes() for i in range(48)]
    expected, _ = blobs.decode_batch(rows, "float")
    results: list[np.ndarray] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(4):
                m, _ = blobs.decode_batch(rows, "float")
                results.append(m)
                results.append(np.stack([blobs.decode(r, "float")[:60_000] for r in rows[:8]]))
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(results) == 16
    for m in results:
        ref = expected if m.shape == expected.shape else expected[:8, :60_000]
        assert np.array_equal(m.view(np.uint32), ref.view(np.uint32))


@pytest.mark.parametrize("module", ["valarfast.blobs", "valarfast.utils", "valarfast._npkernels"])
def test_docstring_examples(module: str) -> None:
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_row_writer_errors_leave_the_matrix_untouched(backend: str) -> None:
    out = sentinel((3, 3))
    writer = blobs.RowWriter(out, "float")
    cases = [
        (3, F32, IndexError, "row 3 is outside the 3 rows"),
        (-1, F32, IndexError, "row -1 is outside"),
        (1, F32[:7], BlobDecodeError, "row 1: 7 bytes is not a multiple of 4"),
        (1, F32 + F32[:4], BlobDecodeError, "row 1: 4 items do not fit in the 3 items"),
        (2, "text", TypeError, "row 2: expected bytes"),
        (0, memoryview(F32 * 2)[::2], TypeError, "row 0: cannot read"),
    ]
    for i, blob, error, message in cases:
        with pytest.raises(error, match=message):
            writer.write(i, blob)
    assert np.array_equal(out, sentinel((3, 3)))
    assert writer.write(0, F32) == 3 and out[0].tolist() == [1.0, -2.5, 3.25]
    assert writer.write(1, None) == 0
    writer.close()
    with pytest.raises(ValueError, match="writable"):
        writer.write(0, F32)
    with pytest.raises(ValueError, match="dtype float64"):
        blobs.RowWriter(np.zeros((2, 2)), "float")
    frozen = np.zeros((2, 2), np.float32)
    frozen.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        blobs.RowWriter(frozen, "float")

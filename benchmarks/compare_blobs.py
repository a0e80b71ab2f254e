"""Blob decoding: valarfast against sauronlab's way, the best numpy way and a plain memory copy.

Prints, in one run, the median time of each method per case, its throughput (GB/s of blob
bytes) and how many times faster valarfast is ("x" = method time / valarfast time).
Times are medians of several repeats; the machine may be shared, so expect noise.

    python benchmarks/compare_blobs.py            # all cases
    python benchmarks/compare_blobs.py --quick    # fewer repeats
    VALARFAST_STREAM_BYTES=0 python benchmarks/compare_blobs.py   # force non-temporal stores

Methods:
  sauronlab   per row np.copy(np.frombuffer(b, ">f4")), then np.vstack
  numpy best  preallocated matrix, out[i, :n] = np.frombuffer(b, ">f4") per row
  memcpy      the same bytes copied row by row into a preallocated uint8 view (np.copyto)
  valarfast   blobs.decode_batch (fresh matrix, or out= the caller's matrix), one kernel call
  vf per row  blobs.decode_into_row per row (how rows streamed from a cursor are decoded)
  vf RowWriter  blobs.RowWriter(out).write(i, b) per row (matrix checked once)
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from valarfast import blobs


@dataclass(frozen=True)
class Case:
    name: str
    type_name: str
    rows: int
    items: int  # per row
    repeats: int
    single: bool = False  # one blob: decode() instead of decode_batch()


CASES = [
    Case("96 x 600 KB float32", "float", 96, 150_000, 15),
    Case("100,000 x 64 B float32", "float", 100_000, 16, 5),
    Case("one 2 MB float32 blob", "float", 1, 500_000, 200, single=True),
    Case("96 x 150,000 frame bytes", "unsigned_byte", 96, 150_000, 15),
    Case("sensor int16, one 2 MB blob", "short", 1, 1_000_000, 200, single=True),
    Case("one 4 KB float32 blob", "float", 1, 1024, 20_000, single=True),
    Case("1,000 x 4 KB float32", "float", 1_000, 1024, 30),
]
BIG_ENDIAN = {"float": ">f4", "short": ">i2", "unsigned_byte": "u1"}


def medians(fns: dict[str, Callable[[], Any]], repeats: int) -> list[tuple[str, float]]:
    """Median seconds of each function over `repeats` back-to-back calls after a warm-up (as
    asv and timeit do: data that fits stays in cache)."""
    result = []
    for name, fn in fns.items():
        fn()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        result.append((name, statistics.median(times)))
    return result


def numpy_row(b: bytes, type_name: str) -> np.ndarray:
    """Decode one row the numpy way (frames: the JVM offset undone by flipping the top bit)."""
    values = np.frombuffer(b, BIG_ENDIAN[type_name])
    return values ^ np.uint8(0x80) if type_name == "unsigned_byte" else values


def methods(case: Case, data: list[bytes]) -> dict[str, Callable[[], Any]]:
    t, n, rows = case.type_name, case.items, case.rows
    dtype = blobs.dtype_for(t)
    out = np.empty((rows, n), dtype)
    out_bytes = out.view(np.uint8)
    width = dtype.itemsize

    def numpy_best(target: np.ndarray) -> None:
        if t == "unsigned_byte":
            for i, b in enumerate(data):
                np.bitwise_xor(np.frombuffer(b, np.uint8), 0x80, out=target[i, : len(b)])
        else:
            for i, b in enumerate(data):
                target[i, : len(b) // width] = np.frombuffer(b, BIG_ENDIAN[t])

    def memcpy(target: np.ndarray) -> None:
        for i, b in enumerate(data):
            np.copyto(target[i, : len(b)], np.frombuffer(b, np.uint8))

    def per_row() -> None:
        for i, b in enumerate(data):
            blobs.decode_into_row(b, t, out[i])

    def row_writer() -> None:
        with blobs.RowWriter(out, t) as writer:
            for i, b in enumerate(data):
                writer.write(i, b)

    if case.single:
        blob, flat = data[0], out[0]
        return {
            "sauronlab": lambda: np.copy(np.frombuffer(blob, BIG_ENDIAN[t])),
            "numpy astype": lambda: numpy_row(blob, t).astype(dtype),
            "numpy best, out": lambda: numpy_best(out),
            "memcpy, out": lambda: memcpy(out_bytes),
            "valarfast": lambda: blobs.decode(blob, t),
            "valarfast, out": lambda: blobs.decode(blob, t, out=flat),
        }
    return {
        "sauronlab": lambda: np.vstack([np.copy(numpy_row(b, t)) for b in data]),
        "numpy best": lambda: numpy_best(np.empty((rows, n), dtype)),
        "numpy best, out": lambda: numpy_best(out),
        "memcpy": lambda: memcpy(np.empty((rows, n * width), np.uint8)),
        "memcpy, out": lambda: memcpy(out_bytes),
        "vf per row, out": per_row,
        "vf RowWriter, out": row_writer,
        "valarfast": lambda: blobs.decode_batch(data, t),
        "valarfast, out": lambda: blobs.decode_batch(data, t, out=out),
    }


def run(case: Case, scale: float) -> list[tuple[str, float]]:
    rng = np.random.default_rng(42)
    width = blobs.dtype_for(case.type_name).itemsize
    nbytes = case.items * width
    pool = rng.integers(0, 256, nbytes + 4096, dtype=np.uint8).tobytes()
    data = [pool[(i * 64) % 4096 : (i * 64) % 4096 + nbytes] for i in range(case.rows)]
    repeats = max(3, int(case.repeats * scale))
    return medians(methods(case, data), repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a third of the repeats")
    parser.add_argument("--case", help="only cases whose name contains this")
    args = parser.parse_args()
    info = blobs.backend_info()
    print(
        f"valarfast backend={info['backend']} simd={info['simd']} debug={info['debug']} "
        f"stream above {blobs.STREAM_BYTES / 2**20:g} MiB; medians; x = method time / valarfast"
    )
    header = f"{'case':30} {'method':17} {'median us':>10} {'GB/s':>7} {'x fresh':>8} {'x out':>7}"
    print(header)
    print("-" * len(header))
    for case in CASES:
        if args.case and args.case not in case.name:
            continue
        results = run(case, 1 / 3 if args.quick else 1.0)
        vf = dict(results)
        size = case.rows * case.items * blobs.dtype_for(case.type_name).itemsize
        for name, seconds in results:
            fresh, out = seconds / vf["valarfast"], seconds / vf["valarfast, out"]
            digits = 2 if seconds < 1e-5 else 1  # sub-microsecond cases need the hundredths
            print(
                f"{case.name:30} {name:17} {seconds * 1e6:10.{digits}f} "
                f"{size / seconds / 1e9:7.2f} {fresh:8.2f} {out:7.2f}"
            )
        print()


if __name__ == "__main__":
    main()

"""asv: blob decoding, time and peak memory, valarfast against numpy baselines.

The cases of issue 2 (see benchmarks/compare_blobs.py for one-run ratios):
96 x 600 KB float32, 100,000 x 64 B, one 2 MB blob, 96 x 150,000 frame bytes, a sensor int16
blob, 4 KB blobs.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from valarfast import blobs

# name -> (type name, rows, items a row)
CASES = {
    "96x600KB_float": ("float", 96, 150_000),
    "100000x64B_float": ("float", 100_000, 16),
    "1x2MB_float": ("float", 1, 500_000),
    "96x150000_frames": ("unsigned_byte", 96, 150_000),
    "1x2MB_sensor_short": ("short", 1, 1_000_000),
    "1000x4KB_float": ("float", 1_000, 1024),
}
BIG_ENDIAN = {"float": ">f4", "short": ">i2", "unsigned_byte": "u1"}


def _data(case: str) -> tuple[str, list[bytes]]:
    type_name, rows, items = CASES[case]
    width = blobs.dtype_for(type_name).itemsize
    rng = np.random.default_rng(0)
    pool = rng.integers(0, 256, items * width + 4096, dtype=np.uint8).tobytes()
    return type_name, [pool[(i * 64) % 4096 :][: items * width] for i in range(rows)]


class BlobBatch:
    """decode_batch into a fresh matrix / into the caller's out, against per-row numpy."""

    params: ClassVar[list[list[str]]] = [list(CASES)]
    param_names: ClassVar[list[str]] = ["case"]
    timeout = 120

    def setup(self, case: str) -> None:
        self.type_name, self.data = _data(case)
        _, rows, items = CASES[case]
        self.out = np.empty((rows, items), blobs.dtype_for(self.type_name))

    def time_valarfast_fresh(self, case: str) -> None:
        blobs.decode_batch(self.data, self.type_name)

    def time_valarfast_out(self, case: str) -> None:
        blobs.decode_batch(self.data, self.type_name, out=self.out)

    def time_valarfast_per_row_out(self, case: str) -> None:
        for i, b in enumerate(self.data):
            blobs.decode_into_row(b, self.type_name, self.out[i])

    def time_valarfast_row_writer_out(self, case: str) -> None:
        with blobs.RowWriter(self.out, self.type_name) as writer:
            for i, b in enumerate(self.data):
                writer.write(i, b)

    def time_numpy_best_out(self, case: str) -> None:
        dt = BIG_ENDIAN[self.type_name]
        for i, b in enumerate(self.data):
            self.out[i] = np.frombuffer(b, dt)

    def time_sauronlab(self, case: str) -> None:
        dt = BIG_ENDIAN[self.type_name]
        np.vstack([np.copy(np.frombuffer(b, dt)) for b in self.data])

    def time_memcpy_out(self, case: str) -> None:
        target = self.out.view(np.uint8)
        for i, b in enumerate(self.data):
            np.copyto(target[i], np.frombuffer(b, np.uint8))

    def peakmem_valarfast_fresh(self, case: str) -> None:
        blobs.decode_batch(self.data, self.type_name)

    def peakmem_sauronlab(self, case: str) -> None:
        dt = BIG_ENDIAN[self.type_name]
        np.vstack([np.copy(np.frombuffer(b, dt)) for b in self.data])


class SingleBlob:
    """decode of one 4 KB / 2 MB blob: call overhead and in-cache speed."""

    params: ClassVar[list[list[str]]] = [["4KB", "2MB"]]
    param_names: ClassVar[list[str]] = ["size"]

    def setup(self, size: str) -> None:
        n = 1024 if size == "4KB" else 500_000
        self.blob = np.random.default_rng(1).integers(0, 256, 4 * n, dtype=np.uint8).tobytes()
        self.out = np.empty(n, np.float32)

    def time_valarfast(self, size: str) -> None:
        blobs.decode(self.blob, "float")

    def time_valarfast_out(self, size: str) -> None:
        blobs.decode(self.blob, "float", out=self.out)

    def time_numpy_astype(self, size: str) -> None:
        np.frombuffer(self.blob, ">f4").astype(np.float32)

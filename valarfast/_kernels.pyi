"""Typed surface of the compiled module built from src_ext/_kernels.pyx (see valarfast.blobs)."""

from collections.abc import Sequence
from typing import Any

import numpy as np

SOURCE_HASH: str
DEBUG: bool
GIL_RELEASE_BYTES: int
OK: int
ERR_NOT_BUFFER: int
ERR_BUFFER: int
ERR_RAGGED: int
ERR_TOO_LONG: int
ERR_OUT: int
ERR_ROW: int
ERR_SIZE: int

def simd() -> str: ...
def set_simd(enabled: bool) -> str: ...
def blob_nbytes(blob: Any) -> int: ...
def decode_row(blob: Any, out: Any, width: int, flip: bool, stream: bool) -> int: ...
def decode_blob(
    blob: Any, out: Any, width: int, flip: bool, stream_bytes: int, empty: Any, dtype: Any
) -> Any: ...
def fill(out: Any, start: int, width: int, pattern: int) -> int: ...

class BlobBatch:
    bad_index: int
    bad_code: int
    bad_error: BaseException | None
    def __init__(self, rows: Sequence[Any], nbytes: np.ndarray) -> None: ...
    def __len__(self) -> int: ...

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
) -> int: ...
def fill_rows(out: Any, lengths: np.ndarray, ncols: int, width: int, pattern: int) -> int: ...

class RowWriter:
    nrows: int
    ncols: int
    def __init__(
        self, out: Any, nrows: int, ncols: int, width: int, flip: bool, stream: bool
    ) -> None: ...
    def write(self, i: int, blob: Any) -> int: ...
    def close(self) -> None: ...

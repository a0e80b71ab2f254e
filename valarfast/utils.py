"""valarpy's blob helpers, same names and same values, on top of the compiled kernels.

valarpy built these from ``struct.iter_unpack``: Python floats and ints in a numpy array, so
float64 and int64. valarfast keeps those dtypes for drop-in safety; for native float32 / uint8
(no widening copy) use :func:`valarfast.blobs.decode` with ``"float"`` / ``"unsigned_byte"``.

>>> blob_to_float_array(b"\\x3f\\xc0\\x00\\x00").tolist()
[1.5]
>>> blob_to_byte_array(bytes([0x80, 0x00, 0x7F])).tolist()
[0, 128, 255]
"""

from __future__ import annotations

from typing import Any

import numpy as np

from valarfast.blobs import decode

__all__ = ["blob_to_byte_array", "blob_to_float_array"]


def blob_to_float_array(blob: Any) -> np.ndarray:
    """Big-endian float32 blob (``well_features.floats``) -> float64 array, as valarpy returned.

    >>> blob_to_float_array(b"").dtype
    dtype('float64')
    """
    with np.errstate(invalid="ignore"):  # a signalling NaN stays a NaN; no warning for it
        return decode(blob, "float").astype(np.float64)


def blob_to_byte_array(blob: Any) -> np.ndarray:
    """JVM-signed frame bytes (``stimulus_frames.frames``) -> int64 array of 0..255, as valarpy.

    >>> blob_to_byte_array(b"\\xff").tolist()
    [127]
    """
    return decode(blob, "unsigned_byte").astype(np.int64)

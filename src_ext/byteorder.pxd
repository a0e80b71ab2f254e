# cython: language_level=3
"""The only place that knows byte order: big-endian loads, byte swaps and the AVX2 dispatch.

Every helper is ``inline noexcept nogil`` and reads/writes through ``memcpy``, so unaligned
pointers are safe. Values move as unsigned integers, never through float registers, so NaN
payloads, signalling NaNs, -0.0 and subnormals survive bit for bit.
"""

cimport cython
from libc.stdint cimport uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy

cdef extern from *:
    """
    #include <stdint.h>
    #if defined(__BYTE_ORDER__) && defined(__ORDER_BIG_ENDIAN__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
      #define VF_BE16(x) ((uint16_t)(x))
      #define VF_BE32(x) ((uint32_t)(x))
      #define VF_BE64(x) ((uint64_t)(x))
    #elif defined(__GNUC__) || defined(__clang__)
      #define VF_BE16(x) __builtin_bswap16(x)
      #define VF_BE32(x) __builtin_bswap32(x)
      #define VF_BE64(x) __builtin_bswap64(x)
    #elif defined(_MSC_VER)
      #include <stdlib.h>
      #define VF_BE16(x) _byteswap_ushort(x)
      #define VF_BE32(x) _byteswap_ulong(x)
      #define VF_BE64(x) _byteswap_uint64(x)
    #else
      #error "valarfast: unknown compiler; add a byte swap for it in byteorder.pxd"
    #endif
    """
    uint16_t be16 "VF_BE16"(uint16_t x) noexcept nogil
    uint32_t be32 "VF_BE32"(uint32_t x) noexcept nogil
    uint64_t be64 "VF_BE64"(uint64_t x) noexcept nogil

cdef extern from "byteorder_simd.h" nogil:
    const int VF_HAVE_AVX2_CODE
    int vf_cpu_has_avx2() noexcept
    void vf_avx2_decode(const unsigned char *src, unsigned char *dst, size_t n, int width,
                        int flip, int stream) noexcept


@cython.cdivision(True)
cdef inline void swap16_span(const unsigned char *src, unsigned char *dst, Py_ssize_t n,
                             uint16_t flip) noexcept nogil:
    cdef uint16_t v
    cdef Py_ssize_t i
    for i in range(n // 2):
        memcpy(&v, src + 2 * i, 2)
        v = be16(v) ^ flip
        memcpy(dst + 2 * i, &v, 2)


@cython.cdivision(True)
cdef inline void swap32_span(const unsigned char *src, unsigned char *dst, Py_ssize_t n,
                             uint32_t flip) noexcept nogil:
    cdef uint32_t v
    cdef Py_ssize_t i
    for i in range(n // 4):
        memcpy(&v, src + 4 * i, 4)
        v = be32(v) ^ flip
        memcpy(dst + 4 * i, &v, 4)


@cython.cdivision(True)
cdef inline void swap64_span(const unsigned char *src, unsigned char *dst, Py_ssize_t n,
                             uint64_t flip) noexcept nogil:
    cdef uint64_t v
    cdef Py_ssize_t i
    for i in range(n // 8):
        memcpy(&v, src + 8 * i, 8)
        v = be64(v) ^ flip
        memcpy(dst + 8 * i, &v, 8)


cdef inline void flip8_span(const unsigned char *src, unsigned char *dst,
                            Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        dst[i] = src[i] ^ 0x80


cdef inline void decode_span(const unsigned char *src, unsigned char *dst, Py_ssize_t n,
                             int width, bint flip, bint avx2, bint stream) noexcept nogil:
    """Decode n bytes (a multiple of width) of big-endian items from src into native dst."""
    if n <= 0:
        return
    if width == 1 and not flip and not stream:
        memcpy(dst, src, <size_t>n)
    elif avx2 and n >= 32:
        vf_avx2_decode(src, dst, <size_t>n, width, flip, stream)
    elif width == 1:
        if flip:
            flip8_span(src, dst, n)
        else:
            memcpy(dst, src, <size_t>n)
    elif width == 2:
        swap16_span(src, dst, n, 0x8000 if flip else 0)
    elif width == 4:
        swap32_span(src, dst, n, 0x80000000 if flip else 0)
    else:
        swap64_span(src, dst, n, 0x8000000000000000 if flip else 0)

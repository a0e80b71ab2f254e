/* AVX2 body of valarfast's big-endian decoding, chosen at run time (no -march flags needed).
 *
 * Only byteorder.pxd includes this file. vf_avx2_decode() turns `n` bytes (n >= 32, a multiple
 * of `width`) of big-endian items of 1, 2, 4 or 8 bytes into native little-endian items, XOR-ing
 * `flip` into the top bit of each (the JVM-signed "unsigned_*" offset) and optionally writing with
 * non-temporal (streaming) stores. The scalar code for other CPUs lives in byteorder.pxd.
 */
#ifndef VALARFAST_BYTEORDER_SIMD_H
#define VALARFAST_BYTEORDER_SIMD_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#if defined(__GNUC__) && defined(__x86_64__) && !defined(VALARFAST_NO_SIMD)
#define VF_HAVE_AVX2_CODE 1
#include <immintrin.h>

static int vf_cpu_has_avx2(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") ? 1 : 0;
}

__attribute__((target("avx2")))
static inline __m256i vf_avx2_item(const unsigned char *src, __m256i shuffle, __m256i flip)
{
    __m256i v = _mm256_loadu_si256((const __m256i *)src);
    return _mm256_xor_si256(_mm256_shuffle_epi8(v, shuffle), flip);
}

__attribute__((target("avx2")))
static void vf_avx2_decode(const unsigned char *src, unsigned char *dst, size_t n, int width,
                           int flip, int stream)
{
    __m256i shuffle, flipmask;
    size_t i = 0;
    switch (width) {
    case 2:
        shuffle = _mm256_setr_epi8(1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 15, 14,
                                   1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 15, 14);
        flipmask = _mm256_set1_epi16(flip ? (short)0x8000 : 0);
        break;
    case 4:
        shuffle = _mm256_setr_epi8(3, 2, 1, 0, 7, 6, 5, 4, 11, 10, 9, 8, 15, 14, 13, 12,
                                   3, 2, 1, 0, 7, 6, 5, 4, 11, 10, 9, 8, 15, 14, 13, 12);
        flipmask = _mm256_set1_epi32(flip ? (int)0x80000000u : 0);
        break;
    case 8:
        shuffle = _mm256_setr_epi8(7, 6, 5, 4, 3, 2, 1, 0, 15, 14, 13, 12, 11, 10, 9, 8,
                                   7, 6, 5, 4, 3, 2, 1, 0, 15, 14, 13, 12, 11, 10, 9, 8);
        flipmask = _mm256_set1_epi64x(flip ? (long long)0x8000000000000000ull : 0);
        break;
    default: /* 1: bytes stay in place */
        shuffle = _mm256_setr_epi8(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15,
                                   0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
        flipmask = _mm256_set1_epi8(flip ? (char)0x80 : 0);
        break;
    }
    if (((uintptr_t)dst % (uintptr_t)width) == 0) {
        /* one unaligned vector, then continue from the next 32-byte aligned address, so that no
           store splits a cache line; the step is a multiple of width as dst is width-aligned */
        size_t misalign = (uintptr_t)dst & 31u;
        if (misalign) {
            _mm256_storeu_si256((__m256i *)dst, vf_avx2_item(src, shuffle, flipmask));
            i = 32 - misalign;
        }
    } else {
        stream = 0; /* items straddle the 32-byte lines: no aligned start exists */
    }
    if (stream) {
        for (; i + 32 <= n; i += 32)
            _mm256_stream_si256((__m256i *)(dst + i), vf_avx2_item(src + i, shuffle, flipmask));
    } else {
        for (; i + 128 <= n; i += 128) {
            __m256i a = vf_avx2_item(src + i, shuffle, flipmask);
            __m256i b = vf_avx2_item(src + i + 32, shuffle, flipmask);
            __m256i c = vf_avx2_item(src + i + 64, shuffle, flipmask);
            __m256i d = vf_avx2_item(src + i + 96, shuffle, flipmask);
            _mm256_storeu_si256((__m256i *)(dst + i), a);
            _mm256_storeu_si256((__m256i *)(dst + i + 32), b);
            _mm256_storeu_si256((__m256i *)(dst + i + 64), c);
            _mm256_storeu_si256((__m256i *)(dst + i + 96), d);
        }
        for (; i + 32 <= n; i += 32)
            _mm256_storeu_si256((__m256i *)(dst + i), vf_avx2_item(src + i, shuffle, flipmask));
    }
    if (i < n) /* last vector overlaps the previous one; n - 32 is a multiple of width */
        _mm256_storeu_si256((__m256i *)(dst + n - 32), vf_avx2_item(src + n - 32, shuffle, flipmask));
    if (stream)
        _mm_sfence();
}

#else
#define VF_HAVE_AVX2_CODE 0
static int vf_cpu_has_avx2(void) { return 0; }
static void vf_avx2_decode(const unsigned char *src, unsigned char *dst, size_t n, int width,
                           int flip, int stream)
{
    (void)src; (void)dst; (void)n; (void)width; (void)flip; (void)stream;
}
#endif

#endif /* VALARFAST_BYTEORDER_SIMD_H */

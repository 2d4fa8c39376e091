/* The two byte loops of the websocket hot path: unmasking client payloads
 * (RFC 6455 section 5.3) and validating UTF-8 incrementally (RFC 3629).
 *
 * Portable C99, no compiler extensions, no dependency on Python.h: word-wise
 * work goes through memcpy (no unaligned access, no aliasing violation;
 * compilers turn a fixed 8-byte memcpy into a plain load or store).
 * `static inline` as CPython's own headers use it, so each module that
 * includes this file gets its own copy and no unused-function warning.
 */
#ifndef TURBOWS_UNMASK_UTF8_H
#define TURBOWS_UNMASK_UTF8_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* XOR `n` bytes of `src` with the 4-byte `mask`, starting at mask offset
 * `phase` (0..3), into `dst`; returns the phase after the last byte.
 * `dst` and `src` may be the same pointer, never otherwise overlapping. */
static inline size_t turbows_unmask(unsigned char *dst, const unsigned char *src, size_t n,
                                    const unsigned char *mask, size_t phase)
{
    size_t i = 0;
    unsigned char rotated[8];
    uint64_t m, chunk;
    int k;
    for (k = 0; k < 8; k++) rotated[k] = mask[(phase + (size_t)k) & 3];
    memcpy(&m, rotated, 8);
    for (; i + 8 <= n; i += 8) {
        memcpy(&chunk, src + i, 8);
        chunk ^= m;
        memcpy(dst + i, &chunk, 8);
    }
    for (; i < n; i++) dst[i] = src[i] ^ mask[(phase + i) & 3];
    return (phase + n) & 3;
}

/* Incremental UTF-8 validation: no overlongs, no surrogates, nothing above
 * U+10FFFF. The state is 0 between characters, else need | lo << 8 | hi << 16:
 * the continuation bytes still needed and the range the next one must fall
 * in. TURBOWS_UTF8_REJECT is sticky. A text message is valid when the state
 * after its last byte is 0. */
#define TURBOWS_UTF8_REJECT 0xFFFFFFFFu

static inline uint32_t turbows_utf8(uint32_t state, const unsigned char *s, size_t n)
{
    size_t i = 0;
    uint32_t need, lo, hi;
    uint64_t chunk;
    unsigned char b;
    if (state == TURBOWS_UTF8_REJECT) return state;
    need = state & 0xFF;
    lo = (state >> 8) & 0xFF;
    hi = (state >> 16) & 0xFF;
    while (i < n) {
        if (need == 0) {
            /* ASCII runs, eight bytes at a time */
            while (i + 8 <= n) {
                memcpy(&chunk, s + i, 8);
                if (chunk & UINT64_C(0x8080808080808080)) break;
                i += 8;
            }
            if (i >= n) break;
            b = s[i++];
            if (b < 0x80) continue;
            if (b >= 0xC2 && b <= 0xDF) { need = 1; lo = 0x80; hi = 0xBF; }
            else if (b == 0xE0) { need = 2; lo = 0xA0; hi = 0xBF; }
            else if ((b >= 0xE1 && b <= 0xEC) || b == 0xEE || b == 0xEF) { need = 2; lo = 0x80; hi = 0xBF; }
            else if (b == 0xED) { need = 2; lo = 0x80; hi = 0x9F; }
            else if (b == 0xF0) { need = 3; lo = 0x90; hi = 0xBF; }
            else if (b >= 0xF1 && b <= 0xF3) { need = 3; lo = 0x80; hi = 0xBF; }
            else if (b == 0xF4) { need = 3; lo = 0x80; hi = 0x8F; }
            else return TURBOWS_UTF8_REJECT;
        } else {
            b = s[i++];
            if (b < lo || b > hi) return TURBOWS_UTF8_REJECT;
            need--;
            lo = 0x80;
            hi = 0xBF;
        }
    }
    if (need == 0) return 0;
    return need | (lo << 8) | (hi << 16);
}

#endif /* TURBOWS_UNMASK_UTF8_H */

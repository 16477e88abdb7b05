//! The window pass of [`Keywords::find`] sixteen windows at a time, with AVX2.
//!
//! Same windows, same hashes and same filter as the scalar loop: the 32 bytes at `i` read as
//! eight little-endian `u32` lanes are the windows at `i, i+4, … i+28`, and the 32 bytes at
//! `i + 2` the windows at `i+2, i+6, … i+30`. Each lane is folded and hashed twice (one multiply
//! each), its filter word is fetched with one gather, and a window with all three of its bits
//! set goes to [`Keywords::candidate`], as in the scalar loop. The digit-block map comes from
//! the same loads.
//!
//! This is the crate's one use of SIMD intrinsics, behind a run-time feature check; the tests
//! run both this and the scalar loop against a plain automaton.

#![allow(unsafe_code)]

use super::{Hit, Keywords, BIT_A, BIT_B, BIT_C, FILTER_BITS, FOLD4, MUL1, MUL2};
use std::arch::x86_64::{
    __m256i, _mm256_and_si256, _mm256_castsi256_ps, _mm256_cmpeq_epi8, _mm256_i32gather_epi32,
    _mm256_loadu_si256, _mm256_min_epu8, _mm256_movemask_epi8, _mm256_movemask_ps,
    _mm256_mullo_epi32, _mm256_or_si256, _mm256_set1_epi32, _mm256_set1_epi8, _mm256_slli_epi32,
    _mm256_srli_epi32, _mm256_srlv_epi32, _mm256_sub_epi8,
};

/// Whether this CPU can run [`scan`] (cached by the standard library after the first call).
pub(super) fn available() -> bool {
    std::arch::is_x86_feature_detected!("avx2")
}

/// Runs the window pass over `hay` from offset 0 in steps of 32 bytes for as long as 34 bytes
/// remain, and returns the offset where it stopped (a multiple of 32) for the scalar loop to go
/// on from. Marks `digit_blocks` for the blocks it covered. Returns 0 without AVX2.
pub(super) fn scan(
    k: &Keywords,
    hay: &[u8],
    out: &mut Vec<Hit>,
    digit_blocks: &mut [u64],
) -> usize {
    if !available() || digit_blocks.len() < hay.len() / 512 + 1 {
        return 0;
    }
    // SAFETY: AVX2 is present and the digit map is long enough (both checked just above),
    // which is all `scan_avx2` requires.
    unsafe { scan_avx2(k, hay, out, digit_blocks) }
}

/// # Safety
/// The CPU must support AVX2, and `digit_blocks` must hold at least `hay.len() / 512 + 1` words.
#[target_feature(enable = "avx2")]
unsafe fn scan_avx2(
    k: &Keywords,
    hay: &[u8],
    out: &mut Vec<Hit>,
    digit_blocks: &mut [u64],
) -> usize {
    const SHIFT: i32 = 32 - FILTER_BITS as i32;
    let filter: *const i32 = k.filter.as_ptr().cast();
    let fold = _mm256_set1_epi32(FOLD4 as i32);
    let mul1 = _mm256_set1_epi32(MUL1 as i32);
    let mul2 = _mm256_set1_epi32(MUL2 as i32);
    let low5 = _mm256_set1_epi32(31);
    let zero = _mm256_set1_epi8(b'0' as i8);
    let nine = _mm256_set1_epi8(9);
    // Lanes whose window has all three of its bits set, as a mask (bit `l` for lane `l`).
    let lanes = |raw: __m256i| -> u32 {
        let folded = _mm256_or_si256(raw, fold);
        let at = _mm256_srli_epi32::<SHIFT>(_mm256_mullo_epi32(folded, mul1));
        let h = _mm256_mullo_epi32(folded, mul2);
        let a = _mm256_srli_epi32::<{ BIT_A as i32 }>(h);
        let b = _mm256_and_si256(_mm256_srli_epi32::<{ BIT_B as i32 }>(h), low5);
        let c = _mm256_and_si256(_mm256_srli_epi32::<{ BIT_C as i32 }>(h), low5);
        // SAFETY: every index is below `2^FILTER_BITS`, the filter's length in u32 words, so
        // every gathered address is inside it.
        let word = unsafe { _mm256_i32gather_epi32::<4>(filter, at) };
        let all = _mm256_and_si256(
            _mm256_and_si256(_mm256_srlv_epi32(word, a), _mm256_srlv_epi32(word, b)),
            _mm256_srlv_epi32(word, c),
        );
        _mm256_movemask_ps(_mm256_castsi256_ps(_mm256_slli_epi32::<31>(all))) as u32
    };
    let n = hay.len();
    let mut i = 0;
    while i + 34 <= n {
        let p = hay[i..i + 34].as_ptr();
        // SAFETY: the two unaligned 32-byte loads read `p..p+32` and `p+2..p+34`, inside the
        // 34-byte slice `p` comes from.
        let (at0, at2) = unsafe {
            (
                _mm256_loadu_si256(p.cast()),
                _mm256_loadu_si256(p.add(2).cast()),
            )
        };
        // Digits: bytes whose distance above `0` is at most 9.
        let d = _mm256_sub_epi8(at0, zero);
        let digits = _mm256_movemask_epi8(_mm256_cmpeq_epi8(_mm256_min_epu8(d, nine), d)) as u32;
        if digits != 0 {
            let blocks = (0..4).fold(0u64, |acc, b| {
                acc | (u64::from(digits >> (8 * b) & 0xFF != 0) << b)
            });
            // `i` is a multiple of 32: its four blocks share one map word.
            digit_blocks[i / 512] |= blocks << ((i / 8) % 64);
        }
        // Window offsets: lane `l` of `at0` is `i + 4l`, of `at2` is `i + 2 + 4l`; interleaved
        // into one 16-bit mask, bit `m` is the window at `i + 2m`.
        let mut hits = spread(lanes(at0)) | spread(lanes(at2)) << 1;
        while hits != 0 {
            k.candidate(hay, i + 2 * hits.trailing_zeros() as usize, out);
            hits &= hits - 1;
        }
        i += 32;
    }
    i
}

/// Moves bit `l` of an 8-bit mask to bit `2l`.
fn spread(m: u32) -> u32 {
    let mut x = m & 0xFF;
    x = (x | x << 4) & 0x0F0F;
    x = (x | x << 2) & 0x3333;
    (x | x << 1) & 0x5555
}

#[cfg(test)]
mod tests {
    #[test]
    fn spread_puts_lane_l_at_bit_2l() {
        for m in 0..=255u32 {
            let want = (0..8).fold(0, |acc, l| acc | (m >> l & 1) << (2 * l));
            assert_eq!(super::spread(m), want, "{m:08b}");
        }
    }
}

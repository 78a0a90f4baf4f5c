//! Prefix keys: SipHash-1-3 with 128-bit output over `root ++ tokens` (the root names the
//! adapter and namespace; tokens as little-endian u32s). The key of block i is the hash of the
//! whole prefix up to and including block i, taken from a running state, so finalising block
//! i overlaps with absorbing block i + 1 and a prompt is hashed in one pass. The streaming
//! hasher of the `siphasher` crate computes the same function (a test checks it).

#[inline(always)]
fn round(v: &mut [u64; 4]) {
    v[0] = v[0].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(13) ^ v[0];
    v[0] = v[0].rotate_left(32);
    v[2] = v[2].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(16) ^ v[2];
    v[0] = v[0].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(21) ^ v[0];
    v[2] = v[2].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(17) ^ v[2];
    v[2] = v[2].rotate_left(32);
}

#[inline(always)]
fn absorb(v: &mut [u64; 4], m: u64) {
    v[3] ^= m;
    round(v);
    v[0] ^= m;
}

/// The running hash of a prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrefixHasher {
    v: [u64; 4],
    /// A token waiting for its pair to fill a 64-bit word.
    pending: Option<u32>,
    /// Bytes absorbed so far (SipHash folds the length into the last word).
    len: u64,
}

impl PrefixHasher {
    /// Starts a prefix under `key`, from the 128-bit `root` of an adapter and namespace.
    pub fn new(key: (u64, u64), root: u128) -> Self {
        let (k0, k1) = key;
        let mut v = [
            k0 ^ 0x736f6d6570736575,
            k1 ^ 0x646f72616e646f6d ^ 0xee,
            k0 ^ 0x6c7967656e657261,
            k1 ^ 0x7465646279746573,
        ];
        absorb(&mut v, root as u64);
        absorb(&mut v, (root >> 64) as u64);
        PrefixHasher { v, pending: None, len: 16 }
    }

    /// Appends tokens to the prefix.
    #[inline]
    pub fn extend(&mut self, tokens: &[u32]) {
        let mut rest = tokens;
        if let Some(p) = self.pending.take() {
            match rest.split_first() {
                Some((&t, tail)) => {
                    absorb(&mut self.v, p as u64 | (t as u64) << 32);
                    rest = tail;
                }
                None => {
                    self.pending = Some(p);
                    return;
                }
            }
        }
        let mut pairs = rest.chunks_exact(2);
        for p in &mut pairs {
            absorb(&mut self.v, p[0] as u64 | (p[1] as u64) << 32);
        }
        self.pending = pairs.remainder().first().copied();
        self.len += 4 * tokens.len() as u64;
    }

    /// SipHash's last message word: the pending bytes and the length's low byte.
    #[inline]
    fn last_word(&self) -> u64 {
        self.pending.map_or(0, |t| t as u64) | (self.len & 0xff) << 56
    }

    /// The key of the prefix absorbed so far (the state itself is unchanged).
    #[inline]
    pub fn key(&self) -> u128 {
        let mut v = self.v;
        absorb(&mut v, self.last_word());
        v[2] ^= 0xee;
        round(&mut v);
        round(&mut v);
        round(&mut v);
        let h1 = v[0] ^ v[1] ^ v[2] ^ v[3];
        v[1] ^= 0xdd;
        round(&mut v);
        round(&mut v);
        round(&mut v);
        let h2 = v[0] ^ v[1] ^ v[2] ^ v[3];
        h1 as u128 | (h2 as u128) << 64
    }
}

/// The keys of several prefix states: `out[i] = states[i].key()`. The finalisations are
/// independent of each other, so with AVX2 four of them run side by side in vector lanes;
/// during a match they are about half of the hashing work.
pub fn keys_of(states: &[PrefixHasher], out: &mut [u128]) {
    assert_eq!(states.len(), out.len(), "one key per state");
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2 (checked just above), the only requirement.
        unsafe { avx2::keys_of(states, out) };
        return;
    }
    for (o, s) in out.iter_mut().zip(states) {
        *o = s.key();
    }
}

/// Every function here needs AVX2; only `keys_of` is called from outside, once it is detected.
/// Their bodies are `unsafe` blocks because the intrinsics are unsafe to call before Rust 1.86;
/// later compilers find some of those blocks unneeded, hence `unused_unsafe`.
#[cfg(target_arch = "x86_64")]
#[allow(unused_unsafe)]
mod avx2 {
    use super::PrefixHasher;
    use std::arch::x86_64::*;

    /// # Safety
    /// The CPU must support AVX2 (so must it for every function below).
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn rotl<const L: i32, const R: i32>(x: __m256i) -> __m256i {
        // SAFETY: AVX2 is available (the contract), all these register-only intrinsics need.
        unsafe { _mm256_or_si256(_mm256_slli_epi64::<L>(x), _mm256_srli_epi64::<R>(x)) }
    }

    /// Swaps the 32-bit halves of each lane: a rotation by 32 in one instruction.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn rotl32(x: __m256i) -> __m256i {
        // SAFETY: AVX2 is available (the contract), all this register-only intrinsic needs.
        unsafe { _mm256_shuffle_epi32::<0b10_11_00_01>(x) }
    }

    /// The scalar `round`, lane by lane.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn round(v: &mut [__m256i; 4]) {
        // SAFETY: AVX2 is available (the contract), all these register-only intrinsics and the
        // helpers above need.
        unsafe {
            v[0] = _mm256_add_epi64(v[0], v[1]);
            v[1] = _mm256_xor_si256(rotl::<13, 51>(v[1]), v[0]);
            v[0] = rotl32(v[0]);
            v[2] = _mm256_add_epi64(v[2], v[3]);
            v[3] = _mm256_xor_si256(rotl::<16, 48>(v[3]), v[2]);
            v[0] = _mm256_add_epi64(v[0], v[3]);
            v[3] = _mm256_xor_si256(rotl::<21, 43>(v[3]), v[0]);
            v[2] = _mm256_add_epi64(v[2], v[1]);
            v[1] = _mm256_xor_si256(rotl::<17, 47>(v[1]), v[2]);
            v[2] = rotl32(v[2]);
        }
    }

    /// # Safety
    /// The CPU must support AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn keys_of(states: &[PrefixHasher], out: &mut [u128]) {
        let mut chunks = states.chunks_exact(4);
        let mut outs = out.chunks_exact_mut(4);
        // SAFETY: AVX2 is available (the contract). Every load and store moves 32 bytes to or
        // from a live `[u64; 4]` (a state's words, `words`, `lo`, `hi`), and the unaligned forms
        // accept any alignment.
        unsafe {
            for (s, o) in (&mut chunks).zip(&mut outs) {
                // Rows are the states; transpose so that vector i holds v[i] of all four.
                // `[u64; 4]` is 32 bytes and `loadu` takes any alignment.
                let r0 = _mm256_loadu_si256(s[0].v.as_ptr().cast());
                let r1 = _mm256_loadu_si256(s[1].v.as_ptr().cast());
                let r2 = _mm256_loadu_si256(s[2].v.as_ptr().cast());
                let r3 = _mm256_loadu_si256(s[3].v.as_ptr().cast());
                let t0 = _mm256_unpacklo_epi64(r0, r1);
                let t1 = _mm256_unpackhi_epi64(r0, r1);
                let t2 = _mm256_unpacklo_epi64(r2, r3);
                let t3 = _mm256_unpackhi_epi64(r2, r3);
                let mut v = [
                    _mm256_permute2x128_si256::<0x20>(t0, t2),
                    _mm256_permute2x128_si256::<0x20>(t1, t3),
                    _mm256_permute2x128_si256::<0x31>(t0, t2),
                    _mm256_permute2x128_si256::<0x31>(t1, t3),
                ];
                let last = s.iter().map(PrefixHasher::last_word);
                let mut words = [0u64; 4];
                for (w, l) in words.iter_mut().zip(last) {
                    *w = l;
                }
                let b = _mm256_loadu_si256(words.as_ptr().cast());
                v[3] = _mm256_xor_si256(v[3], b);
                round(&mut v);
                v[0] = _mm256_xor_si256(v[0], b);
                v[2] = _mm256_xor_si256(v[2], _mm256_set1_epi64x(0xee));
                round(&mut v);
                round(&mut v);
                round(&mut v);
                let h1 = _mm256_xor_si256(_mm256_xor_si256(v[0], v[1]), _mm256_xor_si256(v[2], v[3]));
                v[1] = _mm256_xor_si256(v[1], _mm256_set1_epi64x(0xdd));
                round(&mut v);
                round(&mut v);
                round(&mut v);
                let h2 = _mm256_xor_si256(_mm256_xor_si256(v[0], v[1]), _mm256_xor_si256(v[2], v[3]));
                let (mut lo, mut hi) = ([0u64; 4], [0u64; 4]);
                _mm256_storeu_si256(lo.as_mut_ptr().cast(), h1);
                _mm256_storeu_si256(hi.as_mut_ptr().cast(), h2);
                for ((k, l), h) in o.iter_mut().zip(lo).zip(hi) {
                    *k = l as u128 | (h as u128) << 64;
                }
            }
        }
        for (o, s) in outs.into_remainder().iter_mut().zip(chunks.remainder()) {
            *o = s.key();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use siphasher::sip128::{Hasher128, SipHasher13};
    use std::hash::Hasher;

    fn reference(key: (u64, u64), root: u128, tokens: &[u32]) -> u128 {
        let mut h = SipHasher13::new_with_keys(key.0, key.1);
        h.write(&root.to_le_bytes());
        let bytes: Vec<u8> = tokens.iter().flat_map(|t| t.to_le_bytes()).collect();
        h.write(&bytes);
        h.finish128().as_u128()
    }

    #[test]
    fn equals_the_streaming_hasher_for_any_split() {
        let mut x = 0x1234_5678_9abc_def0u64;
        for len in 0..70usize {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let tokens: Vec<u32> = (0..len as u64).map(|i| (x >> 16).wrapping_mul(i + 1) as u32).collect();
            let key = (x, x.rotate_left(17));
            let root = (x as u128) << 64 | x.rotate_left(5) as u128;
            let want = reference(key, root, &tokens);
            // Whole, and in pieces of every size: the key depends only on the token sequence.
            let mut whole = PrefixHasher::new(key, root);
            whole.extend(&tokens);
            assert_eq!(whole.key(), want, "len {len}");
            for piece in 1..=5 {
                let mut h = PrefixHasher::new(key, root);
                for c in tokens.chunks(piece) {
                    h.extend(c);
                    let upto =
                        tokens.len().min((c.as_ptr() as usize - tokens.as_ptr() as usize) / 4 + c.len());
                    assert_eq!(h.key(), reference(key, root, &tokens[..upto]), "len {len} piece {piece}");
                }
            }
        }
    }

    #[test]
    fn keys_of_equals_key() {
        let mut x = 0x0dd_ba11u64;
        for n in 0..=11usize {
            let mut h = PrefixHasher::new((n as u64, 7), n as u128 * 0x1234_5678_9abc_def1);
            let states: Vec<PrefixHasher> = (0..n)
                .map(|i| {
                    x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    // Odd lengths leave a token pending.
                    let tokens: Vec<u32> = (0..(x >> 60) as u32 + i as u32).map(|t| t ^ (x as u32)).collect();
                    h.extend(&tokens);
                    h
                })
                .collect();
            let want: Vec<u128> = states.iter().map(PrefixHasher::key).collect();
            let mut got = vec![0u128; n];
            keys_of(&states, &mut got);
            assert_eq!(got, want, "{n} states");
        }
    }
}

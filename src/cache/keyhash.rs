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

    /// The key of the prefix absorbed so far (the state itself is unchanged).
    #[inline]
    pub fn key(&self) -> u128 {
        let mut v = self.v;
        let tail = self.pending.map_or(0, |t| t as u64);
        absorb(&mut v, tail | (self.len & 0xff) << 56);
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
}

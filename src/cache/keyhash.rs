//! SipHash-1-3 with 128-bit output, specialised for the prefix chain: a 16-byte parent key
//! followed by u32 tokens, fed as whole 64-bit words. The streaming hasher of the `siphasher`
//! crate computes the same function (a test checks it byte for byte) but spends most of a
//! match buffering bytes; this version is the hot path of every lookup.

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

/// SipHash-1-3-128 of `parent.to_le_bytes() ++ tokens as little-endian u32s` under `key`.
pub fn chain_hash(key: (u64, u64), parent: u128, tokens: &[u32]) -> u128 {
    let (k0, k1) = key;
    let mut v = [
        k0 ^ 0x736f6d6570736575,
        k1 ^ 0x646f72616e646f6d ^ 0xee,
        k0 ^ 0x6c7967656e657261,
        k1 ^ 0x7465646279746573,
    ];
    absorb(&mut v, parent as u64);
    absorb(&mut v, (parent >> 64) as u64);
    let mut pairs = tokens.chunks_exact(2);
    for p in &mut pairs {
        absorb(&mut v, p[0] as u64 | (p[1] as u64) << 32);
    }
    let total_len = 16 + 4 * tokens.len() as u64;
    let tail = pairs.remainder().first().map_or(0, |&t| t as u64);
    absorb(&mut v, tail | (total_len & 0xff) << 56);
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

#[cfg(test)]
mod tests {
    use super::*;
    use siphasher::sip128::{Hasher128, SipHasher13};
    use std::hash::Hasher;

    fn reference(key: (u64, u64), parent: u128, tokens: &[u32]) -> u128 {
        let mut h = SipHasher13::new_with_keys(key.0, key.1);
        h.write(&parent.to_le_bytes());
        let bytes: Vec<u8> = tokens.iter().flat_map(|t| t.to_le_bytes()).collect();
        h.write(&bytes);
        h.finish128().as_u128()
    }

    #[test]
    fn equals_the_streaming_hasher() {
        let mut x = 0x1234_5678_9abc_def0u64;
        for len in 0..80 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let tokens: Vec<u32> = (0..len as u64).map(|i| (x >> 16).wrapping_mul(i + 1) as u32).collect();
            let key = (x, x.rotate_left(17));
            let parent = (x as u128) << 64 | x.rotate_left(5) as u128;
            assert_eq!(chain_hash(key, parent, &tokens), reference(key, parent, &tokens), "len {len}");
        }
    }
}

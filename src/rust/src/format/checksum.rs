//! 64-bit FNV-1a: the checksum of the header, the slots, the catalog blob and
//! the meta blobs. It detects torn writes and bit flips; it is not a defence
//! against a deliberate forger (nothing read from the file is trusted anyway).

const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
const PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a 64 of `bytes`.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h = OFFSET_BASIS;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(PRIME);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::fnv1a64;

    #[test]
    fn known_vectors() {
        // Reference values of the FNV-1a 64 specification.
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn single_bit_flips_change_the_sum() {
        let data: Vec<u8> = (0..200u32).map(|i| (i * 7) as u8).collect();
        let base = fnv1a64(&data);
        for i in 0..data.len() {
            for bit in 0..8 {
                let mut d = data.clone();
                d[i] ^= 1 << bit;
                assert_ne!(fnv1a64(&d), base);
            }
        }
    }
}

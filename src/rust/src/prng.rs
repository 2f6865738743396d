//! xorshift64*: a small deterministic PRNG that drives the property tests,
//! the randomized integration tests and `alloc_bench`. Not for anything
//! that needs real randomness; not part of the package's API.

/// xorshift64* (Vigna 2016). The state must not be zero (zero stays zero).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator starting from `state` exactly (must not be zero).
    pub fn new(state: u64) -> Rng {
        debug_assert!(state != 0, "xorshift64* state must not be zero");
        Rng(state)
    }

    /// A generator for `seed` (any value, 0 included): the seed spread over
    /// the word by the golden-ratio constant, forced odd.
    pub fn from_seed(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A value in `0..n`; 0 when `n` is 0 (drawing nothing).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }

    /// A value in `lo..=hi` (`lo <= hi`).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    /// True with probability `percent` / 100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

#[cfg(test)]
mod tests {
    use super::Rng;

    #[test]
    fn known_sequence_and_bounds() {
        // First outputs of xorshift64* from state 1.
        let mut r = Rng::new(1);
        assert_eq!(r.next_u64(), 0x47E4_CE4B_896C_DD1D);
        for n in 1..50 {
            assert!(r.below(n) < n);
            let v = r.range(10, 10 + n);
            assert!((10..=10 + n).contains(&v));
        }
        assert_eq!(r.below(0), 0);
    }
}

//! A `Mem` over a plain vector, for tests and fuzzing.

use super::Mem;

/// Memory for offsets `[0, len)` backed by a `Vec<u64>`. Accesses outside
/// it panic, which is what a test wants to see.
#[derive(Debug, Clone)]
pub struct VecMem {
    words: Vec<u64>,
}

impl VecMem {
    /// `bytes` (rounded up to 8) of zeroed memory.
    pub fn new(bytes: u64) -> Self {
        VecMem {
            words: vec![0; bytes.div_ceil(8) as usize],
        }
    }

    /// Size in bytes.
    pub fn len(&self) -> u64 {
        self.words.len() as u64 * 8
    }

    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }

    /// Whether every byte is still zero.
    pub fn is_zero(&self) -> bool {
        self.words.iter().all(|&w| w == 0)
    }
}

impl Mem for VecMem {
    #[inline]
    fn load(&self, off: u64) -> u64 {
        debug_assert!(off.is_multiple_of(8));
        self.words[(off / 8) as usize]
    }

    #[inline]
    fn store(&mut self, off: u64, val: u64) {
        debug_assert!(off.is_multiple_of(8));
        self.words[(off / 8) as usize] = val;
    }
}

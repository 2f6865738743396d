//! Size classes of the free lists.
//!
//! Sizes are counted in *units* of `ALIGN` (64) bytes. Units below
//! `SL_COUNT` have one exact class each (first level 0). Above, first level
//! `f >= 1` holds units in `[2^(f+3), 2^(f+4))`, split into `SL_COUNT`
//! equal second-level classes; so a class never spans more than 1/16 of
//! its size and the waste of a good fit is below 6.25 %.

use super::{ALIGN, MAX_OFFSET};

pub(super) const SL_LOG: u32 = 4;
pub(super) const SL_COUNT: usize = 1 << SL_LOG;
/// Enough first levels for a span of `MAX_OFFSET` bytes.
pub(super) const FL_COUNT: usize =
    (63 - (MAX_OFFSET / ALIGN).leading_zeros() - SL_LOG + 2) as usize;

/// The class holding blocks of `units` units (`units >= 1`).
#[inline]
pub(super) fn class_of(units: u64) -> (usize, usize) {
    debug_assert!(units >= 1);
    if units < SL_COUNT as u64 {
        (0, units as usize)
    } else {
        let k = 63 - units.leading_zeros();
        let f = (k - SL_LOG + 1) as usize;
        let s = ((units >> (k - SL_LOG)) as usize) - SL_COUNT;
        (f, s)
    }
}

/// The smallest class all of whose blocks have at least `units` units;
/// `None` if that is beyond the last class.
#[inline]
pub(super) fn class_at_least(units: u64) -> Option<(usize, usize)> {
    if units < SL_COUNT as u64 {
        return Some((0, units as usize));
    }
    let k = 63 - units.leading_zeros();
    let rounded = units + (1u64 << (k - SL_LOG)) - 1;
    let (f, s) = class_of(rounded);
    (f < FL_COUNT).then_some((f, s))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lower bound (in units) of class `(f, s)`.
    fn class_min(f: usize, s: usize) -> u64 {
        if f == 0 {
            s as u64
        } else {
            let k = f as u32 + SL_LOG - 1;
            (1u64 << k) + ((s as u64) << (k - SL_LOG))
        }
    }

    #[test]
    fn classes_are_monotonic_and_tight() {
        let mut last = (0, 0);
        for u in 1..5000u64 {
            let c = class_of(u);
            assert!(c >= last, "class of {u} went down");
            last = c;
            assert!(class_min(c.0, c.1) <= u);
            let up = class_at_least(u).unwrap();
            // Every block of class `up` has at least `u` units.
            assert!(class_min(up.0, up.1) >= u, "u={u} up={up:?}");
            assert!(up >= c);
            // And it is the first such class.
            if up != c {
                assert!(class_min(c.0, c.1) < u);
            }
        }
    }

    #[test]
    fn largest_span_has_a_class() {
        let max = MAX_OFFSET / ALIGN;
        let (f, s) = class_of(max);
        assert!(f < FL_COUNT && s < SL_COUNT);
        assert_eq!(class_at_least(max), Some((f, s)));
        assert_eq!(class_at_least(1 << 57), None);
        for shift in 0..56 {
            let (f, _) = class_of(1u64 << shift);
            assert!(f < FL_COUNT);
        }
    }
}

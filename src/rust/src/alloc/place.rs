//! Placement: the catalog region (see "The catalog region" in `mod.rs`).
//!
//! Why: a reader opening a heap reads the header page, then the catalog's
//! root page, then one entry's meta, then the data. Each read of a page not
//! in memory is a page fault that reads the file around it (the kernel's
//! mmap read-around, `read_ahead_kb`, 128 KiB by default, from the start of
//! the file for the header page). Catalog blocks placed after a large data
//! block, at the far end of the file, cost a second disk read; placed next
//! to the header they come with the first one.
//!
//! The rule, with `end` the region's end:
//! - `malloc_catalog` (catalog pages, metas, block lists): the first free
//!   block, in address order, whose payload is below `end` and which fits;
//!   else `malloc_dirty`.
//! - `malloc_dirty` (everything else): when the free block the free lists
//!   give starts below `end`, another one outside the region is looked for
//!   (a bounded walk of the lists that fit); one that reaches past `end` far
//!   enough is split, so that the new block begins at `end` (or just after,
//!   to leave a whole free block before it). Only when no such block is
//!   found is the region used: the file does not grow to keep it.
//! - `free` of a block in the region merges it at once (never the cache).
//!
//! Nothing of this is stored in the file and a rebuild does not need it:
//! any tiling of blocks is valid, and the region is just where the next
//! catalog block is looked for first.

use super::class::class_at_least;
use super::{next_at, span_at, span_for};
use super::{Allocator, Mem, ALIGN, FREE, MIN_SPAN, SPAN_MASK};

/// Free-list blocks `fit_outside_low` looks at before giving up.
const OUTSIDE_STEPS: usize = 64;

impl Allocator {
    /// Keeps payload offsets below `end` (rounded down to `ALIGN`) for
    /// `malloc_catalog`; 0 turns the region off. Only a preference: it can
    /// be set or changed at any time and nothing else depends on it.
    pub fn set_catalog_region(&mut self, end: u64) {
        self.low_end = end & !(ALIGN - 1);
    }

    /// The end of the catalog region (0: none).
    pub fn catalog_region(&self) -> u64 {
        self.low_end
    }

    /// `malloc_dirty` for a catalog block: the lowest-addressed free block
    /// of the catalog region that fits, else anywhere (`malloc_dirty`).
    pub fn malloc_catalog<M: Mem>(&mut self, mem: &mut M, size: u64) -> Option<(u64, u64)> {
        self.changed = true;
        if self.poisoned.is_some() {
            return None;
        }
        let span = span_for(size)?;
        if let Some((p, bspan)) = self.low_fit(mem, span) {
            if self.take_free(mem, p, bspan).is_err() {
                return None;
            }
            let p = self.carve(mem, p, bspan, span, 0);
            let dirty = self.hand_out(mem, p, span, bspan == span);
            self.after_op(mem);
            return Some((p, dirty));
        }
        if self.poisoned.is_some() {
            return None;
        }
        self.malloc_any(mem, size, false)
    }

    /// The first free block (payload, span) of span `>= span` whose payload
    /// lies in the catalog region: a walk over the block headers of the
    /// arena holding the region, from its first block (at most one step per
    /// `ALIGN` bytes of the region). `None` also when a header is corrupt
    /// (then the allocator is poisoned).
    fn low_fit<M: Mem>(&mut self, mem: &M, span: u64) -> Option<(u64, u64)> {
        let a = *self.arenas.first()?;
        let mut p = a.first();
        while p < self.low_end && p < a.end {
            let word = mem.load(span_at(p));
            let bs = word & SPAN_MASK;
            if bs < MIN_SPAN || bs > a.end - p {
                self.poison(format!("corrupt block header at {p}"));
                return None;
            }
            if word & FREE != 0 {
                // Checked as a free block (flags) before it is taken.
                let Some(bs) = self.free_block_span(mem, p) else {
                    self.poison(format!("corrupt free block header at {p}"));
                    return None;
                };
                if bs >= span {
                    return Some((p, bs));
                }
            }
            p += bs;
        }
        None
    }

    /// Where a block of span `span` begins in the free block `(p, bspan)`
    /// that starts in the catalog region, relative to `p`: past the region
    /// (the part before stays a free block of at least `MIN_SPAN`), or 0
    /// when the block does not reach that far.
    pub(super) fn low_front(&self, p: u64, bspan: u64, span: u64) -> u64 {
        let front = (self.low_end.max(p + MIN_SPAN)) - p;
        if front + span <= bspan {
            front
        } else {
            0
        }
    }

    /// `malloc_dirty`'s fit `first` lies in the catalog region: another
    /// free block of a list that fits, outside the region or reaching past
    /// it far enough (`low_front`), if one is found within
    /// `OUTSIDE_STEPS` blocks; else `first`.
    pub(super) fn fit_outside_low<M: Mem>(
        &mut self,
        mem: &M,
        span: u64,
        first: (usize, usize, u64),
    ) -> (usize, usize, u64) {
        let Some((f0, s0)) = class_at_least(span / ALIGN) else {
            return first;
        };
        let mut steps = 0;
        let mut f = f0;
        let mut sl_mask = u32::MAX << s0;
        loop {
            let mut map = self.sl_bitmap[f] as u32 & sl_mask;
            while map != 0 {
                let s = map.trailing_zeros() as usize;
                map &= map - 1;
                let mut p = self.heads[f][s];
                while p != 0 {
                    let Some(bs) = self.free_block_span(mem, p) else {
                        return first;
                    };
                    if bs >= span && (p >= self.low_end || self.low_front(p, bs, span) > 0) {
                        return (f, s, p);
                    }
                    steps += 1;
                    if steps >= OUTSIDE_STEPS {
                        return first;
                    }
                    p = mem.load(next_at(p));
                    if !self.link_ok(p) {
                        return first;
                    }
                }
            }
            let above = self.fl_bitmap & u64::MAX.checked_shl(f as u32 + 1).unwrap_or(0);
            if above == 0 {
                return first;
            }
            f = above.trailing_zeros() as usize;
            sl_mask = u32::MAX;
        }
    }
}

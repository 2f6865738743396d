//! Placement: the catalog region (see "The catalog region" in `mod.rs`).
//!
//! Why: a reader opening a heap reads the header page, then the catalog's
//! root page, then one entry's meta, then the data. Each read of a page not
//! in memory is a page fault that reads the file around it (the kernel's
//! mmap read-around, `read_ahead_kb`, 128 KiB by default, from the start of
//! the file for the header page). Catalog blocks placed after a large data
//! block, at the far end of the file, cost a second disk read; placed next
//! to the header they come with the first one (and a read-only open asks
//! for the first 128 KiB at once: `WILLNEED_BYTES` in `heap.rs`).
//!
//! The rule, with `end` the region's end:
//! - `malloc_catalog` (catalog pages, metas, block lists): a block of its
//!   span cached in the region, else the first free block, in address
//!   order, whose payload is below `end` and which fits; else
//!   `malloc_dirty`.
//! - `malloc_dirty` (everything else) of a block of at least `AVOID_MIN`
//!   bytes (a vector of 8192 doubles): when the free block the free lists
//!   give starts below `end`, another one outside the region is looked for
//!   (a bounded walk of the lists that fit); one that reaches past `end` far
//!   enough is split, so that the new block begins at `end` (or just after,
//!   to leave a whole free block before it). Only when no such block is
//!   found is the region used: the file does not grow to keep it. Smaller
//!   blocks go where the free lists say, as without a region (keeping them
//!   out too made durable commits of a heap of 100 000 small objects about
//!   three times slower, in `fsync`, for a reason not found; a large block
//!   is what pushes the catalog far from the header).
//! - `free` of a small block in the region caches it apart (`low_cache`),
//!   for `malloc_catalog` alone: a commit that frees the pages it
//!   superseded and writes new ones reuses the same blocks touching only
//!   their own headers, as outside the region (merging them would also
//!   write the list neighbours' headers, pages anywhere in the file that
//!   the next durable commit then has to flush).
//!
//! Nothing of this is stored in the file and a rebuild does not need it:
//! any tiling of blocks is valid, and the region is just where the next
//! catalog block is looked for first.

use super::class::class_at_least;
use super::{next_at, span_at, span_for};
use super::{Allocator, Mem, ALIGN, CACHED, FREE, HEADER, MIN_SPAN, SPAN_MASK};

/// Spans from which `malloc_dirty` keeps out of the catalog region.
pub(super) const AVOID_MIN: u64 = 64 * 1024;

/// Free-list blocks `fit_outside_low` looks at before giving up.
const OUTSIDE_STEPS: usize = 64;

impl Allocator {
    /// Keeps payload offsets below `end` (rounded down to `ALIGN`) for
    /// `malloc_catalog`; 0 turns the region off. Only a preference: it can
    /// be set or changed at any time (the region's free and cached blocks
    /// are then found by a walk over its headers) and nothing else depends
    /// on it.
    pub fn set_catalog_region<M: Mem>(&mut self, mem: &M, end: u64) {
        self.flush_region_cache(mem);
        self.low_end = end & !(ALIGN - 1);
        self.low_free.clear();
        let arenas = self.arenas.clone();
        for a in arenas.iter().take_while(|a| a.first() < self.low_end) {
            let mut p = a.first();
            while p < self.low_end && p < a.end {
                let word = mem.load(span_at(p));
                let bs = word & SPAN_MASK;
                if bs < MIN_SPAN || bs > a.end - p {
                    self.poison(format!("corrupt block header at {p}"));
                    return;
                }
                if word & FREE != 0 {
                    self.low_free.insert(p);
                }
                p += bs;
            }
        }
        // Cached blocks of the new region move to its own cache.
        let low_end = self.low_end;
        for bin in self.cache.iter_mut() {
            bin.retain(|&c| {
                if c < low_end {
                    let span = mem.load(span_at(c)) & SPAN_MASK;
                    self.low_cache.push((c, span));
                    false
                } else {
                    true
                }
            });
        }
    }

    /// Moves the region's cached blocks back to the ordinary cache (before
    /// the region changes).
    fn flush_region_cache<M: Mem>(&mut self, mem: &M) {
        for (p, span) in std::mem::take(&mut self.low_cache) {
            let units = (span / ALIGN) as usize;
            match self.cache.get_mut(units) {
                Some(bin) if mem.load(span_at(p)) & (SPAN_MASK | CACHED) == span | CACHED => {
                    bin.push(p)
                }
                _ => self.poison(format!("cached block {p} has a bad header")),
            }
        }
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
        if let Some(i) = self.low_cache.iter().position(|&(_, s)| s == span) {
            // A cached block was handed out before: below `fresh`.
            let (p, _) = self.low_cache.swap_remove(i);
            return self.malloc_cached(mem, p, span).map(|p| (p, span - HEADER));
        }
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
    /// lies in the catalog region (`low_free`, in address order). `None`
    /// also when one of them is corrupt (then the allocator is poisoned).
    fn low_fit<M: Mem>(&mut self, mem: &M, span: u64) -> Option<(u64, u64)> {
        let mut bad = None;
        let mut fit = None;
        for &p in &self.low_free {
            // Checked as a free block (flags, span) before it is taken.
            match self.free_block_span(mem, p) {
                Some(bs) if bs >= span => {
                    fit = Some((p, bs));
                    break;
                }
                Some(_) => {}
                None => {
                    bad = Some(p);
                    break;
                }
            }
        }
        if let Some(p) = bad {
            self.poison(format!("corrupt free block header at {p}"));
            return None;
        }
        fit
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

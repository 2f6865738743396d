//! The file allocator: malloc / free / resize over *offsets* in the heap file.
//!
//! CONTRACT (owned by the allocator helper; the facade in `heap.rs` relies on it):
//! - Payload offsets are 64-byte aligned (`ALIGN`). Block metadata is in-band
//!   (a small header just before each payload, written through `Mem`), the
//!   free-list heads and bitmaps live in RAM in `Allocator` (rebuilt at every
//!   writable open from the catalog's live blocks; nothing of the allocator's
//!   RAM state is persisted).
//! - An *arena* is a contiguous, mapped offset range. Blocks never cross arena
//!   boundaries (the heap grows by adding arenas, each a separate mapping).
//! - Nothing here panics on bad input: `free`/`usable_size`/`resize_in_place`
//!   validate the offset (inside an arena, aligned, a header that is live and
//!   sane) and return `Err` otherwise.
//!
//! # Algorithm
//!
//! A TLSF-style segregated fit (Masmano et al., "TLSF: a new dynamic memory
//! allocator for real-time systems"): free blocks sit in one of
//! `FL_COUNT x SL_COUNT` doubly linked lists chosen by size class; a
//! first-level bitmap and one second-level bitmap per first level find the
//! smallest non-empty class that fits in O(1) with `trailing_zeros`. Freed
//! blocks merge with free neighbours in O(1) through boundary tags.
//!
//! # Layout of an arena `[start, end)` (all offsets absolute, in bytes)
//!
//! | range                      | content                                             |
//! |----------------------------|-----------------------------------------------------|
//! | `start .. start+32`        | unused (so that the first payload is 64-aligned)    |
//! | `start+32 .. end-32`       | blocks, tiled exactly; each span a multiple of 64   |
//! | `end-32 .. end`            | sentinel header: span 0, "used"                     |
//!
//! A block with payload offset `p` (64-aligned) and span `s` covers
//! `[p-32, p-32+s)`; the next block's payload is at `p+s` (the sentinel's
//! "payload" is `end`). Its capacity is `s-32`.
//!
//! | word      | used block                         | free block                         |
//! |-----------|------------------------------------|------------------------------------|
//! | `p-32`    | `s \| PREV_FREE?`                  | `s \| FREE \| PREV_FREE?`         |
//! | `p-24`    | check tag `tag(p, s)`              | 0                                  |
//! | `p-16`    | unused                             | next free block in list (0: none)  |
//! | `p-8`     | unused                             | previous free block (0: none)      |
//! | `p ..`    | user data                          | unused                             |
//! | `p+s-40`  | user data                          | footer: `s` (boundary tag)         |
//!
//! The whole header, list links included, sits in the cache line just
//! before the payload, and a block's footer in the line of the next block's
//! header: freeing or splitting touches one line per block involved.
//! `PREV_FREE` says the block before is free, so its footer (the word just
//! before our header) gives its span. The check tag is a keyed hash of
//! `(p, s)`: a freed block or user data that happens to look like a header
//! does not pass for a live block. The key is drawn at random for each
//! `Allocator` made by `new`; a heap's allocator uses a key fixed for that
//! heap file (`with_key`), so that the headers of blocks that stay live
//! from one session to the next are already right when a writable open
//! rebuilds the allocator, which then leaves them (and their pages) as
//! they are. Every word the allocator reads after a rebuild was written
//! (or found equal) by that rebuild or later, so a stale header left in a
//! free gap by an earlier session is never taken for a block. Two free
//! blocks are never adjacent.
//!
//! # The cache
//!
//! `free` of a small block (span up to `CACHE_UNITS` units) does not merge
//! it: it sets `CACHED` in its header (so that it is no longer a live block
//! for `free`/`usable_size`, and a used one for its neighbours, which do not
//! merge with it) and pushes it on `cache[units]`; a `malloc` of exactly
//! that span pops it first. Such a `free` touches only the block's own
//! header line. At most `CACHE_MAX` blocks are cached: a `free` that finds
//! the cache full, a `malloc` that finds no fit, and `resize_in_place`
//! growing into a cached block free all cached blocks into the lists, in
//! address order. For `stats()` and `check_invariants` cached blocks are
//! free blocks (`blocks()` reports them free).
//!
//! # The pending block
//!
//! The free block made by the last `free` (after merging) is not put in a
//! list but kept in `Allocator::pending`, and put in its list only when the
//! next `free` makes another one or at the next `malloc`. A `free` whose
//! block merges with the pending block then costs no list operation (the
//! lists' heads are blocks freed long ago, whose cache lines are cold):
//! freeing neighbours in a row touches only their own headers. The pending
//! block is an ordinary free block otherwise (header, footer, `PREV_FREE`
//! of its successor), so neighbours merge with it as with any other.
//!
//! # Fresh space
//!
//! For each arena the allocator keeps `fresh[i]`: from that offset on, the
//! arena has held nothing but the allocator's own words since it was
//! added (never a block handed out), so it reads as zeros except for them.
//! An arena added empty (`try_add_arena`: new file space, a hole or an
//! extension of the file, which reads as zeros) is fresh from its first
//! payload; one rebuilt around live blocks (`add_arena_with_live`, at open)
//! is not fresh at all until the caller vouches for a tail of it
//! (`mark_fresh`: e.g. a hole at the end of the file). Handing out a block
//! moves `fresh` past the block *and* the header of the block after it
//! (a later merge leaves that header behind as stale words). So in fresh
//! space the only non-zero words are the headers (`p-32 .. p`, never
//! inside a payload) and the footer of the one free block that reaches
//! from below `fresh` to the sentinel. `malloc_dirty` reports how many
//! leading payload bytes may be non-zero (the part below `fresh`) and
//! clears that footer when the block it hands out ends at the sentinel: a
//! caller that needs zeros (a new vector) writes only the dirty prefix, so
//! a block carved from fresh space costs no page touch, and a recycled
//! block (below `fresh`) is zeroed on reuse.
//!
//! # The catalog region
//!
//! `set_catalog_region(end)` keeps the payload offsets below `end` (the
//! first bytes of the heap, next to the file header) for the catalog's
//! blocks: `malloc_catalog` takes a cached block of the region of its span,
//! else the lowest-addressed free block there that fits (`low_free`: the
//! region's free blocks by address), and falls back to `malloc_dirty` when
//! none does; `malloc_dirty` of a large block (64 KiB or more) leaves the
//! region alone as long as a free block outside it fits (a free block that
//! reaches past `end` is split there), and small blocks freed in the
//! region go to a cache of their own (`low_cache`) that only
//! `malloc_catalog` takes from. So a reader that faults in the header page
//! finds the catalog in the same read-around (see `place.rs`). It is a placement preference only: nothing of it is
//! stored, every block may lie anywhere, and a heap whose region is already
//! taken works as before.
//!
//! Everything read from memory is untrusted: spans are checked against the
//! arena before they are followed, list links must be block positions inside
//! an arena, and a block taken from a list must be a free block of that
//! list's class. An inconsistency found on a hot path *poisons* the
//! allocator (`corruption()`): every later call fails instead of writing
//! through a bad offset. `check_invariants()` walks everything; the cargo
//! feature `check-invariants` runs it after every operation.

mod check;
mod class;
mod place;
mod rebuild;
mod vec_mem;

#[cfg(test)]
mod tests;

pub use rebuild::Layout;

use std::collections::BTreeSet;
pub use vec_mem::VecMem;

use class::{class_at_least, class_of, FL_COUNT, SL_COUNT};

/// Alignment of every payload offset, in bytes.
pub const ALIGN: u64 = 64;

/// Bytes of in-band header before every payload.
pub const HEADER: u64 = 32;

/// Smallest block span (header + capacity), in bytes.
pub const MIN_SPAN: u64 = 64;

/// Smallest arena: prologue, one minimal block, sentinel.
pub const MIN_ARENA: u64 = 128;

/// Largest offset any arena may reach (keeps every sum below `u64::MAX`).
pub const MAX_OFFSET: u64 = 1 << 62;

/// Memory the allocator writes its in-band headers to. Offsets are absolute
/// file offsets, 8-byte aligned, and always inside an arena that was added.
pub trait Mem {
    fn load(&self, off: u64) -> u64;
    fn store(&mut self, off: u64, val: u64);
    /// `store`, skipped when the word already holds `val`: a writable open
    /// rebuilds every header this way, so the pages of headers that are
    /// already right are read, never dirtied (see `add_arena_with_live`).
    /// Implementations where a load may fault where a store would not (a
    /// hole of a file) override it. Returns whether it stored.
    #[inline]
    fn store_changed(&mut self, off: u64, val: u64) -> bool {
        let changed = self.load(off) != val;
        if changed {
            self.store(off, val);
        }
        changed
    }
}

/// Totals over all arenas. `used_bytes` and `free_bytes` count block spans
/// (headers included); `arena_bytes - used_bytes - free_bytes` is the fixed
/// 64 bytes of prologue and sentinel per arena.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub arena_bytes: u64,
    pub used_bytes: u64,
    pub free_bytes: u64,
    pub used_blocks: u64,
    pub free_blocks: u64,
}

/// Header flag: this block is free.
const FREE: u64 = 1;
/// Header flag: the block before this one is free.
const PREV_FREE: u64 = 2;
/// Header flag: this block is in the cache of freed small blocks (free for
/// the heap, not merged, not in a list; see "The cache" above).
const CACHED: u64 = 4;
/// Blocks of at most this many units (`ALIGN` bytes) go to the cache.
const CACHE_UNITS: usize = 66;
/// Most blocks in the cache; a `free` that finds it full flushes it.
const CACHE_MAX: usize = 512;
/// The span bits of a header word.
const SPAN_MASK: u64 = !(ALIGN - 1);

// Where the words of the block with payload offset `p` live (layout table).

/// Span and flags.
#[inline(always)]
const fn span_at(p: u64) -> u64 {
    p - HEADER
}

/// Check tag (used) or 0 (free).
#[inline(always)]
const fn tag_at(p: u64) -> u64 {
    p - HEADER + 8
}

/// Next block of the free list.
#[inline(always)]
const fn next_at(p: u64) -> u64 {
    p - 16
}

/// Previous block of the free list.
#[inline(always)]
const fn prev_at(p: u64) -> u64 {
    p - 8
}

/// Footer (last word) of a free block of span `span`.
#[inline(always)]
const fn footer_at(p: u64, span: u64) -> u64 {
    p + span - HEADER - 8
}

/// Writes the header, empty tag and footer of a free block of span `span`
/// at payload offset `p` (it is not put in a list here).
#[inline(always)]
fn write_free<M: Mem>(mem: &mut M, p: u64, span: u64) {
    mem.store(span_at(p), span | FREE);
    mem.store(tag_at(p), 0);
    mem.store(footer_at(p, span), span);
}

/// Footer of the block before the block at `p`.
#[inline(always)]
const fn footer_before(p: u64) -> u64 {
    p - HEADER - 8
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Arena {
    start: u64,
    end: u64,
}

impl Arena {
    /// Payload offset of the first block.
    fn first(&self) -> u64 {
        self.start + ALIGN
    }
}

pub struct Allocator {
    /// Sorted by `start`, pairwise disjoint.
    arenas: Vec<Arena>,
    /// `fresh[i]`: where the fresh space of `arenas[i]` begins (its `end`:
    /// none); see "Fresh space".
    fresh: Vec<u64>,
    /// Bit `f` set iff some list of first level `f` is non-empty.
    fl_bitmap: u64,
    /// Bit `s` of `sl_bitmap[f]` set iff `heads[f][s] != 0`.
    sl_bitmap: [u16; FL_COUNT],
    /// Payload offset of the first block of each free list (0: empty).
    heads: [[u64; SL_COUNT]; FL_COUNT],
    /// The free block made by the last `free`, kept out of the lists (0:
    /// none): see "The pending block" above.
    pending: u64,
    /// `cache[u]`: payload offsets of the cached blocks of `u` units.
    cache: Vec<Vec<u64>>,
    /// Number of cached blocks.
    cached: usize,
    /// The free block (payload offset, capacity) the last `free` merged its
    /// block into; `None` after a `free` into the cache.
    last_merged: Option<(u64, u64)>,
    stats: Stats,
    /// Key of the check tags of used headers.
    key: u64,
    /// Set when an inconsistency was found; every later call fails.
    poisoned: Option<String>,
    /// Whether an operation ran since `clear_changed` (it may have written
    /// headers a rebuild would write otherwise: see `changed`).
    changed: bool,
    /// Payload offsets below this are the catalog region (0: none); see
    /// "The catalog region".
    low_end: u64,
    /// The free blocks (listed or pending) whose payload lies in the
    /// catalog region, by address.
    low_free: BTreeSet<u64>,
    /// Cached blocks (payload offset, span) in the catalog region: kept
    /// apart from `cache`, for `malloc_catalog` only (counted in `cached`).
    low_cache: Vec<(u64, u64)>,
}

/// Span of a block with capacity for `size` bytes, `None` if too large.
#[inline]
fn span_for(size: u64) -> Option<u64> {
    let s = size.checked_add(HEADER + ALIGN - 1)? & SPAN_MASK;
    if s > MAX_OFFSET {
        return None;
    }
    Some(s)
}

/// A fresh random key (std's per-process random SipHash keys, which also
/// differ for every `RandomState` made).
fn random_key() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0x5246_4d41_4c4c_4f43); // "RFMALLOC"
    h.finish() | 1
}

impl Allocator {
    /// An allocator with a random tag key.
    pub fn new() -> Self {
        Self::with_key(random_key())
    }

    /// An allocator whose check tags use `key` (made odd): one fixed for a
    /// heap file, so that a rebuild finds the headers of blocks that stayed
    /// live unchanged (see "check tag" above).
    pub fn with_key(key: u64) -> Self {
        Allocator {
            arenas: Vec::new(),
            fresh: Vec::new(),
            fl_bitmap: 0,
            sl_bitmap: [0; FL_COUNT],
            heads: [[0; SL_COUNT]; FL_COUNT],
            pending: 0,
            cache: vec![Vec::new(); CACHE_UNITS + 1],
            cached: 0,
            last_merged: None,
            stats: Stats::default(),
            key: key | 1,
            poisoned: None,
            changed: true,
            low_end: 0,
            low_free: BTreeSet::new(),
            low_cache: Vec::new(),
        }
    }

    /// Whether any operation (malloc, free, resize, a new arena) ran since
    /// the last `clear_changed`. The block headers in memory are then not
    /// in general what a rebuild from the same live blocks writes: a cached
    /// block is not merged with the free space around it, and free lists
    /// are linked in the order blocks were freed, where a rebuild merges
    /// every gap and links the gaps in address order. A heap closed after
    /// changes rebuilds its headers at close (`Heap` drop), so that the
    /// next writable open finds them as its rebuild would write them.
    pub fn changed(&self) -> bool {
        self.changed
    }

    /// The key of the check tags (`with_key` of it makes an allocator
    /// whose headers match this one's).
    pub fn key(&self) -> u64 {
        self.key
    }

    /// Forgets earlier operations (`changed`): called after the rebuild at
    /// open.
    pub fn clear_changed(&mut self) {
        self.changed = false;
    }

    /// Allocates at least `size` bytes (size 0 allowed); `None` when no arena
    /// has room (the caller then grows the heap by adding an arena), or when
    /// the allocator is poisoned (see `corruption()`).
    pub fn malloc<M: Mem>(&mut self, mem: &mut M, size: u64) -> Option<u64> {
        self.changed = true;
        self.malloc_dirty(mem, size).map(|(p, _)| p)
    }

    /// `malloc` that also says which bytes of the block may not be zero:
    /// returns `(p, dirty)` where the payload bytes `[p + dirty, p + cap)`
    /// read as zeros (`cap` = `usable_size`); see "Fresh space".
    pub fn malloc_dirty<M: Mem>(&mut self, mem: &mut M, size: u64) -> Option<(u64, u64)> {
        self.malloc_any(mem, size, true)
    }

    /// `malloc_dirty`; `avoid_low`: a block of at least `place::AVOID_MIN`
    /// bytes keeps out of the catalog region while a free block elsewhere
    /// fits.
    fn malloc_any<M: Mem>(
        &mut self,
        mem: &mut M,
        size: u64,
        avoid_low: bool,
    ) -> Option<(u64, u64)> {
        self.changed = true;
        if self.poisoned.is_some() {
            return None;
        }
        let span = span_for(size)?;
        let units = (span / ALIGN) as usize;
        if units <= CACHE_UNITS {
            if let Some(p) = self.cache[units].pop() {
                // A cached block was handed out before: below `fresh`.
                return self.malloc_cached(mem, p, span).map(|p| (p, span - HEADER));
            }
        }
        if self.pending != 0 {
            self.list_pending(mem)?;
        }
        let fit = match self.find_fit(mem, span) {
            None if self.cached > 0 && self.poisoned.is_none() => {
                self.flush_cache(mem).ok()?;
                if self.pending != 0 {
                    self.list_pending(mem)?;
                }
                self.find_fit(mem, span)
            }
            fit => fit,
        };
        let (mut f, mut s, mut p) = fit?;
        let avoid_low = avoid_low && span >= place::AVOID_MIN;
        if avoid_low && p < self.low_end {
            (f, s, p) = self.fit_outside_low(mem, span, (f, s, p));
        }
        let bspan = match self.free_block_span(mem, p) {
            Some(b) if b >= span && class_of(b / ALIGN) == (f, s) => b,
            _ => {
                self.poison(format!("free list {f}/{s} holds a bad block at {p}"));
                return None;
            }
        };
        if self.unlink(mem, p, f, s).is_err() {
            return None;
        }
        // A block reaching past the catalog region is split at its end:
        // the part in the region stays free.
        let front = if avoid_low && p < self.low_end {
            self.low_front(p, bspan, span)
        } else {
            0
        };
        let p = self.carve(mem, p, bspan, span, front);
        debug_assert!(p.is_multiple_of(ALIGN) && span - HEADER >= size);
        let dirty = self.hand_out(mem, p, span, bspan - front == span);
        self.after_op(mem);
        Some((p, dirty))
    }

    /// Makes a used block of span `span` out of the free block `p` of span
    /// `bspan` (already out of its list): at `p + front` (`front`: 0, or a
    /// multiple of `ALIGN` of at least `MIN_SPAN` that stays a free block);
    /// the tail after it stays free. Returns the new block's payload offset.
    /// (No `hand_out`, no `after_op`: the caller's.)
    #[inline]
    fn carve<M: Mem>(&mut self, mem: &mut M, p: u64, bspan: u64, span: u64, front: u64) -> u64 {
        debug_assert!(front == 0 || (front >= MIN_SPAN && front.is_multiple_of(ALIGN)));
        debug_assert!(front + span <= bspan);
        if front > 0 {
            write_free(mem, p, front);
            self.insert(mem, p, front);
            self.stats.free_blocks += 1;
        }
        let b = p + front;
        let rest = bspan - front - span;
        if rest > 0 {
            // Split: the tail stays free; the block after it keeps PREV_FREE.
            let r = b + span;
            write_free(mem, r, rest);
            self.insert(mem, r, rest);
            self.stats.free_bytes -= span;
        } else {
            let n = b + span;
            let w = mem.load(span_at(n));
            mem.store(span_at(n), w & !PREV_FREE);
            self.stats.free_bytes -= span;
            self.stats.free_blocks -= 1;
        }
        // The block before a free block is never free: PREV_FREE only after
        // a front part.
        let prev = if front > 0 { PREV_FREE } else { 0 };
        mem.store(span_at(b), span | prev);
        mem.store(tag_at(b), self.tag(b, span));
        self.stats.used_bytes += span;
        self.stats.used_blocks += 1;
        b
    }

    /// Moves `fresh` past the block `(p, span)` being handed out and the
    /// header after it; returns how many leading payload bytes may be
    /// non-zero. `whole`: the block is a whole free block, whose footer
    /// (its last payload word) is cleared if it lies in fresh space.
    #[inline]
    fn hand_out<M: Mem>(&mut self, mem: &mut M, p: u64, span: u64, whole: bool) -> u64 {
        let cap = span - HEADER;
        let i = self
            .arenas
            .partition_point(|a| a.start <= p)
            .wrapping_sub(1);
        let Some(fresh) = self.fresh.get_mut(i) else {
            return cap;
        };
        let was = *fresh;
        if p + span > was {
            *fresh = p + span;
            if whole && footer_at(p, span) >= was {
                // The footer of the free block that reached the sentinel.
                mem.store(footer_at(p, span), 0);
            }
        }
        was.saturating_sub(p).min(cap)
    }

    /// Vouches that `[from, end)` of the arena holding `from` reads as
    /// zeros except for the allocator's own words (e.g. a hole at the end
    /// of the file, found before the arena was rebuilt): it becomes fresh
    /// space where it lies in the arena's last free block. Never makes
    /// space fresh that a live block covers.
    pub fn mark_fresh<M: Mem>(&mut self, mem: &M, from: u64) {
        let Some(a) = self.arena_of(from) else { return };
        let i = self.arenas.partition_point(|x| x.start <= from) - 1;
        // The free block before the sentinel, if any.
        if mem.load(span_at(a.end)) & PREV_FREE == 0 {
            return;
        }
        let Ok(tail) = self.free_neighbour_before(mem, a, a.end) else {
            return;
        };
        let t = a.end - tail;
        let from = from.div_ceil(ALIGN) * ALIGN;
        self.fresh[i] = self.fresh[i].min(from.max(t));
    }

    /// Where the fresh space of the arena holding `off` begins (tests).
    #[doc(hidden)]
    pub fn fresh_from(&self, off: u64) -> Option<u64> {
        let i = self
            .arenas
            .partition_point(|a| a.start <= off)
            .checked_sub(1)?;
        self.fresh.get(i).copied()
    }

    /// Frees the block at payload offset `off`; coalesces with free neighbours.
    pub fn free<M: Mem>(&mut self, mem: &mut M, off: u64) -> Result<(), String> {
        self.changed = true;
        let (arena, word) = self.live_block(mem, off)?;
        let span = word & SPAN_MASK;
        let units = (span / ALIGN) as usize;
        if units <= CACHE_UNITS {
            let mut word = word;
            if self.cached >= CACHE_MAX {
                self.flush_cache(mem)?;
                // The flush may have freed the block before: PREV_FREE.
                word = mem.load(span_at(off));
            }
            mem.store(span_at(off), word | CACHED);
            if off < self.low_end {
                // Only a catalog block takes it again.
                self.low_cache.push((off, span));
            } else {
                self.cache[units].push(off);
            }
            self.cached += 1;
            self.last_merged = None;
            self.stats.used_bytes -= span;
            self.stats.used_blocks -= 1;
            self.stats.free_bytes += span;
            self.stats.free_blocks += 1;
            self.after_op(mem);
            return Ok(());
        }
        self.free_block(mem, arena, off, word)?;
        self.after_op(mem);
        Ok(())
    }

    /// `free` of the live block at `off` (header `word`) into the free
    /// lists: merges it with free neighbours. (No `after_op`: the caller's.)
    fn free_block<M: Mem>(
        &mut self,
        mem: &mut M,
        arena: Arena,
        off: u64,
        word: u64,
    ) -> Result<(), String> {
        let span = word & SPAN_MASK;
        let mut b = off;
        let mut bspan = span;
        // Validate both neighbours before changing anything.
        let next = off + span;
        let next_free = self.free_neighbour_after(mem, arena, next)?;
        let prev_free = if word & PREV_FREE != 0 {
            Some(self.free_neighbour_before(mem, arena, off)?)
        } else {
            None
        };
        if let Some(ns) = next_free {
            self.take_free(mem, next, ns)?;
            bspan += ns;
            self.stats.free_blocks -= 1;
        }
        // A free predecessor that is the pending block stays pending; one
        // whose class does not change stays where it is in its list.
        // Otherwise the merged block becomes the pending block.
        let mut listed = false;
        if let Some(ps) = prev_free {
            b = off - ps;
            let (f, s) = class_of(ps / ALIGN);
            if b == self.pending || class_of((ps + bspan) / ALIGN) == (f, s) {
                listed = true;
            } else {
                self.unlink(mem, b, f, s)?;
            }
            bspan += ps;
            self.stats.free_blocks -= 1;
        }
        // Clear the tag so that a stale header merged into `b` never passes
        // for a live block again (a free `b` before `off` has a clear tag).
        mem.store(tag_at(off), 0);
        mem.store(span_at(b), bspan | FREE);
        mem.store(footer_at(b, bspan), bspan);
        self.last_merged = Some((b, bspan - HEADER));
        debug_assert!(b >= arena.first() && b + bspan <= arena.end);
        debug_assert!(bspan.is_multiple_of(ALIGN) && mem.load(tag_at(b)) == 0);
        if next_free.is_none() {
            // `next` (used, or the sentinel) now follows a free block; a
            // free `next` merged above already had PREV_FREE after it.
            let w = mem.load(span_at(next));
            mem.store(span_at(next), w | PREV_FREE);
        }
        if !listed {
            if self.pending != 0 {
                self.list_pending(mem).ok_or("corrupt pending free block")?;
            }
            self.pending = b;
            if b < self.low_end {
                self.low_free.insert(b);
            }
        }
        self.stats.used_bytes -= span;
        self.stats.used_blocks -= 1;
        self.stats.free_bytes += span;
        self.stats.free_blocks += 1;
        Ok(())
    }

    /// The free block (payload offset, capacity) that the last [`free`]
    /// merged the freed block into (with its free neighbours); `None` when
    /// that block went to the cache. Its bytes from the payload offset to
    /// the footer (the last 8 bytes) hold nothing the allocator reads.
    ///
    /// [`free`]: Allocator::free
    pub fn last_merged(&self) -> Option<(u64, u64)> {
        self.last_merged
    }

    /// Grows or shrinks the block in place if possible (`Ok(true)`);
    /// `Ok(false)` means the caller must allocate, copy and free.
    /// Growing takes space from a free block right after this one; shrinking
    /// gives the tail back as a free block (merged with a free successor).
    pub fn resize_in_place<M: Mem>(
        &mut self,
        mem: &mut M,
        off: u64,
        new_size: u64,
    ) -> Result<bool, String> {
        self.changed = true;
        let (mut arena, mut word) = self.live_block(mem, off)?;
        let span = word & SPAN_MASK;
        let Some(need) = span_for(new_size) else {
            return Ok(false);
        };
        if need == span {
            return Ok(true);
        }
        let next = off + span;
        if need > span && self.cached > 0 && mem.load(span_at(next)) & CACHED != 0 {
            // Growing into a cached block: give the cache back to the lists.
            self.flush_cache(mem)?;
            if self.pending != 0 {
                self.list_pending(mem).ok_or("corrupt pending free block")?;
            }
            // The flush may have freed the block before: PREV_FREE.
            (arena, word) = self.live_block(mem, off)?;
        }
        let next_free = self.free_neighbour_after(mem, arena, next)?;
        if need < span {
            // Shrink: the tail [off+need, next) becomes free, with the free
            // successor if there is one.
            let t = off + need;
            let mut tspan = span - need;
            if let Some(ns) = next_free {
                self.take_free(mem, next, ns)?;
                tspan += ns;
                self.stats.free_blocks -= 1;
            }
            write_free(mem, t, tspan);
            let after = t + tspan;
            let w = mem.load(span_at(after));
            mem.store(span_at(after), w | PREV_FREE);
            self.insert(mem, t, tspan);
            self.stats.free_blocks += 1;
            self.stats.free_bytes += span - need;
        } else {
            let Some(ns) = next_free else {
                return Ok(false);
            };
            if span + ns < need {
                return Ok(false);
            }
            self.take_free(mem, next, ns)?;
            let rest = span + ns - need;
            if rest > 0 {
                let r = off + need;
                write_free(mem, r, rest);
                self.insert(mem, r, rest);
            } else {
                let after = next + ns;
                let w = mem.load(span_at(after));
                mem.store(span_at(after), w & !PREV_FREE);
                self.stats.free_blocks -= 1;
            }
            self.stats.free_bytes -= need - span;
        }
        debug_assert!(need.is_multiple_of(ALIGN) && off + need <= arena.end);
        if need > span {
            // The grown block (and the header after it) leave fresh space.
            let i = self
                .arenas
                .partition_point(|a| a.start <= off)
                .wrapping_sub(1);
            if let Some(fresh) = self.fresh.get_mut(i) {
                *fresh = (*fresh).max(off + need);
            }
        }
        mem.store(span_at(off), need | (word & PREV_FREE));
        mem.store(tag_at(off), self.tag(off, need));
        self.stats.used_bytes = self.stats.used_bytes - span + need;
        self.after_op(mem);
        Ok(true)
    }

    /// Usable bytes of the live block at `off` (>= the size requested).
    pub fn usable_size<M: Mem>(&self, mem: &M, off: u64) -> Result<u64, String> {
        let (_, word) = self.live_block(mem, off)?;
        Ok((word & SPAN_MASK) - HEADER)
    }

    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// The inconsistency that poisoned the allocator, if any.
    pub fn corruption(&self) -> Option<&str> {
        self.poisoned.as_deref()
    }

    /// Number of arenas added so far.
    pub fn arena_count(&self) -> usize {
        self.arenas.len()
    }

    // ----- internals -------------------------------------------------------

    /// With the `check-invariants` feature, walks the whole heap after each
    /// operation and poisons the allocator if anything is inconsistent.
    #[inline(always)]
    fn after_op<M: Mem>(&mut self, mem: &M) {
        self.changed = true;
        #[cfg(feature = "check-invariants")]
        if self.poisoned.is_none() {
            if let Err(e) = self.check_invariants(mem) {
                self.poison(format!("check-invariants: {e}"));
            }
        }
        #[cfg(not(feature = "check-invariants"))]
        let _ = mem;
    }

    fn poison(&mut self, what: String) {
        if self.poisoned.is_none() {
            self.poisoned = Some(what);
        }
    }

    /// Check tag of a used block: a keyed mix of its payload offset and span.
    #[inline]
    fn tag(&self, p: u64, span: u64) -> u64 {
        let x = (p ^ self.key).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        (x ^ (x >> 29) ^ span).wrapping_mul(0xBF58_476D_1CE4_E5B9)
    }

    /// The arena holding offset `off`.
    #[inline]
    fn arena_of(&self, off: u64) -> Option<Arena> {
        let i = self.arenas.partition_point(|a| a.start <= off);
        let a = *self.arenas.get(i.checked_sub(1)?)?;
        (off < a.end).then_some(a)
    }

    /// Whether `p` can be the payload offset of a block of some arena.
    #[inline]
    fn payload_arena(&self, p: u64) -> Option<Arena> {
        if !p.is_multiple_of(ALIGN) {
            return None;
        }
        let a = self.arena_of(p)?;
        (p >= a.first() && p + MIN_SPAN <= a.end).then_some(a)
    }

    /// Validates `off` as the payload of a live block; returns its arena and
    /// header word.
    fn live_block<M: Mem>(&self, mem: &M, off: u64) -> Result<(Arena, u64), String> {
        if let Some(what) = &self.poisoned {
            return Err(format!("allocator state is corrupt ({what})"));
        }
        let a = self
            .payload_arena(off)
            .ok_or_else(|| format!("offset {off} is not a block payload in any arena"))?;
        let word = mem.load(span_at(off));
        let span = word & SPAN_MASK;
        if word & (FREE | CACHED) != 0 || span < MIN_SPAN || span > a.end - off {
            return Err(format!("offset {off} is not a live block"));
        }
        if mem.load(tag_at(off)) != self.tag(off, span) {
            return Err(format!("offset {off} is not a live block (bad tag)"));
        }
        Ok((a, word))
    }

    /// Span of the free block at payload `p`, checked against its arena.
    #[inline]
    fn free_block_span<M: Mem>(&self, mem: &M, p: u64) -> Option<u64> {
        let a = self.payload_arena(p)?;
        let word = mem.load(span_at(p));
        let span = word & SPAN_MASK;
        (word & (FREE | PREV_FREE) == FREE && span >= MIN_SPAN && span <= a.end - p).then_some(span)
    }

    /// The block at payload `next` (right after a used block of `arena`):
    /// its span if it is free, `None` if it is used or the sentinel.
    #[inline]
    fn free_neighbour_after<M: Mem>(
        &mut self,
        mem: &M,
        arena: Arena,
        next: u64,
    ) -> Result<Option<u64>, String> {
        let word = mem.load(span_at(next));
        if word & FREE == 0 {
            return Ok(None);
        }
        let span = word & SPAN_MASK;
        if next < arena.end && span >= MIN_SPAN && span <= arena.end - next {
            return Ok(Some(span));
        }
        let msg = format!("corrupt free block header at {next}");
        self.poison(msg.clone());
        Err(msg)
    }

    /// Span of the free block before the used block at `off` (whose header
    /// says PREV_FREE), checked through footer and header.
    #[inline]
    fn free_neighbour_before<M: Mem>(
        &mut self,
        mem: &M,
        arena: Arena,
        off: u64,
    ) -> Result<u64, String> {
        let ps = mem.load(footer_before(off));
        if ps.is_multiple_of(ALIGN) && ps >= MIN_SPAN && ps <= off - arena.first() {
            let pw = mem.load(span_at(off - ps));
            if pw & (SPAN_MASK | FREE) == ps | FREE {
                return Ok(ps);
            }
        }
        let msg = format!("corrupt boundary tag before block {off}");
        self.poison(msg.clone());
        Err(msg)
    }

    /// Finds a list whose first block has a span >= `span`: (fl, sl, block).
    #[inline]
    fn find_fit<M: Mem>(&mut self, mem: &M, span: u64) -> Option<(usize, usize, u64)> {
        let units = span / ALIGN;
        if let Some((f, s)) = class_at_least(units) {
            let sl_map = self.sl_bitmap[f] as u32 & (u32::MAX << s);
            let (f, s) = if sl_map != 0 {
                (f, sl_map.trailing_zeros() as usize)
            } else {
                let fl_map = self.fl_bitmap & u64::MAX.checked_shl(f as u32 + 1).unwrap_or(0);
                if fl_map != 0 {
                    let f = fl_map.trailing_zeros() as usize;
                    (f, self.sl_bitmap[f].trailing_zeros() as usize)
                } else {
                    return self.find_fit_slow(mem, span);
                }
            };
            debug_assert!(self.heads[f][s] != 0 && self.sl_bitmap[f] >> s & 1 == 1);
            debug_assert!(self.fl_bitmap >> f & 1 == 1);
            return Some((f, s, self.heads[f][s]));
        }
        self.find_fit_slow(mem, span)
    }

    /// Fallback when no class is certain to fit: first fit among the first
    /// blocks of the list of `span`'s own class (its blocks may be larger).
    #[cold]
    fn find_fit_slow<M: Mem>(&mut self, mem: &M, span: u64) -> Option<(usize, usize, u64)> {
        const MAX_SCAN: usize = 64;
        let (f, s) = class_of(span / ALIGN);
        let mut p = self.heads[f][s];
        for _ in 0..MAX_SCAN {
            if p == 0 {
                return None;
            }
            let Some(bs) = self.free_block_span(mem, p) else {
                self.poison(format!("free list {f}/{s} holds a bad block at {p}"));
                return None;
            };
            if bs >= span {
                return Some((f, s, p));
            }
            p = mem.load(next_at(p));
        }
        None
    }

    /// Whether `link` (read from a free block) may be followed.
    #[inline]
    fn link_ok(&self, link: u64) -> bool {
        link == 0 || self.payload_arena(link).is_some()
    }

    /// `malloc` of a block of span `span` taken from the cache (`p`).
    #[inline]
    fn malloc_cached<M: Mem>(&mut self, mem: &mut M, p: u64, span: u64) -> Option<u64> {
        self.cached -= 1;
        let word = mem.load(span_at(p));
        if word & !PREV_FREE != span | CACHED {
            self.poison(format!("cached block {p} has a bad header {word:#x}"));
            return None;
        }
        // The check tag was left in place.
        mem.store(span_at(p), word & !CACHED);
        self.stats.used_bytes += span;
        self.stats.used_blocks += 1;
        self.stats.free_bytes -= span;
        self.stats.free_blocks -= 1;
        self.after_op(mem);
        Some(p)
    }

    /// Frees every cached block into the free lists, in address order
    /// (neighbours merge while their lines are still in cache). Not needed
    /// for correctness (see "The cache"); after it, `blocks()` and `stats()`
    /// show free space merged as far as it goes.
    #[cold]
    pub fn flush_cache<M: Mem>(&mut self, mem: &mut M) -> Result<(), String> {
        self.changed = true;
        let mut all = Vec::with_capacity(self.cached);
        for (u, bin) in self.cache.iter_mut().enumerate() {
            all.extend(bin.drain(..).map(|p| (p, u as u64 * ALIGN)));
        }
        all.append(&mut self.low_cache);
        self.cached = 0;
        all.sort_unstable();
        // Touch the headers after the blocks first: independent loads the
        // processor overlaps, where the merges below would wait for each.
        let mut x = 0;
        for &(p, span) in &all {
            x ^= mem.load(span_at(p + span));
        }
        std::hint::black_box(x);
        for (p, span) in all {
            let word = mem.load(span_at(p));
            let arena = match self.payload_arena(p) {
                Some(a) if word & !PREV_FREE == span | CACHED => a,
                _ => {
                    let msg = format!("cached block {p} has a bad header {word:#x}");
                    self.poison(msg.clone());
                    return Err(msg);
                }
            };
            let word = word & !CACHED;
            mem.store(span_at(p), word);
            self.stats.used_bytes += span;
            self.stats.used_blocks += 1;
            self.stats.free_bytes -= span;
            self.stats.free_blocks -= 1;
            self.free_block(mem, arena, p, word)?;
        }
        Ok(())
    }

    /// Takes the free block `p` of span `span` out of its list, or out of
    /// the pending slot.
    #[inline]
    fn take_free<M: Mem>(&mut self, mem: &mut M, p: u64, span: u64) -> Result<(), String> {
        if p == self.pending {
            self.pending = 0;
            if p < self.low_end {
                self.low_free.remove(&p);
            }
            return Ok(());
        }
        let (f, s) = class_of(span / ALIGN);
        self.unlink(mem, p, f, s)
    }

    /// Puts the pending block in its list (the slot is then empty); `None`
    /// (and poisoned) if its header is no longer that of a free block.
    #[inline]
    fn list_pending<M: Mem>(&mut self, mem: &mut M) -> Option<()> {
        let p = std::mem::take(&mut self.pending);
        let Some(span) = self.free_block_span(mem, p) else {
            self.poison(format!("pending free block {p} has a bad header"));
            return None;
        };
        self.insert(mem, p, span);
        Some(())
    }

    /// Pushes the free block `p` (header and footer already written) on the
    /// front of its list.
    #[inline]
    fn insert<M: Mem>(&mut self, mem: &mut M, p: u64, span: u64) {
        debug_assert!(p.is_multiple_of(ALIGN) && span.is_multiple_of(ALIGN) && span >= MIN_SPAN);
        let (f, s) = class_of(span / ALIGN);
        let head = self.heads[f][s];
        mem.store(next_at(p), head);
        mem.store(prev_at(p), 0);
        if head != 0 {
            mem.store(prev_at(head), p);
        }
        self.heads[f][s] = p;
        self.fl_bitmap |= 1 << f;
        self.sl_bitmap[f] |= 1 << s;
        if p < self.low_end {
            self.low_free.insert(p);
        }
    }

    /// Removes the free block `p` from list `(f, s)`, validating its links.
    #[inline]
    fn unlink<M: Mem>(&mut self, mem: &mut M, p: u64, f: usize, s: usize) -> Result<(), String> {
        let next = mem.load(next_at(p));
        let prev = mem.load(prev_at(p));
        let ok = self.link_ok(next)
            && self.link_ok(prev)
            && (prev != 0 || self.heads[f][s] == p)
            && next != p
            && prev != p;
        if !ok {
            let msg = format!("corrupt free-list links in block {p}");
            self.poison(msg.clone());
            return Err(msg);
        }
        debug_assert!(next == 0 || mem.load(span_at(next)) & FREE != 0);
        debug_assert!(prev == 0 || mem.load(next_at(prev)) == p);
        if prev != 0 {
            mem.store(next_at(prev), next);
        } else {
            self.heads[f][s] = next;
            if next == 0 {
                self.sl_bitmap[f] &= !(1 << s);
                if self.sl_bitmap[f] == 0 {
                    self.fl_bitmap &= !(1 << f);
                }
            }
        }
        if next != 0 {
            mem.store(prev_at(next), prev);
        }
        if p < self.low_end {
            self.low_free.remove(&p);
        }
        Ok(())
    }
}

impl Default for Allocator {
    fn default() -> Self {
        Self::new()
    }
}

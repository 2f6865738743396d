//! Adding arenas: empty, or rebuilt around the live blocks the catalog names.

use super::{
    span_at, span_for, tag_at, write_free, Allocator, Arena, Mem, ALIGN, HEADER, MAX_OFFSET,
    MIN_ARENA, PREV_FREE,
};

impl Allocator {
    /// Adds `[start, end)` as a new arena, all free. `start`/`end` are 64-aligned.
    /// An invalid range (misaligned, shorter than `MIN_ARENA`, beyond
    /// `MAX_OFFSET`, overlapping an arena) is ignored; `try_add_arena` says why.
    pub fn add_arena<M: Mem>(&mut self, mem: &mut M, start: u64, end: u64) {
        // Documented: an invalid range is ignored (no panic on any input).
        let _ = self.try_add_arena(mem, start, end);
    }

    /// `add_arena` that reports an invalid range. The range must read as
    /// zeros (new file space): it is all fresh space (see "Fresh space").
    pub fn try_add_arena<M: Mem>(
        &mut self,
        mem: &mut M,
        start: u64,
        end: u64,
    ) -> Result<(), String> {
        self.add_arena_impl(mem, start, end, &[], true)
    }

    /// Adds `[start, end)` as an arena in which exactly the blocks `live`
    /// (payload offset, capacity in bytes) are in use and everything else is
    /// free. Used to rebuild the allocator from the catalog at open.
    /// Errors (overlap, misalignment, out of range) leave `self` unchanged.
    ///
    /// A live block `(p, cap)` gets the span `malloc(cap)` would give it, so
    /// passing either the requested size or `usable_size` rebuilds the same
    /// block. Every header (with this allocator's tag key), the sentinel,
    /// and the list links and footers of the free gaps are set to what this
    /// layout needs; payload bytes are never touched otherwise. A word that
    /// already holds its value is not written (`Mem::store_changed`): with
    /// the heap's fixed key, reopening a heap whose blocks did not move
    /// reads its headers and dirties no page of them. Nothing of the arena
    /// is fresh space (its free gaps may hold old data) until `mark_fresh`.
    pub fn add_arena_with_live<M: Mem>(
        &mut self,
        mem: &mut M,
        start: u64,
        end: u64,
        live: &[(u64, u64)],
    ) -> Result<(), String> {
        let mut mem = Changed { mem, wrote: false };
        self.add_arena_impl(&mut mem, start, end, live, false)
    }

    /// Checks, without memory, what `add_arena_with_live(start, end, live)`
    /// checks (range, alignment, tiling: its only failures on an allocator
    /// without arenas), so that a caller can refuse a file before writing
    /// anything; `add_arena_with_layout` then rebuilds from the result
    /// without checking the blocks again.
    pub fn check_layout(start: u64, end: u64, live: &[(u64, u64)]) -> Result<Layout, String> {
        let arena = Allocator::with_key(1).check_new_arena(start, end)?;
        Ok(Layout {
            arena,
            blocks: check_live(arena, live)?,
        })
    }

    /// `add_arena_with_live` of a layout `check_layout` checked. Returns
    /// whether it wrote anything: every header was already as the rebuild
    /// writes it (a clean close settles them) or not (a crash, an exit
    /// with blocks still handed out, a fallback to an older commit).
    pub fn add_arena_with_layout<M: Mem>(
        &mut self,
        mem: &mut M,
        layout: &Layout,
    ) -> Result<bool, String> {
        let mut mem = Changed { mem, wrote: false };
        self.add_checked(&mut mem, layout, false)?;
        Ok(mem.wrote)
    }

    fn add_arena_impl<M: Mem>(
        &mut self,
        mem: &mut M,
        start: u64,
        end: u64,
        live: &[(u64, u64)],
        fresh: bool,
    ) -> Result<(), String> {
        if let Some(what) = &self.poisoned {
            return Err(format!("allocator state is corrupt ({what})"));
        }
        let arena = self.check_new_arena(start, end)?;
        let blocks = check_live(arena, live)?;
        self.add_checked(mem, &Layout { arena, blocks }, fresh)
    }

    /// Adds the arena of `layout` around its checked blocks (see
    /// `add_arena_impl`); fails only on a poisoned allocator or an arena
    /// overlapping one it has.
    fn add_checked<M: Mem>(
        &mut self,
        mem: &mut M,
        layout: &Layout,
        fresh: bool,
    ) -> Result<(), String> {
        if let Some(what) = &self.poisoned {
            return Err(format!("allocator state is corrupt ({what})"));
        }
        let Layout { arena, blocks } = layout;
        let arena = *arena;
        self.check_new_arena(arena.start, arena.end)?;
        let (start, end) = (arena.start, arena.end);

        // Valid: from here on nothing fails.
        self.changed = true;
        let at = self.arenas.partition_point(|a| a.start < start);
        self.arenas.insert(at, arena);
        self.fresh
            .insert(at, if fresh { arena.first() } else { arena.end });
        self.stats.arena_bytes += end - start;

        let mut cursor = arena.first();
        let mut prev_free = 0;
        for &(p, span) in blocks {
            if p > cursor {
                self.add_free_gap(mem, cursor, p - cursor);
                prev_free = PREV_FREE;
            }
            mem.store(span_at(p), span | prev_free);
            mem.store(tag_at(p), self.tag(p, span));
            self.stats.used_bytes += span;
            self.stats.used_blocks += 1;
            prev_free = 0;
            cursor = p + span;
        }
        if end > cursor {
            self.add_free_gap(mem, cursor, end - cursor);
            prev_free = PREV_FREE;
        }
        // Sentinel: span 0, used.
        mem.store(span_at(end), prev_free);
        mem.store(tag_at(end), 0);
        self.after_op(mem);
        Ok(())
    }

    /// Writes and lists a free block; the caller sets the next block's
    /// PREV_FREE.
    fn add_free_gap<M: Mem>(&mut self, mem: &mut M, p: u64, span: u64) {
        write_free(mem, p, span);
        self.insert(mem, p, span);
        self.stats.free_bytes += span;
        self.stats.free_blocks += 1;
    }

    /// Geometry of a new arena: aligned, large enough, in range, disjoint.
    fn check_new_arena(&self, start: u64, end: u64) -> Result<Arena, String> {
        if !start.is_multiple_of(ALIGN) || !end.is_multiple_of(ALIGN) {
            return Err(format!(
                "arena [{start}, {end}) is not {ALIGN}-byte aligned"
            ));
        }
        if end > MAX_OFFSET || end < start || end - start < MIN_ARENA {
            return Err(format!(
                "arena [{start}, {end}) is empty, shorter than {MIN_ARENA} bytes or beyond {MAX_OFFSET}"
            ));
        }
        let i = self.arenas.partition_point(|a| a.end <= start);
        if let Some(a) = self.arenas.get(i) {
            if a.start < end {
                return Err(format!(
                    "arena [{start}, {end}) overlaps arena [{}, {})",
                    a.start, a.end
                ));
            }
        }
        Ok(Arena { start, end })
    }
}

/// Live blocks `check_layout` found to tile an arena: sorted (payload,
/// span). Only `check_layout` makes one.
pub struct Layout {
    arena: Arena,
    blocks: Vec<(u64, u64)>,
}

impl Layout {
    /// The free blocks the rebuild makes of the gaps between the live
    /// blocks, as (payload offset, capacity): the bytes of each hold
    /// nothing the allocator reads but its last word (the footer).
    pub fn free_blocks(&self) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        let mut cursor = self.arena.first();
        let ends = self.blocks.iter().map(|&(p, span)| (p, p + span));
        for (p, next) in ends.chain([(self.arena.end, self.arena.end)]) {
            if p > cursor {
                out.push((cursor, p - cursor - HEADER));
            }
            cursor = next;
        }
        out
    }
}

/// A `Mem` whose stores skip words that already hold the value, noting
/// whether any did not.
struct Changed<'m, M> {
    mem: &'m mut M,
    wrote: bool,
}

impl<M: Mem> Mem for Changed<'_, M> {
    #[inline(always)]
    fn load(&self, off: u64) -> u64 {
        self.mem.load(off)
    }
    #[inline(always)]
    fn store(&mut self, off: u64, val: u64) {
        self.wrote |= self.mem.store_changed(off, val);
    }
}

/// The live blocks as sorted (payload, span), checked to tile into `arena`.
fn check_live(arena: Arena, live: &[(u64, u64)]) -> Result<Vec<(u64, u64)>, String> {
    let mut blocks = Vec::with_capacity(live.len());
    for &(p, cap) in live {
        let span =
            span_for(cap).ok_or_else(|| format!("live block {p}: capacity {cap} too large"))?;
        blocks.push((p, span));
    }
    blocks.sort_unstable();
    let mut cursor = arena.first();
    for &(p, span) in &blocks {
        if p % ALIGN != 0 {
            return Err(format!("live block {p} is not {ALIGN}-byte aligned"));
        }
        if p < cursor {
            return Err(if p < arena.first() {
                format!(
                    "live block {p} starts before the first block of arena [{}, {})",
                    arena.start, arena.end
                )
            } else {
                format!("live block {p} overlaps the live block before it")
            });
        }
        if p >= arena.end || span > arena.end - p {
            return Err(format!(
                "live block {p} (span {span}) ends beyond arena [{}, {})",
                arena.start, arena.end
            ));
        }
        cursor = p + span;
    }
    Ok(blocks)
}

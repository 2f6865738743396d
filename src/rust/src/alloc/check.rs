//! Whole-heap consistency checks (tests, fuzzing, `Heap::check_invariants`).

use std::collections::{HashMap, HashSet};

use super::class::{class_of, FL_COUNT, SL_COUNT};
use super::{
    footer_at, next_at, prev_at, span_at, tag_at, Allocator, Mem, Stats, ALIGN, CACHED, FREE,
    MAX_OFFSET, MIN_ARENA, MIN_SPAN, PREV_FREE, SPAN_MASK,
};

impl Allocator {
    /// Walks every block of every arena: no overlap, sizes aligned, arena
    /// exactly tiled, free lists consistent with headers, no two adjacent free
    /// blocks, stats consistent.
    ///
    /// In detail: arenas sorted, disjoint and well formed; in each arena the
    /// blocks tile `[start+32, end-32)` exactly and end at a sentinel; every
    /// used header carries its check tag, every free block its footer;
    /// `PREV_FREE` flags match; every cached block is in its cache bin once
    /// (and counts as free); every free block is in exactly the list of
    /// its class (but the pending block, in none), lists are well linked (prev links, no cycle), bitmaps match
    /// the list heads and the totals match `stats()`; no used block (nor
    /// the header after it) lies in fresh space.
    pub fn check_invariants<M: Mem>(&self, mem: &M) -> Result<(), String> {
        if let Some(what) = &self.poisoned {
            return Err(format!("allocator is poisoned: {what}"));
        }
        let mut seen = Stats::default();
        let mut free: HashMap<u64, u64> = HashMap::new();
        let mut cached: HashMap<u64, u64> = HashMap::new();
        let mut last_end = 0;
        if self.fresh.len() != self.arenas.len() {
            return Err("fresh-space table does not match the arenas".into());
        }
        for (a, &fresh) in self.arenas.iter().zip(&self.fresh) {
            let (start, end) = (a.start, a.end);
            if fresh < a.first() || fresh > end || fresh % ALIGN != 0 {
                return Err(format!("arena [{start}, {end}): fresh space from {fresh}"));
            }
            if start % ALIGN != 0 || end % ALIGN != 0 || end > MAX_OFFSET {
                return Err(format!("arena [{start}, {end}) malformed"));
            }
            if end < start + MIN_ARENA || start < last_end {
                return Err(format!(
                    "arena [{start}, {end}) too small or not sorted/disjoint"
                ));
            }
            last_end = end;
            seen.arena_bytes += end - start;
            let mut p = a.first();
            let mut prev_free = false;
            while p < end {
                let word = mem.load(span_at(p));
                let span = word & SPAN_MASK;
                let is_free = word & FREE != 0;
                if word & (ALIGN - 1) & !(FREE | PREV_FREE | CACHED) != 0 {
                    return Err(format!("block {p}: unknown header flags {word:#x}"));
                }
                if span < MIN_SPAN || span > end - p {
                    return Err(format!(
                        "block {p}: span {span} does not fit arena [{start}, {end})"
                    ));
                }
                if (word & PREV_FREE != 0) != prev_free {
                    return Err(format!("block {p}: PREV_FREE flag wrong"));
                }
                if is_free {
                    if word & CACHED != 0 {
                        return Err(format!("block {p}: both free and cached"));
                    }
                    if prev_free {
                        return Err(format!("block {p}: two adjacent free blocks"));
                    }
                    if mem.load(tag_at(p)) != 0 {
                        return Err(format!("free block {p}: check word not cleared"));
                    }
                    if mem.load(footer_at(p, span)) != span {
                        return Err(format!("free block {p}: footer does not match span {span}"));
                    }
                    free.insert(p, span);
                    seen.free_bytes += span;
                    seen.free_blocks += 1;
                } else {
                    if mem.load(tag_at(p)) != self.tag(p, span) {
                        return Err(format!("used block {p}: bad check tag"));
                    }
                    if p + span > fresh {
                        return Err(format!("used block {p}: reaches into fresh space {fresh}"));
                    }
                    if word & CACHED != 0 {
                        cached.insert(p, span);
                        seen.free_bytes += span;
                        seen.free_blocks += 1;
                    } else {
                        seen.used_bytes += span;
                        seen.used_blocks += 1;
                    }
                }
                prev_free = is_free;
                p += span;
            }
            let sentinel = mem.load(span_at(end));
            let want = if prev_free { PREV_FREE } else { 0 };
            if p != end || sentinel != want {
                return Err(format!(
                    "arena [{start}, {end}): bad sentinel {sentinel:#x}"
                ));
            }
        }

        let mut listed: HashSet<u64> = HashSet::new();
        for f in 0..FL_COUNT {
            if (self.fl_bitmap >> f & 1 != 0) != (self.sl_bitmap[f] != 0) {
                return Err(format!("first-level bitmap bit {f} wrong"));
            }
            for s in 0..SL_COUNT {
                let head = self.heads[f][s];
                if (self.sl_bitmap[f] >> s & 1 != 0) != (head != 0) {
                    return Err(format!("second-level bitmap bit {f}/{s} wrong"));
                }
                let mut prev = 0;
                let mut x = head;
                while x != 0 {
                    let span = *free
                        .get(&x)
                        .ok_or_else(|| format!("list {f}/{s} holds {x}, not a free block"))?;
                    if !listed.insert(x) {
                        return Err(format!("free block {x} listed twice (or a cycle)"));
                    }
                    if class_of(span / ALIGN) != (f, s) {
                        return Err(format!(
                            "free block {x} (span {span}) in wrong list {f}/{s}"
                        ));
                    }
                    if mem.load(prev_at(x)) != prev {
                        return Err(format!("free block {x}: bad prev link"));
                    }
                    prev = x;
                    x = mem.load(next_at(x));
                }
            }
        }
        if self.fl_bitmap >> FL_COUNT != 0 {
            return Err("first-level bitmap has bits beyond the last class".into());
        }
        if self.pending != 0 {
            if !free.contains_key(&self.pending) {
                return Err(format!(
                    "pending block {} is not a free block",
                    self.pending
                ));
            }
            if !listed.insert(self.pending) {
                return Err(format!("pending block {} is also listed", self.pending));
            }
        }
        if listed.len() != free.len() {
            return Err(format!(
                "{} free blocks but {} listed or pending",
                free.len(),
                listed.len()
            ));
        }
        // The catalog region's free blocks, exactly.
        let mut low: Vec<u64> = free.keys().copied().filter(|&p| p < self.low_end).collect();
        low.sort_unstable();
        if !low.iter().eq(self.low_free.iter()) {
            return Err(format!(
                "catalog region: free blocks {low:?} but {:?} recorded",
                self.low_free
            ));
        }
        let mut in_cache = 0;
        for (u, bin) in self.cache.iter().enumerate() {
            for &p in bin {
                if p < self.low_end || cached.remove(&p) != Some(u as u64 * ALIGN) {
                    return Err(format!(
                        "cache bin {u} holds {p}: not a cached block of its span outside the catalog region"
                    ));
                }
                in_cache += 1;
            }
        }
        for &(p, span) in &self.low_cache {
            if p >= self.low_end || cached.remove(&p) != Some(span) {
                return Err(format!(
                    "catalog region cache holds {p}: not a cached block of span {span} in the region"
                ));
            }
            in_cache += 1;
        }
        if !cached.is_empty() || in_cache != self.cached {
            return Err(format!(
                "{} cached blocks not in the cache, or count {} but {in_cache} cached",
                cached.len(),
                self.cached
            ));
        }
        if seen != self.stats {
            return Err(format!("stats {:?} but blocks say {seen:?}", self.stats));
        }
        Ok(())
    }

    /// Every block in address order: (payload offset, capacity, used).
    /// Stops walking an arena at a malformed header.
    pub fn blocks<M: Mem>(&self, mem: &M) -> Vec<(u64, u64, bool)> {
        let mut out = Vec::new();
        for a in &self.arenas {
            let mut p = a.first();
            while p < a.end {
                let word = mem.load(span_at(p));
                let span = word & SPAN_MASK;
                if span < MIN_SPAN || span > a.end - p {
                    break;
                }
                out.push((p, span - super::HEADER, word & (FREE | CACHED) == 0));
                p += span;
            }
        }
        out
    }
}

//! Unit tests of the allocator (property tests: `tests/alloc_props.rs`).

use super::*;

fn setup(bytes: u64) -> (Allocator, VecMem) {
    let mut mem = VecMem::new(bytes);
    let mut a = Allocator::new();
    a.try_add_arena(&mut mem, 0, bytes).unwrap();
    a.check_invariants(&mem).unwrap();
    (a, mem)
}

/// A size whose blocks are too large for the cache (freed at once).
const BIG: u64 = CACHE_UNITS as u64 * ALIGN + 1000;

/// `free`, then the cache given back to the free lists: the block is
/// merged with its free neighbours.
fn free_now(a: &mut Allocator, mem: &mut VecMem, p: u64) {
    a.free(mem, p).unwrap();
    a.flush_cache(mem).unwrap();
}

#[test]
fn empty_arena_is_one_free_block() {
    let (a, mem) = setup(4096);
    assert_eq!(a.blocks(&mem), vec![(64, 4096 - 64 - HEADER, false)]);
    let st = a.stats();
    assert_eq!(st.arena_bytes, 4096);
    assert_eq!(st.free_bytes, 4096 - 64);
    assert_eq!((st.used_blocks, st.free_blocks), (0, 1));
}

#[test]
fn small_requests_cost_one_64_byte_span() {
    let (mut a, mut mem) = setup(4096);
    let p0 = a.malloc(&mut mem, 0).unwrap();
    let p1 = a.malloc(&mut mem, 16).unwrap();
    let p2 = a.malloc(&mut mem, 32).unwrap();
    let p3 = a.malloc(&mut mem, 33).unwrap();
    assert_eq!((p0, p1, p2, p3), (64, 128, 192, 256));
    assert_eq!(a.usable_size(&mem, p1).unwrap(), 32);
    assert_eq!(a.usable_size(&mem, p3).unwrap(), 96);
    for p in [p0, p1, p2, p3] {
        assert_eq!(p % ALIGN, 0);
    }
    a.check_invariants(&mem).unwrap();
}

#[test]
fn free_coalesces_both_sides() {
    let (mut a, mut mem) = setup(8192);
    let ps: Vec<u64> = (0..5).map(|_| a.malloc(&mut mem, 100).unwrap()).collect();
    free_now(&mut a, &mut mem, ps[1]);
    free_now(&mut a, &mut mem, ps[3]);
    a.check_invariants(&mem).unwrap();
    assert_eq!(a.stats().free_blocks, 3);
    free_now(&mut a, &mut mem, ps[2]); // merges 1, 2, 3
    a.check_invariants(&mem).unwrap();
    assert_eq!(a.stats().free_blocks, 2);
    for p in [ps[0], ps[4]] {
        free_now(&mut a, &mut mem, p);
    }
    a.check_invariants(&mem).unwrap();
    assert_eq!(a.blocks(&mem), vec![(64, 8192 - 64 - HEADER, false)]);
}

#[test]
fn freed_space_is_reused() {
    let (mut a, mut mem) = setup(1 << 16);
    let p = a.malloc(&mut mem, 1000).unwrap();
    let _q = a.malloc(&mut mem, 1000).unwrap();
    free_now(&mut a, &mut mem, p);
    assert_eq!(a.malloc(&mut mem, 1000), Some(p));
}

#[test]
fn bogus_offsets_are_errors() {
    let (mut a, mut mem) = setup(8192);
    let p = a.malloc(&mut mem, 200).unwrap();
    // User data that looks like a header inside the payload.
    mem.store(p + 64 - 32, 64);
    mem.store(p + 64 - 24, 12345);
    for bad in [
        0,
        1,
        8,
        63,
        p + 1,
        p + 64,
        8192,
        8192 + 64,
        u64::MAX,
        u64::MAX - 63,
    ] {
        assert!(a.free(&mut mem, bad).is_err(), "free({bad})");
        assert!(a.usable_size(&mem, bad).is_err(), "usable_size({bad})");
        assert!(a.resize_in_place(&mut mem, bad, 10).is_err());
    }
    free_now(&mut a, &mut mem, p);
    assert!(a.free(&mut mem, p).is_err(), "double free");
    assert!(a.usable_size(&mem, p).is_err());
    a.check_invariants(&mem).unwrap();
    assert!(a.corruption().is_none());
}

#[test]
fn double_free_after_merge_is_an_error() {
    let (mut a, mut mem) = setup(8192);
    let p = a.malloc(&mut mem, 10).unwrap();
    let q = a.malloc(&mut mem, 10).unwrap();
    let _r = a.malloc(&mut mem, 10).unwrap();
    free_now(&mut a, &mut mem, p);
    free_now(&mut a, &mut mem, q); // q merges into p
    assert!(a.free(&mut mem, q).is_err());
    assert!(a.free(&mut mem, p).is_err());
    a.check_invariants(&mem).unwrap();
}

#[test]
fn out_of_space_and_huge_requests() {
    let (mut a, mut mem) = setup(4096);
    assert_eq!(a.malloc(&mut mem, 4096), None);
    assert_eq!(a.malloc(&mut mem, u64::MAX), None);
    assert_eq!(a.malloc(&mut mem, u64::MAX - 100), None);
    // Exactly the whole arena fits (slow path: its class is not "certain").
    let p = a.malloc(&mut mem, 4096 - 64 - HEADER).unwrap();
    assert_eq!(p, 64);
    assert_eq!(a.malloc(&mut mem, 0), None);
    a.check_invariants(&mem).unwrap();
}

#[test]
fn large_block_nearly_the_whole_arena_fits() {
    let size = 64 << 20;
    let (mut a, mut mem) = setup(size);
    let p = a.malloc(&mut mem, size - 64 - HEADER - 64 * 3).unwrap();
    assert!(a.malloc(&mut mem, 200).is_none());
    assert!(a.malloc(&mut mem, 100).is_some());
    free_now(&mut a, &mut mem, p);
    a.check_invariants(&mem).unwrap();
}

#[test]
fn resize_grows_and_shrinks_in_place() {
    let (mut a, mut mem) = setup(1 << 16);
    let p = a.malloc(&mut mem, 100).unwrap();
    mem.store(p, 0xdead_beef);
    assert_eq!(a.resize_in_place(&mut mem, p, 5000), Ok(true));
    assert!(a.usable_size(&mem, p).unwrap() >= 5000);
    let q = a.malloc(&mut mem, 100).unwrap();
    assert_eq!(q, p + 5056);
    a.check_invariants(&mem).unwrap();
    // No room after p now.
    assert_eq!(a.resize_in_place(&mut mem, p, 6000), Ok(false));
    assert_eq!(a.resize_in_place(&mut mem, p, 10), Ok(true));
    assert_eq!(a.usable_size(&mem, p).unwrap(), 64 - HEADER);
    a.check_invariants(&mem).unwrap();
    // The freed tail is reused and lets p grow again.
    assert_eq!(a.resize_in_place(&mut mem, p, 4000), Ok(true));
    assert_eq!(mem.load(p), 0xdead_beef);
    // Shrink merges with a free successor.
    free_now(&mut a, &mut mem, q);
    assert_eq!(a.resize_in_place(&mut mem, p, 0), Ok(true));
    assert_eq!(a.stats().free_blocks, 1);
    assert_eq!(a.resize_in_place(&mut mem, p, u64::MAX), Ok(false));
    // Grow to exactly the arena end.
    assert_eq!(
        a.resize_in_place(&mut mem, p, (1 << 16) - 64 - HEADER),
        Ok(true)
    );
    assert_eq!(a.stats().free_blocks, 0);
    a.check_invariants(&mem).unwrap();
}

#[test]
fn rebuild_from_live_blocks() {
    let (mut a, mut mem) = setup(1 << 16);
    let ps: Vec<u64> = [10u64, 300, 64, 5000, 1]
        .iter()
        .map(|&s| a.malloc(&mut mem, s).unwrap())
        .collect();
    free_now(&mut a, &mut mem, ps[1]);
    free_now(&mut a, &mut mem, ps[3]);
    let live: Vec<(u64, u64)> = [ps[4], ps[0], ps[2]]
        .iter()
        .map(|&p| (p, a.usable_size(&mem, p).unwrap()))
        .collect();
    let before = a.blocks(&mem);

    let mut b = Allocator::new();
    b.add_arena_with_live(&mut mem, 0, 1 << 16, &live).unwrap();
    b.check_invariants(&mem).unwrap();
    assert_eq!(b.blocks(&mem), before);
    assert_eq!(b.stats(), a.stats());
    // The old allocator's tags do not pass for the new one's.
    for &(p, cap) in &live {
        assert_eq!(b.usable_size(&mem, p).unwrap(), cap);
    }
}

/// A `Mem` that counts the stores that change a word.
struct Counting {
    mem: VecMem,
    changed: usize,
}

impl Mem for Counting {
    fn load(&self, off: u64) -> u64 {
        self.mem.load(off)
    }
    fn store(&mut self, off: u64, val: u64) {
        if self.mem.load(off) != val {
            self.changed += 1;
        }
        self.mem.store(off, val);
    }
    // The default `store_changed` (load, compare, store): what the
    // rebuild must use, so that `changed` counts every write.
}

#[test]
fn rebuild_with_the_same_key_writes_nothing_and_repairs_what_differs() {
    const KEY: u64 = 0x1234_5678_9abc_def1;
    let mut mem = VecMem::new(1 << 16);
    let mut a = Allocator::with_key(KEY);
    a.try_add_arena(&mut mem, 0, 1 << 16).unwrap();
    let ps: Vec<u64> = [10u64, 300, 64, 5000, 1, 700]
        .iter()
        .map(|&s| a.malloc(&mut mem, s).unwrap())
        .collect();
    free_now(&mut a, &mut mem, ps[1]);
    free_now(&mut a, &mut mem, ps[3]);
    let live: Vec<(u64, u64)> = [ps[0], ps[2], ps[4], ps[5]]
        .iter()
        .map(|&p| (p, a.usable_size(&mem, p).unwrap()))
        .collect();
    // A first rebuild sets every word of this layout.
    let mut m = Counting { mem, changed: 0 };
    Allocator::with_key(KEY)
        .add_arena_with_live(&mut m, 0, 1 << 16, &live)
        .unwrap();
    // A second one, as at the next open of an unchanged heap, changes none.
    m.changed = 0;
    let mut b = Allocator::with_key(KEY);
    b.add_arena_with_live(&mut m, 0, 1 << 16, &live).unwrap();
    assert_eq!(m.changed, 0);
    b.check_invariants(&m.mem).unwrap();
    let good = m.mem.clone();
    // Damaged headers (span, tag) and a stale free-list link are rewritten.
    let p = live[1].0;
    m.mem.store(p - HEADER, 0xFFFF_0000);
    m.mem.store(p - HEADER + 8, 7);
    m.mem.store(ps[1] - 16, 12345);
    m.changed = 0;
    let mut c = Allocator::with_key(KEY);
    c.add_arena_with_live(&mut m, 0, 1 << 16, &live).unwrap();
    assert_eq!(m.changed, 3);
    c.check_invariants(&m.mem).unwrap();
    assert_eq!(c.blocks(&m.mem), b.blocks(&good));
    for &(p, cap) in &live {
        assert_eq!(c.usable_size(&m.mem, p).unwrap(), cap);
    }
    // Another key rewrites every live block's tag.
    m.changed = 0;
    Allocator::with_key(KEY ^ 2)
        .add_arena_with_live(&mut m, 0, 1 << 16, &live)
        .unwrap();
    assert_eq!(m.changed, live.len());
    // The check without memory agrees with the rebuild, and a rebuild from
    // its result is the same rebuild.
    let layout = Allocator::check_layout(0, 1 << 16, &live).unwrap();
    // The free blocks it names are those the rebuild makes.
    let free = layout.free_blocks();
    m.changed = 0;
    let mut d = Allocator::with_key(KEY);
    // It reports that it wrote (the tags of the other key).
    assert!(d.add_arena_with_layout(&mut m, &layout).unwrap());
    assert_eq!(m.changed, live.len());
    let rebuilt: Vec<(u64, u64)> = d
        .blocks(&m.mem)
        .into_iter()
        .filter(|&(_, _, used)| !used)
        .map(|(p, cap, _)| (p, cap))
        .collect();
    assert_eq!(free, rebuilt);
    assert!(!free.is_empty());
    // Again: nothing to write, and it says so.
    let layout = Allocator::check_layout(0, 1 << 16, &live).unwrap();
    assert!(!Allocator::with_key(KEY)
        .add_arena_with_layout(&mut m, &layout)
        .unwrap());
    d.check_invariants(&m.mem).unwrap();
    assert_eq!(d.blocks(&m.mem), b.blocks(&good));
    assert_eq!(d.stats(), b.stats());
    assert!((0..1u64 << 16)
        .step_by(8)
        .all(|o| m.mem.load(o) == good.load(o)));
    let mut overlap = live.clone();
    overlap.push((live[3].0 + 64, 10));
    assert!(Allocator::check_layout(0, 1 << 16, &overlap).is_err());
}

#[test]
fn rebuild_rejects_bad_live_sets_without_change() {
    let mut mem = VecMem::new(1 << 16);
    let mut a = Allocator::new();
    a.try_add_arena(&mut mem, 1 << 15, 1 << 16).unwrap();
    let snapshot = mem.clone();
    let stats = a.stats();
    let end = 1u64 << 15;
    let bad: Vec<Vec<(u64, u64)>> = vec![
        vec![(0, 10)],                     // before the first payload
        vec![(64 + 1, 10)],                // misaligned
        vec![(128, 10), (128, 10)],        // duplicate
        vec![(128, 100), (192, 10)],       // overlap (span of 100 is 128)
        vec![(end - 64, 64 - HEADER + 1)], // beyond the end
        vec![(end, 0)],                    // at the end
        vec![(64, u64::MAX)],              // huge
        vec![(u64::MAX - 63, 0)],          // far away
        vec![(128, end)],                  // larger than the arena
    ];
    for live in bad {
        let mut b = Allocator::new();
        assert!(
            b.add_arena_with_live(&mut mem, 0, end, &live).is_err(),
            "{live:?}"
        );
        assert_eq!(b.stats(), Stats::default());
        assert_eq!(b.arena_count(), 0);
    }
    // Bad geometry and overlap with an existing arena.
    for (s, e) in [
        (0, 64),
        (1, 4096),
        (0, 4097),
        (4096, 0),
        (0, (1 << 15) + 64),
        ((1 << 15) + 64, 1 << 16),
        (0, !63),
    ] {
        assert!(
            a.add_arena_with_live(&mut mem, s, e, &[]).is_err(),
            "[{s}, {e})"
        );
    }
    assert_eq!(a.stats(), stats);
    assert_eq!(a.arena_count(), 1);
    assert!(mem.load(0) == snapshot.load(0));
    a.check_invariants(&mem).unwrap();
    // Valid edge cases: a block right at the end, and adjacent blocks.
    let mut b = Allocator::new();
    b.add_arena_with_live(
        &mut mem,
        0,
        end,
        &[(end - 64, 64 - HEADER), (64, 0), (128, 64 - HEADER)],
    )
    .unwrap();
    b.check_invariants(&mem).unwrap();
    assert_eq!(b.stats().free_blocks, 1);
}

#[test]
fn several_arenas_never_share_blocks() {
    let mut mem = VecMem::new(3 * 4096);
    let mut a = Allocator::new();
    a.try_add_arena(&mut mem, 2 * 4096, 3 * 4096).unwrap();
    a.try_add_arena(&mut mem, 0, 4096).unwrap();
    a.try_add_arena(&mut mem, 4096, 2 * 4096).unwrap(); // adjacent both sides
    assert_eq!(a.arena_count(), 3);
    let mut ps = Vec::new();
    while let Some(p) = a.malloc(&mut mem, 1000) {
        ps.push(p);
    }
    assert_eq!(ps.len(), 9, "three 1024-byte blocks fit per 4 KiB arena");
    a.check_invariants(&mem).unwrap();
    for p in ps {
        free_now(&mut a, &mut mem, p);
    }
    a.check_invariants(&mem).unwrap();
    assert_eq!(a.stats().free_blocks, 3);
}

#[test]
fn corrupt_links_poison_instead_of_panicking() {
    let (mut a, mut mem) = setup(1 << 16);
    let p = a.malloc(&mut mem, BIG).unwrap();
    let q = a.malloc(&mut mem, BIG).unwrap();
    let _r = a.malloc(&mut mem, BIG).unwrap();
    let s = a.malloc(&mut mem, BIG).unwrap();
    free_now(&mut a, &mut mem, q);
    // Freeing `s` (not next to `q`) puts `q` in its list: a listed block's
    // links are followed, the pending block's are not.
    free_now(&mut a, &mut mem, s);
    // A stray write over the free block's links.
    mem.store(q - 16, 1 << 40);
    assert!(a.free(&mut mem, p).is_err());
    assert!(a.corruption().is_some());
    assert!(a.malloc(&mut mem, 10).is_none());
    assert!(a.check_invariants(&mem).is_err());
}

#[test]
fn corrupt_span_is_caught() {
    let (mut a, mut mem) = setup(1 << 16);
    let p = a.malloc(&mut mem, BIG).unwrap();
    let q = a.malloc(&mut mem, BIG).unwrap();
    free_now(&mut a, &mut mem, q);
    // The free successor claims to run past the arena.
    mem.store(q - HEADER, (1 << 20) | 1);
    assert!(a.free(&mut mem, p).is_err());
    assert!(a.corruption().is_some());
}

#[test]
fn freed_small_blocks_are_cached_not_live_and_reused() {
    let (mut a, mut mem) = setup(1 << 16);
    let ps: Vec<u64> = (0..4).map(|_| a.malloc(&mut mem, 100).unwrap()).collect();
    let before = a.stats();
    a.free(&mut mem, ps[1]).unwrap();
    a.free(&mut mem, ps[2]).unwrap();
    a.check_invariants(&mem).unwrap();
    // Free for the heap: counted free, reported free, no longer live.
    let st = a.stats();
    assert_eq!(st.used_blocks, before.used_blocks - 2);
    assert_eq!(st.free_bytes, before.free_bytes + 2 * 192);
    assert_eq!(st.free_blocks, before.free_blocks + 2);
    let blocks = a.blocks(&mem);
    assert!(blocks.contains(&(ps[1], 192 - HEADER, false)));
    assert!(
        a.free(&mut mem, ps[1]).is_err(),
        "double free of a cached block"
    );
    assert!(a.usable_size(&mem, ps[2]).is_err());
    assert!(a.resize_in_place(&mut mem, ps[2], 10).is_err());
    assert_eq!(a.stats(), st, "refused calls change nothing");
    // Growing ps[0] into its cached neighbour gives the cache back first.
    assert_eq!(a.resize_in_place(&mut mem, ps[0], 300), Ok(true));
    a.check_invariants(&mem).unwrap();
    assert_eq!(a.blocks(&mem)[1], (ps[0] + 384, 192 - HEADER, false));
    // A malloc of a cached span takes the last block freed of that span.
    free_now(&mut a, &mut mem, ps[0]);
    a.free(&mut mem, ps[3]).unwrap();
    assert_eq!(a.malloc(&mut mem, 150), Some(ps[3]));
    a.check_invariants(&mem).unwrap();
    assert_eq!(a.usable_size(&mem, ps[3]).unwrap(), 192 - HEADER);
}

#[test]
fn a_full_cache_is_flushed_and_malloc_uses_cached_space() {
    let (mut a, mut mem) = setup(1 << 20);
    let mut ps = Vec::new();
    while let Some(p) = a.malloc(&mut mem, 16) {
        ps.push(p);
    }
    assert!(ps.len() > CACHE_MAX);
    for &p in &ps {
        a.free(&mut mem, p).unwrap();
        assert!(a.cached <= CACHE_MAX);
    }
    a.check_invariants(&mem).unwrap();
    assert_eq!(a.stats().used_blocks, 0);
    // A large request merges the cache back into one block.
    assert!(a.malloc(&mut mem, (1 << 20) - 64 - HEADER).is_some());
    a.check_invariants(&mem).unwrap();
}

// ----- the catalog region (place.rs) ------------------------------------------

/// An arena `[4096, bytes)` (as a heap's) with a catalog region below `end`.
fn setup_region(bytes: u64, end: u64) -> (Allocator, VecMem) {
    let mut mem = VecMem::new(bytes);
    let mut a = Allocator::new();
    a.try_add_arena(&mut mem, 4096, bytes).unwrap();
    a.set_catalog_region(&mem, end);
    (a, mem)
}

const REGION: u64 = 96 * 1024;
const PAGE: u64 = 4096;

#[test]
fn catalog_blocks_go_to_the_region_and_data_past_it() {
    let (mut a, mut mem) = setup_region(1 << 20, REGION);
    // Data first, as when a big vector is made before it is saved.
    let (d, dirty) = a.malloc_dirty(&mut mem, 500_000).unwrap();
    assert_eq!(d, REGION);
    assert_eq!(dirty, 0, "fresh space past the region reads as zeros");
    let d2 = a.malloc(&mut mem, 1 << 16).unwrap();
    assert!(d2 > d, "large blocks keep out: {d2}");
    let (c1, _) = a.malloc_catalog(&mut mem, PAGE).unwrap();
    let (c2, _) = a.malloc_catalog(&mut mem, 200).unwrap();
    assert_eq!(c1, 4096 + ALIGN, "lowest address first");
    assert!(c2 > c1 && c2 < REGION, "{c2}");
    // Small blocks go where the free lists say, the region included.
    let small = a.malloc(&mut mem, 100).unwrap();
    assert!(small < REGION, "{small}");
    a.check_invariants(&mem).unwrap();
    // A freed catalog block of the region is cached for the next catalog
    // block of its span, never handed to data of that span.
    a.free(&mut mem, c1).unwrap();
    a.check_invariants(&mem).unwrap();
    let d3 = a.malloc(&mut mem, PAGE).unwrap();
    assert_ne!(d3, c1);
    assert_eq!(a.malloc_catalog(&mut mem, PAGE).unwrap().0, c1);
    a.check_invariants(&mem).unwrap();
}

#[test]
fn a_full_region_falls_back_to_anywhere() {
    let (mut a, mut mem) = setup_region(1 << 20, REGION);
    let d = a.malloc(&mut mem, 100_000).unwrap();
    assert_eq!(d, REGION);
    let mut pages = Vec::new();
    loop {
        let (p, _) = a.malloc_catalog(&mut mem, PAGE).unwrap();
        pages.push(p);
        if p >= REGION {
            break;
        }
    }
    // 92 KiB of region hold 22 pages of span 4160; the next goes after the
    // data block, like any block.
    assert_eq!(pages.len(), 23);
    assert!(pages[..22].windows(2).all(|w| w[1] == w[0] + PAGE + ALIGN));
    assert!(*pages.last().unwrap() > d);
    a.check_invariants(&mem).unwrap();
    // Room made in the region is used again first: freed pages are cached
    // for catalog blocks of their span (data of that span keeps out) ...
    a.free(&mut mem, pages[7]).unwrap();
    a.free(&mut mem, pages[3]).unwrap();
    a.check_invariants(&mem).unwrap();
    assert!(a.malloc(&mut mem, PAGE).unwrap() > d);
    let mut again = [
        a.malloc_catalog(&mut mem, PAGE).unwrap().0,
        a.malloc_catalog(&mut mem, PAGE).unwrap().0,
    ];
    again.sort_unstable();
    assert_eq!(again, [pages[3], pages[7]]);
    // ... and once merged, free space is taken lowest address first.
    a.free(&mut mem, pages[7]).unwrap();
    a.free(&mut mem, pages[3]).unwrap();
    a.flush_cache(&mut mem).unwrap();
    a.check_invariants(&mem).unwrap();
    assert_eq!(a.malloc_catalog(&mut mem, 100).unwrap().0, pages[3]);
    assert_eq!(a.malloc_catalog(&mut mem, PAGE).unwrap().0, pages[7]);
    a.check_invariants(&mem).unwrap();
}

#[test]
fn data_uses_the_region_only_when_nothing_else_fits() {
    // An arena smaller than the region: it all is region, nothing changes.
    let (mut a, mut mem) = setup_region(64 * 1024, REGION);
    let p = a.malloc(&mut mem, 1000).unwrap();
    assert_eq!(p, 4096 + ALIGN);
    assert_eq!(
        a.malloc_catalog(&mut mem, 1000).unwrap().0,
        p + 1024 + ALIGN
    );
    a.check_invariants(&mem).unwrap();
    // Outside space too small for a request: the region is used rather
    // than none (the heap would grow otherwise).
    let (mut a, mut mem) = setup_region(REGION + 80 * 1024, REGION);
    let p = a.malloc(&mut mem, 100_000).unwrap();
    assert_eq!(p, 4096 + ALIGN);
    let q = a.malloc(&mut mem, 70_000).unwrap();
    assert!(q >= REGION, "{q}");
    a.check_invariants(&mem).unwrap();
}

#[test]
fn the_region_survives_a_rebuild() {
    let (mut a, mut mem) = setup_region(1 << 20, REGION);
    let d = a.malloc(&mut mem, 300_000).unwrap();
    let c: Vec<u64> = (0..4)
        .map(|_| a.malloc_catalog(&mut mem, PAGE).unwrap().0)
        .collect();
    // Reopen: the live set is the data block and catalog blocks 1 and 3
    // (0 and 2 were superseded); nothing of the region is stored.
    let live: Vec<(u64, u64)> = [d, c[1], c[3]]
        .iter()
        .map(|&p| (p, a.usable_size(&mem, p).unwrap()))
        .collect();
    let mut b = Allocator::with_key(a.key());
    b.add_arena_with_live(&mut mem, 4096, 1 << 20, &live)
        .unwrap();
    b.set_catalog_region(&mem, REGION);
    b.check_invariants(&mem).unwrap();
    assert_eq!(b.malloc_catalog(&mut mem, PAGE).unwrap().0, c[0]);
    assert_eq!(b.malloc_catalog(&mut mem, 100).unwrap().0, c[2]);
    // A large block keeps out of the gap left after c[3] in the region.
    let e = b.malloc(&mut mem, 70_000).unwrap();
    assert!(e >= REGION, "{e}");
    b.check_invariants(&mem).unwrap();
    // A heap whose region is taken by an old data block (written before
    // the rule): catalog blocks simply go elsewhere.
    let mut mem = VecMem::new(1 << 20);
    let mut old = Allocator::new();
    old.try_add_arena(&mut mem, 4096, 1 << 20).unwrap();
    let big = old.malloc(&mut mem, 500_000).unwrap();
    assert_eq!(big, 4096 + ALIGN);
    let cap = old.usable_size(&mem, big).unwrap();
    let mut b = Allocator::with_key(old.key());
    b.add_arena_with_live(&mut mem, 4096, 1 << 20, &[(big, cap)])
        .unwrap();
    b.set_catalog_region(&mem, REGION);
    let c = b.malloc_catalog(&mut mem, PAGE).unwrap().0;
    assert!(c > big + cap, "{c}");
    b.check_invariants(&mem).unwrap();
}

#[test]
fn a_corrupt_free_block_of_the_region_poisons() {
    let (mut a, mut mem) = setup_region(1 << 20, REGION);
    let c = a.malloc_catalog(&mut mem, 100).unwrap().0;
    a.malloc_catalog(&mut mem, 100).unwrap();
    a.free(&mut mem, c).unwrap();
    a.flush_cache(&mut mem).unwrap();
    a.check_invariants(&mem).unwrap();
    mem.store(c - HEADER, 8); // no longer a free block's header
    assert_eq!(a.malloc_catalog(&mut mem, 100), None);
    assert!(a.corruption().is_some());
    // A corrupt header met by the walk of `set_catalog_region` too.
    let (mut a, mut mem) = setup_region(1 << 20, 0);
    let c = a.malloc(&mut mem, 100).unwrap();
    a.malloc(&mut mem, 100).unwrap();
    mem.store(c - HEADER, 8);
    a.set_catalog_region(&mem, REGION);
    assert!(a.corruption().is_some());
}

#[test]
fn setting_the_region_late_finds_its_free_and_cached_blocks() {
    let (mut a, mut mem) = setup_region(1 << 20, 0);
    let ps: Vec<u64> = (0..6).map(|_| a.malloc(&mut mem, 100).unwrap()).collect();
    a.free(&mut mem, ps[1]).unwrap(); // cached
    a.free(&mut mem, ps[3]).unwrap(); // cached
    a.flush_cache(&mut mem).unwrap();
    a.free(&mut mem, ps[4]).unwrap(); // cached, merged with nothing
    a.set_catalog_region(&mem, REGION);
    a.check_invariants(&mem).unwrap();
    assert_eq!(a.malloc_catalog(&mut mem, 100).unwrap().0, ps[4]);
    assert_eq!(a.malloc_catalog(&mut mem, 100).unwrap().0, ps[1]);
    assert!(a.malloc(&mut mem, 100_000).unwrap() >= REGION);
    // Turned off: everything is ordinary again.
    a.set_catalog_region(&mem, 0);
    a.check_invariants(&mem).unwrap();
    assert_eq!(a.malloc(&mut mem, 100).unwrap(), ps[3]);
    a.check_invariants(&mem).unwrap();
}

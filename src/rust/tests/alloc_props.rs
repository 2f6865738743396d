//! Property tests of the allocator against a shadow model.
//!
//! Random sequences of malloc / free / resize (realloc) / rebuild-from-live /
//! add-arena / bogus-free steps run on a `VecMem`; a shadow model tracks every
//! live block (offset, requested size, pattern seed). After every step:
//! `check_invariants()`, every live block is aligned, inside an arena, has a
//! capacity >= its request and overlaps no other (header included), the
//! blocks the step touched still hold their pattern, and a new block reads
//! as zeros past the dirty prefix `malloc_dirty` reports; the whole heap's
//! patterns are checked every few steps and after each rebuild.
//!
//! A failure prints its seed; rerun one with
//! `RFMALLOC_PROP_SEED=0x... cargo test --test alloc_props`.
//! `RFMALLOC_PROP_CASES=n` changes the number of sequences per test.

use rfmalloc::alloc::{Allocator, Mem, VecMem, ALIGN, HEADER};
use rfmalloc::prng::Rng;

#[derive(Debug, Clone)]
struct Live {
    off: u64,
    size: u64,
    seed: u64,
}

/// Word `i` of the pattern of a block with seed `seed`.
fn pattern(seed: u64, i: u64) -> u64 {
    (seed ^ i.wrapping_mul(0xD6E8_FEB8_6659_FD93)).rotate_left((i % 63) as u32)
}

struct World {
    rng: Rng,
    mem: VecMem,
    alloc: Allocator,
    /// (start, end) of the arenas added so far; `room` is where the next goes.
    arenas: Vec<(u64, u64)>,
    room: u64,
    live: Vec<Live>,
    next_seed: u64,
    steps: u64,
    count: Counts,
}

/// How often each kind of step ran (printed, to show the tests bite).
#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    malloc: u64,
    full: u64,
    free: u64,
    resized_in_place: u64,
    moved: u64,
    rebuild: u64,
    bogus: u64,
    arenas: u64,
    /// Of `malloc`: `malloc_catalog` calls (a catalog region set).
    catalog: u64,
    /// Bytes handed out as fresh (known zeros, not written).
    fresh_bytes: u64,
}

impl Counts {
    fn add(&mut self, o: Counts) {
        self.malloc += o.malloc;
        self.full += o.full;
        self.free += o.free;
        self.resized_in_place += o.resized_in_place;
        self.moved += o.moved;
        self.rebuild += o.rebuild;
        self.bogus += o.bogus;
        self.arenas += o.arenas;
        self.catalog += o.catalog;
        self.fresh_bytes += o.fresh_bytes;
    }
}

const MEM_BYTES: u64 = 1 << 20;

impl World {
    fn new(seed: u64) -> Self {
        let mut w = World {
            rng: Rng::from_seed(seed),
            mem: VecMem::new(MEM_BYTES),
            alloc: Allocator::new(),
            arenas: Vec::new(),
            room: 0,
            live: Vec::new(),
            next_seed: seed,
            steps: 0,
            count: Counts::default(),
        };
        let n = 1 + w.rng.below(2);
        for _ in 0..n {
            w.add_arena();
        }
        // Half the sequences keep a catalog region (placement only: every
        // property holds either way).
        if w.rng.chance(50) {
            let end = ALIGN * w.rng.below(w.room / ALIGN + 64);
            w.alloc.set_catalog_region(&w.mem, end);
        }
        w
    }

    /// Adds an arena of random size (sometimes with a gap before it).
    fn add_arena(&mut self) -> bool {
        let gap = if self.rng.chance(50) {
            0
        } else {
            ALIGN * self.rng.below(4)
        };
        let max_units = if self.rng.chance(70) { 200 } else { 4000 };
        let len = ALIGN * (2 + self.rng.below(max_units));
        let start = self.room + gap;
        let end = start + len;
        if end > MEM_BYTES {
            return false;
        }
        self.alloc.try_add_arena(&mut self.mem, start, end).unwrap();
        self.arenas.push((start, end));
        self.room = end;
        self.count.arenas += 1;
        true
    }

    fn random_size(&mut self) -> u64 {
        match self.rng.below(100) {
            0..=59 => self.rng.below(129),
            60..=89 => self.rng.below(2049),
            90..=97 => self.rng.below(32 << 10),
            _ => self.rng.below(256 << 10),
        }
    }

    fn fill(&mut self, b: &Live) {
        let cap = self.alloc.usable_size(&self.mem, b.off).unwrap();
        // The whole capacity belongs to the block: write all of it.
        for i in 0..cap / 8 {
            self.mem.store(b.off + 8 * i, pattern(b.seed, i));
        }
    }

    /// The first `bytes` of block `b` hold its pattern.
    fn verify(&self, b: &Live, bytes: u64) -> Result<(), String> {
        for i in 0..bytes / 8 {
            let got = self.mem.load(b.off + 8 * i);
            if got != pattern(b.seed, i) {
                return Err(format!(
                    "block {} (size {}): word {i} is {got:#x}, pattern lost",
                    b.off, b.size
                ));
            }
        }
        Ok(())
    }

    fn verify_all(&self) -> Result<(), String> {
        for b in &self.live {
            let cap = self.alloc.usable_size(&self.mem, b.off)?;
            self.verify(b, cap)?;
        }
        Ok(())
    }

    /// Structural checks of the live set against the arenas.
    fn check_model(&self) -> Result<(), String> {
        self.alloc.check_invariants(&self.mem)?;
        let mut spans: Vec<(u64, u64)> = Vec::with_capacity(self.live.len());
        for b in &self.live {
            if b.off % ALIGN != 0 {
                return Err(format!("block {} misaligned", b.off));
            }
            let cap = self.alloc.usable_size(&self.mem, b.off)?;
            if cap < b.size {
                return Err(format!("block {}: capacity {cap} < size {}", b.off, b.size));
            }
            let (lo, hi) = (b.off - HEADER, b.off + cap);
            if !self.arenas.iter().any(|&(s, e)| lo >= s && hi <= e) {
                return Err(format!("block {} [{lo}, {hi}) not inside one arena", b.off));
            }
            spans.push((lo, hi));
        }
        spans.sort_unstable();
        for w in spans.windows(2) {
            if w[0].1 > w[1].0 {
                return Err(format!("blocks overlap: {:?} and {:?}", w[0], w[1]));
            }
        }
        let st = self.alloc.stats();
        if st.used_blocks != self.live.len() as u64 {
            return Err(format!(
                "{} used blocks, model has {}",
                st.used_blocks,
                self.live.len()
            ));
        }
        let used: Vec<u64> = {
            let mut v: Vec<u64> = self
                .alloc
                .blocks(&self.mem)
                .into_iter()
                .filter(|b| b.2)
                .map(|b| b.0)
                .collect();
            v.sort_unstable();
            v
        };
        let mut model: Vec<u64> = self.live.iter().map(|b| b.off).collect();
        model.sort_unstable();
        if used != model {
            return Err("used blocks differ from the model".into());
        }
        Ok(())
    }

    fn step(&mut self) -> Result<(), String> {
        self.steps += 1;
        let r = self.rng.below(100);
        match r {
            0..=44 => {
                let size = self.random_size();
                let got = if self.alloc.catalog_region() > 0 && self.rng.chance(30) {
                    self.count.catalog += 1;
                    self.alloc.malloc_catalog(&mut self.mem, size)
                } else {
                    self.alloc.malloc_dirty(&mut self.mem, size)
                };
                match got {
                    Some((off, dirty)) => {
                        // Past its dirty prefix a new block reads as zeros
                        // (every block handed out is filled with a
                        // non-zero pattern, so stale bytes would show).
                        let cap = self.alloc.usable_size(&self.mem, off)?;
                        if dirty > cap {
                            return Err(format!("block {off}: dirty {dirty} > capacity {cap}"));
                        }
                        let first = dirty.div_ceil(8) * 8;
                        for o in (off + first..off + cap).step_by(8) {
                            if self.mem.load(o) != 0 {
                                return Err(format!(
                                    "block {off} (dirty prefix {dirty} of {cap}): word at {o} is not zero"
                                ));
                            }
                        }
                        self.count.fresh_bytes += cap - dirty.min(cap);
                        self.next_seed = self.next_seed.wrapping_add(0x1234_5679);
                        let b = Live {
                            off,
                            size,
                            seed: self.next_seed,
                        };
                        self.fill(&b);
                        self.live.push(b);
                        self.count.malloc += 1;
                    }
                    None => {
                        self.count.full += 1;
                        // Full: must really be no free block large enough.
                        let need = (size + HEADER).div_ceil(ALIGN) * ALIGN;
                        let biggest = self
                            .alloc
                            .blocks(&self.mem)
                            .into_iter()
                            .filter(|b| !b.2)
                            .map(|b| b.1 + HEADER)
                            .max()
                            .unwrap_or(0);
                        // A good-fit allocator may miss a block of the
                        // request's own class (classes are 1/16 wide); it
                        // must never miss one from a larger class.
                        if biggest >= need + need / 16 + ALIGN {
                            return Err(format!(
                                "malloc({size}) failed with a free block of {biggest}"
                            ));
                        }
                        if self.rng.chance(50) {
                            self.add_arena();
                        }
                    }
                }
            }
            45..=74 => {
                if self.live.is_empty() {
                    return Ok(());
                }
                let i = self.rng.below(self.live.len() as u64) as usize;
                let b = self.live.swap_remove(i);
                let cap = self.alloc.usable_size(&self.mem, b.off)?;
                self.verify(&b, cap)?;
                self.alloc.free(&mut self.mem, b.off)?;
                self.count.free += 1;
                if self.alloc.free(&mut self.mem, b.off).is_ok() {
                    return Err(format!("double free of {} accepted", b.off));
                }
            }
            75..=89 => {
                if self.live.is_empty() {
                    return Ok(());
                }
                let i = self.rng.below(self.live.len() as u64) as usize;
                let b = self.live[i].clone();
                let new_size = if self.rng.chance(50) {
                    self.rng.below(b.size + 1)
                } else {
                    b.size + self.random_size()
                };
                let old_cap = self.alloc.usable_size(&self.mem, b.off)?;
                if self.alloc.resize_in_place(&mut self.mem, b.off, new_size)? {
                    let cap = self.alloc.usable_size(&self.mem, b.off)?;
                    if cap < new_size {
                        return Err(format!("resize to {new_size} gave capacity {cap}"));
                    }
                    self.verify(&b, old_cap.min(cap))?;
                    self.live[i].size = new_size;
                    self.count.resized_in_place += 1;
                    self.fill(&self.live[i].clone());
                } else {
                    // realloc by hand: allocate, copy, free.
                    if new_size <= old_cap {
                        return Err(format!("shrink of {} to {new_size} refused", b.off));
                    }
                    if let Some(n) = self.alloc.malloc(&mut self.mem, new_size) {
                        for k in 0..old_cap / 8 {
                            let v = self.mem.load(b.off + 8 * k);
                            self.mem.store(n + 8 * k, v);
                        }
                        self.alloc.free(&mut self.mem, b.off)?;
                        let nb = Live {
                            off: n,
                            size: new_size,
                            seed: b.seed,
                        };
                        self.verify(&nb, old_cap)?;
                        self.fill(&nb);
                        self.live[i] = nb;
                        self.count.moved += 1;
                    }
                }
            }
            90..=93 => self.rebuild()?,
            94..=97 => self.bogus()?,
            _ => {
                self.add_arena();
            }
        }
        self.check_model()?;
        if self.steps.is_multiple_of(16) {
            self.verify_all()?;
        }
        Ok(())
    }

    /// A new allocator rebuilt from the live set must see the same blocks.
    fn rebuild(&mut self) -> Result<(), String> {
        self.count.rebuild += 1;
        // A rebuild merges all free space; so does giving the cache of
        // freed small blocks back to the free lists.
        self.alloc.flush_cache(&mut self.mem)?;
        let before = self.alloc.blocks(&self.mem);
        let stats = self.alloc.stats();
        let mut fresh = Allocator::new();
        // Rebuild from the requested sizes or the capacities, at random.
        let use_cap = self.rng.chance(50);
        for &(s, e) in &self.arenas {
            let live: Vec<(u64, u64)> = self
                .live
                .iter()
                .filter(|b| b.off > s && b.off < e)
                .map(|b| {
                    let cap = self.alloc.usable_size(&self.mem, b.off).unwrap_or(0);
                    (b.off, if use_cap { cap } else { b.size })
                })
                .collect();
            fresh.add_arena_with_live(&mut self.mem, s, e, &live)?;
        }
        fresh.set_catalog_region(&self.mem, self.alloc.catalog_region());
        self.alloc = fresh;
        // A block's span is always exactly that of its last requested size,
        // so sizes and capacities rebuild the same layout.
        if self.alloc.blocks(&self.mem) != before {
            return Err(format!(
                "rebuild (from capacities: {use_cap}) changed the block layout"
            ));
        }
        if self.alloc.stats() != stats {
            return Err("rebuild changed the stats".into());
        }
        self.verify_all()
    }

    /// Offsets that are not live payloads are refused and change nothing.
    fn bogus(&mut self) -> Result<(), String> {
        self.count.bogus += 1;
        let stats = self.alloc.stats();
        for _ in 0..4 {
            let off = match self.rng.below(4) {
                0 => self.rng.next_u64(),
                1 => ALIGN * self.rng.below(MEM_BYTES / ALIGN + 8),
                2 => self.rng.below(MEM_BYTES),
                _ => match self.live.first() {
                    Some(b) => b.off + ALIGN * (1 + self.rng.below(4)),
                    None => 0,
                },
            };
            if self.live.iter().any(|b| b.off == off) {
                continue;
            }
            if self.alloc.free(&mut self.mem, off).is_ok() {
                return Err(format!("free of bogus offset {off} accepted"));
            }
            if self.alloc.usable_size(&self.mem, off).is_ok() {
                return Err(format!("usable_size of bogus offset {off} accepted"));
            }
            if self.alloc.resize_in_place(&mut self.mem, off, 8).is_ok() {
                return Err(format!("resize of bogus offset {off} accepted"));
            }
        }
        if self.alloc.stats() != stats {
            return Err("bogus calls changed the stats".into());
        }
        Ok(())
    }

    /// Frees everything; the heap must be back to one free block per arena.
    fn drain(&mut self) -> Result<(), String> {
        while let Some(b) = self.live.pop() {
            self.alloc.free(&mut self.mem, b.off)?;
        }
        self.alloc.check_invariants(&self.mem)?;
        self.alloc.flush_cache(&mut self.mem)?;
        self.alloc.check_invariants(&self.mem)?;
        let st = self.alloc.stats();
        if st.free_blocks != self.arenas.len() as u64 || st.used_bytes != 0 {
            return Err(format!("after freeing all: {st:?}"));
        }
        Ok(())
    }
}

fn run_sequence(seed: u64, steps: u64) -> Result<(u64, Counts), String> {
    let mut w = World::new(seed);
    for _ in 0..steps {
        w.step().map_err(|e| format!("step {}: {e}", w.steps))?;
    }
    w.verify_all()?;
    w.drain()?;
    Ok((w.steps, w.count))
}

fn cases(default: u64) -> u64 {
    std::env::var("RFMALLOC_PROP_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Runs `n` sequences of `steps` steps; panics with the failing seed.
fn run_many(base: u64, n: u64, steps: u64) {
    if let Ok(s) = std::env::var("RFMALLOC_PROP_SEED") {
        let seed = u64::from_str_radix(s.trim_start_matches("0x"), 16).expect("hex seed");
        run_sequence(seed, steps).unwrap_or_else(|e| panic!("seed {seed:#x}: {e}"));
        return;
    }
    let mut total = 0;
    let mut counts = Counts::default();
    for i in 0..n {
        let seed = base ^ i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let r = std::panic::catch_unwind(|| run_sequence(seed, steps));
        match r {
            Ok(Ok((k, c))) => {
                total += k;
                counts.add(c);
            }
            Ok(Err(e)) => panic!("seed {seed:#x} failed: {e}"),
            Err(_) => panic!("seed {seed:#x} panicked (see above)"),
        }
    }
    println!("alloc_props: {n} sequences, {total} steps: {counts:?}");
}

#[test]
fn short_sequences() {
    run_many(0xA110C, cases(3000), 60);
}

#[test]
fn long_sequences() {
    run_many(0xB10C5, cases(100), 500);
}

/// Random, often invalid live sets: `add_arena_with_live` either rejects the
/// set and changes nothing, or accepts it and then every given block is live
/// with at least the given capacity and the invariants hold. Never a panic.
#[test]
fn rebuild_from_random_live_sets() {
    let n = cases(3000);
    let mut accepted = 0;
    for i in 0..n {
        let seed = 0x11FE ^ i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let mut rng = Rng::from_seed(seed);
        let start = ALIGN * rng.below(4);
        let end = start + ALIGN * (2 + rng.below(300));
        let mut mem = VecMem::new(end + 4096);
        let count = rng.below(12) as usize;
        let mut live = Vec::with_capacity(count);
        let mut cursor = start + ALIGN;
        for _ in 0..count {
            // Mostly plausible blocks laid out in order, with random faults.
            let (p, cap) = match rng.below(10) {
                0 => {
                    live.push((rng.next_u64(), rng.next_u64()));
                    continue;
                }
                1 => (cursor + rng.below(200), rng.below(500)),
                2 => (cursor.saturating_sub(ALIGN), rng.below(200)),
                _ => (cursor + ALIGN * rng.below(3), rng.below(300)),
            };
            live.push((p, cap));
            cursor = p + (cap + HEADER).div_ceil(ALIGN) * ALIGN;
        }
        // Shuffle: the allocator must not rely on the order.
        for k in (1..live.len()).rev() {
            live.swap(k, rng.below(k as u64 + 1) as usize);
        }
        let mut a = Allocator::new();
        match a.add_arena_with_live(&mut mem, start, end, &live) {
            Ok(()) => {
                accepted += 1;
                a.check_invariants(&mem)
                    .unwrap_or_else(|e| panic!("seed {seed:#x}: {e}"));
                for &(p, cap) in &live {
                    let u = a
                        .usable_size(&mem, p)
                        .unwrap_or_else(|e| panic!("seed {seed:#x}: {e}"));
                    assert!(u >= cap, "seed {seed:#x}");
                }
                assert_eq!(a.stats().used_blocks, live.len() as u64);
            }
            Err(_) => {
                assert_eq!(a.arena_count(), 0, "seed {seed:#x}");
                assert_eq!(a.stats(), Default::default(), "seed {seed:#x}");
                assert!(mem.is_zero(), "seed {seed:#x}: a rejected set wrote memory");
            }
        }
    }
    println!("rebuild_from_random_live_sets: {n} sets, {accepted} accepted");
    assert!(
        accepted > n / 10 && accepted < n * 9 / 10,
        "{accepted} of {n}"
    );
}

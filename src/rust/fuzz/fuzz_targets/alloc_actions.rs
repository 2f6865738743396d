//! Fuzzes the allocator with arbitrary action sequences against a shadow
//! model: every live block is aligned, inside its arena, disjoint from the
//! others, at least as large as requested, and keeps the bytes written into
//! it; `check_invariants()` holds after every action; offsets that are not
//! live blocks are refused; rebuilding from the live set gives the same heap.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use rfmalloc::alloc::{Allocator, Mem, VecMem, ALIGN, HEADER};

const MEM_BYTES: u64 = 4 << 20;

#[derive(Arbitrary, Debug)]
enum Action {
    Malloc(u16),
    MallocLarge(u32),
    Free(u16),
    Resize(u16, u32),
    Rebuild { from_capacity: bool },
    FreeBogus(u64),
    AddArena(u16),
}

#[derive(Arbitrary, Debug)]
struct Input {
    first_arena_units: u16,
    actions: Vec<Action>,
}

struct Live {
    off: u64,
    size: u64,
    seed: u64,
}

/// Checked words per block (keeps each action cheap).
const CHECKED_WORDS: u64 = 32;

fn pattern(seed: u64, i: u64) -> u64 {
    (seed ^ i.wrapping_mul(0xD6E8_FEB8_6659_FD93)).rotate_left((i % 63) as u32)
}

struct World {
    mem: VecMem,
    alloc: Allocator,
    arenas: Vec<(u64, u64)>,
    room: u64,
    live: Vec<Live>,
    seed: u64,
}

impl World {
    fn add_arena(&mut self, units: u16) {
        let start = self.room;
        let end = start + ALIGN * (2 + u64::from(units));
        if end <= MEM_BYTES {
            self.alloc.try_add_arena(&mut self.mem, start, end).unwrap();
            self.arenas.push((start, end));
            self.room = end;
        }
    }

    fn fill(&mut self, b: &Live) {
        let cap = self.alloc.usable_size(&self.mem, b.off).unwrap();
        for i in 0..(cap / 8).min(CHECKED_WORDS) {
            self.mem.store(b.off + 8 * i, pattern(b.seed, i));
        }
        // The last word of the capacity is the block's too.
        if cap / 8 > CHECKED_WORDS {
            self.mem
                .store(b.off + cap / 8 * 8 - 8, pattern(b.seed, u64::MAX));
        }
    }

    fn verify(&self, b: &Live, cap: u64) {
        for i in 0..(cap / 8).min(CHECKED_WORDS) {
            assert_eq!(
                self.mem.load(b.off + 8 * i),
                pattern(b.seed, i),
                "block {}",
                b.off
            );
        }
    }

    fn malloc(&mut self, size: u64) {
        if let Some(off) = self.alloc.malloc(&mut self.mem, size) {
            self.seed += 1;
            let b = Live {
                off,
                size,
                seed: self.seed,
            };
            self.fill(&b);
            self.live.push(b);
        }
    }

    fn check(&self) {
        self.alloc.check_invariants(&self.mem).unwrap();
        let mut spans = Vec::new();
        for b in &self.live {
            assert_eq!(b.off % ALIGN, 0);
            let cap = self.alloc.usable_size(&self.mem, b.off).unwrap();
            assert!(cap >= b.size);
            let (lo, hi) = (b.off - HEADER, b.off + cap);
            assert!(self.arenas.iter().any(|&(s, e)| lo >= s && hi <= e));
            spans.push((lo, hi));
        }
        spans.sort_unstable();
        for w in spans.windows(2) {
            assert!(w[0].1 <= w[1].0, "overlap {:?}", w);
        }
        assert_eq!(self.alloc.stats().used_blocks, self.live.len() as u64);
    }
}

fuzz_target!(|input: Input| {
    let mut w = World {
        mem: VecMem::new(MEM_BYTES),
        alloc: Allocator::new(),
        arenas: Vec::new(),
        room: 0,
        live: Vec::new(),
        seed: 0,
    };
    w.add_arena(input.first_arena_units);
    for action in input.actions {
        match action {
            Action::Malloc(size) => w.malloc(u64::from(size)),
            Action::MallocLarge(size) => w.malloc(u64::from(size) << 4),
            Action::Free(i) => {
                if !w.live.is_empty() {
                    let b = w.live.swap_remove(usize::from(i) % w.live.len());
                    let cap = w.alloc.usable_size(&w.mem, b.off).unwrap();
                    w.verify(&b, cap);
                    w.alloc.free(&mut w.mem, b.off).unwrap();
                    assert!(w.alloc.free(&mut w.mem, b.off).is_err(), "double free");
                }
            }
            Action::Resize(i, size) => {
                if !w.live.is_empty() {
                    let i = usize::from(i) % w.live.len();
                    let off = w.live[i].off;
                    let size = u64::from(size);
                    let old_cap = w.alloc.usable_size(&w.mem, off).unwrap();
                    if w.alloc.resize_in_place(&mut w.mem, off, size).unwrap() {
                        let cap = w.alloc.usable_size(&w.mem, off).unwrap();
                        assert!(cap >= size);
                        w.verify(&w.live[i], old_cap.min(cap));
                        w.live[i].size = size;
                        let b = Live {
                            off,
                            size,
                            seed: w.live[i].seed,
                        };
                        w.fill(&b);
                    } else {
                        assert!(size > old_cap, "shrink refused");
                    }
                }
            }
            Action::Rebuild { from_capacity } => {
                let before = w.alloc.blocks(&w.mem);
                let stats = w.alloc.stats();
                let mut fresh = Allocator::new();
                for &(s, e) in &w.arenas {
                    let live: Vec<(u64, u64)> = w
                        .live
                        .iter()
                        .filter(|b| b.off > s && b.off < e)
                        .map(|b| {
                            let cap = w.alloc.usable_size(&w.mem, b.off).unwrap();
                            (b.off, if from_capacity { cap } else { b.size })
                        })
                        .collect();
                    fresh.add_arena_with_live(&mut w.mem, s, e, &live).unwrap();
                }
                w.alloc = fresh;
                assert_eq!(w.alloc.blocks(&w.mem), before);
                assert_eq!(w.alloc.stats(), stats);
            }
            Action::FreeBogus(off) => {
                let off = off % (MEM_BYTES + 4096);
                if !w.live.iter().any(|b| b.off == off) {
                    let stats = w.alloc.stats();
                    assert!(w.alloc.free(&mut w.mem, off).is_err());
                    assert!(w.alloc.usable_size(&w.mem, off).is_err());
                    assert!(w.alloc.resize_in_place(&mut w.mem, off, 1).is_err());
                    assert_eq!(w.alloc.stats(), stats);
                }
            }
            Action::AddArena(units) => w.add_arena(units),
        }
        w.check();
    }
    for b in std::mem::take(&mut w.live) {
        w.alloc.free(&mut w.mem, b.off).unwrap();
    }
    w.alloc.check_invariants(&w.mem).unwrap();
    assert_eq!(w.alloc.stats().free_blocks, w.arenas.len() as u64);
});

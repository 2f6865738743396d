//! Allocator benchmark: the same pseudo-random trace against the system
//! malloc (libc malloc/free/realloc) and the heap file.
//!
//! `cargo run --release --bin alloc_bench [-- --quick]`
//!
//! For each size range (small 16 B-4 KiB, medium 4-64 KiB, large 64 KiB-4 MiB)
//! the phases are: alloc N blocks, free half of them, realloc the other half
//! to new sizes, refill N/2 blocks, free all. Every side writes the first 8
//! bytes of every block it hands out (and a realloc that moves copies the old
//! bytes), so they touch the same memory. Printed: ns per operation and the
//! ratio heap / system (< 1: the heap is faster).
//!
//! Two heap sides: "heap" is `alloc::Allocator` over a `map::Mapping` of a
//! new sparse file, reserving disk space for each block through
//! `Mapping::reserve_block` exactly as the heap does (the allocator plus the
//! kernel's cost of new file pages); "Heap" is the public `heap::Heap` API as
//! the R layer calls it (malloc, ptr, realloc, release: adds the lock and the
//! reference table).
//!
//! "fresh": a new heap file; for the system side, the first run of that trace
//! in this process. "warm": a new allocator over a file whose pages are
//! already in memory (the allocator's own cost). "reused": the trace runs a
//! second time on the same heap (or process heap) after everything was freed.
//! `RFMALLOC_BENCH_DIR` chooses where the heap files go (default: the system
//! temp directory); `RFMALLOC_BENCH_RUNS` the number of runs (median, each in
//! a new process); `RFMALLOC_BENCH_RANGES=0,1` runs only small and medium.

use std::fs::OpenOptions;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::Instant;

use rfmalloc::alloc::{Allocator, Mem};
use rfmalloc::heap::{Heap, OpenOptions as HeapOptions};
use rfmalloc::map::Mapping;
use rfmalloc::prng::Rng;

/// Where the benchmark's heap files go.
fn bench_path(tag: &str) -> PathBuf {
    let dir = std::env::var_os("RFMALLOC_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    dir.join(format!("rfmalloc-bench-{}-{tag}.heap", std::process::id()))
}

/// What a trace runs against. Blocks are named by a `u64` handle (an
/// address for the system malloc, a file offset for the heaps).
trait Side {
    fn malloc(&mut self, size: u64) -> u64;
    fn free(&mut self, h: u64);
    /// Resizes a live block of `old` bytes to `new`; may move it (keeping
    /// the first `min(old, new)` bytes).
    fn realloc(&mut self, h: u64, old: u64, new: u64) -> u64;
    /// Writes the first 8 bytes of a live block.
    fn touch(&mut self, h: u64, v: u64);
}

/// libc malloc / free / realloc.
struct System;

impl Side for System {
    #[inline(always)]
    fn malloc(&mut self, size: u64) -> u64 {
        // SAFETY: plain libc malloc; the result is checked before use.
        let p = unsafe { libc::malloc(size as usize) };
        assert!(!p.is_null());
        p as u64
    }
    #[inline(always)]
    fn free(&mut self, h: u64) {
        // SAFETY: `h` came from malloc/realloc and is freed once.
        unsafe { libc::free(h as *mut libc::c_void) }
    }
    #[inline(always)]
    fn realloc(&mut self, h: u64, _old: u64, new: u64) -> u64 {
        // SAFETY: `h` is live; realloc keeps the old bytes.
        let q = unsafe { libc::realloc(h as *mut libc::c_void, new as usize) };
        assert!(!q.is_null());
        q as u64
    }
    #[inline(always)]
    fn touch(&mut self, h: u64, v: u64) {
        // SAFETY: every block holds at least 16 bytes.
        unsafe { (h as *mut u64).write(v) }
    }
}

/// The allocator over a heap file mapped by `map::Mapping`, reserving disk
/// space for every block it hands out through `Mapping::reserve_block`, as
/// the heap does (allocator headers through `Mem::store`): the allocator's
/// cost plus the kernel's, without the heap's reference table and lock.
struct FileHeap {
    map: Mapping,
    path: PathBuf,
    alloc: Allocator,
}

impl FileHeap {
    fn new(len: u64) -> FileHeap {
        let path = bench_path("alloc");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .expect("create the heap file");
        rfmalloc::map::make_sparse(&file);
        file.set_len(len).expect("size the heap file");
        let mut map = Mapping::open_rw(file, len).expect("map the heap file");
        let mut alloc = Allocator::new();
        alloc
            .try_add_arena(&mut map, 4096, len)
            .expect("arena over the file");
        FileHeap { map, path, alloc }
    }

    fn addr(&self, off: u64, len: u64) -> *mut u8 {
        self.map.addr(off, len).expect("a mapped block")
    }

    fn reserved(&mut self, off: u64) -> u64 {
        let cap = self.alloc.usable_size(&self.map, off).expect("live block");
        self.map.reserve_block(off, cap).expect("disk space");
        off
    }
}

impl Side for FileHeap {
    #[inline(always)]
    fn malloc(&mut self, size: u64) -> u64 {
        let off = self
            .alloc
            .malloc(&mut self.map, size)
            .expect("heap large enough");
        self.reserved(off)
    }
    #[inline(always)]
    fn free(&mut self, h: u64) {
        self.alloc.free(&mut self.map, h).expect("live block");
    }
    fn realloc(&mut self, h: u64, old: u64, new: u64) -> u64 {
        if self
            .alloc
            .resize_in_place(&mut self.map, h, new)
            .expect("live block")
        {
            return self.reserved(h);
        }
        let q = self.malloc(new);
        let keep = old.min(new);
        // SAFETY: both blocks are live, disjoint, and hold at least `keep`
        // bytes inside the mapping (checked by `addr`).
        unsafe {
            std::ptr::copy_nonoverlapping(self.addr(h, keep), self.addr(q, keep), keep as usize)
        };
        self.free(h);
        q
    }
    #[inline(always)]
    fn touch(&mut self, h: u64, v: u64) {
        self.map.store(h, v);
    }
}

impl Drop for FileHeap {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The public `Heap` API, as the R layer calls it: malloc, realloc,
/// release, and `ptr` to write.
struct ApiHeap {
    heap: Option<Heap>,
    path: PathBuf,
}

impl ApiHeap {
    fn new(len: u64) -> ApiHeap {
        let path = bench_path("api");
        let _ = std::fs::remove_file(&path);
        let opts = HeapOptions {
            readonly: false,
            initial_size: Some(len),
            ..Default::default()
        };
        let (heap, _) = Heap::open(Path::new(&path), &opts).expect("open the heap");
        ApiHeap {
            heap: Some(heap),
            path,
        }
    }
    fn heap(&self) -> &Heap {
        self.heap.as_ref().expect("open heap")
    }
}

impl Side for ApiHeap {
    #[inline(always)]
    fn malloc(&mut self, size: u64) -> u64 {
        self.heap().malloc(size).expect("heap malloc")
    }
    #[inline(always)]
    fn free(&mut self, h: u64) {
        self.heap().release(h).expect("heap release");
    }
    #[inline(always)]
    fn realloc(&mut self, h: u64, _old: u64, new: u64) -> u64 {
        self.heap().realloc(h, new).expect("heap realloc")
    }
    #[inline(always)]
    fn touch(&mut self, h: u64, v: u64) {
        let p = self.heap().ptr(h, 8).expect("heap ptr");
        // SAFETY: `ptr` checked that the 8 bytes are inside the mapping.
        unsafe { p.as_ptr().cast::<u64>().write_unaligned(v) }
    }
}

impl Drop for ApiHeap {
    fn drop(&mut self) {
        drop(self.heap.take());
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A trace: sizes of the first allocations, which half is freed, new sizes
/// for the realloc phase, sizes of the refill.
struct Trace {
    alloc: Vec<u64>,
    freed: Vec<bool>,
    realloc: Vec<u64>,
    refill: Vec<u64>,
}

impl Trace {
    fn new(seed: u64, n: usize, lo: u64, hi: u64) -> Trace {
        let mut rng = Rng::new(seed | 1);
        let alloc = (0..n).map(|_| rng.range(lo, hi)).collect();
        let freed = (0..n).map(|_| rng.next_u64() & 1 == 0).collect();
        let realloc = (0..n).map(|_| rng.range(lo, hi)).collect();
        let refill = (0..n / 2).map(|_| rng.range(lo, hi)).collect();
        Trace {
            alloc,
            freed,
            realloc,
            refill,
        }
    }
}

const PHASES: [&str; 5] = ["alloc", "free half", "realloc", "refill", "free all"];

/// ns/op and page faults per 1000 ops of each phase.
type Timings = [(f64, f64); 5];

/// Start of a timed phase: the clock and the minor+major page faults so far.
struct Mark(Instant, i64);

#[cfg(unix)]
fn page_faults() -> i64 {
    // SAFETY: getrusage fills the zeroed struct it is given.
    unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        ru.ru_minflt + ru.ru_majflt
    }
}

/// Not counted on Windows (no `getrusage`): the faults column reads 0 there,
/// the timings are measured as everywhere.
#[cfg(not(unix))]
fn page_faults() -> i64 {
    0
}

fn mark() -> Mark {
    Mark(Instant::now(), page_faults())
}

fn per_op(m: Mark, ops: usize) -> (f64, f64) {
    let ns = m.0.elapsed().as_nanos() as f64;
    let faults = (page_faults() - m.1) as f64;
    let ops = ops.max(1) as f64;
    (ns / ops, 1000.0 * faults / ops)
}

/// Runs the trace; returns the timings and the high-water mark of the
/// handles plus sizes (meaningful for the file heaps).
#[inline(never)]
fn run<S: Side>(side: &mut S, tr: &Trace) -> (Timings, u64) {
    let mut out = [(0.0, 0.0); 5];
    let n = tr.alloc.len();
    let mut hs: Vec<u64> = Vec::with_capacity(n + tr.refill.len());
    let mut sizes: Vec<u64> = tr.alloc.clone();
    let mut hwm = 0;

    let t = mark();
    for (i, &s) in tr.alloc.iter().enumerate() {
        let h = side.malloc(s);
        side.touch(h, i as u64);
        hwm = hwm.max(h + s);
        hs.push(h);
    }
    out[0] = per_op(t, n);

    let t = mark();
    let mut freed = 0;
    for (h, &f) in hs.iter_mut().zip(&tr.freed) {
        if f {
            side.free(*h);
            *h = 0;
            freed += 1;
        }
    }
    out[1] = per_op(t, freed);

    let t = mark();
    let mut reallocs = 0;
    for ((h, &s), size) in hs.iter_mut().zip(&tr.realloc).zip(sizes.iter_mut()) {
        if *h != 0 {
            *h = side.realloc(*h, *size, s);
            side.touch(*h, s);
            hwm = hwm.max(*h + s);
            *size = s;
            reallocs += 1;
        }
    }
    out[2] = per_op(t, reallocs);

    let t = mark();
    for (i, &s) in tr.refill.iter().enumerate() {
        let h = side.malloc(s);
        side.touch(h, i as u64);
        hwm = hwm.max(h + s);
        hs.push(h);
    }
    out[3] = per_op(t, tr.refill.len());

    let t = mark();
    let mut live = 0;
    for &h in &hs {
        if h != 0 {
            side.free(h);
            live += 1;
        }
    }
    out[4] = per_op(t, live);
    black_box(&sizes);
    (out, hwm)
}

/// Touches and releases `bytes` of anonymous memory, so that neither side
/// pays for the virtual machine's first touch of physical memory.
fn warm_up_memory(bytes: usize) {
    let mut v = vec![0u8; bytes];
    for i in (0..bytes).step_by(4096) {
        v[i] = 1;
    }
    black_box(&v);
}

/// The variants a child measures, in output order.
const VARIANTS: [&str; 7] = [
    "sys fresh",
    "sys reused",
    "heap cold",
    "heap warm",
    "heap reused",
    "Heap cold",
    "Heap reused",
];

/// Size ranges: name, smallest and largest request, trace length.
const RANGES: [(&str, u64, u64, usize); 3] = [
    ("small 16B-4KiB", 16, 4 << 10, 200_000),
    ("medium 4-64KiB", 4 << 10, 64 << 10, 20_000),
    ("large 64KiB-4MiB", 64 << 10, 4 << 20, 500),
];

/// Measures one size range in this (fresh) process and prints
/// `variant phase ns_per_op faults_per_kop` lines.
fn child(k: usize, scale: usize) {
    let (_, lo, hi, n) = RANGES[k];
    let n = n / scale;
    warm_up_memory(1 << 30);
    let tr = Trace::new(0x5EED + k as u64, n, lo, hi);
    let (sys_fresh, _) = run(&mut System, &tr);
    let (sys_reused, _) = run(&mut System, &tr);
    // Room for the alloc phase, the refill and moved reallocs.
    let heap_len = (3 * n as u64 * (hi + 64)).next_multiple_of(1 << 20);
    let mut heap = FileHeap::new(heap_len);
    let (heap_cold, hwm) = run(&mut heap, &tr);
    let (heap_reused, _) = run(&mut heap, &tr);
    if let Err(e) = heap.alloc.check_invariants(&heap.map) {
        panic!("invariants broken after the bench: {e}");
    }
    drop(heap);
    // The same fresh allocator over a file whose pages are already in
    // memory: the allocator's own cost, without the kernel's first touch.
    let mut heap = FileHeap::new(heap_len);
    let warm = hwm.min(heap_len);
    heap.map.reserve(0, warm).expect("disk space");
    for off in (0..warm).step_by(4096) {
        heap.map.store(off, 0);
    }
    let (heap_warm, _) = run(&mut heap, &tr);
    drop(heap);
    // The whole public heap API (lock, reference table, reservation).
    let mut api = ApiHeap::new(heap_len);
    let (api_cold, _) = run(&mut api, &tr);
    let (api_reused, _) = run(&mut api, &tr);
    api.heap().check_invariants().expect("heap invariants");
    drop(api);
    for (v, t) in [
        sys_fresh,
        sys_reused,
        heap_cold,
        heap_warm,
        heap_reused,
        api_cold,
        api_reused,
    ]
    .iter()
    .enumerate()
    {
        for (i, (ns, faults)) in t.iter().enumerate() {
            println!("{v} {i} {ns} {faults}");
        }
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let scale = if quick { 10 } else { 1 };
    if let Some(i) = args.iter().position(|a| a == "--child") {
        let k = args
            .get(i + 1)
            .and_then(|a| a.parse().ok())
            .expect("--child K");
        child(k, scale);
        return;
    }
    let runs: usize = std::env::var("RFMALLOC_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let exe = std::env::current_exe().expect("own path");
    println!(
        "median of {runs} runs, each in a new process; ratio = heap / system (< 1: heap faster)"
    );
    let cols = [
        ("", "system"),
        ("fresh", "heap"),
        ("", "ratio"),
        ("", "Heap"),
        ("", "ratio"),
        ("warm", "heap"),
        ("", "ratio"),
        ("reused", "system"),
        ("", "heap"),
        ("", "ratio"),
        ("", "Heap"),
        ("", "ratio"),
    ];
    for row in 0..2 {
        let mut line = format!(
            "{:<17} {:<6} {:<10}",
            ["", "sizes"][row],
            ["", "n"][row],
            ["", "phase"][row]
        );
        for c in cols {
            let w = if c.1 == "ratio" { 6 } else { 9 };
            line += &format!(" {:>w$}", if row == 0 { c.0 } else { c.1 });
        }
        println!("{}", line.trim_end());
    }
    // RFMALLOC_BENCH_RANGES=0,1 runs only small and medium, for example.
    let only: Option<Vec<usize>> = std::env::var("RFMALLOC_BENCH_RANGES")
        .ok()
        .map(|v| v.split(',').filter_map(|x| x.parse().ok()).collect());
    for (k, &(name, _, _, n)) in RANGES.iter().enumerate() {
        if only.as_ref().is_some_and(|o| !o.contains(&k)) {
            continue;
        }
        // cells[variant][phase] = values over the runs
        let mut cells = vec![vec![Vec::new(); PHASES.len()]; VARIANTS.len()];
        let mut faults = vec![vec![Vec::new(); PHASES.len()]; VARIANTS.len()];
        for _ in 0..runs {
            let mut cmd = std::process::Command::new(&exe);
            cmd.arg("--child").arg(k.to_string());
            if quick {
                cmd.arg("--quick");
            }
            let out = cmd.output().expect("run a child");
            assert!(
                out.status.success(),
                "child failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                let f: Vec<f64> = line.split(' ').filter_map(|x| x.parse().ok()).collect();
                if let [v, i, ns, fl] = f[..] {
                    cells[v as usize][i as usize].push(ns);
                    faults[v as usize][i as usize].push(fl);
                }
            }
        }
        let m = |v: usize, i: usize| median(cells[v][i].clone());
        for (i, phase) in PHASES.iter().enumerate() {
            let c: Vec<f64> = (0..VARIANTS.len()).map(|v| m(v, i)).collect();
            let (sf, sr) = (c[0], c[1]);
            println!(
                "{:<17} {:<6} {:<10} {:>9.1} {:>9.1} {:>6.2} {:>9.1} {:>6.2} {:>9.1} {:>6.2} {:>9.1} {:>9.1} {:>6.2} {:>9.1} {:>6.2}",
                name,
                n / scale,
                phase,
                sf,
                c[2],
                c[2] / sf,
                c[5],
                c[5] / sf,
                c[3],
                c[3] / sf,
                sr,
                c[4],
                c[4] / sr,
                c[6],
                c[6] / sr
            );
        }
        let fm = |v: usize, i: usize| median(faults[v][i].clone());
        let alloc_faults: Vec<String> = (0..VARIANTS.len())
            .map(|v| format!("{} {:.0}", VARIANTS[v], fm(v, 0)))
            .collect();
        println!(
            "  page faults per 1000 allocs (alloc phase): {}",
            alloc_faults.join(", ")
        );
    }
}

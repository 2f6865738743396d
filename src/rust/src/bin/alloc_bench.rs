//! Allocator benchmark: the same pseudo-random trace against the system
//! malloc (libc malloc/free/realloc) and `rfmalloc::alloc::Allocator` over a
//! memory-mapped temporary file.
//!
//! `cargo run --release --bin alloc_bench [-- --quick]`
//!
//! For each size range (small 16 B-4 KiB, medium 4-64 KiB, large 64 KiB-4 MiB)
//! and each of a fresh and a reused heap, the phases are: alloc N blocks,
//! free half of them, realloc the other half to new sizes, refill N/2 blocks,
//! free all. Both sides write the first 8 bytes of every block they hand out
//! (and a realloc that moves copies the old bytes), so they touch the same
//! memory. Printed: ns per operation and the ratio heap / system (< 1: the
//! heap is faster).
//!
//! "fresh": a new heap file and allocator for the heap; for the system side,
//! the first run of that trace in this process. "reused": the trace runs a
//! second time on the same heap (or process heap) after everything was freed.
//! `RFMALLOC_BENCH_DIR` chooses where the heap file goes (default: the
//! system temp directory).

use std::fs::OpenOptions;
use std::hint::black_box;
use std::path::PathBuf;
use std::time::Instant;

use memmap2::MmapMut;
use rfmalloc::alloc::{Allocator, Mem};

/// `Mem` over the mapping: offsets are byte offsets from the mapping base.
struct MapMem {
    base: *mut u8,
    len: u64,
}

impl Mem for MapMem {
    #[inline(always)]
    fn load(&self, off: u64) -> u64 {
        debug_assert!(off + 8 <= self.len && off.is_multiple_of(8));
        // SAFETY: the allocator only reads 8-aligned offsets inside the arena
        // it was given, which is `[0, len)` of this live mapping.
        unsafe { self.base.add(off as usize).cast::<u64>().read() }
    }

    #[inline(always)]
    fn store(&mut self, off: u64, val: u64) {
        debug_assert!(off + 8 <= self.len && off.is_multiple_of(8));
        // SAFETY: as for `load`; the mapping is writable.
        unsafe { self.base.add(off as usize).cast::<u64>().write(val) }
    }
}

/// One heap: a sparse temporary file, mapped, with one arena over it.
struct FileHeap {
    _map: MmapMut,
    path: PathBuf,
    mem: MapMem,
    alloc: Allocator,
}

impl FileHeap {
    fn new(len: u64) -> FileHeap {
        let dir = std::env::var_os("RFMALLOC_BENCH_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir);
        let path = dir.join(format!("rfmalloc-bench-{}.heap", std::process::id()));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .expect("create the heap file");
        file.set_len(len).expect("size the heap file");
        if std::env::var_os("RFMALLOC_BENCH_SPARSE").is_none() {
            // Reserve the disk space as the heap does before handing out
            // blocks (so the page faults are those of a real heap).
            use std::os::fd::AsRawFd;
            // SAFETY: a valid open file descriptor and an in-range length.
            let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len as libc::off_t) };
            assert_eq!(rc, 0, "posix_fallocate failed");
        }
        // SAFETY: the file is ours (created above, unlinked on drop) and
        // nothing else maps or truncates it while the bench runs.
        let mut map = unsafe { MmapMut::map_mut(&file) }.expect("map the heap file");
        let mut mem = MapMem {
            base: map.as_mut_ptr(),
            len,
        };
        let mut alloc = Allocator::new();
        alloc
            .try_add_arena(&mut mem, 0, len)
            .expect("arena over the whole file");
        FileHeap {
            _map: map,
            path,
            mem,
            alloc,
        }
    }

    #[inline(always)]
    fn touch(&mut self, off: u64, v: u64) {
        self.mem.store(off, v);
    }
}

impl Drop for FileHeap {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// xorshift64*.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
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
        let mut rng = Rng(seed | 1);
        let alloc = (0..n).map(|_| rng.range(lo, hi)).collect();
        let freed = (0..n).map(|_| rng.next() & 1 == 0).collect();
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

fn page_faults() -> i64 {
    // SAFETY: getrusage fills the zeroed struct it is given.
    unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        ru.ru_minflt + ru.ru_majflt
    }
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

#[inline(never)]
fn run_system(tr: &Trace) -> Timings {
    let mut out = [(0.0, 0.0); 5];
    let n = tr.alloc.len();
    let mut ptrs: Vec<*mut u8> = Vec::with_capacity(n);
    let mut sizes: Vec<u64> = tr.alloc.clone();

    let t = mark();
    for (i, &s) in tr.alloc.iter().enumerate() {
        // SAFETY: plain libc malloc; the result is checked before use.
        let p = unsafe { libc::malloc(s as usize) }.cast::<u8>();
        assert!(!p.is_null());
        // SAFETY: `s >= 16`, so the first 8 bytes are ours.
        unsafe { p.cast::<u64>().write(i as u64) };
        ptrs.push(p);
    }
    out[0] = per_op(t, n);

    let t = mark();
    let mut freed = 0;
    for (p, &f) in ptrs.iter_mut().zip(&tr.freed) {
        if f {
            // SAFETY: `p` came from malloc and is freed once.
            unsafe { libc::free(p.cast()) };
            *p = std::ptr::null_mut();
            freed += 1;
        }
    }
    out[1] = per_op(t, freed);

    let t = mark();
    let mut reallocs = 0;
    for ((p, &s), size) in ptrs.iter_mut().zip(&tr.realloc).zip(sizes.iter_mut()) {
        if !p.is_null() {
            // SAFETY: `p` is live; realloc keeps the old bytes.
            let q = unsafe { libc::realloc(p.cast(), s as usize) }.cast::<u8>();
            assert!(!q.is_null());
            // SAFETY: `s >= 16`.
            unsafe { q.cast::<u64>().write(s) };
            *p = q;
            *size = s;
            reallocs += 1;
        }
    }
    out[2] = per_op(t, reallocs);

    let t = mark();
    for (i, &s) in tr.refill.iter().enumerate() {
        // SAFETY: as in the alloc phase.
        let p = unsafe { libc::malloc(s as usize) }.cast::<u8>();
        assert!(!p.is_null());
        // SAFETY: as above.
        unsafe { p.cast::<u64>().write(i as u64) };
        ptrs.push(p);
    }
    out[3] = per_op(t, tr.refill.len());

    let t = mark();
    let mut live = 0;
    for &p in &ptrs {
        if !p.is_null() {
            // SAFETY: every non-null pointer is live and freed once.
            unsafe { libc::free(p.cast()) };
            live += 1;
        }
    }
    out[4] = per_op(t, live);
    black_box(&sizes);
    out
}

#[inline(never)]
/// Runs the trace on the heap; returns the timings and the high-water mark.
fn run_heap(h: &mut FileHeap, tr: &Trace) -> (Timings, u64) {
    let mut out = [(0.0, 0.0); 5];
    let n = tr.alloc.len();
    let mut offs: Vec<u64> = Vec::with_capacity(n);
    let mut sizes: Vec<u64> = tr.alloc.clone();
    let mut hwm = 0;

    let t = mark();
    for (i, &s) in tr.alloc.iter().enumerate() {
        let p = h.alloc.malloc(&mut h.mem, s).expect("heap large enough");
        h.touch(p, i as u64);
        hwm = hwm.max(p + s);
        offs.push(p);
    }
    out[0] = per_op(t, n);

    let t = mark();
    let mut freed = 0;
    for (p, &f) in offs.iter_mut().zip(&tr.freed) {
        if f {
            h.alloc.free(&mut h.mem, *p).expect("live block");
            *p = 0;
            freed += 1;
        }
    }
    out[1] = per_op(t, freed);

    let t = mark();
    let mut reallocs = 0;
    for ((p, &s), size) in offs.iter_mut().zip(&tr.realloc).zip(sizes.iter_mut()) {
        if *p != 0 {
            if !h
                .alloc
                .resize_in_place(&mut h.mem, *p, s)
                .expect("live block")
            {
                let q = h.alloc.malloc(&mut h.mem, s).expect("heap large enough");
                let keep = (*size).min(s) as usize;
                // SAFETY: both blocks are live, disjoint, and hold at least
                // `keep` bytes inside the mapping.
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        h.mem.base.add(*p as usize),
                        h.mem.base.add(q as usize),
                        keep,
                    )
                };
                h.alloc.free(&mut h.mem, *p).expect("live block");
                *p = q;
            }
            h.touch(*p, s);
            hwm = hwm.max(*p + s);
            *size = s;
            reallocs += 1;
        }
    }
    out[2] = per_op(t, reallocs);

    let t = mark();
    for (i, &s) in tr.refill.iter().enumerate() {
        let p = h.alloc.malloc(&mut h.mem, s).expect("heap large enough");
        h.touch(p, i as u64);
        hwm = hwm.max(p + s);
        offs.push(p);
    }
    out[3] = per_op(t, tr.refill.len());

    let t = mark();
    let mut live = 0;
    for &p in &offs {
        if p != 0 {
            h.alloc.free(&mut h.mem, p).expect("live block");
            live += 1;
        }
    }
    out[4] = per_op(t, live);
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
const VARIANTS: [&str; 5] = [
    "sys fresh",
    "sys reused",
    "heap cold",
    "heap warm",
    "heap reused",
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
    let sys_fresh = run_system(&tr);
    let sys_reused = run_system(&tr);
    // Room for the alloc phase, the refill and moved reallocs.
    let heap_len = (3 * n as u64 * (hi + 64)).next_multiple_of(1 << 20);
    let mut heap = FileHeap::new(heap_len);
    let (heap_cold, hwm) = run_heap(&mut heap, &tr);
    let (heap_reused, _) = run_heap(&mut heap, &tr);
    if let Err(e) = heap.alloc.check_invariants(&heap.mem) {
        panic!("invariants broken after the bench: {e}");
    }
    drop(heap);
    // The same fresh allocator over a file whose pages are already in
    // memory: the allocator's own cost, without the kernel's first touch.
    let mut heap = FileHeap::new(heap_len);
    for off in (0..hwm.min(heap_len)).step_by(4096) {
        heap.touch(off, 0);
    }
    let (heap_warm, _) = run_heap(&mut heap, &tr);
    for (v, t) in [sys_fresh, sys_reused, heap_cold, heap_warm, heap_reused]
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
    println!(
        "{:<17} {:<6} {:<10} {:>9} {:>9} {:>6} {:>9} {:>6} {:>9} {:>9} {:>6}",
        "", "", "", "fresh", "", "", "fresh,", "warm", "reused", "", ""
    );
    println!(
        "{:<17} {:<6} {:<10} {:>9} {:>9} {:>6} {:>9} {:>6} {:>9} {:>9} {:>6}",
        "sizes",
        "n",
        "phase",
        "system",
        "heap",
        "ratio",
        "heap",
        "ratio",
        "system",
        "heap",
        "ratio"
    );
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
            let (sf, sr, hc, hw, hr) = (m(0, i), m(1, i), m(2, i), m(3, i), m(4, i));
            println!(
                "{:<17} {:<6} {:<10} {:>9.1} {:>9.1} {:>6.2} {:>9.1} {:>6.2} {:>9.1} {:>9.1} {:>6.2}",
                name,
                n / scale,
                phase,
                sf,
                hc,
                hc / sf,
                hw,
                hw / sf,
                sr,
                hr,
                hr / sr
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

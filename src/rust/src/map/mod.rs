//! Mapping of the heap file in extents that never move.
//!
//! An open heap is a list of extents, each a separate `mmap` of a range of
//! the file: a heap opened from disk is one extent `[0, file length)`; every
//! growth appends `[old length, new length)` to the file and maps just that
//! range. Existing extents are never remapped, so addresses handed out stay
//! valid until the mapping is dropped (invariant 2). Offsets become addresses
//! only here (`addr`), always through a bounds check.
//!
//! **Disk reservation.** The file is sparse; writing to a hole on a full disk
//! would kill the process with SIGBUS. On Linux every byte handed out is
//! first reserved with `posix_fallocate`: blocks in chunks of `CHUNK` bytes
//! (`reserve`), allocator headers page by page (in `Mem::store`). A failed
//! reservation of a block is reported (`Error::Full` upstream) instead. An
//! allocator header word whose page cannot be reserved goes to the *shadow*
//! (see `Shadow`): it never reaches the mapping, so the allocator's header
//! stores cannot fail, and its state (rebuilt at every writable open, never
//! read back from the file) stays consistent. A chunk
//! reserved for the first time is also filled with zeros where it is a hole
//! (`prefault`), which is how its pages get into memory cheapest. macOS (and
//! the BSDs and Solaris) have no `posix_fallocate` for ranges inside a file:
//! there, and on Windows (whose heap files are sparse too, see
//! `make_sparse`), reservation writes zeros into the holes of the range
//! (`fill_holes`), which fails with ENOSPC just the same. Where holes cannot
//! be found (no `SEEK_HOLE`) the file stays sparse and a full disk can
//! still raise SIGBUS on first write (documented limitation).
//!
//! **Large folios.** Linux (ext4 since 6.16, XFS, tmpfs with huge pages)
//! caches a file in folios of up to `UNIT` bytes, naturally aligned, and the
//! first write to a folio through a mapping must get disk space for all of
//! it: a reserved page inside a folio that also covers a hole still raises
//! SIGBUS on a full disk. So every reservation outside whole chunks covers
//! the aligned `UNIT`s around what it reserves (`reserve_page`, the
//! fallback of `reserve`, `reserve_range`). Chunks are whole units.
//!
//! **File size limit.** Nothing is written at or past `RLIMIT_FSIZE`
//! (`sys::file_size_limit`), where a write or an extension would kill the
//! process with SIGXFSZ: `grow` refuses to extend the file beyond it,
//! reservation past it uses the `fallocate` system call (which never falls
//! back to writing), and `prefault` stops short of it.

use std::cell::Cell;
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io;

use memmap2::{Mmap, MmapMut, MmapOptions};

pub mod fork;

use crate::alloc::Mem;

/// Granularity of disk reservation (and `prefault`) for handed-out blocks.
/// 4, 16 and 64 MiB measured within noise of each other (`alloc_bench`);
/// the smallest wastes least on disk and in memory ahead of use.
pub const CHUNK: u64 = 4 << 20;
const PAGE: u64 = 4096;
/// Runs `Mapping::write_run` writes through the file (Unix): below this
/// the system call costs about what the page faults it saves do.
#[cfg(unix)]
const FILE_WRITE_MIN: u64 = 1 << 20;
/// Ranges `Mapping::zero` gives to the file system to zero (Linux): below
/// this, writing zeros costs about what the system call does.
#[cfg(target_os = "linux")]
const ZERO_RANGE_MIN: u64 = 1 << 20;
/// Largest page-cache folio (a PMD: 2 MiB with 4 KiB pages), the unit of
/// reservation outside whole chunks (see "Large folios" above). Pages larger
/// than 4 KiB have larger PMDs but are rare; 2 MiB divides `CHUNK` either way.
#[cfg(target_os = "linux")]
const UNIT: u64 = 2 << 20;
/// No large-folio concern known elsewhere: reservation stays page by page.
#[cfg(not(target_os = "linux"))]
const UNIT: u64 = PAGE;
const _: () = assert!(CHUNK.is_multiple_of(UNIT));

enum Region {
    Rw(MmapMut),
    /// Held for its `Drop` (munmap); reads go through `Extent::base`.
    #[allow(dead_code)]
    Ro(Mmap),
}

struct Extent {
    start: u64,
    end: u64,
    /// Address of `start` (kept as an integer so the struct is `Send`).
    base: usize,
    region: Region,
}

/// `[start, end)` of one extent and the address of `start`.
#[derive(Clone, Copy)]
struct Hot {
    start: u64,
    end: u64,
    base: usize,
}

impl Hot {
    const EMPTY: Hot = Hot {
        start: 0,
        end: 0,
        base: 0,
    };
}

/// Disk reservation bookkeeping.
#[derive(Default)]
struct Reservation {
    /// For chunk `i`: reserved up to this absolute offset from the chunk start.
    reserved_to: Vec<u64>,
    /// `UNIT`s reserved outside reserved chunks (allocator headers, named
    /// blocks at `reserve_range`).
    units: HashSet<u64>,
    /// The file system cannot preallocate: stop trying.
    unsupported: bool,
    /// Chunks that may hold blocks reserved range by range (a reservation
    /// of the whole chunk failed): never prefaulted, see `prefault`.
    no_prefault: HashSet<u64>,
}

/// Replaces the pages of `[base, base + len)`, a read-only mapping of
/// `file`, that are holes of the file by anonymous zero pages, so that
/// reading them allocates nothing in the file system: on a full tmpfs
/// (`sys::reads_allocate`) a read of a hole through the mapping raises
/// SIGBUS, and a sparse copy of a heap (`cp --sparse`), or a writer that
/// left headers unwritten, has holes in blocks and headers that are read.
/// The file is locked shared while mapped, so no writer fills the holes
/// meanwhile. Best effort: a walk of many extents stops early (the rest
/// of the holes stay mapped from the file).
#[cfg(target_os = "linux")]
fn zero_holes(file: &File, base: usize, len: u64) {
    const MAX_HOLES: usize = 1 << 16;
    let mut at = 0;
    for _ in 0..MAX_HOLES {
        let Ok(Some((hole, data))) = crate::sys::next_hole(file, at, len) else {
            return;
        };
        let (from, to) = (hole.next_multiple_of(PAGE), data / PAGE * PAGE);
        if to > from {
            // SAFETY: [from, to) lies inside the mapping at `base` (`data`
            // <= `len`), page-aligned; MAP_FIXED replaces those pages of
            // it with private anonymous zero pages, read-only like the
            // rest, which memmap2's munmap of the whole mapping removes
            // with it. Nothing holds a reference into the mapping yet.
            let p = unsafe {
                libc::mmap(
                    (base + from as usize) as *mut libc::c_void,
                    (to - from) as usize,
                    libc::PROT_READ,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                    -1,
                    0,
                )
            };
            if p == libc::MAP_FAILED {
                return;
            }
        }
        at = data;
    }
}

#[cfg(not(target_os = "linux"))]
fn zero_holes(_file: &File, _base: usize, _len: u64) {}

/// Starts writing `[off, off + len)` of `f` back to disk without waiting
/// for it (see [`Mapping::write_run`]). Best effort: a failure leaves the
/// pages to the kernel's own write-back.
#[cfg(target_os = "linux")]
fn start_writeback(f: &File, off: u64, len: u64) {
    use std::os::fd::AsRawFd;
    let (Ok(o), Ok(l)) = (libc::off64_t::try_from(off), libc::off64_t::try_from(len)) else {
        return;
    };
    // SAFETY: plain syscall on a descriptor we own; no memory is passed.
    unsafe { libc::sync_file_range(f.as_raw_fd(), o, l, libc::SYNC_FILE_RANGE_WRITE) };
}

/// Makes a new, still empty heap file sparse before it is extended, where
/// files are not sparse by default (Windows: `FSCTL_SET_SPARSE`). Best
/// effort: on a file system without sparse files (FAT) the file takes its
/// full size on disk, which is still correct.
pub fn make_sparse(file: &File) {
    let _ = crate::sys::make_sparse(file);
}

/// Words of a page: the unit the shadow keeps.
const PAGE_WORDS: usize = (PAGE / 8) as usize;

/// Allocator header words of pages whose disk space could not be reserved
/// (full disk, file size limit), kept in memory instead of the mapping:
/// storing to such a page through the mapping could raise SIGBUS, and so
/// could reading it on a full tmpfs (a read fault on a hole allocates
/// there). A page enters the shadow at the first header store that cannot
/// reserve it, with its current bytes read by `pread` (which returns zeros
/// for a hole without allocating), and stays there for the rest of the
/// session: from then on every allocator load and store of that page goes
/// to the copy, even if the page gets reserved later (say, as part of a
/// block handed out). That is consistent because the allocator only reads
/// its own words, which are never user data while it reads them (headers
/// of live blocks, footers and links of free blocks), and because the file's
/// copy of the headers is never read back: a writable open rebuilds them
/// from the catalog. Empty, and checked with one length test, until the
/// disk fills.
#[derive(Default)]
struct Shadow {
    pages: HashMap<u64, Box<[u64; PAGE_WORDS]>>,
}

impl Shadow {
    #[inline(always)]
    fn is_empty(&self) -> bool {
        self.pages.is_empty()
    }

    fn word(&self, off: u64) -> Option<&u64> {
        let page = self.pages.get(&(off / PAGE))?;
        page.get(((off % PAGE) / 8) as usize)
    }

    fn word_mut(&mut self, off: u64) -> Option<&mut u64> {
        let page = self.pages.get_mut(&(off / PAGE))?;
        page.get_mut(((off % PAGE) / 8) as usize)
    }
}

/// The mapped extents of one heap file.
pub struct Mapping {
    extents: Vec<Extent>,
    /// The extent that served the last lookup, copied out of `extents` so
    /// that the allocator's header reads and writes (`Mem`) find it
    /// without going through the vector.
    hot: Cell<Hot>,
    /// The read-write descriptor (None for a read-only mapping).
    file: Option<File>,
    reservation: Reservation,
    /// Allocator words of pages that could not be reserved.
    shadow: Shadow,
    /// Reading a hole through the mapping allocates (tmpfs, see
    /// `sys::reads_allocate`).
    reads_allocate: bool,
}

impl Mapping {
    /// Maps all of `file` (`len` bytes) read-write as one extent.
    pub fn open_rw(file: File, len: u64) -> io::Result<Mapping> {
        let size = usize::try_from(len).map_err(|_| io::Error::other("file too large"))?;
        // SAFETY: the file is locked exclusively by this process (lock.rs);
        // other processes that ignore the lock could change it under us,
        // which no mapping can prevent. The mapping is shared, so writes go
        // to the file.
        let mut m = unsafe { MmapOptions::new().len(size).map_mut(&file)? };
        let base = m.as_mut_ptr() as usize;
        Ok(Mapping {
            extents: vec![Extent {
                start: 0,
                end: len,
                base,
                region: Region::Rw(m),
            }],
            hot: Cell::new(Hot::EMPTY),
            reads_allocate: crate::sys::reads_allocate(&file),
            file: Some(file),
            reservation: Reservation::default(),
            shadow: Shadow::default(),
        })
    }

    /// Maps all of `file` (`len` bytes) read-only as one extent.
    pub fn open_ro(file: &File, len: u64) -> io::Result<Mapping> {
        let size = usize::try_from(len).map_err(|_| io::Error::other("file too large"))?;
        // SAFETY: read-only shared mapping of a file locked shared by this
        // process, so no cooperating writer changes it while mapped.
        let m = unsafe { MmapOptions::new().len(size).map(file)? };
        let base = m.as_ptr() as usize;
        if crate::sys::reads_allocate(file) {
            zero_holes(file, base, len);
        }
        Ok(Mapping {
            extents: vec![Extent {
                start: 0,
                end: len,
                base,
                region: Region::Ro(m),
            }],
            hot: Cell::new(Hot::EMPTY),
            file: None,
            reservation: Reservation::default(),
            shadow: Shadow::default(),
            reads_allocate: false,
        })
    }

    /// A read-only mapping of this writable one's file, for reading every
    /// byte where reading a hole through this mapping allocates (tmpfs:
    /// SIGBUS when full); its holes read as zeros (see `open_ro`). `None`
    /// elsewhere, or when it cannot be made: read through this one.
    pub fn read_view(&self) -> Option<Mapping> {
        if !self.reads_allocate {
            return None;
        }
        Mapping::open_ro(self.file.as_ref()?, self.len()).ok()
    }

    /// `load` of a word outside the reserved chunks, which may lie in a
    /// hole: read with `pread` where reading a hole through the mapping
    /// allocates (tmpfs), which returns zeros for a hole without.
    fn load_unreserved(&self, off: u64) -> u64 {
        if !self.reads_allocate {
            return self.load(off);
        }
        let mut word = [0u8; 8];
        if let Some(f) = &self.file {
            // A failed read leaves zeros, what a hole holds: the store
            // that follows then reserves the page before it writes.
            let _ = crate::sys::read_at(f, &mut word, off);
        }
        u64::from_le_bytes(word)
    }

    pub fn is_writable(&self) -> bool {
        self.file.is_some()
    }

    /// Length of the mapped file.
    pub fn len(&self) -> u64 {
        self.extents.last().map_or(0, |e| e.end)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn extent_count(&self) -> usize {
        self.extents.len()
    }

    /// Appends `add` bytes to the file and maps them as a new extent;
    /// returns the new range. `add` and the current length are multiples of
    /// the page size. Existing extents are not touched.
    pub fn grow(&mut self, add: u64) -> io::Result<(u64, u64)> {
        let file = self
            .file
            .as_ref()
            .ok_or_else(|| io::Error::other("read-only mapping"))?;
        let start = self.len();
        let end = start
            .checked_add(add)
            .ok_or_else(|| io::Error::other("heap size overflows"))?;
        let size = usize::try_from(add).map_err(|_| io::Error::other("growth too large"))?;
        let limit = crate::sys::file_size_limit();
        if end > limit {
            // Extending past the limit raises SIGXFSZ, fatal to R.
            return Err(io::Error::new(
                io::ErrorKind::FileTooLarge,
                format!("the file size limit of this process (ulimit -f) is {limit} bytes"),
            ));
        }
        file.set_len(end)?;
        // SAFETY: as in `open_rw`; the range [start, end) was just added to
        // the file and is not mapped anywhere else in this process.
        let mapped = unsafe { MmapOptions::new().offset(start).len(size).map_mut(file) };
        let mut m = match mapped {
            Ok(m) => m,
            Err(e) => {
                // Give the space back; the heap stays as it was.
                let _ = file.set_len(start);
                return Err(e);
            }
        };
        let base = m.as_mut_ptr() as usize;
        self.extents.push(Extent {
            start,
            end,
            base,
            region: Region::Rw(m),
        });
        Ok((start, end))
    }

    fn find(&self, off: u64, len: u64) -> Option<&Extent> {
        let end = off.checked_add(len)?;
        self.extents.iter().find(|e| e.start <= off && end <= e.end)
    }

    /// Address of `[off, off + len)` if that range lies within one extent.
    /// Inlined: the allocator comes through here for every header word.
    #[inline(always)]
    pub fn addr(&self, off: u64, len: u64) -> Option<*mut u8> {
        let h = self.hot.get();
        let end = off.checked_add(len)?;
        if h.start <= off && end <= h.end {
            return Some((h.base + (off - h.start) as usize) as *mut u8);
        }
        self.addr_other(off, len)
    }

    #[inline(never)]
    fn addr_other(&self, off: u64, len: u64) -> Option<*mut u8> {
        let e = self.find(off, len)?;
        self.hot.set(Hot {
            start: e.start,
            end: e.end,
            base: e.base,
        });
        Some((e.base + (off - e.start) as usize) as *mut u8)
    }

    /// `[off, off + len)` as a range forked children can remap
    /// copy-on-write (`fork`): page-aligned (in the file and in memory),
    /// inside one extent of a writable mapping.
    pub fn cow_range(&self, off: u64, len: u64) -> Option<fork::CowRange> {
        let ps = fork::page_size();
        let aligned = |v: u64| v.is_multiple_of(ps as u64);
        if len == 0 || !aligned(off) || !aligned(len) {
            return None;
        }
        let addr = self.addr(off, len)? as usize;
        if !addr.is_multiple_of(ps) {
            return None;
        }
        let file = self.file.as_ref()?;
        #[cfg(unix)]
        let fd = std::os::unix::io::AsRawFd::as_raw_fd(file);
        #[cfg(not(unix))]
        let fd = {
            let _ = file;
            -1
        };
        Some(fork::CowRange {
            addr,
            len: usize::try_from(len).ok()?,
            fd,
            file_off: off,
        })
    }

    /// The file offset of `addr` if it points into a mapped extent.
    pub fn offset_of(&self, addr: *const u8) -> Option<u64> {
        let a = addr as usize;
        self.extents.iter().find_map(|e| {
            let size = (e.end - e.start) as usize;
            (a >= e.base && a < e.base + size).then(|| e.start + (a - e.base) as u64)
        })
    }

    /// The bytes `[off, off + len)`, if mapped in one extent.
    pub fn bytes(&self, off: u64, len: u64) -> Option<&[u8]> {
        let p = self.addr(off, len)?;
        // SAFETY: `addr` checked that the range lies inside a live mapping,
        // which lives as long as `self`.
        Some(unsafe { std::slice::from_raw_parts(p, len as usize) })
    }

    /// Copies `data` to offset `off` (read-write mappings only).
    pub fn write(&mut self, off: u64, data: &[u8]) -> io::Result<()> {
        if !self.is_writable() {
            return Err(io::Error::other("read-only mapping"));
        }
        let p = self
            .addr(off, data.len() as u64)
            .ok_or_else(|| io::Error::other(format!("offset {off} is not mapped")))?;
        // SAFETY: the range is inside a writable shared mapping (checked
        // above) and does not overlap `data`, which is process memory.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), p, data.len()) };
        Ok(())
    }

    /// Copies `data` to offset `off` (read-write mappings only), a range of
    /// a block whose disk space is reserved: for a run of at least
    /// `FILE_WRITE_MIN` bytes with `pwrite` on the file (Unix), otherwise
    /// through the mapping like [`Mapping::write`]. `data` must not lie in
    /// this mapping (callers copy such a value through the mapping).
    ///
    /// Why: the first touch of each page of a never-written range through
    /// the mapping costs a page fault, and the fault reads the page in,
    /// which for a hole means zeroing it first (`bench/out-of-core.R`: a 4
    /// GB fill spent a fifth of its CPU zeroing pages it then overwrote).
    /// `pwrite` copies into the page cache directly, whole pages without
    /// zeroing, and needs no page-table entries; the mapping sees the new
    /// bytes because on Linux and macOS a shared file mapping and the
    /// file's page cache are the same memory (macOS: the unified buffer
    /// cache). Windows documents no such coherence between `WriteFile` and
    /// mapped views (`MapViewOfFile`: a view "is not guaranteed to be
    /// coherent" with a file accessed by `ReadFile` or `WriteFile`), so
    /// there everything is copied through the mapping.
    ///
    /// On Linux the run's write-back to disk starts at once
    /// (`sync_file_range(SYNC_FILE_RANGE_WRITE)`, which does not wait for
    /// it): a chunked fill of a vector larger than memory then writes to
    /// the disk while R computes the next chunk, instead of piling up dirty
    /// pages until the kernel's thresholds stall the writer (or until
    /// `fmalloc_sync()`). Durability is still the commit's job.
    ///
    /// Writes at or past the file size limit (`RLIMIT_FSIZE`, where `write`
    /// raises SIGXFSZ) go through the mapping, which is not subject to it.
    pub fn write_run(&mut self, off: u64, data: &[u8]) -> io::Result<()> {
        #[cfg(unix)]
        {
            let len = data.len() as u64;
            if len >= FILE_WRITE_MIN && off.saturating_add(len) <= crate::sys::file_size_limit() {
                if self.addr(off, len).is_none() {
                    return Err(io::Error::other(format!("offset {off} is not mapped")));
                }
                let f = self
                    .file
                    .as_ref()
                    .ok_or_else(|| io::Error::other("read-only mapping"))?;
                std::os::unix::fs::FileExt::write_all_at(f, data, off)?;
                #[cfg(target_os = "linux")]
                start_writeback(f, off, len);
                return Ok(());
            }
        }
        self.write(off, data)
    }

    /// Writes zeros over `[off, off + len)` (read-write mappings only), a
    /// range whose disk space is reserved and that nobody else uses (a
    /// recycled block being handed out). On Linux the whole pages of a
    /// range of at least `ZERO_RANGE_MIN` bytes are zeroed by the file
    /// system (`fallocate(FALLOC_FL_ZERO_RANGE)`: the extents become
    /// unwritten, stay allocated, and their cached pages are dropped, in
    /// every mapping), which costs no memory traffic and no disk write;
    /// the rest, and everything where the file system cannot, is written.
    pub fn zero(&mut self, off: u64, len: u64) -> io::Result<()> {
        if !self.is_writable() {
            return Err(io::Error::other("read-only mapping"));
        }
        let p = self
            .addr(off, len)
            .ok_or_else(|| io::Error::other(format!("offset {off} is not mapped")))?;
        // The part the file system zeroed (empty: none).
        #[cfg(target_os = "linux")]
        let (from, to) = self.zero_pages(off, len).unwrap_or((off, off));
        #[cfg(not(target_os = "linux"))]
        let (from, to) = (off, off);
        // SAFETY: [off, off + len) is inside a writable shared mapping
        // (checked above); the part the file system zeroed is skipped.
        unsafe {
            std::ptr::write_bytes(p, 0, (from - off) as usize);
            std::ptr::write_bytes(p.add((to - off) as usize), 0, (off + len - to) as usize);
        }
        Ok(())
    }

    /// `fallocate(FALLOC_FL_ZERO_RANGE)` of the whole pages of `[off, off +
    /// len)` when it is at least `ZERO_RANGE_MIN` long: the range zeroed.
    #[cfg(target_os = "linux")]
    fn zero_pages(&self, off: u64, len: u64) -> Option<(u64, u64)> {
        use std::os::fd::AsRawFd;
        if len < ZERO_RANGE_MIN {
            return None;
        }
        let a = off.div_ceil(PAGE) * PAGE;
        let b = (off + len) / PAGE * PAGE;
        let f = self.file.as_ref()?;
        let o = libc::off_t::try_from(a).ok()?;
        let l = libc::off_t::try_from(b - a).ok()?;
        let mode = libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE;
        // SAFETY: plain syscall on a descriptor we own; no memory is
        // passed. The range lies inside the file (it is mapped).
        (unsafe { libc::fallocate(f.as_raw_fd(), mode, o, l) } == 0).then_some((a, b))
    }

    /// msync of `[off, off + len)` (read-write mappings only; else a no-op).
    pub fn flush(&self, off: u64, len: u64) -> io::Result<()> {
        if len == 0 {
            return Ok(());
        }
        let e = self
            .find(off, len)
            .ok_or_else(|| io::Error::other(format!("offset {off} is not mapped")))?;
        match &e.region {
            Region::Rw(m) => m.flush_range((off - e.start) as usize, len as usize),
            Region::Ro(_) => Ok(()),
        }
    }

    /// `flush` at a commit point: when it returns, `[off, off + len)` and
    /// everything flushed before it survive a power loss. msync is enough
    /// on Linux (and FlushViewOfFile + FlushFileBuffers, which memmap2's
    /// flush does, on Windows); on macOS it leaves the data in the drive's
    /// cache, so the file is also fully synced there (`sys::sync_file`).
    pub fn flush_durable(&self, off: u64, len: u64) -> io::Result<()> {
        self.flush(off, len)?;
        #[cfg(target_vendor = "apple")]
        if let Some(f) = &self.file {
            crate::sys::sync_file(f)?;
        }
        Ok(())
    }

    /// One flush of everything written through the mapping (a durable
    /// commit's first flush). On Linux `fsync` of the file alone: a page
    /// written through a shared mapping is dirty in the page cache from its
    /// write fault on (`page_mkwrite`), so `fsync` writes it, and `msync`
    /// of each extent first would flush the device cache once more. Elsewhere
    /// [`Mapping::sync_all`].
    pub fn sync_durable(&self) -> io::Result<()> {
        #[cfg(target_os = "linux")]
        if let Some(f) = &self.file {
            return crate::sys::sync_file(f);
        }
        self.sync_all()
    }

    /// msync of every extent, then fsync of the file (`F_FULLFSYNC` on
    /// macOS, see `sys::sync_file`).
    pub fn sync_all(&self) -> io::Result<()> {
        for e in &self.extents {
            if let Region::Rw(m) = &e.region {
                m.flush()?;
            }
        }
        match &self.file {
            Some(f) => crate::sys::sync_file(f),
            None => Ok(()),
        }
    }

    /// Reserves disk space for `[off, off + len)` in whole chunks (clamped
    /// to the file) so that writing there cannot fail with SIGBUS; when the
    /// chunks do not fit on the disk, just the range itself.
    pub fn reserve(&mut self, off: u64, len: u64) -> io::Result<()> {
        if len == 0 || self.reservation.unsupported || self.file.is_none() {
            return Ok(());
        }
        let file_len = self.len();
        let Some(end) = off.checked_add(len).filter(|&e| e <= file_len) else {
            return Err(io::Error::other("reservation beyond the end of the file"));
        };
        let first = off / CHUNK;
        let last = (end - 1) / CHUNK;
        let need = |i: u64| ((i + 1) * CHUNK).min(file_len);
        if self.reservation.reserved_to.len() <= last as usize {
            self.reservation.reserved_to.resize(last as usize + 1, 0);
        }
        let mut i = first;
        while i <= last {
            let res = &self.reservation.reserved_to;
            if res[i as usize] >= need(i) {
                i += 1;
                continue;
            }
            // One call for a run of chunks that all need reserving.
            let run_start = (i * CHUNK).max(res[i as usize]);
            let mut j = i;
            while j < last && res[j as usize + 1] < need(j + 1) {
                j += 1;
            }
            let run_end = need(j);
            if let Err(e) = self.fallocate(run_start, run_end - run_start) {
                // Not room for whole chunks: maybe for exactly this range.
                // Those chunks now hold a block without being reserved.
                self.reservation.no_prefault.extend(first..=last);
                return self.reserve_units(off, len).map_err(|_| e);
            }
            for k in i..=j {
                // A chunk wholly inside the block being handed out is left
                // to the faults of its owner's first write: they bring
                // large page-cache folios, and scans of big vectors over
                // them run at native speed (sum() 1.0x against 1.2x over
                // zero-filled pages, bench/vectors.R).
                let inside = k * CHUNK >= off && need(k) <= end;
                if !inside && !self.reservation.no_prefault.contains(&k) {
                    let from = run_start.max(k * CHUNK);
                    self.prefault(from, need(k) - from);
                }
            }
            for k in i..=j {
                self.reservation.reserved_to[k as usize] = need(k);
            }
            i = j + 1;
        }
        Ok(())
    }

    /// Makes the block `[off, off + cap)` just handed out by the allocator
    /// safe to write (its headers are, see `Shadow`). Every allocation path
    /// (the heap's and the benchmark's) goes through here.
    #[inline]
    pub fn reserve_block(&mut self, off: u64, cap: u64) -> io::Result<()> {
        // Fast path (most blocks): inside one chunk, reserved up to its end.
        let last = off.saturating_add(cap.max(8)) - 8;
        if off / CHUNK == last / CHUNK && self.in_reserved_chunk(last) {
            return Ok(());
        }
        self.reserve(off, cap)
    }

    /// Reserves `[off, off + len)` (in `UNIT`s) unless whole reserved chunks
    /// already cover it: no chunk rounding and no `prefault`, so it is safe
    /// while other processes (a forked child's parent) allocate around the
    /// range. For blocks that existed before this session (named objects),
    /// whose reservation at open may have failed.
    pub fn reserve_range(&mut self, off: u64, len: u64) -> io::Result<()> {
        if len == 0 || self.reservation.unsupported || self.file.is_none() {
            return Ok(());
        }
        let end = off
            .checked_add(len)
            .filter(|&e| e <= self.len())
            .ok_or_else(|| io::Error::other("reservation beyond the end of the file"))?;
        let covered = (off / CHUNK..=(end - 1) / CHUNK).all(|i| {
            let need = ((i + 1) * CHUNK).min(self.len());
            self.reservation
                .reserved_to
                .get(i as usize)
                .is_some_and(|&to| to >= need)
        });
        if covered {
            return Ok(());
        }
        self.reserve_units(off, len)
    }

    /// Whether the word at `off` lies in a reserved chunk (the common case,
    /// checked first and inline).
    #[inline(always)]
    fn in_reserved_chunk(&self, off: u64) -> bool {
        self.reservation
            .reserved_to
            .get((off / CHUNK) as usize)
            .is_some_and(|&to| to >= off + 8)
    }

    fn is_reserved(&self, off: u64) -> bool {
        self.reservation.unsupported
            || self.file.is_none()
            || self.in_reserved_chunk(off)
            || self.reservation.units.contains(&(off / UNIT))
    }

    /// `Mem::store` outside a reserved chunk, or with a non-empty shadow:
    /// stores into the shadow if the page is (or, its reservation failing
    /// now, becomes) shadowed and returns true; else reserves the page and
    /// returns false (the caller stores through the mapping).
    #[cold]
    #[inline(never)]
    fn store_slow(&mut self, off: u64, val: u64) -> bool {
        if let Some(w) = self.shadow.word_mut(off) {
            *w = val;
            return true;
        }
        if self.is_reserved(off) || self.reserve_page(off).is_ok() {
            return false;
        }
        // Never written through the mapping: start the copy from the file.
        let mut bytes = [0u8; PAGE as usize];
        if let Some(f) = &self.file {
            // A failed read leaves zeros: what a hole (the usual case here)
            // holds, and the allocator only reads words it stored itself.
            let _ = crate::sys::read_at(f, &mut bytes, off / PAGE * PAGE);
        }
        let mut words = Box::new([0u64; PAGE_WORDS]);
        for (w, b) in words.iter_mut().zip(bytes.chunks_exact(8)) {
            *w = crate::format::get_u64(b, 0);
        }
        self.shadow.pages.insert(off / PAGE, words);
        if let Some(w) = self.shadow.word_mut(off) {
            *w = val;
        }
        true
    }

    /// The read-write descriptor (None for a read-only mapping).
    pub fn file(&self) -> Option<&File> {
        self.file.as_ref()
    }

    /// Gives the reserved whole chunks inside the free block `[off, off +
    /// cap)` back to the file system (hole punching), so the file's disk
    /// use drops when big objects go. Best effort; returns the bytes given
    /// back.
    ///
    /// Whole chunks only: each then holds nothing but free space, which is
    /// the state of a chunk never reserved (so its reservation is simply
    /// forgotten, and `prefault` may fill it again when it is reserved
    /// anew). The block's header and footer, outside those chunks, stay.
    /// Chunks not reserved (never used, or punched already) are skipped, so
    /// freeing next to a big free region does not punch it again.
    /// Called by the block's owner under the heap's lock, after the free.
    pub fn punch(&mut self, off: u64, cap: u64) -> u64 {
        let first = off.div_ceil(CHUNK);
        // The free block's last word is its footer.
        let end = off.saturating_add(cap).saturating_sub(8).min(self.len()) / CHUNK;
        let reserved = |m: &Self, k: u64| {
            m.reservation
                .reserved_to
                .get(k as usize)
                .is_some_and(|&t| t > 0)
        };
        let mut given = 0;
        let mut k = first;
        while k < end {
            if !reserved(self, k) {
                k += 1;
                continue;
            }
            let mut j = k;
            while j < end && reserved(self, j) {
                j += 1;
            }
            given += self.punch_chunks(k, j);
            k = j;
        }
        given
    }

    /// Gives the whole chunks inside the free block `[off, off + cap)` (its
    /// last 8 bytes are its footer) back to the file system, whether this
    /// session reserved them or not: for a writable open, whose rebuild
    /// found free the blocks a previous session left handed out (vectors
    /// still alive when it ended, or a crash). Returns the bytes given
    /// back.
    pub fn punch_free(&mut self, off: u64, cap: u64) -> u64 {
        let first = off.div_ceil(CHUNK);
        let end = off.saturating_add(cap).saturating_sub(8).min(self.len()) / CHUNK;
        if first >= end {
            return 0;
        }
        self.punch_chunks(first, end)
    }

    /// Gives back the disk space inside `[off, off + cap)`, a block just
    /// handed out whose reservation failed (so nobody's data), that no
    /// reservation records: a failed `fallocate` keeps what it got before
    /// the disk was full (ext4), and `fill_holes` what it wrote. The
    /// reserved prefixes of chunks and the reserved `UNIT`s (allocator
    /// headers, see `reserve_page`) stay: they must not become holes.
    pub fn unreserve_block(&self, off: u64, cap: u64) {
        let Some(f) = &self.file else { return };
        let end = off.saturating_add(cap).min(self.len());
        if end <= off {
            return;
        }
        let res = &self.reservation;
        let mut keep: Vec<(u64, u64)> = res
            .units
            .iter()
            .map(|&u| (u * UNIT, (u + 1) * UNIT))
            .filter(|&(a, b)| a < end && b > off)
            .collect();
        for k in off / CHUNK..=(end - 1) / CHUNK {
            let to = res.reserved_to.get(k as usize).copied().unwrap_or(0);
            if to > k * CHUNK {
                keep.push((k * CHUNK, to));
            }
        }
        keep.sort_unstable();
        let hi = end / PAGE * PAGE;
        let mut at = off.next_multiple_of(PAGE);
        for (a, b) in keep.into_iter().chain([(hi, hi)]) {
            let a = (a / PAGE * PAGE).min(hi);
            if a > at {
                let _ = crate::sys::punch_hole(f, at, a - at);
            }
            at = at.max(b.next_multiple_of(PAGE));
        }
    }

    /// Gives back the reserved `UNIT`s that lie wholly inside the free
    /// block `[off, off + cap)` (its last 8 bytes are its footer) outside
    /// reserved chunk prefixes: after a failed reservation, the units that
    /// headers of the blocks tried took (`reserve_page`), which nothing
    /// needs once those blocks are free again. They are forgotten, so they
    /// are reserved anew when used.
    pub fn unreserve_free(&mut self, off: u64, cap: u64) {
        let Some(f) = &self.file else { return };
        let end = off.saturating_add(cap).saturating_sub(8);
        let (first, last) = (off.div_ceil(UNIT), end / UNIT);
        let res = &mut self.reservation;
        for u in first..last {
            let chunk = u * UNIT / CHUNK;
            let in_chunk = res
                .reserved_to
                .get(chunk as usize)
                .is_some_and(|&to| to > u * UNIT);
            if !in_chunk
                && res.units.contains(&u)
                && matches!(crate::sys::punch_hole(f, u * UNIT, UNIT), Ok(true))
            {
                res.units.remove(&u);
            }
        }
    }

    /// Punches chunks `[first, end)`, which hold only free space, and
    /// forgets their reservation.
    fn punch_chunks(&mut self, first: u64, end: u64) -> u64 {
        let Some(f) = &self.file else { return 0 };
        let (lo, hi) = (first * CHUNK, end * CHUNK);
        if !matches!(crate::sys::punch_hole(f, lo, hi - lo), Ok(true)) {
            return 0;
        }
        let res = &mut self.reservation;
        for k in first..end {
            if let Some(to) = res.reserved_to.get_mut(k as usize) {
                *to = 0;
            }
            res.no_prefault.remove(&k);
        }
        res.units.retain(|u| u * UNIT < lo || u * UNIT >= hi);
        hi - lo
    }

    /// Number of pages whose allocator words live in memory (tests).
    #[doc(hidden)]
    pub fn shadowed_pages(&self) -> usize {
        self.shadow.pages.len()
    }

    /// Brings the just reserved range `[off, off + len)` into the page
    /// cache by writing zeros over the parts of it that read as zeros
    /// anyway: the holes `lseek(SEEK_HOLE)` reports, which after
    /// `fallocate` are the unwritten extents with no page in memory.
    ///
    /// Why: the first touch of such a page through the mapping faults, and
    /// the kernel reads ahead: it allocates large page-cache folios around
    /// the page and zeroes them. That costs 0.15 ms per MiB when the memory
    /// it gets is warm, but 1-2.3 ms per MiB when it is not (a virtual
    /// machine that gave freed memory back to its host hands out large
    /// folios from that memory first), where the system malloc's 4 KiB
    /// anonymous pages cost 0.45 ms per MiB. Writing zeros with `pwrite`
    /// costs a steady 0.2-0.35 ms per MiB, after which touching the pages
    /// only maps them. (Measured with `alloc_bench`; `madvise(
    /// MADV_POPULATE_WRITE)` was tried too: it takes the fault path, so it
    /// is as slow as the faults on cold memory.)
    ///
    /// Safe because (1) only holes are written, which already read as
    /// zeros, and (2) nobody else writes the range meanwhile: it lies in
    /// chunks reserved for the first time, so it holds free space (written
    /// only by the allocator, under the heap's lock like this call; the
    /// headers it wrote are data, not holes) and the block being handed out
    /// (not yet given to anyone), but no block handed out earlier: a block
    /// reserved range by range put its chunks in `no_prefault`, which are
    /// skipped. Best effort: on failure the range stays reserved, just not
    /// in memory.
    #[cfg(target_os = "linux")]
    fn prefault(&self, off: u64, len: u64) {
        use std::os::unix::fs::FileExt;
        /// Zeros to copy from; never written, so (in `.bss`) it costs no
        /// memory. The write size sets the size of the page-cache folios:
        /// 256 KiB to 1 MiB fill fastest; 2 MiB folios (which the kernel can
        /// map with one huge-page entry, fewer TLB misses later) come from
        /// the same cold memory as the faults and cost 0.8-1.3 ms per MiB.
        static ZEROS: [u8; 1 << 20] = [0; 1 << 20];
        let Some(f) = &self.file else { return };
        if self.reservation.no_prefault.contains(&(off / CHUNK)) {
            return;
        }
        // A write at or past the file size limit raises SIGXFSZ.
        let end = (off + len).min(crate::sys::file_size_limit());
        let mut at = off;
        // No hole before `end`, or no SEEK_HOLE support: done.
        while let Ok(Some((hole, data))) = crate::sys::next_hole(f, at, end) {
            let mut o = hole;
            while o < data {
                let n = (data - o).min(ZEROS.len() as u64) as usize;
                if f.write_all_at(&ZEROS[..n], o).is_err() {
                    return;
                }
                o += n as u64;
            }
            at = data;
        }
    }

    #[cfg(not(target_os = "linux"))]
    fn prefault(&self, _off: u64, _len: u64) {}

    /// Where the zeros that run to the end of the file begin, if that is
    /// at or after `from`, the last `skip` bytes not counted (words the
    /// caller rewrites, such as the allocator's sentinel and last footer):
    /// a hole up to the file's last page, whose bytes before the skipped
    /// ones are read and must be zeros. This is the allocator's fresh
    /// space after a reopen (see `Allocator::mark_fresh`). `None` when the
    /// file ends in data, when holes cannot be found, or after too many
    /// data extents past `from` (not worth the walk).
    pub fn tail_hole(&self, from: u64, skip: u64) -> Option<u64> {
        const MAX_EXTENTS: usize = 4096;
        let f = self.file.as_ref()?;
        let end = self.len();
        let keep_end = end.checked_sub(skip)?;
        let last_page = keep_end.saturating_sub(1) / PAGE * PAGE;
        let mut at = from;
        for _ in 0..MAX_EXTENTS {
            let (hole, data) = crate::sys::next_hole(f, at, end).ok()??;
            if data >= last_page {
                // The rest of the last page (before the skipped bytes).
                let mut bytes = vec![0u8; keep_end.saturating_sub(data) as usize];
                if !bytes.is_empty() {
                    crate::sys::read_at(f, &mut bytes, data).ok()?;
                }
                return bytes.iter().all(|&b| b == 0).then_some(hole);
            }
            at = data;
        }
        None
    }

    /// Reserves the `UNIT` holding `off` (for allocator headers).
    fn reserve_page(&mut self, off: u64) -> io::Result<()> {
        self.reserve_units(off, 8)?;
        let page = off / PAGE * PAGE;
        let len = PAGE.min(self.len().saturating_sub(page));
        // Into memory before the allocator's store touches it: a store to a
        // hole would read ahead (see `prefault`) and leave large clean folios
        // that every later write faults on, page by page.
        self.prefault(page, len);
        Ok(())
    }

    /// Reserves the `UNIT`s covering `[off, off + len)` (clamped to the
    /// file) and records them.
    fn reserve_units(&mut self, off: u64, len: u64) -> io::Result<()> {
        let first = off / UNIT;
        let last = (off + len.max(1) - 1) / UNIT;
        let todo: Vec<u64> = (first..=last)
            .filter(|u| !self.reservation.units.contains(u))
            .collect();
        let (Some(&a), Some(&b)) = (todo.first(), todo.last()) else {
            return Ok(());
        };
        let from = a * UNIT;
        let len_now = self.len();
        let to = ((b + 1) * UNIT).min(len_now);
        self.fallocate(from, to - from)?;
        // Only units wholly inside the file count as reserved: the tail of
        // a unit cut by the end of the file is not, and once the file grows
        // it is heap space like any other (a store there through the
        // mapping would meet a hole: SIGBUS on a full disk).
        self.reservation
            .units
            .extend((first..=last).filter(|u| (u + 1) * UNIT <= len_now));
        Ok(())
    }

    #[cfg(target_os = "linux")]
    fn fallocate(&mut self, off: u64, len: u64) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        let Some(f) = &self.file else { return Ok(()) };
        let (Ok(o), Ok(l)) = (libc::off_t::try_from(off), libc::off_t::try_from(len)) else {
            return Err(io::Error::other("offset too large to reserve"));
        };
        if off + len > crate::sys::file_size_limit() {
            // glibc's posix_fallocate falls back to writing (pwrite) where
            // the file system cannot preallocate, and a write past the file
            // size limit raises SIGXFSZ. The system call never writes.
            // SAFETY: plain syscall on a descriptor we own; no memory is passed.
            let rc = unsafe { libc::fallocate(f.as_raw_fd(), 0, o, l) };
            return if rc == 0 {
                Ok(())
            } else {
                let e = io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::EOPNOTSUPP | libc::ENOSYS) => Err(io::Error::new(
                        io::ErrorKind::FileTooLarge,
                        "cannot reserve disk space past the file size limit (ulimit -f)",
                    )),
                    _ => Err(e),
                }
            };
        }
        // SAFETY: plain syscall on a descriptor we own; no memory is passed.
        let rc = unsafe { libc::posix_fallocate(f.as_raw_fd(), o, l) };
        match rc {
            0 => Ok(()),
            libc::EOPNOTSUPP | libc::EINVAL | libc::ENOSYS => {
                self.reservation.unsupported = true;
                Ok(())
            }
            e => Err(io::Error::from_raw_os_error(e)),
        }
    }

    /// Reservation without `posix_fallocate` (macOS has none for ranges
    /// inside a file, `F_PREALLOCATE` only allocates past the end; Windows
    /// has none for sparse files): zeros are written into the holes of the
    /// range (`fill_holes`), which allocates their disk blocks or fails with
    /// ENOSPC (ERROR_DISK_FULL) on a full disk. A system or file system that
    /// cannot report holes: unsupported, the file stays sparse.
    #[cfg(not(target_os = "linux"))]
    fn fallocate(&mut self, off: u64, len: u64) -> io::Result<()> {
        match self.fill_holes(off, len) {
            Err(e) if e.kind() == io::ErrorKind::Unsupported => {
                self.reservation.unsupported = true;
                Ok(())
            }
            r => r,
        }
    }

    /// Allocates disk blocks for `[off, off + len)` by writing zeros into
    /// its holes (`sys::next_hole`); an `Unsupported` error when holes
    /// cannot be found, another error (ENOSPC on a full disk) when a write
    /// fails.
    ///
    /// Only holes are written, and of those only the pages that read as
    /// zeros through the mapping: blocks handed out earlier may hold data,
    /// and a page written through the mapping but not yet written back may
    /// still be a hole to the file system. Zeros written over zeros change
    /// nothing, and nobody writes the range meanwhile: the caller holds the
    /// heap's lock, and the blocks in the range are being handed out (not
    /// yet given to anyone) or were reserved, so are no holes, when they
    /// were handed out.
    #[cfg(any(not(target_os = "linux"), test))]
    fn fill_holes(&self, off: u64, len: u64) -> io::Result<()> {
        /// Zeros to copy from; never written, so (in `.bss`) it costs no memory.
        static ZEROS: [u8; 1 << 20] = [0; 1 << 20];
        let Some(f) = &self.file else { return Ok(()) };
        let end = off
            .checked_add(len)
            .filter(|&e| e <= self.len())
            .ok_or_else(|| io::Error::other("reservation beyond the end of the file"))?;
        if end > crate::sys::file_size_limit() {
            // Writing there raises SIGXFSZ.
            return Err(io::Error::new(
                io::ErrorKind::FileTooLarge,
                "cannot reserve disk space past the file size limit (ulimit -f)",
            ));
        }
        // `[from, to)` lies within one page, so within one extent.
        let zeros = |from: u64, to: u64| {
            self.bytes(from, to - from)
                .is_some_and(|b| b.iter().all(|&x| x == 0))
        };
        let mut at = off;
        while let Some((hole, data)) = crate::sys::next_hole(f, at, end)? {
            // Page by page; consecutive zero pages go out in one write of
            // up to 1 MiB (`[run, p)` is the pending write).
            let mut run = hole;
            let mut p = hole;
            while p < data {
                let next = ((p / PAGE + 1) * PAGE).min(data);
                let keep = !zeros(p, next);
                if keep || next - run > ZEROS.len() as u64 {
                    crate::sys::write_all_at(f, &ZEROS[..(p - run) as usize], run)?;
                    run = if keep { next } else { p };
                }
                p = next;
            }
            crate::sys::write_all_at(f, &ZEROS[..(data - run) as usize], run)?;
            if data <= at {
                break;
            }
            at = data;
        }
        Ok(())
    }
}

impl Mem for Mapping {
    #[inline(always)]
    fn load(&self, off: u64) -> u64 {
        if !self.shadow.is_empty() {
            if let Some(&w) = self.shadow.word(off) {
                return w;
            }
        }
        match self.addr(off, 8) {
            // SAFETY: the 8 bytes lie inside a live mapping (checked by
            // `addr`); `off` is 8-aligned by the `Mem` contract and extents
            // start page-aligned, so the read is aligned.
            Some(p) => unsafe { (p as *const u64).read() },
            None => {
                debug_assert!(false, "allocator read outside the mapping at {off}");
                0
            }
        }
    }

    #[inline(always)]
    fn store(&mut self, off: u64, val: u64) {
        if (!self.shadow.is_empty() || !self.in_reserved_chunk(off)) && self.store_slow(off, val) {
            return;
        }
        match self.addr(off, 8) {
            // SAFETY: as in `load`; the mapping is writable because only a
            // writable heap has an allocator.
            Some(p) if self.file.is_some() => unsafe { (p as *mut u64).write(val) },
            _ => debug_assert!(false, "allocator write outside the mapping at {off}"),
        }
    }

    /// Like `store`, but the word is read first and written only if it
    /// differs (the page is reserved, or the word shadowed, before a
    /// write). A read fault on a file mapping dirties nothing, so unchanged
    /// headers cost no write-back and no reservation.
    #[inline(always)]
    fn store_changed(&mut self, off: u64, val: u64) -> bool {
        if self.shadow.is_empty()
            && !self.in_reserved_chunk(off)
            && self.load_unreserved(off) == val
        {
            // Unchanged: nothing to reserve, so a writable open that finds
            // every header right makes no fallocate call for them.
            return false;
        }
        if (!self.shadow.is_empty() || !self.in_reserved_chunk(off)) && self.store_slow(off, val) {
            return true;
        }
        match self.addr(off, 8) {
            // SAFETY: as in `store`.
            Some(p) if self.file.is_some() => unsafe {
                let p = p as *mut u64;
                let changed = p.read() != val;
                if changed {
                    p.write(val);
                }
                changed
            },
            _ => {
                debug_assert!(false, "allocator write outside the mapping at {off}");
                false
            }
        }
    }
}

/// Read access to a heap file's bytes by offset: a [`Mapping`] (which may
/// be several extents) or a whole file image in memory. Both the open's
/// validation and `check` read through this, so every read is a checked
/// range.
pub trait View {
    /// Length of the file in bytes.
    fn size(&self) -> u64;
    /// The bytes `[off, off + len)`, if they lie in the file (and, for a
    /// mapping, inside one extent).
    fn bytes_at(&self, off: u64, len: u64) -> Option<&[u8]>;
}

impl View for [u8] {
    fn size(&self) -> u64 {
        self.len() as u64
    }
    fn bytes_at(&self, off: u64, len: u64) -> Option<&[u8]> {
        crate::format::bounds(off, len, self.len() as u64)
            .ok()
            .map(|r| &self[r])
    }
}

impl View for Mapping {
    fn size(&self) -> u64 {
        self.len()
    }
    fn bytes_at(&self, off: u64, len: u64) -> Option<&[u8]> {
        self.bytes(off, len)
    }
}

/// A `Mem` over a read-only view that keeps every store in memory: used to
/// rebuild an allocator over a file without writing it (`fmalloc_check()`'s
/// allocator walk, `check.rs`).
pub struct Overlay<'a> {
    pub base: &'a [u8],
    pub writes: std::collections::HashMap<u64, u64>,
}

impl<'a> Overlay<'a> {
    pub fn new(base: &'a [u8]) -> Self {
        Overlay {
            base,
            writes: Default::default(),
        }
    }
}

impl Mem for Overlay<'_> {
    fn load(&self, off: u64) -> u64 {
        if let Some(&v) = self.writes.get(&off) {
            return v;
        }
        crate::format::bounds(off, 8, self.base.len() as u64)
            .map(|r| crate::format::get_u64(&self.base[r], 0))
            .unwrap_or(0)
    }

    fn store(&mut self, off: u64, val: u64) {
        self.writes.insert(off, val);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_file(name: &str, len: u64) -> (std::path::PathBuf, File) {
        let p = std::env::temp_dir().join(format!("rfm-map-{}-{name}", std::process::id()));
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&p)
            .unwrap();
        f.set_len(len).unwrap();
        (p, f)
    }

    #[test]
    fn growth_keeps_old_addresses() {
        let (p, f) = temp_file("grow", 1 << 16);
        let mut m = Mapping::open_rw(f, 1 << 16).unwrap();
        m.write(100, b"hello").unwrap();
        let old = m.addr(100, 5).unwrap();
        let (s, e) = m.grow(1 << 16).unwrap();
        assert_eq!((s, e), (1 << 16, 2 << 16));
        assert_eq!(m.addr(100, 5).unwrap(), old);
        assert_eq!(m.bytes(100, 5).unwrap(), b"hello");
        m.write(s + 8, b"world").unwrap();
        // A range across two extents is not one mapping.
        assert!(m.addr(s - 2, 4).is_none());
        assert_eq!(m.offset_of(m.addr(s + 8, 1).unwrap()), Some(s + 8));
        assert_eq!(m.offset_of(std::ptr::null()), None);
        m.sync_all().unwrap();
        drop(m);
        let bytes = std::fs::read(&p).unwrap();
        assert_eq!(bytes.len(), 2 << 16);
        assert_eq!(&bytes[100..105], b"hello");
        assert_eq!(&bytes[(1 << 16) + 8..(1 << 16) + 13], b"world");
        std::fs::remove_file(&p).unwrap();
    }

    #[test]
    fn mem_round_trip_and_bounds() {
        let (p, f) = temp_file("mem", 1 << 16);
        let mut m = Mapping::open_rw(f, 1 << 16).unwrap();
        m.store(4096, 0xdead_beef);
        assert_eq!(m.load(4096), 0xdead_beef);
        assert!(m.addr(u64::MAX - 2, 8).is_none());
        assert!(m.addr((1 << 16) - 4, 8).is_none());
        std::fs::remove_file(&p).unwrap();
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn reservation_allocates_disk_blocks() {
        use std::os::unix::fs::MetadataExt;
        let len = 64 << 20;
        let (p, f) = temp_file("reserve", len);
        let mut m = Mapping::open_rw(f, len).unwrap();
        let blocks = || std::fs::metadata(&p).unwrap().blocks() * 512;
        assert!(blocks() < 1 << 20, "sparse file uses {}", blocks());
        m.reserve(CHUNK + 10, 100).unwrap();
        if !m.reservation.unsupported {
            assert!(blocks() >= CHUNK, "only {} bytes reserved", blocks());
            assert!(blocks() < 3 * CHUNK);
        }
        // Beyond the end is an error, not a silent success.
        assert!(m.reserve(len - 8, 16).is_err());
        std::fs::remove_file(&p).unwrap();
    }

    /// The reservation of macOS and Windows (tested here on Linux, which
    /// has `SEEK_HOLE` too): zeros go into the holes only, so bytes on disk
    /// and bytes written through the mapping but not yet written back are
    /// kept, and the holes get disk blocks.
    #[cfg(target_os = "linux")]
    #[test]
    fn fill_holes_allocates_and_keeps_data() {
        use std::os::unix::fs::{FileExt, MetadataExt};
        let len = 3 * CHUNK;
        let (p, f) = temp_file("fillholes", len);
        f.write_all_at(b"on disk", CHUNK + 5 * PAGE + 3).unwrap();
        f.sync_all().unwrap();
        let mut m = Mapping::open_rw(f, len).unwrap();
        // Written through the mapping only (a hole to the file system until
        // written back), at the very end of the chunk.
        m.write(2 * CHUNK - 8, b"in cache").unwrap();
        let blocks = || std::fs::metadata(&p).unwrap().blocks() * 512;
        let sparse = blocks() < 1 << 20;
        // An unaligned range: partial pages at both ends.
        m.fill_holes(CHUNK + 100, CHUNK - 200).unwrap();
        if sparse {
            assert!(blocks() >= CHUNK - 2 * PAGE, "only {} bytes", blocks());
            assert!(blocks() < CHUNK + 4 * PAGE, "{} bytes", blocks());
        }
        assert_eq!(m.bytes(CHUNK + 5 * PAGE + 3, 7).unwrap(), b"on disk");
        assert_eq!(m.bytes(2 * CHUNK - 8, 8).unwrap(), b"in cache");
        // Done twice: nothing changes.
        m.fill_holes(CHUNK, CHUNK).unwrap();
        assert!(m.fill_holes(len - 8, 16).is_err());
        m.sync_all().unwrap();
        drop(m);
        let bytes = std::fs::read(&p).unwrap();
        let nonzero: Vec<usize> = (0..bytes.len()).filter(|&i| bytes[i] != 0).collect();
        let data = (CHUNK + 5 * PAGE + 3) as usize;
        let cache = (2 * CHUNK - 8) as usize;
        assert!(nonzero
            .iter()
            .all(|&i| (data..data + 7).contains(&i) || (cache..cache + 8).contains(&i)));
        assert_eq!(&bytes[cache..cache + 8], b"in cache");
        std::fs::remove_file(&p).unwrap();
    }

    /// How many of the pages of `[off, off + len)` are in memory.
    #[cfg(target_os = "linux")]
    fn resident_pages(m: &Mapping, off: u64, len: u64) -> usize {
        let p = m.addr(off, len).unwrap();
        let mut v = vec![0u8; len.div_ceil(PAGE) as usize];
        // SAFETY: `p` is page-aligned (extents are, and `off` is) and the
        // range is mapped; `v` has one byte per page.
        let rc = unsafe { libc::mincore(p.cast(), len as usize, v.as_mut_ptr()) };
        assert_eq!(rc, 0);
        v.iter().filter(|&&b| b & 1 == 1).count()
    }

    /// Reserving a chunk brings it into memory by writing zeros into its
    /// holes only: bytes already in the file (on disk or only in memory)
    /// are kept, the rest reads as zeros.
    #[cfg(target_os = "linux")]
    #[test]
    fn prefault_fills_holes_and_keeps_data() {
        use std::os::fd::AsRawFd;
        use std::os::unix::fs::FileExt;
        let len = 3 * CHUNK;
        let (p, f) = temp_file("prefault", len);
        // Data on disk, evicted from memory: a block of an earlier session.
        f.write_all_at(b"on disk", CHUNK + 5 * PAGE + 3).unwrap();
        f.sync_all().unwrap();
        // SAFETY: plain syscall on an open descriptor.
        unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        let mut m = Mapping::open_rw(f, len).unwrap();
        // Data only in memory: an allocator header written before the chunk
        // is reserved, at the very end of the chunk.
        m.store(2 * CHUNK - 8, 0x1122_3344_5566_7788);
        assert!(resident_pages(&m, CHUNK, CHUNK) < 64);
        m.reserve(CHUNK + 100, 10).unwrap();
        if m.reservation.unsupported {
            return;
        }
        let pages = (CHUNK / PAGE) as usize;
        assert!(resident_pages(&m, CHUNK, CHUNK) >= pages - 2);
        // The chunks not reserved are left alone.
        assert!(resident_pages(&m, 0, CHUNK) < 64);
        assert!(resident_pages(&m, 2 * CHUNK, CHUNK) < 64);
        assert_eq!(m.bytes(CHUNK + 5 * PAGE + 3, 7).unwrap(), b"on disk");
        assert_eq!(m.load(2 * CHUNK - 8), 0x1122_3344_5566_7788);
        m.sync_all().unwrap();
        let bytes = std::fs::read(&p).unwrap();
        let chunk = &bytes[CHUNK as usize..2 * CHUNK as usize];
        let nonzero: Vec<usize> = (0..chunk.len()).filter(|&i| chunk[i] != 0).collect();
        let data = 5 * PAGE as usize + 3;
        assert!(nonzero
            .iter()
            .all(|&i| (data..data + 7).contains(&i) || i >= CHUNK as usize - 8));
        assert_eq!(&chunk[data..data + 7], b"on disk");
        std::fs::remove_file(&p).unwrap();
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn unreserve_block_keeps_reservations_and_punches_the_rest() {
        let len = 4 * CHUNK;
        let (p, f) = temp_file("unreserve", len);
        let mut m = Mapping::open_rw(f, len).unwrap();
        // Chunk 0 reserved; a header's unit reserved in chunk 2.
        m.reserve(0, 64).unwrap();
        m.reserve_units(2 * CHUNK + 8, 8).unwrap();
        // What a failed reservation of a block in chunks 0-3 left: data
        // (allocated space) everywhere.
        let file = m.file().unwrap();
        crate::sys::write_all_at(file, &vec![1u8; len as usize], 0).unwrap();
        let block = (CHUNK / 2, 3 * CHUNK);
        m.unreserve_block(block.0, block.1);
        let holes: Vec<(u64, u64)> =
            std::iter::successors(crate::sys::next_hole(file, 0, len).unwrap(), |&(_, end)| {
                crate::sys::next_hole(file, end, len).unwrap()
            })
            .collect();
        if !holes.is_empty() {
            // Chunk 0 and the unit [2 CHUNK, 2 CHUNK + UNIT) stay; the rest
            // of the block is given back; nothing past it.
            assert_eq!(
                holes,
                vec![
                    (CHUNK, 2 * CHUNK),
                    (2 * CHUNK + UNIT, 3 * CHUNK + CHUNK / 2)
                ]
            );
        }
        std::fs::remove_file(&p).unwrap();
    }

    /// A chunk that holds a block reserved by itself (the whole chunk did
    /// not fit on the disk) is never filled, even when reserved later.
    #[cfg(target_os = "linux")]
    #[test]
    fn no_prefault_chunks_are_left_alone() {
        let len = 2 * CHUNK;
        let (p, f) = temp_file("noprefault", len);
        let mut m = Mapping::open_rw(f, len).unwrap();
        m.reservation.no_prefault.insert(1);
        m.reserve(CHUNK, 64).unwrap();
        assert!(resident_pages(&m, CHUNK, CHUNK) < 64);
        m.reserve(0, 64).unwrap();
        if !m.reservation.unsupported {
            assert!(resident_pages(&m, 0, CHUNK) >= (CHUNK / PAGE) as usize - 2);
        }
        std::fs::remove_file(&p).unwrap();
    }
}

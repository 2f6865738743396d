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
//! reservation is reported (`Error::Full` upstream) instead. On other
//! operating systems the file stays sparse and a full disk can still raise
//! SIGBUS on first write (documented limitation).

use std::cell::Cell;
use std::collections::HashSet;
use std::fs::File;
use std::io;

use memmap2::{Mmap, MmapMut, MmapOptions};

use crate::alloc::Mem;

/// Granularity of disk reservation for handed-out blocks.
pub const CHUNK: u64 = 16 << 20;
const PAGE: u64 = 4096;

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

/// Disk reservation bookkeeping (Linux only does anything).
#[derive(Default)]
struct Reservation {
    /// For chunk `i`: reserved up to this absolute offset from the chunk start.
    reserved_to: Vec<u64>,
    /// Single pages reserved for allocator headers outside reserved chunks.
    pages: HashSet<u64>,
    /// The file system cannot preallocate: stop trying.
    unsupported: bool,
}

/// The mapped extents of one heap file.
pub struct Mapping {
    extents: Vec<Extent>,
    /// Index of the extent that served the last lookup.
    last: Cell<usize>,
    /// The read-write descriptor (None for a read-only mapping).
    file: Option<File>,
    reservation: Reservation,
    /// First reservation failure seen by `Mem::store` since the last `take_store_error`.
    store_error: Option<io::Error>,
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
            last: Cell::new(0),
            file: Some(file),
            reservation: Reservation::default(),
            store_error: None,
        })
    }

    /// Maps all of `file` (`len` bytes) read-only as one extent.
    pub fn open_ro(file: &File, len: u64) -> io::Result<Mapping> {
        let size = usize::try_from(len).map_err(|_| io::Error::other("file too large"))?;
        // SAFETY: read-only shared mapping of a file locked shared by this
        // process, so no cooperating writer changes it while mapped.
        let m = unsafe { MmapOptions::new().len(size).map(file)? };
        let base = m.as_ptr() as usize;
        Ok(Mapping {
            extents: vec![Extent {
                start: 0,
                end: len,
                base,
                region: Region::Ro(m),
            }],
            last: Cell::new(0),
            file: None,
            reservation: Reservation::default(),
            store_error: None,
        })
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
        let hit = |e: &Extent| e.start <= off && end <= e.end;
        if let Some(e) = self.extents.get(self.last.get()) {
            if hit(e) {
                return Some(e);
            }
        }
        let i = self.extents.iter().position(hit)?;
        self.last.set(i);
        self.extents.get(i)
    }

    /// Address of `[off, off + len)` if that range lies within one extent.
    pub fn addr(&self, off: u64, len: u64) -> Option<*mut u8> {
        let e = self.find(off, len)?;
        Some((e.base + (off - e.start) as usize) as *mut u8)
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

    /// msync of every extent, then fsync of the file.
    pub fn sync_all(&self) -> io::Result<()> {
        for e in &self.extents {
            if let Region::Rw(m) = &e.region {
                m.flush()?;
            }
        }
        match &self.file {
            Some(f) => f.sync_all(),
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
                return self.fallocate(off, len).map_err(|_| e);
            }
            for k in i..=j {
                self.reservation.reserved_to[k as usize] = need(k);
            }
            i = j + 1;
        }
        Ok(())
    }

    fn is_reserved(&self, off: u64) -> bool {
        let i = (off / CHUNK) as usize;
        self.reservation.unsupported
            || self.file.is_none()
            || self
                .reservation
                .reserved_to
                .get(i)
                .is_some_and(|&to| to >= off + 8)
            || self.reservation.pages.contains(&(off / PAGE))
    }

    /// Reserves the page holding `off` (for allocator headers).
    fn reserve_page(&mut self, off: u64) -> io::Result<()> {
        let page = off / PAGE * PAGE;
        let len = PAGE.min(self.len().saturating_sub(page));
        self.fallocate(page, len)?;
        self.reservation.pages.insert(off / PAGE);
        Ok(())
    }

    #[cfg(target_os = "linux")]
    fn fallocate(&mut self, off: u64, len: u64) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        let Some(f) = &self.file else { return Ok(()) };
        let (Ok(o), Ok(l)) = (libc::off_t::try_from(off), libc::off_t::try_from(len)) else {
            return Err(io::Error::other("offset too large to reserve"));
        };
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

    #[cfg(not(target_os = "linux"))]
    fn fallocate(&mut self, _off: u64, _len: u64) -> io::Result<()> {
        self.reservation.unsupported = true;
        Ok(())
    }

    /// The first reservation failure seen while the allocator wrote headers.
    pub fn take_store_error(&mut self) -> Option<io::Error> {
        self.store_error.take()
    }
}

impl Mem for Mapping {
    fn load(&self, off: u64) -> u64 {
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

    fn store(&mut self, off: u64, val: u64) {
        if !self.is_reserved(off) {
            if let Err(e) = self.reserve_page(off) {
                self.store_error.get_or_insert(e);
            }
        }
        match self.addr(off, 8) {
            // SAFETY: as in `load`; the mapping is writable because only a
            // writable heap has an allocator.
            Some(p) if self.file.is_some() => unsafe { (p as *mut u64).write(val) },
            _ => debug_assert!(false, "allocator write outside the mapping at {off}"),
        }
    }
}

/// A `Mem` over a read-only view that keeps every store in memory: used to
/// dry-run the allocator rebuild so that a file that fails it is never
/// written.
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
}

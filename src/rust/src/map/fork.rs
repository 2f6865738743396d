//! Ranges of a heap mapping that forked children get copy-on-write.
//!
//! A heap file is mapped shared (`MAP_SHARED`): a forked child
//! (`parallel::mclapply`) sees and writes the same pages as its parent.
//! That is what element data should do, but not what R's own node headers
//! may do (design invariant 6): the classic path (`r::vector::classic`) lets R put a
//! whole vector node, header included, in a heap block, and a child's
//! garbage collector writes mark bits and GC links into every node it
//! reaches. So such blocks are page-aligned and page-padded (their pages
//! hold nothing else), each is [`register`]ed here, and a `pthread_atfork`
//! child handler maps every registered range again, `MAP_PRIVATE |
//! MAP_FIXED` from the same file at the same address: the child starts from
//! the same bytes, and whatever it writes there (GC bits, elements) stays in
//! its private copies. The parent's mapping is untouched.
//!
//! The registry is also how the R layer recognises a node it put in a heap
//! ([`find`]): each range carries an opaque `tag` chosen by the caller.
//!
//! **Async-signal safety.** After `fork()` in a multi-threaded process only
//! async-signal-safe work is allowed in the child. The registry is guarded
//! by a spin lock that the *prepare* handler takes before the fork (so no
//! other thread can hold it across the fork) and the parent and child
//! handlers release; the child handler only walks the sorted map (no
//! allocation) and calls `mmap`. Everything it needs (address, length,
//! descriptor, file offset) was computed at [`register`].
//!
//! **Fork epochs.** A forked child also holds vectors over blocks that stay
//! shared (ALTREP data, named objects): if the parent freed such a block
//! and reused it for a new object, a child's late write would land in that
//! new object. So the parent must not reuse a block it frees while a child
//! forked earlier may still run. [`children_alive`] tells it: each fork
//! made after [`watch`] gets a pipe whose only write end lives in the child
//! (and in everything the child forks; `O_CLOEXEC`, so a program it
//! `exec`s drops it); the parent keeps the read end, which reports
//! end-of-file once every process that inherited the write end is gone. A
//! fork for which no pipe could be made (descriptors exhausted) makes
//! [`children_alive`] true for the rest of the process: blocks then stay
//! unused instead of risking a child's write.
//!
//! **Limits.** Each private range splits the child's mapping (adjacent
//! ranges are remapped as one): with very many classic vectors the kernel's
//! map count limit (`vm.max_map_count`, 65530 by default) can make a remap
//! fail. A failed remap leaves that range shared; [`failed_remaps`] counts
//! them (in the child).

use std::cell::UnsafeCell;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Once;

/// One registered range: `[addr, addr + len)` maps `[file_off, file_off +
/// len)` of the file open as `fd`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CowRange {
    pub addr: usize,
    pub len: usize,
    /// Descriptor of the file (-1 where there is no fork: the range is only
    /// recorded for [`find`]).
    pub fd: i32,
    pub file_off: u64,
}

struct Entry {
    range: CowRange,
    tag: usize,
    /// The range's first `HEAD` bytes as they were when the fork began
    /// (written by `prepare`, read by `child`; no fork on Windows).
    #[cfg_attr(not(unix), allow(dead_code))]
    head: [u8; HEAD],
}

/// Bytes at the start of a range a forked child gets as they were at the
/// fork: R's node header (and the allocator record before it) of a classic
/// vector, which the parent's garbage collector rewrites while the child
/// runs (mark bits, the links of its node lists). A private file mapping
/// shows the file's current bytes until the child first writes a page, so
/// without this a child's collector would follow the parent's new links
/// (a crash in the child's `gc()`). 32 bytes of `R_allocator_t` and 48 of
/// a vector's header on 64-bit platforms, rounded up.
const HEAD: usize = 128;

struct Registry {
    busy: AtomicBool,
    map: UnsafeCell<BTreeMap<usize, Entry>>,
    /// Read ends of the fork epochs' pipes (see the module docs).
    epochs: UnsafeCell<Vec<i32>>,
    /// The pipe `prepare` made for the fork in progress (`[-1, -1]` when
    /// none could be made). Unused where there is no fork.
    #[cfg_attr(not(unix), allow(dead_code))]
    pending: UnsafeCell<[i32; 2]>,
}

// SAFETY: `map`, `epochs` and `pending` are only touched while `busy` is
// held (see `with`, and the fork handlers, which hold it across the fork).
unsafe impl Sync for Registry {}

static REGISTRY: Registry = Registry {
    busy: AtomicBool::new(false),
    map: UnsafeCell::new(BTreeMap::new()),
    epochs: UnsafeCell::new(Vec::new()),
    pending: UnsafeCell::new([-1, -1]),
};
/// A child was forked without an epoch pipe: assume children forever.
static UNTRACKED: AtomicBool = AtomicBool::new(false);
static AT_FORK: Once = Once::new();
static FAILED: AtomicU64 = AtomicU64::new(0);
static PAGE_SIZE: AtomicUsize = AtomicUsize::new(0);

fn acquire() {
    while REGISTRY
        .busy
        .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        std::hint::spin_loop();
    }
}

fn release() {
    REGISTRY.busy.store(false, Ordering::Release);
}

fn with<T>(f: impl FnOnce(&mut BTreeMap<usize, Entry>) -> T) -> T {
    acquire();
    // SAFETY: `busy` is held: nobody else touches the map until `release`.
    let out = f(unsafe { &mut *REGISTRY.map.get() });
    release();
    out
}

/// The system's page size: ranges must start and end on its multiples.
pub fn page_size() -> usize {
    let known = PAGE_SIZE.load(Ordering::Relaxed);
    if known != 0 {
        return known;
    }
    #[cfg(unix)]
    // SAFETY: sysconf has no preconditions.
    let ps = match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
        n if n > 0 => n as usize,
        _ => 4096,
    };
    #[cfg(not(unix))]
    let ps = 4096;
    PAGE_SIZE.store(ps, Ordering::Relaxed);
    ps
}

/// Registers `range` (page-aligned, not overlapping a registered one) with
/// `tag`; every process forked from now on gets it copy-on-write, until
/// [`unregister`]. The descriptor must stay open while it is registered.
pub fn register(range: CowRange, tag: usize) {
    debug_assert!(range.addr.is_multiple_of(page_size()) && range.len.is_multiple_of(page_size()));
    register_at_fork();
    with(|m| {
        m.insert(
            range.addr,
            Entry {
                range,
                tag,
                head: [0; HEAD],
            },
        )
    });
}

/// Forgets the range that starts at `addr`; returns it and its tag.
pub fn unregister(addr: usize) -> Option<(CowRange, usize)> {
    with(|m| m.remove(&addr)).map(|e| (e.range, e.tag))
}

/// The registered range that contains `addr`, and its tag.
pub fn find(addr: usize) -> Option<(CowRange, usize)> {
    with(|m| {
        let (_, e) = m.range(..=addr).next_back()?;
        (addr < e.range.addr + e.range.len).then_some((e.range, e.tag))
    })
}

/// Whether a registered range containing `addr` is still shared with the
/// file in this process (false in a forked child, which remapped it).
pub fn is_shared(addr: usize) -> bool {
    find(addr).is_some_and(|(r, _)| r.fd >= 0)
}

/// Ranges whose remap failed in this process (a forked child), see the
/// module docs.
pub fn failed_remaps() -> u64 {
    FAILED.load(Ordering::Relaxed)
}

/// Starts tracking forks (idempotent): from now on [`children_alive`]
/// knows about every child this process forks.
pub fn watch() {
    register_at_fork();
}

/// Whether a process forked after [`watch`] (or one of its descendants)
/// may still be running. Closes the epochs whose children are all gone.
/// Always false where there is no fork.
pub fn children_alive() -> bool {
    if UNTRACKED.load(Ordering::Relaxed) {
        return true;
    }
    acquire();
    // SAFETY: `busy` is held.
    let epochs = unsafe { &mut *REGISTRY.epochs.get() };
    #[cfg(unix)]
    epochs.retain(|&fd| {
        let mut p = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: polls one descriptor this module owns, without waiting.
        let n = unsafe { libc::poll(&mut p, 1, 0) };
        // Nobody writes to the pipe: readable or hung up means every write
        // end is closed.
        let gone = n == 1 && p.revents & (libc::POLLHUP | libc::POLLIN | libc::POLLERR) != 0;
        if gone {
            // SAFETY: the descriptor is ours and dropped from the list.
            unsafe { libc::close(fd) };
        }
        !gone
    });
    let alive = !epochs.is_empty();
    release();
    alive
}

fn register_at_fork() {
    AT_FORK.call_once(|| {
        #[cfg(unix)]
        // SAFETY: the handlers only touch atomics, walk a map without
        // allocating and call mmap: async-signal-safe, valid around fork.
        unsafe {
            libc::pthread_atfork(Some(prepare), Some(parent), Some(child));
        }
    });
}

#[cfg(unix)]
extern "C" fn prepare() {
    acquire();
    // SAFETY: `busy` is held (taken above, released by parent/child). The
    // parent, before the fork: every range a child will remap (`fd >= 0`)
    // is a live mapping of at least a page (its owner unregisters it
    // before unmapping), so its first HEAD bytes are readable.
    unsafe {
        *REGISTRY.pending.get() = epoch_pipe();
        for e in (*REGISTRY.map.get()).values_mut() {
            if e.range.fd >= 0 {
                std::ptr::copy_nonoverlapping(e.range.addr as *const u8, e.head.as_mut_ptr(), HEAD);
            }
        }
    }
}

/// A pipe whose ends close at `exec` (`[-1, -1]` on failure). `pipe` +
/// `fcntl` rather than `pipe2`, which macOS lacks; runs in the parent before
/// the fork, where no async-signal rule applies yet.
#[cfg(unix)]
fn epoch_pipe() -> [i32; 2] {
    let mut fds = [-1i32; 2];
    // SAFETY: `fds` has room for the two descriptors `pipe` writes; fcntl
    // only changes flags of descriptors made here, closed again on failure.
    unsafe {
        if libc::pipe(fds.as_mut_ptr()) != 0 {
            return [-1, -1];
        }
        for fd in fds {
            if libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) != 0 {
                libc::close(fds[0]);
                libc::close(fds[1]);
                return [-1, -1];
            }
        }
    }
    fds
}

#[cfg(unix)]
extern "C" fn parent() {
    // SAFETY: `busy` is held since `prepare`; this is the parent, after the
    // fork, where allocating is allowed.
    unsafe {
        let [r, w] = std::mem::replace(&mut *REGISTRY.pending.get(), [-1, -1]);
        if r < 0 {
            UNTRACKED.store(true, Ordering::Relaxed);
        } else {
            libc::close(w);
            (*REGISTRY.epochs.get()).push(r);
        }
    }
    release();
}

#[cfg(unix)]
extern "C" fn child() {
    // SAFETY: `prepare` took the lock before the fork; this thread is the
    // only one in the child. Iterating a BTreeMap does not allocate.
    let map = unsafe { &mut *REGISTRY.map.get() };
    // Remaps a run of adjacent ranges; then each of its ranges starts as
    // it was at the fork (see `HEAD`), whatever the parent wrote there
    // since. A range whose remap failed stays shared and is left alone:
    // writing there would write the parent's file.
    let finish = |c: &CowRange| {
        if remap_private(c) {
            for e in map.range(c.addr..c.addr + c.len).map(|(_, e)| e) {
                // SAFETY: the range is this child's private mapping now, at
                // least a page long; copying into it is async-signal-safe.
                unsafe {
                    std::ptr::copy_nonoverlapping(e.head.as_ptr(), e.range.addr as *mut u8, HEAD)
                };
            }
        }
    };
    let mut run: Option<CowRange> = None;
    for e in map.values() {
        let r = e.range;
        if r.fd < 0 {
            continue;
        }
        match run.as_mut() {
            Some(c)
                if c.fd == r.fd
                    && c.addr + c.len == r.addr
                    && c.file_off + c.len as u64 == r.file_off =>
            {
                c.len += r.len;
            }
            _ => {
                if let Some(c) = run {
                    finish(&c);
                }
                run = Some(r);
            }
        }
    }
    if let Some(c) = run {
        finish(&c);
    }
    // The ranges are private here now: a grandchild must inherit this
    // child's copies (plain copy-on-write of a private mapping), not map the
    // file's bytes again.
    for e in map.values_mut() {
        e.range.fd = -1;
    }
    // SAFETY: as above. The child keeps the write end (that is the point)
    // and only drops its copy of the read end; `close` is async-signal-safe.
    unsafe {
        let [r, _w] = std::mem::replace(&mut *REGISTRY.pending.get(), [-1, -1]);
        if r >= 0 {
            libc::close(r);
        }
    }
    release();
}

/// Maps `r` again, private to this process, from the same file bytes.
#[cfg(unix)]
fn remap_private(r: &CowRange) -> bool {
    let Ok(off) = libc::off_t::try_from(r.file_off) else {
        FAILED.fetch_add(1, Ordering::Relaxed);
        return false;
    };
    // SAFETY: the range is a page-aligned part of a live shared mapping of
    // the same file at the same offsets (registered by its owner, which
    // unregisters it before unmapping); replacing it by a private mapping of
    // the same bytes changes no value a reader sees.
    let p = unsafe {
        libc::mmap(
            r.addr as *mut libc::c_void,
            r.len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_FIXED,
            r.fd,
            off,
        )
    };
    if p == libc::MAP_FAILED || p as usize != r.addr {
        FAILED.fetch_add(1, Ordering::Relaxed);
        return false;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn find_locates_the_containing_range() {
        let ps = page_size();
        let base = 1usize << 40; // never dereferenced, fd -1: never remapped
        let a = CowRange {
            addr: base,
            len: 2 * ps,
            fd: -1,
            file_off: 0,
        };
        let b = CowRange {
            addr: base + 4 * ps,
            len: ps,
            fd: -1,
            file_off: 0,
        };
        register(a, 1);
        register(b, 2);
        assert_eq!(find(base + ps + 8), Some((a, 1)));
        assert_eq!(find(base + 2 * ps), None);
        assert_eq!(find(base + 4 * ps), Some((b, 2)));
        assert_eq!(find(base - 1), None);
        assert_eq!(unregister(base), Some((a, 1)));
        assert_eq!(find(base + 8), None);
        assert_eq!(unregister(base + 4 * ps), Some((b, 2)));
    }

    /// In a forked child a registered range is private (its writes reach
    /// neither the parent nor the file) and the rest of the mapping stays
    /// shared.
    #[cfg(unix)]
    #[test]
    fn forked_child_gets_private_copies_of_registered_ranges() {
        use std::os::unix::io::AsRawFd;
        let ps = page_size();
        let path = std::env::temp_dir().join(format!("rfm-fork-{}", std::process::id()));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        file.set_len(3 * ps as u64).unwrap();
        // SAFETY: a fresh file of this test, mapped once.
        let mut m = unsafe { memmap2::MmapOptions::new().len(3 * ps).map_mut(&file) }.unwrap();
        m[ps] = 5;
        let base = m.as_mut_ptr() as usize;
        let range = CowRange {
            addr: base + ps,
            len: ps,
            fd: file.as_raw_fd(),
            file_off: ps as u64,
        };
        register(range, 9);
        assert!(is_shared(base + ps));
        // SAFETY: the child only reads and writes mapped bytes and exits
        // with _exit (async-signal-safe work only).
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: both addresses are inside the live mapping.
            unsafe {
                let private = (base + ps) as *mut u8;
                // Same bytes as before the fork; private from now on (a
                // grandchild inherits this copy).
                let ok = *private == 5 && !is_shared(base + ps);
                *private = 1;
                *(base as *mut u8) = 2;
                *((base + 2 * ps) as *mut u8) = 3;
                libc::_exit(if ok && failed_remaps() == 0 { 0 } else { 1 });
            }
        }
        assert!(pid > 0);
        let mut status = 0;
        // SAFETY: waits for the child forked above.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
        assert_eq!((m[0], m[ps], m[2 * ps]), (2, 5, 3));
        assert_eq!(std::fs::read(&path).unwrap()[ps], 5);
        assert_eq!(unregister(base + ps), Some((range, 9)));
        drop(m);
        std::fs::remove_file(&path).unwrap();
    }
}

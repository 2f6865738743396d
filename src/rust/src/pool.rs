//! Shared string pools: every vector over one string-pool block of one open
//! heap holds the same [`Pool`], so where the pool lives (block, size) is one
//! fact with one owner. Growth moves or resizes the pool for every view at
//! once; no vector keeps a location that can go stale.
//!
//! A [`Pool`] holds exactly one session reference to its current block
//! (`Heap::retain`/`release`); the vectors hold the `Pool`. Growth follows
//! the core's ownership rule (`Heap::realloc` never moves a block another
//! holder sees): a named pool is compacted into a new block and its name
//! moved there in one commit (`Heap::move_name`); an unnamed pool is resized
//! with `Heap::realloc`, which copies instead of moving when anyone else
//! still holds the block.
//!
//! Forked children (`parallel::mclapply`) share the parent's file mapping
//! but not its allocator or this table: a child may overwrite an element in
//! place (an `NA`, or a string not longer than the one it replaces), which
//! the parent and the other children see; any write that needs room in the
//! pool (an append or growth) is `Error::Forked`, since two children
//! appending at the same free end would overwrite each other's strings.

use std::collections::HashMap;
use std::ptr::NonNull;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use once_cell::sync::Lazy;

use crate::error::{Error, Result};
use crate::heap::{BlockDesc, ElemType, Heap};
use crate::strpool::{self, Elt, Grow, Layout};

/// Where a pool is now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    /// Payload offset of the block (pool starts there).
    pub block: u64,
    /// Bytes of the pool (the block's usable size when it was last placed).
    pub bytes: u64,
}

struct State {
    loc: Location,
    /// Address of the block in the mapping (mapped memory never moves).
    addr: NonNull<u8>,
    /// Incremented by every write: a view that copied the strings (R's
    /// expanded vector) knows when its copy is stale.
    generation: u64,
}

struct Inner {
    heap: Heap,
    state: Mutex<State>,
}

// SAFETY: `addr` points into the heap's mapping, which `heap` keeps alive;
// every access goes through the mutex.
unsafe impl Send for Inner {}
unsafe impl Sync for Inner {}

impl Drop for Inner {
    fn drop(&mut self) {
        let block = self
            .state
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .loc
            .block;
        let _ = self.heap.release(block);
        forget_dead(block);
    }
}

/// Open pools by block offset (several heaps may use one offset).
type Table = HashMap<u64, Vec<Weak<Inner>>>;
static TABLE: Lazy<Mutex<Table>> = Lazy::new(|| Mutex::new(HashMap::new()));

fn table() -> MutexGuard<'static, Table> {
    crate::heap::lock(&TABLE)
}

/// Drops the table's dead entries for `block`. Never waits for the table's
/// lock: a pool is dropped by R's garbage collector, which R can run while
/// this thread holds it (from a signal handler, see `Heap::release`); a
/// dead entry left then is harmless (lookups skip what does not upgrade)
/// and goes at the next call.
fn forget_dead(block: u64) {
    let Some(mut t) = crate::heap::try_lock(&TABLE) else {
        return;
    };
    if let Some(v) = t.get_mut(&block) {
        v.retain(|w| w.strong_count() > 0);
        if v.is_empty() {
            t.remove(&block);
        }
    }
}

/// A handle on a shared string pool; clones are views of the same pool.
#[derive(Clone)]
pub struct Pool(Arc<Inner>);

/// How a new view gets its hold on the block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    /// The caller's own reference (a block just allocated) is handed over.
    Adopt,
    /// The pool takes a reference of its own (`Heap::retain`).
    Retain,
}

impl Pool {
    /// The pool over `block` (a validated string pool of `bytes` bytes):
    /// the one already open in this process, or a new one.
    pub fn open(heap: &Heap, block: u64, bytes: u64, hold: Hold) -> Result<Pool> {
        let mut t = table();
        let found = t
            .get(&block)
            .into_iter()
            .flatten()
            .filter_map(Weak::upgrade)
            .find(|p| p.heap.same(heap));
        if let Some(p) = found {
            drop(t);
            if hold == Hold::Adopt {
                // Cannot happen (a fresh block has no pool yet); keep the
                // counts right anyway.
                heap.release(block)?;
            }
            return Ok(Pool(p));
        }
        let addr = match heap.ptr(block, bytes) {
            Ok(a) => a,
            Err(e) => {
                if hold == Hold::Adopt {
                    let _ = heap.release(block);
                }
                return Err(e);
            }
        };
        if hold == Hold::Retain {
            heap.retain(block)?;
        }
        let inner = Arc::new(Inner {
            heap: heap.clone(),
            state: Mutex::new(State {
                loc: Location { block, bytes },
                addr,
                generation: 0,
            }),
        });
        t.entry(block).or_default().push(Arc::downgrade(&inner));
        Ok(Pool(inner))
    }

    pub fn heap(&self) -> &Heap {
        &self.0.heap
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.0.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn location(&self) -> Location {
        self.lock().loc
    }

    /// The block as the catalog describes it.
    pub fn desc(&self) -> BlockDesc {
        let loc = self.location();
        BlockDesc {
            offset: loc.block,
            data_offset: loc.block,
            elem: ElemType::String,
            length: loc.bytes,
        }
    }

    pub fn generation(&self) -> u64 {
        self.lock().generation
    }

    /// Whether two handles are views of the same pool.
    pub fn same(&self, other: &Pool) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// Runs `f` on the pool's bytes. The slice stays valid after `f`
    /// returns for as long as this pool is not written (its block is held).
    pub fn read<R>(&self, f: impl FnOnce(&[u8]) -> R) -> R {
        let st = self.lock();
        // SAFETY: [addr, addr + bytes) is the pool's block, mapped while the
        // heap lives and held by this pool.
        let buf = unsafe { std::slice::from_raw_parts(st.addr.as_ptr(), st.loc.bytes as usize) };
        f(buf)
    }

    /// Writes `v` at element `i`, growing the pool when it is full.
    /// `malloc` allocates a new block (the caller's policy, e.g. a garbage
    /// collection before retrying a full heap). In a forked child a write
    /// that needs room is `Error::Forked` and changes nothing.
    pub fn set(
        &self,
        i: u64,
        v: Elt<'_>,
        malloc: &mut dyn FnMut(&Heap, u64) -> Result<u64>,
    ) -> Result<()> {
        let heap = &self.0.heap;
        let corrupt = |e: strpool::PoolError| {
            Error::corrupt(
                heap.path(),
                format!("element {} of a character vector: {e}", i.saturating_add(1)),
            )
        };
        let mut st = self.lock();
        loop {
            // SAFETY: as in `read`; the heap is writable (checked by the
            // callers: vectors of read-only heaps never write their pool).
            let buf =
                unsafe { std::slice::from_raw_parts_mut(st.addr.as_ptr(), st.loc.bytes as usize) };
            let mut l = strpool::layout(buf).map_err(corrupt)?;
            if heap.is_forked() && !strpool::fits_in_place(buf, &l, i, v).map_err(corrupt)? {
                return Err(Error::Forked {
                    path: heap.path().to_path_buf(),
                });
            }
            match strpool::set(buf, &mut l, i, v) {
                Ok(()) => {
                    st.generation += 1;
                    return Ok(());
                }
                Err(strpool::PoolError::Full { needed }) => {
                    grow(&self.0, &mut st, &l, needed, malloc)?;
                }
                Err(e) => return Err(corrupt(e)),
            }
        }
    }
}

impl Pool {
    /// Makes room for `bytes` more bytes of strings, growing the pool now
    /// (once, or twice after a compaction that left too little), so that
    /// writes appending that much need no growth: a batch of writes that
    /// reserves first either fails before its first write (full disk or
    /// heap) or writes everything. In a forked child a reservation that
    /// needs growth is `Error::Forked`.
    pub fn reserve(
        &self,
        bytes: u64,
        malloc: &mut dyn FnMut(&Heap, u64) -> Result<u64>,
    ) -> Result<()> {
        let heap = &self.0.heap;
        let mut st = self.lock();
        loop {
            // SAFETY: as in `set`.
            let buf =
                unsafe { std::slice::from_raw_parts_mut(st.addr.as_ptr(), st.loc.bytes as usize) };
            let l = strpool::layout(buf).map_err(|e| Error::corrupt(heap.path(), e.to_string()))?;
            if l.cap - l.used >= bytes {
                return Ok(());
            }
            if heap.is_forked() {
                return Err(Error::Forked {
                    path: heap.path().to_path_buf(),
                });
            }
            grow(&self.0, &mut st, &l, bytes, malloc)?;
        }
    }
}

/// Moves or resizes the pool so that `needed` more bytes fit; updates the
/// one shared location (and the table's key).
fn grow(
    me: &Arc<Inner>,
    st: &mut State,
    l: &Layout,
    needed: u64,
    malloc: &mut dyn FnMut(&Heap, u64) -> Result<u64>,
) -> Result<()> {
    let too_long = || Error::Invalid("a character vector's string pool would be too large".into());
    let heap = &me.heap;
    let old = st.loc.block;
    // A named pool moves (new block + catalog update in one commit): a name
    // never points at a block that was resized or freed.
    let named = heap.is_named(old);
    let plan = match strpool::plan_grow(l, needed) {
        Grow::Realloc { cap } if named => Grow::Compact { cap },
        plan => plan,
    };
    let (block, bytes, addr) = match plan {
        Grow::Compact { cap } => {
            let bytes = strpool::block_size(l.n, cap).ok_or_else(too_long)?;
            let off = malloc(heap, bytes)?;
            let placed = heap.ptr(off, bytes).and_then(|p| {
                // SAFETY: the fresh block [p, p + bytes) is mapped and
                // unshared; the old pool is a distinct block.
                let dst = unsafe { std::slice::from_raw_parts_mut(p.as_ptr(), bytes as usize) };
                // SAFETY: the pool's current block, held by this pool.
                let src =
                    unsafe { std::slice::from_raw_parts(st.addr.as_ptr(), st.loc.bytes as usize) };
                strpool::compact_into(src, l, dst)
                    .map_err(|e| Error::corrupt(heap.path(), e.to_string()))?;
                if named {
                    let desc = BlockDesc {
                        offset: off,
                        data_offset: off,
                        elem: ElemType::String,
                        length: bytes,
                    };
                    heap.move_name(old, &desc)?;
                }
                Ok(p)
            });
            match placed {
                Ok(p) => {
                    let _ = heap.release(old);
                    (off, bytes, p)
                }
                Err(e) => {
                    let _ = heap.release(off);
                    return Err(e);
                }
            }
        }
        Grow::Realloc { cap } => {
            let bytes = strpool::block_size(l.n, cap).ok_or_else(too_long)?;
            // Never moves a block another holder sees: then it copies.
            let off = heap.realloc(old, bytes)?;
            let p = heap.ptr(off, bytes)?;
            // SAFETY: the block now held by this pool, `bytes` long.
            let buf = unsafe { std::slice::from_raw_parts_mut(p.as_ptr(), bytes as usize) };
            let mut l =
                strpool::layout(buf).map_err(|e| Error::corrupt(heap.path(), e.to_string()))?;
            strpool::grow_capacity(buf, &mut l);
            (off, bytes, p)
        }
    };
    st.loc = Location { block, bytes };
    st.addr = addr;
    st.generation += 1;
    if block != old {
        let mut t = table();
        let mut moved = None;
        if let Some(v) = t.get_mut(&old) {
            if let Some(k) = v
                .iter()
                .position(|w| std::ptr::eq(w.as_ptr(), Arc::as_ptr(me)))
            {
                moved = Some(v.swap_remove(k));
            }
            if v.is_empty() {
                t.remove(&old);
            }
        }
        if let Some(w) = moved {
            t.entry(block).or_default().push(w);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::heap::OpenOptions;

    /// A heap in a fresh file, removed when the guard drops.
    struct Dir(std::path::PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn heap() -> (Dir, Heap) {
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let k = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("rfm-pool-{}-{k}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let opts = OpenOptions {
            initial_size: Some(1 << 20),
            ..OpenOptions::default()
        };
        let (h, _) = Heap::open(&dir.join("h.bin"), &opts).unwrap();
        (Dir(dir), h)
    }

    fn new_pool(h: &Heap, n: u64, cap: u64) -> Pool {
        let bytes = strpool::block_size(n, cap).unwrap();
        let off = h.malloc(bytes).unwrap();
        let p = h.ptr(off, bytes).unwrap();
        let buf = unsafe { std::slice::from_raw_parts_mut(p.as_ptr(), bytes as usize) };
        strpool::init(buf, n).unwrap();
        Pool::open(h, off, bytes, Hold::Adopt).unwrap()
    }

    fn get(p: &Pool, i: u64) -> Option<Vec<u8>> {
        p.read(|buf| {
            let l = strpool::layout(buf).unwrap();
            strpool::get(buf, &l, i).unwrap().map(|(b, _)| b.to_vec())
        })
    }

    fn plain(h: &Heap, n: u64) -> Result<u64> {
        h.malloc(n)
    }

    #[test]
    fn a_pool_dropped_while_the_table_is_locked_does_not_wait() {
        let (_d, h) = heap();
        let p = new_pool(&h, 4, 16);
        let block = p.location().block;
        // As R's garbage collector would, from a signal handler that came
        // while this thread held the table: it waited forever.
        let t = table();
        drop(p);
        drop(t);
        assert_eq!(h.session_refs(), 0);
        // The dead entry goes at the next call (other tests' heaps may
        // have pools at the same offset: the table is not looked at).
        forget_dead(block);
    }

    #[test]
    fn views_of_one_pool_see_growth() {
        let (_d, h) = heap();
        let a = new_pool(&h, 4, 16);
        let loc = a.location();
        let b = Pool::open(&h, loc.block, loc.bytes, Hold::Retain).unwrap();
        assert!(a.same(&b));
        let long = vec![b'x'; 5000];
        a.set(1, Some((&long, strpool::Encoding::Native)), &mut plain)
            .unwrap();
        assert_ne!(a.location(), loc);
        assert_eq!(b.location(), a.location());
        assert_eq!(get(&b, 1).as_deref(), Some(&long[..]));
        b.set(2, Some((b"yy", strpool::Encoding::Native)), &mut plain)
            .unwrap();
        assert_eq!(get(&a, 2).as_deref(), Some(&b"yy"[..]));
        // A later view over the current block is the same pool.
        let c = Pool::open(&h, a.location().block, 0, Hold::Retain).unwrap();
        assert!(c.same(&a));
        let last = a.location().block;
        assert_eq!(h.holders(last), 1);
        drop((a, b, c));
        assert_eq!(h.holders(last), 0);
        h.check_invariants().unwrap();
    }

    #[test]
    fn named_pool_moves_its_name() {
        let (_d, h) = heap();
        let a = new_pool(&h, 2, 8);
        h.put("s", b"", &[a.desc()], false).unwrap();
        let old = a.location().block;
        let long = vec![b'z'; 3000];
        a.set(0, Some((&long, strpool::Encoding::Utf8)), &mut plain)
            .unwrap();
        let now = a.location().block;
        assert_ne!(now, old);
        assert_eq!(h.get("s").unwrap().blocks[0], a.desc());
        assert!(h.is_named(now));
        assert!(!h.is_named(old));
        h.check_invariants().unwrap();
    }
}

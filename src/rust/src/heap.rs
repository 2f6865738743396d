//! The heap facade: one open heap file = mapping + allocator + catalog + lock.
//!
//! CONTRACT (owned by the core helper; the R layer relies on exactly this API).
//! `Heap` is a cheap clone (an `Arc`). The mapping, the file and its lock live
//! until the last clone is dropped, so R vectors that hold a clone keep their
//! memory mapped after the user closed the heap (invariant 3). Opening a path
//! that is still alive in this process (the same file: same device and inode,
//! or volume and file index on Windows, whatever path names it) returns the
//! same shared heap when the mode matches, an `Error::Locked` otherwise. A
//! file deleted and created anew at the same path is another heap.
//!
//! How the pieces fit:
//! - **Open** locks the file (lock.rs), then validates everything (format::,
//!   catalog::, and for a writable open a dry run of the allocator rebuild in
//!   memory) before anything is written: a rejected file is left exactly as
//!   it was (bytes and modification time). An empty file is formatted.
//! - **Allocator state is never persisted.** A writable open rebuilds it from
//!   the live blocks: the catalog block, every meta block and every named
//!   data block. Everything else, including unnamed blocks of an earlier
//!   session that crashed, is free.
//! - **References.** `malloc` gives a block one session reference;
//!   `retain`/`release` count them; `put` marks blocks named. A block is freed
//!   when it has no reference and no name. This table is the one owner of
//!   block ownership: `is_named`, `holders` and `named_desc` answer from it,
//!   and `realloc` never resizes, moves or frees a block someone else holds
//!   (a name or another reference): the caller gets a copy instead.
//! - **Commit** (put/remove/rename): new meta and catalog blob into fresh
//!   blocks, msync; then the inactive header slot with generation + 1, msync;
//!   only then the old catalog/meta blocks are freed. A crash at any point
//!   leaves the old or the new catalog in force.
//! - **Growth** appends a separately mapped extent (map/), which becomes a
//!   new allocator arena; nothing already mapped moves.
//! - **Fork**: the process that opened the heap owns its allocator. A forked
//!   child may read and write blocks but gets `Error::Forked` for malloc,
//!   realloc, put, remove and rename; its `release` and `Drop` do nothing.
//!   While children forked after the open may run, the parent quarantines
//!   the blocks it frees instead of reusing them (`State::quarantine`): a
//!   child's late write to a vector the parent dropped or removed lands in
//!   space nobody uses, never in a new object.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use once_cell::sync::Lazy;

use crate::alloc::{self, Allocator};
use crate::catalog::{self, StoredBlock, StoredEntry};
use crate::error::{Error, Result};
/// The element types of stored blocks live with the file format.
pub use crate::format::ElemType;
use crate::format::{
    bounds, check_file_len, claimed_generation, fnv1a64, new_heap_id, now_ms, read_slots, round_up,
    slot_offset, slot_unchecked, Header, Slot, FILE_GRANULE, HEADER_SIZE, MAX_GENERATION,
    SLOT_SIZE,
};
use crate::lock::{self, Owner};
use crate::map::{fork, Mapping, Overlay, View};
use crate::sys::FileId;

/// One block of a named object, as stored in the catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockDesc {
    /// Payload offset of the allocator block (as returned by `malloc`).
    pub offset: u64,
    /// Absolute file offset of the first element (>= `offset`; differs for
    /// classic vectors, whose block starts with R's own header).
    pub data_offset: u64,
    pub elem: ElemType,
    /// Number of elements (bytes for String/Bytes).
    pub length: u64,
}

/// A named object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    /// Opaque bytes of the R layer (type, attributes, structure).
    pub meta: Vec<u8>,
    pub blocks: Vec<BlockDesc>,
    /// Unix time in milliseconds.
    pub created_ms: i64,
    pub modified_ms: i64,
    /// Why this object cannot be read (its meta fails its checksum), if it
    /// cannot; `meta` is then empty. Only [`Heap::list`] returns such
    /// entries: [`Heap::get`] gives `Error::Corrupt` for them.
    pub damaged: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct OpenOptions {
    pub readonly: bool,
    /// Size of a newly created heap in bytes (sparse). `None`: default.
    pub initial_size: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct Info {
    pub path: std::path::PathBuf,
    pub heap_id: [u8; 16],
    pub readonly: bool,
    pub file_bytes: u64,
    /// Bytes the file takes on disk (`None` when the system cannot say).
    pub disk_bytes: Option<u64>,
    pub used_bytes: u64,
    pub free_bytes: u64,
    pub objects: u64,
}

/// Default size of a new heap: 1 GiB (sparse).
pub const DEFAULT_SIZE: u64 = 1 << 30;
/// Growth adds at least this fraction (1/GROW_DIVISOR) of the current size.
const GROW_DIVISOR: u64 = 4;

/// Where a commit stops to simulate a crash (tests only).
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailPoint {
    /// After the new catalog block is written and flushed, before the slot.
    BeforeSlot,
    /// After the new slot is written and flushed, before old blocks are freed.
    AfterSlot,
}

/// Same-process registry: file identity -> the open heap, so that a second
/// open in this process shares the mapping instead of fighting over the lock.
/// Keyed by identity, not path: a heap file that was deleted (or renamed
/// away) while its vectors live keeps its identity (the open file keeps its
/// inode), and a new file at its path is a different heap.
static REGISTRY: Lazy<Mutex<HashMap<FileId, Weak<Shared>>>> = Lazy::new(Default::default);

/// An open heap file. Cheap to clone; see the module docs for lifetimes.
#[derive(Clone)]
pub struct Heap {
    shared: Arc<Shared>,
}

struct Shared {
    path: PathBuf,
    heap_id: [u8; 16],
    readonly: bool,
    owner: Owner,
    /// Declared before `_lock`: the mapping goes before the lock does.
    state: Mutex<State>,
    /// Why the open fell back to an older commit, if it did.
    recovery: Option<String>,
    /// The locked descriptor of a read-only heap (a writable heap's lives in
    /// its `Mapping`); never unlocked explicitly, read for `info`.
    _lock: Option<File>,
}

/// A catalog entry as held in memory: the stored form plus its meta bytes.
struct Named {
    stored: StoredEntry,
    meta: Vec<u8>,
    /// Set when the meta fails its checksum (`meta` is then empty): the
    /// object is listed but cannot be read; the rest of the heap can.
    damaged: Option<String>,
}

/// Session references to a block handed out by (or named in) this heap.
#[derive(Debug, Clone, Copy)]
struct Ref {
    count: u64,
    named: bool,
    capacity: u64,
}

struct State {
    map: Mapping,
    /// `None` for a read-only heap.
    alloc: Option<Allocator>,
    catalog: BTreeMap<String, Named>,
    slot_index: usize,
    slot: Slot,
    /// Every block a session reference or a catalog entry keeps alive.
    refs: RefTable,
    fail: Option<FailPoint>,
    /// A simulated crash happened: refuse everything, write nothing more.
    crashed: bool,
    /// Blocks freed while forked children may still run: they may hold
    /// vectors over them, so the blocks are not reused until every such
    /// child is gone (`map::fork::children_alive`).
    quarantine: Vec<u64>,
}

/// Hashes block offsets (distinct multiples of 64) with one multiply: the
/// reference table is touched on every malloc and release.
#[derive(Default)]
struct OffsetHasher(u64);

impl std::hash::Hasher for OffsetHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }
    fn write_u64(&mut self, x: u64) {
        self.0 = (x >> 6).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

type RefTable = HashMap<u64, Ref, std::hash::BuildHasherDefault<OffsetHasher>>;

fn lock_state(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn corrupt(path: &Path) -> impl Fn(String) -> Error + '_ {
    move |what| Error::corrupt(path, what)
}

/// The canonical path of `path`, creating an empty file for a writable open.
fn canonical_path(path: &Path, readonly: bool) -> Result<PathBuf> {
    if !readonly && !path.exists() {
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
        {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(Error::io(path, "create", e)),
        }
    }
    // Without Windows' `\\?\` prefix: this is the path shown, stored and
    // compared (registry, references to named objects).
    let canon = std::fs::canonicalize(path).map_err(|e| Error::io(path, "open", e))?;
    let canon = crate::sys::normal_path(canon);
    let meta = std::fs::metadata(&canon).map_err(|e| Error::io(path, "open", e))?;
    if !meta.is_file() {
        return Err(Error::Invalid(format!(
            "'{}' is not a regular file",
            path.display()
        )));
    }
    Ok(canon)
}

/// What validation of an existing file found; nothing has been written.
struct Validated {
    header: Header,
    slot_index: usize,
    slot: Slot,
    entries: Vec<Named>,
    live: Vec<(u64, u64)>,
    /// Set when the newest commit could not be read (see [`recovery`]).
    recovery: Option<String>,
}

/// Validates an existing heap file of `len` bytes through a read-only
/// mapping. For a writable open the allocator rebuild is dry-run in memory,
/// so a file that would fail it is rejected before anything is written.
fn validate(path: &Path, ro: &Mapping, len: u64, writable: bool) -> Result<Validated> {
    let bad = corrupt(path);
    check_file_len(len).map_err(&bad)?;
    let all = ro
        .bytes(0, len)
        .ok_or_else(|| bad("file is not mapped".into()))?;
    let page = &all[..HEADER_SIZE as usize];
    let header = Header::decode(page).map_err(&bad)?;
    // The newest slot whose catalog reads back wins; falling back to an
    // older one is reported (`Recovery`), never silent.
    let mut candidates: Vec<(usize, Slot)> = Vec::new();
    let mut why = Vec::new();
    for (i, r) in read_slots(page, len).into_iter().enumerate() {
        match r {
            Ok(s) => candidates.push((i, s)),
            Err(e) => why.push(format!("slot {}: {e}", ["A", "B"][i])),
        }
    }
    candidates.sort_by_key(|&(_, s)| std::cmp::Reverse(s.generation));
    let mut chosen = None;
    for (i, s) in candidates {
        match load_catalog(all, &s) {
            Ok(stored) => {
                chosen = Some((i, s, stored));
                break;
            }
            // Damage (a torn or flipped catalog): the older commit may do.
            Err(CatalogError::Damaged(e)) => why.push(format!("slot {}: {e}", ["A", "B"][i])),
            // A catalog that matches its checksum but makes no sense was
            // written that way: refused, not worked around.
            Err(CatalogError::Invalid(e)) => return Err(bad(e)),
        }
    }
    let Some((slot_index, slot, stored)) = chosen else {
        return Err(bad(format!("no valid catalog slot ({})", why.join("; "))));
    };
    let recovery = recovery(all, &slot, &stored, &why);
    let cat_block = (slot.catalog_off != 0).then_some((slot.catalog_off, slot.catalog_cap));
    let live = catalog::live_blocks(&stored, cat_block, slot.heap_len).map_err(&bad)?;
    let mut entries = Vec::with_capacity(stored.len());
    for e in stored {
        let mut damaged = None;
        let meta = if e.meta_off == 0 {
            Vec::new()
        } else {
            // In bounds: `live_blocks` checked every meta block above.
            let r = bounds(e.meta_off, e.meta_len, slot.heap_len).map_err(&bad)?;
            if fnv1a64(&all[r.clone()]) == e.meta_sum {
                all[r].to_vec()
            } else {
                // One damaged object damages only itself.
                damaged = Some(format!("the metadata of '{}' fails its checksum", e.name));
                Vec::new()
            }
        };
        entries.push(Named {
            stored: e,
            meta,
            damaged,
        });
    }
    if writable {
        let mut overlay = Overlay::new(all);
        Allocator::new()
            .add_arena_with_live(&mut overlay, HEADER_SIZE, len, &live)
            .map_err(|e| bad(format!("blocks do not fit the heap: {e}")))?;
    }
    Ok(Validated {
        header,
        slot_index,
        slot,
        entries,
        live,
        recovery,
    })
}

pub(crate) enum CatalogError {
    /// Out of bounds or not matching the slot's checksum.
    Damaged(String),
    /// Matches its checksum but does not decode.
    Invalid(String),
}

/// The catalog entries slot `s` points to, checked against its checksum.
pub(crate) fn load_catalog<V: View + ?Sized>(
    all: &V,
    s: &Slot,
) -> std::result::Result<Vec<StoredEntry>, CatalogError> {
    if s.catalog_off == 0 {
        return Ok(Vec::new());
    }
    bounds(s.catalog_off, s.catalog_len, s.heap_len).map_err(CatalogError::Damaged)?;
    let blob = all
        .bytes_at(s.catalog_off, s.catalog_len)
        .ok_or_else(|| CatalogError::Damaged("catalog past the file".into()))?;
    if fnv1a64(blob) != s.catalog_sum {
        return Err(CatalogError::Damaged("catalog checksum mismatch".into()));
    }
    catalog::decode(blob).map_err(CatalogError::Invalid)
}

/// When a slot claims a newer generation than the one in force (`slot`),
/// the commit it recorded is lost (torn by a crash, or damaged): a message
/// saying so, naming what that commit had that the one in force has not,
/// when its catalog can still be read. `why` lists the slots' problems.
pub(crate) fn recovery(
    all: &[u8],
    slot: &Slot,
    stored: &[StoredEntry],
    why: &[String],
) -> Option<String> {
    let page = &all[..HEADER_SIZE as usize];
    // A generation no commit writes (0 in a slot that was written, or past
    // MAX_GENERATION): that slot may have held the newest commit too.
    let impossible = |i: usize| {
        let g = claimed_generation(page, i);
        let written = page[slot_offset(i)..slot_offset(i) + SLOT_SIZE]
            .iter()
            .any(|&b| b != 0);
        written && (g == 0 || g > MAX_GENERATION)
    };
    let lost = (0..2)
        .filter(|&i| {
            let g = claimed_generation(page, i);
            (g > slot.generation && g <= MAX_GENERATION) || impossible(i)
        })
        .max_by_key(|&i| claimed_generation(page, i))?;
    let claimed = claimed_generation(page, lost);
    let mut msg = if impossible(lost) {
        format!(
            "catalog slot {} is damaged (it claims generation {claimed}, which no commit \
             writes; {}); the heap was opened at generation {}, and the commit that slot \
             recorded, if it was newer, is lost",
            ["A", "B"][lost],
            why.join("; "),
            slot.generation
        )
    } else {
        format!(
            "the newest commit (generation {claimed}) cannot be read ({}); the heap was \
             opened at the previous commit (generation {})",
            why.join("; "),
            slot.generation
        )
    };
    // Best effort, on the unchecked fields of the lost slot: its catalog,
    // which carries a checksum of its own that `catalog::decode` checks.
    let newer = slot_unchecked(page, lost).and_then(|s| {
        if s.catalog_off == 0 {
            return Some(Vec::new());
        }
        let r = bounds(s.catalog_off, s.catalog_len, all.len() as u64).ok()?;
        (r.start >= HEADER_SIZE as usize)
            .then(|| catalog::decode(&all[r]).ok())
            .flatten()
    });
    match newer {
        Some(newer) => {
            let have: BTreeMap<&str, u64> = stored
                .iter()
                .map(|e| (e.name.as_str(), e.meta_sum))
                .collect();
            let lost_names: Vec<String> = newer
                .iter()
                .filter(|e| have.get(e.name.as_str()) != Some(&e.meta_sum))
                .map(|e| format!("'{}'", e.name))
                .collect();
            let back: Vec<String> = stored
                .iter()
                .filter(|e| !newer.iter().any(|n| n.name == e.name))
                .map(|e| format!("'{}'", e.name))
                .collect();
            // Their blocks were free after the lost commit and may hold
            // other data since.
            if !lost_names.is_empty() {
                msg.push_str(&format!(
                    "; lost: {} (saved or changed in the lost commit)",
                    lost_names.join(", ")
                ));
            }
            if !back.is_empty() {
                msg.push_str(&format!(
                    "; back: {} (removed or renamed in the lost commit: check their contents)",
                    back.join(", ")
                ));
            }
        }
        None => msg.push_str("; what that commit changed cannot be read"),
    }
    Some(msg)
}

/// `Error::Full` for an out-of-space condition, `Error::Io` otherwise.
fn space_error(path: &Path, requested: u64, what: &str, e: std::io::Error) -> Error {
    use std::io::ErrorKind as K;
    match e.kind() {
        K::StorageFull | K::QuotaExceeded | K::FileTooLarge => Error::Full {
            requested,
            detail: format!("{what}: {e}"),
        },
        _ => Error::io(path, "reserve disk space for", e),
    }
}

impl Shared {
    fn open(path: &Path, canon: &Path, opts: &OpenOptions) -> Result<(Shared, bool)> {
        // Lock before validating (validation must not race a writer), and
        // lock the descriptor that will write, so that the lock lives as
        // long as the mapping's file. Opening for writing changes nothing in
        // the file; nothing is written until validation has passed.
        let file = if opts.readonly {
            File::open(canon).map_err(|e| Error::io(path, "open", e))?
        } else {
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(canon)
                .map_err(|e| Error::io(path, "open for writing", e))?
        };
        lock::lock(&file, path, !opts.readonly)?;
        let len = file
            .metadata()
            .map_err(|e| Error::io(path, "stat", e))?
            .len();
        if len == 0 {
            if opts.readonly {
                return Err(Error::corrupt(
                    path,
                    "the file is empty; open it with readonly = FALSE to create a heap",
                ));
            }
            return Self::create(path, canon, file, opts).map(|s| (s, true));
        }
        let ro = Mapping::open_ro(&file, len).map_err(|e| Error::io(path, "map", e))?;
        let v = validate(path, &ro, len, !opts.readonly)?;
        let (map, alloc, lock_file) = if opts.readonly {
            (ro, None, Some(file))
        } else {
            drop(ro);
            // The mapping owns the locked descriptor from here on.
            let mut map = Mapping::open_rw(file, len).map_err(|e| Error::io(path, "map", e))?;
            // A hole at the end of the file (found before the rebuild
            // writes the free gaps' headers) reads as zeros: new vectors
            // carved from it need no zero writes (allocator "Fresh space").
            let live_end = v.live.iter().map(|&(off, cap)| off + cap).max();
            // (The rebuild rewrites the arena's last 40 bytes: the footer
            // of the free block before the sentinel, and the sentinel.)
            let hole = map.tail_hole(live_end.unwrap_or(HEADER_SIZE), 40);
            let mut alloc = Allocator::new();
            alloc
                .add_arena_with_live(&mut map, HEADER_SIZE, len, &v.live)
                .map_err(|e| Error::corrupt(path, e))?;
            if let Some(h) = hole {
                alloc.mark_fresh(&map, h);
            }
            // Blocks handed out earlier (named objects; the catalog and meta
            // blocks are never written in place) get their disk space now,
            // best effort: a full disk must not prevent opening the heap and
            // reading them. A named block whose reservation fails here is
            // reserved again (exactly) when a vector over it is created,
            // which fails with `Error::Full` instead (see `retain`).
            for &(off, cap) in &v.live {
                let _ = map.reserve(off, cap);
            }
            (map, Some(alloc), None)
        };
        let mut refs = RefTable::default();
        let mut catalog = BTreeMap::new();
        for n in v.entries {
            for b in &n.stored.blocks {
                refs.insert(
                    b.offset,
                    Ref {
                        count: 0,
                        named: true,
                        capacity: b.capacity,
                    },
                );
            }
            catalog.insert(n.stored.name.clone(), n);
        }
        let state = State {
            map,
            alloc,
            catalog,
            slot_index: v.slot_index,
            slot: v.slot,
            refs,
            fail: None,
            crashed: false,
            quarantine: Vec::new(),
        };
        Ok((
            Shared {
                path: canon.to_path_buf(),
                heap_id: v.header.heap_id,
                readonly: opts.readonly,
                owner: Owner::current(),
                state: Mutex::new(state),
                recovery: v.recovery,
                _lock: lock_file,
            },
            false,
        ))
    }

    /// Formats the empty (and exclusively locked) file at `canon`.
    fn create(path: &Path, canon: &Path, mut rw: File, opts: &OpenOptions) -> Result<Shared> {
        // Under a file size limit (ulimit -f) the default size shrinks to
        // fit; an explicit size past it is refused (extending the file
        // there would raise SIGXFSZ).
        let limit = crate::sys::file_size_limit();
        let want = opts
            .initial_size
            .unwrap_or_else(|| DEFAULT_SIZE.min(limit / FILE_GRANULE * FILE_GRANULE));
        let size = round_up(want, FILE_GRANULE)
            .filter(|&s| s <= alloc::MAX_OFFSET)
            .ok_or_else(|| Error::Invalid(format!("heap size {want} is too large")))?
            .max(FILE_GRANULE);
        if size > limit {
            return Err(Error::Full {
                requested: size,
                detail: format!(
                    "cannot create the heap file: the file size limit of this process \
                     (ulimit -f) is {limit} bytes"
                ),
            });
        }
        let header = Header {
            heap_id: new_heap_id(),
            created_ms: now_ms(),
        };
        let slot = Slot {
            generation: 1,
            heap_len: size,
            ..Slot::default()
        };
        // Sparse before it grows: `size` costs no disk until used.
        crate::map::make_sparse(&rw);
        let written = rw
            .set_len(size)
            .and_then(|()| rw.write_all(&header.encode_page(&slot)))
            .and_then(|()| crate::sys::sync_file(&rw));
        if let Err(e) = written {
            // Leave the file empty, as it was.
            let _ = rw.set_len(0);
            return Err(space_error(path, size, "cannot create the heap file", e));
        }
        let mut map = Mapping::open_rw(rw, size).map_err(|e| Error::io(path, "map", e))?;
        let mut alloc = Allocator::new();
        alloc
            .try_add_arena(&mut map, HEADER_SIZE, size)
            .map_err(Error::Invalid)?;
        let state = State {
            map,
            alloc: Some(alloc),
            catalog: BTreeMap::new(),
            slot_index: 0,
            slot,
            refs: RefTable::default(),
            fail: None,
            crashed: false,
            quarantine: Vec::new(),
        };
        Ok(Shared {
            path: canon.to_path_buf(),
            heap_id: header.heap_id,
            readonly: false,
            owner: Owner::current(),
            state: Mutex::new(state),
            recovery: None,
            _lock: None,
        })
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // A forked child must not touch the parent's file; a read-only heap
        // has nothing to write.
        if self.readonly || self.owner.is_forked() {
            return;
        }
        let st = lock_state(&self.state);
        if !st.crashed {
            let _ = st.map.sync_all();
        }
    }
}

impl State {
    /// A new block of at least `size` bytes with its disk space reserved,
    /// growing the heap if needed. Returns (offset, capacity).
    ///
    /// On a full disk the block the allocator picks may lie where no space
    /// can be reserved while another free block, in space reserved earlier
    /// (freed vectors), would do: up to `SPACE_RETRIES` other blocks are
    /// tried (each failed one is held meanwhile so that the allocator
    /// cannot pick it again), without growing the file for them.
    fn alloc_block(&mut self, path: &Path, size: u64) -> Result<(u64, u64)> {
        self.alloc_block_dirty(path, size)
            .map(|(off, cap, _)| (off, cap))
    }

    /// `alloc_block` that also returns how many leading bytes of the block
    /// may not read as zeros (the allocator's "Fresh space": a block carved
    /// from never-used file space is all zeros without a write).
    fn alloc_block_dirty(&mut self, path: &Path, size: u64) -> Result<(u64, u64, u64)> {
        /// Blocks tried after the first whose reservation failed.
        const SPACE_RETRIES: usize = 8;
        self.end_quarantine();
        let State { map, alloc, .. } = self;
        let alloc = alloc.as_mut().ok_or_else(|| Error::ReadOnly {
            path: path.to_path_buf(),
        })?;
        let first = match alloc.malloc_dirty(map, size) {
            Some(got) => got,
            None => {
                grow(path, map, alloc, size)?;
                alloc.malloc_dirty(map, size).ok_or_else(|| Error::Full {
                    requested: size,
                    detail: "no free block large enough after growing the heap".into(),
                })?
            }
        };
        let mut held = Vec::new();
        let mut next = Some(first);
        let mut result = Err(Error::Full {
            requested: size,
            detail: "no free block with disk space behind it".into(),
        });
        while let Some((off, dirty)) = next {
            let cap = match alloc.usable_size(map, off) {
                Ok(cap) => cap,
                Err(e) => {
                    held.push(off);
                    result = Err(Error::corrupt(path, e));
                    break;
                }
            };
            match map.reserve_block(off, cap) {
                Ok(()) => {
                    result = Ok((off, cap, dirty));
                    break;
                }
                Err(e) => {
                    held.push(off);
                    if held.len() == 1 {
                        result = Err(space_error(path, size, "cannot reserve disk space", e));
                    }
                    next = if held.len() > SPACE_RETRIES {
                        None
                    } else {
                        alloc.malloc_dirty(map, size)
                    };
                }
            }
        }
        for off in held {
            let _ = alloc.free(map, off);
        }
        result
    }

    /// Frees a block, or quarantines it while a forked child may still
    /// write to it (see [`State::quarantine`]).
    fn free_block(&mut self, off: u64) {
        if self.alloc.is_none() {
            return;
        }
        if fork::children_alive() {
            self.quarantine.push(off);
            return;
        }
        self.free_now(off);
        self.end_quarantine();
    }

    /// Frees the quarantined blocks once no forked child is left.
    fn end_quarantine(&mut self) {
        if !self.quarantine.is_empty() && !fork::children_alive() {
            for off in std::mem::take(&mut self.quarantine) {
                self.free_now(off);
            }
        }
    }

    /// Frees a block; when the free region it ends up in is big, that
    /// space also goes back to the file system (`Mapping::punch`: `du` of
    /// the file drops after `fmalloc_rm()`).
    fn free_now(&mut self, off: u64) {
        let State { map, alloc, .. } = self;
        if let Some(alloc) = alloc.as_mut() {
            let r = alloc.free(map, off);
            debug_assert!(r.is_ok(), "free({off}): {r:?}");
            // The whole free region, merged with free neighbours: many
            // blocks freed side by side (a data frame's columns) add up.
            if let (Ok(()), Some((start, cap))) = (r, alloc.last_merged()) {
                if cap >= 2 * crate::map::CHUNK {
                    map.punch(start, cap);
                }
            }
        }
    }

    /// A named block lost its name: free it if no session reference is left.
    fn unname(&mut self, off: u64) {
        if let Some(r) = self.refs.get_mut(&off) {
            r.named = false;
            if r.count == 0 {
                self.refs.remove(&off);
                self.free_block(off);
            }
        }
    }

    /// Atomically replaces the catalog by `entries` (sorted by name): new
    /// blob in a fresh block, flushed; then the inactive slot, flushed; then
    /// the old catalog block is freed. On error the old catalog stays in
    /// force and everything allocated here is freed.
    fn commit(&mut self, path: &Path, entries: &[StoredEntry]) -> Result<()> {
        let blob = catalog::encode(entries);
        let (off, cap) = if entries.is_empty() {
            (0, 0)
        } else {
            self.alloc_block(path, blob.len() as u64)?
        };
        let io = |op: &'static str| move |e| Error::io(path, op, e);
        if off != 0 {
            let written = self
                .map
                .write(off, &blob)
                .and_then(|()| self.map.flush_durable(off, blob.len() as u64));
            if let Err(e) = written {
                self.free_block(off);
                return Err(io("write the catalog of")(e));
            }
        }
        if self.fail == Some(FailPoint::BeforeSlot) {
            self.crashed = true;
            return Err(Error::Invalid("simulated crash before the slot".into()));
        }
        // Generations never wrap: decoding refuses any above MAX_GENERATION.
        let generation = self.slot.generation + 1;
        if generation > MAX_GENERATION {
            return Err(Error::corrupt(
                path,
                "the catalog generation is exhausted; copy the objects to a new heap",
            ));
        }
        let slot = Slot {
            generation,
            catalog_off: off,
            catalog_cap: cap,
            catalog_len: if off == 0 { 0 } else { blob.len() as u64 },
            catalog_sum: if off == 0 { 0 } else { fnv1a64(&blob) },
            heap_len: self.map.len(),
        };
        // The header page takes the slot write. It holds data (the magic),
        // but a large folio over it may cover holes of a sparse copy (see
        // map/): reserved here, not at open, so that a full disk still lets
        // a sparse copy be opened and read.
        if let Err(e) = self.map.reserve_range(0, HEADER_SIZE) {
            if off != 0 {
                self.free_block(off);
            }
            return Err(space_error(
                path,
                HEADER_SIZE,
                "cannot reserve the header page",
                e,
            ));
        }
        let target = 1 - self.slot_index;
        let at = slot_offset(target) as u64;
        let old_bytes = self
            .map
            .bytes(at, SLOT_SIZE as u64)
            .map(<[u8]>::to_vec)
            .unwrap_or_default();
        let written = self
            .map
            .write(at, &slot.encode())
            .and_then(|()| self.map.flush_durable(0, HEADER_SIZE));
        if let Err(e) = written {
            let _ = self.map.write(at, &old_bytes);
            if off != 0 {
                self.free_block(off);
            }
            return Err(io("write the header of")(e));
        }
        if self.fail == Some(FailPoint::AfterSlot) {
            self.crashed = true;
            return Err(Error::Invalid("simulated crash after the slot".into()));
        }
        let old = self.slot;
        self.slot = slot;
        self.slot_index = target;
        if old.catalog_off != 0 {
            self.free_block(old.catalog_off);
        }
        Ok(())
    }

    /// The stored entries with `name` removed and `add` inserted.
    fn entries_with(&self, remove: &[&str], add: Option<&StoredEntry>) -> Vec<StoredEntry> {
        let mut v: Vec<StoredEntry> = self
            .catalog
            .values()
            .filter(|n| !remove.contains(&n.stored.name.as_str()))
            .map(|n| n.stored.clone())
            .collect();
        if let Some(a) = add {
            let at = v.partition_point(|e| e.name < a.name);
            v.insert(at, a.clone());
        }
        v
    }

    /// Frees what the (already uncommitted) entry `old` held, except the
    /// blocks in `keep`.
    fn drop_entry(&mut self, old: &StoredEntry, keep: &[u64]) {
        if old.meta_off != 0 {
            self.free_block(old.meta_off);
        }
        for b in &old.blocks {
            if !keep.contains(&b.offset) {
                self.unname(b.offset);
            }
        }
    }
}

/// Appends an extent big enough for `size` bytes and gives it to the
/// allocator: max(request + slack, a quarter of the heap), in 64 KiB units.
fn grow(path: &Path, map: &mut Mapping, alloc: &mut Allocator, size: u64) -> Result<()> {
    let full = |detail: String| Error::Full {
        requested: size,
        detail,
    };
    let need = size
        .checked_add(size / 8)
        .and_then(|n| n.checked_add(FILE_GRANULE))
        .ok_or_else(|| full("request too large".into()))?;
    let step = round_up(need.max(map.len() / GROW_DIVISOR), FILE_GRANULE)
        .filter(|&s| {
            map.len()
                .checked_add(s)
                .is_some_and(|e| e <= alloc::MAX_OFFSET)
        })
        .ok_or_else(|| full("request too large".into()))?;
    let (start, end) = map.grow(step).map_err(|e| {
        full(format!(
            "cannot grow '{}' by {step} bytes: {e}",
            path.display()
        ))
    })?;
    alloc
        .try_add_arena(map, start, end)
        .map_err(|e| Error::corrupt(path, e))
}

impl Heap {
    /// Opens or creates. Returns the heap and whether the file was newly
    /// initialised. Refuses a non-empty non-heap file (unchanged).
    pub fn open(path: &Path, opts: &OpenOptions) -> Result<(Heap, bool)> {
        // From now on the process knows when it has forked children (see
        // `State::quarantine`).
        fork::watch();
        let canon = canonical_path(path, opts.readonly)?;
        let id = crate::sys::file_id(&canon).map_err(|e| Error::io(path, "open", e))?;
        let mut reg = REGISTRY.lock().unwrap_or_else(PoisonError::into_inner);
        reg.retain(|_, w| w.strong_count() > 0);
        if let Some(shared) = reg.get(&id).and_then(Weak::upgrade) {
            if shared.readonly == opts.readonly {
                return Ok((Heap { shared }, false));
            }
            drop(reg);
            let heap = Heap { shared };
            let detail = format!(
                "this process has it open {} ({} session references to its blocks)",
                if heap.is_readonly() {
                    "read-only"
                } else {
                    "for writing"
                },
                heap.session_refs()
            );
            return Err(Error::Locked {
                path: path.to_path_buf(),
                detail,
            });
        }
        let (shared, created) = Shared::open(path, &canon, opts)?;
        let shared = Arc::new(shared);
        reg.insert(id, Arc::downgrade(&shared));
        Ok((Heap { shared }, created))
    }

    /// The heap this process has open on the file at `path`, if any (as
    /// long as anything holds it: a handle, a vector). Opens nothing.
    pub fn open_in_process(path: &Path) -> Option<Heap> {
        let id = crate::sys::file_id(path).ok()?;
        let reg = REGISTRY.lock().unwrap_or_else(PoisonError::into_inner);
        let shared = reg.get(&id).and_then(Weak::upgrade)?;
        Some(Heap { shared })
    }

    /// How many session references hold blocks of this heap: one per
    /// vector over a block (a string pool's vectors share one).
    pub fn session_refs(&self) -> u64 {
        self.state().refs.values().map(|r| r.count).sum()
    }

    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    pub fn heap_id(&self) -> [u8; 16] {
        self.shared.heap_id
    }

    pub fn is_readonly(&self) -> bool {
        self.shared.readonly
    }

    /// When opening fell back to an older commit because the newest could
    /// not be read: what happened and what was lost. A writable heap's next
    /// commit overwrites the damaged slot.
    pub fn recovery(&self) -> Option<&str> {
        self.shared.recovery.as_deref()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock_state(&self.shared.state)
    }

    /// The state for a call that allocates or changes the catalog.
    fn writer(&self) -> Result<MutexGuard<'_, State>> {
        // (The path is cloned only for an error: this runs for every malloc.)
        let path = || self.shared.path.clone();
        if self.shared.readonly {
            return Err(Error::ReadOnly { path: path() });
        }
        if self.shared.owner.is_forked() {
            return Err(Error::Forked { path: path() });
        }
        let st = self.state();
        if st.crashed {
            return Err(Error::Closed { path: path() });
        }
        Ok(st)
    }

    /// A new unnamed block with reference count 1.
    pub fn malloc(&self, size: u64) -> Result<u64> {
        self.malloc_impl(size, false)
    }

    /// `malloc` of a block whose first `size` bytes read as zeros. Only
    /// what may not be zero is written: nothing for a block carved from
    /// never-used file space (a new heap, the heap's growth, a hole at the
    /// end of a reopened file), all of it for a recycled block. So a large
    /// new vector costs no page touch (no page cache, no disk write) until
    /// its owner writes it.
    pub fn malloc_zeroed(&self, size: u64) -> Result<u64> {
        self.malloc_impl(size, true)
    }

    fn malloc_impl(&self, size: u64, zeroed: bool) -> Result<u64> {
        let mut st = self.writer()?;
        let (off, capacity, dirty) = st.alloc_block_dirty(self.path(), size)?;
        let dirty = dirty.min(size);
        if zeroed && dirty > 0 {
            // The block was just allocated and reserved (writing cannot
            // raise SIGBUS); nobody else has its offset yet.
            if let Err(e) = st.map.zero(off, dirty) {
                st.free_block(off);
                return Err(Error::io(self.path(), "zero a block of", e));
            }
        }
        st.refs.insert(
            off,
            Ref {
                count: 1,
                named: false,
                capacity,
            },
        );
        Ok(off)
    }

    /// Resizes the caller's reference to a block; the data are copied when
    /// the block moves. Returns the offset the caller holds now.
    ///
    /// Ownership rule: a block someone else holds (a name, or another
    /// session reference) is never resized, moved or freed. Then the caller
    /// gets a new block with the old contents (its one reference moves to
    /// it) and the old block keeps its name and its other holders,
    /// unchanged. Only a block the caller alone holds is resized in place or
    /// moved like C's realloc.
    pub fn realloc(&self, off: u64, new_size: u64) -> Result<u64> {
        let mut st = self.writer()?;
        let path = self.path();
        let r = *st.refs.get(&off).ok_or_else(|| not_live(off))?;
        if r.count == 0 {
            return Err(Error::Invalid(format!(
                "block at offset {off} has no reference to resize"
            )));
        }
        let shared = r.named || r.count > 1;
        let st = &mut *st;
        let State { map, alloc, .. } = st;
        let alloc = alloc.as_mut().ok_or_else(|| Error::ReadOnly {
            path: path.to_path_buf(),
        })?;
        if !shared
            && alloc
                .resize_in_place(map, off, new_size)
                .map_err(|e| Error::corrupt(path, e))?
        {
            let cap = alloc
                .usable_size(map, off)
                .map_err(|e| Error::corrupt(path, e))?;
            if let Err(e) = map.reserve_block(off, cap) {
                // Shrinking back always succeeds in place.
                let _ = alloc.resize_in_place(map, off, r.capacity);
                return Err(space_error(path, new_size, "cannot reserve disk space", e));
            }
            st.refs.insert(off, Ref { capacity: cap, ..r });
            return Ok(off);
        }
        let (new_off, cap) = st.alloc_block(path, new_size)?;
        let n = r.capacity.min(cap);
        let (src, dst) = match (st.map.addr(off, n), st.map.addr(new_off, n)) {
            (Some(s), Some(d)) => (s, d),
            _ => {
                st.free_block(new_off);
                return Err(Error::corrupt(
                    path,
                    format!("block at {off} is not mapped"),
                ));
            }
        };
        // SAFETY: both ranges are inside live mappings (checked by `addr`)
        // and belong to two distinct allocator blocks, so they don't overlap.
        unsafe { std::ptr::copy_nonoverlapping(src, dst, n as usize) };
        if shared {
            // The other holders keep the old block as it is.
            if let Some(old) = st.refs.get_mut(&off) {
                old.count -= 1;
            }
            debug_assert!(st.refs.get(&off).is_some_and(|o| o.named || o.count > 0));
        } else {
            st.refs.remove(&off);
            st.free_block(off);
        }
        st.refs.insert(
            new_off,
            Ref {
                count: 1,
                named: false,
                capacity: cap,
            },
        );
        Ok(new_off)
    }

    /// Whether the block at `off` belongs to a named object (the catalog
    /// in force holds it). The one place that knows; O(1).
    pub fn is_named(&self, off: u64) -> bool {
        self.state().refs.get(&off).is_some_and(|r| r.named)
    }

    /// The catalog's description of the named block at `off` (`None` when
    /// no object holds it): what a reference to a named block is checked
    /// against.
    pub fn named_desc(&self, off: u64) -> Option<BlockDesc> {
        let st = self.state();
        if !st.refs.get(&off).is_some_and(|r| r.named) {
            return None;
        }
        st.catalog.values().find_map(|n| {
            n.stored
                .blocks
                .iter()
                .find(|b| b.offset == off)
                .map(|b| BlockDesc {
                    offset: b.offset,
                    data_offset: b.data_offset,
                    elem: b.elem,
                    length: b.length,
                })
        })
    }

    /// How many session references hold the block at `off` (0 when it is
    /// not live, or held by its name only).
    pub fn holders(&self, off: u64) -> u64 {
        self.state().refs.get(&off).map_or(0, |r| r.count)
    }

    /// True in a process forked off the one that opened this heap: it may
    /// read and write blocks in place but not allocate (see module docs).
    pub fn is_forked(&self) -> bool {
        self.shared.owner.is_forked()
    }

    /// Whether two handles are the same open heap (clones of one `open`).
    pub fn same(&self, other: &Heap) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }

    /// Points the named object holding the block at `old` to `new` instead,
    /// in one atomic commit (the object keeps its meta and other blocks).
    /// `new` must be a live, unnamed block; afterwards `old` is no longer
    /// named (its session references still keep it alive). Returns whether
    /// an object held `old`.
    pub fn move_name(&self, old: u64, new: &BlockDesc) -> Result<bool> {
        let found = {
            let st = self.state();
            st.catalog
                .values()
                .filter(|n| n.damaged.is_none())
                .find_map(|n| {
                    let i = n.stored.blocks.iter().position(|b| b.offset == old)?;
                    let mut e = to_entry(n);
                    e.blocks[i] = new.clone();
                    Some(e)
                })
        };
        match found {
            Some(e) => self.put(&e.name, &e.meta, &e.blocks, true).map(|()| true),
            None => Ok(false),
        }
    }

    /// One more session reference to the block at `off`. A named block of
    /// a writable heap gets its disk space reserved first (`Error::Full` if
    /// there is none): every vector over a block takes a reference here, and
    /// may write in place.
    ///
    /// Why here and not at open: the open already tries (best effort, see
    /// `Shared::open`) and almost always succeeds, so this costs a check of
    /// the reserved chunks; when the disk was full at open, refusing the
    /// open would also refuse reading, and reserving at the first write is
    /// impossible (R writes through the pointer ALTREP Dataptr returned,
    /// with no way to fail). A vector over the block is the last point where
    /// a failure can still be an R error, and the first where a write can
    /// happen; only the objects a session uses are reserved.
    pub fn retain(&self, off: u64) -> Result<()> {
        let mut st = self.state();
        let r = *st.refs.get(&off).ok_or_else(|| not_live(off))?;
        if r.named {
            st.map.reserve_range(off, r.capacity).map_err(|e| {
                space_error(
                    self.path(),
                    r.capacity,
                    "cannot reserve disk space for a named object",
                    e,
                )
            })?;
        }
        if let Some(r) = st.refs.get_mut(&off) {
            r.count += 1;
        }
        Ok(())
    }

    /// One reference fewer; frees the block when unreferenced and unnamed.
    /// A no-op in a forked child.
    pub fn release(&self, off: u64) -> Result<()> {
        if self.shared.owner.is_forked() {
            return Ok(());
        }
        let mut st = self.state();
        if st.crashed {
            return Ok(());
        }
        let r = st.refs.get_mut(&off).ok_or_else(|| not_live(off))?;
        if r.count == 0 {
            return Err(Error::Invalid(format!(
                "block at offset {off} released more often than retained"
            )));
        }
        r.count -= 1;
        if r.count == 0 && !r.named {
            st.refs.remove(&off);
            st.free_block(off);
        }
        Ok(())
    }

    pub fn block_size(&self, off: u64) -> Result<u64> {
        let st = self.state();
        st.refs
            .get(&off)
            .map(|r| r.capacity)
            .ok_or_else(|| not_live(off))
    }

    /// Address of `[off, off + len)`; valid while any clone of this heap lives.
    pub fn ptr(&self, off: u64, len: u64) -> Result<NonNull<u8>> {
        if off < HEADER_SIZE {
            return Err(Error::Invalid(format!("offset {off} is inside the header")));
        }
        let st = self.state();
        st.map.addr(off, len).and_then(NonNull::new).ok_or_else(|| {
            Error::Invalid(format!("range [{off}, {off}+{len}) is not inside the heap"))
        })
    }

    /// `[off, off + len)` (page-aligned, inside this writable heap's
    /// mapping) as a range that forked children can remap copy-on-write:
    /// see `map::fork`. The range stays valid while any clone of this heap
    /// lives (the descriptor and the mapping live as long).
    pub fn cow_range(&self, off: u64, len: u64) -> Result<crate::map::fork::CowRange> {
        if off < HEADER_SIZE {
            return Err(Error::Invalid(format!("offset {off} is inside the header")));
        }
        self.state().map.cow_range(off, len).ok_or_else(|| {
            Error::Invalid(format!(
                "range [{off}, {off}+{len}) is not a page-aligned range of a writable mapping"
            ))
        })
    }

    /// Reverse lookup: the file offset of an address inside this heap's mapping.
    pub fn offset_of(&self, addr: *const u8) -> Option<u64> {
        self.state()
            .map
            .offset_of(addr)
            .filter(|&o| o >= HEADER_SIZE)
    }

    pub fn info(&self) -> Info {
        let st = self.state();
        let file_bytes = st.map.len();
        let (used_bytes, free_bytes) = match &st.alloc {
            Some(a) => {
                let s = a.stats();
                (s.used_bytes, s.free_bytes)
            }
            None => {
                // Read-only: what the catalog holds is used, the rest free.
                let used: u64 = st.slot.catalog_cap
                    + st.catalog
                        .values()
                        .map(|n| {
                            n.stored.meta_cap
                                + n.stored.blocks.iter().map(|b| b.capacity).sum::<u64>()
                        })
                        .sum::<u64>();
                (used, (file_bytes - HEADER_SIZE).saturating_sub(used))
            }
        };
        let file = st.map.file().or(self.shared._lock.as_ref());
        Info {
            path: self.shared.path.clone(),
            heap_id: self.shared.heap_id,
            readonly: self.shared.readonly,
            file_bytes,
            disk_bytes: file.and_then(|f| crate::sys::disk_usage(f).ok()),
            used_bytes,
            free_bytes,
            objects: st.catalog.len() as u64,
        }
    }

    /// Makes everything written so far durable: msync of every extent and
    /// fsync of the file. A no-op for a read-only heap.
    pub fn sync(&self) -> Result<()> {
        if self.shared.readonly {
            return Ok(());
        }
        self.state()
            .map
            .sync_all()
            .map_err(|e| Error::io(self.path(), "sync", e))
    }

    /// Names `blocks` (live blocks of this heap) with `meta` under `name`,
    /// atomically. The blocks' data are flushed first, so a committed name
    /// never points at data that did not reach the disk.
    pub fn put(
        &self,
        name: &str,
        meta: &[u8],
        blocks: &[BlockDesc],
        overwrite: bool,
    ) -> Result<()> {
        catalog::check_name(name).map_err(Error::Invalid)?;
        let mut st = self.writer()?;
        let path = self.path();
        let old = st.catalog.get(name).map(|n| n.stored.clone());
        if old.is_some() && !overwrite {
            return Err(Error::Exists { name: name.into() });
        }
        let old_offsets: Vec<u64> = old
            .as_ref()
            .map(|o| o.blocks.iter().map(|b| b.offset).collect())
            .unwrap_or_default();
        let mut stored = Vec::with_capacity(blocks.len());
        for b in blocks {
            let r = st.refs.get(&b.offset).ok_or_else(|| not_live(b.offset))?;
            if r.named && !old_offsets.contains(&b.offset) {
                return Err(Error::Invalid(format!(
                    "block at offset {} already belongs to another named object",
                    b.offset
                )));
            }
            stored.push(StoredBlock {
                offset: b.offset,
                capacity: r.capacity,
                data_offset: b.data_offset,
                length: b.length,
                elem: b.elem,
            });
        }
        let now = now_ms();
        let same_object = old.as_ref().is_some_and(|o| {
            o.blocks.len() == stored.len()
                && o.blocks
                    .iter()
                    .zip(&stored)
                    .all(|(a, b)| a.offset == b.offset)
        });
        let mut entry = StoredEntry {
            name: name.into(),
            created_ms: match &old {
                Some(o) if same_object => o.created_ms,
                _ => now,
            },
            modified_ms: now,
            meta_off: 0,
            meta_cap: 0,
            meta_len: 0,
            meta_sum: 0,
            blocks: stored,
        };
        catalog::live_blocks(std::slice::from_ref(&entry), None, st.map.len())
            .map_err(|e| Error::Invalid(format!("cannot name these blocks: {e}")))?;
        for b in &entry.blocks {
            st.map
                .flush(b.offset, b.capacity)
                .map_err(|e| Error::io(path, "flush", e))?;
        }
        if !meta.is_empty() {
            let (off, cap) = st.alloc_block(path, meta.len() as u64)?;
            let written = st
                .map
                .write(off, meta)
                .and_then(|()| st.map.flush(off, meta.len() as u64));
            if let Err(e) = written {
                st.free_block(off);
                return Err(Error::io(path, "write", e));
            }
            entry.meta_off = off;
            entry.meta_cap = cap;
            entry.meta_len = meta.len() as u64;
            entry.meta_sum = fnv1a64(meta);
        }
        let entries = st.entries_with(&[name], Some(&entry));
        if let Err(e) = st.commit(path, &entries) {
            if entry.meta_off != 0 && !st.crashed {
                st.free_block(entry.meta_off);
            }
            return Err(e);
        }
        let new_offsets: Vec<u64> = entry.blocks.iter().map(|b| b.offset).collect();
        if let Some(old) = st.catalog.remove(name) {
            st.drop_entry(&old.stored, &new_offsets);
        }
        for off in &new_offsets {
            if let Some(r) = st.refs.get_mut(off) {
                r.named = true;
            }
        }
        st.catalog.insert(
            name.into(),
            Named {
                stored: entry,
                meta: meta.to_vec(),
                damaged: None,
            },
        );
        Ok(())
    }

    /// Whether `name` is in the catalog (damaged or not).
    pub fn contains(&self, name: &str) -> bool {
        self.state().catalog.contains_key(name)
    }

    pub fn get(&self, name: &str) -> Result<Entry> {
        let st = self.state();
        let n = st
            .catalog
            .get(name)
            .ok_or_else(|| Error::NotFound { name: name.into() })?;
        if let Some(why) = &n.damaged {
            return Err(Error::corrupt(self.path(), why.clone()));
        }
        Ok(to_entry(n))
    }

    /// Every named object, sorted by name (byte order).
    pub fn list(&self) -> Vec<Entry> {
        self.state().catalog.values().map(to_entry).collect()
    }

    /// Removes the name atomically; its blocks are freed unless a session
    /// reference still holds them.
    pub fn remove(&self, name: &str) -> Result<()> {
        let mut st = self.writer()?;
        if !st.catalog.contains_key(name) {
            return Err(Error::NotFound { name: name.into() });
        }
        let entries = st.entries_with(&[name], None);
        st.commit(self.path(), &entries)?;
        if let Some(old) = st.catalog.remove(name) {
            st.drop_entry(&old.stored, &[]);
        }
        Ok(())
    }

    /// Renames atomically; with `overwrite` an existing `to` is replaced.
    pub fn rename(&self, from: &str, to: &str, overwrite: bool) -> Result<()> {
        catalog::check_name(to).map_err(Error::Invalid)?;
        let mut st = self.writer()?;
        let Some(src) = st.catalog.get(from) else {
            return Err(Error::NotFound { name: from.into() });
        };
        if from == to {
            return Ok(());
        }
        if st.catalog.contains_key(to) && !overwrite {
            return Err(Error::Exists { name: to.into() });
        }
        let mut entry = src.stored.clone();
        entry.name = to.into();
        entry.modified_ms = now_ms();
        let entries = st.entries_with(&[from, to], Some(&entry));
        st.commit(self.path(), &entries)?;
        if let Some(old) = st.catalog.remove(to) {
            st.drop_entry(&old.stored, &[]);
        }
        if let Some(mut n) = st.catalog.remove(from) {
            n.stored = entry;
            st.catalog.insert(to.into(), n);
        }
        Ok(())
    }

    /// Checks the allocator and the catalog against each other: every
    /// allocator block in use is the catalog block, a meta block or a block
    /// in the reference table; every named block is live with the capacity
    /// the catalog records; the reference table agrees with the catalog.
    pub fn check_invariants(&self) -> Result<()> {
        let st = self.state();
        let bad = |what: String| Error::corrupt(self.path(), what);
        let stored: Vec<StoredEntry> = st.catalog.values().map(|n| n.stored.clone()).collect();
        let cat = (st.slot.catalog_off != 0).then_some((st.slot.catalog_off, st.slot.catalog_cap));
        let live = catalog::live_blocks(&stored, cat, st.map.len()).map_err(&bad)?;
        let mut named = 0usize;
        for e in &stored {
            for b in &e.blocks {
                match st.refs.get(&b.offset) {
                    Some(r) if r.named && r.capacity == b.capacity => {}
                    other => {
                        return Err(bad(format!("named block {} has ref {other:?}", b.offset)))
                    }
                }
            }
            let mut offs: Vec<u64> = e.blocks.iter().map(|b| b.offset).collect();
            offs.sort_unstable();
            offs.dedup();
            named += offs.len();
        }
        for (off, r) in &st.refs {
            if r.count == 0 && !r.named {
                return Err(bad(format!("block {off} is unreferenced but not freed")));
            }
        }
        if st.refs.values().filter(|r| r.named).count() != named {
            return Err(bad(
                "reference table names blocks the catalog does not".into()
            ));
        }
        let Some(alloc) = &st.alloc else {
            return Ok(());
        };
        alloc.check_invariants(&st.map).map_err(&bad)?;
        for &(off, cap) in &live {
            let u = alloc.usable_size(&st.map, off).map_err(&bad)?;
            if u != cap {
                return Err(bad(format!(
                    "block {off}: capacity {u}, catalog says {cap}"
                )));
            }
        }
        for (&off, r) in &st.refs {
            let u = alloc.usable_size(&st.map, off).map_err(&bad)?;
            if u != r.capacity {
                return Err(bad(format!(
                    "block {off}: capacity {u}, table says {}",
                    r.capacity
                )));
            }
        }
        let meta_blocks = stored.iter().filter(|e| e.meta_off != 0).count();
        let expected =
            st.refs.len() + meta_blocks + usize::from(cat.is_some()) + st.quarantine.len();
        let used = alloc.stats().used_blocks as usize;
        if used != expected {
            return Err(bad(format!(
                "allocator has {used} blocks in use, catalog and references account for {expected}"
            )));
        }
        Ok(())
    }

    /// Runs `f` on the mapping and, for a writable heap, the allocator in
    /// memory, under the heap's lock (for `crate::check`).
    pub(crate) fn with_mapping<R>(&self, f: impl FnOnce(&Mapping, Option<&Allocator>) -> R) -> R {
        let st = self.state();
        f(&st.map, st.alloc.as_ref())
    }

    /// Makes the next commit stop at `point`, as if the process died there.
    #[doc(hidden)]
    pub fn debug_fail_next_commit(&self, point: FailPoint) {
        self.state().fail = Some(point);
    }

    /// Number of mapped extents (1 after open, +1 per growth).
    #[doc(hidden)]
    pub fn debug_extent_count(&self) -> usize {
        self.state().map.extent_count()
    }
}

fn not_live(off: u64) -> Error {
    Error::Invalid(format!("offset {off} is not a live block of this heap"))
}

fn to_entry(n: &Named) -> Entry {
    Entry {
        name: n.stored.name.clone(),
        meta: n.meta.clone(),
        damaged: n.damaged.clone(),
        blocks: n
            .stored
            .blocks
            .iter()
            .map(|b| BlockDesc {
                offset: b.offset,
                data_offset: b.data_offset,
                elem: b.elem,
                length: b.length,
            })
            .collect(),
        created_ms: n.stored.created_ms,
        modified_ms: n.stored.modified_ms,
    }
}

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
//!   catalog::, and for a writable open the check that the live blocks
//!   tile the heap, all the allocator rebuild can fail on) before anything
//!   is written: a rejected file is left exactly as it was (bytes and
//!   modification time). An empty file is formatted.
//! - **Allocator state is never persisted.** A writable open rebuilds it from
//!   the live blocks: the catalog block, every meta block and every named
//!   data block. Everything else, including unnamed blocks of an earlier
//!   session that crashed, is free.
//! - **References.** `malloc` gives a block one session reference;
//!   `retain`/`release` count them; `put` marks blocks named. A block is freed
//!   when it has no reference and no name. This table is the one owner of
//!   block ownership: `is_named`, `holders` and `named_owner` answer from it,
//!   and `realloc` never resizes, moves or frees a block someone else holds
//!   (a name or another reference): the caller gets a copy instead.
//! - **Commit** (put/remove/rename, or a batch of them): the catalog is a
//!   copy-on-write B+tree (`catalog::tree`): a change writes new pages for
//!   one root-to-leaf path, new meta and block list blocks; in durable mode
//!   (`SyncMode::Commit`) one flush of the file, then the inactive header
//!   slot with generation + 1, one flush of the header. Only then are the
//!   superseded pages, metas and data blocks freed. A crash at any point
//!   leaves the old or the new catalog in force. `SyncMode::None` skips
//!   both flushes and holds superseded blocks back until the next sync, so
//!   the last durable generation stays whole on disk (see `commit`).
//! - **Transactions.** Every change runs in a transaction (`Txn`): a single
//!   call commits at once; `begin_batch`/`commit_batch` group any number of
//!   calls into one commit, and `abort_batch` (or a failed commit) rolls
//!   all of them back, in memory and in the allocator.
//! - **Growth** appends a separately mapped extent (map/), which becomes a
//!   new allocator arena; nothing already mapped moves.
//! - **Fork**: the process that opened the heap owns its allocator. A forked
//!   child may read and write blocks but gets `Error::Forked` for malloc,
//!   realloc, put, remove and rename; its `release` and `Drop` do nothing.
//!   While children forked after the open may run, the parent quarantines
//!   the blocks it frees instead of reusing them (`State::quarantine`): a
//!   child's late write to a vector the parent dropped or removed lands in
//!   space nobody uses, never in a new object.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, TryLockError, Weak};

use once_cell::sync::Lazy;

use crate::alloc::{self, Allocator};
use crate::catalog::tree::{self, PageRef, TreeError};
use crate::catalog::{self, StoredBlock, StoredEntry};
use crate::error::{Error, Result};
/// The element types of stored blocks live with the file format.
pub use crate::format::ElemType;
use crate::format::{
    bounds, check_file_len, claimed_generation, fnv1a64, new_heap_id, now_ms, read_slots, round_up,
    slot_offset, slot_unchecked, Header, Slot, CATALOG_TREE, FILE_GRANULE, HEADER_SIZE,
    MAX_GENERATION, SLOT_SIZE, VERSION, VERSION_V1,
};
use crate::lock::{self, Owner};
use crate::map::{fork, Mapping, View};
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
    /// A writable open of a file whose newest commit was written durably
    /// but whose catalog is damaged (no crash leaves that: a bad sector, a
    /// changed byte) falls back to the previous commit, which the next
    /// commit then replaces for good, only when this is set; otherwise it
    /// is refused and nothing is written (see `validate`).
    pub recover: bool,
}

#[derive(Debug, Clone)]
pub struct Info {
    pub path: std::path::PathBuf,
    pub heap_id: [u8; 16],
    pub readonly: bool,
    /// When commits are flushed (`None` for a read-only heap).
    pub sync: Option<SyncMode>,
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
    /// Releases that found `state` locked (see `Heap::release`), applied
    /// by the next release or allocation; `has_pending` says whether any
    /// wait.
    pending: Mutex<Vec<u64>>,
    has_pending: AtomicBool,
    /// Why the open fell back to an older commit, if it did.
    recovery: Option<String>,
    /// The locked descriptor of a read-only heap (a writable heap's lives in
    /// its `Mapping`); never unlocked explicitly, read for `info`.
    _lock: Option<File>,
}

/// When commits reach the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyncMode {
    /// Every commit is durable when it returns: one flush of the file
    /// before the slot is written, one of the header after.
    #[default]
    Commit,
    /// Commits are not flushed: they survive a crash of the process (the
    /// operating system writes them), and after a power loss the heap opens
    /// at the last synced commit or a later one. `Heap::sync` and closing
    /// make everything durable.
    None,
}

impl SyncMode {
    /// The name R uses (`fmalloc_open(sync = )`).
    pub fn name(self) -> &'static str {
        match self {
            SyncMode::Commit => "commit",
            SyncMode::None => "none",
        }
    }
}

/// One row of a listing: what `fmalloc_ls()` shows, read from the
/// catalog (the meta is read only for entries that keep no summary).
#[derive(Debug, Clone, PartialEq)]
pub struct Listed {
    pub name: String,
    pub created_ms: i64,
    pub modified_ms: i64,
    /// Bytes of data of all blocks.
    pub data_bytes: u64,
    /// The meta's summary section (`format::meta`), or why it cannot be read.
    pub summary: std::result::Result<Vec<u8>, String>,
}

/// A listing: every row the catalog's readable pages hold, and what it
/// could not read.
#[derive(Debug, Clone, PartialEq)]
pub struct Listing {
    /// Sorted by name (byte order).
    pub rows: Vec<Listed>,
    /// Catalog pages that could not be read, `None` when the listing is
    /// whole.
    pub unlisted: Option<Unlisted>,
}

/// Damaged catalog pages a listing skipped (a read-only open checks the
/// root page only; every other page is checked when read).
#[derive(Debug, Clone, PartialEq)]
pub struct Unlisted {
    /// Payload offsets of the damaged pages, in key order.
    pub pages: Vec<u64>,
    /// Objects the catalog counts (its slot's entry count) that the listing
    /// lacks: those the skipped pages hold.
    pub missing: u64,
    /// Objects the catalog counts.
    pub total: u64,
}

impl Unlisted {
    /// What a listing says about it (R: a warning of class
    /// `fmalloc_damaged`).
    pub fn message(&self) -> String {
        let n = self.pages.len();
        let offsets: Vec<String> = self.pages.iter().take(5).map(|o| o.to_string()).collect();
        let (pages, at) = if n == 1 {
            ("page is", "offset")
        } else {
            ("pages are", "offsets")
        };
        format!(
            "{n} catalog {pages} damaged (at {at} {}{}): {} of the {} objects are not listed. \
             The listed objects read normally; fmalloc_check() reports the damage",
            offsets.join(", "),
            if n > 5 { ", ..." } else { "" },
            self.missing,
            self.total,
        )
    }
}

/// Session references to a block handed out by (or named in) this heap.
#[derive(Debug, Clone, Copy)]
struct Ref {
    count: u64,
    named: bool,
    capacity: u64,
}

/// The catalog as this process sees it.
#[derive(Clone)]
enum Catalog {
    /// A v1 blob (read; converted to a tree at the first commit).
    Blob(Arc<Vec<StoredEntry>>),
    /// A v2 tree: its root page (None: empty) and number of entries.
    Tree { root: Option<PageRef>, count: u64 },
}

impl Catalog {
    /// Whether `other` is this very catalog (a tree's root page, with its
    /// checksum over the whole tree, or the same blob).
    fn same(&self, other: &Catalog) -> bool {
        match (self, other) {
            (Catalog::Blob(a), Catalog::Blob(b)) => Arc::ptr_eq(a, b),
            (Catalog::Tree { root: a, count: m }, Catalog::Tree { root: b, count: n }) => {
                a == b && m == n
            }
            _ => false,
        }
    }

    fn count(&self) -> u64 {
        match self {
            Catalog::Blob(v) => v.len() as u64,
            Catalog::Tree { count, .. } => *count,
        }
    }
}

/// The open transaction: changes not committed yet. Reads see them.
#[derive(Default)]
struct Txn {
    /// Open batches (0: each change commits at once).
    depth: u32,
    /// An inner batch was rolled back (and with it the outer batches'
    /// changes): the outer batches stay open but refuse changes, and each
    /// of them ends with `Error::RolledBack`, until the outermost has
    /// ended. Before, the rollback closed them all, so the outer batch's
    /// code that caught the inner error went on outside any batch: its
    /// earlier changes silently gone, its later ones committed one by one.
    rolled_back: bool,
    changed: bool,
    /// Blocks allocated since the last commit (pages, metas, block lists):
    /// freed at once when superseded, all of them on rollback.
    fresh: HashSet<u64>,
    /// Blocks of the committed catalog that the new one no longer uses:
    /// freed after the commit (durable mode) or the next sync.
    to_free: Vec<u64>,
    /// Named state of data blocks before the transaction changed it.
    orig_named: HashMap<u64, bool>,
    /// Blocks allocated and released by the change in progress (applied
    /// only when it succeeds: a failed change leaves the catalog as it was).
    op_alloc: Vec<u64>,
    op_release: Vec<u64>,
}

/// Superseded blocks held back (sync = "none") beyond this many force a
/// sync: the space a crash-safe unsynced heap holds back stays bounded.
const MAX_DEFERRED: usize = 16 * 1024;

struct State {
    path: PathBuf,
    map: Mapping,
    /// `None` for a read-only heap.
    alloc: Option<Allocator>,
    /// The catalog including the open transaction's changes.
    cat: Catalog,
    /// The catalog of the slot in force (what a rollback returns to).
    committed: Catalog,
    slot_index: usize,
    slot: Slot,
    /// The slot last written durably (sync = "none" overwrites the other).
    durable_index: usize,
    header_version: u32,
    /// Every block a session reference or a catalog entry keeps alive.
    refs: RefTable,
    /// Whether `refs` holds every named block. A read-only open of a tree
    /// reads only the root page: named blocks are added as objects are got
    /// (or all at once when a question needs them all).
    refs_complete: bool,
    /// The named blocks by offset, with the catalog they were read from
    /// (`named_owner`: a reference to one column of a
    /// wide data frame, or to one object among many, walked the whole
    /// catalog each time).
    named_owners: Option<(Catalog, Owners)>,
    txn: Txn,
    sync: SyncMode,
    /// Commits since the last durable one (their slot is flagged unsynced).
    unsynced: bool,
    /// Blocks superseded by unsynced commits, freed at the next sync.
    deferred: Vec<u64>,
    /// Catalog blocks (pages, metas, block lists) written by unsynced
    /// commits since the last durable one. No durable slot references them,
    /// only the unsynced slot that the next commit overwrites: superseded,
    /// they are freed at once instead of deferred. So building objects one
    /// by one with `sync = "none"` reuses the same few pages instead of
    /// holding back a path of pages per commit (a forced sync every
    /// `MAX_DEFERRED` blocks, and write faults on every page it freed).
    since_durable: HashSet<u64>,
    /// Blocks that an unsynced commit unnamed while a session vector still
    /// held them: the last durable slot may name them, so when the last
    /// vector goes they are held back like `deferred` (not freed) until
    /// the next sync. Cleared by every durable commit or sync.
    unnamed_held: HashSet<u64>,
    fail: Option<FailPoint>,
    /// A simulated crash happened: refuse everything, write nothing more.
    crashed: bool,
    /// Blocks freed while forked children may still run: they may hold
    /// vectors over them, so the blocks are not reused until every such
    /// child is gone (`map::fork::children_alive`).
    quarantine: Vec<u64>,
    /// Catalog blocks whose checksum is known (see `tree::Store::known`);
    /// an entry goes when its block is freed.
    verified: std::cell::RefCell<HashMap<u64, u64, std::hash::BuildHasherDefault<OffsetHasher>>>,
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

/// Named blocks by offset: the catalog's description and the object's name.
type Owners = HashMap<u64, (BlockDesc, String)>;

/// The allocator's tag key for the heap with id `heap_id`: fixed for the
/// file, so that a writable open finds the headers of blocks that stayed
/// live already right and leaves them unwritten (see `alloc`, "check tag").
/// Derived from the heap id (which the file holds: the tag guards against
/// mistakes, not against a forged file, whose headers the rebuild rewrites
/// from the catalog anyway).
fn tag_key(heap_id: &[u8; 16]) -> u64 {
    fnv1a64(heap_id) ^ 0x5246_4d41_4c4c_4f43
}

/// `m`'s guard; a poisoned mutex is taken as it is (no panic reaches R,
/// and what it guards is as the code left it).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// `lock`, or `None` when the mutex is held: for what R's garbage
/// collector runs, which must never wait (see `Heap::release`).
pub(crate) fn try_lock<T>(m: &Mutex<T>) -> Option<MutexGuard<'_, T>> {
    match m.try_lock() {
        Ok(g) => Some(g),
        Err(TryLockError::Poisoned(p)) => Some(p.into_inner()),
        Err(TryLockError::WouldBlock) => None,
    }
}

fn corrupt(path: &Path) -> impl Fn(String) -> Error + '_ {
    move |what| Error::corrupt(path, what)
}

/// The canonical path of `path`, creating an empty file for a writable open;
/// also whether this call created it (a refused creation removes it again,
/// see `Shared::create`).
fn canonical_path(path: &Path, readonly: bool) -> Result<(PathBuf, bool)> {
    if let Ok(target) = std::fs::read_link(path) {
        if let Err(e) = std::fs::metadata(path) {
            // Not created: where the link points may be meant for something
            // else (and `create_new` does not follow it).
            let why = if e.kind() == std::io::ErrorKind::NotFound {
                "which does not exist".to_string()
            } else {
                format!("which cannot be followed ({e})")
            };
            return Err(Error::io(
                path,
                "open",
                std::io::Error::new(
                    e.kind(),
                    format!("it is a symbolic link to '{}', {why}", target.display()),
                ),
            ));
        }
    }
    let mut made = false;
    if !readonly && !path.exists() {
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
        {
            Ok(_) => made = true,
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
    Ok((canon, made))
}

/// What validation of an existing file found; nothing has been written.
struct Validated {
    header: Header,
    slot_index: usize,
    slot: Slot,
    /// Every entry and the catalog's own blocks; `None` after a lazy
    /// (read-only, durable tree) open that checked the root page only, and
    /// after a writable open of a tree (see `named`).
    loaded: Option<Loaded>,
    /// A writable open of a tree reads every page and leaf record but keeps
    /// only the data blocks (offset, capacity) of the entries, for the
    /// reference table: decoding names, summaries and times of every entry
    /// would cost more than the rest of the open.
    named: Option<Vec<(u64, u64)>>,
    live: Vec<(u64, u64)>,
    /// `live` checked to tile the heap (writable opens).
    layout: Option<alloc::Layout>,
    /// Set when the newest commit could not be read (see [`recovery`]).
    recovery: Option<String>,
}

/// Validates an existing heap file of `len` bytes through a read-only
/// mapping. For a writable open the whole catalog is read and the live
/// blocks checked to tile the heap (all the allocator rebuild can fail
/// on), so a file that would fail it is rejected before anything is
/// written. A read-only open of a tree whose
/// slot was written durably checks the root page alone: the other pages are
/// checked as they are read (each against the checksum its parent holds).
///
/// Falling back from a damaged catalog to the previous commit is what a
/// crash can call for only where the newest slot is *unsynced* (its pages
/// were not flushed before it). A durable slot was written after its pages
/// were on disk, so its catalog's damage came later, and a writable open
/// that fell back would let the next commit overwrite the only copy of the
/// objects the newest commit holds: that open is refused unless `recover`
/// (a read-only open changes nothing and still falls back, or, lazily,
/// reads what is intact).
fn validate(
    path: &Path,
    ro: &Mapping,
    len: u64,
    writable: bool,
    recover: bool,
) -> Result<Validated> {
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
    // A durable newest commit that a writable open would give up.
    let mut refused = None;
    let mut damaged = false;
    for (k, &(i, s)) in candidates.iter().enumerate() {
        let lazy = !writable && s.kind == CATALOG_TREE && !s.unsynced;
        let r = if lazy {
            check_root(all, &s).map(|()| Got::Root)
        } else if writable && s.kind == CATALOG_TREE {
            load_live(all, &s).map(Got::Live)
        } else {
            load_catalog(all, &s).map(Got::All)
        };
        match r {
            Ok(got) => {
                chosen = Some((i, s, got));
                break;
            }
            // Damage (a torn or flipped catalog): the older commit may do,
            // but a writable open gives up a durable newest commit only
            // when asked to (see above).
            Err(CatalogError::Damaged(e)) => {
                let e = format!("slot {}: {e}", ["A", "B"][i]);
                damaged = true;
                if k == 0 && writable && !recover && !s.unsynced {
                    refused = Some((s.generation, e.clone()));
                }
                why.push(e)
            }
            // A catalog that matches its checksum but makes no sense was
            // written that way: refused, not worked around.
            Err(CatalogError::Invalid(e)) => return Err(bad(e)),
        }
    }
    let Some((slot_index, slot, got)) = chosen else {
        // A writable open reads the whole tree: a read-only one reads pages
        // as they are needed, so it may still serve what is intact.
        let hint = if writable && damaged {
            "; open it with readonly = TRUE to read the objects outside the damaged part"
        } else {
            ""
        };
        return Err(bad(format!(
            "no valid catalog slot ({}){hint}",
            why.join("; ")
        )));
    };
    if let Some((newest, e)) = refused {
        return Err(Error::Damaged {
            path: path.to_path_buf(),
            what: format!(
                "its newest commit (generation {newest}) cannot be read ({e}), and a writable \
                 open would give it up for the previous commit (generation {}). Open it with \
                 readonly = TRUE to read the objects that are intact, or with recover = TRUE \
                 to open it writable at the previous commit, whose next commit replaces the \
                 damaged one",
                slot.generation
            ),
        });
    }
    let (loaded, named, live) = match got {
        Got::Root => (None, None, Vec::new()),
        Got::All(l) => {
            let live = catalog::live_blocks(&l.entries, &l.blocks, slot.heap_len).map_err(&bad)?;
            (Some(l), None, live)
        }
        Got::Live(l) => {
            if let Some(m) = l.geometry {
                return Err(bad(m));
            }
            let live = catalog::finish_live(l.live, &l.pages, slot.heap_len).map_err(&bad)?;
            (None, Some(l.named), live)
        }
    };
    let recovery = recovery(all, &slot, loaded.as_ref().map(|l| &l.entries[..]), &why);
    // The rebuild's only failures are geometric: checked here, before
    // anything is written (reserving the live blocks' disk space, the
    // headers), and the rebuild starts from what was checked.
    let layout = if writable {
        Some(
            Allocator::check_layout(HEADER_SIZE, len, &live)
                .map_err(|e| bad(format!("blocks do not fit the heap: {e}")))?,
        )
    } else {
        None
    };
    Ok(Validated {
        header,
        slot_index,
        slot,
        loaded,
        named,
        live,
        layout,
        recovery,
    })
}

pub(crate) enum CatalogError {
    /// Out of bounds or not matching the slot's checksum.
    Damaged(String),
    /// Matches its checksum but does not decode.
    Invalid(String),
}

impl From<TreeError> for CatalogError {
    fn from(e: TreeError) -> Self {
        match e {
            TreeError::Damaged(s) => CatalogError::Damaged(s),
            TreeError::Invalid(s) => CatalogError::Invalid(s),
            TreeError::Store(e) => CatalogError::Invalid(e.to_string()),
        }
    }
}

/// A whole catalog read from the file.
pub(crate) struct Loaded {
    /// Every entry, sorted by name, block lists resolved.
    pub entries: Vec<StoredEntry>,
    /// The catalog's own blocks: the v1 blob, or every page of the tree.
    pub blocks: Vec<(u64, u64)>,
}

/// What validation read of the catalog of the slot in force.
enum Got {
    /// Its root page (a lazy open).
    Root,
    /// Everything (`load_catalog`).
    All(Loaded),
    /// Every page and record, keeping the blocks only (`load_live`).
    Live(LiveSet),
}

/// The blocks of a whole tree catalog, every page and record checked.
pub(crate) struct LiveSet {
    /// The entries' metas, block lists and data blocks (each entry's
    /// geometry checked: `catalog::EntryBlocks::check`), unsorted.
    pub live: Vec<(u64, u64)>,
    /// The tree's pages.
    pub pages: Vec<(u64, u64)>,
    /// (offset, capacity) of every data block of every entry.
    pub named: Vec<(u64, u64)>,
    /// The first entry whose blocks are not where they can be (the file
    /// is refused: this is no damage an older commit could avoid).
    pub geometry: Option<String>,
}

/// Reads and checks every page and leaf record of tree slot `s`, as
/// `load_catalog` does, but keeps only where the blocks are: what a
/// writable open needs (the allocator's live blocks, the named blocks).
pub(crate) fn load_live<V: View + ?Sized>(
    all: &V,
    s: &Slot,
) -> std::result::Result<LiveSet, CatalogError> {
    let st = ViewStore {
        v: all,
        heap_len: s.heap_len,
    };
    // Room for the usual entry (a meta and one data block) up front; the
    // slot's count is untrusted, so bounded by what the heap can hold (a
    // leaf record takes at least 88 bytes).
    let expect = s.catalog_len.min(s.heap_len / 128) as usize;
    let mut set = LiveSet {
        live: Vec::with_capacity(2 * expect),
        pages: Vec::new(),
        named: Vec::with_capacity(expect),
        geometry: None,
    };
    let mut count = 0u64;
    let mut blocks = Vec::new();
    // Geometry errors are reported after the walk, as `live_blocks` does
    // after `load_catalog`: a damaged page found later still falls back.
    let geometry = &mut set.geometry;
    let (live, pages, named) = (&mut set.live, &mut set.pages, &mut set.named);
    tree::walk(&st, root_of(s), &mut |x| {
        match x {
            tree::Visit::Page(r) => pages.push((r.off, r.cap)),
            tree::Visit::Leaf(l) => {
                count += 1;
                let at = l.blocks(&st, &mut blocks)?;
                if geometry.is_none() {
                    if let Err(m) = at.check(&blocks, s.heap_len, live) {
                        *geometry = Some(format!("entry '{}'{m}", l.name()));
                    }
                }
                named.extend(blocks.iter().map(|b| (b.offset, b.capacity)));
            }
        }
        Ok(())
    })?;
    if count != s.catalog_len {
        return Err(CatalogError::Invalid(format!(
            "the catalog holds {count} entries, its slot says {}",
            s.catalog_len
        )));
    }
    Ok(set)
}

/// The file (or image) `v` as a store for the tree code, bounded by the
/// heap length a slot recorded.
pub(crate) struct ViewStore<'a, V: ?Sized> {
    pub v: &'a V,
    pub heap_len: u64,
}

impl<V: View + ?Sized> tree::Store for ViewStore<'_, V> {
    fn heap_len(&self) -> u64 {
        self.heap_len
    }
    fn bytes(&self, off: u64, len: u64) -> Option<&[u8]> {
        bounds(off, len, self.heap_len).ok()?;
        self.v.bytes_at(off, len)
    }
}

/// The root page of slot `s` (a tree slot), `None` for an empty tree.
fn root_of(s: &Slot) -> Option<PageRef> {
    (s.catalog_off != 0).then_some(PageRef {
        off: s.catalog_off,
        cap: s.catalog_cap,
        sum: s.catalog_sum,
    })
}

/// Checks the root page of a tree slot (a lazy open).
fn check_root<V: View + ?Sized>(all: &V, s: &Slot) -> std::result::Result<(), CatalogError> {
    let st = ViewStore {
        v: all,
        heap_len: s.heap_len,
    };
    match root_of(s) {
        None => Ok(()),
        Some(r) => tree::check_root(&st, &r).map_err(CatalogError::from),
    }
}

/// The damaged pages of a tree slot's catalog (out of the file, or failing
/// the checksum their parent holds), in key order: every page
/// [`load_catalog`] would stop at, not only the first. `None` when the
/// tree cannot be walked around them (a damaged root, an invalid page) or
/// the slot is no tree.
pub(crate) fn damaged_pages<V: View + ?Sized>(all: &V, s: &Slot) -> Option<Vec<PageRef>> {
    if s.kind != CATALOG_TREE {
        return None;
    }
    let st = ViewStore {
        v: all,
        heap_len: s.heap_len,
    };
    tree::walk_readable(&st, root_of(s), &mut |_| Ok(())).ok()
}

/// The whole catalog slot `s` points to, every byte checked.
pub(crate) fn load_catalog<V: View + ?Sized>(
    all: &V,
    s: &Slot,
) -> std::result::Result<Loaded, CatalogError> {
    if s.kind == CATALOG_TREE {
        let st = ViewStore {
            v: all,
            heap_len: s.heap_len,
        };
        let mut entries = Vec::new();
        let mut blocks = Vec::new();
        tree::walk(&st, root_of(s), &mut |x| {
            match x {
                tree::Visit::Page(r) => blocks.push((r.off, r.cap)),
                tree::Visit::Leaf(l) => entries.push(l.entry(&st)?),
            }
            Ok(())
        })?;
        if entries.len() as u64 != s.catalog_len {
            return Err(CatalogError::Invalid(format!(
                "the catalog holds {} entries, its slot says {}",
                entries.len(),
                s.catalog_len
            )));
        }
        return Ok(Loaded { entries, blocks });
    }
    if s.catalog_off == 0 {
        return Ok(Loaded {
            entries: Vec::new(),
            blocks: Vec::new(),
        });
    }
    bounds(s.catalog_off, s.catalog_len, s.heap_len).map_err(CatalogError::Damaged)?;
    let blob = all
        .bytes_at(s.catalog_off, s.catalog_len)
        .ok_or_else(|| CatalogError::Damaged("catalog past the file".into()))?;
    if fnv1a64(blob) != s.catalog_sum {
        return Err(CatalogError::Damaged("catalog checksum mismatch".into()));
    }
    let entries = catalog::decode(blob).map_err(CatalogError::Invalid)?;
    Ok(Loaded {
        entries,
        blocks: vec![(s.catalog_off, s.catalog_cap)],
    })
}

/// When a slot claims a newer generation than the one in force (`slot`),
/// the commit it recorded is lost (torn by a crash, or damaged): a message
/// saying so, naming what that commit had that the one in force has not,
/// when its catalog can still be read. `why` lists the slots' problems.
/// `stored`: the entries in force, if read already.
pub(crate) fn recovery(
    all: &[u8],
    slot: &Slot,
    stored: Option<&[StoredEntry]>,
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
    let loaded_here;
    let stored = match stored {
        Some(s) => s,
        None => {
            loaded_here = load_catalog(all, slot)
                .map(|l| l.entries)
                .unwrap_or_default();
            &loaded_here[..]
        }
    };
    // Best effort, on the unchecked fields of the lost slot: its catalog,
    // which carries checksums of its own that the decoding checks.
    let newer = slot_unchecked(page, lost).and_then(|mut s| {
        s.heap_len = all.len() as u64;
        if s.catalog_off != 0 && s.catalog_off < HEADER_SIZE {
            return None;
        }
        if s.kind == CATALOG_TREE && s.catalog_off != 0 {
            // The slot's own checksum failed: trust its root page as it is
            // (the pages below are checked against their parents).
            s.catalog_sum = tree::page_sum(all.bytes_at(s.catalog_off, tree::PAGE_SIZE as u64)?);
        }
        load_catalog(all, &s).ok().map(|l| l.entries)
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
            let newer_names: HashSet<&str> = newer.iter().map(|e| e.name.as_str()).collect();
            let back: Vec<String> = stored
                .iter()
                .filter(|e| !newer_names.contains(e.name.as_str()))
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

/// Blocks at least this large give the space of the free region they merge
/// into back to the file system when freed (see `State::free_now`).
const PUNCH_BLOCK_MIN: u64 = 1 << 20;

/// The allocator's catalog region (`Allocator::set_catalog_region`): catalog
/// pages, metas and block lists go below this offset when there is room, so
/// that a reader faulting in the header page (the kernel reads 128 KiB
/// around it by default) gets the catalog, and the first 32 KiB of the
/// first data block after it, in the same disk read. A placement preference
/// only: nothing is stored, and heaps written before it open unchanged.
const CATALOG_REGION_END: u64 = 96 * 1024;

/// What a read-only open asks the system to read ahead before it reads the
/// header: the header page, the catalog region and the first 32 KiB of the
/// data block that usually follows it. Without it the first page fault
/// reads the kernel's read-around window (`read_ahead_kb`: 128 KiB by
/// default, some disks 8 MiB) around the header and waits for all of it.
const WILLNEED_BYTES: u64 = 128 * 1024;

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
    /// `made`: this open created the (empty) file at `canon`.
    fn open(path: &Path, canon: &Path, made: bool, opts: &OpenOptions) -> Result<(Shared, bool)> {
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
            return Self::create(path, canon, made, file, opts).map(|s| (s, true));
        }
        if opts.readonly {
            // The header, the catalog region and the first bytes after it,
            // in one read of their own (see `WILLNEED_BYTES`).
            crate::sys::will_need(&file, 0, len.min(WILLNEED_BYTES));
        }
        let ro = Mapping::open_ro(&file, len).map_err(|e| Error::io(path, "map", e))?;
        let mut v = validate(path, &ro, len, !opts.readonly, opts.recover)?;
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
            // Blocks handed out earlier (named objects; the catalog and meta
            // blocks are never written in place) get their disk space now,
            // best effort: a full disk must not prevent opening the heap and
            // reading them. A named block whose reservation fails here is
            // reserved again (exactly) when a vector over it is created,
            // which fails with `Error::Full` instead (see `retain`).
            // Reserved before the rebuild, so that the rebuild finds their
            // headers in reserved chunks (its fast path).
            for &(off, cap) in &v.live {
                let _ = map.reserve(off, cap);
            }
            let mut alloc = Allocator::with_key(tag_key(&v.header.heap_id));
            alloc.set_catalog_region(&map, CATALOG_REGION_END);
            let layout = v
                .layout
                .take()
                .ok_or_else(|| Error::corrupt(path, "the heap's layout was not checked"))?;
            let unsettled = alloc
                .add_arena_with_layout(&mut map, &layout)
                .map_err(|e| Error::corrupt(path, e))?;
            if unsettled {
                // The last session did not close cleanly (it ended with
                // vectors still holding the file, or crashed): the blocks
                // it left handed out are free now. Their disk space goes
                // back as a free would give it (`State::free_now`), once:
                // a clean session's space was given back when it was freed,
                // and its reopen writes nothing (FORMAT.md).
                for (off, cap) in layout.free_blocks() {
                    if cap >= 2 * crate::map::CHUNK {
                        map.punch_free(off, cap);
                    }
                }
            }
            if let Some(h) = hole {
                alloc.mark_fresh(&map, h);
            }
            // The headers are now what a rebuild writes: a close before any
            // change has none to settle (`State::settle_headers`).
            alloc.clear_changed();
            (map, Some(alloc), None)
        };
        let mut refs = RefTable::default();
        let named_ref = |capacity| Ref {
            count: 0,
            named: true,
            capacity,
        };
        if let Some(named) = &v.named {
            refs.reserve(named.len());
            for &(off, cap) in named {
                refs.insert(off, named_ref(cap));
            }
        }
        let refs_complete = v.loaded.is_some() || v.named.is_some();
        let (cat, count_ok) = match v.loaded {
            Some(l) => {
                refs.reserve(l.entries.iter().map(|e| e.blocks.len()).sum());
                for e in &l.entries {
                    for b in &e.blocks {
                        refs.insert(b.offset, named_ref(b.capacity));
                    }
                }
                if v.slot.kind == CATALOG_TREE {
                    let count = l.entries.len() as u64;
                    (
                        Catalog::Tree {
                            root: root_of(&v.slot),
                            count,
                        },
                        true,
                    )
                } else {
                    (Catalog::Blob(Arc::new(l.entries)), true)
                }
            }
            None => (
                Catalog::Tree {
                    root: root_of(&v.slot),
                    count: v.slot.catalog_len,
                },
                true,
            ),
        };
        debug_assert!(count_ok);
        let state = State {
            path: canon.to_path_buf(),
            map,
            alloc,
            committed: cat.clone(),
            cat,
            slot_index: v.slot_index,
            slot: v.slot,
            durable_index: v.slot_index,
            header_version: v.header.version,
            refs,
            refs_complete,
            named_owners: None,
            txn: Txn::default(),
            sync: SyncMode::Commit,
            unsynced: v.slot.unsynced,
            deferred: Vec::new(),
            since_durable: HashSet::new(),
            unnamed_held: HashSet::new(),
            fail: None,
            crashed: false,
            quarantine: Vec::new(),
            verified: Default::default(),
        };
        Ok((
            Shared {
                path: canon.to_path_buf(),
                heap_id: v.header.heap_id,
                readonly: opts.readonly,
                owner: Owner::current(),
                state: Mutex::new(state),
                pending: Mutex::default(),
                has_pending: AtomicBool::new(false),
                recovery: v.recovery,
                _lock: lock_file,
            },
            false,
        ))
    }

    /// Formats the empty (and exclusively locked) file at `canon`.
    ///
    /// A creation refused before anything was written leaves the file empty,
    /// and removes it when this open made it (`made`): while `rw` still
    /// holds the lock, so that no other process can have begun a heap in it.
    fn create(
        path: &Path,
        canon: &Path,
        made: bool,
        mut rw: File,
        opts: &OpenOptions,
    ) -> Result<Shared> {
        let refused = |e: Error| {
            if made {
                let _ = std::fs::remove_file(canon);
            }
            e
        };
        // Under a file size limit (ulimit -f) the default size shrinks to
        // fit; an explicit size past it is refused (extending the file
        // there would raise SIGXFSZ).
        let limit = crate::sys::file_size_limit();
        let want = opts
            .initial_size
            .unwrap_or_else(|| DEFAULT_SIZE.min(limit / FILE_GRANULE * FILE_GRANULE));
        let size = round_up(want, FILE_GRANULE)
            .filter(|&s| s <= alloc::MAX_OFFSET)
            .ok_or_else(|| refused(Error::Invalid(format!("heap size {want} is too large"))))?
            .max(FILE_GRANULE);
        if size > limit {
            return Err(refused(Error::Full {
                requested: size,
                detail: format!(
                    "cannot create the heap file: the file size limit of this process \
                     (ulimit -f) is {limit} bytes"
                ),
            }));
        }
        let header = Header {
            heap_id: new_heap_id(),
            created_ms: now_ms(),
            version: VERSION,
        };
        let slot = Slot {
            generation: 1,
            heap_len: size,
            kind: CATALOG_TREE,
            ..Slot::default()
        };
        // Sparse before it grows: `size` costs no disk until used.
        crate::map::make_sparse(&rw);
        // A file that does not take the new length is no file a heap can
        // live in (a pseudo-file of /proc or /sys reports length 0 and
        // ignores truncation: writing the header there would write to the
        // kernel): refused before anything is written.
        let sized = rw.set_len(size).and_then(|()| {
            let len = rw.metadata()?.len();
            if len == size {
                Ok(())
            } else {
                Err(std::io::Error::other(format!(
                    "the file does not take a length of {size} bytes (it reports {len}): \
                     not a regular file on a disk"
                )))
            }
        });
        let written = sized
            .and_then(|()| rw.write_all(&header.encode_page(&slot)))
            .and_then(|()| crate::sys::sync_file(&rw));
        if let Err(e) = written {
            // Leave the file empty, as it was.
            let _ = rw.set_len(0);
            return Err(refused(space_error(
                path,
                size,
                "cannot create the heap file",
                e,
            )));
        }
        // A map can still be refused (an address-space limit, ulimit -v):
        // the file is then emptied (and removed, when made here) through a
        // second descriptor of it, which keeps the lock meanwhile.
        let undo = rw.try_clone().ok();
        let mut map = match Mapping::open_rw(rw, size) {
            Ok(m) => m,
            Err(e) => {
                if let Some(f) = &undo {
                    let _ = f.set_len(0);
                }
                return Err(refused(Error::io(path, "map", e)));
            }
        };
        drop(undo);
        let mut alloc = Allocator::with_key(tag_key(&header.heap_id));
        alloc.set_catalog_region(&map, CATALOG_REGION_END);
        alloc
            .try_add_arena(&mut map, HEADER_SIZE, size)
            .map_err(Error::Invalid)?;
        let empty = Catalog::Tree {
            root: None,
            count: 0,
        };
        let state = State {
            path: canon.to_path_buf(),
            map,
            alloc: Some(alloc),
            committed: empty.clone(),
            cat: empty,
            slot_index: 0,
            slot,
            durable_index: 0,
            header_version: VERSION,
            refs: RefTable::default(),
            refs_complete: true,
            named_owners: None,
            txn: Txn::default(),
            sync: SyncMode::Commit,
            unsynced: false,
            deferred: Vec::new(),
            since_durable: HashSet::new(),
            unnamed_held: HashSet::new(),
            fail: None,
            crashed: false,
            quarantine: Vec::new(),
            verified: Default::default(),
        };
        Ok(Shared {
            path: canon.to_path_buf(),
            heap_id: header.heap_id,
            readonly: false,
            owner: Owner::current(),
            state: Mutex::new(state),
            pending: Mutex::default(),
            has_pending: AtomicBool::new(false),
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
        // Held only when R dropped the heap from inside a call that holds
        // it (see `Heap::release`): the process is ending, and the file
        // opens at its last commit.
        let Some(mut st) = try_lock(&self.state) else {
            return;
        };
        if !st.crashed {
            // An open batch is dropped (rolled back by not committing it:
            // its blocks are free at the next writable open).
            if st.make_durable().is_ok() {
                st.settle_headers();
            }
        }
    }
}

impl State {
    /// At a clean close after allocator changes: writes the block headers
    /// the next writable open's rebuild would write (from the catalog in
    /// force, as the open reads it), so that the open finds them as they
    /// are and changes no byte of the file. Without it, a block freed into
    /// the allocator's cache, or free lists linked in another order, would
    /// be rewritten by that open (the file's mtime changing though nothing
    /// was done). Best effort and never needed for correctness: the
    /// rebuild writes the same words. Skipped while forked children may
    /// still read blocks this session freed (quarantine): the rebuild
    /// writes free blocks' footers inside their old payload.
    fn settle_headers(&mut self) {
        let Some(key) = self
            .alloc
            .as_ref()
            .filter(|a| a.changed())
            .map(Allocator::key)
        else {
            return;
        };
        // (A v1 catalog is converted at the first change: not settled.)
        if !self.quarantine.is_empty() || self.slot.kind != CATALOG_TREE {
            return;
        }
        // What the open does (`validate`, read through the mapping, which
        // after growth may be in pieces): the live blocks of the catalog
        // in force, checked to tile the file.
        let Ok(l) = load_live(&self.map, &self.slot) else {
            return;
        };
        if l.geometry.is_some() {
            return;
        }
        let Ok(live) = catalog::finish_live(l.live, &l.pages, self.slot.heap_len) else {
            return;
        };
        let Ok(layout) = Allocator::check_layout(HEADER_SIZE, self.map.len(), &live) else {
            return;
        };
        let mut alloc = Allocator::with_key(key);
        let _ = alloc.add_arena_with_layout(&mut self.map, &layout);
    }
}

/// Where a new block goes (`State::alloc_block_dirty`).
#[derive(Clone, Copy)]
enum Place {
    /// Vectors and everything else: anywhere but the catalog region.
    Data,
    /// Catalog pages, metas, block lists: the catalog region first.
    Catalog,
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
        self.alloc_block_dirty(path, size, Place::Data)
            .map(|(off, cap, _)| (off, cap))
    }

    /// `alloc_block` that also returns how many leading bytes of the block
    /// may not read as zeros (the allocator's "Fresh space": a block carved
    /// from never-used file space is all zeros without a write), placed as
    /// `place` says.
    fn alloc_block_dirty(
        &mut self,
        path: &Path,
        size: u64,
        place: Place,
    ) -> Result<(u64, u64, u64)> {
        /// Blocks tried after the first whose reservation failed.
        const SPACE_RETRIES: usize = 8;
        self.end_quarantine();
        let State { map, alloc, .. } = self;
        let alloc = alloc.as_mut().ok_or_else(|| Error::ReadOnly {
            path: path.to_path_buf(),
        })?;
        let malloc = |alloc: &mut Allocator, map: &mut Mapping| match place {
            Place::Data => alloc.malloc_dirty(map, size),
            Place::Catalog => alloc.malloc_catalog(map, size),
        };
        let first = match malloc(alloc, map) {
            Some(got) => got,
            None => {
                grow(path, map, alloc, size)?;
                malloc(alloc, map).ok_or_else(|| Error::Full {
                    requested: size,
                    detail: "no free block large enough after growing the heap".into(),
                })?
            }
        };
        let mut held = Vec::new();
        let mut next = Some(first);
        // Always replaced by the first pass (no String is built: this runs
        // for every malloc).
        let mut result = Err(Error::Full {
            requested: size,
            detail: String::new(),
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
                    map.unreserve_block(off, cap);
                    held.push(off);
                    if held.len() == 1 {
                        result = Err(space_error(path, size, "cannot reserve disk space", e));
                    }
                    next = if held.len() > SPACE_RETRIES {
                        None
                    } else {
                        malloc(alloc, map)
                    };
                }
            }
        }
        let failed = result.is_err();
        for off in held {
            if alloc.free(map, off).is_ok() && failed {
                if let Some((start, cap)) = alloc.last_merged() {
                    map.unreserve_free(start, cap);
                }
            }
        }
        result
    }

    /// Frees a block, or quarantines it while a forked child may still
    /// write to it (see [`State::quarantine`]).
    fn free_block(&mut self, off: u64) {
        self.verified.get_mut().remove(&off);
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

    /// Frees a block; when the block is large and the free region it ends
    /// up in is big, that space also goes back to the file system
    /// (`Mapping::punch`: `du` of the file drops after `fmalloc_rm()`).
    ///
    /// Only a block of at least `PUNCH_BLOCK_MIN` bytes punches: space of
    /// smaller blocks stays reserved and in the page cache for the next
    /// allocations, as `free()` keeps small blocks for `malloc()`. Punching
    /// it made churn of small vectors (create many, collect them, create
    /// them again) pay for every chunk twice more: re-reserving it, and
    /// page faults that zero its pages again (`bench/churn.R`, 200 000
    /// classic vectors of 16 B - 4 KiB, each in page-padded blocks of 8
    /// KiB or more: drop + gc 0.52 -> 0.25 s of CPU, refill 2.63 -> 2.22
    /// s; blocks of 4 KiB or less go to the allocator's cache, which never
    /// punched).
    /// Such space is punched later if a large block freed next to it
    /// merges with it.
    fn free_now(&mut self, off: u64) {
        let State { map, alloc, .. } = self;
        if let Some(alloc) = alloc.as_mut() {
            let large = alloc
                .usable_size(map, off)
                .is_ok_and(|cap| cap >= PUNCH_BLOCK_MIN);
            let r = alloc.free(map, off);
            debug_assert!(r.is_ok(), "free({off}): {r:?}");
            // The whole free region, merged with free neighbours: large
            // blocks freed side by side (a data frame's columns) add up.
            if let (true, Ok(()), Some((start, cap))) = (large, r, alloc.last_merged()) {
                if cap >= 2 * crate::map::CHUNK {
                    map.punch(start, cap);
                }
            }
        }
    }
}

impl tree::Store for State {
    fn heap_len(&self) -> u64 {
        self.map.len()
    }
    fn bytes(&self, off: u64, len: u64) -> Option<&[u8]> {
        self.map.bytes(off, len)
    }
    // While this process holds the lock nobody else writes the file, and
    // this process never writes a catalog block in place: a block keeps
    // the checksum it was verified (or written) with until it is freed.
    fn known(&self, off: u64, sum: u64) -> bool {
        self.verified.borrow().get(&off) == Some(&sum)
    }
    fn remember(&self, off: u64, sum: u64) {
        self.verified.borrow_mut().insert(off, sum);
    }
}

impl tree::StoreMut for State {
    fn alloc(&mut self, size: u64) -> std::result::Result<(u64, u64), TreeError> {
        let path = std::mem::take(&mut self.path);
        let r = self.alloc_block_dirty(&path, size, Place::Catalog);
        self.path = path;
        let (off, cap, _) = r.map_err(TreeError::Store)?;
        self.txn.op_alloc.push(off);
        self.txn.fresh.insert(off);
        Ok((off, cap))
    }
    fn write(&mut self, off: u64, data: &[u8]) -> std::result::Result<(), TreeError> {
        self.map
            .write(off, data)
            .map_err(|e| TreeError::Store(Error::io(&self.path, "write the catalog of", e)))
    }
    fn release(&mut self, off: u64) {
        self.txn.op_release.push(off);
    }
    fn generation(&self) -> u64 {
        self.slot.generation + 1
    }
}

impl State {
    fn tree_err(&self, e: TreeError) -> Error {
        match e {
            TreeError::Store(e) => e,
            other => Error::corrupt(&self.path, other.message()),
        }
    }

    /// Starts a change: what it allocates and releases is recorded.
    fn op_begin(&mut self) {
        self.txn.op_alloc.clear();
        self.txn.op_release.clear();
    }

    /// Ends a change: on success the blocks it released are released (see
    /// `txn_release`); on failure the blocks it allocated are freed and the
    /// catalog is as before it (it was only replaced on success).
    fn op_done(&mut self, ok: bool) {
        let alloc = std::mem::take(&mut self.txn.op_alloc);
        let release = std::mem::take(&mut self.txn.op_release);
        if ok {
            for off in release {
                self.txn_release(off);
            }
        } else {
            for off in alloc {
                self.txn.fresh.remove(&off);
                self.free_block(off);
            }
        }
    }

    /// A catalog block (page, meta, block list) the catalog no longer
    /// uses: freed now if this transaction allocated it, else after commit.
    fn txn_release(&mut self, off: u64) {
        if self.txn.fresh.remove(&off) {
            self.free_block(off);
        } else {
            self.txn.to_free.push(off);
        }
    }

    /// A block of this transaction holding `data` (meta, block list).
    fn write_fresh(&mut self, data: &[u8]) -> Result<(u64, u64)> {
        let (off, cap) =
            tree::StoreMut::alloc(self, data.len() as u64).map_err(|e| self.tree_err(e))?;
        self.map
            .write(off, data)
            .map_err(|e| Error::io(&self.path, "write", e))?;
        Ok((off, cap))
    }

    /// Names or unnames a data block in the transaction (remembering what
    /// it was, for commit and rollback). Nothing is freed here.
    fn set_named(&mut self, off: u64, named: bool) {
        if let Some(r) = self.refs.get_mut(&off) {
            let was = r.named;
            r.named = named;
            self.txn.orig_named.entry(off).or_insert(was);
        }
    }

    /// The entry `name` of the catalog (with the open transaction's
    /// changes): O(log n) pages read and checked.
    fn lookup(&self, name: &str) -> Result<Option<StoredEntry>> {
        match &self.cat {
            Catalog::Blob(v) => Ok(v
                .binary_search_by(|e| e.name.as_str().cmp(name))
                .ok()
                .map(|i| v[i].clone())),
            Catalog::Tree { root, .. } => {
                tree::get(self, *root, name).map_err(|e| self.tree_err(e))
            }
        }
    }

    /// Every entry and the catalog's own blocks: a walk of the whole tree.
    fn load_all(&self) -> Result<Loaded> {
        match &self.cat {
            Catalog::Blob(v) => Ok(Loaded {
                entries: (**v).clone(),
                blocks: if self.slot.catalog_off != 0 {
                    vec![(self.slot.catalog_off, self.slot.catalog_cap)]
                } else {
                    Vec::new()
                },
            }),
            Catalog::Tree { root, .. } => {
                let mut entries = Vec::new();
                let mut blocks = Vec::new();
                tree::walk(self, *root, &mut |x| {
                    match x {
                        tree::Visit::Page(r) => blocks.push((r.off, r.cap)),
                        tree::Visit::Leaf(l) => entries.push(l.entry(self)?),
                    }
                    Ok(())
                })
                .map_err(|e| self.tree_err(e))?;
                Ok(Loaded { entries, blocks })
            }
        }
    }

    /// Makes `refs` hold every named block (a read-only tree open adds
    /// them lazily).
    fn complete_refs(&mut self) -> Result<()> {
        if self.refs_complete {
            return Ok(());
        }
        let l = self.load_all()?;
        for e in &l.entries {
            for b in &e.blocks {
                self.refs.entry(b.offset).or_insert(Ref {
                    count: 0,
                    named: true,
                    capacity: b.capacity,
                });
            }
        }
        self.refs_complete = true;
        Ok(())
    }

    /// `e` as handed out: geometry checked, meta read and checked against
    /// its checksum, its blocks known to the reference table.
    fn entry_out(&mut self, e: &StoredEntry) -> Result<Entry> {
        catalog::live_blocks(std::slice::from_ref(e), &[], self.map.len())
            .map_err(|w| Error::corrupt(&self.path, w))?;
        if !self.refs_complete {
            for b in &e.blocks {
                self.refs.entry(b.offset).or_insert(Ref {
                    count: 0,
                    named: true,
                    capacity: b.capacity,
                });
            }
        }
        let meta = self.meta_of(e).map_err(|w| Error::corrupt(&self.path, w))?;
        Ok(to_entry(e, meta, None))
    }

    /// The meta bytes of `e`, checked against its checksum.
    fn meta_of(&self, e: &StoredEntry) -> std::result::Result<Vec<u8>, String> {
        self.meta_bytes(&e.name, e.meta_off, e.meta_len, e.meta_sum)
            .map(<[u8]>::to_vec)
    }

    fn meta_bytes(
        &self,
        name: &str,
        off: u64,
        len: u64,
        sum: u64,
    ) -> std::result::Result<&[u8], String> {
        if off == 0 {
            return Ok(&[]);
        }
        let m = self
            .map
            .bytes(off, len)
            .filter(|_| off >= HEADER_SIZE)
            .ok_or_else(|| format!("the metadata of '{name}' lies outside the heap"))?;
        if fnv1a64(m) != sum {
            return Err(format!("the metadata of '{name}' fails its checksum"));
        }
        Ok(m)
    }

    /// The summary of a listed entry: kept in the catalog, or (entries
    /// that keep none: v1 catalogs, odd metas) read from its meta.
    fn summary_of(&self, l: &mut tree::Listed) -> std::result::Result<Vec<u8>, String> {
        if let Some(s) = l.summary.take() {
            return Ok(s);
        }
        let m = self.meta_bytes(&l.name, l.meta_off, l.meta_len, l.meta_sum)?;
        match crate::format::meta::summary_section(m) {
            Some(s) => Ok(s.to_vec()),
            None => Err(crate::format::meta::decode_summary(m)
                .err()
                .unwrap_or_else(|| "summary too long".into())),
        }
    }

    /// Converts a v1 catalog to a tree, in the open transaction (the first
    /// change of a v1 heap; a read-only open never converts).
    fn ensure_tree(&mut self) -> Result<()> {
        let Catalog::Blob(v) = &self.cat else {
            return Ok(());
        };
        let v = v.clone();
        self.op_begin();
        let r = self.convert(&v);
        self.op_done(r.is_ok());
        let root = r?;
        if self.slot.catalog_off != 0 {
            self.txn_release(self.slot.catalog_off);
        }
        self.cat = Catalog::Tree {
            root,
            count: v.len() as u64,
        };
        self.txn.changed = true;
        Ok(())
    }

    fn convert(&mut self, v: &[StoredEntry]) -> Result<Option<PageRef>> {
        let mut entries = Vec::with_capacity(v.len());
        for e in v {
            let mut e = e.clone();
            if let Ok(meta) = self.meta_bytes(&e.name, e.meta_off, e.meta_len, e.meta_sum) {
                e.summary = crate::format::meta::summary_section(meta).map(<[u8]>::to_vec);
            }
            self.place_blocks(&mut e)?;
            entries.push(e);
        }
        tree::build(self, &entries).map_err(|e| self.tree_err(e))
    }

    /// Sets `data_bytes` and, for more than `INLINE_BLOCKS` blocks, writes
    /// the block list block.
    fn place_blocks(&mut self, e: &mut StoredEntry) -> Result<()> {
        e.data_bytes = StoredEntry::data_bytes_of(&e.blocks);
        e.blocks_at = None;
        if e.blocks.len() > tree::INLINE_BLOCKS {
            let bytes = tree::encode_blocks(&e.blocks);
            let (off, cap) = self.write_fresh(&bytes)?;
            e.blocks_at = Some((off, cap, fnv1a64(&bytes)));
        }
        Ok(())
    }

    fn tree_root(&self) -> Result<(Option<PageRef>, u64)> {
        match self.cat {
            Catalog::Tree { root, count } => Ok((root, count)),
            Catalog::Blob(_) => Err(Error::Invalid("the catalog was not converted".into())),
        }
    }

    /// An entry left the catalog: its meta and block list go after the
    /// commit; its data blocks not in `keep` lose their name.
    fn drop_entry(&mut self, old: &StoredEntry, keep: &[u64]) {
        if old.meta_off != 0 {
            self.txn_release(old.meta_off);
        }
        if let Some((off, _, _)) = old.blocks_at {
            self.txn_release(off);
        }
        for b in &old.blocks {
            if !keep.contains(&b.offset) {
                self.set_named(b.offset, false);
            }
        }
    }

    /// A change failed: outside a batch, everything since the last commit
    /// is rolled back (a batch is rolled back by its owner).
    fn failed(&mut self, e: Error) -> Error {
        if self.txn.depth == 0 && !self.crashed {
            self.rollback();
        }
        e
    }

    /// `Error::RolledBack` while an inner batch's rollback holds the open
    /// batches (see `Txn::rolled_back`): for every change of the catalog.
    fn refuse_rolled_back(&self) -> Result<()> {
        if self.txn.rolled_back {
            return Err(Error::RolledBack { ended: false });
        }
        Ok(())
    }

    /// Ends a change: commits it unless a batch is open; a failed commit
    /// rolls the transaction back.
    fn finish(&mut self) -> Result<()> {
        if self.txn.depth > 0 {
            return Ok(());
        }
        let r = self.commit();
        if r.is_err() && !self.crashed {
            self.rollback();
        }
        r
    }

    /// Undoes the open transaction: its blocks are freed, names restored,
    /// the catalog is the committed one again.
    fn rollback(&mut self) {
        let txn = std::mem::take(&mut self.txn);
        for off in txn.fresh {
            self.free_block(off);
        }
        for (off, orig) in txn.orig_named {
            if let Some(r) = self.refs.get_mut(&off) {
                r.named = orig;
                if !orig && r.count == 0 {
                    self.refs.remove(&off);
                    self.free_block(off);
                }
            }
        }
        self.cat = self.committed.clone();
    }

    /// Commits the open transaction: in durable mode one flush of the file
    /// (data, metas, pages), the inactive slot, one flush of the header;
    /// then the superseded blocks are freed. With `SyncMode::None` nothing
    /// is flushed, the slot that is not the last durable one is written
    /// (so that slot stays whole), and superseded blocks are held back
    /// until the next sync (but those written since the last durable
    /// commit: `since_durable`): every page the last durable slot
    /// references stays as it is on disk, so after a power loss one of the
    /// two slots reads back.
    fn commit(&mut self) -> Result<()> {
        if !self.txn.changed {
            let depth = self.txn.depth;
            self.txn = Txn {
                depth,
                ..Txn::default()
            };
            return Ok(());
        }
        let (root, count) = self.tree_root()?;
        let durable = self.sync == SyncMode::Commit;
        if durable {
            self.map
                .sync_durable()
                .map_err(|e| Error::io(&self.path, "flush", e))?;
        }
        if self.fail == Some(FailPoint::BeforeSlot) {
            self.crashed = true;
            return Err(Error::Invalid("simulated crash before the slot".into()));
        }
        let target = if durable {
            1 - self.slot_index
        } else {
            1 - self.durable_index
        };
        let slot = Slot {
            generation: self.slot.generation + 1,
            catalog_off: root.map_or(0, |r| r.off),
            catalog_cap: root.map_or(0, |r| r.cap),
            catalog_len: count,
            catalog_sum: root.map_or(0, |r| r.sum),
            heap_len: self.map.len(),
            kind: CATALOG_TREE,
            unsynced: !durable,
        };
        self.write_slot(target, &slot, durable)?;
        if self.fail == Some(FailPoint::AfterSlot) {
            self.crashed = true;
            return Err(Error::Invalid("simulated crash after the slot".into()));
        }
        self.slot = slot;
        self.slot_index = target;
        self.committed = self.cat.clone();
        let txn = std::mem::take(&mut self.txn);
        let mut frees = txn.to_free;
        for (off, orig) in txn.orig_named {
            let Some(r) = self.refs.get(&off).copied() else {
                continue;
            };
            if !r.named && r.count == 0 {
                self.refs.remove(&off);
                if orig {
                    frees.push(off);
                } else {
                    // Named and unnamed within the transaction: no commit
                    // ever referenced it.
                    self.free_block(off);
                }
            } else if !r.named && orig && !durable {
                // Still held by a session vector: `release` defers it.
                self.unnamed_held.insert(off);
            }
        }
        if durable {
            self.durable_index = target;
            self.unsynced = false;
            self.since_durable.clear();
            self.unnamed_held.clear();
            let held = std::mem::take(&mut self.deferred);
            for off in frees.into_iter().chain(held) {
                self.free_block(off);
            }
        } else {
            self.unsynced = true;
            for off in frees {
                if self.since_durable.remove(&off) {
                    self.free_block(off);
                } else {
                    self.deferred.push(off);
                }
            }
            self.since_durable.extend(txn.fresh);
            if self.deferred.len() > MAX_DEFERRED {
                // Committed already; a failed sync only keeps them held.
                let _ = self.make_durable();
            }
        }
        Ok(())
    }

    /// Writes `slot` into slot `target` (and, on a version-1 file, the
    /// header as version 2: the same first sector), flushing the header
    /// page when `durable`. On failure the header is as it was.
    fn write_slot(&mut self, target: usize, slot: &Slot, durable: bool) -> Result<()> {
        // Generations never wrap: decoding refuses any above MAX_GENERATION.
        if slot.generation > MAX_GENERATION {
            return Err(Error::corrupt(
                &self.path,
                "the catalog generation is exhausted; copy the objects to a new heap",
            ));
        }
        // The header page takes the slot write. It holds data (the magic),
        // but a large folio over it may cover holes of a sparse copy (see
        // map/): reserved here, not at open, so that a full disk still lets
        // a sparse copy be opened and read.
        if let Err(e) = self.map.reserve_range(0, HEADER_SIZE) {
            return Err(space_error(
                &self.path,
                HEADER_SIZE,
                "cannot reserve the header page",
                e,
            ));
        }
        let old_page = self
            .map
            .bytes(0, HEADER_SIZE)
            .map(<[u8]>::to_vec)
            .unwrap_or_default();
        let mut written = Ok(());
        if self.header_version == VERSION_V1 {
            if let Ok(mut h) = Header::decode(&old_page) {
                h.version = VERSION;
                let page = h.encode_page(slot);
                written = self.map.write(0, &page[..slot_offset(0)]);
            }
        }
        let at = slot_offset(target) as u64;
        let written = written
            .and_then(|()| self.map.write(at, &slot.encode()))
            .and_then(|()| {
                if durable {
                    self.map.flush_durable(0, HEADER_SIZE)
                } else {
                    Ok(())
                }
            });
        if let Err(e) = written {
            if old_page.len() == HEADER_SIZE as usize {
                let _ = self.map.write(0, &old_page[..slot_offset(2)]);
            }
            return Err(Error::io(&self.path, "write the header of", e));
        }
        self.header_version = VERSION;
        Ok(())
    }

    /// Makes everything durable: one flush of the file; then, if commits
    /// were not flushed, the committed catalog again into the other slot
    /// as a durable one (flushed), and the blocks held back are freed.
    fn make_durable(&mut self) -> Result<()> {
        self.map
            .sync_all()
            .map_err(|e| Error::io(&self.path, "sync", e))?;
        if !self.unsynced {
            return Ok(());
        }
        let target = 1 - self.slot_index;
        let slot = Slot {
            generation: self.slot.generation + 1,
            unsynced: false,
            ..self.slot
        };
        self.write_slot(target, &slot, true)?;
        self.slot = slot;
        self.slot_index = target;
        self.durable_index = target;
        self.unsynced = false;
        self.since_durable.clear();
        self.unnamed_held.clear();
        for off in std::mem::take(&mut self.deferred) {
            self.free_block(off);
        }
        Ok(())
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
    // The new space is fresh: the block needs `size` bytes of new disk
    // space. Refused before the file grows when the file system has less
    // (its reservation would fail after filling the disk).
    if let Some(free) = map.file().and_then(crate::sys::free_space) {
        if free < size {
            return Err(full(format!(
                "the file system of '{}' has {free} bytes free",
                path.display()
            )));
        }
    }
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
        let (canon, made) = canonical_path(path, opts.readonly)?;
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
        let (shared, created) = Shared::open(path, &canon, made, opts)?;
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
        lock(&self.shared.state)
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
        let mut st = self.state();
        if st.crashed {
            return Err(Error::Closed { path: path() });
        }
        self.release_pending(&mut st);
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
        let (off, capacity, dirty) = st.alloc_block_dirty(self.path(), size, Place::Data)?;
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
                // Shrinking back always succeeds in place. What the failed
                // reservation got of the space past the old end, free
                // again, goes back to the file system (ext4 keeps what a
                // failed `fallocate` allocated: the rest of the disk).
                let _ = alloc.resize_in_place(map, off, r.capacity);
                map.unreserve_block(off + r.capacity, cap - r.capacity);
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
    /// in force holds it). The one place that knows; O(1) (a read-only
    /// heap reads its whole catalog the first time).
    pub fn is_named(&self, off: u64) -> bool {
        let mut st = self.state();
        if !st.refs.contains_key(&off) && st.complete_refs().is_err() {
            return false;
        }
        st.refs.get(&off).is_some_and(|r| r.named)
    }

    /// The block at `off` as the catalog describes it and the name of the
    /// object it belongs to, if it is a block of a named object.
    pub fn named_owner(&self, off: u64) -> Option<(BlockDesc, String)> {
        let mut st = self.state();
        st.complete_refs().ok()?;
        if !st.refs.get(&off).is_some_and(|r| r.named) {
            return None;
        }
        let st = &mut *st;
        if !st
            .named_owners
            .as_ref()
            .is_some_and(|(c, _)| c.same(&st.cat))
        {
            let l = st.load_all().ok()?;
            let mut owners = Owners::new();
            for e in &l.entries {
                for b in &e.blocks {
                    let desc = BlockDesc {
                        offset: b.offset,
                        data_offset: b.data_offset,
                        elem: b.elem,
                        length: b.length,
                    };
                    owners.insert(b.offset, (desc, e.name.clone()));
                }
            }
            st.named_owners = Some((st.cat.clone(), owners));
        }
        st.named_owners.as_ref()?.1.get(&off).cloned()
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
        let name = {
            let mut st = self.state();
            st.complete_refs()?;
            if !st.refs.get(&old).is_some_and(|r| r.named) {
                return Ok(false);
            }
            st.load_all()?
                .entries
                .into_iter()
                .find(|e| e.blocks.iter().any(|b| b.offset == old))
                .map(|e| e.name)
        };
        let Some(name) = name else {
            return Ok(false);
        };
        let mut e = match self.get(&name) {
            Ok(e) => e,
            // A damaged object keeps its block.
            Err(Error::Corrupt { .. }) => return Ok(false),
            Err(e) => return Err(e),
        };
        let Some(i) = e.blocks.iter().position(|b| b.offset == old) else {
            return Ok(false);
        };
        e.blocks[i] = new.clone();
        self.put(&name, &e.meta, &e.blocks, true).map(|()| true)
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
        if !st.refs.contains_key(&off) {
            st.complete_refs()?;
        }
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
    ///
    /// Never waits for the heap's lock: only R's thread calls this, from
    /// the garbage collector, and R can collect while that thread holds the
    /// lock -- from a signal handler (SIGUSR1 and SIGUSR2 clean up and
    /// collect inside the handler, whatever the thread was doing) -- where
    /// waiting would never end. A release that finds the lock held waits in
    /// `pending` for the next release or allocation.
    pub fn release(&self, off: u64) -> Result<()> {
        if self.shared.owner.is_forked() {
            return Ok(());
        }
        let Some(mut st) = try_lock(&self.shared.state) else {
            lock(&self.shared.pending).push(off);
            self.shared.has_pending.store(true, Ordering::Release);
            return Ok(());
        };
        self.release_pending(&mut st);
        release_in(&mut st, off)
    }

    /// Applies the releases that found the lock held (`release`).
    fn release_pending(&self, st: &mut State) {
        // A plain load first: this runs for every allocation.
        if !self.shared.has_pending.load(Ordering::Relaxed)
            || !self.shared.has_pending.swap(false, Ordering::Acquire)
        {
            return;
        }
        let offs = std::mem::take(&mut *lock(&self.shared.pending));
        for off in offs {
            // They were valid references when they came (an error here is
            // a bug, which the direct release would have reported).
            let _ = release_in(st, off);
        }
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

    /// Copies `data` to `[off, off + data.len())`, a range of a block the
    /// caller holds, in this writable heap: large runs through the file,
    /// the rest through the mapping (see `Mapping::write_run`). `data` must
    /// not point into this heap's mapping.
    pub fn write(&self, off: u64, data: &[u8]) -> Result<()> {
        if self.shared.readonly {
            return Err(Error::ReadOnly {
                path: self.path().to_path_buf(),
            });
        }
        if off < HEADER_SIZE {
            return Err(Error::Invalid(format!("offset {off} is inside the header")));
        }
        let len = data.len() as u64;
        let mut st = self.state();
        if st.map.addr(off, len).is_none() {
            return Err(Error::Invalid(format!(
                "range [{off}, {off}+{len}) is not inside the heap"
            )));
        }
        st.map
            .write_run(off, data)
            .map_err(|e| Error::io(self.path(), "write to", e))
    }

    /// Reverse lookup: the file offset of an address inside this heap's mapping.
    pub fn offset_of(&self, addr: *const u8) -> Option<u64> {
        self.state()
            .map
            .offset_of(addr)
            .filter(|&o| o >= HEADER_SIZE)
    }

    pub fn info(&self) -> Info {
        let mut st = self.state();
        if !self.shared.owner.is_forked() {
            // Blocks freed while forked children ran come back once they
            // have exited; without this they waited for the next
            // allocation, and the figures below still counted them.
            st.end_quarantine();
        }
        let file_bytes = st.map.len();
        let (used_bytes, free_bytes) = match &st.alloc {
            Some(a) => {
                let s = a.stats();
                (s.used_bytes, s.free_bytes)
            }
            None => {
                // Read-only: what the catalog holds is used, the rest free.
                let used: u64 = st
                    .load_all()
                    .ok()
                    .and_then(|l| catalog::live_blocks(&l.entries, &l.blocks, file_bytes).ok())
                    .map_or(0, |live| live.iter().map(|&(_, cap)| cap).sum());
                (used, (file_bytes - HEADER_SIZE).saturating_sub(used))
            }
        };
        let file = st.map.file().or(self.shared._lock.as_ref());
        Info {
            path: self.shared.path.clone(),
            heap_id: self.shared.heap_id,
            readonly: self.shared.readonly,
            sync: (!self.shared.readonly).then_some(st.sync),
            file_bytes,
            disk_bytes: file.and_then(|f| crate::sys::disk_usage(f).ok()),
            used_bytes,
            free_bytes,
            objects: st.cat.count(),
        }
    }

    /// Makes everything written so far durable: one flush of the file and,
    /// after unsynced commits (`SyncMode::None`), a durable slot. An open
    /// batch is not committed by this. A no-op for a read-only heap.
    /// In a forked child it is `Error::Forked`: the child's slot would
    /// carry the generation number the parent's next commit takes, and the
    /// tie could hide that commit after a crash.
    pub fn sync(&self) -> Result<()> {
        if self.shared.readonly {
            return Ok(());
        }
        if self.shared.owner.is_forked() {
            return Err(Error::Forked {
                path: self.path().to_path_buf(),
            });
        }
        let mut st = self.state();
        if st.crashed {
            return Err(Error::Closed {
                path: self.path().to_path_buf(),
            });
        }
        st.make_durable()
    }

    /// When commits are flushed (see [`SyncMode`]); for this open heap, in
    /// this process. Switching to `Commit` makes everything durable first.
    pub fn set_sync(&self, mode: SyncMode) -> Result<()> {
        if self.sync_mode() == mode {
            // Nothing changes (so no writer is needed: a forked child may
            // open the heap it inherited).
            return Ok(());
        }
        let mut st = self.writer()?;
        if mode == SyncMode::Commit && st.sync == SyncMode::None {
            st.make_durable()?;
        }
        st.sync = mode;
        Ok(())
    }

    pub fn sync_mode(&self) -> SyncMode {
        self.state().sync
    }

    /// Opens a batch: the changes until the matching [`Heap::commit_batch`]
    /// are one atomic commit. Batches nest (only the outermost commits).
    pub fn begin_batch(&self) -> Result<()> {
        let mut st = self.writer()?;
        st.txn.depth += 1;
        Ok(())
    }

    /// Closes a batch; the outermost one commits (a failed commit rolls
    /// the whole batch back).
    pub fn commit_batch(&self) -> Result<()> {
        let mut st = self.writer()?;
        if st.txn.depth == 0 {
            return Err(Error::Invalid("no batch is open".into()));
        }
        st.txn.depth -= 1;
        if st.txn.rolled_back {
            st.txn.rolled_back = st.txn.depth > 0;
            return Err(Error::RolledBack { ended: true });
        }
        st.finish()
    }

    /// Ends the innermost batch by rolling back every change since the
    /// outermost batch began (there are no savepoints). The outer batches
    /// stay open, refusing changes (`Txn::rolled_back`). A no-op when no
    /// batch is open.
    pub fn abort_batch(&self) {
        let mut st = self.state();
        let depth = st.txn.depth;
        if depth > 0 && !st.crashed {
            // (Resets the transaction, its depth included.)
            st.rollback();
        }
        st.txn.depth = depth.saturating_sub(1);
        st.txn.rolled_back = st.txn.depth > 0;
    }

    /// Open batches (0: none).
    pub fn batch_depth(&self) -> u32 {
        self.state().txn.depth
    }

    /// Names `blocks` (live blocks of this heap) with `meta` under `name`,
    /// atomically. The commit flushes the blocks' data first (durable
    /// mode), so a committed name never points at data that did not reach
    /// the disk.
    pub fn put(
        &self,
        name: &str,
        meta: &[u8],
        blocks: &[BlockDesc],
        overwrite: bool,
    ) -> Result<()> {
        catalog::check_name(name).map_err(Error::Invalid)?;
        let mut guard = self.writer()?;
        let st = &mut *guard;
        st.refuse_rolled_back()?;
        if let Err(e) = st.ensure_tree() {
            return Err(st.failed(e));
        }
        let old = match st.lookup(name) {
            Ok(o) => o,
            Err(e) => return Err(st.failed(e)),
        };
        if old.is_some() && !overwrite {
            return Err(st.failed(Error::Exists { name: name.into() }));
        }
        let old_offsets: Vec<u64> = old
            .as_ref()
            .map(|o| o.blocks.iter().map(|b| b.offset).collect())
            .unwrap_or_default();
        let mut stored = Vec::with_capacity(blocks.len());
        for b in blocks {
            let Some(r) = st.refs.get(&b.offset) else {
                return Err(st.failed(not_live(b.offset)));
            };
            if r.named && !old_offsets.contains(&b.offset) {
                return Err(st.failed(Error::Invalid(format!(
                    "block at offset {} already belongs to another named object",
                    b.offset
                ))));
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
            summary: crate::format::meta::summary_section(meta).map(<[u8]>::to_vec),
            data_bytes: 0,
            blocks_at: None,
        };
        if let Err(e) = catalog::live_blocks(std::slice::from_ref(&entry), &[], st.map.len()) {
            return Err(st.failed(Error::Invalid(format!("cannot name these blocks: {e}"))));
        }
        st.op_begin();
        let r = (|| -> Result<Option<StoredEntry>> {
            if !meta.is_empty() {
                let (off, cap) = st.write_fresh(meta)?;
                entry.meta_off = off;
                entry.meta_cap = cap;
                entry.meta_len = meta.len() as u64;
                entry.meta_sum = fnv1a64(meta);
            }
            st.place_blocks(&mut entry)?;
            let (root, count) = st.tree_root()?;
            let (root, old) = tree::insert(st, root, &entry).map_err(|e| st.tree_err(e))?;
            st.cat = Catalog::Tree {
                root,
                count: count + u64::from(old.is_none()),
            };
            Ok(old)
        })();
        st.op_done(r.is_ok());
        let replaced = match r {
            Ok(o) => o,
            Err(e) => return Err(st.failed(e)),
        };
        let new_offsets: Vec<u64> = entry.blocks.iter().map(|b| b.offset).collect();
        if let Some(old) = replaced {
            st.drop_entry(&old, &new_offsets);
        }
        for &off in &new_offsets {
            st.set_named(off, true);
        }
        st.txn.changed = true;
        st.finish()
    }

    /// Whether `name` is in the catalog (damaged or not): O(log n).
    pub fn contains(&self, name: &str) -> Result<bool> {
        Ok(self.state().lookup(name)?.is_some())
    }

    /// The object `name`: its blocks and its meta (checked against its
    /// checksum: `Error::Corrupt` if it fails). O(log n) pages read.
    pub fn get(&self, name: &str) -> Result<Entry> {
        let mut st = self.state();
        let e = st
            .lookup(name)?
            .ok_or_else(|| Error::NotFound { name: name.into() })?;
        st.entry_out(&e)
    }

    /// Every named object, sorted by name (byte order), with its meta
    /// (`damaged` when it fails its checksum). Reads every meta.
    pub fn list(&self) -> Vec<Entry> {
        let st = self.state();
        let Ok(l) = st.load_all() else {
            return Vec::new();
        };
        l.entries
            .iter()
            .map(|e| match st.meta_of(e) {
                Ok(meta) => to_entry(e, meta, None),
                Err(why) => to_entry(e, Vec::new(), Some(why)),
            })
            .collect()
    }

    /// What `fmalloc_ls()` shows of every object, sorted by name, from the
    /// catalog's leaf records: no meta is read (except for entries whose
    /// summary the catalog does not keep: v1 catalogs, odd metas). A
    /// damaged page below the root (met after a lazy read-only open) is
    /// skipped with its subtree and reported in `Listing::unlisted`: the
    /// readable rows are still listed.
    pub fn summaries(&self) -> Result<Listing> {
        let st = self.state();
        let mut out = Vec::with_capacity(st.cat.count().min(1 << 20) as usize);
        let mut unlisted = None;
        let mut add = |st: &State, mut l: tree::Listed| {
            let summary = st.summary_of(&mut l);
            out.push(Listed {
                name: l.name,
                created_ms: l.created_ms,
                modified_ms: l.modified_ms,
                data_bytes: l.data_bytes,
                summary,
            });
        };
        match &st.cat {
            Catalog::Blob(v) => {
                for e in v.iter() {
                    add(
                        &st,
                        tree::Listed {
                            name: e.name.clone(),
                            created_ms: e.created_ms,
                            modified_ms: e.modified_ms,
                            data_bytes: e.data_bytes,
                            summary: None,
                            meta_off: e.meta_off,
                            meta_len: e.meta_len,
                            meta_sum: e.meta_sum,
                        },
                    );
                }
            }
            Catalog::Tree { root, count } => {
                let mut rows = Vec::new();
                let skipped = tree::walk_readable(&*st, *root, &mut |x| {
                    if let tree::Visit::Leaf(l) = x {
                        rows.push(l.listed());
                    }
                    Ok(())
                })
                .map_err(|e| st.tree_err(e))?;
                if !skipped.is_empty() {
                    unlisted = Some(Unlisted {
                        pages: skipped.iter().map(|r| r.off).collect(),
                        missing: count.saturating_sub(rows.len() as u64),
                        total: *count,
                    });
                }
                for l in rows {
                    add(&st, l);
                }
            }
        }
        Ok(Listing {
            rows: out,
            unlisted,
        })
    }

    /// Removes the name atomically; its blocks are freed unless a session
    /// reference still holds them.
    pub fn remove(&self, name: &str) -> Result<()> {
        let mut guard = self.writer()?;
        let st = &mut *guard;
        st.refuse_rolled_back()?;
        if let Err(e) = st.ensure_tree() {
            return Err(st.failed(e));
        }
        st.op_begin();
        let r = st.tree_root().and_then(|(root, count)| {
            tree::remove(st, root, name)
                .map(|(root, old)| (root, old, count))
                .map_err(|e| st.tree_err(e))
        });
        st.op_done(r.is_ok());
        match r {
            Err(e) => Err(st.failed(e)),
            Ok((_, None, _)) => Err(st.failed(Error::NotFound { name: name.into() })),
            Ok((root, Some(old), count)) => {
                st.cat = Catalog::Tree {
                    root,
                    count: count.saturating_sub(1),
                };
                st.drop_entry(&old, &[]);
                st.txn.changed = true;
                st.finish()
            }
        }
    }

    /// Renames atomically; with `overwrite` an existing `to` is replaced.
    pub fn rename(&self, from: &str, to: &str, overwrite: bool) -> Result<()> {
        catalog::check_name(to).map_err(Error::Invalid)?;
        let mut guard = self.writer()?;
        let st = &mut *guard;
        st.refuse_rolled_back()?;
        if let Err(e) = st.ensure_tree() {
            return Err(st.failed(e));
        }
        let src = match st.lookup(from) {
            Ok(Some(e)) => e,
            Ok(None) => return Err(st.failed(Error::NotFound { name: from.into() })),
            Err(e) => return Err(st.failed(e)),
        };
        if from == to {
            return st.finish();
        }
        match st.lookup(to) {
            Ok(Some(_)) if !overwrite => return Err(st.failed(Error::Exists { name: to.into() })),
            Ok(_) => {}
            Err(e) => return Err(st.failed(e)),
        }
        let mut entry = src;
        entry.name = to.into();
        entry.modified_ms = now_ms();
        st.op_begin();
        let r = (|| -> Result<Option<StoredEntry>> {
            let (root, count) = st.tree_root()?;
            let (root, _) = tree::remove(st, root, from).map_err(|e| st.tree_err(e))?;
            let (root, old_to) = tree::insert(st, root, &entry).map_err(|e| st.tree_err(e))?;
            st.cat = Catalog::Tree {
                root,
                count: count - u64::from(old_to.is_some()),
            };
            Ok(old_to)
        })();
        st.op_done(r.is_ok());
        match r {
            Err(e) => Err(st.failed(e)),
            Ok(old_to) => {
                if let Some(old) = old_to {
                    st.drop_entry(&old, &[]);
                }
                st.txn.changed = true;
                st.finish()
            }
        }
    }

    /// Checks the allocator and the catalog against each other: every
    /// allocator block in use is a catalog page, a meta or block list
    /// block, a block in the reference table or one held back for a
    /// commit; every named block is live with the capacity the catalog
    /// records; the reference table agrees with the catalog.
    pub fn check_invariants(&self) -> Result<()> {
        let mut st = self.state();
        let bad = |what: String| Error::corrupt(self.path(), what);
        st.complete_refs()?;
        let l = st.load_all()?;
        let stored = &l.entries;
        let live = catalog::live_blocks(stored, &l.blocks, st.map.len()).map_err(&bad)?;
        let mut named = 0usize;
        for e in stored {
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
            if r.count == 0 && !r.named && !st.txn.orig_named.contains_key(off) {
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
        let own = stored.iter().filter(|e| e.meta_off != 0).count()
            + stored.iter().filter(|e| e.blocks_at.is_some()).count()
            + l.blocks.len();
        let expected =
            st.refs.len() + own + st.txn.to_free.len() + st.deferred.len() + st.quarantine.len();
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

    /// The length the mapped file has now, and the length mapped: another
    /// process may have truncated the file since (reading past its end
    /// raises SIGBUS). `None` when the length cannot be read.
    pub(crate) fn file_and_mapped_len(&self) -> Option<(u64, u64)> {
        let st = self.state();
        let file = st.map.file().or(self.shared._lock.as_ref())?;
        Some((file.metadata().ok()?.len(), st.map.len()))
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

/// Test support: writes a heap as an older Rfmalloc did (format version 1,
/// a v1 catalog blob), with one raw block of `len` bytes per object.
#[doc(hidden)]
pub fn debug_write_v1_heap(path: &Path, objects: &[(&str, &[u8], u64)]) -> Result<()> {
    let opts = OpenOptions {
        initial_size: Some(1 << 20),
        ..OpenOptions::default()
    };
    let (h, _) = Heap::open(path, &opts)?;
    for &(name, meta, len) in objects {
        let off = h.malloc(len)?;
        let b = BlockDesc {
            offset: off,
            data_offset: off,
            elem: ElemType::Raw,
            length: len,
        };
        h.put(name, meta, &[b], false)?;
        h.release(off)?;
    }
    let mut st = h.state();
    let mut entries = st.load_all()?.entries;
    for e in &mut entries {
        e.summary = None;
        e.blocks_at = None;
    }
    let blob = catalog::encode(&entries);
    let p = st.path.clone();
    let (off, cap) = st.alloc_block(&p, blob.len() as u64)?;
    st.map
        .write(off, &blob)
        .map_err(|e| Error::io(&p, "write", e))?;
    let page = st
        .map
        .bytes(0, HEADER_SIZE)
        .map(<[u8]>::to_vec)
        .unwrap_or_default();
    let mut header = Header::decode(&page).map_err(|e| Error::corrupt(&p, e))?;
    header.version = VERSION_V1;
    let slot = Slot {
        generation: st.slot.generation + 1,
        catalog_off: off,
        catalog_cap: cap,
        catalog_len: blob.len() as u64,
        catalog_sum: fnv1a64(&blob),
        heap_len: st.map.len(),
        kind: crate::format::CATALOG_BLOB,
        unsynced: false,
    };
    // Both slots v1: the older one empty (as a fresh v1 heap's would be).
    let mut new_page = header.encode_page(&slot);
    new_page[slot_offset(1)..slot_offset(2)].fill(0);
    st.map
        .write(0, &new_page)
        .map_err(|e| Error::io(&p, "write", e))?;
    st.map.sync_all().map_err(|e| Error::io(&p, "sync", e))?;
    Ok(())
}

/// `Heap::release` under the lock.
fn release_in(st: &mut State, off: u64) -> Result<()> {
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
    // A block whose name the open transaction changed is settled by its
    // commit or rollback.
    if r.count == 0 && !r.named && !st.txn.orig_named.contains_key(&off) {
        st.refs.remove(&off);
        if st.unnamed_held.remove(&off) {
            // The last durable slot may name it (sync = "none").
            st.deferred.push(off);
            if st.deferred.len() > MAX_DEFERRED {
                // A failed sync only keeps them held.
                let _ = st.make_durable();
            }
        } else {
            st.free_block(off);
        }
    }
    Ok(())
}

fn not_live(off: u64) -> Error {
    Error::Invalid(format!("offset {off} is not a live block of this heap"))
}

fn to_entry(e: &StoredEntry, meta: Vec<u8>, damaged: Option<String>) -> Entry {
    Entry {
        name: e.name.clone(),
        meta,
        damaged,
        blocks: e
            .blocks
            .iter()
            .map(|b| BlockDesc {
                offset: b.offset,
                data_offset: b.data_offset,
                elem: b.elem,
                length: b.length,
            })
            .collect(),
        created_ms: e.created_ms,
        modified_ms: e.modified_ms,
    }
}

#[cfg(test)]
mod release_tests {
    use super::*;

    #[test]
    fn a_release_while_the_lock_is_held_waits_for_the_next_call() {
        let path = std::env::temp_dir().join(format!("rfm-release-{}.heap", std::process::id()));
        let opts = OpenOptions {
            initial_size: Some(4 << 20),
            ..OpenOptions::default()
        };
        let (h, _) = Heap::open(&path, &opts).unwrap();
        let off = h.malloc(64).unwrap();
        // R's garbage collector releasing a vector inside a heap call (as
        // from a signal handler): it waited for the lock forever.
        h.with_mapping(|_, _| h.release(off)).unwrap();
        assert_eq!(h.session_refs(), 1);
        // The next allocation applies it.
        let other = h.malloc(64).unwrap();
        assert_eq!(h.session_refs(), 1);
        h.release(other).unwrap();
        assert_eq!(h.session_refs(), 0);
        drop(h);
        let _ = std::fs::remove_file(&path);
    }
}

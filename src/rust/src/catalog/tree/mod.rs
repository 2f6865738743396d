//! Catalog v2: a copy-on-write B+tree of 4 KiB pages, keyed by name.
//!
//! Why this shape (see also inst/FORMAT.md, "Catalog v2"):
//! - **Commit cost O(log n).** A change rewrites the pages on one
//!   root-to-leaf path (copy-on-write: new pages from the heap's allocator),
//!   never the whole catalog; the slot then points at the new root. The old
//!   pages stay intact until the new slot is durable, so a crash leaves the
//!   old or the new tree in force, as the v1 blob did.
//! - **Verified as read, lazily.** Every child reference (and the slot's
//!   root reference) carries the FNV-1a 64 checksum of the child page: the
//!   tree is a Merkle tree, so a torn, stale or flipped page is caught when
//!   it is read, and a read-only open reads the root page only.
//! - **Listing without metas.** A leaf record holds everything
//!   `fmalloc_ls()` shows (a copy of the meta's summary section, data bytes,
//!   times), so listing decodes no meta.
//! - **LMDB-ready.** Pages are never written in place once reachable from a
//!   slot, and each page records the generation that wrote it: a reader
//!   pinning a generation sees a frozen tree as long as the writer does not
//!   reuse that generation's pages (see FORMAT.md for the plan).
//!
//! ```text
//! Page (PAGE_SIZE = 4096 bytes, the first 4096 bytes of an allocator block)
//! offset  size  field
//!      0     8  PAGE_MAGIC b"RFMCATP\0"
//!      8     1  kind: 1 leaf, 2 branch
//!      9     1  level: 0 for a leaf, child level + 1 for a branch (<= MAX_LEVEL)
//!     10     2  record count (u16, >= 1)
//!     12     4  used: bytes of records after the header (<= PAGE_SIZE - 32)
//!     16     8  generation of the commit that wrote the page
//!     24     8  reserved, 0
//!     32  used  records, keys strictly increasing; the rest of the page is 0
//!
//! Leaf record (LEAF_FIXED = 88 bytes, then name, summary, inline blocks)
//!     +0     2  name length n (1..=255)
//!     +2     2  summary length s (<= MAX_SUMMARY), or 0xFFFF: none kept
//!     +4     4  block count k
//!     +8     8  created, Unix ms (i64)
//!    +16     8  modified, Unix ms (i64)
//!    +24     8  meta block payload offset (0 = no meta)
//!    +32     8  meta block capacity
//!    +40     8  meta length
//!    +48     8  meta checksum (FNV-1a 64)
//!    +56     8  data bytes (sum of length x element size, saturating)
//!    +64     8  block list offset (0: the k blocks follow inline, k <= 8)
//!    +72     8  block list block capacity
//!    +80     8  block list checksum (FNV-1a 64 of its 40 x k bytes)
//!    +88     n  name (UTF-8, no NUL)
//!      …     s  summary section (meta v2 summary encoding)
//!      …  40*k  blocks (the v1 block layout), only when inline
//!
//! Branch record (BRANCH_FIXED = 32 bytes, then the key)
//!     +0     2  key length (0 for the first record, 1..=255 otherwise)
//!     +2     6  reserved, 0
//!     +8     8  child page payload offset
//!    +16     8  child block capacity
//!    +24     8  child page checksum (`page_sum`: FNV-1a 64 over its 512
//!               little-endian u64 words)
//!    +32     …  key: the child holds the names >= key (< the next key)
//! ```
//!
//! Everything read here is untrusted: counts, lengths and offsets are
//! checked before use; recursion depth is bounded by the level field, which
//! must fall by exactly one per step (so a cycle cannot be followed).

use super::{check_name, StoredBlock, StoredEntry, BLOCK_SIZE};
use crate::alloc::ALIGN;
use crate::format::{
    bounds, fnv1a64, fnv1a64_words, get_u32, get_u64, put_u32, put_u64, ElemType, HEADER_SIZE,
};

pub const PAGE_SIZE: usize = crate::format::CATALOG_PAGE_SIZE;
pub const PAGE_MAGIC: [u8; 8] = *b"RFMCATP\0";
const PAGE_HEADER: usize = 32;
const PAGE_ROOM: usize = PAGE_SIZE - PAGE_HEADER;
const KIND_LEAF: u8 = 1;
const KIND_BRANCH: u8 = 2;
/// Deepest tree: level of the root at most this (a fan-out of >= 3 per
/// page makes 3^20 pages, far beyond any heap).
pub const MAX_LEVEL: u8 = 20;
const LEAF_FIXED: usize = 88;
const BRANCH_FIXED: usize = 32;
/// Longest summary kept in a leaf record; longer ones are read from the meta.
pub const MAX_SUMMARY: usize = 512;
/// Most blocks kept inline in a leaf record; more go to a block list block.
pub const INLINE_BLOCKS: usize = 8;
const NO_SUMMARY: u16 = 0xFFFF;
/// A page whose records fill less than this is merged with a sibling.
const MIN_FILL: usize = PAGE_ROOM / 4;

/// Where a page (or block list) lives and what its bytes must hash to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRef {
    pub off: u64,
    pub cap: u64,
    pub sum: u64,
}

/// Why a tree could not be read or changed.
#[derive(Debug)]
pub enum TreeError {
    /// A page is out of the file or does not match its checksum (torn,
    /// stale, flipped): an older commit may still be whole.
    Damaged(String),
    /// A page matches its checksum but breaks the format: written so.
    Invalid(String),
    /// The store failed (allocation, disk space, I/O).
    Store(crate::error::Error),
}

impl TreeError {
    pub fn message(&self) -> String {
        match self {
            TreeError::Damaged(s) | TreeError::Invalid(s) => s.clone(),
            TreeError::Store(e) => e.to_string(),
        }
    }
}

type R<T> = Result<T, TreeError>;

/// Read access to the heap area.
pub trait Store {
    /// Length of the heap area (blocks must end before it).
    fn heap_len(&self) -> u64;
    /// `[off, off + len)`, if mapped.
    fn bytes(&self, off: u64, len: u64) -> Option<&[u8]>;
    /// Whether the block at `off` is known to hash to `sum` (verified or
    /// written by this process since it last changed): its checksum need
    /// not be computed again. A store without a cache says no.
    fn known(&self, _off: u64, _sum: u64) -> bool {
        false
    }
    /// Records that the block at `off` hashes to `sum`.
    fn remember(&self, _off: u64, _sum: u64) {}
}

/// Write access: pages come from and go back to the heap's allocator.
pub trait StoreMut: Store {
    /// A new block of at least `size` bytes: (offset, capacity).
    fn alloc(&mut self, size: u64) -> R<(u64, u64)>;
    fn write(&mut self, off: u64, data: &[u8]) -> R<()>;
    /// The tree being built no longer references this page: the store
    /// frees it when that is safe (after the commit is durable, or at once
    /// for a page allocated since the last commit).
    fn release(&mut self, off: u64);
    /// The generation the pages written now will carry.
    fn generation(&self) -> u64;
}

/// Checks a block reference read from the file (page or block list).
fn check_ref(what: &str, r: &PageRef, min_cap: u64, heap_len: u64) -> R<()> {
    if r.off < HEADER_SIZE || !r.off.is_multiple_of(ALIGN) || r.cap < min_cap {
        return Err(TreeError::Invalid(format!(
            "{what} at {} (capacity {}) is not a valid block",
            r.off, r.cap
        )));
    }
    bounds(r.off, r.cap, heap_len).map_err(|e| TreeError::Invalid(format!("{what}: {e}")))?;
    Ok(())
}

/// The checksum of a page: FNV-1a 64 over its 512 little-endian words
/// (`format::fnv1a64_words`).
pub fn page_sum(page: &[u8]) -> u64 {
    fnv1a64_words(page)
}

/// Reads `len` bytes at `r` and checks them against `r.sum` (pages: the
/// word-wise sum, block lists: FNV-1a 64).
fn read_checked<'s, S: Store + ?Sized>(s: &'s S, what: &str, r: &PageRef, len: u64) -> R<&'s [u8]> {
    check_ref(what, r, len, s.heap_len())?;
    let b = s
        .bytes(r.off, len)
        .ok_or_else(|| TreeError::Damaged(format!("{what} at {} is not mapped", r.off)))?;
    if !s.known(r.off, r.sum) {
        let sum = if len == PAGE_SIZE as u64 {
            page_sum(b)
        } else {
            fnv1a64(b)
        };
        if sum != r.sum {
            return Err(TreeError::Damaged(format!(
                "{what} at {} fails its checksum",
                r.off
            )));
        }
        s.remember(r.off, r.sum);
    }
    Ok(b)
}

/// A checked page: where each record starts and ends.
struct Page<'a> {
    b: &'a [u8],
    leaf: bool,
    level: u8,
    recs: Vec<(usize, usize)>,
}

impl<'a> Page<'a> {
    fn key(&self, i: usize) -> &'a [u8] {
        let (at, _) = self.recs[i];
        let n = usize::from(u16::from_le_bytes([self.b[at], self.b[at + 1]]));
        let fixed = if self.leaf { LEAF_FIXED } else { BRANCH_FIXED };
        &self.b[at + fixed..at + fixed + n]
    }
    fn rec(&self, i: usize) -> &'a [u8] {
        let (at, end) = self.recs[i];
        &self.b[at..end]
    }
    fn child(&self, i: usize) -> PageRef {
        let r = self.rec(i);
        PageRef {
            off: get_u64(r, 8),
            cap: get_u64(r, 16),
            sum: get_u64(r, 24),
        }
    }
    /// Index of the child whose range holds `key` (branch pages).
    fn child_for(&self, key: &[u8]) -> usize {
        // Record 0's key is empty: the first record always qualifies.
        let mut lo = 0;
        let mut hi = self.recs.len();
        while hi - lo > 1 {
            let mid = (lo + hi) / 2;
            if self.key(mid) <= key {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        lo
    }
    /// Position of `key` in a leaf: Ok(found) or Err(insertion point).
    fn find(&self, key: &[u8]) -> Result<usize, usize> {
        let (mut lo, mut hi) = (0, self.recs.len());
        while lo < hi {
            let mid = (lo + hi) / 2;
            match self.key(mid).cmp(key) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Ok(mid),
            }
        }
        Err(lo)
    }
}

/// Key bounds a page's records must respect: `lo <= key < hi`.
#[derive(Clone, Copy)]
struct Bounds<'k> {
    lo: Option<&'k [u8]>,
    hi: Option<&'k [u8]>,
}

const UNBOUNDED: Bounds<'static> = Bounds { lo: None, hi: None };

fn invalid<T>(off: u64, what: impl std::fmt::Display) -> R<T> {
    Err(TreeError::Invalid(format!("catalog page at {off}: {what}")))
}

/// Reads and checks the page `r`: checksum, header, every record, key order
/// and bounds. `level`: the level the parent expects (`None` for a root).
fn read_page<'s, S: Store + ?Sized>(
    s: &'s S,
    r: &PageRef,
    level: Option<u8>,
    kb: Bounds<'_>,
) -> R<Page<'s>> {
    // A page this process wrote or checked before is not checked again.
    let trusted = s.known(r.off, r.sum);
    let b = read_checked(s, "catalog page", r, PAGE_SIZE as u64)?;
    let off = r.off;
    if b[..8] != PAGE_MAGIC {
        return invalid(off, "bad magic");
    }
    let leaf = match b[8] {
        KIND_LEAF => true,
        KIND_BRANCH => false,
        k => return invalid(off, format!("unknown kind {k}")),
    };
    let lvl = b[9];
    if leaf != (lvl == 0) || lvl > MAX_LEVEL || level.is_some_and(|l| l != lvl) {
        return invalid(off, format!("level {lvl} out of place"));
    }
    let count = usize::from(u16::from_le_bytes([b[10], b[11]]));
    let used = get_u32(b, 12) as usize;
    if count == 0 || used > PAGE_ROOM || get_u64(b, 24) != 0 {
        return invalid(off, "bad header");
    }
    let end = PAGE_HEADER + used;
    if !trusted && !all_zero(&b[end..]) {
        return invalid(off, "bytes after the records are not zero");
    }
    let fixed = if leaf { LEAF_FIXED } else { BRANCH_FIXED };
    // Each record takes at least `fixed` bytes: bound the count first.
    if count > used / fixed {
        return invalid(off, format!("{count} records cannot fit"));
    }
    let mut recs = Vec::with_capacity(count);
    let mut at = PAGE_HEADER;
    for i in 0..count {
        if end - at < fixed {
            return invalid(off, format!("record {i} truncated"));
        }
        let klen = usize::from(u16::from_le_bytes([b[at], b[at + 1]]));
        let size = if leaf {
            let slen = u16::from_le_bytes([b[at + 2], b[at + 3]]);
            let slen = if slen == NO_SUMMARY {
                0
            } else if usize::from(slen) > MAX_SUMMARY {
                return invalid(off, format!("record {i}: summary too long"));
            } else {
                usize::from(slen)
            };
            let k = get_u32(b, at + 4) as usize;
            let inline = get_u64(b, at + 64) == 0;
            if inline && (k > INLINE_BLOCKS || get_u64(b, at + 72) != 0 || get_u64(b, at + 80) != 0)
            {
                return invalid(off, format!("record {i}: bad inline block list"));
            }
            if !inline && k == 0 {
                return invalid(off, format!("record {i}: empty block list block"));
            }
            LEAF_FIXED + klen + slen + if inline { BLOCK_SIZE * k } else { 0 }
        } else {
            if b[at + 2..at + 8].iter().any(|&c| c != 0) {
                return invalid(off, format!("record {i}: reserved bytes not zero"));
            }
            BRANCH_FIXED + klen
        };
        if size > end - at {
            return invalid(off, format!("record {i} truncated"));
        }
        recs.push((at, at + size));
        at += size;
    }
    if at != end {
        return invalid(off, "records do not fill the used length");
    }
    let page = Page {
        b,
        leaf,
        level: lvl,
        recs,
    };
    if trusted {
        // Checked before, but perhaps under other bounds (a page that two
        // branch records point to): its keys are in order, so its first
        // and last keys tell whether it lies inside these ones.
        let first = if leaf { 0 } else { 1 };
        if count > first {
            let (a, z) = (page.key(first), page.key(count - 1));
            if kb.lo.is_some_and(|lo| a < lo) || kb.hi.is_some_and(|hi| z >= hi) {
                return invalid(off, "its names lie outside its parent's key range");
            }
        }
    }
    for i in 0..if trusted { 0 } else { count } {
        let key = page.key(i);
        if !leaf && i == 0 {
            if !key.is_empty() {
                return invalid(off, "first branch key is not empty");
            }
            continue;
        }
        let name = std::str::from_utf8(key)
            .map_err(|_| TreeError::Invalid(format!("catalog page at {off}: name not UTF-8")))?;
        check_name(name).map_err(|e| TreeError::Invalid(format!("catalog page at {off}: {e}")))?;
        let first = if leaf { 0 } else { 1 };
        if i > first && page.key(i - 1) >= key {
            return invalid(off, format!("'{name}': names out of order or duplicated"));
        }
        if kb.lo.is_some_and(|lo| key < lo) || kb.hi.is_some_and(|hi| key >= hi) {
            return invalid(off, format!("'{name}' lies outside its parent's key range"));
        }
        if leaf {
            // Element types and reserved bytes of inline blocks.
            let r = page.rec(i);
            let slen = u16::from_le_bytes([r[2], r[3]]);
            let slen = if slen == NO_SUMMARY {
                0
            } else {
                usize::from(slen)
            };
            let k = get_u32(r, 4) as usize;
            if get_u64(r, 64) == 0 {
                let base = LEAF_FIXED + key.len() + slen;
                for j in 0..k {
                    check_block_bytes(&r[base + j * BLOCK_SIZE..base + (j + 1) * BLOCK_SIZE])
                        .map_err(|e| {
                            TreeError::Invalid(format!("catalog page at {off}: '{name}': {e}"))
                        })?;
                }
            }
        }
    }
    Ok(page)
}

/// Whether every byte of `b` is 0 (eight at a time).
fn all_zero(b: &[u8]) -> bool {
    let mut words = b.chunks_exact(8);
    words.all(|w| get_u64(w, 0) == 0) && words.remainder().iter().all(|&c| c == 0)
}

fn check_block_bytes(k: &[u8]) -> Result<StoredBlock, String> {
    let elem = ElemType::from_u8(k[32]).ok_or_else(|| format!("unknown element type {}", k[32]))?;
    if k[33..BLOCK_SIZE].iter().any(|&c| c != 0) {
        return Err("block reserved bytes not zero".into());
    }
    Ok(StoredBlock {
        offset: get_u64(k, 0),
        capacity: get_u64(k, 8),
        data_offset: get_u64(k, 16),
        length: get_u64(k, 24),
        elem,
    })
}

/// What a listing needs of an entry, read from its leaf record alone.
#[derive(Debug, Clone, PartialEq)]
pub struct Listed {
    pub name: String,
    pub created_ms: i64,
    pub modified_ms: i64,
    pub data_bytes: u64,
    /// The meta's summary section, when the entry keeps a copy.
    pub summary: Option<Vec<u8>>,
    pub meta_off: u64,
    pub meta_len: u64,
    pub meta_sum: u64,
}

/// Decodes a checked leaf record (see [`read_page`]) for a listing.
fn listed(r: &[u8]) -> Listed {
    let n = usize::from(u16::from_le_bytes([r[0], r[1]]));
    let slen = u16::from_le_bytes([r[2], r[3]]);
    // Checked UTF-8 by read_page (lossy only as a guard).
    let raw = &r[LEAF_FIXED..LEAF_FIXED + n];
    let name = match std::str::from_utf8(raw) {
        Ok(s) => s.to_owned(),
        Err(_) => String::from_utf8_lossy(raw).into_owned(),
    };
    let summary = (slen != NO_SUMMARY)
        .then(|| r[LEAF_FIXED + n..LEAF_FIXED + n + usize::from(slen)].to_vec());
    Listed {
        name,
        created_ms: get_u64(r, 8) as i64,
        modified_ms: get_u64(r, 16) as i64,
        data_bytes: get_u64(r, 56),
        summary,
        meta_off: get_u64(r, 24),
        meta_len: get_u64(r, 40),
        meta_sum: get_u64(r, 48),
    }
}

/// The name of a checked leaf record (lossy: for messages).
fn record_name(r: &[u8]) -> String {
    let n = usize::from(u16::from_le_bytes([r[0], r[1]]));
    String::from_utf8_lossy(&r[LEAF_FIXED..LEAF_FIXED + n]).into_owned()
}

/// Appends the data blocks of a checked leaf record to `blocks`, reading
/// (and checking) its block list block when they are not inline; returns
/// that block's reference, if any.
fn record_blocks<S: Store + ?Sized>(
    s: &S,
    r: &[u8],
    blocks: &mut Vec<StoredBlock>,
) -> R<Option<PageRef>> {
    let k = get_u32(r, 4) as usize;
    let ext = PageRef {
        off: get_u64(r, 64),
        cap: get_u64(r, 72),
        sum: get_u64(r, 80),
    };
    if ext.off == 0 {
        let n = usize::from(u16::from_le_bytes([r[0], r[1]]));
        let slen = u16::from_le_bytes([r[2], r[3]]);
        let slen = if slen == NO_SUMMARY {
            0
        } else {
            usize::from(slen)
        };
        let base = LEAF_FIXED + n + slen;
        for j in 0..k {
            // Checked by read_page.
            let b = check_block_bytes(&r[base + j * BLOCK_SIZE..base + (j + 1) * BLOCK_SIZE])
                .map_err(TreeError::Invalid)?;
            blocks.push(b);
        }
        return Ok(None);
    }
    let what = || format!("block list of '{}'", record_name(r));
    let len = (k as u64)
        .checked_mul(BLOCK_SIZE as u64)
        .ok_or_else(|| TreeError::Invalid(format!("{}: too long", what())))?;
    let b = read_checked(s, &what(), &ext, len)?;
    blocks.reserve(k);
    for j in 0..k {
        let blk = check_block_bytes(&b[j * BLOCK_SIZE..(j + 1) * BLOCK_SIZE])
            .map_err(|e| TreeError::Invalid(format!("{}: {e}", what())))?;
        blocks.push(blk);
    }
    Ok(Some(ext))
}

/// Decodes a checked leaf record into a full entry, reading (and checking)
/// its block list block when the blocks are not inline.
fn entry<S: Store + ?Sized>(s: &S, r: &[u8]) -> R<StoredEntry> {
    let l = listed(r);
    let mut blocks = Vec::new();
    let blocks_at = record_blocks(s, r, &mut blocks)?.map(|e| (e.off, e.cap, e.sum));
    Ok(StoredEntry {
        name: l.name,
        created_ms: l.created_ms,
        modified_ms: l.modified_ms,
        meta_off: l.meta_off,
        meta_cap: get_u64(r, 32),
        meta_len: l.meta_len,
        meta_sum: l.meta_sum,
        blocks,
        summary: l.summary,
        data_bytes: l.data_bytes,
        blocks_at,
    })
}

/// The bytes of a block list block for `blocks`.
pub fn encode_blocks(blocks: &[StoredBlock]) -> Vec<u8> {
    let mut b = vec![0u8; BLOCK_SIZE * blocks.len()];
    for (j, k) in blocks.iter().enumerate() {
        put_block(&mut b[j * BLOCK_SIZE..], k);
    }
    b
}

fn put_block(b: &mut [u8], k: &StoredBlock) {
    put_u64(b, 0, k.offset);
    put_u64(b, 8, k.capacity);
    put_u64(b, 16, k.data_offset);
    put_u64(b, 24, k.length);
    b[32] = k.elem as u8;
}

/// The leaf record of `e`. Blocks go inline unless `e.blocks_at` says
/// where the block list block is; a summary longer than MAX_SUMMARY is not
/// kept.
fn encode_leaf(e: &StoredEntry) -> R<Vec<u8>> {
    check_name(&e.name).map_err(|m| TreeError::Store(crate::error::Error::Invalid(m)))?;
    let summary = e.summary.as_deref().filter(|s| s.len() <= MAX_SUMMARY);
    let slen = summary.map_or(0, <[u8]>::len);
    let inline = e.blocks_at.is_none();
    if inline && e.blocks.len() > INLINE_BLOCKS || e.blocks.len() > u32::MAX as usize {
        return Err(TreeError::Store(crate::error::Error::Invalid(
            "too many blocks for an inline block list".into(),
        )));
    }
    let size = LEAF_FIXED
        + e.name.len()
        + slen
        + if inline {
            BLOCK_SIZE * e.blocks.len()
        } else {
            0
        };
    let mut b = vec![0u8; size];
    b[0..2].copy_from_slice(&(e.name.len() as u16).to_le_bytes());
    let stag = summary.map_or(NO_SUMMARY, |s| s.len() as u16);
    b[2..4].copy_from_slice(&stag.to_le_bytes());
    put_u32(&mut b, 4, e.blocks.len() as u32);
    put_u64(&mut b, 8, e.created_ms as u64);
    put_u64(&mut b, 16, e.modified_ms as u64);
    put_u64(&mut b, 24, e.meta_off);
    put_u64(&mut b, 32, e.meta_cap);
    put_u64(&mut b, 40, e.meta_len);
    put_u64(&mut b, 48, e.meta_sum);
    put_u64(&mut b, 56, e.data_bytes);
    if let Some((off, cap, sum)) = e.blocks_at {
        put_u64(&mut b, 64, off);
        put_u64(&mut b, 72, cap);
        put_u64(&mut b, 80, sum);
    }
    let mut at = LEAF_FIXED;
    b[at..at + e.name.len()].copy_from_slice(e.name.as_bytes());
    at += e.name.len();
    if let Some(s) = summary {
        b[at..at + s.len()].copy_from_slice(s);
        at += s.len();
    }
    if inline {
        for k in &e.blocks {
            put_block(&mut b[at..], k);
            at += BLOCK_SIZE;
        }
    }
    Ok(b)
}

fn encode_branch(key: &[u8], child: &PageRef) -> Vec<u8> {
    let mut b = vec![0u8; BRANCH_FIXED + key.len()];
    b[0..2].copy_from_slice(&(key.len() as u16).to_le_bytes());
    put_u64(&mut b, 8, child.off);
    put_u64(&mut b, 16, child.cap);
    put_u64(&mut b, 24, child.sum);
    b[BRANCH_FIXED..].copy_from_slice(key);
    b
}

/// A record held in memory while a node is rebuilt.
#[derive(Clone)]
struct Rec {
    key: Vec<u8>,
    raw: Vec<u8>,
}

/// A page written for a parent: its lower key and reference.
struct Child {
    key: Vec<u8>,
    r: PageRef,
    used: usize,
}

fn recs_of(p: &Page<'_>) -> Vec<Rec> {
    (0..p.recs.len())
        .map(|i| Rec {
            key: p.key(i).to_vec(),
            raw: p.rec(i).to_vec(),
        })
        .collect()
}

fn branch_rec(key: Vec<u8>, r: &PageRef) -> Rec {
    Rec {
        raw: encode_branch(&key, r),
        key,
    }
}

/// Splits records into groups that each fit a page, of similar sizes.
fn pack(recs: Vec<Rec>) -> Vec<Vec<Rec>> {
    let total: usize = recs.iter().map(|r| r.raw.len()).sum();
    if total <= PAGE_ROOM {
        return vec![recs];
    }
    let mut groups = Vec::new();
    let mut left = total;
    let mut pages_left = total.div_ceil(PAGE_ROOM);
    let mut cur: Vec<Rec> = Vec::new();
    let mut size = 0;
    for r in recs {
        let target = left.div_ceil(pages_left.max(1));
        let n = r.raw.len();
        if !cur.is_empty() && (size + n > PAGE_ROOM || size >= target) {
            left -= size;
            pages_left = pages_left.saturating_sub(1).max(1);
            groups.push(std::mem::take(&mut cur));
            size = 0;
        }
        size += n;
        cur.push(r);
    }
    if !cur.is_empty() {
        groups.push(cur);
    }
    groups
}

/// Writes one page holding `recs` (a branch page's first key is stored
/// empty and returned as the child's key).
fn write_page<S: StoreMut + ?Sized>(s: &mut S, mut recs: Vec<Rec>, level: u8) -> R<Child> {
    let key = recs[0].key.clone();
    if level > 0 && !recs[0].key.is_empty() {
        let r = &recs[0];
        let child = PageRef {
            off: get_u64(&r.raw, 8),
            cap: get_u64(&r.raw, 16),
            sum: get_u64(&r.raw, 24),
        };
        recs[0] = branch_rec(Vec::new(), &child);
    }
    let (page, used) = encode_page(&recs, level, s.generation());
    write_image(s, &page, used, key)
}

/// Writes a page image to a new block: the child for its parent.
fn write_image<S: StoreMut + ?Sized>(
    s: &mut S,
    page: &[u8],
    used: usize,
    key: Vec<u8>,
) -> R<Child> {
    let (off, cap) = s.alloc(PAGE_SIZE as u64)?;
    if let Err(e) = s.write(off, page) {
        s.release(off);
        return Err(e);
    }
    let sum = page_sum(page);
    s.remember(off, sum);
    Ok(Child {
        key,
        r: PageRef { off, cap, sum },
        used,
    })
}

fn encode_page(recs: &[Rec], level: u8, generation: u64) -> (Vec<u8>, usize) {
    let mut page = vec![0u8; PAGE_SIZE];
    page[..8].copy_from_slice(&PAGE_MAGIC);
    page[8] = if level == 0 { KIND_LEAF } else { KIND_BRANCH };
    page[9] = level;
    page[10..12].copy_from_slice(&(recs.len() as u16).to_le_bytes());
    let mut at = PAGE_HEADER;
    for r in recs {
        page[at..at + r.raw.len()].copy_from_slice(&r.raw);
        at += r.raw.len();
    }
    let used = at - PAGE_HEADER;
    put_u32(&mut page, 12, used as u32);
    put_u64(&mut page, 16, generation);
    (page, used)
}

/// A store over one page image (test support).
struct OnePage<'a>(&'a [u8]);

impl Store for OnePage<'_> {
    fn heap_len(&self) -> u64 {
        u64::MAX / 2
    }
    fn bytes(&self, off: u64, len: u64) -> Option<&[u8]> {
        (off == HEADER_SIZE)
            .then(|| self.0.get(..len as usize))
            .flatten()
    }
}

/// Test support: the entries of a leaf page image (inline block lists).
#[doc(hidden)]
pub fn debug_leaf_entries(page: &[u8]) -> Result<Vec<StoredEntry>, String> {
    let s = OnePage(page);
    let r = PageRef {
        off: HEADER_SIZE,
        cap: PAGE_SIZE as u64,
        sum: page_sum(page.get(..PAGE_SIZE).ok_or("short page")?),
    };
    let p = read_page(&s, &r, Some(0), UNBOUNDED).map_err(|e| e.message())?;
    (0..p.recs.len())
        .map(|i| entry(&s, p.rec(i)).map_err(|e| e.message()))
        .collect()
}

/// Test support: rewrites a leaf page image with `entries` (sorted);
/// returns its new checksum (for the slot or parent).
#[doc(hidden)]
pub fn debug_write_leaf(page: &mut [u8], entries: &[StoredEntry]) -> Result<u64, String> {
    let recs = entries
        .iter()
        .map(|e| {
            Ok(Rec {
                key: e.name.as_bytes().to_vec(),
                raw: encode_leaf(e).map_err(|e| e.message())?,
            })
        })
        .collect::<Result<Vec<Rec>, String>>()?;
    let (b, used) = encode_page(&recs, 0, get_u64(page, 16));
    if used > PAGE_ROOM {
        return Err("records do not fit a page".into());
    }
    page[..PAGE_SIZE].copy_from_slice(&b);
    Ok(page_sum(&b))
}

fn write_node<S: StoreMut + ?Sized>(s: &mut S, recs: Vec<Rec>, level: u8) -> R<Vec<Child>> {
    if recs.is_empty() {
        return Ok(Vec::new());
    }
    pack(recs)
        .into_iter()
        .map(|g| write_page(s, g, level))
        .collect()
}

/// The entry named `name`, if any: O(log n) pages read and checked.
pub fn get<S: Store + ?Sized>(s: &S, root: Option<PageRef>, name: &str) -> R<Option<StoredEntry>> {
    let Some(mut r) = root else {
        return Ok(None);
    };
    let key = name.as_bytes();
    let mut level = None;
    let mut lo: Vec<u8> = Vec::new();
    let mut hi: Option<Vec<u8>> = None;
    loop {
        let kb = Bounds {
            lo: (!lo.is_empty()).then_some(lo.as_slice()),
            hi: hi.as_deref(),
        };
        let p = read_page(s, &r, level, kb)?;
        if p.leaf {
            return match p.find(key) {
                Ok(i) => entry(s, p.rec(i)).map(Some),
                Err(_) => Ok(None),
            };
        }
        let i = p.child_for(key);
        if i > 0 {
            lo = p.key(i).to_vec();
        }
        if i + 1 < p.recs.len() {
            hi = Some(p.key(i + 1).to_vec());
        }
        level = Some(p.level - 1);
        r = p.child(i);
    }
}

/// Checks the root page alone (what a read-only open does).
pub fn check_root<S: Store + ?Sized>(s: &S, root: &PageRef) -> R<()> {
    read_page(s, root, None, UNBOUNDED).map(drop)
}

/// What [`walk`] shows, in key order.
pub enum Visit<'a> {
    /// A page of the tree (every page, parents before children).
    Page(PageRef),
    /// A leaf record (checked); decode with [`Visit`] helpers.
    Leaf(Leaf<'a>),
}

/// A checked leaf record met by [`walk`].
pub struct Leaf<'a>(&'a [u8]);

impl Leaf<'_> {
    pub fn listed(&self) -> Listed {
        listed(self.0)
    }
    pub fn entry<S: Store + ?Sized>(&self, s: &S) -> R<StoredEntry> {
        entry(s, self.0)
    }
    /// Where the entry's blocks are, its data blocks put into `blocks`
    /// (cleared first): what a writable open needs of an entry, without
    /// decoding the rest of it.
    pub(crate) fn blocks<S: Store + ?Sized>(
        &self,
        s: &S,
        blocks: &mut Vec<StoredBlock>,
    ) -> R<crate::catalog::EntryBlocks> {
        blocks.clear();
        let list = record_blocks(s, self.0, blocks)?;
        Ok(crate::catalog::EntryBlocks {
            meta_off: get_u64(self.0, 24),
            meta_cap: get_u64(self.0, 32),
            meta_len: get_u64(self.0, 40),
            list: list.map(|e| (e.off, e.cap)),
        })
    }
    /// The entry's name (lossy UTF-8: for messages).
    pub fn name(&self) -> String {
        record_name(self.0)
    }
}

/// Visits every page and every record, checking the whole tree.
pub fn walk<S: Store + ?Sized>(
    s: &S,
    root: Option<PageRef>,
    f: &mut dyn FnMut(Visit<'_>) -> R<()>,
) -> R<()> {
    walk_pages(s, root, None, f)
}

/// [`walk`], except that a page below the root that is *damaged* (out of
/// the file or failing the checksum its parent holds) is skipped with
/// everything under it: what a listing of a lazily opened heap reads. The
/// skipped pages are returned, in key order; an invalid page (checksum
/// right, structure wrong) is still an error, and so is a damaged root.
pub fn walk_readable<S: Store + ?Sized>(
    s: &S,
    root: Option<PageRef>,
    f: &mut dyn FnMut(Visit<'_>) -> R<()>,
) -> R<Vec<PageRef>> {
    let mut skipped = Vec::new();
    walk_pages(s, root, Some(&mut skipped), f)?;
    Ok(skipped)
}

fn walk_pages<S: Store + ?Sized>(
    s: &S,
    root: Option<PageRef>,
    mut skipped: Option<&mut Vec<PageRef>>,
    f: &mut dyn FnMut(Visit<'_>) -> R<()>,
) -> R<()> {
    fn go<S: Store + ?Sized>(
        s: &S,
        r: &PageRef,
        level: Option<u8>,
        kb: Bounds<'_>,
        skipped: &mut Option<&mut Vec<PageRef>>,
        f: &mut dyn FnMut(Visit<'_>) -> R<()>,
    ) -> R<()> {
        let p = match read_page(s, r, level, kb) {
            Ok(p) => p,
            Err(TreeError::Damaged(_)) if level.is_some() && skipped.is_some() => {
                if let Some(v) = skipped.as_deref_mut() {
                    v.push(*r);
                }
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        f(Visit::Page(*r))?;
        for i in 0..p.recs.len() {
            if p.leaf {
                f(Visit::Leaf(Leaf(p.rec(i))))?;
            } else {
                let lo = if i == 0 { kb.lo } else { Some(p.key(i)) };
                let hi = if i + 1 < p.recs.len() {
                    Some(p.key(i + 1))
                } else {
                    kb.hi
                };
                go(
                    s,
                    &p.child(i),
                    Some(p.level - 1),
                    Bounds { lo, hi },
                    skipped,
                    f,
                )?;
            }
        }
        Ok(())
    }
    match root {
        None => Ok(()),
        Some(r) => go(s, &r, None, UNBOUNDED, &mut skipped, f),
    }
}

enum Op<'a> {
    Put(Rec),
    Remove(&'a [u8]),
}

/// What [`modify`] returns: the pages replacing a page, the record
/// replaced or removed.
type Modified = Option<(Vec<Child>, Option<Vec<u8>>)>;

/// [`modify`] of the leaf page `p` (read from `r`) when the result fits
/// one page: the new page is the old image with the record spliced in or
/// out, byte for byte what encoding the records again would give. `None`
/// when it does not fit (the caller splits).
fn splice_leaf<S: StoreMut + ?Sized>(
    s: &mut S,
    r: &PageRef,
    p: &Page<'_>,
    op: &Op<'_>,
) -> R<Option<Modified>> {
    let key: &[u8] = match op {
        Op::Put(rec) => &rec.key,
        Op::Remove(k) => k,
    };
    let end = PAGE_HEADER + get_u32(p.b, 12) as usize;
    let (lo, hi, ins): (usize, usize, &[u8]) = match (op, p.find(key)) {
        (Op::Put(rec), Ok(i)) => (p.recs[i].0, p.recs[i].1, &rec.raw),
        (Op::Put(rec), Err(i)) => {
            let at = p.recs.get(i).map_or(end, |&(a, _)| a);
            (at, at, &rec.raw)
        }
        (Op::Remove(_), Ok(i)) => (p.recs[i].0, p.recs[i].1, &[]),
        (Op::Remove(_), Err(_)) => return Ok(Some(None)),
    };
    let old = (lo < hi).then(|| p.b[lo..hi].to_vec());
    let count = p.recs.len() - usize::from(old.is_some()) + usize::from(!ins.is_empty());
    let used = end - PAGE_HEADER - (hi - lo) + ins.len();
    if used > PAGE_ROOM {
        return Ok(None);
    }
    s.release(r.off);
    if count == 0 {
        return Ok(Some(Some((Vec::new(), old))));
    }
    let mut page = vec![0u8; PAGE_SIZE];
    page[..PAGE_HEADER].copy_from_slice(&p.b[..PAGE_HEADER]);
    page[10..12].copy_from_slice(&(count as u16).to_le_bytes());
    put_u32(&mut page, 12, used as u32);
    put_u64(&mut page, 16, s.generation());
    page[PAGE_HEADER..lo].copy_from_slice(&p.b[PAGE_HEADER..lo]);
    page[lo..lo + ins.len()].copy_from_slice(ins);
    page[lo + ins.len()..PAGE_HEADER + used].copy_from_slice(&p.b[hi..end]);
    let first = Page {
        b: &page,
        leaf: true,
        level: 0,
        recs: vec![(PAGE_HEADER, PAGE_HEADER + used)],
    }
    .key(0)
    .to_vec();
    let out = write_image(s, &page, used, first)?;
    Ok(Some(Some((vec![out], old))))
}

/// Applies `op` under page `r`; returns the pages that replace it (none
/// when it became empty) and the record that was replaced or removed.
/// `None`: nothing changed (a removal of a missing name).
#[allow(clippy::type_complexity)]
fn modify<S: StoreMut + ?Sized>(
    s: &mut S,
    r: &PageRef,
    level: Option<u8>,
    kb: Bounds<'_>,
    op: &Op<'_>,
) -> R<Option<(Vec<Child>, Option<Vec<u8>>)>> {
    let key: &[u8] = match op {
        Op::Put(rec) => &rec.key,
        Op::Remove(k) => k,
    };
    // Copy the page out (one image, no record is decoded): the store is
    // written below.
    let (img, spans, leaf, lvl) = {
        let p = read_page(s, r, level, kb)?;
        (p.b.to_vec(), p.recs, p.leaf, p.level)
    };
    let p = Page {
        b: &img,
        leaf,
        level: lvl,
        recs: spans,
    };
    // The common change -- a record put into or removed from a leaf that
    // still fits one page -- is spliced into the page image; records are
    // decoded only for splits and merges.
    if leaf {
        if let Some(done) = splice_leaf(s, r, &p, op)? {
            return Ok(done);
        }
    }
    let (mut recs, i, child, ckb) = if leaf {
        (recs_of(&p), 0, None, None)
    } else {
        let i = p.child_for(key);
        let lo = if i == 0 {
            kb.lo.map(<[u8]>::to_vec)
        } else {
            Some(p.key(i).to_vec())
        };
        let hi = if i + 1 < p.recs.len() {
            Some(p.key(i + 1).to_vec())
        } else {
            kb.hi.map(<[u8]>::to_vec)
        };
        (Vec::new(), i, Some(p.child(i)), Some((lo, hi)))
    };
    let old;
    if leaf {
        let at = recs.binary_search_by(|x| x.key.as_slice().cmp(key));
        match (op, at) {
            (Op::Put(rec), Ok(i)) => old = Some(std::mem::replace(&mut recs[i], rec.clone()).raw),
            (Op::Put(rec), Err(i)) => {
                recs.insert(i, rec.clone());
                old = None;
            }
            (Op::Remove(_), Ok(i)) => old = Some(recs.remove(i).raw),
            (Op::Remove(_), Err(_)) => return Ok(None),
        }
    } else {
        let (clo, chi) = ckb.unwrap_or((None, None));
        let child = child.ok_or_else(|| TreeError::Invalid("branch without child".into()))?;
        let ckb = Bounds {
            lo: clo.as_deref(),
            hi: chi.as_deref(),
        };
        let Some((mut kids, o)) = modify(s, &child, Some(lvl - 1), ckb, op)? else {
            return Ok(None);
        };
        old = o;
        // One child replaced by one page that needs no merge: only its
        // reference changes (same key, same record size).
        if kids.len() == 1 && (kids[0].used >= MIN_FILL || p.recs.len() == 1) {
            let mut page = img.clone();
            let at = p.recs[i].0;
            put_u64(&mut page, at + 8, kids[0].r.off);
            put_u64(&mut page, at + 16, kids[0].r.cap);
            put_u64(&mut page, at + 24, kids[0].r.sum);
            put_u64(&mut page, 16, s.generation());
            let used = get_u32(&page, 12) as usize;
            s.release(r.off);
            let out = write_image(s, &page, used, Vec::new())?;
            return Ok(Some((vec![out], old)));
        }
        recs = recs_of(&p);
        let parent_key = recs[i].key.clone();
        // A lone small child is merged with a sibling.
        if kids.len() == 1 && kids[0].used < MIN_FILL && recs.len() > 1 {
            let j = if i + 1 < recs.len() { i + 1 } else { i - 1 };
            let (l, rr) = if j > i { (i, j) } else { (j, i) };
            let sib = PageRef {
                off: get_u64(&recs[j].raw, 8),
                cap: get_u64(&recs[j].raw, 16),
                sum: get_u64(&recs[j].raw, 24),
            };
            let sib_lo = if j == 0 {
                kb.lo.map(<[u8]>::to_vec)
            } else {
                Some(recs[j].key.clone())
            };
            let sib_hi = if j + 1 < recs.len() {
                Some(recs[j + 1].key.clone())
            } else {
                kb.hi.map(<[u8]>::to_vec)
            };
            let sib_recs = {
                let p = read_page(
                    s,
                    &sib,
                    Some(lvl - 1),
                    Bounds {
                        lo: sib_lo.as_deref(),
                        hi: sib_hi.as_deref(),
                    },
                )?;
                recs_of(&p)
            };
            let new_kid = kids.pop().map(|c| c.r);
            let mine = match new_kid {
                Some(k) => {
                    let p = read_page(s, &k, Some(lvl - 1), UNBOUNDED_LOOSE)?;
                    recs_of(&p)
                }
                None => Vec::new(),
            };
            let (mut left, mut right, right_key) = if j > i {
                (mine, sib_recs, recs[j].key.clone())
            } else {
                (sib_recs, mine, parent_key.clone())
            };
            if lvl - 1 > 0 && !right.is_empty() {
                // The right node's first record takes its parent key.
                let c = PageRef {
                    off: get_u64(&right[0].raw, 8),
                    cap: get_u64(&right[0].raw, 16),
                    sum: get_u64(&right[0].raw, 24),
                };
                right[0] = branch_rec(right_key, &c);
            }
            left.append(&mut right);
            let left_key = recs[l].key.clone();
            if let Some(k) = new_kid {
                s.release(k.off);
            }
            s.release(sib.off);
            let merged = write_node(s, left, lvl - 1)?;
            let mut repl: Vec<Rec> = Vec::with_capacity(merged.len());
            for (n, c) in merged.into_iter().enumerate() {
                let k = if n == 0 { left_key.clone() } else { c.key };
                repl.push(branch_rec(k, &c.r));
            }
            recs.splice(l..=rr, repl);
        } else {
            let repl: Vec<Rec> = kids
                .into_iter()
                .enumerate()
                .map(|(n, c)| {
                    let k = if n == 0 { parent_key.clone() } else { c.key };
                    branch_rec(k, &c.r)
                })
                .collect();
            recs.splice(i..=i, repl);
        }
        if let Some(first) = recs.first_mut() {
            if !first.key.is_empty() {
                let c = PageRef {
                    off: get_u64(&first.raw, 8),
                    cap: get_u64(&first.raw, 16),
                    sum: get_u64(&first.raw, 24),
                };
                *first = branch_rec(Vec::new(), &c);
            }
        }
    }
    s.release(r.off);
    let out = write_node(s, recs, lvl)?;
    Ok(Some((out, old)))
}

/// Bounds for re-reading a page just written (its keys were checked when
/// its records were read).
const UNBOUNDED_LOOSE: Bounds<'static> = UNBOUNDED;

/// Turns the pages replacing the root into one root: new branch levels
/// over several pages; a branch root with one child is collapsed.
fn make_root<S: StoreMut + ?Sized>(
    s: &mut S,
    mut kids: Vec<Child>,
    mut level: u8,
) -> R<Option<PageRef>> {
    loop {
        match kids.len() {
            0 => return Ok(None),
            1 => break,
            _ => {
                if level >= MAX_LEVEL {
                    return Err(TreeError::Invalid("catalog tree too deep".into()));
                }
                level += 1;
                let recs: Vec<Rec> = kids
                    .into_iter()
                    .enumerate()
                    .map(|(n, c)| branch_rec(if n == 0 { Vec::new() } else { c.key }, &c.r))
                    .collect();
                kids = write_node(s, recs, level)?;
            }
        }
    }
    let mut root = kids.pop().map(|c| c.r);
    // Collapse branch roots with a single child.
    while let Some(r) = root {
        let child = {
            let p = read_page(s, &r, None, UNBOUNDED)?;
            if p.leaf || p.recs.len() > 1 {
                break;
            }
            p.child(0)
        };
        s.release(r.off);
        root = Some(child);
    }
    Ok(root)
}

fn root_level<S: Store + ?Sized>(s: &S, r: &PageRef) -> R<u8> {
    Ok(read_page(s, r, None, UNBOUNDED)?.level)
}

/// Inserts or replaces `e` (its block list block, if any, already
/// written). Returns the new root and the entry replaced, if any.
pub fn insert<S: StoreMut + ?Sized>(
    s: &mut S,
    root: Option<PageRef>,
    e: &StoredEntry,
) -> R<(Option<PageRef>, Option<StoredEntry>)> {
    let rec = Rec {
        key: e.name.as_bytes().to_vec(),
        raw: encode_leaf(e)?,
    };
    let Some(r) = root else {
        let kids = write_node(s, vec![rec], 0)?;
        return Ok((make_root(s, kids, 0)?, None));
    };
    let level = root_level(s, &r)?;
    let Some((kids, old)) = modify(s, &r, None, UNBOUNDED, &Op::Put(rec))? else {
        return Err(TreeError::Invalid("insert changed nothing".into()));
    };
    let old = old.map(|raw| entry(s, &raw)).transpose()?;
    Ok((make_root(s, kids, level)?, old))
}

/// Removes `name`. Returns the new root and the removed entry (`None`, and
/// the root unchanged, when there was none).
pub fn remove<S: StoreMut + ?Sized>(
    s: &mut S,
    root: Option<PageRef>,
    name: &str,
) -> R<(Option<PageRef>, Option<StoredEntry>)> {
    let Some(r) = root else {
        return Ok((None, None));
    };
    let level = root_level(s, &r)?;
    match modify(s, &r, None, UNBOUNDED, &Op::Remove(name.as_bytes()))? {
        None => Ok((root, None)),
        Some((kids, old)) => {
            let old = old.map(|raw| entry(s, &raw)).transpose()?;
            Ok((make_root(s, kids, level)?, old))
        }
    }
}

/// Builds a tree from entries sorted by name, bottom up (conversion of a
/// v1 catalog). Block list blocks must already be written.
pub fn build<S: StoreMut + ?Sized>(s: &mut S, entries: &[StoredEntry]) -> R<Option<PageRef>> {
    let recs = entries
        .iter()
        .map(|e| {
            Ok(Rec {
                key: e.name.as_bytes().to_vec(),
                raw: encode_leaf(e)?,
            })
        })
        .collect::<R<Vec<Rec>>>()?;
    let kids = write_node(s, recs, 0)?;
    make_root(s, kids, 0)
}

#[cfg(test)]
pub(crate) mod tests;

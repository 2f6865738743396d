//! Catalog of named objects: encoding, decoding, validation.
//!
//! Two formats, chosen by the slot in force (see `format`):
//! - **v2** (`tree`): a copy-on-write B+tree of 4 KiB pages; what every
//!   commit of this version writes. See `tree` for the layout and why.
//! - **v1** (this module): one blob in an allocator block, whose offset,
//!   length and checksum the slot gives. Still read; a writable heap
//!   converts it to v2 at its first commit (never at open).
//!
//! The v1 blob: Each entry's opaque
//! meta bytes (the R layer's type and attributes) live in a block of their
//! own. Everything decoded here is untrusted: every count, length, offset and
//! name is checked before use, and nothing is allocated on the strength of an
//! unchecked count.
//!
//! ```text
//! Catalog blob v1 (all little-endian)
//! offset  size  field
//!      0     8  CATALOG_MAGIC b"RFMCAT1\0"
//!      8     4  catalog version (u32) = 1
//!     12     4  reserved, 0
//!     16     8  entry count (u64)
//!     24     …  entries, in strictly increasing byte order of name
//!    end-8   8  FNV-1a 64 of every byte before it
//!
//! Entry (ENTRY_FIXED = 56 bytes, then the name, then the blocks)
//!     +0     2  name length (u16, 1..=255)
//!     +2     2  reserved, 0
//!     +4     4  block count (u32)
//!     +8     8  created, Unix ms (i64)
//!    +16     8  modified, Unix ms (i64)
//!    +24     8  meta block payload offset (0 = no meta)
//!    +32     8  meta block capacity
//!    +40     8  meta length
//!    +48     8  meta checksum (FNV-1a 64 of the meta bytes)
//!    +56     n  name, UTF-8 without NUL, zero-padded to a multiple of 8
//!     …   40*k  blocks
//!
//! Block (BLOCK_SIZE = 40 bytes)
//!     +0     8  payload offset (as returned by the allocator)
//!     +8     8  capacity (allocator usable size)
//!    +16     8  data offset (absolute, >= payload offset)
//!    +24     8  length in elements
//!    +32     1  element type (`ElemType`)
//!    +33     7  reserved, 0
//! ```

pub mod tree;

use std::collections::BTreeMap;

use crate::alloc::ALIGN;
use crate::format::ElemType;
use crate::format::{bounds, fnv1a64, get_u32, get_u64, put_u32, put_u64, HEADER_SIZE};

pub const CATALOG_MAGIC: [u8; 8] = *b"RFMCAT1\0";
pub const CATALOG_VERSION: u32 = 1;
const PREAMBLE: usize = 24;
const ENTRY_FIXED: usize = 56;
pub(crate) const BLOCK_SIZE: usize = 40;
/// Longest name, in bytes.
pub const MAX_NAME: usize = 255;

/// One block of a stored entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredBlock {
    pub offset: u64,
    pub capacity: u64,
    pub data_offset: u64,
    pub length: u64,
    pub elem: ElemType,
}

/// One entry as stored in the blob (meta bytes are in their own block).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEntry {
    pub name: String,
    pub created_ms: i64,
    pub modified_ms: i64,
    pub meta_off: u64,
    pub meta_cap: u64,
    pub meta_len: u64,
    pub meta_sum: u64,
    pub blocks: Vec<StoredBlock>,
    /// v2: a copy of the meta's summary section (what `fmalloc_ls()`
    /// shows), when it has one of at most `tree::MAX_SUMMARY` bytes.
    pub summary: Option<Vec<u8>>,
    /// v2: bytes of data of all blocks (saturating).
    pub data_bytes: u64,
    /// v2: (offset, capacity, checksum) of the block list block when the
    /// blocks are not inline in the leaf record.
    pub blocks_at: Option<(u64, u64, u64)>,
}

impl StoredEntry {
    /// Bytes of data `blocks` hold (saturating): `length x element size`.
    pub fn data_bytes_of(blocks: &[StoredBlock]) -> u64 {
        blocks
            .iter()
            .map(|b| b.length.saturating_mul(b.elem.size()))
            .fold(0u64, u64::saturating_add)
    }
}

/// A name is 1..=255 bytes of UTF-8 without NUL.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("an object name must not be empty".into());
    }
    if name.len() > MAX_NAME {
        return Err(format!(
            "object name is {} bytes long; at most {MAX_NAME} are allowed",
            name.len()
        ));
    }
    if name.contains('\0') {
        return Err("an object name must not contain NUL".into());
    }
    Ok(())
}

fn padded(n: usize) -> usize {
    n.div_ceil(8) * 8
}

/// Serializes `entries`, which must be sorted by name without duplicates.
pub fn encode(entries: &[StoredEntry]) -> Vec<u8> {
    debug_assert!(entries.windows(2).all(|w| w[0].name < w[1].name));
    let size: usize = PREAMBLE
        + 8
        + entries
            .iter()
            .map(|e| ENTRY_FIXED + padded(e.name.len()) + BLOCK_SIZE * e.blocks.len())
            .sum::<usize>();
    let mut b = vec![0u8; size];
    b[..8].copy_from_slice(&CATALOG_MAGIC);
    put_u32(&mut b, 8, CATALOG_VERSION);
    put_u64(&mut b, 16, entries.len() as u64);
    let mut at = PREAMBLE;
    for e in entries {
        b[at..at + 2].copy_from_slice(&(e.name.len() as u16).to_le_bytes());
        put_u32(&mut b, at + 4, e.blocks.len() as u32);
        put_u64(&mut b, at + 8, e.created_ms as u64);
        put_u64(&mut b, at + 16, e.modified_ms as u64);
        put_u64(&mut b, at + 24, e.meta_off);
        put_u64(&mut b, at + 32, e.meta_cap);
        put_u64(&mut b, at + 40, e.meta_len);
        put_u64(&mut b, at + 48, e.meta_sum);
        at += ENTRY_FIXED;
        b[at..at + e.name.len()].copy_from_slice(e.name.as_bytes());
        at += padded(e.name.len());
        for k in &e.blocks {
            put_u64(&mut b, at, k.offset);
            put_u64(&mut b, at + 8, k.capacity);
            put_u64(&mut b, at + 16, k.data_offset);
            put_u64(&mut b, at + 24, k.length);
            b[at + 32] = k.elem as u8;
            at += BLOCK_SIZE;
        }
    }
    let sum = fnv1a64(&b[..at]);
    put_u64(&mut b, at, sum);
    b
}

/// A cursor that refuses to read past the end.
struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let r = bounds(self.at as u64, n as u64, self.b.len() as u64)
            .map_err(|_| format!("catalog truncated at byte {}", self.at))?;
        self.at = r.end;
        Ok(&self.b[r])
    }
    fn remaining(&self) -> usize {
        self.b.len() - self.at
    }
}

/// Decodes and checks a catalog blob (structure only; block geometry is
/// checked by [`live_blocks`]).
pub fn decode(b: &[u8]) -> Result<Vec<StoredEntry>, String> {
    if b.len() < PREAMBLE + 8 {
        return Err("catalog too short".into());
    }
    let body = &b[..b.len() - 8];
    if fnv1a64(body) != get_u64(b, b.len() - 8) {
        return Err("catalog checksum mismatch".into());
    }
    if b[..8] != CATALOG_MAGIC {
        return Err("catalog has a bad magic".into());
    }
    let version = get_u32(b, 8);
    if version != CATALOG_VERSION {
        return Err(format!("catalog version {version} is not supported"));
    }
    if get_u32(b, 12) != 0 {
        return Err("catalog reserved field is not zero".into());
    }
    let count = get_u64(b, 16);
    let mut r = Reader {
        b: body,
        at: PREAMBLE,
    };
    // Bound the count by the bytes present before trusting it.
    if count > (r.remaining() / ENTRY_FIXED) as u64 {
        return Err(format!(
            "catalog claims {count} entries, too many for its size"
        ));
    }
    let mut entries: Vec<StoredEntry> = Vec::with_capacity(count as usize);
    for i in 0..count {
        let f = r.take(ENTRY_FIXED)?;
        let name_len = usize::from(u16::from_le_bytes([f[0], f[1]]));
        if f[2] != 0 || f[3] != 0 {
            return Err(format!("entry {}: reserved field is not zero", i + 1));
        }
        let nblocks = get_u32(f, 4) as usize;
        let name_bytes = r.take(padded(name_len))?;
        let name = std::str::from_utf8(&name_bytes[..name_len])
            .map_err(|_| format!("entry {}: name is not UTF-8", i + 1))?
            .to_owned();
        check_name(&name).map_err(|e| format!("entry {}: {e}", i + 1))?;
        if name_bytes[name_len..].iter().any(|&c| c != 0) {
            return Err(format!("entry '{name}': name padding is not zero"));
        }
        if let Some(prev) = entries.last() {
            if prev.name >= name {
                return Err(format!("entry '{name}': names out of order or duplicated"));
            }
        }
        if nblocks > r.remaining() / BLOCK_SIZE {
            return Err(format!("entry '{name}': block count {nblocks} too large"));
        }
        let mut blocks = Vec::with_capacity(nblocks);
        for _ in 0..nblocks {
            let k = r.take(BLOCK_SIZE)?;
            let elem = ElemType::from_u8(k[32])
                .ok_or_else(|| format!("entry '{name}': unknown element type {}", k[32]))?;
            if k[33..].iter().any(|&c| c != 0) {
                return Err(format!("entry '{name}': block reserved bytes not zero"));
            }
            blocks.push(StoredBlock {
                offset: get_u64(k, 0),
                capacity: get_u64(k, 8),
                data_offset: get_u64(k, 16),
                length: get_u64(k, 24),
                elem,
            });
        }
        entries.push(StoredEntry {
            name,
            summary: None,
            data_bytes: StoredEntry::data_bytes_of(&blocks),
            blocks_at: None,
            created_ms: get_u64(f, 8) as i64,
            modified_ms: get_u64(f, 16) as i64,
            meta_off: get_u64(f, 24),
            meta_cap: get_u64(f, 32),
            meta_len: get_u64(f, 40),
            meta_sum: get_u64(f, 48),
            blocks,
        });
    }
    if r.remaining() != 0 {
        return Err(format!(
            "{} stray bytes after the last entry",
            r.remaining()
        ));
    }
    Ok(entries)
}

/// Checks one allocator block `(offset, capacity)` against the heap area.
fn check_block(what: &str, off: u64, cap: u64, heap_len: u64) -> Result<(), String> {
    if off < HEADER_SIZE || !off.is_multiple_of(ALIGN) || cap == 0 {
        return Err(format!(
            "{what}: block at {off} (capacity {cap}) is not a heap block"
        ));
    }
    bounds(off, cap, heap_len).map_err(|e| format!("{what}: {e}"))?;
    Ok(())
}

/// Checks the blocks of one entry and adds them to `live`; errors start
/// with ": " (the caller puts the entry's name before).
fn entry_blocks(e: &StoredEntry, heap_len: u64, live: &mut Vec<(u64, u64)>) -> Result<(), String> {
    let where_ = EntryBlocks {
        meta_off: e.meta_off,
        meta_cap: e.meta_cap,
        meta_len: e.meta_len,
        list: e.blocks_at.map(|(off, cap, _)| (off, cap)),
    };
    where_.check(&e.blocks, heap_len, live)
}

/// Where an entry's blocks are, besides its data blocks: what
/// [`live_blocks`] checks of an entry (from a decoded entry, or straight
/// from a leaf record: `tree::Leaf::blocks`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct EntryBlocks {
    pub meta_off: u64,
    pub meta_cap: u64,
    pub meta_len: u64,
    /// The block list block (offset, capacity), when not inline.
    pub list: Option<(u64, u64)>,
}

impl EntryBlocks {
    /// Checks the entry's meta, block list and data `blocks` and adds them
    /// to `live` (a block named twice by the entry, once); errors start
    /// with ": " (the caller puts the entry's name before).
    pub(crate) fn check(
        &self,
        blocks: &[StoredBlock],
        heap_len: u64,
        live: &mut Vec<(u64, u64)>,
    ) -> Result<(), String> {
        if let Some((off, cap)) = self.list {
            check_block(": block list", off, cap, heap_len)?;
            live.push((off, cap));
        }
        if self.meta_off == 0 {
            if self.meta_cap != 0 || self.meta_len != 0 {
                return Err(": meta length without a meta block".into());
            }
        } else {
            check_block("", self.meta_off, self.meta_cap, heap_len)?;
            if self.meta_len > self.meta_cap {
                return Err(": meta longer than its block".into());
            }
            live.push((self.meta_off, self.meta_cap));
        }
        data_blocks(blocks, heap_len, live)
    }
}

/// Checks the data blocks of one entry and adds them to `live`.
fn data_blocks(
    blocks: &[StoredBlock],
    heap_len: u64,
    live: &mut Vec<(u64, u64)>,
) -> Result<(), String> {
    // A block may appear twice in one entry (one vector referenced twice),
    // never in two entries.
    // Up to 16 blocks are compared in a fixed array (no allocation per
    // entry: a writable open checks every entry), more in a map.
    const FEW: usize = 16;
    let mut own = [(0u64, 0u64); FEW];
    let mut n_own = 0usize;
    let mut own_map: BTreeMap<u64, u64> = BTreeMap::new();
    let many = blocks.len() > FEW;
    for k in blocks {
        check_block("", k.offset, k.capacity, heap_len)?;
        let data_bytes = k
            .length
            .checked_mul(k.elem.size())
            .ok_or(": data length overflows")?;
        let block_end = k.offset + k.capacity; // checked by check_block
        let data_end = k
            .data_offset
            .checked_add(data_bytes)
            .ok_or(": data range overflows")?;
        if k.data_offset < k.offset || data_end > block_end {
            return Err(": data outside their block".into());
        }
        let seen = if many {
            own_map.insert(k.offset, k.capacity)
        } else {
            let s = own[..n_own].iter().find(|b| b.0 == k.offset).map(|b| b.1);
            if s.is_none() {
                // Always room: at most blocks.len() <= FEW are added.
                if let Some(slot) = own.get_mut(n_own) {
                    *slot = (k.offset, k.capacity);
                    n_own += 1;
                }
            }
            s
        };
        match seen {
            None => live.push((k.offset, k.capacity)),
            Some(cap) if cap == k.capacity => {}
            Some(_) => return Err(": one block with two capacities".into()),
        }
    }
    Ok(())
}

/// Validates the geometry of every entry against a heap of `heap_len` bytes
/// and returns the live allocator blocks `(payload offset, capacity)`,
/// sorted and non-overlapping: the catalog's own blocks `catalog` (the v1
/// blob, or the v2 pages), every block list, meta and data block.
pub fn live_blocks(
    entries: &[StoredEntry],
    catalog: &[(u64, u64)],
    heap_len: u64,
) -> Result<Vec<(u64, u64)>, String> {
    let mut live: Vec<(u64, u64)> = Vec::new();
    for e in entries {
        // The entry's name is formatted only into an error.
        entry_blocks(e, heap_len, &mut live).map_err(|m| format!("entry '{}'{m}", e.name))?;
    }
    finish_live(live, catalog, heap_len)
}

/// Adds the catalog's own blocks to the blocks of the entries (`live`,
/// each checked by `EntryBlocks::check`), sorts them and checks that no
/// two overlap: the rest of [`live_blocks`].
pub(crate) fn finish_live(
    mut live: Vec<(u64, u64)>,
    catalog: &[(u64, u64)],
    heap_len: u64,
) -> Result<Vec<(u64, u64)>, String> {
    for &(off, cap) in catalog {
        check_block("catalog", off, cap, heap_len)?;
        live.push((off, cap));
    }
    live.sort_unstable();
    for w in live.windows(2) {
        if w[0].0 + w[0].1 > w[1].0 {
            return Err(format!(
                "blocks at {} and {} overlap (or one block is named twice)",
                w[0].0, w[1].0
            ));
        }
    }
    Ok(live)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, base: u64) -> StoredEntry {
        StoredEntry {
            name: name.into(),
            created_ms: 1,
            modified_ms: 2,
            meta_off: base,
            meta_cap: 64,
            meta_len: 10,
            meta_sum: 99,
            summary: None,
            data_bytes: 800,
            blocks_at: None,
            blocks: vec![StoredBlock {
                offset: base + 128,
                capacity: 1024,
                data_offset: base + 128,
                length: 100,
                elem: ElemType::Double,
            }],
        }
    }

    fn sample() -> Vec<StoredEntry> {
        vec![entry("a", 8192), entry("prices", 16384), entry("é", 32768)]
    }

    #[test]
    fn round_trip() {
        let e = sample();
        let b = encode(&e);
        assert_eq!(&b[..8], b"RFMCAT1\0");
        assert_eq!(decode(&b).unwrap(), e);
        assert_eq!(decode(&encode(&[])).unwrap(), vec![]);
        let live = live_blocks(&e, &[(4096, 512)], 1 << 20).unwrap();
        assert_eq!(live.len(), 7);
    }

    #[test]
    fn every_byte_flip_and_truncation_is_rejected() {
        let b = encode(&sample());
        for at in 0..b.len() {
            let mut c = b.clone();
            c[at] ^= 0x04;
            assert!(decode(&c).is_err(), "flip at {at} accepted");
        }
        for len in 0..b.len() {
            assert!(decode(&b[..len]).is_err(), "truncation to {len} accepted");
        }
    }

    /// Re-signs a hand-edited blob so that only the structural checks apply.
    fn resign(b: &mut [u8]) {
        let n = b.len();
        let sum = fnv1a64(&b[..n - 8]);
        put_u64(b, n - 8, sum);
    }

    #[test]
    fn hostile_counts_do_not_allocate_or_panic() {
        let mut b = encode(&sample());
        put_u64(&mut b, 16, u64::MAX);
        resign(&mut b);
        assert!(decode(&b).unwrap_err().contains("too many"));
        let mut b = encode(&sample());
        put_u32(&mut b, PREAMBLE + 4, u32::MAX);
        resign(&mut b);
        assert!(decode(&b).is_err());
        let mut b = encode(&sample());
        b[PREAMBLE] = 0xff; // name length 255 + garbage
        resign(&mut b);
        assert!(decode(&b).is_err());
    }

    #[test]
    fn names_are_validated() {
        assert!(check_name("").is_err());
        assert!(check_name("a\0b").is_err());
        assert!(check_name(&"x".repeat(256)).is_err());
        assert!(check_name(&"x".repeat(255)).is_ok());
        assert!(check_name("über größe").is_ok());
        let mut e = sample();
        e.swap(0, 1);
        assert!(decode(&encode_unchecked(&e)).is_err());
    }

    fn encode_unchecked(e: &[StoredEntry]) -> Vec<u8> {
        // `encode` debug-asserts order; build the same bytes by hand.
        let mut sorted = e.to_vec();
        sorted.sort_by(|a, b| a.name.cmp(&b.name));
        let mut b = encode(&sorted);
        // Swap the first two entries' bytes (same sizes in `sample`).
        let len = ENTRY_FIXED + 8 + BLOCK_SIZE;
        let (x, y) = b[PREAMBLE..PREAMBLE + 2 * len].split_at_mut(len);
        x.swap_with_slice(y);
        resign(&mut b);
        b
    }

    #[test]
    fn geometry_is_validated() {
        let heap = 1 << 20;
        let ok = sample();
        assert!(live_blocks(&ok, &[], heap).is_ok());
        let bad = |f: &dyn Fn(&mut StoredEntry)| {
            let mut e = sample();
            f(&mut e[1]);
            live_blocks(&e, &[], heap)
        };
        assert!(bad(&|e| e.blocks[0].offset = 100).is_err()); // in header
        assert!(bad(&|e| e.blocks[0].offset += 8).is_err()); // misaligned
        assert!(bad(&|e| e.blocks[0].capacity = heap).is_err()); // beyond end
        assert!(bad(&|e| e.blocks[0].capacity = u64::MAX - 64).is_err());
        assert!(bad(&|e| e.blocks[0].length = 129).is_err()); // data > block
        assert!(bad(&|e| e.blocks[0].length = u64::MAX).is_err());
        assert!(bad(&|e| e.blocks[0].data_offset = 0).is_err());
        assert!(bad(&|e| e.meta_len = 65).is_err());
        assert!(bad(&|e| e.meta_off = 8192).is_err()); // overlaps entry "a"
        assert!(bad(&|e| e.blocks[0].offset = 8192 + 128).is_err()); // named twice
        assert!(bad(&|e| {
            e.meta_off = 0;
            e.meta_cap = 0;
            e.meta_len = 0
        })
        .is_ok());
        // The same block twice within one entry is fine.
        assert!(bad(&|e| {
            let k = e.blocks[0];
            e.blocks.push(k)
        })
        .is_ok());
        // The catalog block must not overlap an entry.
        assert!(live_blocks(&ok, &[(8192, 64)], heap).is_err());
    }
}

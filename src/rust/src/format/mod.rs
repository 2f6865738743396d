//! File format v1: layout table, offsets, checksums.
//!
//! Every integer is fixed-width little-endian. The file is a 4096-byte header
//! page followed by the heap area `[HEADER_SIZE, file length)`, which the
//! allocator tiles into blocks. The file holds offsets only, never addresses.
//!
//! ```text
//! Header page (offset 0, HEADER_SIZE = 4096 bytes)
//! offset  size  field
//!      0     8  MAGIC  b"RFMHEAP\0"
//!      8     4  format version (u32) = 2 (1: catalog v1 slots only)
//!     12     4  header size (u32) = 4096
//!     16    16  heap id (random, fixed at creation)
//!     32     8  created, Unix time in ms (i64)
//!     40     8  reserved, 0
//!     48     8  header checksum: FNV-1a 64 of bytes [0, 48)
//!     56     8  reserved, 0
//!     64    64  catalog slot A
//!    128    64  catalog slot B
//!    192  3904  reserved, 0
//!
//! Catalog slot (64 bytes; the valid slot with the highest generation wins)
//!     +0     8  generation (u64, 1 ..= MAX_GENERATION; 0 = never written)
//!     +8     8  v1: catalog blob block offset; v2: root page offset (0 = empty)
//!    +16     8  that block's capacity (allocator usable size)
//!    +24     8  v1: catalog blob length; v2: number of entries
//!    +32     8  v1: FNV-1a 64 of the blob; v2: FNV-1a 64 of the root page
//!    +40     8  heap length at commit (the file is never shorter)
//!    +48     4  catalog format: 0 = v1 blob, 2 = v2 tree
//!    +52     4  flags: bit 0 = unsynced (written without the flush that
//!               makes it durable, `sync = "none"`); other bits 0
//!    +56     8  slot checksum: FNV-1a 64 of bytes [+0, +56)
//! ```
//!
//! The catalog itself (names, blocks, meta) is specified in `catalog`. A
//! commit writes new pages into fresh blocks, flushes them (durable mode),
//! and only then overwrites the *inactive* slot (generation + 1): a torn
//! slot fails its checksum and the other slot stays in force.
//!
//! Geometry is validated before any arithmetic uses it, and every offset read
//! from the file goes through [`bounds`].

pub mod checksum;
pub mod meta;
pub mod readable;

use std::ops::Range;

pub use checksum::{fnv1a64, fnv1a64_words};

/// Magic at offset 0.
pub const MAGIC: [u8; 8] = *b"RFMHEAP\0";
/// The format version this code writes. Version 1 files (catalog v1 slots
/// only) are read too; their header becomes version 2 at the first commit,
/// so that older Rfmalloc versions refuse the file instead of misreading a
/// v2 slot.
pub const VERSION: u32 = 2;
/// The oldest version read.
pub const VERSION_V1: u32 = 1;
/// Catalog formats a slot may name.
pub const CATALOG_BLOB: u32 = 0;
pub const CATALOG_TREE: u32 = 2;
/// Bytes of a catalog tree page (`catalog::tree`); the slot check needs it.
pub const CATALOG_PAGE_SIZE: usize = 4096;
/// The highest slot generation: a commit never writes a larger one, and a
/// slot claiming one is invalid, so generations can never wrap (2^62
/// commits, one per nanosecond, would take 146 years).
pub const MAX_GENERATION: u64 = 1 << 62;
/// Size of the header page; the heap area starts here.
pub const HEADER_SIZE: u64 = 4096;
/// The file length is always a multiple of this (initial size and growth
/// steps are rounded to it; it is also a valid mmap offset on every OS).
pub const FILE_GRANULE: u64 = 64 * 1024;

pub const OFF_MAGIC: usize = 0;
pub const OFF_VERSION: usize = OFF_MAGIC + 8;
pub const OFF_HEADER_SIZE: usize = OFF_VERSION + 4;
pub const OFF_HEAP_ID: usize = OFF_HEADER_SIZE + 4;
pub const OFF_CREATED: usize = OFF_HEAP_ID + 16;
pub const OFF_RESERVED0: usize = OFF_CREATED + 8;
pub const OFF_HEADER_CHECKSUM: usize = OFF_RESERVED0 + 8;
/// Slot A; slot B follows it.
pub const OFF_SLOTS: usize = 64;
pub const SLOT_SIZE: usize = 64;

const SLOT_GENERATION: usize = 0;
const SLOT_CATALOG_OFF: usize = 8;
const SLOT_CATALOG_CAP: usize = 16;
const SLOT_CATALOG_LEN: usize = 24;
const SLOT_CATALOG_SUM: usize = 32;
const SLOT_HEAP_LEN: usize = 40;
const SLOT_KIND: usize = 48;
const SLOT_FLAGS: usize = 52;
const FLAG_UNSYNCED: u32 = 1;
const SLOT_CHECKSUM: usize = 56;

/// Byte offset of slot `i` (0 = A, 1 = B) in the file.
pub fn slot_offset(i: usize) -> usize {
    OFF_SLOTS + i * SLOT_SIZE
}

/// `off..off + len` as a `usize` range if it lies within `[0, limit)`.
/// Every offset and length read from the file goes through here.
pub fn bounds(off: u64, len: u64, limit: u64) -> Result<Range<usize>, String> {
    let end = off
        .checked_add(len)
        .ok_or_else(|| format!("range {off}+{len} overflows"))?;
    if end > limit {
        return Err(format!("range [{off}, {end}) beyond the end ({limit})"));
    }
    let start = usize::try_from(off).map_err(|_| format!("offset {off} too large"))?;
    let end = usize::try_from(end).map_err(|_| format!("offset {end} too large"))?;
    Ok(start..end)
}

pub(crate) fn get_u32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

pub(crate) fn get_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

pub(crate) fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

pub(crate) fn put_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// The fixed part of the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub heap_id: [u8; 16],
    pub created_ms: i64,
    /// Format version (VERSION_V1 or VERSION).
    pub version: u32,
}

/// One catalog slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Slot {
    pub generation: u64,
    pub catalog_off: u64,
    pub catalog_cap: u64,
    pub catalog_len: u64,
    pub catalog_sum: u64,
    pub heap_len: u64,
    /// CATALOG_BLOB or CATALOG_TREE.
    pub kind: u32,
    /// Written without a flush (sync = "none"): its pages may not have
    /// reached the disk, so an open verifies the whole tree.
    pub unsynced: bool,
}

impl Header {
    /// A complete header page with slot A set to `slot` and slot B empty.
    pub fn encode_page(&self, slot: &Slot) -> Vec<u8> {
        let mut page = vec![0u8; HEADER_SIZE as usize];
        page[OFF_MAGIC..OFF_MAGIC + 8].copy_from_slice(&MAGIC);
        put_u32(&mut page, OFF_VERSION, self.version);
        put_u32(&mut page, OFF_HEADER_SIZE, HEADER_SIZE as u32);
        page[OFF_HEAP_ID..OFF_HEAP_ID + 16].copy_from_slice(&self.heap_id);
        put_u64(&mut page, OFF_CREATED, self.created_ms as u64);
        let sum = fnv1a64(&page[..OFF_HEADER_CHECKSUM]);
        put_u64(&mut page, OFF_HEADER_CHECKSUM, sum);
        page[slot_offset(0)..slot_offset(1)].copy_from_slice(&slot.encode());
        page
    }

    /// Validates magic, version, header size and checksum of a header page
    /// (`page` may be shorter than `HEADER_SIZE` only if the file is).
    pub fn decode(page: &[u8]) -> Result<Header, String> {
        if page.len() < HEADER_SIZE as usize {
            return Err(format!(
                "file too short for a header ({} < {HEADER_SIZE} bytes)",
                page.len()
            ));
        }
        if page[OFF_MAGIC..OFF_MAGIC + 8] != MAGIC {
            return Err("bad magic".into());
        }
        let version = get_u32(page, OFF_VERSION);
        if version != VERSION && version != VERSION_V1 {
            return Err(format!(
                "format version {version}, this Rfmalloc reads versions {VERSION_V1} and {VERSION}"
            ));
        }
        let header_size = get_u32(page, OFF_HEADER_SIZE);
        if u64::from(header_size) != HEADER_SIZE {
            return Err(format!("header size {header_size}, expected {HEADER_SIZE}"));
        }
        if fnv1a64(&page[..OFF_HEADER_CHECKSUM]) != get_u64(page, OFF_HEADER_CHECKSUM) {
            return Err("header checksum mismatch".into());
        }
        let mut heap_id = [0u8; 16];
        heap_id.copy_from_slice(&page[OFF_HEAP_ID..OFF_HEAP_ID + 16]);
        Ok(Header {
            heap_id,
            created_ms: get_u64(page, OFF_CREATED) as i64,
            version,
        })
    }
}

impl Slot {
    /// The fields of the SLOT_SIZE bytes `b`, unchecked.
    fn fields(b: &[u8]) -> Slot {
        Slot {
            generation: get_u64(b, SLOT_GENERATION),
            catalog_off: get_u64(b, SLOT_CATALOG_OFF),
            catalog_cap: get_u64(b, SLOT_CATALOG_CAP),
            catalog_len: get_u64(b, SLOT_CATALOG_LEN),
            catalog_sum: get_u64(b, SLOT_CATALOG_SUM),
            heap_len: get_u64(b, SLOT_HEAP_LEN),
            kind: get_u32(b, SLOT_KIND),
            unsynced: get_u32(b, SLOT_FLAGS) & FLAG_UNSYNCED != 0,
        }
    }

    pub fn encode(&self) -> [u8; SLOT_SIZE] {
        let mut b = [0u8; SLOT_SIZE];
        put_u64(&mut b, SLOT_GENERATION, self.generation);
        put_u64(&mut b, SLOT_CATALOG_OFF, self.catalog_off);
        put_u64(&mut b, SLOT_CATALOG_CAP, self.catalog_cap);
        put_u64(&mut b, SLOT_CATALOG_LEN, self.catalog_len);
        put_u64(&mut b, SLOT_CATALOG_SUM, self.catalog_sum);
        put_u64(&mut b, SLOT_HEAP_LEN, self.heap_len);
        put_u32(&mut b, SLOT_KIND, self.kind);
        put_u32(
            &mut b,
            SLOT_FLAGS,
            if self.unsynced { FLAG_UNSYNCED } else { 0 },
        );
        let sum = fnv1a64(&b[..SLOT_CHECKSUM]);
        put_u64(&mut b, SLOT_CHECKSUM, sum);
        b
    }

    /// The slot if its checksum holds and its geometry is sane for a file
    /// of `file_len` bytes; `Err` says why not.
    pub fn decode(b: &[u8], file_len: u64) -> Result<Slot, String> {
        if b.len() != SLOT_SIZE {
            return Err("slot truncated".into());
        }
        if fnv1a64(&b[..SLOT_CHECKSUM]) != get_u64(b, SLOT_CHECKSUM) {
            return Err("slot checksum mismatch".into());
        }
        let s = Slot::fields(b);
        if s.generation == 0 {
            return Err("slot never written".into());
        }
        if s.generation > MAX_GENERATION {
            return Err(format!(
                "generation {} is out of range (at most {MAX_GENERATION})",
                s.generation
            ));
        }
        if s.heap_len < HEADER_SIZE || s.heap_len > file_len {
            return Err(format!(
                "slot records a heap of {} bytes, the file has {file_len} (truncated?)",
                s.heap_len
            ));
        }
        if get_u32(b, SLOT_FLAGS) & !FLAG_UNSYNCED != 0 {
            return Err("unknown slot flags".into());
        }
        let tree = match s.kind {
            CATALOG_BLOB => false,
            CATALOG_TREE => true,
            k => return Err(format!("catalog format {k} is not supported")),
        };
        if s.catalog_off == 0 {
            if s.catalog_cap != 0 || s.catalog_len != 0 {
                return Err("empty catalog with a non-zero length".into());
            }
        } else if tree {
            if s.catalog_off < HEADER_SIZE {
                return Err("catalog inside the header".into());
            }
            if s.catalog_cap < CATALOG_PAGE_SIZE as u64 {
                return Err("catalog root block smaller than a page".into());
            }
            bounds(s.catalog_off, s.catalog_cap, s.heap_len)?;
        } else {
            if s.catalog_off < HEADER_SIZE {
                return Err("catalog inside the header".into());
            }
            if s.catalog_len > s.catalog_cap {
                return Err("catalog longer than its block".into());
            }
            bounds(s.catalog_off, s.catalog_cap, s.heap_len)?;
        }
        Ok(s)
    }
}

/// Both slots of a header page, each decoded or the reason it is invalid.
pub fn read_slots(page: &[u8], file_len: u64) -> [Result<Slot, String>; 2] {
    [0, 1].map(|i| {
        bounds(slot_offset(i) as u64, SLOT_SIZE as u64, page.len() as u64)
            .and_then(|range| Slot::decode(&page[range], file_len))
    })
}

/// The generation slot `i` claims, read without any check: what an invalid
/// slot says about itself (for messages only; 0 if unreadable).
pub fn claimed_generation(page: &[u8], i: usize) -> u64 {
    let at = slot_offset(i) + SLOT_GENERATION;
    page.get(at..at + 8).map_or(0, |_| get_u64(page, at))
}

/// The fields of slot `i` read without any check (see [`claimed_generation`]).
pub fn slot_unchecked(page: &[u8], i: usize) -> Option<Slot> {
    page.get(slot_offset(i)..slot_offset(i) + SLOT_SIZE)
        .map(Slot::fields)
}

/// The slots of a header page: index and value of the slot in force (the
/// valid one with the highest generation), or why neither is valid.
pub fn pick_slot(page: &[u8], file_len: u64) -> Result<(usize, Slot), String> {
    let mut best: Option<(usize, Slot)> = None;
    let mut why = Vec::new();
    for (i, r) in read_slots(page, file_len).into_iter().enumerate() {
        match r {
            Ok(s) => {
                if best.is_none_or(|(_, b)| s.generation > b.generation) {
                    best = Some((i, s));
                }
            }
            Err(e) => why.push(format!("slot {}: {e}", ["A", "B"][i])),
        }
    }
    best.ok_or_else(|| format!("no valid catalog slot ({})", why.join("; ")))
}

/// Validates the file length before anything else uses it.
pub fn check_file_len(file_len: u64) -> Result<(), String> {
    if file_len < FILE_GRANULE {
        return Err(format!("file too short ({file_len} bytes)"));
    }
    if !file_len.is_multiple_of(FILE_GRANULE) {
        return Err(format!(
            "file length {file_len} is not a multiple of {FILE_GRANULE} (truncated?)"
        ));
    }
    Ok(())
}

/// Rounds `v` up to a multiple of the power of two `to`; `None` on overflow.
pub fn round_up(v: u64, to: u64) -> Option<u64> {
    debug_assert!(to.is_power_of_two());
    Some(v.checked_add(to - 1)? & !(to - 1))
}

/// A fresh random heap id: 16 bytes from the operating system
/// (`/dev/urandom` on Unix, `BCryptGenRandom` on Windows), or (where that
/// fails) a hash of time, pid and an address.
pub fn new_heap_id() -> [u8; 16] {
    let mut id = [0u8; 16];
    if crate::sys::fill_random(&mut id) && id != [0u8; 16] {
        return id;
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let local = 0u8;
    let seed = format!(
        "{now}-{}-{:p}-{:?}",
        std::process::id(),
        &local,
        std::thread::current().id()
    );
    let a = fnv1a64(seed.as_bytes());
    let b = fnv1a64(&a.to_le_bytes()) ^ (now as u64).rotate_left(17);
    id[..8].copy_from_slice(&a.to_le_bytes());
    id[8..].copy_from_slice(&b.to_le_bytes());
    id
}

/// Unix time in milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// What kind of elements a named block holds.
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElemType {
    Logical = 1,
    Integer = 2,
    Double = 3,
    Complex = 4,
    Raw = 5,
    /// A string pool (variable-size records; see `crate::strpool`).
    String = 6,
    /// Opaque bytes.
    Bytes = 7,
}

impl ElemType {
    /// Bytes per element; 1 for the variable-size kinds.
    pub fn size(self) -> u64 {
        match self {
            ElemType::Logical | ElemType::Integer => 4,
            ElemType::Double => 8,
            ElemType::Complex => 16,
            ElemType::Raw | ElemType::String | ElemType::Bytes => 1,
        }
    }

    pub fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => ElemType::Logical,
            2 => ElemType::Integer,
            3 => ElemType::Double,
            4 => ElemType::Complex,
            5 => ElemType::Raw,
            6 => ElemType::String,
            7 => ElemType::Bytes,
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page() -> Vec<u8> {
        let h = Header {
            heap_id: [7; 16],
            created_ms: 1234,
            version: VERSION,
        };
        h.encode_page(&Slot {
            generation: 1,
            heap_len: 1 << 20,
            ..Slot::default()
        })
    }

    #[test]
    fn offsets_follow_the_table() {
        assert_eq!(OFF_VERSION, 8);
        assert_eq!(OFF_HEADER_SIZE, 12);
        assert_eq!(OFF_HEAP_ID, 16);
        assert_eq!(OFF_CREATED, 32);
        assert_eq!(OFF_HEADER_CHECKSUM, 48);
        assert_eq!(slot_offset(1), 128);
        assert_eq!(SLOT_CHECKSUM + 8, SLOT_SIZE);
    }

    #[test]
    fn header_round_trip() {
        let p = page();
        assert_eq!(&p[..8], b"RFMHEAP\0");
        assert_eq!(&p[8..12], &2u32.to_le_bytes());
        let h = Header::decode(&p).unwrap();
        assert_eq!(h.heap_id, [7; 16]);
        assert_eq!(h.created_ms, 1234);
        let (i, s) = pick_slot(&p, 1 << 20).unwrap();
        assert_eq!((i, s.generation, s.heap_len), (0, 1, 1 << 20));
    }

    #[test]
    fn every_header_byte_flip_is_detected() {
        let p = page();
        for at in 0..OFF_HEADER_CHECKSUM + 8 {
            let mut q = p.clone();
            q[at] ^= 0x10;
            assert!(Header::decode(&q).is_err(), "flip at {at} not detected");
        }
        for at in slot_offset(0)..slot_offset(1) {
            let mut q = p.clone();
            q[at] ^= 0x01;
            assert!(pick_slot(&q, 1 << 20).is_err(), "slot flip at {at} ok");
        }
    }

    #[test]
    fn highest_valid_generation_wins() {
        let mut p = page();
        let s2 = Slot {
            generation: 2,
            catalog_off: 8192,
            catalog_cap: 128,
            catalog_len: 100,
            catalog_sum: 9,
            heap_len: 1 << 20,
            ..Slot::default()
        };
        p[slot_offset(1)..slot_offset(2)].copy_from_slice(&s2.encode());
        assert_eq!(pick_slot(&p, 1 << 20).unwrap(), (1, s2));
        // A torn slot B leaves A in force.
        p[slot_offset(1) + 3] ^= 0xff;
        assert_eq!(pick_slot(&p, 1 << 20).unwrap().0, 0);
    }

    #[test]
    fn slot_geometry_is_checked() {
        let ok = Slot {
            generation: 3,
            catalog_off: 8192,
            catalog_cap: 128,
            catalog_len: 100,
            catalog_sum: 0,
            heap_len: 1 << 20,
            ..Slot::default()
        };
        assert!(Slot::decode(&ok.encode(), 1 << 20).is_ok());
        // File shorter than the heap it recorded.
        assert!(Slot::decode(&ok.encode(), 1 << 19).is_err());
        for bad in [
            Slot {
                catalog_off: 100,
                ..ok
            },
            Slot {
                catalog_len: 129,
                ..ok
            },
            Slot {
                catalog_off: u64::MAX - 10,
                ..ok
            },
            Slot {
                catalog_cap: u64::MAX,
                ..ok
            },
            Slot {
                generation: 0,
                ..ok
            },
            Slot { heap_len: 10, ..ok },
        ] {
            assert!(Slot::decode(&bad.encode(), 1 << 20).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn bounds_rejects_overflow_and_overrun() {
        assert_eq!(bounds(10, 5, 15), Ok(10..15));
        assert!(bounds(10, 6, 15).is_err());
        assert!(bounds(u64::MAX, 2, u64::MAX).is_err());
    }

    #[test]
    fn file_len_rules() {
        assert!(check_file_len(0).is_err());
        assert!(check_file_len(4096).is_err());
        assert!(check_file_len(FILE_GRANULE).is_ok());
        assert!(check_file_len(FILE_GRANULE + 4096).is_err());
        assert_eq!(round_up(1, 64), Some(64));
        assert_eq!(round_up(u64::MAX, 64), None);
    }

    #[test]
    fn heap_ids_differ() {
        assert_ne!(new_heap_id(), new_heap_id());
    }
}

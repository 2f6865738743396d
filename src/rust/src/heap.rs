//! The heap facade: one open heap file = mapping + allocator + catalog + lock.
//!
//! CONTRACT (owned by the core helper; the R layer relies on exactly this API).
//! `Heap` is a cheap clone (an `Arc`). The mapping, the file and its lock live
//! until the last clone is dropped, so R vectors that hold a clone keep their
//! memory mapped after the user closed the heap (invariant 3). Opening a path
//! that is still alive in this process (same canonical path) returns the same
//! shared heap when the mode matches, an `Error::Locked` otherwise.

use std::path::Path;
use std::ptr::NonNull;

use crate::error::Result;

/// What kind of elements a named block holds.
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElemType {
    Logical = 1,
    Integer = 2,
    Double = 3,
    Complex = 4,
    Raw = 5,
    /// A string pool (variable-size records; layout owned by the R layer).
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
    pub used_bytes: u64,
    pub free_bytes: u64,
    pub objects: u64,
}

#[derive(Clone)]
pub struct Heap {}

impl Heap {
    /// Opens or creates. Returns the heap and whether the file was newly
    /// initialised. Refuses a non-empty non-heap file (unchanged).
    pub fn open(_path: &Path, _opts: &OpenOptions) -> Result<(Heap, bool)> {
        todo!()
    }
    pub fn path(&self) -> &Path {
        todo!()
    }
    pub fn heap_id(&self) -> [u8; 16] {
        todo!()
    }
    pub fn is_readonly(&self) -> bool {
        todo!()
    }
    /// A new unnamed block with reference count 1.
    pub fn malloc(&self, _size: u64) -> Result<u64> {
        todo!()
    }
    /// Resizes an unnamed block; may move it (the data are copied).
    pub fn realloc(&self, _off: u64, _new_size: u64) -> Result<u64> {
        todo!()
    }
    /// One more session reference to the block at `off`.
    pub fn retain(&self, _off: u64) -> Result<()> {
        todo!()
    }
    /// One reference fewer; frees the block when unreferenced and unnamed.
    /// A no-op in a forked child.
    pub fn release(&self, _off: u64) -> Result<()> {
        todo!()
    }
    pub fn block_size(&self, _off: u64) -> Result<u64> {
        todo!()
    }
    /// Address of `[off, off + len)`; valid while any clone of this heap lives.
    pub fn ptr(&self, _off: u64, _len: u64) -> Result<NonNull<u8>> {
        todo!()
    }
    /// Reverse lookup: the file offset of an address inside this heap's mapping.
    pub fn offset_of(&self, _addr: *const u8) -> Option<u64> {
        todo!()
    }
    pub fn info(&self) -> Info {
        todo!()
    }
    pub fn sync(&self) -> Result<()> {
        todo!()
    }
    pub fn put(&self, _name: &str, _meta: &[u8], _blocks: &[BlockDesc], _overwrite: bool) -> Result<()> {
        todo!()
    }
    pub fn get(&self, _name: &str) -> Result<Entry> {
        todo!()
    }
    pub fn list(&self) -> Vec<Entry> {
        todo!()
    }
    pub fn remove(&self, _name: &str) -> Result<()> {
        todo!()
    }
    pub fn rename(&self, _from: &str, _to: &str, _overwrite: bool) -> Result<()> {
        todo!()
    }
    pub fn check_invariants(&self) -> Result<()> {
        todo!()
    }
}
